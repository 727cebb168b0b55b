"""Run reports for unattended runs, and a JSON log formatter.

``RunReport`` collects what one run did to every layout (what went, what was kept and why, bytes,
durations, lock waits, errors) and ``write`` puts it in a file atomically: a temp file next to
the target, flushed and fsync'ed, then renamed over it, so a reader (a monitoring check, the next
cron run) sees the previous report or the new one, never half of one.

``ocigc.gc.runlog`` turns log records into one JSON object per line (``--log-format json``).
Nothing here knows about terminals: the CLI decides what to log and where.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocigc import __version__
from ocigc.gc.run import Locker, LockLike, Mode, Outcome
from ocigc.layout.layout import Layout

REPORT_VERSION = 1
LOGGER_NAME = "ocigc.run"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


# --- atomic write --------------------------------------------------------------------------------
def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    import tempfile  # only a run with --json-report writes one

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    try:  # make the rename durable (best effort: not every file system allows it)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# --- lock waits ----------------------------------------------------------------------------------
@dataclass
class LockRecord:
    mode: str
    wait_seconds: float = 0.0
    acquired: bool = False
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "wait_seconds": round(self.wait_seconds, 3), "acquired": self.acquired,
                **({"stats": self.stats} if self.stats else {})}


class TimedLocker:
    """Wraps a ``Locker``: records, per layout, how long taking the lock took and whether it was taken."""

    def __init__(self, inner: Locker, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.clock = clock
        self.records: dict[str, list[LockRecord]] = {}

    def __call__(self, layout: Layout, mode: Mode) -> AbstractContextManager[LockLike]:
        return self._locked(layout, mode)

    @contextmanager
    def _locked(self, layout: Layout, mode: Mode) -> Iterator[LockLike]:
        rec = LockRecord(mode)
        self.records.setdefault(layout.location, []).append(rec)
        started = self.clock()
        try:
            with self.inner(layout, mode) as handle:
                rec.wait_seconds = self.clock() - started
                rec.acquired = True
                stats = getattr(handle, "stats", None)
                if stats is not None and hasattr(stats, "__dict__"):
                    rec.stats = {k: v for k, v in vars(stats).items() if isinstance(v, (int, float, str, list))}
                yield handle
        finally:
            if not rec.acquired:
                rec.wait_seconds = self.clock() - started

    def record(self, layout: Layout) -> LockRecord | None:
        """Every lock taken on ``layout`` in this run, as one record (modes joined, waits summed)."""
        recs = self.records.get(layout.location)
        if not recs:
            return None
        out = LockRecord("+".join(r.mode for r in recs), sum(r.wait_seconds for r in recs),
                         all(r.acquired for r in recs))
        if len(recs) == 1:
            out.stats = recs[0].stats
        else:
            out.stats = {"locks": [r.to_json() for r in recs]}
        return out


# --- the report ----------------------------------------------------------------------------------
@dataclass
class _Entry:
    outcome: Outcome
    seconds: float
    lock: LockRecord | None


class RunReport:
    """Everything one run did, for ``--json-report``."""

    def __init__(self, command: str, root: str, *, dry_run: bool = False, argv: list[str] | None = None,
                 policy: dict[str, Any] | None = None) -> None:
        self.command = command
        self.root = root
        self.dry_run = dry_run
        self.argv = list(argv if argv is not None else sys.argv)
        self.policy = policy
        self.started = time.time()
        self._t0 = time.monotonic()
        self.entries: list[_Entry] = []
        self.errors: list[dict[str, Any]] = []

    def add(self, outcome: Outcome, seconds: float, lock: LockRecord | None = None) -> None:
        self.entries.append(_Entry(outcome, seconds, lock))
        if outcome.error is not None:
            self.errors.append({"layout": outcome.layout.label, "location": outcome.layout.location,
                                "message": str(outcome.error), "exit_code": outcome.error.exit_code})

    def fail(self, message: str, exit_code: int) -> None:
        """An error that stopped the whole run (a bad policy, no layouts, an interrupt)."""
        self.errors.append({"layout": None, "location": None, "message": message, "exit_code": exit_code})

    def to_json(self, exit_code: int) -> dict[str, Any]:
        finished = time.time()
        layouts = [self._layout(e) for e in self.entries]
        totals: dict[str, Any] = {
            "layouts": len(layouts),
            "layouts_failed": sum(1 for e in self.entries if e.outcome.error is not None),
            "tags_kept": sum(x["tags_kept"] for x in layouts),
            "tags_removed": sum(x["tags_removed"] for x in layouts),
            "entries_planned": sum(x["entries_planned"] for x in layouts),
            "entries_removed": sum(x["entries_removed"] for x in layouts),
            "blobs_planned": sum(x["blobs_planned"] for x in layouts),
            "blobs_removed": sum(x["blobs_removed"] for x in layouts),
            "bytes_planned": sum(x["bytes_planned"] for x in layouts),
            "bytes_removed": sum(x["bytes_removed"] for x in layouts),
            "files_removed": sum(x["files_removed"] for x in layouts),
            "lock_wait_seconds": round(sum(e.lock.wait_seconds for e in self.entries if e.lock), 3),
            "errors": len(self.errors),
        }
        return {
            "version": REPORT_VERSION, "tool": "ocigc", "ocigc_version": __version__, "command": self.command,
            "root": self.root, "argv": self.argv, "host": _hostname(), "pid": os.getpid(),
            "started": iso(self.started), "finished": iso(finished),
            "duration_seconds": round(time.monotonic() - self._t0, 3), "dry_run": self.dry_run,
            "policy": self.policy, "exit_code": exit_code, "status": status(exit_code),
            "totals": totals, "errors": self.errors, "layouts": layouts,
        }

    @staticmethod
    def summary(e: _Entry) -> dict[str, Any]:
        """Counts for one layout: tags kept/removed (planned in a dry run), entries, blobs, bytes."""
        o = e.outcome
        plan, result = o.plan, o.result
        decisions = plan.decisions if plan else []
        acted = result is not None or o.dry_run
        return {
            "seconds": round(e.seconds, 3),
            "lock": e.lock.to_json() if e.lock else None,
            "refused": any(d.get("by") == "refused" for d in decisions),
            "tags_kept": sum(1 for d in decisions if d.get("action") == "keep"),
            "tags_removed": sum(1 for d in decisions if d.get("action") == "remove") if acted else 0,
            "entries_planned": len(plan.remove_entries) if plan else 0,
            "entries_removed": result.removed_entries if result else 0,
            "blobs_planned": len(plan.blob_removals) if plan else 0,
            "blobs_removed": len(result.removed) if result else 0,
            "bytes_planned": plan.bytes_reclaimed if plan else 0,
            "bytes_removed": result.bytes_removed if result else 0,
            "files_removed": len(result.removed_files) if result else 0,
        }

    @classmethod
    def _layout(cls, e: _Entry) -> dict[str, Any]:
        return {**e.outcome.to_json(), **cls.summary(e)}

    def write(self, path: str | os.PathLike[str], exit_code: int) -> None:
        data = json.dumps(self.to_json(exit_code), indent=2, default=str).encode() + b"\n"
        write_atomic(path, data)


def status(exit_code: int) -> str:
    return {0: "ok", 1: "error", 2: "usage", 3: "lost-race", 4: "integrity", 5: "unsafe-mount",
            75: "lock-busy", 130: "interrupted"}.get(exit_code, "error")


def _hostname() -> str:
    """``socket.gethostname()`` (socket is imported when a record is written, not by every run)."""
    import socket

    return socket.gethostname()
