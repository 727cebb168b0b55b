"""Shared benchmark plumbing: timed child processes, result files, tables with a column per object store
and latency (``Matrix``). The object stores themselves: ``bench/stores.py``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OCIGC = str(Path(sys.executable).parent / "ocigc")


@dataclass
class Timed:
    wall: float
    cpu: float
    max_rss_mb: float
    rc: int
    stdout: str
    stderr: str
    ops: dict[str, int]


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """Run a command; wall time, CPU time and peak RSS of that child alone (os.wait4)."""
    fd, stats_name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    full_env = {**os.environ, **(env or {}), "OCIGC_STORAGE_STATS": stats_name}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    try:
        ops = json.loads(Path(stats_name).read_text() or "{}")
    except (OSError, ValueError):
        ops = {}
    os.unlink(stats_name)
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, stdout, stderr, ops)


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1))
    return path


def present(layout: Path) -> set[str]:
    out = set()
    blobs = layout / "blobs"
    for alg in os.listdir(blobs):
        for name in os.listdir(blobs / alg):
            out.add(f"{alg}:{name}")
    return out


def load_1min() -> float:
    """The 1-minute load average (what ``uptime`` prints first)."""
    return round(os.getloadavg()[0], 2)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class Matrix:
    """A table with a column per object store and latency and a row per tool or operation.

    Each cell keeps the 1-minute load average (``uptime``) when it was measured; a row's load column
    lists them in column order. Ratio rows take the higher load of the two cells they divide.
    """

    def __init__(self, title: str, note: str = "") -> None:
        self.title = title
        self.note = note
        self.columns: list[str] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.loads: dict[str, dict[str, float]] = {}

    def put(self, row: str, col: str, value: Any, load: float | None = None) -> None:
        if col not in self.columns:
            self.columns.append(col)
        self.rows.setdefault(row, {})[col] = value
        self.loads.setdefault(row, {})
        if load is not None:
            self.loads[row][col] = load

    def put_ratio(self, row: str, col: str, numerator: str, denominator: str) -> None:
        a, b = self.rows.get(numerator, {}).get(col), self.rows.get(denominator, {}).get(col)
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return
        loads = [self.loads[r][col] for r in (numerator, denominator) if col in self.loads.get(r, {})]
        self.put(row, col, ratio(a, b), max(loads) if loads else None)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines += ["| | " + " | ".join(self.columns) + " | load (1 min, per column) |",
                  "|---|" + "---:|" * len(self.columns) + "---|"]
        for row, cells in self.rows.items():
            loads = self.loads.get(row, {})
            load = " / ".join(f"{loads[c]:.2f}" if c in loads else "-" for c in self.columns)
            lines.append(f"| {row} | " + " | ".join(_cell(cells.get(c, "")) for c in self.columns) + f" | {load} |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "note": self.note, "columns": self.columns, "rows": self.rows,
                "loads": self.loads}


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
