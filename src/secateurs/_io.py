"""Atomic file writes: a temporary file beside the target, then a rename, so a reader never
sees half a file and an interrupted run leaves the old one; and the one way a name that
comes from data (a task, a model label, a cell key) becomes part of a path."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` (bytes, text, or a function writing to a binary file) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def check_output_path(path: str | os.PathLike, what: str, folder: bool) -> Path:
    """``path`` as a Path, after failing early, naming it, where it cannot take what
    ``what`` writes: a file where a folder goes (or a folder where a file goes), or a file
    standing where one of its parent folders would be."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{what} writes a folder, but {path} is a file; pass a folder path")
    if not folder and path.is_dir():
        raise ValueError(
            f"{what} writes a file, but {path} is a folder; pass a file path inside it"
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} cannot write {path}: {parent} is a file, not a folder")
            break
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
MAX_NAME = 80


def safe_name(text: str) -> str:
    """``text`` as one file name that stays in its folder: characters other than letters,
    digits, ``_ . + -`` become ``_``, no leading dot, at most ``MAX_NAME`` characters; a name
    that had to change gets a short hash of the original, so two names never meet."""
    text = str(text)
    name = _UNSAFE.sub("_", text).lstrip(".") or "_"
    if name == text and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9]}-{digest}"


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path``, after checking that it resolves to somewhere under ``root``."""
    root_r, path_r = Path(root).resolve(), Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise ValueError(f"{path} is outside {root}; refusing to write there")
    return Path(path)


MAX_ALIASES = 64


def load_yaml(text: str):
    """``yaml.safe_load`` that refuses more than ``MAX_ALIASES`` aliases (``*name``): a few
    hundred bytes of nested aliases expand to billions of values wherever the document is
    walked (a "billion laughs" document). Raises ``yaml.YAMLError``."""
    import yaml

    class Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    mark = self.peek_event().start_mark
                    raise yaml.YAMLError(
                        f"more than {MAX_ALIASES} aliases (*name), at {mark}; write the values out"
                    )
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=Loader)
