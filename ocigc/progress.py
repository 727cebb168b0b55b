"""Progress reporting. The core takes a ``Progress``; only this module knows tqdm."""

from __future__ import annotations

import sys
import threading
import time
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


def binary_bytes(n: float) -> str:
    """``n`` bytes in binary units (``143.0 MiB``), as every other byte count ocigc prints."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class _TqdmCounter:
    #: How often a byte counter recomputes its binary-unit figures (tqdm's own scaling is decimal: MB/s).
    REFRESH = 0.2

    def __init__(self, desc: str, total: int | None, unit: str) -> None:
        from tqdm import tqdm

        self._bytes = unit == "B"
        # tqdm puts ", " before the postfix: "push, 12.0 MiB/150.0 MiB, 40.0 MiB/s |███   | 8%"
        fmt = "{desc}{postfix} |{bar}| {percentage:3.0f}%" if self._bytes else None
        self._bar = tqdm(desc=desc, total=total, unit=unit, bar_format=fmt, file=sys.stderr, leave=False,
                         dynamic_ncols=True)
        self._lock = threading.Lock()
        self._shown = 0.0
        if self._bytes:
            self._postfix(force=True)

    def _postfix(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._shown < self.REFRESH:
            return
        self._shown = now
        elapsed = self._bar.format_dict.get("elapsed") or 0.0
        done = self._bar.n
        total = f"/{binary_bytes(self._bar.total)}" if self._bar.total else ""
        rate = f", {binary_bytes(done / elapsed)}/s" if elapsed > 0 else ""
        self._bar.set_postfix_str(f"{binary_bytes(done)}{total}{rate}", refresh=False)

    def add(self, n: int = 1) -> None:
        with self._lock:
            if self._bytes:
                self._postfix()
            self._bar.update(n)

    def set_total(self, total: int) -> None:
        with self._lock:
            self._bar.total = total
            if self._bytes:
                self._postfix(force=True)
            self._bar.refresh()

    def close(self) -> None:
        with self._lock:
            if self._bytes:
                self._postfix(force=True)
                self._bar.refresh()
            self._bar.close()


class TqdmProgress:
    """Progress bars on stderr; the CLI uses it only when stderr is a terminal."""

    def counter(self, desc: str, total: int | None = None, unit: str = "it") -> Counter:
        return _TqdmCounter(desc, total, unit)
