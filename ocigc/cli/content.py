"""The verbs of oras users: ``attach``, ``discover``, ``manifest fetch|delete``, ``blob fetch|delete``.

Each parses, calls one core function (``ocigc.transfer.attach``, ``ocigc.transfer.content``, the
delete engine of ``ocigc.cli.maintain``) and renders. The core and the registry client are imported
inside the commands: ``ocigc manifest fetch`` of a layout loads neither oras-py nor requests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

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
    settings,
    table,
)
from ocigc.cli._registry import (
    InsecureOpt,
    PasswordOpt,
    PasswordStdinOpt,
    PlainHttpOpt,
    RegistryConfigOpt,
    UsernameOpt,
    registry_options,
)
from ocigc.cli.app import OcigcTyper, app
from ocigc.cli.locking import AllowUnsafeMountOpt, LockWaitOpt, check_mounts, command_line, make_locker
from ocigc.duration import parse_duration
from ocigc.errors import UsageError, printable

if TYPE_CHECKING:
    from ocigc.layout.layout import Layout
    from ocigc.lock.handle import LockHandle
    from ocigc.transfer.content import ReferrerNode
    from ocigc.transfer.registry_model import RegistryOptions

REF_HELP = "LAYOUT:TAG, LAYOUT@DIGEST or LAYOUT::NAME (local, mounted or s3://), or HOST[:PORT]/REPO:TAG|@DIGEST."


def _registry_options(plain_http: bool | None, insecure: bool, registry_config: str | None, username: str | None,
                      password: str | None, password_stdin: bool) -> RegistryOptions:
    """A registry REF's transport and credentials, as migrate and cp take them (``cli/_registry.py``)."""
    from ocigc.transfer.registry_model import RegistryOptions

    return registry_options(plain_http=plain_http, insecure=insecure, retries=RegistryOptions.retries,
                            registry_config=registry_config, username=username, password=password,
                            password_stdin=password_stdin)


def _annotated(name: str, kind: str) -> str:
    """oras' annotated reference: ``[oci-layout] PATH@DIGEST`` or ``HOST/REPO@DIGEST``."""
    return f"[oci-layout] {name}" if kind == "oci-layout" else name


# --- attach ---------------------------------------------------------------------------------------
@app.command("attach")
def attach_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="The subject: " + REF_HELP)],
    files: Annotated[list[str] | None, typer.Argument(
        metavar="FILE[:MEDIATYPE]...", help="Files or directories (packed as tar+gzip) to attach.")] = None,
    artifact_type: Annotated[str, typer.Option(
        "--artifact-type", metavar="TYPE", help="artifactType of the referrer (required, as in oras).")] = "",
    annotation: Annotated[list[str] | None, typer.Option(
        "--annotation", "-a", metavar="KEY=VALUE", help="Manifest annotation (repeatable).")] = None,
    annotation_file: Annotated[str | None, typer.Option(
        "--annotation-file", metavar="FILE",
        help="oras annotation file: {\"$manifest\": {...}, \"$config\": {...}, \"<file>\": {...}}.")] = None,
    disable_path_validation: Annotated[bool, typer.Option(
        "--disable-path-validation", help="Allow absolute paths and '..' in file names (their titles).")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", metavar="N", min=1, max=64, help="Blobs in flight.")]
    = 5,
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    registry_config: RegistryConfigOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    lock_wait: LockWaitOpt = "5m",
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Attach files to a manifest as a referrer (its subject), as oras attach writes it.

    On a layout: an untagged entry, under the shared lock push takes. On a registry: the referrers
    API, or the <alg>-<hex> fallback tag when the registry has none (as migrate keeps it). Exit 0 ok,
    1 error (no such subject), 2 usage, 3 lost race, 4 incomplete subject, 75 lock busy."""
    from ocigc.transfer.arguments import load_annotation_file, parse_annotation_flags
    from ocigc.transfer.attach import AttachRequest, attach
    from ocigc.transfer.target import RegistryRef, parse_target

    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("attach", json_out):
        target = parse_target(ref)
        if annotation_file and annotation:
            raise UsageError("--annotation and --annotation-file cannot both be given")
        if not isinstance(target, RegistryRef):
            check_mounts([target.path], refuse=False)
        req = AttachRequest(
            target=target, artifact_type=artifact_type, files=list(files or []),
            annotations=parse_annotation_flags(annotation or []),
            annotation_file=load_annotation_file(annotation_file) if annotation_file else None,
            disable_path_validation=disable_path_validation, concurrency=concurrency,
            locker=_shared_locker(s, lock_wait), registry=_registry_options(plain_http, insecure, registry_config,
                                  username, password, password_stdin))
        result = attach(req, s.progress(json_out))
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)
        if json_out:
            echo_json("attach", result.to_json())
            return
        if not s.quiet:
            for b in result.blobs[:-1]:
                title = b.descriptor.get("annotations", {}).get("org.opencontainers.image.title") or b.label
                state = "Uploaded" if b.uploaded else "Exists  "
                typer.echo(s.short(f"{state}  {title}  {human_bytes(b.size)}  {b.descriptor['digest']}"), err=True)
        typer.echo(s.short(f"Attached to {_annotated(result.name, result.kind)}@{result.subject['digest']}"))
        typer.echo(f"Digest: {result.digest}")


def _shared_locker(s: Settings, lock_wait: str) -> Callable[[Layout], AbstractContextManager[LockHandle]]:
    shared = make_locker(s, parse_duration(lock_wait, "--lock-wait"), command_line())

    def locker(layout: Layout) -> AbstractContextManager[LockHandle]:
        return shared(layout, "shared")

    return locker


# --- discover -------------------------------------------------------------------------------------
class DiscoverFormat(StrEnum):
    tree = "tree"
    json = "json"
    table = "table"


@app.command("discover")
def discover_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="The subject: " + REF_HELP)],
    artifact_type: Annotated[str | None, typer.Option(
        "--artifact-type", metavar="TYPE", help="Only referrers of this artifactType (at every level).")] = None,
    fmt: Annotated[DiscoverFormat, typer.Option("--format", metavar="tree|json|table",
                                                help="Output format (as oras discover).")] = DiscoverFormat.tree,
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    registry_config: RegistryConfigOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """List the referrers of a manifest, and theirs, recursively (as oras discover).

    The tree shows each referrer as its artifactType and digest (-v adds its annotations); the
    table one row per referrer with its subject; JSON the subject's descriptor with "ref" and
    "referrers", each referrer the same shape (docs/cli.md). Takes no lock."""
    from ocigc.transfer.content import discover
    from ocigc.transfer.target import parse_target

    s = settings(ctx, quiet, verbose, wide)
    as_json = json_out or fmt is DiscoverFormat.json
    with handle_errors("discover", as_json):
        root = discover(parse_target(ref), artifact_type, _registry_options(plain_http, insecure, registry_config,
                              username, password, password_stdin))
        if as_json:
            echo_json("discover", root.to_json())
        elif fmt is DiscoverFormat.table:
            rows = [[s.short(r.digest), r.artifact_type or "<unknown>", str(r.descriptor["size"]), s.short(subj.digest)]
                    for _, r, subj in root.walk()]
            typer.echo(table(rows, ["DIGEST", "ARTIFACT TYPE", "SIZE", "SUBJECT"]))
        else:
            typer.echo("\n".join(s.short(line) for line in _discover_tree(root, s)))


def _discover_tree(root: ReferrerNode, s: Settings) -> list[str]:
    """oras' tree: the subject ``NAME@DIGEST``, under it each referrer's artifactType, under that its
    digest, and under the digest its referrers (and with -v its annotations, ``key: value``)."""
    lines = [f"{printable(root.name)}@{root.digest}"]

    def add(node: ReferrerNode, prefix: str) -> None:
        items = node.referrers
        for i, r in enumerate(items):
            last = i == len(items) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{r.artifact_type or '<unknown>'}")
            inner = prefix + ("    " if last else "│   ")
            lines.append(f"{inner}└── {r.digest}")
            below = inner + "    "
            notes = [f"{k}: {v}" for k, v in sorted((r.descriptor.get("annotations") or {}).items())] \
                if s.verbose else []
            for j, note in enumerate(notes):
                end = j == len(notes) - 1 and not r.referrers
                lines.append(f"{below}{'└── ' if end else '├── '}{printable(note)}")
            add(r, below)

    add(root, "")
    return lines


# --- manifest -------------------------------------------------------------------------------------
manifest_app = OcigcTyper(help="Fetch or delete one manifest (as oras manifest fetch|delete).", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("fetch")
def manifest_fetch_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help=REF_HELP)],
    descriptor: Annotated[bool, typer.Option("--descriptor", help="Print the manifest's descriptor (mediaType, "
                                             "digest, size) instead of the manifest.")] = False,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON printed.")] = False,
    output: Annotated[str | None, typer.Option("--output", "-o", metavar="FILE",
                                               help="Write the manifest to FILE ('-': stdout).")] = None,
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    registry_config: RegistryConfigOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Print a manifest byte for byte (or its descriptor), as oras manifest fetch.

    The bytes are verified against the digest. Exit 0 ok, 1 error (no such tag or digest),
    2 usage, 4 integrity failure (missing or corrupt manifest). Takes no lock."""
    import json

    from ocigc.transfer.content import fetch_manifest
    from ocigc.transfer.target import parse_target

    settings(ctx, quiet, verbose)
    with handle_errors("manifest fetch", json_out):
        fetched = fetch_manifest(parse_target(ref), _registry_options(plain_http, insecure, registry_config,
                              username, password, password_stdin))
        if output is not None and output != "-":
            _write_file(output, fetched.raw)
        if json_out:
            echo_json("manifest fetch", fetched.to_json())
            return
        if descriptor:
            doc = fetched.descriptor_bytes()
        elif output is not None and output != "-":
            return
        else:
            doc = fetched.raw
        if pretty:
            doc = (json.dumps(json.loads(doc), indent=2, ensure_ascii=False) + "\n").encode()
        _stdout(doc)


def _write_file(path: str, data: bytes) -> None:
    from ocigc.errors import naming

    with naming(path), open(path, "wb") as f:
        f.write(data)


def _stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@manifest_app.command("delete")
def manifest_delete_cmd(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(metavar="REF...", help="LAYOUT:TAG, LAYOUT@DIGEST or LAYOUT::NAME; "
                                              "or one HOST[:PORT]/REPO:TAG|@DIGEST.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", "--force", "-f", help="Do not ask for confirmation (oras' "
                                      "--force; required when stdin is not a terminal).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Print the plan; change nothing at all.")] = False,
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    registry_config: RegistryConfigOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    lock_wait: LockWaitOpt = "0",
    allow_unsafe_mount: AllowUnsafeMountOpt = False,
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Delete manifests as 'ocigc delete' does (its plan, locks and cascade), with oras' prompt rules.

    -f/--force, as in oras, only skips the question; without a terminal and without it nothing is
    deleted (exit 2). On a registry: DELETE by digest (its tags go with it), as oras. Exit codes as
    delete."""
    from ocigc.cli.maintain import run_delete
    from ocigc.transfer.target import RegistryRef, parse_target

    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("manifest delete", json_out):
        targets = [parse_target(r) for r in refs]
        remote = [t for t in targets if isinstance(t, RegistryRef)]
        if remote and len(targets) > 1:
            raise UsageError("a registry manifest is deleted alone: give one REF")
    if remote:
        _delete_registry_manifest(s, remote[0], yes, dry_run, _registry_options(plain_http, insecure, registry_config,
                              username, password, password_stdin), json_out)
        return
    run_delete("manifest delete", s, refs, dry_run=dry_run, yes=yes, yes_flags="--yes (or -f)", lock_wait=lock_wait,
               json_out=json_out, allow_unsafe_mount=allow_unsafe_mount)


def _delete_registry_manifest(s: Settings, ref: object, yes: bool, dry_run: bool, options: RegistryOptions,
                              json_out: bool) -> None:
    from ocigc.cli.maintain import require_consent
    from ocigc.transfer.content import delete_registry_manifest, resolve_registry_manifest
    from ocigc.transfer.target import RegistryRef

    assert isinstance(ref, RegistryRef)
    with handle_errors("manifest delete", json_out):
        require_consent(yes, dry_run, "--yes (or -f)")
        found = resolve_registry_manifest(ref, options)
        if dry_run:
            if json_out:
                echo_json("manifest delete", {**found.to_json(), "dry_run": True, "deleted": False})
            else:
                typer.echo(s.short(f"Would delete {ref.name}@{found.digest} and all tags associated with it"))
            return
        if not yes and not typer.confirm(f"Are you sure you want to delete the manifest {found.digest!s} and all "
                                         "tags associated with it?", default=False, err=True):
            typer.echo("declined: nothing changed", err=True)
            return
        fallback = delete_registry_manifest(found, options)
        if json_out:
            echo_json("manifest delete", {**found.to_json(), "dry_run": False, "deleted": True,
                                          "referrers_tag_updated": fallback})
            return
        typer.echo(s.short(f"Deleted {ref}"))


# --- blob -----------------------------------------------------------------------------------------
blob_app = OcigcTyper(help="Fetch or delete one blob (as oras blob fetch|delete).", no_args_is_help=True)
app.add_typer(blob_app, name="blob")


@blob_app.command("fetch")
def blob_fetch_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="LAYOUT@DIGEST or HOST[:PORT]/REPO@DIGEST.")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="Where to write the blob ('-': "
                                        "stdout).")] = "",
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    registry_config: RegistryConfigOpt = None,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Write a blob to FILE, its digest verified while it streams (as oras blob fetch).

    FILE appears only once the digest and size are right; with '-' the bytes go to stdout as they
    come and a mismatch is reported at the end (exit 4). Exit 0 ok, 1 error (no such blob),
    2 usage, 4 integrity failure. Takes no lock."""
    from ocigc.transfer.content import fetch_blob
    from ocigc.transfer.target import parse_target

    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("blob fetch", json_out):
        if not output:
            raise UsageError("give --output FILE (or '-o -' for stdout)")
        if output == "-" and json_out:
            raise UsageError("--json prints a document on stdout: give --output FILE")
        target = parse_target(ref)
        options = _registry_options(plain_http, insecure, registry_config, username, password, password_stdin)
        if output == "-":
            sys.stdout.flush()
            result = fetch_blob(target, None, sys.stdout.buffer.write, options)
            sys.stdout.buffer.flush()
            return
        result = fetch_blob(target, output, options=options)
        if json_out:
            echo_json("blob fetch", result.to_json())
        elif not s.quiet:
            typer.echo(s.short(f"Downloaded {printable(result.output)}  {human_bytes(result.size)}  {result.digest}"),
                       err=True)


@blob_app.command("delete")
def blob_delete_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="LAYOUT@DIGEST (local, mounted or s3://).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (required when stdin is "
                                      "not a terminal).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete the blob even though a reachable manifest "
                                        "references it: that reference then dangles (check: exit 4).")] = False,
    lock_wait: LockWaitOpt = "0",
    allow_unsafe_mount: AllowUnsafeMountOpt = False,
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Delete one blob that nothing reachable references (as oras blob delete, which has no such check).

    Refused, nothing removed, when a manifest or index that index.json reaches references it
    (exit 1; 'ocigc sweep' removes what nothing references). --force deletes it anyway and
    leaves a dangling reference: only for a blob that must go whatever breaks. Takes the locks of
    delete. Exit 0 ok, 1 error or refused, 2 usage, 75 lock busy."""
    from ocigc.cli.maintain import require_consent
    from ocigc.gc.run import Locker
    from ocigc.oci.refs import parse_reference
    from ocigc.transfer.content import delete_blob

    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("blob delete", json_out):
        reference = parse_reference(ref)
        if reference.digest is None:
            raise UsageError(f"{ref!r}: a blob is named by digest (LAYOUT@DIGEST)")
        require_consent(yes)
        check_mounts([reference.path], refuse=not allow_unsafe_mount)
        if not yes and not typer.confirm(f"Are you sure you want to delete the blob {reference.digest!s}?",
                                         default=False, err=True):
            typer.echo("declined: nothing changed", err=True)
            return
        locker: Locker = make_locker(s, parse_duration(lock_wait, "--lock-wait"), command_line())
        result = delete_blob(reference, locker, force=force)
        if json_out:
            echo_json("blob delete", result.to_json())
            return
        if result.dangling_in:
            typer.echo(f"warning: {len(result.dangling_in)} reachable manifest(s) now reference a missing blob, "
                       f"first {result.dangling_in[0]} ('ocigc check' reports it, exit 4)", err=True)
        what = "Deleted" if result.deleted else "Missing"
        typer.echo(s.short(f"{what} [oci-layout] {printable(reference.path)}@{result.digest}"))
