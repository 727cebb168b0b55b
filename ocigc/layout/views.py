"""Read-only views of a layout for the read commands: summaries (``ls``), tag and digest
resolution, trees (``inspect``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import LayoutError, OcigcError, ReferenceNotFound, printable
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import OCI_LAYOUT_FILE, Layout
from ocigc.layout.state import LayoutState, stat_blobs
from ocigc.oci.descriptor import Descriptor
from ocigc.oci.index import Index
from ocigc.oci.refs import Reference, address, colon_splits, no_such_tag
from ocigc.parallel import DEFAULT_JOBS
from ocigc.progress import Progress
from ocigc.storage.open_storage import open_storage


@dataclass
class LayoutSummary:
    layout: str
    location: str
    tags: int = 0
    entries: int = 0
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    unreachable_blobs: int = 0
    unreachable_bytes: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(layout: Layout, jobs: int = DEFAULT_JOBS, progress: Progress | None = None) -> LayoutSummary:
    state = LayoutState.load(layout, jobs, progress)
    listing = layout.list_blobs()
    stats = stat_blobs(layout, listing.digests, jobs, progress, listing.stats)
    reachable = state.reachable()
    out = LayoutSummary(layout.label, layout.location)
    out.tags = len(state.index.tags())
    out.entries = len(state.index.entries)
    out.manifests = sum(1 for d in state.graph.read if state.graph.node(d)["present"] is not False
                        and state.graph.is_manifest(d))
    for d, st in stats.items():
        if st is None:
            continue
        out.blobs += 1
        out.bytes += st.size
        if d not in reachable:
            out.unreachable_blobs += 1
            out.unreachable_bytes += st.size
    return out


def resolve(index: Index, ref: Reference) -> list[Descriptor]:
    """The ``index.json`` entries a reference names (a digest may not be an entry: then its own)."""
    if ref.digest is not None:
        found = [e for e in index.entries if e.digest == ref.digest]
        return found
    if ref.tag is None:
        return list(index.entries)
    tags = index.tags()
    if ref.tag in tags:
        return tags[ref.tag]
    raise no_such_tag(ref, tags)


def open_at(ref: Reference, text: str | None = None) -> Layout:
    """The layout a reference names (validated). When its path is no layout but ``text`` reads as
    ``LAYOUT:NAME`` with a layout there and NAME a full reference (``L:localhost/app:v2``, read by
    the grammar as layout ``L:localhost/app``), the error says how to address that entry."""
    try:
        return Layout.open(open_storage(ref.path))
    except LayoutError as e:
        if ref.literal or text is None:
            raise
        for path, name in colon_splits(text):
            if path == ref.path:
                continue
            try:
                there = open_storage(path).stat(OCI_LAYOUT_FILE) is not None
            except (OSError, OcigcError):
                there = False
            if there:
                raise ReferenceNotFound(f"{e}; {printable(path)} is a layout: its entry {name!r} is "
                                        f"{printable(address(path, name))}") from None
        raise


@dataclass
class TreeNode:
    digest: Digest
    kind: str
    media_type: str
    size: int
    edge: str | None = None
    tags: list[str] = field(default_factory=list)
    present: bool | None = None
    error: str | None = None
    children: list[TreeNode] = field(default_factory=list)
    referrers: list[TreeNode] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest, "kind": self.kind, "media_type": self.media_type, "size": self.size,
            "edge": self.edge, "tags": self.tags, "present": self.present, "error": self.error,
            "children": [c.to_json() for c in self.children],
            "referrers": [r.to_json() for r in self.referrers],
        }


def tree(graph: RefGraph, digest: Digest, present: set[Digest] | None = None, edge: str | None = None,
         _seen: frozenset[Digest] = frozenset()) -> TreeNode:
    """The tree under ``digest``: children by edge kind, then referrers (themselves trees)."""
    a = graph.node(digest)
    node = TreeNode(
        digest=digest, kind=a["kind"] or "unknown", media_type=",".join(sorted(a["media_types"])) or "",
        size=max(a["sizes"]) if a["sizes"] else -1, edge=edge, tags=sorted(a["tags"]),
        present=(digest in present) if present is not None else a["present"], error=a["error"],
    )
    if digest in _seen:
        return node
    seen = _seen | {digest}
    for child, kinds in graph.children(digest):
        node.children.append(tree(graph, child, present, ",".join(sorted(kinds - {"subject"})), seen))
    for ref in sorted(graph.referrers(digest)):
        node.referrers.append(tree(graph, ref, present, "referrer", seen))
    return node
