"""The worker thread: newest request wins, stale work is dropped or cancelled."""

from __future__ import annotations

import threading

import pytest

from famwidget.widget.worker import Closed, Stale, Worker


def test_newest_request_wins_and_queued_ones_are_dropped():
    worker = Worker()
    gate, started = threading.Event(), threading.Event()
    ran = []

    def slow(stale):
        started.set()
        gate.wait(5)
        ran.append("slow")
        return "slow"

    first = worker.submit(slow)
    started.wait(5)
    queued = [worker.submit(lambda stale, i=i: ran.append(i)) for i in range(3)]
    gate.set()
    assert first.result(5) == "slow"
    queued[-1].result(5)
    assert ran == ["slow", 2]
    assert all(f.cancelled() for f in queued[:-1])
    worker.close()


def test_running_job_sees_stale_and_can_stop():
    worker = Worker()
    started = threading.Event()
    release = threading.Event()

    def long_job(stale):
        started.set()
        release.wait(5)
        if stale():
            raise Stale
        return "finished"

    running = worker.submit(long_job)
    started.wait(5)
    newer = worker.submit(lambda stale: "newer")
    release.set()
    with pytest.raises(Stale):
        running.result(5)
    assert newer.result(5) == "newer"
    worker.close()


def test_errors_reach_the_caller_and_the_worker_goes_on():
    worker = Worker()
    bad = worker.submit(lambda stale: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bad.result(5)
    assert worker.submit(lambda stale: 42).result(5) == 42
    worker.close()


def test_close_stops_a_running_job_drops_the_queue_and_ends_the_thread():
    worker = Worker()
    started, checked = threading.Event(), threading.Event()

    def long_job(stale):
        started.set()
        while not stale():  # a long method checks stale() between its batches
            checked.wait(0.01)
        raise Stale

    running = worker.submit(long_job)
    assert started.wait(5)
    queued = worker.submit(lambda stale: "never")
    assert worker.close(timeout=5) is True and not worker.alive
    with pytest.raises(Stale):
        running.result(0)
    assert queued.cancelled()
    ran = []
    late = worker.submit(lambda stale: ran.append(1))  # after close: never run, and says why
    with pytest.raises(Closed, match="the widget is closed: close\\(\\) ended its worker"):
        late.result(1)
    assert ran == []
    assert worker.close(timeout=1) is True  # closing twice is harmless


def test_publish_after_close_shows_nothing():
    worker = Worker()
    shown = []
    future = worker.submit(lambda stale: stale)
    stale = future.result(5)
    assert worker.publish(stale, lambda: shown.append(1)) is True
    worker.close(timeout=5)
    assert worker.publish(stale, lambda: shown.append(2)) is False
    assert shown == [1]
