"""Name -> object registries: how models, tasks and later criteria are found by name."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A dictionary of named entries filled by a decorator.

    An unknown name fails with the list of known ones, as ``timm.list_models`` does.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: add the decorated object under ``name`` (default: its ``__name__``).
        Used bare (``@register``, as timm's ``@register_model``), it registers the object
        under its ``__name__`` and returns it."""
        if callable(name) and not isinstance(name, str):  # @register, not @register(...)
            return self.register(None)(name)

        def add(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]
            if not isinstance(key, str) or not key:
                raise ValueError(f"a {self.kind} name must be a non-empty string, got {key!r}")
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered; pick another name")
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}"
            ) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names, optionally filtered by a shell-style pattern such as ``"*mobilenet*"``."""
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
