"""``ocigc trash list|restore|purge``: see, undo or empty what ``delete``/``sweep --trash`` moved aside."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ocigc.cli._common import (
    JsonOpt,
    QuietOpt,
    VerboseOpt,
    echo_json,
    error_message,
    handle_errors,
    most_serious,
    settings,
    table,
)
from ocigc.cli.app import OcigcTyper, app
from ocigc.cli.locking import LockWaitOpt, check_mounts, command_line, layouts_at, waiting_reporter
from ocigc.cli.read import JobsOpt
from ocigc.duration import format_duration, parse_duration
from ocigc.errors import EXIT_ERROR, OcigcError, storage_error
from ocigc.gc.trash import DEFAULT_RETENTION, list_runs, purge, restore
from ocigc.layout.layout import Layout
from ocigc.lock.acquire import acquire
from ocigc.parallel import DEFAULT_JOBS
from ocigc.storage.open_storage import open_storage

trash_app = OcigcTyper(help="See, undo or empty what delete/sweep --trash moved aside (.ocigc/trash/).",
                        no_args_is_help=True)
app.add_typer(trash_app, name="trash")


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
    with handle_errors("trash list", json_out):
        rows: list[list[str]] = []
        out: list[dict[str, Any]] = []
        problems: list[str] = []
        for layout in layouts_at(path, jobs):
            for info in list_runs(layout):
                data = info.to_json()
                out.append({"layout": layout.label, "location": layout.location, **data})
                age = info.age()
                rows.append([layout.display, info.run, info.kind,
                             "?" if age is None else format_duration(age),
                             str(len(info.blobs)), ", ".join(str(e) for e in data["entries"][:3])
                             + (" ..." if len(data["entries"]) > 3 else ""), info.host])
                if s.verbose:
                    rows.extend([["", "", "", "", "", str(d), ""] for d in info.digests])
                if info.problem:
                    problems.append(f"{layout.where(f'.ocigc/trash/{info.run}')}: {info.problem}")
        if json_out:
            echo_json("trash list", {"path": path, "runs": out})
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
    with handle_errors("trash restore", json_out):
        layout = Layout.open(open_storage(layout_path))
        check_mounts([layout.location], refuse=False)
        with acquire(layout, "shared", wait=parse_duration(lock_wait, "--lock-wait"), command=command_line(),
                     on_wait=waiting_reporter(s, layout)) as handle:
            result = restore(layout, run, hold=handle.exclusive_hold, guard=handle.ensure_held,
                             settle=handle.params.settle, jobs=jobs)
        code = EXIT_ERROR if result.entries_skipped and not result.entries_restored else 0
        if json_out:
            echo_json("trash restore", {"path": layout.location, **result.to_json()}, exit_code=code)
        else:
            if not s.quiet:
                typer.echo(f"restored {len(result.blobs_restored)} blobs "
                           f"({len(result.blobs_already_present)} already present) and "
                           f"{len(result.entries_restored)} index.json entries from {run}")
                for e in result.entries_restored:
                    typer.echo(f"  entry   {e}")
            for e in result.entries_skipped:
                typer.echo(f"  skipped {e}", err=True)
        raise typer.Exit(code)


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
    with handle_errors("trash purge", json_out):
        age = parse_duration(older_than, "--older-than") if older_than is not None else None
        wait = parse_duration(lock_wait, "--lock-wait")
        out: list[dict[str, Any]] = []
        codes: list[int] = []
        layouts = layouts_at(path, jobs)
        check_mounts([path, *(lay.location for lay in layouts)], refuse=False)
        for layout in layouts:
            try:  # a layout that fails (read-only, lock busy, ...) is its own error; the next one goes on
                with acquire(layout, "exclusive", wait=wait, command=command_line(),
                             on_wait=waiting_reporter(s, layout)) as handle:
                    result = purge(layout, older_than=age, guard=handle.ensure_held, jobs=jobs)
            except (OcigcError, OSError) as e:
                message, code = error_message(e if isinstance(e, OcigcError) else storage_error(e, layout.where("")))
                codes.append(code)
                out.append({"layout": layout.label, "location": layout.location, "error": message,
                            "exit_code": code})
                typer.echo(f"error: {message}", err=True)
                continue
            if result.failed:
                codes.append(EXIT_ERROR)
            out.append({"layout": layout.label, "location": layout.location, **result.to_json()})
            if not json_out:
                for r in result.resurrected:
                    typer.echo(f"warning: {layout.display}: {r.message()}", err=True)
                for f in result.failed:
                    typer.echo(f"error: {f}", err=True)
                if not s.quiet:
                    typer.echo(f"{layout.display}: purged {len(result.purged_runs)} runs "
                               f"({result.purged_blobs} blobs), kept {len(result.kept_runs)}")
        code = most_serious(codes)
        if json_out:
            echo_json("trash purge", {"path": path, "layouts": out}, exit_code=code)
        raise typer.Exit(code)
