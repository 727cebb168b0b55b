"""The reference graph of a layout, on networkx (the only module that imports it).

Nodes are digests. Node attributes (invariants):
  ``media_types``  every media type a descriptor or the blob itself gave this digest
  ``sizes``        every size a descriptor gave (-1: unknown, Docker schema 1)
  ``kind``         index | manifest | artifact | docker-schema1 | unknown-json when the blob was
                   parsed; else config | layer | blob | ref | subject from the edge that found it
  ``tags``         ref names of ``index.json`` entries with this digest
  ``root``         True when ``index.json`` lists the digest
  ``present``      False when a read found the blob missing; None when never read (blobs are
                   not stat-ed while building: the blob listing answers presence)
  ``foreign``      True when a descriptor gave the digest ``urls`` (a foreign layer: when it is
                   absent from ``blobs/`` it is fetched from there; not damage: see ``foreign()``)
  ``error``        why a blob that had to be parsed could not be (fail closed: its children
                   are unknown, so nothing may be deleted on its account)
Edges go parent -> child and carry ``kinds`` (a set: a blob can be both config and layer of one
manifest). A ``subject`` edge goes referrer -> subject and keeps nothing alive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ocigc.digest import Digest
from ocigc.errors import BlobTooLarge, ManifestError
from ocigc.layout.layout import MAX_MANIFEST_BYTES, Layout
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import KNOWN_LEAF_JSON, MANIFEST_TYPES, Descriptor, looks_like_json_type
from ocigc.oci.index import Index
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.progress import Counter, NullCounter

if TYPE_CHECKING:
    import networkx as nx


def _nx() -> ModuleType:
    """networkx, imported on first use: it takes about 0.2 s, which commands that build no graph
    (push, pull, tag, locks, doctor) do not pay."""
    import networkx

    return networkx


#: Nesting of indexes and manifests deeper than this is refused (hostile or broken input).
MAX_DEPTH = 32


def wants_read(desc: Descriptor, listed: bool = False) -> bool:
    """Whether a blob must be read to learn its children (media types tell; configs and layers don't).

    ``listed``: the descriptor is an ``index.json`` entry or in an index's ``manifests`` list, which
    name manifests whatever their media type says. Listed descriptors, unknown JSON types and
    descriptors without a media type are read whatever size they declare: a declared size is a
    claim, and one smaller (or larger) than the blob must not hide the blob's children. The read
    is capped at MAX_MANIFEST_BYTES (``_read_one`` compares what it read with the declared size).
    Known leaf types (configs, layers, empty) are not read (docs/design.md, "The graph")."""
    mt = desc.media_type
    if mt in MANIFEST_TYPES or listed:
        return True
    if mt in KNOWN_LEAF_JSON or desc.size < 0:  # size -1: a schema 1 blobSum, always a layer
        return False
    return looks_like_json_type(mt) or not mt


@dataclass(frozen=True, slots=True)
class _ReadResult:
    digest: Digest
    parsed: mf.Parsed | None
    present: bool
    error: str | None


class RefGraph:
    def __init__(self) -> None:
        self.g: nx.DiGraph = _nx().DiGraph()
        #: Digests that were read (or tried).
        self.read: set[Digest] = set()
        #: Blobs read and found present, by digest. Content-addressed blobs never change, so a
        #: later build of the same layout (the re-mark before deleting) reuses them unread.
        self.results: dict[Digest, _ReadResult] = {}

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, layout: Layout, index: Index, jobs: int = DEFAULT_JOBS,
              counter: Counter | None = None, known: RefGraph | None = None) -> RefGraph:
        """Walk from every ``index.json`` entry, reading manifests level by level in a pool.

        With ``known`` (an earlier graph of the same layout) only blobs it did not read are read."""
        graph = cls()
        cache = known.results if known is not None else {}
        counter = counter or NullCounter()
        level: dict[Digest, tuple[Descriptor, int]] = {}
        for entry in index.entries:
            graph._note(entry, kind=None)
            node = graph.g.nodes[entry.digest]
            node["root"] = True
            if entry.ref_name is not None:
                node["tags"].add(entry.ref_name)
            if wants_read(entry, listed=True):
                level.setdefault(entry.digest, (entry, 0))
        while level:
            todo = [(d, desc, depth) for d, (desc, depth) in level.items() if d not in graph.read]
            graph.read.update(d for d, _, _ in todo)
            counter.set_total(len(graph.read))
            results = pmap(lambda t: cache.get(t[0]) or _read_one(layout, t[1], t[2]), todo, jobs,
                           on_done=counter.add)
            level = {}
            for (_, _, depth), res in zip(todo, results, strict=True):
                for child, cdepth in graph._record(res, depth, layout.where(res.digest.blob_path())):
                    if child.digest not in graph.read and child.digest not in level:
                        level[child.digest] = (child, cdepth)
        counter.close()
        return graph

    def _note(self, desc: Descriptor, kind: str | None) -> None:
        g = self.g
        if desc.digest not in g:
            g.add_node(desc.digest, media_types=set(), sizes=set(), kind=kind, tags=set(), root=False,
                       present=None, error=None, foreign=False)
        node = g.nodes[desc.digest]
        if desc.urls:
            node["foreign"] = True
        if desc.media_type:
            node["media_types"].add(desc.media_type)
        node["sizes"].add(desc.size)
        if node["kind"] is None and kind is not None:
            node["kind"] = kind

    def _record(self, res: _ReadResult, depth: int, where: str = "") -> list[tuple[Descriptor, int]]:
        node = self.g.nodes[res.digest]
        node["present"] = res.present
        if res.present and not res.error:
            self.results[res.digest] = res
        if res.error:
            node["error"] = res.error
        if res.parsed is None:
            return []
        p = res.parsed
        if p.kind != mf.KIND_UNKNOWN_JSON or p.children or p.subject or node["kind"] is None:
            node["kind"] = p.kind
        if p.media_type:
            node["media_types"].add(p.media_type)
        node["artifact_type"] = p.artifact_type
        node["annotations"] = p.annotations
        if p.declared_mismatch:
            node["mismatch"] = p.declared_mismatch
        follow: list[tuple[Descriptor, int]] = []
        for kind, child in p.children:
            self._note(child, kind)
            self._edge(res.digest, child.digest, kind)
            if wants_read(child, listed=kind == mf.CHILD):
                if depth + 1 > MAX_DEPTH:
                    node["error"] = f"{where or res.digest}: nesting deeper than {MAX_DEPTH} levels (refused)"
                    continue
                follow.append((child, depth + 1))
        if p.subject is not None:
            self._note(p.subject, mf.SUBJECT)
            self._edge(res.digest, p.subject.digest, mf.SUBJECT)
        return follow

    def _edge(self, parent: Digest, child: Digest, kind: str) -> None:
        if self.g.has_edge(parent, child):
            self.g.edges[parent, child]["kinds"].add(kind)
        else:
            self.g.add_edge(parent, child, kinds={kind})

    # --- questions ---------------------------------------------------------------------------
    def complete(self) -> bool:
        """Every blob the walk read was present and parsed (nothing missing or broken to re-read)."""
        return len(self.results) == len(self.read)

    def __contains__(self, digest: object) -> bool:
        return digest in self.g

    def node(self, digest: str) -> dict[str, Any]:
        return dict(self.g.nodes[digest])

    def nodes(self) -> list[Digest]:
        return list(self.g.nodes)

    def roots(self) -> set[Digest]:
        return {d for d, a in self.g.nodes(data=True) if a["root"]}

    def children(self, digest: str, include_subject: bool = False) -> list[tuple[Digest, set[str]]]:
        out = []
        for _, child, data in self.g.out_edges(digest, data=True):
            kinds = data["kinds"]
            if include_subject or kinds - {mf.SUBJECT}:
                out.append((child, kinds))
        return out

    def reachable(self, roots: Iterable[str]) -> set[Digest]:
        """The roots and everything they keep alive (subject edges excluded)."""
        seen: set[Digest] = set()
        stack = [Digest(r) for r in roots if r in self.g]
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            for _, child, data in self.g.out_edges(d, data=True):
                if child not in seen and data["kinds"] - {mf.SUBJECT}:
                    stack.append(child)
        return seen

    def referrers(self, digest: str) -> list[Digest]:
        """Manifests whose ``subject`` is ``digest``."""
        if digest not in self.g:
            return []
        return [p for p, _, data in self.g.in_edges(digest, data=True) if mf.SUBJECT in data["kinds"]]

    def parents(self, digest: str) -> list[tuple[Digest, set[str]]]:
        """Nodes holding a non-subject edge to ``digest``."""
        if digest not in self.g:
            return []
        return [(p, data["kinds"]) for p, _, data in self.g.in_edges(digest, data=True)
                if data["kinds"] - {mf.SUBJECT}]

    def errors(self, among: Iterable[str] | None = None) -> dict[Digest, str]:
        """Blobs that had to be parsed and could not be, or were missing when read."""
        pool = self.g.nodes if among is None else [d for d in among if d in self.g]
        out: dict[Digest, str] = {}
        for d in pool:
            node = self.g.nodes[d]
            if node["error"]:
                out[Digest(d)] = node["error"]
        return out

    def missing_manifests(self, among: Iterable[str]) -> set[Digest]:
        return {Digest(d) for d in among if d in self.g and self.g.nodes[d]["present"] is False}

    def foreign(self, among: Iterable[str]) -> set[Digest]:
        """Blobs among ``among`` that a descriptor lists with ``urls`` and that only manifests list as a
        layer or artifact blob (foreign layers: never a root, an index child, a config or a manifest):
        absent from ``blobs/``, they are fetched from those URLs, so their absence is not damage."""
        out: set[Digest] = set()
        for d in among:
            if d not in self.g or not self.g.nodes[d]["foreign"] or self.g.nodes[d]["root"] or self.is_manifest(d):
                continue
            kinds = {k for _, kk in self.parents(d) for k in kk} - {mf.SUBJECT}
            if kinds and kinds <= {mf.LAYER, mf.BLOB}:
                out.add(Digest(d))
        return out

    def is_manifest(self, digest: str) -> bool:
        node = self.g.nodes[digest]
        return node["kind"] in (mf.KIND_INDEX, mf.KIND_MANIFEST, mf.KIND_ARTIFACT, mf.KIND_SCHEMA1,
                                mf.KIND_UNKNOWN_JSON) or bool(node["media_types"] & MANIFEST_TYPES)

    def topo_parents_first(self, digests: Iterable[str]) -> list[Digest]:
        """``digests`` ordered so that every parent comes before its children (manifests top-down);
        ties by digest, so that a plan prints the same on every run."""
        wanted = set(digests)
        sub = self.g.subgraph(wanted)
        nx = _nx()
        try:
            order = list(nx.lexicographical_topological_sort(sub))
        except nx.NetworkXUnfeasible:  # a cycle (only possible with hash collisions): any order
            order = sorted(wanted)
        return [Digest(d) for d in order]

    # --- export ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        nodes = []
        for d, a in sorted(self.g.nodes(data=True)):
            nodes.append({
                "digest": d, "kind": a["kind"] or "unknown", "media_types": sorted(a["media_types"]),
                "sizes": sorted(a["sizes"]), "tags": sorted(a["tags"]), "root": a["root"],
                "present": a["present"], "error": a["error"],
            })
        edges = [{"from": u, "to": v, "kinds": sorted(data["kinds"])}
                 for u, v, data in sorted(self.g.edges(data=True))]
        return {"nodes": nodes, "edges": edges}

    def to_dot(self) -> str:
        lines = ["digraph ocigc {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
        for d, a in sorted(self.g.nodes(data=True)):
            label = f"{Digest(d).short}\\n{a['kind'] or 'unknown'}"
            if a["tags"]:
                label += "\\n" + ", ".join(sorted(a["tags"])).replace('"', "'")
            style = ', style="bold"' if a["root"] else ""
            lines.append(f'  "{d}" [label="{label}"{style}];')
        for u, v, data in sorted(self.g.edges(data=True)):
            dashed = ', style="dashed"' if mf.SUBJECT in data["kinds"] else ""
            lines.append(f'  "{u}" -> "{v}" [label="{",".join(sorted(data["kinds"]))}"{dashed}];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_graphml(self) -> str:
        nx = _nx()
        flat = nx.DiGraph()
        for d, a in self.g.nodes(data=True):
            flat.add_node(d, kind=a["kind"] or "unknown", media_types=",".join(sorted(a["media_types"])),
                          sizes=",".join(str(s) for s in sorted(a["sizes"])), tags=",".join(sorted(a["tags"])),
                          root=bool(a["root"]), present="" if a["present"] is None else str(a["present"]).lower(),
                          error=a["error"] or "")
        for u, v, data in self.g.edges(data=True):
            flat.add_edge(u, v, kinds=",".join(sorted(data["kinds"])))
        return "\n".join(nx.generate_graphml(flat)) + "\n"


def _read_one(layout: Layout, desc: Descriptor, depth: int) -> _ReadResult:
    where = layout.where(desc.digest.blob_path())
    declared_manifest = desc.media_type in MANIFEST_TYPES
    try:
        raw = layout.read_blob(desc.digest)
    except FileNotFoundError:
        err = f"{where}: referenced manifest is missing" if declared_manifest else None
        return _ReadResult(desc.digest, None, False, err)
    except BlobTooLarge as e:
        if not declared_manifest and desc.size > MAX_MANIFEST_BYTES:
            return _ReadResult(desc.digest, None, True, None)  # a large blob that says it is large: a leaf
        if declared_manifest:
            return _ReadResult(desc.digest, None, True, str(e))
        return _ReadResult(desc.digest, None, True, f"{e}, its descriptor says {desc.size} "
                           "(size mismatch: its children cannot be known; refused)")
    except ManifestError as e:
        return _ReadResult(desc.digest, None, True, str(e))
    except OSError as e:
        return _ReadResult(desc.digest, None, True, f"{where}: cannot read ({e.strerror or e})")
    # A declared size that differs from the blob hides nothing here: the whole blob was read (not
    # ``desc.size`` bytes of it) and every reading of it is followed; ``check`` reports the mismatch.
    try:
        parsed = mf.parse(raw, desc.media_type or None, where)
    except mf.NotJSON as e:
        if declared_manifest or raw.lstrip()[:1] in (b"{", b"["):
            # Claimed to be a manifest, or JSON-looking bytes that do not parse (truncated): fail closed.
            return _ReadResult(desc.digest, None, True, str(e))
        return _ReadResult(desc.digest, None, True, None)  # not JSON at all: a leaf (check reports a size mismatch)
    except ManifestError as e:
        return _ReadResult(desc.digest, None, True, str(e))
    return _ReadResult(desc.digest, parsed, True, None)
