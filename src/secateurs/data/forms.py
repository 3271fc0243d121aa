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

from .task import Task, stratified_split, tensor_dataset

VAL_FRACTION = 0.15

FORMS = (
    "a Task (sc.data.load(...)); a task name or an .npz path; a (train, val) or "
    "(train, val, test) tuple whose parts are DataLoaders, datasets, iterables of "
    "(inputs, targets) batches or (x, y) pairs of tensors/arrays; or one (x, y) pair, "
    f"from which {VAL_FRACTION:.0%} is held out for validation"
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
    validation split is also the test split."""
    for what, fn in (("loss", loss), ("metric", metric)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{what} must be a callable (outputs, targets) -> value, got {fn!r}")
    if isinstance(data, Task):
        task = data
    elif isinstance(data, (str, Path)):
        from . import load

        task = load(data, seed=seed)
    else:
        task = _from_parts(data, name, seed)
    if loss is None and metric is None:
        return task
    from dataclasses import replace

    return replace(task, loss=loss or task.loss, metric=metric or task.metric)


def _from_parts(data, name: str, seed: int) -> Task:
    if isinstance(data, (tuple, list)) and len(data) == 2 and _is_array(data[0]):
        x, y = _pair(data, "data")
        if len(np.unique(y)) < 2 or len(y) < 4:
            raise ValueError("data: one (x, y) pair needs at least 4 samples of 2 classes")
        x_tr, x_val, y_tr, y_val = stratified_split(x, y, VAL_FRACTION, seed)
        splits = {"train": (x_tr, y_tr), "val": (x_val, y_val)}
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        splits = {s: _read(part, s) for s, part in zip(("train", "val", "test"), data)}
    else:
        raise TypeError(f"data must be {FORMS}; got {type(data).__name__}")
    shapes = {s: tuple(x.shape[1:]) for s, (x, _) in splits.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"data: the sample shapes differ between splits: {shapes}")
    shape = shapes["train"]
    if len(shape) not in (2, 3):
        raise ValueError(
            f"data: samples must be shaped (C, L) or (C, H, W) (or (L,), read as one channel), "
            f"got {shape}; a model with several inputs is not supported yet"
        )
    num_classes = int(max(y.max() for _, y in splits.values())) + 1
    sets = {s: tensor_dataset(*xy) for s, xy in splits.items()}
    return Task(
        name=name,
        modality="image" if len(shape) == 3 else "signal",
        train=sets["train"],
        val=sets["val"],
        test=sets.get("test", sets["val"]),
        input_shape=shape,
        num_classes=max(num_classes, 2),
    )


def _is_array(v) -> bool:
    return isinstance(v, (torch.Tensor, np.ndarray))


def _read(part, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as (inputs, labels) arrays."""
    if isinstance(part, (tuple, list)) and len(part) == 2 and _is_array(part[0]):
        return _pair(part, split)
    if isinstance(part, Dataset) and not isinstance(part, Iterable) and hasattr(part, "__len__"):
        part = DataLoader(part, batch_size=256)
    if not isinstance(part, Iterable) or isinstance(part, (str, bytes, torch.Tensor)):
        raise TypeError(
            f"data's {split} split must be a DataLoader, a dataset, an iterable of "
            f"(inputs, targets) batches or an (x, y) pair; got {type(part).__name__}"
        )
    xs, ys = [], []
    for i, batch in enumerate(part):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(f"data's {split} split: batch {i} is a {type(batch).__name__}, not an "
                            "(inputs, targets) pair")  # fmt: skip
        inputs, targets = batch
        if isinstance(inputs, (tuple, list)):
            raise ValueError(f"data's {split} split: batch {i} has {len(inputs)} inputs; a model "
                             "with several inputs is not supported yet")  # fmt: skip
        xs.append(torch.as_tensor(inputs))
        ys.append(torch.as_tensor(targets).reshape(-1))
    if not xs:
        raise ValueError(f"data's {split} split is empty")
    x = torch.cat([t if t.dim() > 1 else t[None] for t in xs]).numpy()
    return _pair((x, torch.cat(ys).numpy()), split)


def _pair(pair, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for v in pair)
    if len(x) != len(y):
        raise ValueError(f"data's {split} split: {len(x)} inputs but {len(y)} targets")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"data's {split} split: inputs must be numbers, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"data's {split} split holds NaN or infinite inputs; clean them first")
    if x.ndim == 2:
        x = x[:, None, :]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(
            f"data's {split} split: targets must be class indices 0..K-1, one per sample (an "
            f"integer array shaped (N,)); got dtype {y.dtype}, shape {y.shape}"
        )
    return x, y.astype(np.int64)
