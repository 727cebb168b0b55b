"""``ocigc check``: the integrity check of layouts, rendered (``ocigc.gc.check`` decides)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, Settings, VerboseOpt, WideOpt, echo_json, handle_errors, settings
from ocigc.cli.app import app
from ocigc.cli.read import JobsOpt, layouts_under
from ocigc.errors import printable
from ocigc.parallel import DEFAULT_JOBS

if TYPE_CHECKING:
    from ocigc.gc.check import CheckReport


@app.command("check")
def check_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts at any depth.")],
    verify_digests: Annotated[bool, typer.Option("--verify-digests", help="Stream and hash every blob.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too (exit 1).")] = False,
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Check layouts: missing blobs, sizes, JSON, media types, stray and temp files, digests.

    Exit 0 when clean, 1 when problems were found, 4 when a referenced blob is missing."""
    from ocigc.gc.check import check_layout

    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("check", json_out):
        reports = [check_layout(lay, verify_digests, jobs, s.progress(json_out))
                   for lay in layouts_under(path, jobs, read_only=True)]
        code = max((r.exit_code(strict) for r in reports), default=0)
        if json_out:
            echo_json("check", {"path": path, "layouts": [r.to_json() for r in reports]}, exit_code=code)
        else:
            for r in reports:
                typer.echo("\n".join(_render_check(r, s)))
        for r in reports:  # a layout that could not be checked at all: its one error line, on stderr only
            for p in r.problems:
                if p.code == "layout":
                    typer.echo(f"error: {p.message}", err=True)
        raise typer.Exit(code)


def _render_check(r: CheckReport, s: Settings) -> list[str]:
    from ocigc.gc.check import DANGLING, ERROR, INFO, WARNING

    unreadable = [p for p in r.problems if p.code == "layout"]
    if unreadable:  # the error is the one line on stderr
        return [f"{printable(r.name)}: not checked (error below)"]
    shown = [p for p in r.problems if p.severity in (DANGLING, ERROR, WARNING) or s.verbose]
    counts = {sev: sum(1 for p in r.problems if p.severity == sev) for sev in (DANGLING, ERROR, WARNING, INFO)}
    status = "ok" if not counts[DANGLING] and not counts[ERROR] else "PROBLEMS"
    head = (f"{printable(r.name)}: {status} — {r.blobs} blobs, {r.reachable} reachable"
            + (f", {r.missing} missing" if r.missing else "")
            + f", {r.manifests} manifests" + (f", {r.verified} verified" if r.verified else ""))
    foreign = sum(1 for p in r.problems if p.code == "foreign-layer")
    if foreign:
        head += f", {foreign} foreign layer(s) not stored (fetched from their urls)"
    lines = s.fit(head)
    for p in shown:
        lines.extend(s.fit(f"  {p.severity}: {p.message}", hang=2))
    if counts[INFO] and not s.verbose:
        lines.append(f"  ({counts[INFO]} note(s); -v shows them)")
    return lines
