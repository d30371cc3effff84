"""One worker thread in the kernel for long explanations: the newest request wins.

``submit(job)`` supersedes every earlier request: a queued one is dropped unrun, a running one
sees ``stale()`` become true (long methods check it between batches and raise :class:`Stale`),
and its result is discarded by the caller. The kernel's main thread stays free meanwhile.

``close()`` makes every job stale at once (a running Score-FAM stops after its current batch),
drops the queue, and ends the thread; a request made after it is never run: its Future holds
:class:`Closed` (``Explorer.select`` after ``close()`` raises it, saying so).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Stale(Exception):
    """Raised inside a job that a newer request has superseded."""


class Closed(RuntimeError):
    """A request made after :meth:`Worker.close` (the widget was closed): it is never run."""


CLOSED_MESSAGE = (
    "the widget is closed: close() ended its worker thread, so nothing more is explained; "
    "create a new fw.Explorer (or fw.explain) to explain more images"
)


class Worker:
    def __init__(self, name: str = "famwidget-worker") -> None:
        self._queue: queue.Queue = queue.Queue()
        self._latest = 0
        self._closed = False
        self.lock = threading.RLock()
        """Held by :meth:`submit` and :meth:`publish`: a job that was superseded can never put
        its result on screen after the newer request has been made."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def check_open(self) -> None:
        """Raise :class:`Closed` after :meth:`close` (a request that would never run)."""
        if self._closed:
            raise Closed(CLOSED_MESSAGE)

    def submit(self, job: Callable[[Callable[[], bool]], Any]) -> Future:
        """Queue ``job(stale)`` and make it the newest request; returns its Future (after
        :meth:`close`: a Future that raises :class:`Closed`, the job never runs)."""
        future: Future = Future()
        with self.lock:
            if self._closed:
                future.set_exception(Closed(CLOSED_MESSAGE))
                return future
            self._latest += 1
            ticket = self._latest
            self._queue.put((ticket, job, future))
        return future

    def publish(self, stale: Callable[[], bool], show: Callable[[], None]) -> bool:
        """Run ``show()`` only if the job is still the newest, atomically with :meth:`submit`."""
        with self.lock:
            if stale():
                return False
            show()
            return True

    def _run(self) -> None:
        while True:
            ticket, job, future = self._queue.get()
            if job is None:
                return

            def stale(ticket: int = ticket) -> bool:
                return self._closed or ticket != self._latest

            if stale() or not future.set_running_or_notify_cancel():
                future.cancel()
                continue
            try:
                future.set_result(job(stale))
            except BaseException as error:  # handed to the caller through the Future
                future.set_exception(error)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (no job runs any more)."""
        return self._closed

    @property
    def alive(self) -> bool:
        """Whether the worker thread still runs (False soon after :meth:`close`)."""
        return self._thread.is_alive()

    def close(self, timeout: float | None = 0.0) -> bool:
        """Supersede every job, end the thread; wait up to ``timeout`` s (``None``: until it
        ends). Returns whether the thread has ended. Closing twice is harmless."""
        with self.lock:
            if not self._closed:
                self._closed = True
                self._queue.put((0, None, None))
        if timeout is None or timeout > 0:
            self._thread.join(timeout)
        return not self._thread.is_alive()
