"""Progress bars on stderr (rich), shown only when stderr is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


class Bar(Protocol):
    """What the SDK reports progress to."""

    def advance(self, steps: float = 1) -> None:
        """Count ``steps`` more steps done."""

    def update(self, completed: float, total: float | None = None, text: str | None = None) -> None:
        """Set the position (and optionally the total and the label)."""


class _Silent:
    def advance(self, steps: float = 1) -> None:
        return None

    def update(self, completed: float, total: float | None = None, text: str | None = None) -> None:
        return None


class _RichBar:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: float = 1) -> None:
        self._progress.advance(self._task, steps)

    def update(self, completed: float, total: float | None = None, text: str | None = None) -> None:
        fields: dict[str, object] = {"completed": completed}
        if total is not None:
            fields["total"] = total
        if text is not None:
            fields["description"] = text
        self._progress.update(self._task, **fields)  # type: ignore[arg-type]


def interactive() -> bool:
    """Whether progress bars make sense (stderr is a terminal)."""
    return sys.stderr.isatty()


@contextmanager
def progress_bar(text: str, total: float, show: bool | None = None) -> Iterator[Bar]:
    """A progress bar on stderr while the block runs; silent unless ``show`` (default: a TTY)."""
    if not (interactive() if show is None else show):
        yield _Silent()
        return
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(text, total=total)
        yield _RichBar(progress, task)
