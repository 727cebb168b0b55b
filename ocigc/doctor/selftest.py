"""The self-test of ``ocigc doctor`` (part 3) in ``PATH/.ocigc/doctor/``: create a uniquely named
file, list it, stat it, read it back, rename it, overwrite it, remove it, list again; each step
timed and bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocigc.doctor.rules import UNSAFE, WARNING, Finding

#: Where the self-test writes, relative to PATH.
DOCTOR_DIR = ".ocigc/doctor"

#: Seconds a self-test step may take before it counts as hung.
DEFAULT_STEP_TIMEOUT = 30.0

#: A just-written file whose mtime differs from this host's clock by more than this is reported.
MTIME_SKEW_WARN = 60.0


@dataclass
class Step:
    name: str
    status: str  # ok, failed, unsupported, skipped, timeout
    latency_ms: float | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "status": self.status,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2), "detail": self.detail}


@dataclass
class SelfTest:
    directory: str
    steps: list[Step] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    mtime_skew: float | None = None

    @property
    def ok(self) -> bool:
        return all(s.status in ("ok", "unsupported", "skipped") for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "ok": self.ok, "steps": [s.to_json() for s in self.steps],
                "leftovers": self.leftovers,
                "mtime_skew_s": None if self.mtime_skew is None else round(self.mtime_skew, 3)}


#: errno values meaning "this file system does not do that" rather than "it broke".
_UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EXDEV, errno.EACCES})


class _Unsupported(Exception):
    pass


class _Failed(Exception):
    pass


def _run_with_timeout(fn: Callable[[], str], timeout: float) -> tuple[str, str, float]:
    """(status, detail, seconds) of ``fn`` run in a daemon thread (a hung FUSE call cannot block us)."""
    result: dict[str, Any] = {}

    def target() -> None:
        start = time.perf_counter()
        result["status"], result["detail"] = "failed", "no result"
        try:
            result["detail"] = fn()
            result["status"] = "ok"
        except _Unsupported as e:
            result["status"], result["detail"] = "unsupported", str(e)
        except _Failed as e:
            result["status"], result["detail"] = "failed", str(e)
        except OSError as e:
            result["status"], result["detail"] = "failed", f"{type(e).__name__}: {e.strerror or e}"
        except Exception as e:  # a step must never take doctor down
            result["status"], result["detail"] = "failed", f"{type(e).__name__}: {e}"
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=target, name="ocigc-doctor-step", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "timeout", f"no answer within {timeout:g}s (the mount may hang)", timeout
    return result["status"], result.get("detail", ""), result["seconds"]


class _SelfTestRun:
    """The files and state of one self-test; each step is a method returning its detail."""

    def __init__(self, path: str) -> None:
        base = Path(path)
        self.directory = base / DOCTOR_DIR
        self.created_dirs = [d for d in (base / ".ocigc", self.directory) if not d.exists()]
        host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
        token = uuid.uuid4().hex
        self.first = self.directory / f"doctor-{host}-{os.getpid()}-{token[:12]}.tmp"
        self.second = self.first.with_name(self.first.name[:-4] + "-renamed.tmp")
        self.data1 = f"ocigc doctor self-test {token} one\n".encode()
        self.data2 = f"ocigc doctor self-test {token} two: overwritten\n".encode()
        self.test = SelfTest(str(self.directory))
        self.current = self.first
        self.written_at = 0.0
        #: Seconds the last step's operation took (without its verification).
        self.op_seconds: float | None = None

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("mkdir", self.mkdir), ("create", self.create), ("list", self.listing), ("stat", self.stat),
            ("read", self.read), ("rename", self.rename), ("overwrite", self.overwrite), ("remove", self.remove),
            ("list-again", self.list_again),
        ]

    def timed(self, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.op_seconds = time.perf_counter() - start

    def mkdir(self) -> str:
        self.timed(lambda: os.makedirs(self.directory, exist_ok=True))
        return "" if not self.created_dirs else f"created {', '.join(str(d) for d in self.created_dirs)}"

    def create(self) -> str:
        def op() -> None:
            fd = os.open(self.first, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, self.data1)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.written_at = time.time()
        self.timed(op)
        return f"{len(self.data1)} bytes, O_CREAT|O_EXCL, fsync, close"

    def listing(self) -> str:
        names = self.timed(lambda: os.listdir(self.directory))
        if self.first.name not in names:
            raise _Failed("the file this host just wrote is missing from the directory listing: listings are "
                          "cached, so lock files would be invisible")
        return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} listed"

    def stat(self) -> str:
        st = self.timed(lambda: os.stat(self.first))
        if st.st_size != len(self.data1):
            raise _Failed(f"stat says {st.st_size} bytes, {len(self.data1)} were written")
        self.test.mtime_skew = st.st_mtime - self.written_at
        return f"mtime differs from this host's clock by {self.test.mtime_skew:+.1f}s"

    def read(self) -> str:
        def op() -> bytes:
            with open(self.first, "rb") as f:
                return f.read()
        got = self.timed(op)
        if got != self.data1:
            raise _Failed(f"read back {len(got)} bytes that differ from the {len(self.data1)} written")
        return "content matches"

    def rename(self) -> str:
        try:
            self.timed(lambda: os.replace(self.first, self.second))
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                raise _Unsupported(f"rename refused ({errno.errorcode.get(e.errno or 0, e.errno)}): ocigc writes "
                                   "in place instead of temp file + rename") from e
            raise
        self.current = self.second
        names = os.listdir(self.directory)
        if self.second.name not in names or self.first.name in names:
            raise _Failed("after the rename the listing does not show the new name only")
        return "new name listed, old name gone"

    def overwrite(self) -> str:
        target = self.current

        def op() -> None:
            with open(target, "wb") as f:
                f.write(self.data2)
        try:
            self.timed(op)
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                raise _Unsupported(f"overwrite refused ({errno.errorcode.get(e.errno or 0, e.errno)}): index.json "
                                   "cannot be replaced in place") from e
            raise
        with open(target, "rb") as f:
            if f.read() != self.data2:
                raise _Failed("the overwritten file does not read back as written")
        return "O_TRUNC write, read back"

    def remove(self) -> str:
        target = self.current
        try:
            self.timed(lambda: os.unlink(target))
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                raise _Failed(f"remove refused ({errno.errorcode.get(e.errno or 0, e.errno)}): ocigc cannot "
                              "delete blobs nor release its lock files") from e
            raise
        return ""

    def list_again(self) -> str:
        names = self.timed(lambda: os.listdir(self.directory))
        if self.first.name in names or self.second.name in names:
            raise _Failed("the removed file still shows in the directory listing")
        return "gone"

    def run_steps(self, timeout: float) -> bool:
        """Every step in order, each bounded by ``timeout``; a failure skips the rest. True when one hung."""
        hung = stopped = False
        for name, fn in self.steps():
            if stopped:
                self.test.steps.append(Step(name, "skipped", None, "an earlier step failed"))
                continue
            self.op_seconds = None
            status, detail, seconds = _run_with_timeout(fn, timeout)
            op_seconds = self.op_seconds if self.op_seconds is not None else seconds
            latency = op_seconds * 1000.0 if status != "timeout" else None
            self.test.steps.append(Step(name, status, latency, detail))
            hung = status == "timeout"
            stopped = status in ("timeout", "failed")
        return hung

    def clean_up(self) -> None:
        """Remove the test files, and the directories doctor created when they are empty."""
        for p in (self.first, self.second):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError:
                if p.exists():
                    self.test.leftovers.append(str(p))
        for d in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(d)


def run_self_test(path: str, timeout: float = DEFAULT_STEP_TIMEOUT) -> SelfTest:
    """Create, list, stat, read, rename, overwrite, remove, list again in ``PATH/.ocigc/doctor/``.

    Each step is timed (the operation itself, not its verification). A step that fails skips
    the rest; a hung step stops the test and leaves its file behind (listed in ``leftovers``).
    Files are removed and directories doctor created are removed when empty.
    """
    run = _SelfTestRun(path)
    if run.run_steps(timeout):
        run.test.leftovers = [str(p) for p in (run.first, run.second)]
        return run.test
    run.clean_up()
    return run.test


def self_test_findings(test: SelfTest) -> list[Finding]:
    out: list[Finding] = []
    for step in test.steps:
        if step.status in ("failed", "timeout"):
            out.append(Finding(UNSAFE, f"selftest.{step.name}", f"self-test step {step.name} {step.status}: "
                               f"{step.detail}", why="ocigc's locks and deletions rely on this operation"))
        elif step.status == "unsupported" and step.name == "rename":
            out.append(Finding(WARNING, "selftest.rename", step.detail,
                               why="ocigc falls back to in-place writes; `oras push --oci-layout` cannot write "
                                   "through this mount"))
        elif step.status == "unsupported":
            out.append(Finding(WARNING, f"selftest.{step.name}", step.detail))
    if test.leftovers:
        out.append(Finding(WARNING, "selftest.leftovers", "self-test files could not be removed: "
                           + ", ".join(test.leftovers)))
    if test.mtime_skew is not None and abs(test.mtime_skew) > MTIME_SKEW_WARN:
        out.append(Finding(
            WARNING, "selftest.mtime", f"a new file's mtime differs from this host's clock by "
            f"{test.mtime_skew:+.0f}s", why="grace periods compare mtimes with this host's clock: fix the clock "
            "of this host or of the storage"))
    return out
