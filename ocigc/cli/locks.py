"""``ocigc locks list|break``: see and break the lock files of layouts."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, VerboseOpt, WideOpt, echo_json, handle_errors, settings, table
from ocigc.cli.app import OcigcTyper, app
from ocigc.cli.locking import command_line, layouts_at
from ocigc.cli.read import JobsOpt
from ocigc.duration import format_duration
from ocigc.errors import EXIT_ERROR, UsageError
from ocigc.layout.journal import run_id
from ocigc.lock.files import break_locks, list_locks
from ocigc.parallel import DEFAULT_JOBS

locks_app = OcigcTyper(help="See and break the lock files of layouts (.ocigc/locks/).", no_args_is_help=True)
app.add_typer(locks_app, name="locks")


@locks_app.command("list")
def locks_list_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts.")],
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Show lock holders: mode, host, pid, command, age, expiry, and whether the lock is stale.

    AGE is by the holder's clock; STALE applies the expiry and same-host dead-process tests."""
    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("locks list", json_out):
        now = time.time()
        rows: list[list[str]] = []
        out: list[dict[str, Any]] = []
        for layout in layouts_at(path, jobs):
            for info, verdict in list_locks(layout):
                data = info.to_json(now)
                data.update({"layout": layout.label, "location": layout.location, "stale": verdict.stale,
                             "stale_reason": verdict.reason or None})
                out.append(data)
                age = "?" if data["age_s"] is None else format_duration(data["age_s"])
                expires = "?" if data["expires_in_s"] is None else (
                    f"in {format_duration(data['expires_in_s'])}" if data["expires_in_s"] >= 0
                    else f"{format_duration(-data['expires_in_s'])} ago")
                rows.append([layout.display, info.scope, info.mode_name, info.host, str(info.pid or "?"),
                             info.command[:None if s.wide else 24] if info.command else (info.problem or ""),
                             age, expires,
                             f"yes ({verdict.reason})" if verdict.stale else "no", info.owner[:None if s.wide else 12]])
        if json_out:
            echo_json("locks list", {"path": path, "locks": out})
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
    with handle_errors("locks break", json_out):
        if force and owner is None:
            raise UsageError("--force needs --owner ID: name the holder whose live lock you break")
        out: list[dict[str, Any]] = []
        refused_any = False
        run = run_id()
        for layout in layouts_at(path, jobs):
            broken, refused = break_locks(layout, owner=owner, force=force, breaker=command_line(), run=run)
            for info, reason in broken:
                out.append({"layout": layout.label, "lock": info.name, "broken": True, "reason": reason})
                if not s.quiet and not json_out:
                    typer.echo(f"broke {layout.where('.ocigc/locks/' + info.name)}: {reason}")
            for info in refused:
                refused_any = True
                out.append({"layout": layout.label, "lock": info.name, "broken": False, "reason": "live"})
                if not json_out:
                    typer.echo(f"refused {layout.where('.ocigc/locks/' + info.name)}: live lock "
                               f"({info.describe()}); use --owner {info.owner[:12]} --force if it is dead", err=True)
        if json_out:
            echo_json("locks break", {"path": path, "locks": out}, exit_code=EXIT_ERROR if refused_any else 0)
        elif not out and not s.quiet:
            typer.echo("no lock to break", err=True)
        if refused_any:
            raise typer.Exit(EXIT_ERROR)
