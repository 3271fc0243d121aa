"""A user's own data as a Task: tensors, arrays, DataLoaders, datasets or iterables of
``(inputs, targets)`` batches, with their own loss and metric.

task = sc.data.as_task((train_loader, val_loader), loss=my_loss, metric=my_metric)

Every stage that takes a Task (``sc.fit``, ``sc.evaluate``, the searches, ``sc.compress``)
passes anything else through :func:`as_task` first, so they all take the same forms.
Microcontroller data sets are small: the batches are read once into tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .files import load
from .task import Task, stratified_split, tensor_dataset

VAL_FRACTION = 0.15

FORMS = (
    "a Task (sc.data.load(...)); a task name or an .npz path; a (train, val) or "
    "(train, val, test) tuple whose parts are DataLoaders, datasets, iterables of "
    "(inputs, targets) batches or (x, y) pairs of tensors/arrays; or one (x, y) pair, "
    f"from which {VAL_FRACTION:.0%} is held out for validation. For a model with several "
    "inputs, x (and a batch's inputs) is a tuple of tensors/arrays"
)


def as_task(
    data,
    *,
    loss: Callable | None = None,
    metric: Callable | None = None,
    name: str = "data",
    seed: int = 0,
) -> Task:
    """``data`` in any of the forms above as a Task; ``loss(outputs, targets)`` and
    ``metric(outputs, targets)`` (a float, higher is better) replace cross-entropy and
    top-1 accuracy wherever the Task is trained or scored. With no test split given, the
    validation split is also the test split. ``name`` labels the Task; ``seed`` fixes the
    validation split taken from training data given alone."""
    for what, fn in (("loss", loss), ("metric", metric)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{what} must be a callable (outputs, targets) -> value, got {fn!r}")
    if isinstance(data, Task):
        task = data
    elif isinstance(data, (str, Path)):
        task = load(data, seed=seed)
    else:
        task = _from_parts(data, name, seed)
    if loss is None and metric is None:
        return task
    from dataclasses import replace

    return replace(task, loss=loss or task.loss, metric=metric or task.metric)


def _from_parts(data, name: str, seed: int) -> Task:
    if isinstance(data, (tuple, list)) and len(data) == 2 and _is_pair(data):
        xs, y = _pair(data, "data")
        if len(np.unique(y)) < 2 or len(y) < 4:
            raise ValueError("data: one (x, y) pair needs at least 4 samples of 2 classes")
        parts = stratified_split(np.arange(len(y)), y, VAL_FRACTION, seed)
        idx = {"train": parts[0], "val": parts[1]}
        splits = {s: ([x[i] for x in xs], y[i]) for s, i in idx.items()}
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        splits = {s: _read(part, s) for s, part in zip(("train", "val", "test"), data)}
    else:
        raise TypeError(f"data must be {FORMS}; got {type(data).__name__}")
    shapes = {s: tuple(tuple(x.shape[1:]) for x in xs) for s, (xs, _) in splits.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"data: the sample shapes differ between splits: {shapes}")
    shape = shapes["train"]
    if len(shape) == 1 and len(shape[0]) not in (2, 3):
        raise ValueError(
            f"data: samples must be shaped (C, L) or (C, H, W) (or (L,), read as one channel), "
            f"got {shape[0]}"
        )
    if len(shape) > 1 and any(len(s) not in (1, 2, 3) for s in shape):
        raise ValueError(f"data: each input of a sample must have 1 to 3 dimensions, got {shape}")
    num_classes = int(max(y.max() for _, y in splits.values())) + 1
    sets = {s: tensor_dataset(*xy) for s, xy in splits.items()}
    return Task(
        name=name,
        modality="image" if any(len(s) == 3 for s in shape) else "signal",
        train=sets["train"],
        val=sets["val"],
        test=sets.get("test", sets["val"]),
        input_shape=shape[0] if len(shape) == 1 else shape,
        num_classes=max(num_classes, 2),
    )


def _is_array(v) -> bool:
    return isinstance(v, (torch.Tensor, np.ndarray))


def _is_inputs(v) -> bool:
    """An array, or a tuple of arrays (the inputs of a model with several inputs)."""
    return _is_array(v) or (
        isinstance(v, (tuple, list)) and len(v) > 1 and all(_is_array(a) for a in v)
    )


def _is_pair(part) -> bool:
    """An (x, y) pair: inputs (an array or a tuple of arrays), then an array of targets."""
    return len(part) == 2 and _is_inputs(part[0]) and _is_array(part[1])


def _read(part, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """One split as (a list of input arrays, labels)."""
    if isinstance(part, (tuple, list)) and _is_pair(part):
        return _pair(part, split)
    if isinstance(part, Dataset) and not isinstance(part, Iterable) and hasattr(part, "__len__"):
        part = DataLoader(part, batch_size=256)
    if not isinstance(part, Iterable) or isinstance(part, (str, bytes, torch.Tensor)):
        raise TypeError(
            f"data's {split} split must be a DataLoader, a dataset, an iterable of "
            f"(inputs, targets) batches or an (x, y) pair; got {type(part).__name__}"
        )
    xs: list[list[torch.Tensor]] = []
    ys = []
    for i, batch in enumerate(part):
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise TypeError(
                f"data's {split} split: batch {i} is a {type(batch).__name__}, not an "
                "(inputs, targets) pair"
            )
        if len(batch) == 2:  # (inputs, targets); inputs may be a tuple of tensors
            inputs, targets = batch
            inputs = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
        else:  # (x_1, ..., x_k, targets), as a TensorDataset of several inputs yields
            *inputs, targets = batch
        if xs and len(inputs) != len(xs[0]):
            raise ValueError(
                f"data's {split} split: batch {i} has {len(inputs)} inputs, batch 0 {len(xs[0])}"
            )
        xs.append([torch.as_tensor(t) for t in inputs])
        ys.append(torch.as_tensor(targets).reshape(-1))
    if not xs:
        raise ValueError(f"data's {split} split is empty")
    cols = [
        torch.cat([b[k] if b[k].dim() > 1 else b[k][None] for b in xs]).numpy()
        for k in range(len(xs[0]))
    ]
    return _pair((cols[0] if len(cols) == 1 else tuple(cols), torch.cat(ys).numpy()), split)


def _pair(pair, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    inputs, y = pair
    xs = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    xs = [np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for v in xs]
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    for k, x in enumerate(xs):
        what = "inputs" if len(xs) == 1 else f"input {k}"
        if len(x) != len(y):
            raise ValueError(f"data's {split} split: {len(x)} {what} but {len(y)} targets")
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"data's {split} split: {what} must be numbers, got dtype {x.dtype}")
        if not np.isfinite(x).all():
            raise ValueError(f"data's {split} split holds NaN or infinite {what}; clean them first")
    xs = [x.astype(np.float32) for x in xs]
    if len(xs) == 1 and xs[0].ndim == 2:  # one input of (L,) samples: one channel
        xs[0] = xs[0][:, None, :]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(
            f"data's {split} split: targets must be class indices 0..K-1, one per sample (an "
            f"integer array shaped (N,)); got dtype {y.dtype}, shape {y.shape}"
        )
    return xs, y.astype(np.int64)
