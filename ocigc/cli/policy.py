"""Retention policies on the command line: ``ocigc policy check``, and the pieces ``sweep`` uses for
``--policy``, ``--json-report`` and ``--log-format`` (rendering decisions, unattended runs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, Settings, VerboseOpt, echo_json, handle_errors, settings, table
from ocigc.cli.app import OcigcTyper, app
from ocigc.cli.read import JobsOpt, layouts_under
from ocigc.errors import EXIT_INTERRUPTED, EXIT_OK, OcigcError, storage_error
from ocigc.gc.plan import Plan
from ocigc.gc.unattended import Unattended
from ocigc.parallel import DEFAULT_JOBS

policy_app = OcigcTyper(help="Retention policies (TOML files for sweep --policy): check and explain.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

PolicyOpt = Annotated[str | None, typer.Option(
    "--policy", metavar="FILE", help="Retention policy (TOML): remove tags by its rules before sweeping "
    "(see docs/retention.md; check it with 'ocigc policy check FILE').")]
JsonReportOpt = Annotated[str | None, typer.Option(
    "--json-report", metavar="FILE", help="Write the run's full report (JSON) to FILE, atomically, also when the "
    "run fails.")]
LogFormatOpt = Annotated[str, typer.Option(
    "--log-format", metavar="text|json", help="Messages on stderr as text lines or one JSON object per line.")]


@policy_app.command("check")
def policy_check_cmd(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="The policy file (TOML).")],
    root: Annotated[str | None, typer.Argument(metavar="[ROOT]", help="Also show which rule applies to each "
                                               "layout under ROOT.")] = None,
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Validate a retention policy and explain it in words. Exit 0 when valid, 2 when not."""
    from ocigc.retention.explain import explain
    from ocigc.retention.load import load_policy
    from ocigc.retention.model import repository_name

    s = settings(ctx, quiet, verbose)
    with handle_errors("policy check", json_out):
        policy = load_policy(file)
        matches: list[tuple[str, str | None]] = []
        if root is not None:
            for layout in layouts_under(root, jobs):
                repo = repository_name(layout)
                rule = policy.rule_for(repo)
                matches.append((repo, rule.name if rule else None))
        if json_out:
            doc: dict[str, Any] = {"valid": True, **policy.to_json()}
            if root is not None:
                doc["repositories"] = [{"repository": r, "rule": n} for r, n in matches]
            echo_json("policy check", doc)
            return
        if not s.quiet:
            typer.echo("\n".join(explain(policy)))
            if root is not None:
                typer.echo("")
                typer.echo(table([[r or ".", n or "(none: every tag kept)"] for r, n in matches],
                                 ["REPOSITORY", "RULE"]))
        if s.quiet:
            for w in policy.warnings:
                typer.echo(f"warning: {w}", err=True)


# --- rendering decisions ------------------------------------------------------------------------
def render_decisions(plan: Plan) -> list[str]:
    """Per tag: kept or removed, by which rule and criterion, and why (policy sweeps only)."""
    lines: list[str] = []
    refused = [d for d in plan.decisions if d.get("by") == "refused"]
    if refused:
        d = refused[0]
        lines.append(f"  refuse  rule {d['rule']!r}: {d['reason']}; all {len(refused)} tags kept")
    shown = [d for d in plan.decisions if d.get("by") != "refused"]
    width = min(40, max((len(str(d["tag"])) for d in shown), default=0))
    for d in shown:  # the digest in full: the CLI cuts it to 12 hex unless --wide
        lines.append(f"  {d['action']:<7} tag {d['tag']!s:<{width}}  {d.get('digest', '')}  [{d['rule']}: "
                     f"{d['by']}] {d['reason']}")
    return lines


@contextmanager
def unattended(command: str, root: str, s: Settings, report_file: str | None, log_format: str,
               dry_run: bool = False) -> Iterator[Unattended]:
    """Wrap a command body: every way out (done, an error, Ctrl-C) writes the report once.

    Use inside ``handle_errors()``. With JSON logs an error becomes one JSON line on stderr
    (instead of ``error: ...``) and the command exits with its code."""
    run = Unattended(command, root, s.quiet, report_file, log_format, dry_run,
                     report_problem=lambda message: typer.echo(f"error: {message}", err=True))
    try:
        yield run
    except typer.Exit as e:
        run.finish(int(e.exit_code))
        raise
    except (OcigcError, OSError) as caught:
        if isinstance(caught, BrokenPipeError):
            raise
        # an OSError that escaped a layout's own handling (EROFS, ENOSPC, ...) is reported like any
        # other error: one line, exit 1, and the report is still written
        err = caught if isinstance(caught, OcigcError) else storage_error(caught)
        if run.report is not None:
            run.report.fail(str(err), err.exit_code)
        if run.log is not None:
            run.log.error(str(err), extra={"event": "error", "exit_code": err.exit_code})
            run.finish(err.exit_code)
            raise typer.Exit(err.exit_code) from None
        run.finish(err.exit_code)
        if err is caught:
            raise
        raise err from None
    except KeyboardInterrupt:
        if run.report is not None:
            run.report.fail("interrupted", EXIT_INTERRUPTED)
        run.finish(EXIT_INTERRUPTED)
        raise
    else:
        run.finish(EXIT_OK)
