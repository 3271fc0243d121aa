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
    images and audio features. ``loss(outputs, targets)`` and ``metric(outputs, targets)``
    (higher is better), where set, replace cross-entropy in :func:`sc.fit` and top-1
    accuracy in :func:`sc.evaluate` (see :func:`sc.data.as_task`).
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
        self.input_shape = tuple(int(d) for d in self.input_shape)
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

    def example_inputs(self, batch: int = 1) -> torch.Tensor:
        """The first ``batch`` training inputs, shaped ``(batch, *input_shape)``."""
        batch = check_int("batch", batch, minimum=1)
        n = min(batch, len(self.train))
        x = torch.stack([self.train[i][0] for i in range(n)])
        if n < batch:  # repeat when the training set is smaller than the batch asked for
            x = x.repeat((batch + n - 1) // n, *([1] * len(self.input_shape)))[:batch]
        return x

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


def tensor_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """float32 inputs and int64 labels as a TensorDataset."""
    return TensorDataset(
        torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32),
        torch.as_tensor(np.ascontiguousarray(y), dtype=torch.int64),
    )


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
