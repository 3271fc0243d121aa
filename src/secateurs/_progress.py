"""A rich progress bar for training: the CLI's and the recipe runner's, and ``sc.fit``'s own
where output goes to a terminal or a notebook."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .train import Callback, FitState


class RichProgress(Callback):
    """One bar over the epochs, showing the last loss and validation accuracy."""

    def __init__(self, description: str = "training", console: Console | None = None) -> None:
        self.description = description
        self.console = console
        self._progress: Progress | None = None
        self._bar = None

    def on_fit_start(self, state: FitState) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._bar = self._progress.add_task(self.description, total=state.epochs, status="")

    def on_epoch_end(self, state: FitState) -> None:
        r = state.history.records[-1]
        status = f"loss {r['train_loss']:.3f}  val acc {r['val_acc']:.3f}"
        self._progress.update(self._bar, advance=1, status=status)

    def on_fit_end(self, state: FitState) -> None:
        if self._progress is not None:
            self._progress.stop()


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
