"""Read-only commands: ls, tags, inspect, graph, check. They take no locks."""

from __future__ import annotations

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
from ocigc.cli.app import app
from ocigc.errors import EXIT_ERROR, EXIT_OK, LayoutError, OcigcError, ReferenceNotFound, printable, storage_error
from ocigc.oci.descriptor import DOCKER_LIST, DOCKER_MANIFEST, OCI_ARTIFACT, OCI_INDEX, OCI_MANIFEST
from ocigc.parallel import DEFAULT_JOBS

if TYPE_CHECKING:
    from ocigc.layout.layout import Layout
    from ocigc.layout.views import TreeNode

# The library is imported in the commands that use it (docs/performance.md, "Start-up").

JobsOpt = Annotated[int, typer.Option("--jobs", "-j", metavar="N", min=1, max=256,
                                      help="Storage operations in flight.")]


def layouts_under(path: str, jobs: int, read_only: bool = False) -> list[Layout]:
    """Digest-named symlinks are read through (the content verified against the name) when they lead
    within ``path``; ``read_only`` also when they lead to the same-named blob of another layout
    anywhere (nothing is deleted)."""
    from ocigc.layout.discover import open_layouts
    from ocigc.storage.open_storage import open_storage

    layouts = open_layouts(open_storage(path), jobs)
    if read_only:
        for lay in layouts:
            lay.follow_blob_links = True
    if not layouts:
        raise LayoutError(f"{path}: no OCI image layout found (no oci-layout file at any depth)")
    return layouts


def open_layout(path: str) -> Layout:
    """One layout for a read-only command: digest-named links are read through (verified)."""
    from ocigc.layout.layout import Layout
    from ocigc.storage.open_storage import open_storage

    layout = Layout.open(open_storage(path))
    layout.follow_blob_links = True
    return layout


@app.command("ls")
def ls_cmd(
    ctx: typer.Context,
    root: Annotated[str, typer.Argument(metavar="ROOT", help="A layout, or a directory holding layouts at any depth.")],
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """List every layout under ROOT: tags, manifests, blobs, bytes and unreachable bytes."""
    from ocigc.layout.views import summarize

    s = settings(ctx, quiet, verbose)
    with handle_errors("ls", json_out):
        rows, out, failed = [], [], False
        errors: list[str] = []
        for layout in layouts_under(root, jobs, read_only=True):
            try:
                try:
                    layout.check_oci_layout()
                    summ = summarize(layout, jobs, s.progress(json_out))
                except OSError as oe:
                    raise storage_error(oe, layout.where("")) from None
            except OcigcError as e:
                failed = True
                errors.append(str(e))
                out.append({"layout": layout.label, "location": layout.location, "error": str(e)})
                rows.append([layout.display, "-", "-", "-", "-", "error (below)"])
                continue
            out.append(summ.to_json())
            rows.append([layout.display, str(summ.tags), str(summ.manifests), str(summ.blobs),
                         human_bytes(summ.bytes), f"{human_bytes(summ.unreachable_bytes)} ({summ.unreachable_blobs})"])
        code = EXIT_ERROR if failed else EXIT_OK
        if json_out:
            echo_json("ls", {"path": root, "layouts": out}, exit_code=code)
        else:
            typer.echo(table(rows, ["LAYOUT", "TAGS", "MANIFESTS", "BLOBS", "SIZE", "UNREACHABLE"]))
        for message in errors:
            typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code)


#: Short names of the usual manifest media types, for the TYPE column of ``tags`` (``--wide``: in full).
SHORT_TYPES = {
    OCI_MANIFEST: "oci-manifest", OCI_INDEX: "oci-index", OCI_ARTIFACT: "oci-artifact",
    DOCKER_MANIFEST: "docker-v2", DOCKER_LIST: "docker-list",
}


@app.command("tags")
def tags_cmd(
    ctx: typer.Context,
    layout_path: Annotated[str, typer.Argument(metavar="LAYOUT", help="The layout directory.")],
    all_entries: Annotated[bool, typer.Option("--all", "-a", help="Also list untagged index.json entries.")] = False,
    names: Annotated[bool, typer.Option("--names", help="Tag names only, one per line (as 'oras repo tags').")]
    = False,
    json_out: JsonOpt = False,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """List the tags of a layout with their digests, types and sizes.

    Every entry listed can be named alone: LAYOUT:TAG, or LAYOUT::NAME for a ref name that is not a
    plain tag (a full reference such as localhost/app:v2, as podman and skopeo write); an untagged
    entry by LAYOUT@DIGEST."""
    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("tags", json_out):
        layout = open_layout(layout_path)
        index = layout.read_index()
        entries = [e for e in index.entries if all_entries or e.ref_name is not None]
        if json_out:
            echo_json("tags", {"path": layout.location, "tags": [
                {"tag": e.ref_name, "digest": e.digest, "media_type": e.media_type, "size": e.size,
                 **({"artifact_type": e.artifact_type} if e.artifact_type else {}),
                 **({"platform": e.platform} if e.platform else {})} for e in entries]})
            return
        if names:
            for e in entries:
                typer.echo(printable(e.ref_name) if e.ref_name is not None else f"@{e.digest}")
            return
        rows = [[s.short(printable(e.ref_name)) if e.ref_name is not None else "<untagged>", s.short(e.digest),
                 (e.media_type or "-") if s.wide else SHORT_TYPES.get(e.media_type or "", e.media_type or "-"),
                 str(e.size)] for e in entries]
        typer.echo(table(rows, ["TAG", "DIGEST", "TYPE", "SIZE"]))


@app.command("inspect")
def inspect_cmd(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="REF", help="LAYOUT, LAYOUT:TAG, LAYOUT::NAME or LAYOUT@DIGEST.")],
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    wide: WideOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Show the tree under a tag or digest: index -> manifests -> config/layers, and referrers."""
    from ocigc.digest import Digest
    from ocigc.layout.state import LayoutState
    from ocigc.layout.views import open_at, resolve, tree
    from ocigc.oci.refs import parse_reference

    s = settings(ctx, quiet, verbose, wide)
    with handle_errors("inspect", json_out):
        reference = parse_reference(ref)
        layout = open_at(reference, ref)
        layout.follow_blob_links = True
        state = LayoutState.load(layout, jobs, s.progress(json_out))
        listing = layout.list_blobs()
        present = listing.digests | {d for d in listing.symlinked  # a link to a file: present
                                     if (lt := layout.link_target(d)) is not None and lt.is_file()}
        digests: list[Digest] = []
        for e in resolve(state.index, reference):
            if e.digest not in digests:
                digests.append(e.digest)
        if reference.digest is not None and not digests:
            if reference.digest not in state.graph:
                raise ReferenceNotFound(f"{reference.path}: {reference.digest} is not in the layout's graph")
            digests = [reference.digest]
        trees = [tree(state.graph, d, present) for d in digests]
        if json_out:
            echo_json("inspect", {"path": layout.location, "reference": ref,
                                  "trees": [t.to_json() for t in trees]})
            return
        for t in trees:
            typer.echo("\n".join(_render_tree(t, s)))


def _render_tree(node: TreeNode, s: Settings, prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    tags = f" [{', '.join(printable(t) for t in node.tags)}]" if node.tags else ""
    flag = "" if node.present is not False else "  MISSING"
    flag += f"  ERROR: {node.error}" if node.error else ""
    edge = f"{node.edge} " if node.edge else ""
    media = f" {node.media_type or '-'}" if s.wide else ""
    label = s.short(f"{edge}{node.digest} {node.kind}{media} {human_bytes(node.size)}{tags}{flag}")
    lines = [label] if top else [f"{prefix}{'└── ' if last else '├── '}{label}"]
    child_prefix = "" if top else prefix + ("    " if last else "│   ")
    items = [*node.children, *node.referrers]
    for i, child in enumerate(items):
        lines.extend(_render_tree(child, s, child_prefix, i == len(items) - 1, top=False))
    return lines


class GraphFormat(StrEnum):
    json = "json"
    dot = "dot"
    graphml = "graphml"


@app.command("graph")
def graph_cmd(
    ctx: typer.Context,
    layout_path: Annotated[str, typer.Argument(metavar="LAYOUT", help="The layout directory.")],
    fmt: Annotated[GraphFormat, typer.Option("--format", "-f", metavar="json|dot|graphml",
                                             help="Output format.")] = GraphFormat.json,
    json_out: JsonOpt = False,
    jobs: JobsOpt = DEFAULT_JOBS,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Print the reference graph of a layout (JSON, Graphviz dot or GraphML)."""
    from ocigc.layout.state import LayoutState

    s = settings(ctx, quiet, verbose)
    with handle_errors("graph", json_out or fmt is GraphFormat.json):
        layout = open_layout(layout_path)
        state = LayoutState.load(layout, jobs, s.progress(True))
        if json_out or fmt is GraphFormat.json:
            echo_json("graph", {"path": layout.location, **state.graph.to_json()})
        elif fmt is GraphFormat.dot:
            typer.echo(state.graph.to_dot(), nl=False)
        else:
            typer.echo(state.graph.to_graphml(), nl=False)
