"""Writing commands that remove things: delete and sweep."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from ocigc.cli._common import (
    JsonOpt,
    QuietOpt,
    Settings,
    VerboseOpt,
    echo_json,
    handle_errors,
    human_bytes,
    settings,
)
from ocigc.cli.app import app
from ocigc.cli.locking import LockWaitOpt, command_line, make_locker
from ocigc.cli.policy import JsonReportOpt, LogFormatOpt, PolicyOpt, render_decisions, unattended
from ocigc.cli.read import JobsOpt, layouts_under
from ocigc.duration import format_duration, parse_duration
from ocigc.errors import (
    EXIT_ERROR,
    EXIT_INTEGRITY,
    EXIT_LOCK_BUSY,
    EXIT_LOST_RACE,
    EXIT_OK,
    UsageError,
    printable,
)
from ocigc.gc.plan import DEFAULT_GRACE, DeleteOptions, Plan, SweepOptions
from ocigc.gc.run import Confirm, Outcome, RunOptions
from ocigc.layout.discover import map_links
from ocigc.layout.layout import Layout
from ocigc.oci.refs import Reference, parse_reference
from ocigc.parallel import DEFAULT_JOBS
from ocigc.storage.open_storage import open_storage

DryRunOpt = Annotated[bool, typer.Option("--dry-run", "-n", help="Print the plan; change nothing at all.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation on a terminal.")]
TrashOpt = Annotated[bool, typer.Option("--trash", help="Move blobs to .ocigc/trash/<run>/ instead of removing "
                                        "them ('ocigc trash restore' undoes the run).")]
ALL_LIMIT = 20


def overall_exit(outcomes: list[Outcome]) -> int:
    codes = {o.error.exit_code for o in outcomes if o.error}
    for code in (EXIT_INTEGRITY, EXIT_LOST_RACE, EXIT_ERROR):
        if code in codes:
            return code
    if EXIT_LOCK_BUSY in codes:
        return EXIT_LOCK_BUSY
    return next(iter(codes), EXIT_OK)


def make_confirm(s: Settings, yes: bool, json_out: bool) -> Confirm | None:
    """On a terminal (and without --yes), show the plan and ask once before deleting."""
    if yes or not sys.stdin.isatty():
        return None

    def confirm(plan: Plan) -> bool:
        if json_out:
            typer.echo("\n".join(render_plan(plan, verbose=1)), err=True)
        else:
            typer.echo("\n".join(render_plan(plan, verbose=s.verbose)))
        return typer.confirm("Proceed?", default=False, err=True)

    return confirm


def render_plan(plan: Plan, verbose: int = 0, dry_run: bool = False) -> list[str]:
    head = f"{plan.command} {printable(plan.name or plan.location)}"
    lines = [head, *render_decisions(plan)]
    items: list[str] = []
    for t in plan.trash_restore:
        who = ", ".join(t.roots[:3]) or "an index.json entry"
        items.append(f"  restore blob      {t.digest}  (from trash run {t.run}: referenced again by {who})")
    for p in plan.trash_purge:
        age = format_duration(p.age) if p.age is not None else "unknown age"
        items.append(f"  purge   trash run {p.run}  ({p.blobs} blobs, {age} old: past the trash retention; "
                     "irreversible)")
    for e in plan.remove_entries:
        what = f"tag {e.ref_name}" if e.ref_name is not None else "untagged entry"
        items.append(f"  drop    {what} -> {e.digest}  ({e.reason})")
    for b in plan.remove_manifests:
        items.append(f"  remove  {b.kind:<9} {b.digest}  {human_bytes(b.size or 0):>9}  ({b.reason})")
    for b in plan.remove_blobs:
        items.append(f"  remove  {b.kind:<9} {b.digest}  {human_bytes(b.size or 0):>9}  ({b.reason})")
    for f in plan.remove_files:
        items.append(f"  remove  file      {f.path}  {human_bytes(f.size or 0):>9}  ({f.reason}, "
                     f"{format_duration(f.age or 0)} old)")
    for b in plan.kept:
        items.append(f"  keep    {b.kind:<9} {b.digest}  ({b.reason})")
    for f in plan.kept_files:
        items.append(f"  keep    file      {f.path}  ({f.reason})")
    for r in plan.reported:
        items.append(f"  report  {r}")
    for n in plan.notes:
        items.append(f"  note    {n}")
    if len(items) > ALL_LIMIT and not verbose:
        lines.extend(items[:ALL_LIMIT])
        lines.append(f"  ... {len(items) - ALL_LIMIT} more (-v shows all, --json gives everything)")
    else:
        lines.extend(items)
    nblobs = len(plan.remove_manifests) + len(plan.remove_blobs)
    summary = (f"  = {len(plan.remove_entries)} entries, {nblobs} blobs ({len(plan.remove_manifests)} manifests), "
               f"{len(plan.remove_files)} temp files, {human_bytes(plan.bytes_reclaimed)} to reclaim")
    if plan.trash_restore or plan.trash_purge:
        summary += f"; trash: {len(plan.trash_restore)} to restore, {len(plan.trash_purge)} runs to purge"
    if plan.empty:
        summary = "  = nothing to remove"
    lines.append(summary + ("  [dry run: nothing changed]" if dry_run and not plan.empty else ""))
    return lines


def render_outcome(o: Outcome, verbose: int) -> list[str]:
    if o.error and not o.plan:
        return [f"{o.layout.display}: error: {o.error}"]
    lines = render_plan(o.plan, verbose, o.dry_run) if o.plan else []
    if o.declined:
        lines.append("  declined: nothing changed")
    if o.result:
        r = o.result
        lines.append(f"  done: removed {r.removed_entries} entries, {len(r.removed)} blobs "
                     f"({human_bytes(r.bytes_removed)}), {len(r.removed_files)} temp files in {r.seconds:.2f}s")
        lines.extend(f"  skipped {s}" for s in r.skipped)
        lines.extend(f"  failed  {f}" for f in r.failed)
        if r.races:
            lines.append(f"  {len(r.races)} lost race(s) on index.json, retried")
        if r.raced:
            lines.append(f"  warning {len(r.raced)} blob(s) this run removed are referenced again by index.json "
                         "(a writer that does not take the lock raced the run; journal 'race' record)")
    lines.extend(f"  warning {res.message()}" for res in o.resurrected)
    if o.trash:
        if o.trash.purged_runs:
            lines.append(f"  trash: purged {len(o.trash.purged_runs)} runs ({o.trash.purged_blobs} blobs) older "
                         "than the retention")
        lines.extend(f"  failed  {f}" for f in o.trash.failed)
    if o.trash_run and o.result:
        lines.append(f"  trash: moved to .ocigc/trash/{o.trash_run}/ (undo: ocigc trash restore "
                     f"{printable(o.layout.location)} {o.trash_run})")
    if o.error:
        lines.append(f"  error: {o.error}")
    return lines


def emit(outcomes: list[Outcome], s: Settings, json_out: bool, command: str,
         on_error: Callable[[Outcome], None] | None = None) -> None:
    """Render, then exit with the overall code. ``on_error`` replaces the ``error: ...`` lines (JSON logs)."""
    code = overall_exit(outcomes)
    if json_out:
        echo_json({"command": command, "exit_code": code, "layouts": [o.to_json() for o in outcomes]})
    else:
        for o in outcomes:
            if s.quiet and (not o.error or on_error is not None):
                continue
            typer.echo("\n".join(render_outcome(o, s.verbose)), err=bool(o.error and s.quiet))
    for o in outcomes:
        if o.error:
            if on_error is not None:
                on_error(o)
            else:
                typer.echo(f"error: {o.error}", err=True)
    raise typer.Exit(code)


@app.command("delete")
def delete_cmd(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(metavar="REF...", help="LAYOUT:TAG or LAYOUT@DIGEST, one or more.")],
    dry_run: DryRunOpt = False,
    keep_referrers: Annotated[bool, typer.Option("--keep-referrers", help="Keep signatures, SBOMs and other "
                                                 "referrers of what is deleted.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Allow deleting a manifest that a live index lists "
                                        "(only its own index.json entries go).")] = False,
    yes: YesOpt = False,
    trash: TrashOpt = False,
    lock_wait: LockWaitOpt = "0",
    json_out: JsonOpt = False,
    json_report: JsonReportOpt = None,
    log_format: LogFormatOpt = "text",
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Delete tags or manifests, their referrers, and every blob no remaining root reaches."""
    s = settings(ctx, quiet, verbose)
    with handle_errors(), unattended("delete", " ".join(refs), s, json_report, log_format, dry_run) as cron:
        by_layout: dict[str, list[Reference]] = {}
        for text in refs:
            ref = parse_reference(text)
            if ref.tag is None and ref.digest is None:
                raise UsageError(f"{text!r}: name a tag (LAYOUT:TAG) or a digest (LAYOUT@DIGEST)")
            by_layout.setdefault(ref.path, []).append(ref)
        layouts = {path: Layout.open(open_storage(path)) for path in by_layout}
        run = RunOptions(dry_run=dry_run, jobs=jobs, confirm=make_confirm(s, yes, json_out), trash=trash,
                         locker=cron.locker(make_locker(s, parse_duration(lock_wait, "--lock-wait"), command_line())),
                         command=command_line())
        opts = DeleteOptions(keep_referrers=keep_referrers, force=force, jobs=jobs)
        outcomes = [cron.delete(layouts[p], rs, opts, run, s.progress(json_out or cron.json_logs))
                    for p, rs in by_layout.items()]
        emit(outcomes, s, json_out, "delete", on_error=cron.on_error())


@app.command("sweep")
def sweep_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts.")],
    dry_run: DryRunOpt = False,
    grace: Annotated[str, typer.Option("--grace", help="Keep unreachable blobs younger than this (e.g. 0, "
                                       "30m, 2h, 7d).")] = "1h",
    untagged: Annotated[bool, typer.Option("--untagged", help="Also remove untagged entries no tag reaches "
                                           "(never referrers of a live subject).")] = False,
    policy: PolicyOpt = None,
    yes: YesOpt = False,
    trash: TrashOpt = False,
    trash_retention: Annotated[str, typer.Option("--trash-retention", metavar="DURATION",
                                                 help="Purge trash runs older than this (after restoring any "
                                                      "blob referenced again).")] = "24h",
    lock_wait: LockWaitOpt = "0",
    json_out: JsonOpt = False,
    json_report: JsonReportOpt = None,
    log_format: LogFormatOpt = "text",
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Remove blobs no index.json entry reaches (and old leftovers of writers), layout by layout.

    With --policy, first remove the tags its rules do not keep (see 'ocigc policy check')."""
    s = settings(ctx, quiet, verbose)
    with handle_errors(), unattended("sweep", path, s, json_report, log_format, dry_run) as cron:
        if policy:
            from ocigc.retention.load import load_policy  # the retention machinery only with --policy

            cron.use_policy(load_policy(policy))
        else:
            cron.use_policy(None)
        opts = SweepOptions(grace=parse_duration(grace, "grace period") if grace else DEFAULT_GRACE,
                            untagged=untagged, jobs=jobs)
        run = RunOptions(dry_run=dry_run, jobs=jobs, confirm=make_confirm(s, yes, json_out), trash=trash,
                         trash_retention=parse_duration(trash_retention, "--trash-retention"),
                         locker=cron.locker(make_locker(s, parse_duration(lock_wait, "--lock-wait"), command_line())),
                         command=command_line())
        layouts = layouts_under(path, jobs)
        # Layouts sharing storage through symlinks are planned together: what one links to is kept.
        map_links(open_storage(path), layouts)
        outcomes = [cron.sweep(lay, opts, run, s.progress(json_out or cron.json_logs)) for lay in layouts]
        emit(outcomes, s, json_out, "sweep", on_error=cron.on_error())
