"""cp: copy one reference (a tag or a digest, with ``-r`` its referrers) between layouts and registries.

It is migrate's second front door: the same engine (``ocigc.transfer.migrate``), imported when the
command runs.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

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
from ocigc.cli.migrate import exit_code, problems
from ocigc.duration import parse_duration


@app.command("cp")
def cp_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(
        metavar="SRC", help="LAYOUT:TAG, LAYOUT@DIGEST, HOST[:PORT]/REPO:TAG or HOST[:PORT]/REPO@DIGEST.")],
    dest: Annotated[str, typer.Argument(
        metavar="DST", help="LAYOUT[:TAG] or HOST[:PORT]/REPO[:TAG] (no tag: the source's).")],
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Copy the referrers too (signatures, SBOMs: manifests whose subject is copied), "
                                  "recursively.")] = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    retries: RetriesOpt = 4,
    verify: VerifyOpt = False,
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    registry_config: RegistryConfigOpt = None,
    lock_wait: Annotated[str, typer.Option(
        "--lock-wait", metavar="DURATION",
        help="A layout destination: how long to wait for a conflicting lock (a sweep) before exit 75.")] = "0",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Copy one tag or digest (all platforms; with -r its referrers) between layouts (local, mounted,
    s3://) and registries; manifests go byte for byte, so digests are kept.

    The destination tag may differ (a rename); without one it is the source's.

    Exit 0 ok; 1 error; 2 usage; 4 --verify found a mismatch; 75 lock busy; 130 interrupted."""
    s = settings(ctx, quiet, verbose)
    with handle_errors("cp", json_out):
        from ocigc.transfer.migrate.execute import copy_reference
        from ocigc.transfer.migrate.model import MigrateOptions

        options = MigrateOptions(
            jobs=jobs, verify=verify, lock_wait=parse_duration(lock_wait, "--lock-wait"),
            registry=registry_options(plain_http=plain_http, insecure=insecure, retries=retries,
                                      registry_config=registry_config, username=username, password=password,
                                      password_stdin=password_stdin),
        )
        plan = copy_reference(source, dest, options, referrers=recursive, progress=s.progress(json_out))
        _render(plan, source, dest, json_out, s.quiet)


def _render(plan: object, source: str, dest: str, json_out: bool, quiet: bool) -> NoReturn:
    from ocigc.transfer.migrate.model import MigratePlan

    assert isinstance(plan, MigratePlan)
    code = exit_code(plan)
    rp = plan.repos[0] if plan.repos else None
    if json_out:
        data = plan.to_json(executed=True)
        tagged = [e for e in rp.entries if e.name is not None or not e.referrer] if rp else []
        data["copied"] = {
            "source": source, "destination": dest,
            "digest": str(tagged[0].digest) if tagged else None,
            "tag": tagged[0].name if tagged else None,
            "referrers": [str(e.digest) for e in rp.entries if e.referrer] if rp else [],
        }
        echo_json("cp", data, exit_code=code)
    elif not (quiet and code == 0) and rp is not None and rp.entries and code == 0:
        for line in render_copy(plan, source, dest):
            typer.echo(line)
    for problem in problems(plan):
        typer.echo(f"error: {problem}", err=True)
    raise typer.Exit(code)


def render_copy(plan: object, source: str, dest: str) -> list[str]:
    """What was copied: the digest, the referrers, manifests and blobs written or already there."""
    from ocigc.transfer.migrate.model import MigratePlan

    assert isinstance(plan, MigratePlan)
    rp = plan.repos[0]
    main = next((e for e in rp.entries if not e.referrer), rp.entries[0])
    st = plan.stats()
    lines = [f"copied {source} -> {dest}", f"  digest {main.digest}"]
    referrers = sum(1 for e in rp.entries if e.referrer)
    if referrers:
        lines.append(f"  referrers: {referrers}")
    lines.append(f"  manifests: {st['manifests_written']} written, {st['manifests_present']} already there")
    lines.append(f"  blobs: {st['blobs_uploaded']} copied ({human_bytes(st['bytes_uploaded'])}), "
                 f"{st['blobs_mounted']} mounted, {st['blobs_present']} already there")
    if plan.options.verify:
        lines.append(f"  verify: {st['verified']} checked, {len(plan.verify_errors)} mismatches")
    return lines


__all__ = ["cp_cmd", "render_copy"]
