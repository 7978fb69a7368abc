"""Progress on a terminal (count, rate, ETA) with rich; silent elsewhere."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.status import Status
from rich.text import Text


class RateColumn(ProgressColumn):
    def __init__(self, unit: str = "img") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


class RichProgress:
    """Implements ``indexer.run.Progress``."""

    def __init__(self, enabled: bool, console: Console | None = None, *, label: str = "indexing", unit: str = "img") -> None:
        self.enabled = enabled
        self._console = console or Console(stderr=True)
        self._status: Status | None = None
        self._progress = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(unit),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self._console,
            disable=not enabled,
        )
        self._task = None

    def stage(self, text: str | None) -> None:
        """A spinner with ``text`` for the steps without a count (walking, building the index); None ends it."""
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self.enabled and text:
            self._status = self._console.status(text)
            self._status.start()

    def start(self, total: int) -> None:
        self.stage(None)
        if self.enabled:
            self._progress.start()
            self._task = self._progress.add_task("index", total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop()
