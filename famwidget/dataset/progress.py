"""A progress bar with the rate and the time left: tqdm where installed, a plain line otherwise.

In a notebook ``tqdm.auto`` draws the Jupyter widget bar; in a terminal a text bar; without
tqdm one line (rewritten in place on a terminal, at most once a second elsewhere).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """``Progress(total, initial=done_before)``; ``update(n)``; ``close()``."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "explain",
        enabled: bool = True,
        stream: TextIO | None = None,
        use_tqdm: bool = True,
    ):
        self.total, self.done, self.desc = total, initial, desc
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.start = time.perf_counter()
        self.initial = initial
        self.last = 0.0
        self.bar: Any = None
        if enabled and use_tqdm:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(
                    total=total,
                    initial=initial,
                    desc=desc,
                    unit="img",
                    file=self.stream,
                    dynamic_ncols=True,
                )

    def rate(self) -> float:
        """Entries per second in this run (the ones done before it do not count)."""
        seconds = time.perf_counter() - self.start
        return (self.done - self.initial) / seconds if seconds > 0 else 0.0

    def line(self) -> str:
        """``explain: 120/200 (60%) 35.2 img/s, 2 s left``."""
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = f"{left:.0f} s left" if left == left else "time left unknown"
        return f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) {rate:.1f} img/s, {eta}"

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        tty = getattr(self.stream, "isatty", lambda: False)()
        if tty or now - self.last >= 1.0 or self.done >= self.total:
            self.last = now
            self.stream.write(("\r" if tty else "") + self.line() + ("" if tty else "\n"))
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")
