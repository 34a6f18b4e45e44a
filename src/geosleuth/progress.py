"""Progress of the loops a person waits for: evaluation, index builds, batches, the gazetteer build.

On a terminal it is a rich bar that goes away when the loop ends. Without one (a log file, CI, a
pipe to ``tee``) a bar cannot redraw, so a plain line goes to stderr every few seconds instead,
saying how far the loop is, how fast it goes and how long is left::

    eval im2gps3k: 40/775 (5%), 0.8/s, about 15 min left; within 25 km 12%

A loop that ends before the first interval prints nothing. ``geosleuth ... -q`` turns progress off
(:func:`set_enabled`); library callers pass ``enabled=False``.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

INTERVAL_S = 5.0  # seconds between two plain lines
_enabled = True


def set_enabled(on: bool) -> None:
    """Turn every progress display of this process on or off (the CLI's ``--quiet``)."""
    global _enabled
    _enabled = on


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """One loop's progress; use as a context manager and call :meth:`advance` as items finish
    (from any thread). ``total`` None: a task of unknown length (a spinner; lines say the time
    so far). ``announce``: without a terminal, also print the description at once (for a wait
    the user should know about before the first interval)."""

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        unit: str = "",
        enabled: bool | None = None,
        announce: bool = False,
        stream: TextIO | None = None,
        every: float | None = None,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0
        self._start: int | None = None  # completed when the first item finished here (a resumed run)
        self.note = ""
        self.enabled = _enabled if enabled is None else enabled
        self.announce = announce
        self.stream = stream
        self.every = INTERVAL_S if every is None else every
        self.lines = 0  # plain lines printed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._bar: Any = None
        self._task: Any = None
        self._t0 = time.monotonic()

    # -- the loop's side --

    def advance(self, n: int = 1) -> None:
        with self._lock:
            if self._start is None:
                self._start = self.completed
            self.completed += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed)

    def update(
        self, *, completed: int | None = None, total: int | None = None, note: str | None = None
    ) -> None:
        with self._lock:
            if completed is not None:
                self.completed = completed
            if total is not None:
                self.total = total
            if note is not None:
                self.note = note
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, total=self.total, note=self.note)

    def line(self) -> str:
        """The plain line for where the loop is now."""
        with self._lock:
            done, total, note = self.completed, self.total, self.note
            ran = done - (self._start if self._start is not None else done)  # this run's share
        elapsed = time.monotonic() - self._t0
        unit = f" {self.unit}" if self.unit else ""
        if total is None:
            text = f"{self.description}: {_duration(elapsed)} so far" + (f", {done}{unit}" if done else "")
        else:
            pct = f" ({done / total:.0%})" if total else ""
            text = f"{self.description}: {done}/{total}{unit}{pct}"
            if ran and elapsed > 0:
                rate = ran / elapsed
                text += f", {rate:.2g}/s" if rate >= 0.1 else f", {_duration(1 / rate)} each"
                if done < total:
                    text += f", about {_duration((total - done) / rate)} left"
            elif done < total:
                text += f", {_duration(elapsed)} so far"
        return text + (f"; {note}" if note else "")

    # -- display --

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def _print(self, text: str) -> None:
        out = self._out()
        print(text, file=out, flush=True)
        self.lines += 1

    def _tick(self) -> None:
        while not self._stop.wait(self.every):
            self._print(self.line())

    def __enter__(self) -> Progress:
        self._t0 = time.monotonic()
        if not self.enabled:
            return self
        out = self._out()
        if out.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                SpinnerColumn() if self.total is None else TextColumn(""),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
                console=Console(file=out, highlight=False),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, note=self.note)
            return self
        if self.announce:
            self._print(f"{self.description}...")
        self._ticker = threading.Thread(target=self._tick, name="geosleuth-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
            if self.lines and exc_type is None:  # the log shows the end of what it showed the start of
                took = _duration(time.monotonic() - self._t0)
                self._print(
                    f"{self.description}: done in {took}"
                    if self.total is None
                    else f"{self.line()} (done in {took})"
                )
