"""Writing commands that remove things: delete and sweep."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated

import typer

from ocigc.cli._common import (
    JsonOpt,
    QuietOpt,
    Settings,
    VerboseOpt,
    WideOpt,
    echo_json,
    handle_errors,
    human_bytes,
    most_serious,
    settings,
)
from ocigc.cli.app import app
from ocigc.cli.locking import AllowUnsafeMountOpt, LockWaitOpt, check_mounts, command_line, make_locker
from ocigc.cli.policy import JsonReportOpt, LogFormatOpt, PolicyOpt, render_decisions, unattended
from ocigc.cli.read import JobsOpt, layouts_under
from ocigc.duration import format_duration, parse_duration
from ocigc.errors import (
    UsageError,
    printable,
)
from ocigc.gc.plan import DEFAULT_GRACE, DeleteOptions, Plan, SweepOptions
from ocigc.gc.run import Outcome, RunOptions
from ocigc.layout.discover import map_links
from ocigc.layout.views import open_at
from ocigc.oci.refs import Reference, parse_reference
from ocigc.parallel import DEFAULT_JOBS
from ocigc.storage.open_storage import open_storage

DryRunOpt = Annotated[bool, typer.Option("--dry-run", "-n", help="Print the plan; change nothing at all.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation on a terminal.")]
#: delete, manifest delete, blob delete: without a terminal they refuse unless given (as oras).
DeleteYesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when "
                                            "stdin is not a terminal: CI, pipes, cron).")]
TrashOpt = Annotated[bool, typer.Option("--trash", help="Move blobs to .ocigc/trash/<run>/ instead of removing "
                                        "them ('ocigc trash restore' undoes the run).")]
ALL_LIMIT = 20


def overall_exit(outcomes: list[Outcome]) -> int:
    return most_serious(o.error.exit_code for o in outcomes if o.error)


class Confirmer:
    """On a terminal (and without --yes): show each plan once and ask before changing anything. The
    plans shown are remembered, so that the report after the run does not print them again."""

    def __init__(self, s: Settings, json_out: bool) -> None:
        self.s = s
        self.json_out = json_out
        self.shown: set[int] = set()

    def __call__(self, plan: Plan) -> bool:
        lines = render_plan(plan, self.s if not self.json_out else replace(self.s, verbose=max(1, self.s.verbose)))
        typer.echo("\n".join(lines), err=self.json_out)
        self.shown.add(id(plan))
        try:
            return typer.confirm("Proceed?", default=False, err=True)
        except typer.Abort:  # Ctrl-C or Ctrl-D at the prompt: an interrupt (exit 130), nothing changed
            raise KeyboardInterrupt from None


def make_confirm(s: Settings, yes: bool, json_out: bool) -> Confirmer | None:
    """On a terminal (and without --yes), show the plan and ask once before deleting."""
    if yes or not sys.stdin.isatty():
        return None
    return Confirmer(s, json_out)


def require_consent(yes: bool, dry_run: bool = False, flags: str = "--yes") -> None:
    """As oras: a command that deletes what someone named asks first; without a terminal to ask on
    (stdin is not one: CI, a pipe, cron) and without ``--yes`` it refuses (exit 2, nothing changed).
    A dry run changes nothing and needs no consent. ``sweep`` never calls this: it removes only what
    nothing references, after the grace period (docs/cron.md)."""
    if yes or dry_run or sys.stdin.isatty():
        return
    raise UsageError(f"no terminal to confirm the deletion on: pass {flags} to delete without asking")


def render_plan(plan: Plan, s: Settings, dry_run: bool = False) -> list[str]:
    head = f"{plan.command} {printable(plan.name or plan.location)}"
    lines = [head]
    for decision in render_decisions(plan):
        lines.extend(s.fit(decision, hang=8))
    items: list[str] = []
    for t in plan.trash_restore:
        who = ", ".join(t.roots[:3]) or "an index.json entry"
        items.append(f"  restore blob      {t.digest}  (from trash run {t.run}: referenced again by {who})")
    for p in plan.trash_purge:
        age = format_duration(p.age) if p.age is not None else "unknown age"
        items.append(f"  purge   trash run {p.run}  ({p.blobs} blobs, {age} old: past the trash retention; "
                     "irreversible)")
    for e in plan.remove_entries:
        what = f"tag {printable(e.ref_name)}" if e.ref_name is not None else "untagged entry"
        items.append(f"  drop    {what} -> {e.digest}  ({e.reason})")
    for b in plan.remove_manifests:
        items.append(f"  remove  {b.kind:<9} {b.digest}  {human_bytes(b.size or 0):>9}  ({b.reason})")
    for b in plan.remove_blobs:
        items.append(f"  remove  {b.kind:<9} {b.digest}  {human_bytes(b.size or 0):>9}  ({b.reason})")
    for f in plan.remove_files:
        items.append(f"  remove  file      {printable(f.path)}  {human_bytes(f.size or 0):>9}  ({f.reason}, "
                     f"{format_duration(f.age or 0)} old)")
    for b in plan.kept:
        items.append(f"  keep    {b.kind:<9} {b.digest}  ({b.reason})")
    for f in plan.kept_files:
        items.append(f"  keep    file      {printable(f.path)}  ({f.reason})")
    for r in plan.reported:
        items.append(f"  report  {r}")
    for n in plan.notes:
        items.append(f"  note    {n}")
    if len(items) > ALL_LIMIT and not s.verbose:
        items = [*items[:ALL_LIMIT], f"  ... {len(items) - ALL_LIMIT} more (-v shows all, --json gives everything)"]
    for item in items:
        lines.extend(s.fit(item, hang=8))
    nblobs = len(plan.remove_manifests) + len(plan.remove_blobs)
    summary = (f"  = {len(plan.remove_entries)} entries, {nblobs} blobs ({len(plan.remove_manifests)} manifests), "
               f"{len(plan.remove_files)} temp files, {human_bytes(plan.bytes_reclaimed)} to reclaim")
    if plan.trash_restore or plan.trash_purge:
        summary += f"; trash: {len(plan.trash_restore)} to restore, {len(plan.trash_purge)} runs to purge"
    if plan.empty:
        summary = "  = nothing to remove"
    marker = "  [dry run: nothing changed]" if dry_run and not plan.empty else ""
    if s.wide or len(summary + marker) <= s.width:
        lines.append(s.short(summary + marker))
    else:
        lines.extend([*s.fit(summary), "   " + marker] if marker else s.fit(summary))
    return lines


def render_outcome(o: Outcome, s: Settings, plan_shown: bool = False) -> list[str]:
    """The report of one layout on stdout. Its error is not repeated here: it is the one ``error:``
    line on stderr. A plan already shown at the confirmation is not printed again."""
    if o.error and not o.plan:
        return []
    lines = render_plan(o.plan, s, o.dry_run) if o.plan and not plan_shown else []
    out: list[str] = []
    if o.declined:
        out.append("  declined: nothing changed")
    if o.result:
        r = o.result
        out.append(f"  done: removed {r.removed_entries} entries, {len(r.removed)} blobs, {len(r.removed_files)} "
                   f"temp files ({human_bytes(r.bytes_removed)}) in {r.seconds:.2f}s")
        out.extend(f"  skipped {x}" for x in r.skipped)
        out.extend(f"  failed  {f}" for f in r.failed)
        if r.races:
            out.append(f"  {len(r.races)} lost race(s) on index.json, retried")
        if r.raced:
            out.append(f"  warning {len(r.raced)} blob(s) this run removed are referenced again by index.json "
                       "(a writer that does not take the lock raced the run; journal 'race' record)")
    out.extend(f"  warning {res.message()}" for res in o.resurrected)
    if o.trash:
        if o.trash.purged_runs:
            out.append(f"  trash: purged {len(o.trash.purged_runs)} runs ({o.trash.purged_blobs} blobs) older "
                       "than the retention")
        out.extend(f"  failed  {f}" for f in o.trash.failed)
    if o.trash_run and o.result:
        out.append(f"  trash: moved to .ocigc/trash/{o.trash_run}/ (undo: ocigc trash restore "
                   f"{printable(o.layout.location)} {o.trash_run})")
    for line in out:
        lines.extend(s.fit(line, hang=8))
    return lines


def refusals(o: Outcome) -> list[str]:
    """A retention policy that refused to act on a layout (ambiguous times): a warning, printed even
    with --quiet (docs/cron.md: nothing is removed there until the times are fixed)."""
    if o.plan is None:
        return []
    refused = [d for d in o.plan.decisions if d.get("by") == "refused"]
    if not refused:
        return []
    d = refused[0]
    return [f"{o.layout.display}: the policy refused to act: rule {d['rule']!r}: {d['reason']}; "
            f"all {len(refused)} tags kept"]


def emit(outcomes: list[Outcome], s: Settings, json_out: bool, command: str, data: dict[str, object],
         confirm: Confirmer | None = None, on_error: Callable[[Outcome], None] | None = None) -> None:
    """Render, then exit with the overall code. Each error is printed once: one ``error:`` line on
    stderr (``on_error`` replaces it: JSON logs), never repeated on stdout."""
    code = overall_exit(outcomes)
    shown = confirm.shown if confirm is not None else set()
    if json_out:
        echo_json(command, {**data, "layouts": [o.to_json() for o in outcomes]}, exit_code=code)
    elif not s.quiet:
        for o in outcomes:
            lines = render_outcome(o, s, plan_shown=o.plan is not None and id(o.plan) in shown)
            if lines:
                typer.echo("\n".join(lines))
    for o in outcomes:
        if on_error is None:
            for w in refusals(o):
                typer.echo(f"warning: {w}", err=True)
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
    yes: DeleteYesOpt = False,
    trash: TrashOpt = False,
    lock_wait: LockWaitOpt = "0",
    json_out: JsonOpt = False,
    json_report: JsonReportOpt = None,
    log_format: LogFormatOpt = "text",
    jobs: JobsOpt = DEFAULT_JOBS,
    allow_unsafe_mount: AllowUnsafeMountOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Delete tags or manifests, their referrers, and every blob no remaining root reaches.

    REF is LAYOUT:TAG, LAYOUT@DIGEST (every entry of that digest) or LAYOUT::NAME (an entry whose ref
    name is not a plain tag, such as podman's localhost/app:v2)."""
    s = settings(ctx, quiet, verbose, wide)
    run_delete("delete", s, refs, dry_run=dry_run, keep_referrers=keep_referrers, force=force, yes=yes, trash=trash,
               lock_wait=lock_wait, json_out=json_out, json_report=json_report, log_format=log_format, jobs=jobs,
               allow_unsafe_mount=allow_unsafe_mount)


def run_delete(command: str, s: Settings, refs: list[str], *, dry_run: bool = False, keep_referrers: bool = False,
               force: bool = False, yes: bool = False, yes_flags: str = "--yes", trash: bool = False,
               lock_wait: str = "0", json_out: bool = False, json_report: str | None = None,
               log_format: str = "text", jobs: int = DEFAULT_JOBS, allow_unsafe_mount: bool = False) -> None:
    """The body of ``delete`` (and of ``manifest delete``, its oras-style alias): parse, refuse
    without consent, plan, confirm on a terminal, run, render; exits with the overall code."""
    with handle_errors(command, json_out), \
            unattended(command, " ".join(refs), s, json_report, log_format, dry_run) as cron:
        by_layout: dict[str, list[Reference]] = {}
        texts: dict[str, str] = {}
        for text in refs:
            ref = parse_reference(text)
            if ref.tag is None and ref.digest is None:
                raise UsageError(f"{text!r}: name a tag (LAYOUT:TAG), a digest (LAYOUT@DIGEST) or an entry "
                                 "(LAYOUT::NAME)")
            by_layout.setdefault(ref.path, []).append(ref)
            texts.setdefault(ref.path, text)
        require_consent(yes, dry_run, yes_flags)
        layouts = {path: open_at(rs[0], texts[path]) for path, rs in by_layout.items()}
        if not dry_run:
            check_mounts(list(by_layout), refuse=not allow_unsafe_mount)
        confirm = make_confirm(s, yes, json_out)
        run = RunOptions(dry_run=dry_run, jobs=jobs, confirm=confirm, trash=trash,
                         locker=cron.locker(make_locker(s, parse_duration(lock_wait, "--lock-wait"), command_line())),
                         command=command_line())
        opts = DeleteOptions(keep_referrers=keep_referrers, force=force, jobs=jobs)
        outcomes = [cron.delete(layouts[p], rs, opts, run, s.progress(json_out or cron.json_logs))
                    for p, rs in by_layout.items()]
        emit(outcomes, s, json_out, command, {"references": refs}, confirm, on_error=cron.on_error())


@app.command("sweep")
def sweep_cmd(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(metavar="PATH", help="A layout, or a directory holding layouts.")],
    dry_run: DryRunOpt = False,
    grace: Annotated[str, typer.Option("--grace", metavar="DURATION", help="Keep unreachable blobs younger "
                                       "than this (e.g. 0, 30m, 2h, 7d).")] = "1h",
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
    allow_unsafe_mount: AllowUnsafeMountOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Remove blobs no index.json entry reaches (and old leftovers of writers), layout by layout.

    With --policy, first remove the tags its rules do not keep (see 'ocigc policy check').

    Writers that take no lock (a plain skopeo, oras or umoci) are protected by --grace only while they
    write new blobs: one that finds an old unreachable blob present and reuses it can lose it to a
    sweep (docs/locking.md). Run such writers under 'ocigc exec', or sweep with --trash (the next
    sweep restores what is referenced again)."""
    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("sweep", json_out), unattended("sweep", path, s, json_report, log_format, dry_run) as cron:
        if policy:
            from ocigc.retention.load import load_policy  # the retention machinery only with --policy

            cron.use_policy(load_policy(policy))
        else:
            cron.use_policy(None)
        opts = SweepOptions(grace=parse_duration(grace, "grace period") if grace else DEFAULT_GRACE,
                            untagged=untagged, jobs=jobs)
        confirm = make_confirm(s, yes, json_out)
        run = RunOptions(dry_run=dry_run, jobs=jobs, confirm=confirm, trash=trash,
                         trash_retention=parse_duration(trash_retention, "--trash-retention"),
                         locker=cron.locker(make_locker(s, parse_duration(lock_wait, "--lock-wait"), command_line())),
                         command=command_line())
        layouts = layouts_under(path, jobs)
        if not dry_run:
            check_mounts([path, *(lay.location for lay in layouts)], refuse=not allow_unsafe_mount)
        # Layouts sharing storage through symlinks are planned together: what one links to is kept.
        map_links(open_storage(path), layouts)
        outcomes = [cron.sweep(lay, opts, run, s.progress(json_out or cron.json_logs)) for lay in layouts]
        emit(outcomes, s, json_out, "sweep", {"path": path}, confirm, on_error=cron.on_error())
