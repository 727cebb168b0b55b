"""Lock and trash commands: ``locks list|break``, ``exec``, ``trash list|restore|purge``.

Also the pieces other writing commands share: ``--lock-wait`` and a ``locker`` that takes the
layout's lock with a waiting message on stderr.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Annotated, Any, Literal

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, Settings, VerboseOpt, echo_json, handle_errors, settings, table
from ocigc.cli.app import app
from ocigc.cli.read import JobsOpt, layouts_under
from ocigc.duration import format_duration, parse_duration
from ocigc.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, LayoutError, LockLost, UsageError, printable
from ocigc.gc.check import DANGLING, check_layout
from ocigc.gc.trash import DEFAULT_RETENTION, list_runs, purge, restore
from ocigc.layout.indexio import read_index_retrying
from ocigc.layout.journal import run_id, write_record
from ocigc.layout.layout import INDEX_FILE, Layout
from ocigc.lock.acquire import acquire
from ocigc.lock.files import LockInfo, break_locks, list_locks
from ocigc.lock.handle import INHERIT_ENV, LockHandle
from ocigc.oci.index import Index
from ocigc.parallel import DEFAULT_JOBS
from ocigc.storage.open_storage import open_storage

LockWaitOpt = Annotated[str, typer.Option(
    "--lock-wait", metavar="DURATION",
    help="How long to wait for a conflicting lock before giving up with exit 75 (0, 30s, 10m).")]

locks_app = typer.Typer(help="See and break the lock files of layouts (.ocigc/locks/).", no_args_is_help=True)
trash_app = typer.Typer(help="See, undo or empty what delete/sweep --trash moved aside (.ocigc/trash/).",
                        no_args_is_help=True)
app.add_typer(locks_app, name="locks")
app.add_typer(trash_app, name="trash")


# --------------------------------------------------------------------------------------------
# Shared with other writing commands
# --------------------------------------------------------------------------------------------
def waiting_reporter(s: Settings, layout: Layout) -> Callable[[list[LockInfo]], None]:
    """An ``on_wait`` callback that says once (on stderr) who we are waiting for."""
    said: set[str] = set()

    def report(holders: list[LockInfo]) -> None:
        if s.quiet:
            return
        new = [h for h in holders if h.owner not in said]
        if not new:
            return
        said.update(h.owner for h in new)
        who = "; ".join(h.describe() for h in new[:3])
        typer.echo(f"{layout.display}: waiting for lock: {who}", err=True)

    return report


def make_locker(s: Settings, wait: float, command: str,
                ) -> Callable[[Layout, Literal["shared", "exclusive"]], AbstractContextManager[LockHandle]]:
    """A ``locker`` for ``ocigc.gc.run.RunOptions``: the layout's lock, waiting up to ``wait`` seconds."""

    def locker(layout: Layout, mode: Literal["shared", "exclusive"]) -> AbstractContextManager[LockHandle]:
        return acquire(layout, mode, wait=wait, command=command, on_wait=waiting_reporter(s, layout))

    return locker


def command_line() -> str:
    return " ".join(["ocigc", *sys.argv[1:]])[:500]


def _layouts(path: str, jobs: int) -> list[Layout]:
    storage = open_storage(path)
    if storage.stat("oci-layout") is not None:
        return [Layout(storage)]
    return layouts_under(path, jobs)


# --------------------------------------------------------------------------------------------
# locks list / break
# --------------------------------------------------------------------------------------------
@locks_app.command("list")
def locks_list_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts.")],
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Show lock holders: mode, host, pid, command, age, expiry, and whether the lock is stale.

    AGE is by the holder's clock; STALE applies the expiry and same-host dead-process tests."""
    settings(ctx, quiet, verbose)
    with handle_errors():
        now = time.time()
        rows: list[list[str]] = []
        out: list[dict[str, Any]] = []
        for layout in _layouts(path, jobs):
            for info, verdict in list_locks(layout):
                data = info.to_json(now)
                data.update({"layout": layout.name, "location": layout.location, "stale": verdict.stale,
                             "stale_reason": verdict.reason or None})
                out.append(data)
                age = "?" if data["age_s"] is None else format_duration(data["age_s"])
                expires = "?" if data["expires_in_s"] is None else (
                    f"in {format_duration(data['expires_in_s'])}" if data["expires_in_s"] >= 0
                    else f"{format_duration(-data['expires_in_s'])} ago")
                rows.append([printable(layout.name) or ".", info.scope, info.mode_name, info.host, str(info.pid or "?"),
                             (info.command or info.problem or "")[:40], age, expires,
                             f"yes ({verdict.reason})" if verdict.stale else "no", info.owner[:12]])
        if json_out:
            echo_json({"path": path, "locks": out})
        elif rows:
            typer.echo(table(rows, ["LAYOUT", "SCOPE", "MODE", "HOST", "PID", "COMMAND", "AGE", "EXPIRES", "STALE",
                                    "OWNER"]))
        else:
            typer.echo("no locks held", err=True)


@locks_app.command("break")
def locks_break_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts.")],
    owner: Annotated[str | None, typer.Option("--owner", metavar="ID",
                                              help="Only this holder's lock files (owner id or a prefix of it, "
                                                   "or a lock file name).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Also break locks that are live (the holder may still "
                                        "be running: only when you know it is not).")] = False,
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Break stale locks (or one holder's); a live lock only with --force. Every break is journaled.

    Exit 0 when nothing live was refused, 1 when a live lock was left in place."""
    s = settings(ctx, quiet, verbose)
    with handle_errors():
        if force and owner is None:
            raise UsageError("--force needs --owner ID: name the holder whose live lock you break")
        out: list[dict[str, Any]] = []
        refused_any = False
        run = run_id()
        for layout in _layouts(path, jobs):
            broken, refused = break_locks(layout, owner=owner, force=force, breaker=command_line(), run=run)
            for info, reason in broken:
                out.append({"layout": layout.name, "lock": info.name, "broken": True, "reason": reason})
                if not s.quiet and not json_out:
                    typer.echo(f"broke {layout.where('.ocigc/locks/' + info.name)}: {reason}")
            for info in refused:
                refused_any = True
                out.append({"layout": layout.name, "lock": info.name, "broken": False, "reason": "live"})
                if not json_out:
                    typer.echo(f"refused {layout.where('.ocigc/locks/' + info.name)}: live lock "
                               f"({info.describe()}); use --owner {info.owner[:12]} --force if it is dead", err=True)
        if json_out:
            echo_json({"path": path, "locks": out})
        elif not out and not s.quiet:
            typer.echo("no lock to break", err=True)
        if refused_any:
            raise typer.Exit(EXIT_ERROR)


# --------------------------------------------------------------------------------------------
# exec
# --------------------------------------------------------------------------------------------
def _read_index(layout: Layout) -> Index | None:
    try:
        return read_index_retrying(layout)
    except LayoutError:
        return None


def _tags(index: Index | None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    if index is None:
        return out
    for name, entries in index.tags().items():
        out[name] = {str(e.digest) for e in entries}
    return out


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_cmd(
    ctx: typer.Context,
    layout_path: Annotated[str, typer.Argument(metavar="LAYOUT", help="The layout the command writes.")],
    command: Annotated[list[str], typer.Argument(metavar="-- CMD...", help="The command and its arguments.")],
    exclusive: Annotated[bool, typer.Option("--exclusive", help="Hold the exclusive lock (no other writer, no "
                                            "sweep) instead of the shared lock plus the index.json hold.")] = False,
    lock_wait: LockWaitOpt = "0",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Run CMD (e.g. oras push --oci-layout LAYOUT:TAG ...) holding LAYOUT's locks, then check the layout.

    Default: the shared lock plus the index.json hold for the whole command; --exclusive: the exclusive lock.

    CMD is terminated if the lock is lost. Exit: CMD's code if it failed, else 4 on a dangling reference, 75 busy."""
    s = settings(ctx, quiet, verbose)
    with handle_errors():
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            raise UsageError("give the command to run after '--'")
        wait = parse_duration(lock_wait, "--lock-wait")
        storage = open_storage(layout_path)
        storage.makedirs("")  # a writer such as oras may create the layout itself
        layout = Layout(storage)
        run = run_id()
        before = _read_index(layout)
        mode: Literal["shared", "exclusive"] = "exclusive" if exclusive else "shared"
        with acquire(layout, mode, wait=wait, command=f"exec: {' '.join(command)}"[:300], run=run,
                     on_wait=waiting_reporter(s, layout)) as handle:
            with handle.exclusive_hold():
                rc = _run_child(command, handle)
            after = _read_index(layout) if storage.stat(INDEX_FILE) is not None else None
            report = check_layout(layout) if storage.stat("oci-layout") is not None else None
            handle.ensure_held()
        tags_before, tags_after = _tags(before), _tags(after)
        added = sorted(t for t in tags_after if tags_after[t] != tags_before.get(t))
        removed = sorted(t for t in tags_before if t not in tags_after)
        dangling = [p for p in (report.problems if report else []) if p.severity == DANGLING]
        problems = [p.to_json() for p in (report.problems if report else []) if p.severity in (DANGLING, "error")]
        index_problem = None
        if storage.stat(INDEX_FILE) is not None and after is None:
            index_problem = f"{layout.where(INDEX_FILE)}: empty or invalid after the command"
        record = {"command": command, "exit_code": rc, "mode": mode,
                  "index_before": before.fingerprint if before else None,
                  "index_after": after.fingerprint if after else None,
                  "tags_added": added, "tags_removed": removed, "problems": problems, "index_problem": index_problem}
        journal = write_record(layout, "exec", record, run)
        code = rc if rc != 0 else (4 if dangling else (EXIT_ERROR if index_problem else EXIT_OK))
        if json_out:
            echo_json({**record, "journal": journal, "result_code": code})
        else:
            if not s.quiet and (added or removed):
                typer.echo(f"{printable(layout.location)}: tags added/moved: {', '.join(added) or '-'}; "
                           f"removed: {', '.join(removed) or '-'}", err=True)
            for p in dangling:
                typer.echo(f"error: {p.message}", err=True)
            if index_problem:
                typer.echo(f"error: {index_problem}", err=True)
        raise typer.Exit(code)


def _run_child(command: list[str], handle: LockHandle) -> int:
    env = dict(os.environ)
    inherited = [o for o in env.get(INHERIT_ENV, "").split(",") if o]
    env[INHERIT_ENV] = ",".join([*inherited, handle.owner])
    env["OCIGC_EXEC_LAYOUT"] = handle.layout.location
    try:
        proc = subprocess.Popen(command, env=env)
    except OSError as e:
        raise UsageError(f"{command[0]}: cannot run ({e.strerror or e})") from None
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
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------
# trash
# --------------------------------------------------------------------------------------------
@trash_app.command("list")
def trash_list_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts.")],
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """List trash runs: which command moved what, when, and which index.json entries it removed."""
    s = settings(ctx, quiet, verbose)
    with handle_errors():
        rows: list[list[str]] = []
        out: list[dict[str, Any]] = []
        problems: list[str] = []
        for layout in _layouts(path, jobs):
            for info in list_runs(layout):
                data = info.to_json()
                out.append({"layout": layout.name, "location": layout.location, **data})
                age = info.age()
                rows.append([printable(layout.name) or ".", info.run, info.kind,
                             "?" if age is None else format_duration(age),
                             str(len(info.blobs)), ", ".join(str(e) for e in data["entries"][:3])
                             + (" ..." if len(data["entries"]) > 3 else ""), info.host])
                if s.verbose:
                    rows.extend([["", "", "", "", "", str(d), ""] for d in info.digests])
                if info.problem:
                    problems.append(f"{layout.where(f'.ocigc/trash/{info.run}')}: {info.problem}")
        if json_out:
            echo_json({"path": path, "runs": out})
        elif rows:
            typer.echo(table(rows, ["LAYOUT", "RUN", "KIND", "AGE", "BLOBS", "ENTRIES", "HOST"]))
        else:
            typer.echo("trash is empty", err=True)
        for p in problems:
            typer.echo(f"warning: {p}", err=True)


@trash_app.command("restore")
def trash_restore_cmd(
    ctx: typer.Context,
    layout_path: Annotated[str, typer.Argument(metavar="LAYOUT", help="The layout.")],
    run: Annotated[str, typer.Argument(metavar="RUN", help="The trash run (see 'ocigc trash list').")],
    lock_wait: LockWaitOpt = "0",
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Undo a trash run: its blobs go back, then the index.json entries it removed (a delete is undone).

    An entry whose tag now names another manifest, or whose blobs are not all present, is skipped and reported."""
    s = settings(ctx, quiet, verbose)
    with handle_errors():
        layout = Layout.open(open_storage(layout_path))
        with acquire(layout, "shared", wait=parse_duration(lock_wait, "--lock-wait"), command=command_line(),
                     on_wait=waiting_reporter(s, layout)) as handle:
            result = restore(layout, run, hold=handle.exclusive_hold, guard=handle.ensure_held,
                             settle=handle.params.settle, jobs=jobs)
        if json_out:
            echo_json({"layout": layout.location, **result.to_json()})
        else:
            if not s.quiet:
                typer.echo(f"restored {len(result.blobs_restored)} blobs "
                           f"({len(result.blobs_already_present)} already present) and "
                           f"{len(result.entries_restored)} index.json entries from {run}")
                for e in result.entries_restored:
                    typer.echo(f"  entry   {e}")
            for e in result.entries_skipped:
                typer.echo(f"  skipped {e}", err=True)
        if result.entries_skipped and not result.entries_restored:
            raise typer.Exit(EXIT_ERROR)


@trash_app.command("purge")
def trash_purge_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts.")],
    older_than: Annotated[str | None, typer.Option(
        "--older-than", metavar="DURATION",
        help=f"Only runs older than this (default: every run; a sweep uses {format_duration(DEFAULT_RETENTION)}).",
    )] = None,
    lock_wait: LockWaitOpt = "0",
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Empty the trash under the exclusive lock; first restores any trashed blob referenced again."""
    s = settings(ctx, quiet, verbose)
    with handle_errors():
        age = parse_duration(older_than, "--older-than") if older_than is not None else None
        wait = parse_duration(lock_wait, "--lock-wait")
        out: list[dict[str, Any]] = []
        failed = False
        for layout in _layouts(path, jobs):
            with acquire(layout, "exclusive", wait=wait, command=command_line(),
                         on_wait=waiting_reporter(s, layout)) as handle:
                result = purge(layout, older_than=age, guard=handle.ensure_held, jobs=jobs)
            failed = failed or bool(result.failed)
            out.append({"layout": layout.name, "location": layout.location, **result.to_json()})
            if not json_out:
                for r in result.resurrected:
                    typer.echo(f"warning: {layout.display}: {r.message()}", err=True)
                for f in result.failed:
                    typer.echo(f"error: {f}", err=True)
                if not s.quiet:
                    typer.echo(f"{layout.display}: purged {len(result.purged_runs)} runs "
                               f"({result.purged_blobs} blobs), kept {len(result.kept_runs)}")
        if json_out:
            echo_json({"path": path, "layouts": out})
        if failed:
            raise typer.Exit(EXIT_ERROR)


__all__ = ["LockWaitOpt", "command_line", "make_locker", "waiting_reporter"]
