"""Progress reporting. The core takes a ``Progress``; only this module knows tqdm."""

from __future__ import annotations

import sys
import threading
from typing import Protocol


class Counter(Protocol):
    def add(self, n: int = 1) -> None: ...
    def set_total(self, total: int) -> None: ...
    def close(self) -> None: ...


class Progress(Protocol):
    def counter(self, desc: str, total: int | None = None, unit: str = "it") -> Counter: ...


class NullCounter:
    def add(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def counter(self, desc: str, total: int | None = None, unit: str = "it") -> Counter:
        return NullCounter()


class _TqdmCounter:
    def __init__(self, desc: str, total: int | None, unit: str) -> None:
        from tqdm import tqdm

        scale = unit == "B"
        self._bar = tqdm(desc=desc, total=total, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                         file=sys.stderr, leave=False, dynamic_ncols=True)
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._bar.update(n)

    def set_total(self, total: int) -> None:
        with self._lock:
            self._bar.total = total
            self._bar.refresh()

    def close(self) -> None:
        with self._lock:
            self._bar.close()


class TqdmProgress:
    """Progress bars on stderr; the CLI uses it only when stderr is a terminal."""

    def counter(self, desc: str, total: int | None = None, unit: str = "it") -> Counter:
        return _TqdmCounter(desc, total, unit)
