"""A bounded thread pool for the many small operations a mounted bucket makes slow."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from itertools import count
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Default number of storage operations in flight. On an s3fs mount each costs milliseconds.
DEFAULT_JOBS = 16


def pmap(fn: Callable[[T], R], items: Iterable[T], jobs: int = DEFAULT_JOBS,
         on_done: Callable[[], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``jobs`` calls in flight; order kept, errors raised.

    ``jobs`` threads each take the next item until none is left: no future per item, so the
    overhead per item stays a few microseconds (an executor's submit costs tens, which on a local
    disk is more than the stat or unlink it wraps). Every item is processed even when one fails;
    then the error of the first failing item is raised. An interrupt (Ctrl-C in the calling
    thread) stops handing out items; the calls in flight finish, then it propagates.
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

    def worker() -> None:
        while not stop.is_set() and (i := next_index()) < n:
            try:
                results[i] = fn(seq[i])
            except Exception as e:  # raised by the caller's thread below
                errors[i] = e
                continue
            except BaseException as e:  # an interrupt: stop everyone, re-raised below
                errors[i] = e
                stop.set()
                return
            if on_done:
                on_done()

    threads = [threading.Thread(target=worker, name=f"ocigc-pmap-{k}", daemon=True)
               for k in range(min(jobs, n) - 1)]
    for t in threads:
        t.start()
    try:
        worker()  # the calling thread works too
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
