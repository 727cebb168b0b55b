"""A bounded thread pool for the many small operations a mounted bucket makes slow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from itertools import count
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Default number of storage operations in flight. On an s3fs mount each costs milliseconds.
DEFAULT_JOBS = 16
#: Items run in the calling thread while they wait (wall time not spent on the thread's CPU) less
#: than this on average; items that wait longer (a mounted bucket's round trip, a cold disk, an
#: unlink behind the file system's journal) bring in the other threads. On a local disk with the
#: files in the page cache a stat, read or unlink takes microseconds, and parsing a manifest is CPU
#: work the interpreter lock serializes anyway: more threads would only add their start (about
#: 50-100 µs each) and contention for the lock.
SLOW_ITEM = 0.00005
#: Items after which the waiting is measured only every ``CHECK_EVERY`` items (two clock reads each).
CHECK_FIRST = 32
CHECK_EVERY = 16


def pmap(fn: Callable[[T], R], items: Iterable[T], jobs: int = DEFAULT_JOBS,
         on_done: Callable[[], None] | None = None, *, eager: bool = False) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``jobs`` calls in flight; order kept, errors raised.

    The calling thread takes items first; when they turn out to wait on I/O (``SLOW_ITEM`` on
    average), up to ``jobs - 1`` threads join it, each taking the next item until none is left: no
    future per item, so the overhead per item stays a few microseconds. Every item is processed
    even when one fails; then the error of the first failing item is raised. An interrupt (Ctrl-C
    in the calling thread) stops handing out items; the calls in flight finish, then it propagates.
    A caller with several batches in a row uses one ``Workers`` for all of them. ``eager``: every
    item is known to wait (a request to an object store): the threads start at once, so that a
    handful of items costs one round trip, not two."""
    with Workers(jobs) as workers:
        return workers.map(fn, items, on_done, eager=eager)


class _Job(Generic[T, R]):
    """One ``map``: the items, their results and errors, and who is working on it."""

    def __init__(self, fn: Callable[[T], R], seq: list[T], on_done: Callable[[], None] | None) -> None:
        self.fn = fn
        self.seq = seq
        self.n = len(seq)
        self.on_done = on_done
        self.results: list[R | None] = [None] * self.n
        self.errors: dict[int, BaseException] = {}
        self.next_index = count().__next__  # atomic under the GIL
        self.stop = threading.Event()  # an interrupt: take no further items
        self.idle = threading.Condition()
        self.active = 0  # threads of the pool working on this job

    def run(self, i: int) -> bool:
        """Item ``i``; False when it was interrupted (everyone stops)."""
        try:
            self.results[i] = self.fn(self.seq[i])
        except Exception as e:  # raised by the caller's thread
            self.errors[i] = e
            return True
        except BaseException as e:  # an interrupt: stop everyone, re-raised by the caller
            self.errors[i] = e
            self.stop.set()
            return False
        if self.on_done:
            self.on_done()
        return True

    def work(self) -> None:
        while not self.stop.is_set() and (i := self.next_index()) < self.n:
            if not self.run(i):
                return

    def leave(self) -> None:
        with self.idle:
            self.active -= 1
            self.idle.notify_all()


class Workers:
    """Up to ``jobs`` threads for a run's successive ``map`` calls (its batches): started when items
    turn out to wait (``pmap``), then kept for the next calls until the ``with`` block ends."""

    def __init__(self, jobs: int = DEFAULT_JOBS) -> None:
        self.jobs = jobs
        self._threads: list[threading.Thread] = []
        self._cv = threading.Condition()
        self._job: _Job[Any, Any] | None = None
        self._generation = 0
        self._closed = False

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []

    def map(self, fn: Callable[[T], R], items: Iterable[T], on_done: Callable[[], None] | None = None, *,
            eager: bool = False) -> list[R]:
        """``pmap`` on these workers."""
        seq = list(items)
        if self.jobs <= 1 or len(seq) <= 1:
            out = []
            for x in seq:
                out.append(fn(x))
                if on_done:
                    on_done()
            return out
        job: _Job[T, R] = _Job(fn, seq, on_done)
        with self._cv:  # threads already started join at once
            self._job = job
            self._generation += 1
            self._cv.notify_all()
        try:
            if eager and not self._threads:
                self._start(min(self.jobs, job.n) - 1)
            self._work(job)
        except BaseException:  # Ctrl-C: the others finish the item they hold, then stop
            job.stop.set()
            raise
        finally:
            with self._cv:
                self._job = None  # no thread joins any more
            with job.idle:
                while job.active:
                    job.idle.wait()
        if job.errors:
            interrupts = [e for e in job.errors.values() if not isinstance(e, Exception)]
            raise interrupts[0] if interrupts else job.errors[min(job.errors)]
        return job.results  # type: ignore[return-value]

    def _work(self, job: _Job[Any, Any]) -> None:
        """The calling thread's share; it starts the threads when the items wait."""
        if self._threads:
            job.work()
            return
        wall, cpu = time.monotonic(), time.thread_time()
        done = 0
        while not job.stop.is_set() and (i := job.next_index()) < job.n:
            if not job.run(i):
                return
            done += 1
            if done < job.n - 1 and (done <= CHECK_FIRST or done % CHECK_EVERY == 0) and (
                    (time.monotonic() - wall) - (time.thread_time() - cpu) > SLOW_ITEM * done):
                self._start(min(self.jobs, job.n - done) - 1)
                job.work()  # the calling thread works on too
                return

    def _start(self, n: int) -> None:
        for k in range(n):
            t = threading.Thread(target=self._serve, name=f"ocigc-pmap-{k}", daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self) -> None:
        seen = 0
        while True:
            with self._cv:
                while not self._closed and (self._job is None or self._generation == seen):
                    self._cv.wait()
                if self._closed:
                    return
                job, seen = self._job, self._generation
                assert job is not None
                with job.idle:
                    job.active += 1
            try:
                job.work()
            finally:
                job.leave()
