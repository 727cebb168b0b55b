"""Transfer commands: push, pull, tag. Push and tag take the shared lock; pull takes none."""

from __future__ import annotations

from contextlib import AbstractContextManager
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
    settings,
)
from ocigc.cli.app import app
from ocigc.cli.locking import LockWaitOpt, check_mounts, command_line, make_locker
from ocigc.duration import parse_duration
from ocigc.errors import UsageError
from ocigc.layout.layout import Layout
from ocigc.layout.views import open_at
from ocigc.lock.handle import LockHandle
from ocigc.oci.descriptor import ANNOTATION_TITLE
from ocigc.oci.refs import check_tag, parse_reference, reference_in
from ocigc.transfer.arguments import load_annotation_file, parse_annotation_flags
from ocigc.transfer.conventions import DEFAULT_PULL_CONCURRENCY, DEFAULT_PUSH_CONCURRENCY
from ocigc.transfer.push import push, tag
from ocigc.transfer.push_request import Locker, PushRequest


def _locker(s: Settings, lock_wait: str) -> Locker:
    """The shared lock with the waiting message the other writing commands print."""
    wait = parse_duration(lock_wait, "--lock-wait")
    shared = make_locker(s, wait, command_line())

    def locker(layout: Layout) -> AbstractContextManager[LockHandle]:
        return shared(layout, "shared")

    return locker


@app.command("push")
def push_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="PATH:TAG or PATH:TAG1,TAG2 (PATH alone: untagged).")],
    files: Annotated[list[str] | None, typer.Argument(
        metavar="FILE[:MEDIATYPE]...", help="Files or directories (packed as tar+gzip) to push.")] = None,
    artifact_type: Annotated[str | None, typer.Option(
        "--artifact-type", metavar="TYPE",
        help="artifactType of the manifest (default application/vnd.unknown.artifact.v1).")] = None,
    annotation: Annotated[list[str] | None, typer.Option(
        "--annotation", "-a", metavar="KEY=VALUE", help="Manifest annotation (repeatable).")] = None,
    annotation_file: Annotated[str | None, typer.Option(
        "--annotation-file", metavar="FILE",
        help="oras annotation file: {\"$manifest\": {...}, \"$config\": {...}, \"<file>\": {...}}.")] = None,
    config: Annotated[str | None, typer.Option(
        "--config", metavar="FILE[:MEDIATYPE]",
        help="Config blob (default type application/vnd.unknown.config.v1+json).")] = None,
    subject: Annotated[str | None, typer.Option(
        "--subject", metavar="REF", help="Attach to this manifest of the same layout (TAG, DIGEST, "
        "PATH:TAG); its whole closure must be present (exit 4 otherwise).")] = None,
    export_manifest: Annotated[str | None, typer.Option(
        "--export-manifest", metavar="FILE", help="Also write the pushed manifest to FILE.")] = None,
    disable_path_validation: Annotated[bool, typer.Option(
        "--disable-path-validation", help="Allow absolute paths and '..' in file names (their titles).")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", metavar="N", min=1, max=64, help="Blobs in flight.")] =
    DEFAULT_PUSH_CONCURRENCY,
    lock_wait: LockWaitOpt = "5m",
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Push files to a layout as an oras artifact (the layout is created when missing).

    Writes what `oras push --oci-layout` writes; exit 0 ok, 1 error, 2 usage, 3 lost race,
    4 integrity failure, 75 lock busy."""
    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("push", json_out):
        reference = parse_reference(ref)
        if reference.digest is not None:
            raise UsageError(f"{ref!r}: push takes PATH:TAG, not a digest")
        afile = load_annotation_file(annotation_file) if annotation_file else None
        req = PushRequest(
            layout_path=reference.path, tags=reference.tags, files=list(files or []),
            artifact_type=artifact_type, annotations=parse_annotation_flags(annotation or []),
            annotation_file=afile, config=config, subject=subject,
            disable_path_validation=disable_path_validation, concurrency=concurrency,
            locker=_locker(s, lock_wait),
        )
        if afile is not None and annotation:
            raise UsageError("--annotation and --annotation-file cannot both be given")
        check_mounts([reference.path], refuse=False)
        result = push(req, s.progress(json_out))
        if export_manifest:
            try:
                with open(export_manifest, "wb") as f:
                    f.write(result.manifest)
            except OSError as e:
                raise UsageError(f"{export_manifest}: cannot write the manifest: {e.strerror or e}") from None
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)
        if json_out:
            echo_json("push", result.to_json())
            return
        if not s.quiet:
            if not req.files:
                typer.echo("Uploading empty artifact", err=True)
            for b in result.blobs:
                title = b.descriptor.get("annotations", {}).get(ANNOTATION_TITLE) or b.label
                state = "Uploaded" if b.uploaded else "Exists  "
                typer.echo(s.short(f"{state}  {title}  {human_bytes(b.size)}  {b.descriptor['digest']}"), err=True)
        typer.echo(f"Pushed [oci-layout] {result.reference}")
        typer.echo(f"ArtifactType: {result.descriptor.get('artifactType', '')}")
        typer.echo(f"Digest: {result.digest}")


@app.command("pull")
def pull_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="PATH:TAG or PATH@DIGEST.")],
    output: Annotated[str, typer.Option("--output", "-o", metavar="DIR", help="Output directory.")] = ".",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace files that already exist.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", metavar="N", min=1, max=64, help="Files in flight.")] =
    DEFAULT_PULL_CONCURRENCY,
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Pull an artifact's titled files into DIR; directories are unpacked.

    Every blob is verified while it streams; titles or tar entries that would land outside DIR,
    links pointing out of it and device files are refused before anything is written. Exit 0 ok,
    1 error or refused artifact, 2 usage, 4 integrity failure (missing or corrupt blob)."""
    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("pull", json_out):
        reference = parse_reference(ref)
        layout = open_at(reference, ref)
        from ocigc.transfer.pull import pull  # only this command needs it

        result = pull(layout, reference, output, overwrite=overwrite, concurrency=concurrency,
                      progress=s.progress(json_out))
        if json_out:
            echo_json("pull", result.to_json())
            return
        if not s.quiet:
            for f in result.files:
                kind = "Unpacked  " if f.unpacked else "Downloaded"
                typer.echo(s.short(f"{kind}  {f.title}  {human_bytes(f.size)}  {f.digest}"), err=True)
            if result.skipped:
                typer.echo(f"Skipped {len(result.skipped)} layer(s) without {ANNOTATION_TITLE}", err=True)
            for fl in result.foreign:
                what = f"{fl['title']!r} " if fl["title"] else ""
                typer.echo(f"Skipped foreign layer {what}{fl['digest']}: not stored in the layout (fetch it from "
                           f"{', '.join(fl['urls'])})", err=True)
        typer.echo(f"Pulled [oci-layout] {ref}")
        typer.echo(f"Digest: {result.digest}")


@app.command("tag")
def tag_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="PATH:TAG, PATH::NAME or PATH@DIGEST of an existing "
                                       "manifest.")],
    new_tags: Annotated[list[str], typer.Argument(metavar="TAG...", help="Tags to add: TAG, or PATH:TAG of the "
                                                  "same layout (as oras tag).")],
    lock_wait: LockWaitOpt = "5m",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Add tags to an existing manifest (a tag already on another manifest moves).

    A tag is 1 to 128 of A-Z a-z 0-9 _ . - (not starting with . or -), the registries' grammar. The
    manifest's whole closure (nested manifests, config, layers) must be in the layout; otherwise
    nothing changes and the first missing blob is named (exit 4). Exit 0 ok, 1 error (no such tag
    or digest), 2 usage (a bad tag), 3 lost race, 4 incomplete closure, 75 lock busy."""
    s = settings(ctx, quiet, verbose)
    with handle_errors("tag", json_out):
        reference = parse_reference(ref)
        if reference.tag is None and reference.digest is None:
            raise UsageError(f"{ref!r}: give PATH:TAG, PATH::NAME or PATH@DIGEST")
        if reference.tag is not None and not reference.literal and "," in reference.tag:
            raise UsageError(f"{ref!r}: one source tag; the new tags follow as arguments")
        tags = [new_tag(text, reference.path) for text in new_tags]
        open_at(reference, ref)  # a path that is no layout: the error says how to address a full reference
        check_mounts([reference.path], refuse=False)
        result = tag(reference.path, reference, tags, locker=_locker(s, lock_wait))
        if json_out:
            echo_json("tag", {"path": result.layout, "reference": result.source, "digest": result.digest,
                              "tags": result.tags, "changed": result.changed})
            return
        for t in result.tags:
            typer.echo(f"Tagged {t}")
        typer.echo(f"Digest: {result.digest}")


def new_tag(text: str, layout_path: str) -> str:
    """A new tag as given to ``tag``: ``TAG``, or ``PATH:TAG`` naming the source's layout (oras accepts a
    full reference there too); checked against the registries' tag grammar (exit 2, nothing written)."""
    if ":" not in text and "@" not in text:
        return check_tag(text)
    ref = reference_in(text, layout_path)
    if ref is None:
        raise UsageError(f"{text!r}: a new tag goes on the manifest in {layout_path}; this names another layout")
    if ref.tag is None or ref.digest is not None:
        raise UsageError(f"{text!r}: give the new tag (TAG or {layout_path}:TAG), not a digest")
    return check_tag(ref.tag)
