"""Tasks from a user's files: an ``.npz`` archive, or a folder with a sub-folder per class."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .._checks import check_int
from .registry import TASKS, list_tasks
from .task import Task, stratified_split, tensor_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm")
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


def _check_inputs(x: np.ndarray, key: str, source: Path, one: bool = True) -> np.ndarray:
    """Real, finite inputs as float32; the only input of a model, shaped (N, L), gets one
    channel (``one``); an input of several is kept as shaped."""
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{source}: '{key}' must hold real numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            f"{source}: '{key}' must be shaped (N, L), (N, C, L) or (N, C, H, W), got {x.shape}"
        )
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(
            f"{source}: '{key}' holds {int(bad.sum())} NaN or infinite values "
            "(first at sample {}); clean or impute them before loading".format(
                int(np.argwhere(bad)[0][0])
            )
        )
    return x[:, None, :] if x.ndim == 2 and one else x


def _input_names(arrays: dict, path: Path) -> list[str]:
    """``["x"]``, or ``["x0", "x1", ...]`` for a model with several inputs."""
    if "x_train" in arrays:
        return ["x"]
    names: list[str] = []
    while f"x{len(names)}_train" in arrays:
        names.append(f"x{len(names)}")
    return names if len(names) > 1 else ["x"]


def _check_labels(y: np.ndarray, key: str, source: Path) -> np.ndarray:
    if y.ndim != 1:
        raise ValueError(f"{source}: '{key}' must be a 1-D array of class indices, got {y.shape}")
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"{source}: '{key}' must hold integer class indices, got dtype {y.dtype}")
    if not np.issubdtype(y.dtype, np.integer) and (
        not np.all(np.isfinite(y)) or np.any(y != np.round(y))
    ):
        raise ValueError(
            f"{source}: '{key}' holds non-integer labels such as {y[y != np.round(y)][:3]}; "
            "labels must be class indices 0..K-1"
        )
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{source}: '{key}' holds negative labels; use class indices 0..K-1")
    return y


def load_npz(path: str | Path, *, seed: int = 0) -> Task:
    """Load ``x_train, y_train, x_test, y_test`` (and optionally ``x_val, y_val``) from the
    .npz file at ``path``.

    Inputs are shaped (N, L) or (N, C, L) for signals, (N, C, H, W) for images. A model
    with several inputs reads ``x0_train, x1_train, ...`` (and ``x0_test``, ...) instead
    of ``x_train``, each kept as shaped. Without a validation pair, 15% of train is held
    out, stratified by ``seed``.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except ValueError as err:
        if "pickle" not in str(err):
            raise
        raise ValueError(
            f"{path}: holds an object array (Python objects, never unpickled "
            "here); save numeric arrays with np.savez"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(
            f"{path}: not a readable .npz archive ({type(err).__name__}: {err}); "
            "write it again with np.savez"
        ) from None
    names = _input_names(arrays, path)
    required = [f"{n}_{s}" for s in ("train", "test") for n in names] + ["y_train", "y_test"]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(
            f"{path}: missing arrays {missing}; an .npz task needs x_train, y_train, x_test, "
            "y_test (and optionally x_val, y_val), or x0_train, x1_train, ... for a model "
            f"with several inputs; found {sorted(arrays)}"
        )
    if any((f"{n}_val" in arrays) != ("y_val" in arrays) for n in names):
        raise ValueError(
            f"{path}: give both {', '.join(n + '_val' for n in names)} and y_val, or neither"
        )
    splits = [s for s in ("train", "val", "test") if "y_" + s in arrays]
    data = {}
    for s in splits:
        xs = [_check_inputs(arrays[f"{n}_{s}"], f"{n}_{s}", path, len(names) == 1) for n in names]
        y = _check_labels(arrays[f"y_{s}"], f"y_{s}", path)
        for n, x in zip(names, xs):
            if len(x) != len(y):
                raise ValueError(
                    f"{path}: {n}_{s} has {len(x)} samples but y_{s} has {len(y)}; they must match"
                )
        if len(y) == 0:
            raise ValueError(f"{path}: {names[0]}_{s} is empty")
        data[s] = (xs, y)
    shapes = {s: tuple(x.shape[1:] for x in data[s][0]) for s in splits}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"{path}: sample shapes differ between splits: {shapes}")
    num_classes = int(max(data[s][1].max() for s in splits)) + 1
    present = np.bincount(data["train"][1], minlength=num_classes)
    empty = [int(c) for c in np.flatnonzero(present == 0)]
    if empty:
        raise ValueError(
            f"{path}: classes {empty} have no training samples; labels must be 0..K-1 "
            "with every class present in y_train"
        )
    if "val" not in data:
        xs, y = data["train"]
        try:
            i_tr, i_val, y_tr, y_val = stratified_split(np.arange(len(y)), y, VAL_FRACTION, seed)
        except ValueError as err:
            raise ValueError(f"{path}: y_train: {err} (x_val, y_val)") from None
        data["train"], data["val"] = ([x[i_tr] for x in xs], y_tr), ([x[i_val] for x in xs], y_val)
    shape = shapes["train"]
    return Task(
        name=path.stem,
        modality="image" if any(len(d) == 3 for d in shape) else "signal",
        train=tensor_dataset(*data["train"]),
        val=tensor_dataset(*data["val"]),
        test=tensor_dataset(*data["test"]),
        input_shape=shape[0] if len(shape) == 1 else shape,
        num_classes=num_classes,
    )


def load_image_folder(path: str | Path, *, seed: int = 0) -> Task:
    """Load the images under ``path``, ``path/<class>/<image>``: one sub-folder of images
    per class, sorted by name.

    Images are scaled to [0, 1]; grayscale when every image is, RGB otherwise; all must share
    one size. Split 70/15/15, stratified by ``seed``.
    """
    from PIL import Image

    root = Path(path)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise ValueError(
            f"{root}: an image-folder task needs one sub-folder per class (at least 2), "
            f"found {len(class_dirs)}"
        )
    files: list[tuple[Path, int]] = []
    for label, d in enumerate(class_dirs):
        images = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(
                f"{d}: class folder {d.name!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        files += [(p, label) for p in images]
    opened = []
    for p, _ in files:
        try:
            with Image.open(p) as im:
                im.load()
                opened.append(im.copy())
        except OSError as err:
            raise ValueError(f"{p}: cannot read this image ({err})") from None
    gray = all(im.mode in ("1", "L", "I;16", "I", "F") for im in opened)
    size = opened[0].size
    for (p, _), im in zip(files, opened):
        if im.size != size:
            raise ValueError(
                f"{p}: image is {im.size[0]}x{im.size[1]} but {files[0][0]} is "
                f"{size[0]}x{size[1]}; resize all images to one size"
            )
    arrays = []
    for im in opened:
        a = np.asarray(im.convert("L" if gray else "RGB"), dtype=np.float32) / 255.0
        arrays.append(a[None] if gray else a.transpose(2, 0, 1))
    x = np.stack(arrays)
    y = np.array([label for _, label in files], dtype=np.int64)
    counts = np.bincount(y)
    if counts.min() < 3:
        small = [class_dirs[i].name for i in np.flatnonzero(counts < 3)]
        raise ValueError(
            f"{root}: classes {small} have fewer than 3 images; each class needs at least 3 "
            "to appear in train, validation and test"
        )
    x_train, x_rest, y_train, y_rest = stratified_split(x, y, VAL_FRACTION + TEST_FRACTION, seed)
    x_val, x_test, y_val, y_test = stratified_split(x_rest, y_rest, 0.5, seed)
    return Task(
        name=root.name,
        modality="image",
        train=tensor_dataset(x_train, y_train),
        val=tensor_dataset(x_val, y_val),
        test=tensor_dataset(x_test, y_test),
        input_shape=x.shape[1:],
        num_classes=len(class_dirs),
        class_names=tuple(d.name for d in class_dirs),
    )


def load(name: str | Path, *, seed: int = 0, **kwargs) -> Task:
    """A registered task by ``name`` (``list_tasks()``), or a user's ``.npz`` file or image
    folder by path; ``kwargs`` are a registered task's options (``train_size=6000``).

    ``seed`` fixes the train/validation/test split.
    """
    seed = check_int("seed", seed, minimum=0)
    if isinstance(name, str) and name in TASKS:
        return TASKS.get(name)(seed=seed, **kwargs)
    if not isinstance(name, (str, Path)):
        raise TypeError(f"task must be a name or a path, got {type(name).__name__}")
    path = Path(name)
    if kwargs and (path.is_dir() or path.is_file()):
        raise TypeError(f"options {sorted(kwargs)} apply to registered tasks, not to files")
    if path.is_dir():
        return load_image_folder(path, seed=seed)
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"{path}: a task file must be an .npz archive, got {path.suffix!r}")
        return load_npz(path, seed=seed)
    raise ValueError(
        f"unknown task {str(name)!r}; known tasks: {', '.join(list_tasks())}; "
        "or give the path of an .npz file or of an image folder"
    )
