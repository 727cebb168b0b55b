"""The grace period of young unreachable manifests: what a manifest younger than the grace period
references is kept with it (``docs/design.md``, "sweep")."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import ManifestError
from ocigc.jsonload import JSONInputError, load_json
from ocigc.layout.graph import RefGraph, wants_read
from ocigc.layout.layout import MAX_MANIFEST_BYTES, Layout
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import MANIFEST_TYPES, Descriptor
from ocigc.oci.index import Index
from ocigc.parallel import pmap
from ocigc.storage.base import FileStat

#: The shortest JSON that can hold a descriptor ({"digest":"sha256:<64 hex>","size":0}): a young
#: blob shorter than this (by its real size) references nothing.
MIN_DESCRIPTOR_BYTES = 88


@dataclass
class YoungClosure:
    """What young unreachable manifests reference (transitively): blob -> the young manifest."""

    protected: dict[Digest, Digest] = field(default_factory=dict)
    #: Young blobs that look like manifests but cannot be parsed: their children are unknown.
    unknown: list[str] = field(default_factory=list)


def _looks_like_manifest(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    if doc.get("mediaType") in MANIFEST_TYPES:
        return True
    return doc.get("schemaVersion") in (1, 2) and any(
        k in doc for k in ("manifests", "config", "layers", "fsLayers", "blobs", "subject"))


def _read_if_json(layout: Layout, d: Digest) -> bytes | None:
    """The blob's bytes when it starts like JSON (``{``), else None after reading only its head: a
    young gzip layer costs one short read, not a whole one."""
    with layout.open_blob(d) as f:
        head = f.read(512)
        if head.lstrip()[:1] not in (b"{", b""):
            return None
        rest = f.read(MAX_MANIFEST_BYTES + 1 - len(head))
    raw = head + rest
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{layout.where(d.blob_path())}: larger than {MAX_MANIFEST_BYTES} bytes")
    return raw if raw.lstrip()[:1] == b"{" else None


def young_closure(layout: Layout, graph: RefGraph, young: dict[Digest, FileStat], jobs: int) -> YoungClosure:
    """Read the young blobs that could be manifests (JSON, at most 4 MiB) and collect everything they
    reference, through nested manifests (read by the graph's rules, reusing what ``graph`` read).

    Only young blobs are read, so the cost is bounded by what was written within the grace period.
    A young blob that is JSON shaped like a manifest but does not parse (or a truncated one) goes
    to ``unknown``: its children cannot be known, and the caller keeps every candidate."""
    out = YoungClosure()
    small = sorted(d for d, st in young.items() if MIN_DESCRIPTOR_BYTES <= st.size <= MAX_MANIFEST_BYTES)

    def read(d: Digest) -> tuple[mf.Parsed | None, str | None]:
        where = layout.where(d.blob_path())
        try:
            raw = _read_if_json(layout, d)
        except FileNotFoundError:
            return None, None  # gone meanwhile: nothing to protect
        except (OSError, ManifestError) as e:
            return None, f"{where}: cannot read ({getattr(e, 'strerror', None) or e})"
        if raw is None:
            return None, None  # not JSON: a leaf
        try:
            doc = load_json(raw, limit=None)
        except JSONInputError:
            head = raw[:4096]
            if b'"schemaVersion"' in head or b'"mediaType"' in head:
                return None, f"{where}: young blob looks like a manifest but is not valid JSON (truncated?)"
            return None, None
        try:
            return mf.parse(raw, None, where), None
        except ManifestError as e:
            return None, str(e) if _looks_like_manifest(doc) else None

    follow: dict[Digest, Descriptor] = {}
    direct: dict[Digest, list[Digest]] = {}
    for d, (parsed, problem) in zip(small, pmap(read, small, jobs), strict=True):
        if problem:
            out.unknown.append(problem)
        if parsed is None:
            continue
        direct[d] = []
        for kind, child in parsed.children:
            direct[d].append(child.digest)
            if wants_read(child, listed=kind == mf.CHILD):
                follow.setdefault(child.digest, child)
    if follow:
        doc = {"schemaVersion": 2, "manifests": [c.to_json() for c in follow.values()]}
        sub = RefGraph.build(layout, Index.parse(json.dumps(doc).encode()), jobs, known=graph)
        below: dict[Digest, set[Digest]] = {c: sub.reachable([c]) for c in follow}
        errors = sub.errors(set().union(*below.values()))
        out.unknown.extend(err for d, err in sorted(errors.items()) if sub.node(d)["present"] is not False)
    else:
        below = {}
    for parent in sorted(direct):
        for cd in direct[parent]:
            for blob in below.get(cd, {cd}):
                if blob != parent:
                    out.protected.setdefault(blob, parent)
    return out
