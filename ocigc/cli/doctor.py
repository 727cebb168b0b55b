"""``ocigc doctor PATH``: is the mount holding PATH fit for ocigc's locks and deletions?"""

from __future__ import annotations

from typing import Annotated

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, VerboseOpt, echo_json, handle_errors, settings
from ocigc.cli.app import app
from ocigc.doctor.report import diagnose, iter_lines
from ocigc.doctor.selftest import DEFAULT_STEP_TIMEOUT
from ocigc.duration import parse_duration
from ocigc.errors import UnsafeMount


@app.command("doctor")
def doctor_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH",
                                        help="A directory on the mount to check (a layout or a root).")],
    no_self_test: Annotated[bool, typer.Option("--no-self-test",
                                               help="Only read the mount's configuration; write nothing.")] = False,
    settle: Annotated[str | None, typer.Option(
        "--settle", metavar="DURATION",
        help="Lock settle delay that caches are compared with [default: OCIGC_LOCK_SETTLE or 2s].")] = None,
    daemon_args: Annotated[str | None, typer.Option(
        "--daemon-args", metavar="COMMAND",
        help="The adapter's command line, when doctor cannot read it from /proc (another container), "
             "e.g. 's3fs bucket /mnt -o stat_cache_expire=1'.")] = None,
    timeout: Annotated[str, typer.Option("--timeout", metavar="DURATION",
                                         help="Longest a self-test step may take.")] = f"{DEFAULT_STEP_TIMEOUT:g}s",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Name the adapter of the mount holding PATH, check its cache and write options, and run a self-test.

    Exit 0 when the mount is fit (warnings allowed), 5 when a setting or a self-test step makes
    locking or deletion unsafe. See docs/object-storage.md.
    """
    s = settings(ctx, quiet, verbose)
    with handle_errors("doctor", json_out):
        report = diagnose(
            path,
            settle=parse_duration(settle, "settle delay") if settle is not None else None,
            self_test=not no_self_test,
            timeout=parse_duration(timeout, "timeout") or DEFAULT_STEP_TIMEOUT,
            daemon_args=daemon_args,
        )
        if json_out:
            data = report.to_json()
            data.pop("exit_code")
            echo_json("doctor", data, exit_code=report.exit_code)
            if not report.fit:
                typer.echo(f"error: {report.summary()}", err=True)
            raise typer.Exit(report.exit_code)
        if not s.quiet or not report.fit:
            for line in iter_lines(report, verbose=not s.quiet):
                typer.echo(line)
        if not report.fit:
            raise UnsafeMount(report.summary())
