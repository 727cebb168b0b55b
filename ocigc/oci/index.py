"""``index.json``: an immutable view of what was read, and rewrites that keep everything else.

Invariants: ``entries[i]`` is the parsed form of ``doc["manifests"][i]``; a rewrite only drops or
appends entries (or edits one entry's annotations) and keeps every other field, annotation and
the entry order; ``fingerprint`` is the sha256 of the exact bytes read (the optimistic-concurrency
token for ``index.json`` updates).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import (
    InvalidDigest,
    LayoutError,
)
from ocigc.jsonload import JSONInputError, load_json
from ocigc.oci.descriptor import (
    ANNOTATION_REF_NAME,
    Descriptor,
)


@dataclass(frozen=True)
class Index:
    doc: dict[str, Any]
    entries: tuple[Descriptor, ...]
    fingerprint: str

    @classmethod
    def parse(cls, raw: bytes, where: str = "index.json") -> Index:
        if not raw.strip():
            raise LayoutError(f"{where}: file is empty (never treated as an empty index)")
        try:
            doc = load_json(raw, limit=None)
        except JSONInputError as e:
            raise LayoutError(f"{where}: {e}") from None
        if not isinstance(doc, dict):
            raise LayoutError(f"{where}: not a JSON object")
        if doc.get("schemaVersion") != 2:
            raise LayoutError(f"{where}: schemaVersion must be 2, got {doc.get('schemaVersion')!r}")
        if "manifests" not in doc:
            raise LayoutError(f"{where}: no 'manifests' field")
        manifests = doc["manifests"]
        if manifests is None:  # umoci writes null after removing the last tag
            manifests = []
        if not isinstance(manifests, list):
            raise LayoutError(f"{where}: 'manifests' must be a list")
        entries = []
        for i, obj in enumerate(manifests):
            try:
                entries.append(Descriptor.from_json(obj, f"manifests[{i}]"))
            except (ValueError, InvalidDigest) as e:
                raise LayoutError(f"{where}: {e}") from None
        return cls(doc, tuple(entries), hashlib.sha256(raw).hexdigest())

    @classmethod
    def empty(cls) -> Index:
        doc: dict[str, Any] = {"schemaVersion": 2, "manifests": []}
        return cls(doc, (), hashlib.sha256(cls._dump(doc)).hexdigest())

    # --- questions -------------------------------------------------------------------------
    def tags(self) -> dict[str, list[Descriptor]]:
        """Ref name -> the entries that carry it (a name may appear on several entries)."""
        out: dict[str, list[Descriptor]] = {}
        for e in self.entries:
            if e.ref_name is not None:
                out.setdefault(e.ref_name, []).append(e)
        return out

    def root_digests(self) -> set[Digest]:
        return {e.digest for e in self.entries}

    def tagged_digests(self) -> set[Digest]:
        return {e.digest for e in self.entries if e.has_ref_name}

    def entries_for(self, digest: str) -> list[tuple[int, Descriptor]]:
        return [(i, e) for i, e in enumerate(self.entries) if e.digest == digest]

    # --- rewrites (return new bytes; the caller writes them under the index.json protocol) ---
    def without(self, drop: Callable[[int, Descriptor], bool]) -> Index:
        keep = [i for i, e in enumerate(self.entries) if not drop(i, e)]
        return self._with_positions(keep)

    def with_entries(self, new: Iterable[dict[str, Any]]) -> Index:
        doc = copy.deepcopy(self.doc)
        manifests = list(doc.get("manifests") or [])
        manifests.extend(copy.deepcopy(list(new)))
        doc["manifests"] = manifests
        return Index.parse(self._dump(doc))

    def _with_positions(self, keep: list[int]) -> Index:
        doc = copy.deepcopy(self.doc)
        raw_list = self.doc.get("manifests") or []
        doc["manifests"] = [copy.deepcopy(raw_list[i]) for i in keep]
        return Index.parse(self._dump(doc))

    def dumps(self) -> bytes:
        return self._dump(self.doc)

    @staticmethod
    def _dump(doc: dict[str, Any]) -> bytes:
        # A lone surrogate in a string (the escape \ud800, which Go's decoder and Python's accept)
        # cannot be UTF-8: it is written back as the same lowercase escape it was read from.
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:200]


def _without_ref_name(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(entry))
    annotations = dict(out.get("annotations") or {})
    annotations.pop(ANNOTATION_REF_NAME, None)
    if annotations:
        out["annotations"] = annotations
    else:
        out.pop("annotations", None)
    return out


def with_ref_name(entry: Mapping[str, Any], tag: str) -> dict[str, Any]:
    out = _without_ref_name(entry)
    out["annotations"] = dict(sorted({**(out.get("annotations") or {}), ANNOTATION_REF_NAME: tag}.items()))
    # keep the Go field order: annotations before data/platform/artifactType
    ordered: dict[str, Any] = {k: out[k] for k in ("mediaType", "digest", "size", "urls", "annotations") if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    return ordered


def set_tag(index: Index, entry: Mapping[str, Any], tag: str) -> Index:
    """Point ``tag`` at ``entry`` (an index.json descriptor without ref name), as oras-go does:

    - entries carrying ``tag`` for another digest lose it; one whose digest nothing else lists
      stays, untagged, at its place (so a moved tag never silently drops a root);
    - untagged entries for ``entry``'s digest go (the tagged entry replaces them);
    - the tagged entry is appended. Nothing changes when ``tag`` already names that digest."""
    digest = entry["digest"]
    raw_list = list(index.doc.get("manifests") or [])
    current = [e for e in index.entries if e.ref_name == tag]
    if current and all(e.digest == digest for e in current):
        return index
    keep_digests = {e.digest for e in index.entries if e.ref_name not in (None, tag)}
    new_list: list[Any] = []
    untagged_kept: set[str] = set()
    for raw, e in zip(raw_list, index.entries, strict=True):
        if e.ref_name == tag:
            if e.digest == digest or e.digest in keep_digests or e.digest in untagged_kept:
                continue
            if any(o.digest == e.digest and o.ref_name is None for o in index.entries):
                continue  # an untagged entry for it is already there
            new_list.append(_without_ref_name(raw))
            untagged_kept.add(e.digest)
        elif e.ref_name is None and e.digest == digest:
            continue
        else:
            new_list.append(raw)
    new_list.append(with_ref_name(entry, tag))
    doc = copy.deepcopy(index.doc)
    doc["manifests"] = new_list
    return Index.parse(Index._dump(doc))


def add_untagged(index: Index, entry: Mapping[str, Any]) -> Index:
    """Record ``entry`` untagged unless ``index.json`` already lists its digest."""
    if index.entries_for(entry["digest"]):
        return index
    return index.with_entries([_without_ref_name(entry)])
