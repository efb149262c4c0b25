"""Run a call that may hang (a decode) with a deadline: :func:`call_with_timeout`, for example
``call_with_timeout(lambda: reader.read([0, 4, 8]), 10.0)`` raises ``VideoDecodeError`` after 10 s.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from videomask.errors import VideoDecodeError

T = TypeVar("T")


class _TimedOut(VideoDecodeError):
    """The worker thread is still running (abandoned)."""


class _Task:
    """One call handed to a worker thread; ``done`` is set once ``result`` or ``error`` is filled in."""

    __slots__ = ("fn", "result", "error", "done")

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn: Callable[[], object] | None = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.fn()  # type: ignore[misc]
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            self.error = err
        finally:
            self.fn = None
            self.done.set()


class _Worker:
    """A reusable daemon thread running one :class:`_Task` at a time (see :func:`call_with_timeout`)."""

    def __init__(self) -> None:
        self.tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="videomask-decode")
        self.thread.start()

    def _loop(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:  # abandoned after a time-out: the thread ends once its call returned
                return
            task.run()
            del task  # hold nothing of the finished call while idle


class _IdleWorkers:
    """The idle workers of one process. Reusing threads (instead of one new thread per call) keeps decode
    allocations in the same few glibc malloc arenas; a new thread per call puts each video's buffers in
    whichever arena that thread is given, and the peak RSS creeps up with the number of videos."""

    def __init__(self) -> None:
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()


# Pools by process id: a forked child (e.g. a DataLoader worker) has none of its parent's threads, and its
# copy of the parent's lock may be held, so it finds no pool under its own id and starts afresh.
_pools: dict[int, _IdleWorkers] = {}


def _idle_workers() -> _IdleWorkers:
    """This process's idle workers."""
    pid = os.getpid()
    pool = _pools.get(pid)
    if pool is None:
        for other in list(_pools):  # the parent's pool, inherited by a forked child
            if other != pid:
                _pools.pop(other, None)
        pool = _pools.setdefault(pid, _IdleWorkers())  # one pool even when two threads get here at once
    return pool


def call_with_timeout(fn: Callable[[], T], timeout: float | None, what: str = "decode") -> T:
    """Run ``fn()`` and return its result, or raise ``VideoDecodeError`` after ``timeout`` seconds.

    With ``timeout=None`` the call runs inline. Otherwise it runs in a daemon worker thread, reused from
    call to call (each caller thread gets a worker of its own, so concurrent callers do not wait for each
    other); on timeout that worker is abandoned (a thread cannot be killed) and ends once ``fn`` returns,
    so callers should drop the object it was using. Exceptions from ``fn`` are re-raised.
    """
    if timeout is None:
        return fn()
    idle = _idle_workers()
    with idle.lock:
        worker = idle.workers.pop() if idle.workers else None
    if worker is None:
        worker = _Worker()
    task = _Task(fn)
    worker.tasks.put(task)
    finished = False
    try:
        finished = task.done.wait(timeout)
    finally:
        if finished:
            with idle.lock:
                idle.workers.append(worker)
        else:  # timed out (or interrupted): the worker's thread ends after this call
            worker.tasks.put(None)
    if not finished:
        raise _TimedOut(f"{what} timed out after {timeout:g} s")
    result, error = task.result, task.error
    task.result = task.error = None  # the error's traceback holds task.run's frame: no cycle through task
    if error is not None:
        try:
            raise error
        finally:
            del error
    return result  # type: ignore[return-value]
