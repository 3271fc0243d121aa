"""The Task: one classification problem with fixed train, validation and test splits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._checks import check_choice, check_int

MODALITIES = ("image", "signal", "audio")
SPLITS = ("train", "val", "test")


@dataclass
class Task:
    """A classification task: datasets of ``(x, label)`` pairs plus what a model needs to know.

    ``input_shape`` excludes the batch dimension: ``(C, L)`` for signals, ``(C, H, W)`` for
    images and audio features. A task for a model with several inputs holds one shape per
    input (each of 1 to 3 dimensions) and datasets of ``(x_1, ..., x_k, label)``; its
    inputs are tuples of tensors everywhere (``example_inputs``, ``inputs``, batches), and
    a model is called as ``model(x_1, ..., x_k)`` (see :func:`call`).
    ``loss(outputs, targets)`` and ``metric(outputs, targets)`` (higher is better), where
    set, replace cross-entropy in :func:`sc.fit` and top-1 accuracy in
    :func:`sc.evaluate` (see :func:`sc.data.as_task`).
    """

    name: str
    modality: str
    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...] = field(default=())
    loss: Callable | None = field(default=None, repr=False, compare=False)
    metric: Callable | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice("Task.modality", self.modality, MODALITIES)
        shape = tuple(self.input_shape)
        if shape and all(isinstance(d, (tuple, list)) for d in shape):  # several inputs
            self.input_shape = tuple(tuple(int(d) for d in s) for s in shape)
            if len(shape) < 2 or any(len(s) not in (1, 2, 3) for s in self.input_shape):
                raise ValueError(
                    "Task.input_shape of a model with several inputs must hold two or more "
                    f"shapes of 1 to 3 dimensions, got {self.input_shape}"
                )
        else:
            self.input_shape = tuple(int(d) for d in shape)
            if len(self.input_shape) not in (2, 3):
                raise ValueError(
                    f"Task.input_shape must be (C, L) or (C, H, W), got {self.input_shape}"
                )
        check_int("Task.num_classes", self.num_classes, minimum=2)
        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(self.num_classes))

    def split(self, name: str) -> Dataset:
        """The dataset of one split: ``"train"``, ``"val"`` or ``"test"``."""
        check_choice("split", name, SPLITS)
        return getattr(self, name)

    @property
    def num_inputs(self) -> int:
        """How many tensors the model takes (1 for most models)."""
        return len(self.input_shape) if isinstance(self.input_shape[0], tuple) else 1

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        """One shape per model input (a one-tuple for a model with one input)."""
        return self.input_shape if self.num_inputs > 1 else (self.input_shape,)

    def example_inputs(self, batch: int = 1) -> Inputs:
        """The first ``batch`` training inputs, shaped ``(batch, *input_shape)`` (a tuple of
        such tensors for a model with several inputs)."""
        batch = check_int("batch", batch, minimum=1)
        n = min(batch, len(self.train))
        items = [self.train[i] for i in range(n)]
        xs = [torch.stack([item[k] for item in items]) for k in range(self.num_inputs)]
        if n < batch:  # repeat when the training set is smaller than the batch asked for
            xs = [x.repeat((batch + n - 1) // n, *([1] * (x.dim() - 1)))[:batch] for x in xs]
        return xs[0] if len(xs) == 1 else tuple(xs)

    def inputs(self, split: str = "test", n: int | None = None) -> Inputs:
        """The inputs of one split (its first ``n``), without labels: a tensor, or a tuple
        of tensors for a model with several inputs. The split must be a TensorDataset, as
        every Task secateurs builds holds."""
        dataset = self.split(split)
        if not isinstance(dataset, TensorDataset):
            raise TypeError(
                f"Task.inputs needs the {split} split as a TensorDataset, got "
                f"{type(dataset).__name__}"
            )
        xs = [t[:n] if n is not None else t for t in dataset.tensors[: self.num_inputs]]
        return xs[0] if len(xs) == 1 else tuple(xs)

    def loader(
        self,
        split: str = "train",
        batch_size: int = 64,
        shuffle: bool | None = None,
        seed: int = 0,
    ) -> DataLoader:
        """A DataLoader over one split; shuffles the training split by default, with ``seed``."""
        dataset = self.split(split)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        shuffle = (split == "train") if shuffle is None else bool(shuffle)
        generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)

    def __repr__(self) -> str:
        sizes = "/".join(str(len(self.split(s))) for s in SPLITS)
        return (
            f"Task({self.name!r}, modality={self.modality!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, train/val/test={sizes})"
        )


def tensor_dataset(x, y: np.ndarray) -> TensorDataset:
    """float32 inputs and int64 labels as a TensorDataset; ``x`` an array, or a list of
    arrays for a model with several inputs (the dataset then holds them all, then y)."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    return TensorDataset(
        *(torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32) for a in xs),
        torch.as_tensor(np.ascontiguousarray(y), dtype=torch.int64),
    )


# --- inputs: a tensor, or a tuple of tensors for a model with several inputs -------------

Inputs = torch.Tensor | tuple[torch.Tensor, ...]


def as_args(x: Inputs) -> tuple[torch.Tensor, ...]:
    """The positional arguments a model takes for ``x``: ``(x,)`` or the tuple itself."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def call(model, x: Inputs):
    """``model(x)``, or ``model(*x)`` for the inputs of a model with several inputs."""
    return model(*as_args(x))


def split_batch(batch) -> tuple[Inputs, torch.Tensor]:
    """A Task loader's batch ``[x_1, ..., x_k, y]`` as ``(inputs, targets)``."""
    *xs, y = batch
    return (xs[0] if len(xs) == 1 else tuple(xs)), y


def map_inputs(fn, x: Inputs) -> Inputs:
    """``fn`` applied to each input tensor, the form kept."""
    return tuple(fn(t) for t in x) if isinstance(x, (tuple, list)) else fn(x)


def stratified_split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off ``fraction`` of the samples, keeping class shares: x_a, x_b, y_a, y_b."""
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        rare = [int(c) for c in classes[counts < 2]]
        raise ValueError(
            f"classes {rare} have a single sample, too few to split off a validation share "
            "while keeping class shares; give more samples of them, drop them, or pass your "
            "own validation split"
        )

    x_a, x_b, y_a, y_b = train_test_split(
        x, y, test_size=fraction, stratify=y, random_state=int(seed)
    )
    return x_a, x_b, y_a, y_b
