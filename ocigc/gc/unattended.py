"""Unattended runs of a writing command (``--json-report``, ``--log-format``): each layout timed,
lock waits recorded, events logged in the chosen format, the report written at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocigc.errors import InvalidOption
from ocigc.gc.plan import DeleteOptions, SweepOptions
from ocigc.gc.report import RunReport, TimedLocker
from ocigc.gc.run import Locker, Outcome, RunOptions, delete_refs, sweep_layout
from ocigc.layout.layout import Layout
from ocigc.oci.refs import Reference
from ocigc.progress import Progress

if TYPE_CHECKING:  # the retention machinery only with --policy, logging only with --log-format json
    import logging

    from ocigc.retention.decide import Policy

LOG_FORMATS = ("text", "json")


@dataclass
class Unattended:
    """One run of a writing command with ``--json-report`` and ``--log-format``: times each layout,
    records lock waits, logs events in the chosen format and writes the report at the end."""

    command: str
    root: str
    quiet: bool
    report_file: str | None
    log_format: str = "text"
    dry_run: bool = False
    #: Where a problem of the run's own (the report cannot be written) goes without JSON logs.
    report_problem: Callable[[str], None] | None = None
    report: RunReport | None = None
    log: logging.Logger | None = None
    locks: TimedLocker | None = None
    policy: Policy | None = None

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise InvalidOption("log_format", f"must be text or json, got {self.log_format!r}")
        self.report = RunReport(self.command, self.root, dry_run=self.dry_run)
        if self.log_format == "json":
            import logging

            from ocigc.gc.runlog import run_logger

            # with --quiet, errors and warnings (a policy that refused to act): docs/cron.md
            self.log = run_logger("json", level=logging.WARNING if self.quiet else logging.INFO)

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
        self.log.error(str(o.error), extra={"event": "layout-failed", "layout": o.layout.label,
                                            "location": o.layout.location, "exit_code": o.error.exit_code})

    def _log_layouts(self) -> None:
        if self.log is None or self.report is None:
            return
        import logging

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
                         extra={"event": "layout", "layout": o.layout.label, "location": o.layout.location,
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
                elif self.report_problem is not None:
                    self.report_problem(msg)
