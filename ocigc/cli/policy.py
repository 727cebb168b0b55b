"""Retention policies on the command line: ``ocigc policy check``, and the pieces ``sweep`` uses for
``--policy``, ``--json-report`` and ``--log-format`` (rendering decisions, unattended runs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, Settings, VerboseOpt, echo_json, handle_errors, settings, table
from ocigc.cli.app import app
from ocigc.cli.read import JobsOpt, layouts_under
from ocigc.errors import EXIT_INTERRUPTED, EXIT_OK, OcigcError, storage_error
from ocigc.gc.plan import DeleteOptions, Plan, SweepOptions
from ocigc.gc.report import RunReport, TimedLocker, run_logger
from ocigc.gc.run import Locker, Outcome, RunOptions, delete_refs, sweep_layout
from ocigc.layout.layout import Layout
from ocigc.oci.refs import Reference
from ocigc.parallel import DEFAULT_JOBS
from ocigc.progress import Progress
from ocigc.retention.decide import Policy
from ocigc.retention.explain import explain
from ocigc.retention.load import load_policy
from ocigc.retention.model import repository_name

policy_app = typer.Typer(help="Retention policies (TOML files for sweep --policy): check and explain.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

LOG_FORMATS = ("text", "json")
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
    s = settings(ctx, quiet, verbose)
    with handle_errors():
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
            echo_json(doc)
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
    for d in shown:
        digest = str(d.get("digest", ""))
        short = digest[: digest.find(":") + 13] + "…" if ":" in digest else digest
        lines.append(f"  {d['action']:<7} tag {d['tag']!s:<{width}}  {short}  [{d['rule']}: {d['by']}] "
                     f"{d['reason']}")
    return lines


# --- unattended runs ----------------------------------------------------------------------------
@dataclass
class Unattended:
    """One run of a writing command with ``--json-report`` and ``--log-format``: times each layout,
    records lock waits, logs events in the chosen format and writes the report at the end."""

    command: str
    root: str
    settings: Settings
    report_file: str | None
    log_format: str = "text"
    dry_run: bool = False
    report: RunReport | None = None
    log: logging.Logger | None = None
    locks: TimedLocker | None = None
    policy: Policy | None = None

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            from ocigc.errors import UsageError

            raise UsageError(f"--log-format must be text or json, got {self.log_format!r}")
        self.report = RunReport(self.command, self.root, dry_run=self.dry_run)
        if self.log_format == "json":
            self.log = run_logger("json", level=logging.ERROR if self.settings.quiet else logging.INFO)

    @property
    def json_logs(self) -> bool:
        return self.log is not None

    def use_policy(self, policy: Policy | None) -> None:
        self.policy = policy
        if policy is not None and self.report is not None:
            self.report.policy = {"path": policy.path, "sha256": policy.sha256,
                                  "rules": [r.name for r in policy.rules]}

    def locker(self, inner: Locker) -> Locker:
        self.locks = TimedLocker(inner)
        return self.locks

    def sweep(self, layout: Layout, base: SweepOptions, run: RunOptions, progress: Progress) -> Outcome:
        opts = self.policy.sweep_options(layout, base) if self.policy is not None else base
        run = self.policy.run_options(layout, run) if self.policy is not None else run
        started = time.monotonic()
        out = sweep_layout(layout, opts, run, progress)
        lock = self.locks.record(layout) if self.locks is not None else None
        if self.report is not None:
            self.report.add(out, time.monotonic() - started, lock)
        return out

    def delete(self, layout: Layout, refs: list[Reference], opts: DeleteOptions, run: RunOptions,
               progress: Progress) -> Outcome:
        started = time.monotonic()
        out = delete_refs(layout, refs, opts, run, progress)
        lock = self.locks.record(layout) if self.locks is not None else None
        if self.report is not None:
            self.report.add(out, time.monotonic() - started, lock)
        return out

    def on_error(self) -> Callable[[Outcome], None] | None:
        """For ``emit``: with JSON logs, a failed layout is one JSON line instead of ``error: ...``."""
        return self.log_outcome if self.json_logs else None

    def log_outcome(self, o: Outcome) -> None:
        if self.log is None or o.error is None:
            return
        self.log.error(str(o.error), extra={"event": "layout-failed", "layout": o.layout.name,
                                            "location": o.layout.location, "exit_code": o.error.exit_code})

    def _log_layouts(self) -> None:
        if self.log is None or self.report is None:
            return
        for e in self.report.entries:
            o = e.outcome
            if o.error is not None:
                continue
            x = RunReport.summary(e)
            what = "dry run" if o.dry_run else "done" if o.result else "nothing removed"
            refused = x["refused"]
            self.log.log(logging.WARNING if refused else logging.INFO,
                         f"{self.command} {o.layout.display}: {what}"
                         + ("; the policy refused to act (ambiguous times)" if refused else ""),
                         extra={"event": "layout", "layout": o.layout.name, "location": o.layout.location,
                                "dry_run": o.dry_run, **x})

    def finish(self, code: int) -> None:
        self._log_layouts()
        if self.log is not None and self.report is not None:
            totals = self.report.to_json(code)["totals"]
            self.log.info(f"{self.command} finished with exit code {code}",
                         extra={"event": "finished", "exit_code": code, **totals})
        if self.report_file and self.report is not None:
            try:
                self.report.write(self.report_file, code)
            except OSError as e:
                msg = f"cannot write the report {self.report_file}: {e.strerror or e}"
                if self.log is not None:
                    self.log.error(msg, extra={"event": "report-failed"})
                else:
                    typer.echo(f"error: {msg}", err=True)


@contextmanager
def unattended(command: str, root: str, s: Settings, report_file: str | None, log_format: str,
               dry_run: bool = False) -> Iterator[Unattended]:
    """Wrap a command body: every way out (done, an error, Ctrl-C) writes the report once.

    Use inside ``handle_errors()``. With JSON logs an error becomes one JSON line on stderr
    (instead of ``error: ...``) and the command exits with its code."""
    run = Unattended(command, root, s, report_file, log_format, dry_run)
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
