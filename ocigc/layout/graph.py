"""The reference graph of a layout: adjacency dicts of digests (networkx only exports GraphML).

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

The graph is plain dicts: a node is a dict of the attributes above, edges are ``children[parent][child]
= kinds`` with each distinct set of kinds one shared frozenset, and the parents of a node are derived
from them on first use. A graph of 100,000 blobs holds no object per edge and no networkx views.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import BlobTooLarge, ManifestError
from ocigc.layout.layout import MAX_MANIFEST_BYTES, Layout
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import KNOWN_LEAF_JSON, MANIFEST_TYPES, Descriptor, looks_like_json_type
from ocigc.oci.index import Index
from ocigc.parallel import DEFAULT_JOBS, Workers
from ocigc.progress import Counter, NullCounter
from ocigc.storage.base import SizesObjects


def _nx() -> ModuleType:
    """networkx, imported for a GraphML export only (``ocigc graph -f graphml``): it takes about 0.2 s."""
    import networkx

    return networkx


Kinds = frozenset[str]
#: Every distinct set of edge kinds, shared by the edges that have it (most edges: one kind).
_KINDS: dict[Kinds, Kinds] = {}


def _kinds(kinds: Kinds) -> Kinds:
    return _KINDS.setdefault(kinds, kinds)


#: The ``tags`` of a node without tags (most nodes): one shared empty set, replaced on the first tag.
_NO_TAGS: frozenset[str] = frozenset()


#: The kinds of an edge of one kind, by that kind.
_ONE_KIND: dict[str, Kinds] = {k: _kinds(frozenset((k,))) for k in mf.EDGE_KINDS}
#: The kinds of an edge that is only a referrer's ``subject`` (keeps nothing alive).
_SUBJECT_ONLY: Kinds = _ONE_KIND[mf.SUBJECT]

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
    return _json_type(mt) or not mt


#: ``looks_like_json_type`` of the few media types a layout uses, each worked out once.
_json_type = lru_cache(maxsize=1024)(looks_like_json_type)


@dataclass(frozen=True, slots=True)
class _ReadResult:
    digest: Digest
    parsed: mf.Parsed | None
    present: bool
    error: str | None


class RefGraph:
    def __init__(self) -> None:
        #: Node attributes by digest (module docstring), in the order the nodes were found.
        self._nodes: dict[Digest, dict[str, Any]] = {}
        #: parent -> child -> kinds.
        self._children: dict[Digest, dict[Digest, Kinds]] = {}
        #: child -> parent -> kinds: derived from ``_children`` when first asked (None: not yet, or stale).
        self._parents: dict[Digest, dict[Digest, Kinds]] | None = None
        #: Digests that were read (or tried).
        self.read: set[Digest] = set()
        #: Read blobs found missing (``present`` False) or with an ``error``: the only nodes
        #: ``errors`` and ``missing_manifests`` can report.
        self._bad: set[Digest] = set()
        #: The last ``reachable`` asked: its roots and its answer (the graph does not change once built).
        self._reach: tuple[frozenset[str], frozenset[Digest]] | None = None
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
            node = graph._note(entry, kind=None)
            node["root"] = True
            if entry.ref_name is not None:
                if not node["tags"]:
                    node["tags"] = set()
                node["tags"].add(entry.ref_name)
            if wants_read(entry, listed=True):
                level.setdefault(entry.digest, (entry, 0))
        # on a bucket every read waits a round trip: the threads start with the first level
        eager = isinstance(layout.storage, SizesObjects)
        with Workers(jobs) as workers:  # threads (when reads wait) kept from level to level
            while level:
                todo = [(d, desc, depth) for d, (desc, depth) in level.items() if d not in graph.read]
                graph.read.update(d for d, _, _ in todo)
                counter.set_total(len(graph.read))
                results = workers.map(lambda t: cache.get(t[0]) or _read_one(layout, t[1], t[2]), todo,
                                      on_done=counter.add, eager=eager)
                level = {}
                for (_, _, depth), res in zip(todo, results, strict=True):
                    for child, cdepth in graph._record(res, depth, layout):
                        if child.digest not in graph.read and child.digest not in level:
                            level[child.digest] = (child, cdepth)
        counter.close()
        return graph

    def _note(self, desc: Descriptor, kind: str | None) -> dict[str, Any]:
        node = self._nodes.get(desc.digest)
        if node is None:
            node = self._nodes[desc.digest] = {
                "media_types": set(), "sizes": set(), "kind": kind, "tags": _NO_TAGS, "root": False,
                "present": None, "error": None, "foreign": False}
        elif node["kind"] is None and kind is not None:
            node["kind"] = kind
        if desc.urls:
            node["foreign"] = True
        if desc.media_type:
            node["media_types"].add(desc.media_type)
        node["sizes"].add(desc.size)
        return node

    def _record(self, res: _ReadResult, depth: int, layout: Layout | None = None) -> list[tuple[Descriptor, int]]:
        node = self._nodes[res.digest]
        node["present"] = res.present
        if res.present and not res.error:
            self.results[res.digest] = res
        if res.error:
            node["error"] = res.error
        if res.error or not res.present:
            self._bad.add(res.digest)
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
                    where = layout.where(res.digest.blob_path()) if layout is not None else res.digest
                    node["error"] = f"{where}: nesting deeper than {MAX_DEPTH} levels (refused)"
                    self._bad.add(res.digest)
                    continue
                follow.append((child, depth + 1))
        if p.subject is not None:
            self._note(p.subject, mf.SUBJECT)
            self._edge(res.digest, p.subject.digest, mf.SUBJECT)
        return follow

    def _edge(self, parent: Digest, child: Digest, kind: str) -> None:
        out = self._children.get(parent)
        if out is None:
            out = self._children[parent] = {}
        kinds = out.get(child)
        if kinds is None:
            out[child] = _ONE_KIND.get(kind) or _kinds(frozenset((kind,)))
        elif kind not in kinds:
            out[child] = _kinds(kinds | {kind})
        self._parents = None

    def _in_edges(self, digest: str) -> dict[Digest, Kinds]:
        """parent -> kinds of the edges into ``digest`` (edge order: as the parents were read)."""
        if self._parents is None:
            parents: dict[Digest, dict[Digest, Kinds]] = {}
            for parent, out in self._children.items():
                for child, kinds in out.items():
                    into = parents.get(child)
                    if into is None:
                        into = parents[child] = {}
                    into[parent] = kinds
            self._parents = parents
        return self._parents.get(digest, {})  # type: ignore[call-overload]

    # --- questions ---------------------------------------------------------------------------
    def complete(self) -> bool:
        """Every blob the walk read was present and parsed (nothing missing or broken to re-read)."""
        return len(self.results) == len(self.read)

    def __contains__(self, digest: object) -> bool:
        return digest in self._nodes

    def node(self, digest: str) -> dict[str, Any]:
        """The attributes of ``digest`` (the graph's own dict: read it, do not change it)."""
        return self._nodes[digest]  # type: ignore[index]

    def nodes(self) -> list[Digest]:
        return list(self._nodes)

    def roots(self) -> set[Digest]:
        return {d for d, a in self._nodes.items() if a["root"]}

    def children(self, digest: str, include_subject: bool = False) -> list[tuple[Digest, Kinds]]:
        out = self._children.get(digest)  # type: ignore[call-overload]
        if not out:
            return []
        return [(child, kinds) for child, kinds in out.items() if include_subject or kinds != _SUBJECT_ONLY]

    def reachable(self, roots: Iterable[str]) -> set[Digest]:
        """The roots and everything they keep alive (subject edges excluded). A new set each call; the
        walk is done once for the same roots (a sweep asks for them when planning and applying)."""
        key = frozenset(roots)
        if self._reach is not None and self._reach[0] == key:
            return set(self._reach[1])
        seen = self._walk(key)
        self._reach = (key, frozenset(seen))
        return seen

    def _walk(self, roots: Iterable[str]) -> set[Digest]:
        nodes, edges, subject = self._nodes, self._children, _SUBJECT_ONLY
        seen: set[Digest] = set()
        stack = [Digest(r) for r in roots if r in nodes]
        while stack:
            d = stack.pop()
            if d in seen:
                continue
            seen.add(d)
            out = edges.get(d)
            if out:
                stack.extend(child for child, kinds in out.items() if child not in seen and kinds != subject)
        return seen

    def referrers(self, digest: str) -> list[Digest]:
        """Manifests whose ``subject`` is ``digest``."""
        if digest not in self._nodes:
            return []
        return [p for p, kinds in self._in_edges(digest).items() if mf.SUBJECT in kinds]

    def parents(self, digest: str) -> list[tuple[Digest, Kinds]]:
        """Nodes holding a non-subject edge to ``digest``."""
        if digest not in self._nodes:
            return []
        return [(p, kinds) for p, kinds in self._in_edges(digest).items() if kinds != _SUBJECT_ONLY]

    def errors(self, among: Iterable[str] | None = None) -> dict[Digest, str]:
        """Blobs that had to be parsed and could not be, or were missing when read."""
        nodes, bad = self._nodes, self._bad
        pool = bad if among is None else _among(bad, among)
        out: dict[Digest, str] = {}
        for d in pool:
            error = nodes[d]["error"]
            if error:
                out[Digest(d)] = error
        return out

    def missing_manifests(self, among: Iterable[str]) -> set[Digest]:
        nodes = self._nodes
        return {Digest(d) for d in _among(self._bad, among) if nodes[d]["present"] is False}

    def foreign(self, among: Iterable[str]) -> set[Digest]:
        """Blobs among ``among`` that a descriptor lists with ``urls`` and that only manifests list as a
        layer or artifact blob (foreign layers: never a root, an index child, a config or a manifest):
        absent from ``blobs/``, they are fetched from those URLs, so their absence is not damage."""
        out: set[Digest] = set()
        for d in among:
            node = self._nodes.get(d)  # type: ignore[call-overload]
            if node is None or not node["foreign"] or node["root"] or self.is_manifest(d):
                continue
            kinds = {k for _, kk in self.parents(d) for k in kk} - {mf.SUBJECT}
            if kinds and kinds <= {mf.LAYER, mf.BLOB}:
                out.add(Digest(d))
        return out

    def is_manifest(self, digest: str) -> bool:
        node = self._nodes[digest]  # type: ignore[index]
        return node["kind"] in (mf.KIND_INDEX, mf.KIND_MANIFEST, mf.KIND_ARTIFACT, mf.KIND_SCHEMA1,
                                mf.KIND_UNKNOWN_JSON) or bool(node["media_types"] & MANIFEST_TYPES)

    def topo_parents_first(self, digests: Iterable[str]) -> list[Digest]:
        """``digests`` ordered so that every parent comes before its children (manifests top-down);
        ties by digest, so that a plan prints the same on every run."""
        wanted = set(digests)
        edges = {d: [c for c in self._children.get(d, {}) if c in wanted and c != d]  # type: ignore[call-overload]
                 for d in wanted}
        indegree = dict.fromkeys(edges, 0)
        for children in edges.values():
            for c in children:
                indegree[c] += 1
        ready = [d for d, n in indegree.items() if n == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:  # Kahn's algorithm, the smallest ready digest first (lexicographical)
            d = heapq.heappop(ready)
            order.append(d)
            for c in edges[d]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    heapq.heappush(ready, c)
        if len(order) < len(wanted):  # a cycle (only possible with hash collisions): any order
            order = sorted(wanted)
        return [Digest(d) for d in order]

    def _edges(self) -> list[tuple[Digest, Digest, Kinds]]:
        return [(u, v, kinds) for u, out in self._children.items() for v, kinds in out.items()]

    # --- export ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        nodes = []
        for d, a in sorted(self._nodes.items()):
            nodes.append({
                "digest": d, "kind": a["kind"] or "unknown", "media_types": sorted(a["media_types"]),
                "sizes": sorted(a["sizes"]), "tags": sorted(a["tags"]), "root": a["root"],
                "present": a["present"], "error": a["error"],
            })
        edges = [{"from": u, "to": v, "kinds": sorted(kinds)} for u, v, kinds in sorted(self._edges())]
        return {"nodes": nodes, "edges": edges}

    def to_dot(self) -> str:
        lines = ["digraph ocigc {", "  rankdir=LR;", "  node [shape=box, fontname=monospace];"]
        for d, a in sorted(self._nodes.items()):
            label = f"{Digest(d).short}\\n{a['kind'] or 'unknown'}"
            if a["tags"]:
                label += "\\n" + ", ".join(sorted(a["tags"])).replace('"', "'")
            style = ', style="bold"' if a["root"] else ""
            lines.append(f'  "{d}" [label="{label}"{style}];')
        for u, v, kinds in sorted(self._edges()):
            dashed = ', style="dashed"' if mf.SUBJECT in kinds else ""
            lines.append(f'  "{u}" -> "{v}" [label="{",".join(sorted(kinds))}"{dashed}];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_graphml(self) -> str:
        nx = _nx()
        flat = nx.DiGraph()
        for d, a in self._nodes.items():
            flat.add_node(d, kind=a["kind"] or "unknown", media_types=",".join(sorted(a["media_types"])),
                          sizes=",".join(str(s) for s in sorted(a["sizes"])), tags=",".join(sorted(a["tags"])),
                          root=bool(a["root"]), present="" if a["present"] is None else str(a["present"]).lower(),
                          error=a["error"] or "")
        for u, v, kinds in self._edges():
            flat.add_edge(u, v, kinds=",".join(sorted(kinds)))
        return "\n".join(nx.generate_graphml(flat)) + "\n"


def _among(few: set[Digest], among: Iterable[str]) -> list[Digest]:
    """The digests of ``few`` that are in ``among``, in ``among``'s order."""
    if not few:
        return []
    if isinstance(among, (set, frozenset, dict)):
        return [d for d in among if d in few] if len(among) < len(few) else [d for d in few if d in among]
    return [Digest(d) for d in among if d in few]


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
