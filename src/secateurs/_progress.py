"""Rich progress bars: :class:`Steps` over the rounds of a long call (the searches, a grid,
the KWS synthesis, a C build and run), and the bar ``sc.fit``'s own (``train.RichProgress``)
draws; :func:`interactive` says whether anyone would see them."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


def bar(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def interactive() -> bool:
    """Whether output reaches a person: a terminal, or a Jupyter notebook (rich draws its
    bars in both). False when output is piped or captured, as under a scheduler or pytest."""
    for stream in (sys.stderr, sys.stdout):
        try:
            if stream.isatty():
                return True
        except (AttributeError, ValueError):  # replaced or closed streams
            pass
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class Steps:
    """A progress bar over ``total`` steps of one long call (a search's rounds, a grid's
    cells, a dataset's synthesis, a C build and run), drawn by rich where output reaches a
    person (:func:`interactive`: a terminal or a notebook) and ``enabled``; otherwise it
    draws nothing and costs nothing. No logging configuration is needed to see it.

        with Steps("ABC search", cycles, enabled=progress) as bar:
            for cycle in range(cycles):
                ...
                bar.advance(status=f"best {best:.3f}")
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        enabled: bool = True,
        console: Console | None = None,
    ) -> None:
        self.description, self.total = description, total
        self.enabled = bool(enabled) and (console is not None or interactive())
        self.console = console
        self._progress: Progress | None = None
        self._bar: TaskID | None = None

    def __enter__(self) -> Steps:
        if self.enabled:
            self._progress = bar(self.console)
            self._progress.start()
            self._bar = self._progress.add_task(self.description, total=self.total, status="")
        return self

    def advance(self, steps: int = 1, status: str = "") -> None:
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, advance=steps, status=status)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
