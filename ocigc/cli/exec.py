"""``ocigc exec LAYOUT -- CMD...``: run a command holding the layout's locks (``ocigc.lock.exec``)."""

from __future__ import annotations

from typing import Annotated

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, VerboseOpt, echo_json, handle_errors, settings
from ocigc.cli.app import app
from ocigc.cli.locking import LockWaitOpt, check_mounts, waiting_reporter
from ocigc.duration import parse_duration
from ocigc.errors import UsageError, printable
from ocigc.layout.layout import Layout
from ocigc.lock.exec import CommandInterrupted, run_locked
from ocigc.storage.open_storage import open_storage


@app.command("exec")
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
    """Run CMD (oras push --oci-layout LAYOUT:TAG ...) holding LAYOUT's locks, then check the layout.

    Default: the shared lock plus the index.json hold for the whole command; --exclusive: the
    exclusive lock. ocigc's options go before '--' (before or after LAYOUT); everything after '--' is
    CMD. index.json is backed up under .ocigc/backup/ before CMD runs.

    CMD is terminated if the lock is lost. Exit: CMD's code if it failed (127: not found, 126: not
    executable), else 4 on a dangling reference, 1 if index.json is left invalid; 75 lock busy."""
    s = settings(ctx, quiet, verbose)
    with handle_errors("exec", json_out):
        if command and command[0] == "--":
            command = command[1:]
        if not command:
            raise UsageError("give the command to run after '--'")
        wait = parse_duration(lock_wait, "--lock-wait")
        layout = Layout(open_storage(layout_path))
        check_mounts([layout.location], refuse=False)
        try:
            outcome = run_locked(layout, command, exclusive=exclusive, wait=wait,
                                 on_wait=waiting_reporter(s, layout))
        except CommandInterrupted:
            raise KeyboardInterrupt from None
        if json_out:
            echo_json("exec", {"path": layout.location, **outcome.to_json()}, exit_code=outcome.result_code)
        else:
            added, removed = outcome.tags_added, outcome.tags_removed
            if not s.quiet and (added or removed):
                typer.echo(f"{printable(layout.location)}: tags added/moved: {', '.join(added) or '-'}; "
                           f"removed: {', '.join(removed) or '-'}", err=True)
            for p in outcome.dangling:
                typer.echo(f"error: {p.message}", err=True)
            if outcome.index_problem:
                typer.echo(f"error: {outcome.index_problem}", err=True)
        raise typer.Exit(outcome.result_code)
