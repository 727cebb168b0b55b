"""``ocigc exec``: run a command (``oras push --oci-layout ...``) holding a layout's locks, then
check the layout and journal what the command changed.

The command runs under the shared lock plus the short exclusive ``index.json`` hold (or the
exclusive lock) for its whole run; it learns our lock owner through ``OCIGC_LOCK_INHERIT``, so an
ocigc writer inside it does not wait for its parent. It is terminated when the lock is lost. After
it, ``index.json`` is read again and the layout checked; one ``exec`` journal record names the
command, its exit code, the tags it added, moved or removed and any dangling reference.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ocigc.errors import EXIT_ERROR, EXIT_INTEGRITY, EXIT_OK, LayoutError, LockLost, OcigcError
from ocigc.gc.check import DANGLING, Problem, check_layout
from ocigc.layout.indexio import read_raw_retrying
from ocigc.layout.journal import backup_index, run_id, write_record
from ocigc.layout.layout import INDEX_FILE, Layout
from ocigc.lock.acquire import acquire
from ocigc.lock.files import LockInfo
from ocigc.lock.handle import INHERIT_ENV, LockHandle
from ocigc.oci.index import Index

#: Environment variable naming the layout to the command ``exec`` runs.
EXEC_LAYOUT_ENV = "OCIGC_EXEC_LAYOUT"


#: The shell's exit codes for a command that cannot be run (POSIX ``sh``, bash).
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


class CommandInterrupted(KeyboardInterrupt):
    """Interrupted while the command ran; the command was stopped first."""


class CannotRun(OcigcError):
    """The command does not exist (exit 127, as a shell) or cannot be executed (126)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ExecOutcome:
    """What ``run_locked`` did: the journaled record and what the caller reports."""

    layout: Layout
    record: dict[str, Any]
    journal: str
    #: The command's exit code when it failed, else 4 on a dangling reference, 1 on a broken
    #: ``index.json``, 0.
    result_code: int
    dangling: list[Problem] = field(default_factory=list)

    @property
    def tags_added(self) -> list[str]:
        return list(self.record["tags_added"])

    @property
    def tags_removed(self) -> list[str]:
        return list(self.record["tags_removed"])

    @property
    def index_problem(self) -> str | None:
        problem = self.record["index_problem"]
        return str(problem) if problem is not None else None

    def to_json(self) -> dict[str, Any]:
        """The record, with the command as ``argv`` and its own exit code as ``command_exit_code``."""
        out = {k: v for k, v in self.record.items() if k not in ("command", "exit_code")}
        return {"argv": self.record["command"], "command_exit_code": self.record["exit_code"], **out,
                "journal": self.journal, "result_code": self.result_code}


def run_locked(layout: Layout, command: list[str], *, exclusive: bool = False, wait: float = 0.0,
               on_wait: Callable[[list[LockInfo]], None] | None = None) -> ExecOutcome:
    """Run ``command`` holding ``layout``'s locks, check the layout, journal what changed.

    LockBusy when the lock stays busy for ``wait`` seconds; LockLost (the command terminated) when
    the lock is lost; CommandInterrupted on Ctrl-C while the command runs."""
    storage = layout.storage
    try:
        storage.makedirs("")  # a writer such as oras may create the layout itself
    except (NotADirectoryError, FileExistsError):
        raise LayoutError(f"{layout.where('')}: not a directory") from None
    _check_runnable(command)
    st = storage.stat(INDEX_FILE)
    if st is not None and st.is_dir:  # a command cannot be checked against an index.json that is no file
        raise LayoutError(f"{layout.where(INDEX_FILE)}: is a directory")
    run = run_id()
    mode: Literal["shared", "exclusive"] = "exclusive" if exclusive else "shared"
    backup = None
    with acquire(layout, mode, wait=wait, command=f"exec: {' '.join(command)}"[:300], run=run,
                 on_wait=on_wait) as handle:
        with handle.exclusive_hold():
            # Under the hold, before the command: the exact bytes it may rewrite, backed up as delete
            # and sweep back up theirs (.ocigc/backup/), so a command that breaks index.json loses nothing.
            before, raw = _read_index(layout)
            if raw is not None and before is not None:
                backup = backup_index(layout, raw, before.fingerprint)
            rc = _run_child(command, handle)
        after = _read_index(layout)[0] if storage.stat(INDEX_FILE) is not None else None
        report = check_layout(layout) if storage.stat("oci-layout") is not None else None
        handle.ensure_held()
    problems = report.problems if report else []
    dangling = [p for p in problems if p.severity == DANGLING]
    index_problem = None
    if storage.stat(INDEX_FILE) is not None and after is None:
        index_problem = f"{layout.where(INDEX_FILE)}: empty or invalid after the command"
    added, removed = _tag_changes(_tags(before), _tags(after))
    record = {"command": command, "exit_code": rc, "mode": mode,
              "index_before": before.fingerprint if before else None, "backup": backup,
              "index_after": after.fingerprint if after else None,
              "tags_added": added, "tags_removed": removed,
              "problems": [p.to_json() for p in problems if p.severity in (DANGLING, "error")],
              "index_problem": index_problem}
    journal = write_record(layout, "exec", record, run)
    code = rc if rc != 0 else (EXIT_INTEGRITY if dangling else (EXIT_ERROR if index_problem else EXIT_OK))
    return ExecOutcome(layout, record, journal, code, dangling)


def _read_index(layout: Layout) -> tuple[Index | None, bytes | None]:
    try:
        raw, index = read_raw_retrying(layout)
    except LayoutError:
        return None, None
    return index, raw


def _check_runnable(command: list[str]) -> None:
    """A command that does not exist is exit 127, one that cannot be executed 126 (the shell's codes),
    found before any lock is taken."""
    exe = command[0]
    if os.sep in exe:
        path: str | None = exe
        if not os.path.lexists(exe):
            raise CannotRun(f"{exe}: command not found (no such file)", EXIT_NOT_FOUND)
    else:
        path = shutil.which(exe)
        if path is None:
            if shutil.which(exe, mode=os.F_OK) is not None:
                raise CannotRun(f"{exe}: permission denied (not executable)", EXIT_NOT_EXECUTABLE)
            raise CannotRun(f"{exe}: command not found", EXIT_NOT_FOUND)
    if path is not None and (os.path.isdir(path) or not os.access(path, os.X_OK)):
        raise CannotRun(f"{exe}: permission denied (not executable)", EXIT_NOT_EXECUTABLE)


def _tags(index: Index | None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    if index is None:
        return out
    for name, entries in index.tags().items():
        out[name] = {str(e.digest) for e in entries}
    return out


def _tag_changes(before: dict[str, set[str]], after: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """Tags added or moved, and tags removed."""
    added = sorted(t for t in after if after[t] != before.get(t))
    removed = sorted(t for t in before if t not in after)
    return added, removed


def _run_child(command: list[str], handle: LockHandle) -> int:
    env = dict(os.environ)
    inherited = [o for o in env.get(INHERIT_ENV, "").split(",") if o]
    env[INHERIT_ENV] = ",".join([*inherited, handle.owner])
    env[EXEC_LAYOUT_ENV] = handle.layout.location
    try:
        proc = subprocess.Popen(command, env=env)
    except FileNotFoundError as e:
        raise CannotRun(f"{command[0]}: command not found ({e.strerror or e})", EXIT_NOT_FOUND) from None
    except PermissionError:
        raise CannotRun(f"{command[0]}: permission denied (not executable)", EXIT_NOT_EXECUTABLE) from None
    except OSError as e:
        raise CannotRun(f"{command[0]}: cannot run ({e.strerror or e})", EXIT_NOT_EXECUTABLE) from None
    poll = max(0.05, min(1.0, handle.params.poll))
    try:
        while True:
            try:
                return proc.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                pass
            try:
                handle.ensure_held()
            except LockLost:
                _stop(proc)
                raise
    except KeyboardInterrupt:
        _stop(proc)
        raise CommandInterrupted from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
