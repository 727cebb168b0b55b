"""A bounded thread pool for the many small operations a mounted bucket makes slow."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Default number of storage operations in flight. On an s3fs mount each costs milliseconds.
DEFAULT_JOBS = 16


def pmap(fn: Callable[[T], R], items: Iterable[T], jobs: int = DEFAULT_JOBS,
         on_done: Callable[[], None] | None = None) -> list[R]:
    """``[fn(x) for x in items]`` with up to ``jobs`` calls in flight; order kept, errors raised."""
    seq = list(items)
    if jobs <= 1 or len(seq) <= 1:
        out = []
        for x in seq:
            out.append(fn(x))
            if on_done:
                on_done()
        return out

    def run(x: T) -> R:
        r = fn(x)
        if on_done:
            on_done()
        return r

    with ThreadPoolExecutor(max_workers=min(jobs, len(seq))) as pool:
        return list(pool.map(run, seq))
