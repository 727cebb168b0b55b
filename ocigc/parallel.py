"""A bounded thread pool for the many small operations a mounted bucket makes slow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from itertools import count
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Default number of storage operations in flight. On an s3fs mount each costs milliseconds.
DEFAULT_JOBS = 16
#: Items run in the calling thread while they wait (wall time not spent on the thread's CPU) less
#: than this on average; items that wait longer (a mounted bucket's round trip, a cold disk) bring in
#: the other threads. On a local disk with the files in the page cache a stat, read or unlink takes
#: microseconds, and parsing a manifest is CPU work the interpreter lock serializes anyway: more
#: threads would only add their start (about 50-100 µs each) and contention for the lock.
SLOW_ITEM = 0.0003
#: Items after which the waiting is measured only every ``CHECK_EVERY`` items (two clock reads each).
CHECK_FIRST = 32
CHECK_EVERY = 16


def pmap(fn: Callable[[T], R], items: Iterable[T], jobs: int = DEFAULT_JOBS,
         on_done: Callable[[], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``jobs`` calls in flight; order kept, errors raised.

    The calling thread takes items first; when they turn out to wait on I/O (``SLOW_ITEM`` on
    average), up to ``jobs - 1`` threads join it, each taking the next item until none is left: no future per item,
    so the overhead per item stays a few microseconds. Every item is processed even when one fails;
    then the error of the first failing item is raised. An interrupt (Ctrl-C in the calling thread)
    stops handing out items; the calls in flight finish, then it propagates.
    """
    seq = list(items)
    if jobs <= 1 or len(seq) <= 1:
        out = []
        for x in seq:
            out.append(fn(x))
            if on_done:
                on_done()
        return out

    results: list[R | None] = [None] * len(seq)
    errors: dict[int, BaseException] = {}
    next_index = count().__next__  # atomic under the GIL
    n = len(seq)

    stop = threading.Event()  # an interrupt: take no further items

    def run(i: int) -> bool:
        """Item ``i``; False when it was interrupted (everyone stops)."""
        try:
            results[i] = fn(seq[i])
        except Exception as e:  # raised by the caller's thread below
            errors[i] = e
            return True
        except BaseException as e:  # an interrupt: stop everyone, re-raised below
            errors[i] = e
            stop.set()
            return False
        if on_done:
            on_done()
        return True

    def worker() -> None:
        while not stop.is_set() and (i := next_index()) < n:
            if not run(i):
                return

    threads: list[threading.Thread] = []
    try:
        wall, cpu = time.monotonic(), time.thread_time()
        done = 0
        while not stop.is_set() and (i := next_index()) < n:
            if not run(i):
                break
            done += 1
            if done < n - 1 and (done <= CHECK_FIRST or done % CHECK_EVERY == 0) and (
                    (time.monotonic() - wall) - (time.thread_time() - cpu) > SLOW_ITEM * done):
                threads = [threading.Thread(target=worker, name=f"ocigc-pmap-{k}", daemon=True)
                           for k in range(min(jobs, n - done) - 1)]
                for t in threads:
                    t.start()
                worker()  # the calling thread works on too
                break
    except BaseException:  # Ctrl-C: the others finish the item they hold, then stop
        stop.set()
        raise
    finally:
        for t in threads:
            t.join()
    if errors:
        interrupts = [e for e in errors.values() if not isinstance(e, Exception)]
        raise interrupts[0] if interrupts else errors[min(errors)]
    return results  # type: ignore[return-value]
