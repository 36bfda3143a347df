"""Progress of a long command: a rich bar on a terminal; elsewhere plain lines now and then,
or nothing, so logs and pipes get no escape codes."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

# How often a plain progress line is written when the output is not a terminal.
PLAIN_EVERY_S = 5.0


class Progress:
    """Counts `done` of `total`; `note` is free text shown after the counts."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        plain_every_s: float | None = None,
    ) -> None:
        self._label = label
        self._total = total
        self._stream = stream if stream is not None else sys.stderr
        self._plain_every_s = plain_every_s
        self._started = time.monotonic()
        self._last_plain = self._started
        self._done = 0
        self._bar: Any = None
        self._task: Any = None
        if self._stream.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=Console(file=self._stream),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total, note="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, note: str = "") -> None:
        self._done = done
        if self._bar is not None:
            self._bar.update(self._task, completed=done, note=note)
            return
        if self._plain_every_s is None:
            return
        now = time.monotonic()
        if now - self._last_plain < self._plain_every_s:
            return
        self._last_plain = now
        suffix = f", {note}" if note else ""
        print(
            f"{self._label}: {done}/{self._total} after {now - self._started:.0f} s{suffix}",
            file=self._stream,
            flush=True,
        )

    def advance(self, step: int = 1, note: str = "") -> None:
        self.update(self._done + step, note)

    def echo(self, line: str) -> None:
        """A line of output that the bar, when there is one, keeps above itself."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self._stream, flush=True)
