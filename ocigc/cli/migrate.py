"""migrate: copy every repository and tag between layouts and registries, digests intact.

``ocigc.transfer.migrate`` (and with it oras-py and requests) is imported when the command runs, not when
the CLI starts: the other commands do not pay for the registry client.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, VerboseOpt, echo_json, handle_errors, human_bytes, settings
from ocigc.cli._registry import (
    DEFAULT_JOBS,
    InsecureOpt,
    JobsOpt,
    PasswordOpt,
    PasswordStdinOpt,
    PlainHttpOpt,
    RegistryConfigOpt,
    RetriesOpt,
    UsernameOpt,
    VerifyOpt,
    registry_options,
)
from ocigc.cli.app import app
from ocigc.duration import format_duration, parse_duration
from ocigc.errors import EXIT_ERROR, EXIT_INTEGRITY, EXIT_OK

if TYPE_CHECKING:
    from ocigc.transfer.migrate.model import MigratePlan, RepoPlan

COPY, PRESENT, MOVE = "copy", "present", "move"


class InvalidTagsChoice(StrEnum):
    """The choices of ``--invalid-tags`` (``ocigc.transfer.migrate.model.InvalidTags``)."""

    refuse = "refuse"
    digest = "digest"
    sanitize = "sanitize"


@app.command("migrate")
def migrate_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="SRC",
        help="A layout, a root of layouts (s3/), or a registry HOST:PORT/PREFIX (port, prefix optional).")],
    dest: Annotated[str, typer.Argument(
        metavar="DST",
        help="A layout, a root for layouts, or a registry HOST:PORT/PREFIX (port, prefix optional).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", "-n", help="Print the plan (repositories, tags, blobs and bytes to copy, what is there); "
                                "change nothing.")] = False,
    include: Annotated[list[str] | None, typer.Option(
        "--include", metavar="GLOB", help="Only these repositories (REPO) or tags (REPO:TAG); repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", metavar="GLOB", help="Skip these repositories (REPO) or tags (REPO:TAG); repeatable.")] = None,
    repo: Annotated[list[str] | None, typer.Option(
        "--repo", metavar="NAME", help="Registry source: copy these repositories (under the prefix) instead of "
                                       "every repository of the catalog; repeatable.")] = None,
    jobs: JobsOpt = DEFAULT_JOBS,
    retries: RetriesOpt = 4,
    verify: VerifyOpt = False,
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    invalid_tags: Annotated[InvalidTagsChoice, typer.Option(
        "--invalid-tags", metavar="refuse|digest|sanitize",
        help="Layout ref names that are no registry tag and no full reference NAME:TAG: "
                               "refuse the repository, push by digest only, or sanitize the name "
                               "(docs/migrate.md).")] = InvalidTagsChoice.refuse,
    registry_config: RegistryConfigOpt = None,
    lock_wait: Annotated[str, typer.Option(
        "--lock-wait", metavar="DURATION",
        help="Layout destinations: how long to wait for a conflicting lock (a sweep) before exit 75.")] = "0",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Copy every repository and tag (untagged entries, referrers, all platforms) between layouts
    and registries; manifests go byte for byte, so every digest is kept.

    Layout root -> registry: each layout's path under the root becomes a repository under
    PREFIX. Registry -> layouts: each repository under PREFIX becomes a layout under DST.
    Layout -> layout copies too. A rerun copies only what is missing.

    Exit 0 ok; 1 error (some repositories not copied, registry unreachable); 2 usage;
    4 --verify found a mismatch; 75 lock busy; 130 interrupted."""
    s = settings(ctx, quiet, verbose)
    with handle_errors("migrate", json_out):
        from ocigc.transfer.migrate.execute import migrate
        from ocigc.transfer.migrate.model import InvalidTags, MigrateOptions

        options = MigrateOptions(
            include=tuple(include or ()), exclude=tuple(exclude or ()), repos=tuple(repo or ()), jobs=jobs,
            verify=verify, invalid_tags=InvalidTags(invalid_tags.value),
            lock_wait=parse_duration(lock_wait, "--lock-wait"),
            registry=registry_options(plain_http=plain_http, insecure=insecure, retries=retries,
                                      registry_config=registry_config, username=username, password=password,
                                      password_stdin=password_stdin),
        )

        def show_plan(plan: MigratePlan) -> None:
            if not dry_run and s.verbose and not json_out:
                typer.echo("\n".join(render_plan(plan, s.verbose)), err=True)

        plan = migrate(source, dest, options, dry_run=dry_run, progress=s.progress(json_out), on_plan=show_plan)
        _render(plan, s.verbose, s.quiet, dry_run, json_out)


def _render(plan: MigratePlan, verbose: int, quiet: bool, dry_run: bool, json_out: bool) -> NoReturn:
    """Print the plan (dry run) or the summary, the problems on stderr; exit with the run's code."""
    if dry_run:
        code = EXIT_ERROR if plan.failed else EXIT_OK
        if json_out:
            echo_json("migrate", plan.to_json(executed=False), exit_code=code)
        else:
            typer.echo("\n".join(render_plan(plan, verbose, dry_run=True)))
        raise typer.Exit(code)
    code = exit_code(plan)
    if json_out:
        echo_json("migrate", plan.to_json(executed=True), exit_code=code)
    else:
        lines = render_summary(plan)
        if code == EXIT_OK and quiet:
            lines = []
        for line in lines:
            typer.echo(line)
    for problem in problems(plan):
        typer.echo(f"error: {problem}", err=True)
    raise typer.Exit(code)


def exit_code(plan: MigratePlan) -> int:
    if plan.verify_errors:
        return EXIT_INTEGRITY
    if plan.aborted or plan.failed:
        return EXIT_ERROR
    return EXIT_OK


def problems(plan: MigratePlan) -> list[str]:
    out = []
    if plan.aborted:
        out.append(f"stopped: {plan.aborted}; what arrived stays, a rerun copies the rest")
    for rp in plan.failed:
        why = rp.failed or "; ".join(rp.errors)
        if plan.aborted and why == plan.aborted:
            continue
        out.append(f"{rp.src_repo or rp.source_label}: not copied: {why}")
    out.extend(f"verify: {p}" for p in plan.verify_errors)
    return out


def _repo_title(rp: RepoPlan) -> str:
    return f"{rp.source_label} -> {rp.dest_label}"


def render_plan(plan: MigratePlan, verbose: int = 0, dry_run: bool = False) -> list[str]:
    t = plan.totals()
    lines = [f"migrate {plan.source} -> {plan.dest}{'  (dry run: nothing changed)' if dry_run else ''}"]
    lines += [f"  note: {n}" for n in plan.notes]
    for rp in plan.repos:
        # the name --include/--exclude match: a dry run shows it (a single layout's is '')
        lines.append(f"  {_repo_title(rp)}" + (f"  [repository {rp.src_repo!r}]" if dry_run else ""))
        if rp.errors:
            lines += [f"    ERROR: {e}" for e in rp.errors]
            lines.append("    (this repository will not be copied)")
            continue
        tagged = [e for e in rp.entries if e.name is not None]
        untagged = [e for e in rp.entries if e.name is None]
        by_state = {k: sum(1 for e in tagged if e.state == k) for k in (COPY, MOVE, PRESENT)}
        lines.append(f"    tags: {len(tagged)} ({by_state[COPY]} to copy, {by_state[MOVE]} to move, "
                     f"{by_state[PRESENT]} there); untagged: {len(untagged)} "
                     f"({sum(1 for e in untagged if e.referrer)} referrers)")
        if verbose or dry_run:
            for e in tagged:
                mapped = f" <- {e.src_name}" if e.src_name is not None and e.src_name != e.name else ""
                lines.append(f"      {e.state:<7} {e.name}{mapped} {e.digest.short} {e.media_type}")
            if verbose:
                for e in untagged:
                    kind = "referrer" if e.referrer else "untagged"
                    lines.append(f"      {e.state:<7} <{kind}> {e.digest.short} {e.media_type}")
        m, b = rp.manifest_totals(), rp.blob_totals()
        lines.append(f"    manifests: {m['copy']} to copy, {m['present']} there")
        lines.append(f"    blobs: {b['copy']} to copy ({human_bytes(b['copy_bytes'])}), {b['mount']} to mount "
                     f"({human_bytes(b['mount_bytes'])}), {b['present']} there ({human_bytes(b['present_bytes'])})"
                     + (f", {b['foreign']} foreign not in the source" if b["foreign"] else ""))
        lines += [f"    note: {n}" for n in rp.notes if verbose or "->" not in n]
    lines.append(
        f"total: {t['repositories']} repositories, {t['tags']} tags, {t['untagged']} untagged; manifests "
        f"{t['manifests_copy']} to copy, {t['manifests_present']} there; blobs {t['blobs_copy']} to copy "
        f"({human_bytes(t['bytes_copy'])}), {t['blobs_mount']} to mount ({human_bytes(t['bytes_mount'])}), "
        f"{t['blobs_present']} there ({human_bytes(t['bytes_present'])})"
        + (f"; {len(plan.failed)} repositories refused" if plan.failed else ""))
    return lines


def render_summary(plan: MigratePlan) -> list[str]:
    st = plan.stats()
    secs = max(plan.elapsed, 1e-6)
    ok = len(plan.repos) - len(plan.failed)
    rate = human_bytes(int(st["bytes_uploaded"] / secs)) + "/s"
    lines = [
        f"migrated {ok} of {len(plan.repos)} repositories {plan.source} -> {plan.dest} in "
        f"{format_duration(plan.elapsed) if plan.elapsed >= 60 else f'{plan.elapsed:.1f}s'}",
        f"  tags: {st['tags_written']} written, {st['tags_present']} already there",
        f"  manifests: {st['manifests_written']} written, {st['manifests_present']} already there"
        + (f"; {st['referrer_tags']} referrers tags updated" if st["referrer_tags"] else ""),
        f"  blobs: {st['blobs_uploaded']} copied ({human_bytes(st['bytes_uploaded'])}, {rate}), "
        f"{st['blobs_mounted']} mounted ({human_bytes(st['bytes_mounted'])}), "
        f"{st['blobs_present']} already there ({human_bytes(st['bytes_present'])})",
    ]
    if plan.options.verify:
        lines.append(f"  verify: {st['verified']} checked, {len(plan.verify_errors)} mismatches")
    lines += [f"  note: {n}" for rp in plan.repos for n in rp.notes if n.startswith("foreign layer ")]
    return lines


__all__ = ["InvalidTagsChoice", "exit_code", "migrate_cmd", "problems", "render_plan", "render_summary"]
