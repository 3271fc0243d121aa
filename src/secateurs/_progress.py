"""A rich progress bar for training; used by the CLI and the recipe runner only."""

from __future__ import annotations

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
