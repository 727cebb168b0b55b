"""Manifest parsing: what a manifest, index or unknown JSON blob references.

Known kinds: OCI image manifest and index (nested to any depth), OCI artifact manifest, Docker v2
manifest and manifest list, Docker schema 1. ``mediaType`` may be missing: the kind is then
told from the fields. Unknown JSON is scanned for descriptor-shaped objects, which are followed.
Anything that claims to be a manifest but cannot be parsed raises ManifestError: the caller
must fail closed (never delete the children of something it could not read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import InvalidDigest, ManifestError
from ocigc.jsonload import JSONInputError, load_json
from ocigc.oci.descriptor import (
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    OCI_ARTIFACT,
    Descriptor,
    looks_like_descriptor,
)

# Edge kinds, parent -> child. A "subject" edge goes referrer -> subject and keeps nothing alive.
CHILD = "child"  # index -> manifest or nested index
CONFIG = "config"  # image manifest -> config
LAYER = "layer"  # image manifest -> layer
BLOB = "blob"  # artifact manifest -> blob
REF = "ref"  # unknown JSON -> descriptor-shaped object found inside it
SUBJECT = "subject"  # referrer -> subject
EDGE_KINDS = (CHILD, CONFIG, LAYER, BLOB, REF, SUBJECT)

KIND_INDEX = "index"
KIND_MANIFEST = "manifest"
KIND_ARTIFACT = "artifact"
KIND_SCHEMA1 = "docker-schema1"
KIND_UNKNOWN_JSON = "unknown-json"

#: JSON nesting deeper than this inside one blob is refused (hostile input).
MAX_JSON_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: str
    media_type: str
    #: (edge kind, child descriptor) in document order; never includes the subject.
    children: tuple[tuple[str, Descriptor], ...]
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, Any] | None = None
    #: Set when the blob's own mediaType differs from the one its parent declared.
    declared_mismatch: str | None = None


class NotJSON(ManifestError):
    """The bytes are not JSON at all (a leaf, unless the blob had to be a manifest)."""


def parse(raw: bytes, declared: str | None, where: str) -> Parsed:
    """Parse a blob that was read because its descriptor says (or may mean) it is a manifest.

    Every honest reading is taken and their children united: the kind the blob's own
    ``mediaType`` names, the kind the parent's declared type names, the kind the blob's fields
    show (``schemaVersion`` with ``manifests``/``config``/``layers``/``fsLayers``/``blobs``), and
    every descriptor-shaped object anywhere in the document. A reading that fails, or a
    descriptor-shaped object that is not a valid descriptor, raises ManifestError (fail closed).
    Bytes that are not JSON raise NotJSON."""
    try:
        doc = load_json(raw, limit=None)
    except JSONInputError as e:
        if str(e).startswith(("invalid JSON", "not UTF-8")):
            raise NotJSON(f"{where}: {e}") from None
        raise ManifestError(f"{where}: {e}") from None
    declared_kind = _kind_of_type(declared or "")
    if not isinstance(doc, dict):
        if declared_kind is not None:
            raise ManifestError(f"{where}: not a JSON object")
        try:
            refs = tuple((REF, Descriptor.from_json(obj, path or "descriptor")) for path, obj in _scan(doc, "", 0, {}))
        except (ValueError, InvalidDigest) as e:
            raise ManifestError(f"{where}: {e}") from None
        return Parsed(KIND_UNKNOWN_JSON, declared or "", refs)
    own = doc.get("mediaType")
    if own is not None and not isinstance(own, str):
        raise ManifestError(f"{where}: mediaType must be a string")
    media_type = own or declared or ""
    own_kind = _kind_of_type(own or "")
    field_kind = _kind_by_fields(doc)
    kinds: list[str] = []
    for k in (field_kind, own_kind, declared_kind):
        if k is not None and k not in kinds:
            kinds.append(k)
    mismatch = None
    if own and declared and own != declared:
        mismatch = f"declared {declared}, blob says {own}"
    elif len(kinds) > 1:
        mismatch = f"declared {declared or 'no media type'}, blob's fields say {field_kind}"
    # The descriptors a typed reading parsed, by the identity of their JSON object: the scan for
    # descriptor-shaped objects finds them again and takes them as parsed (the same object, parsed
    # the same way), so each descriptor of a manifest is validated once.
    memo: dict[int, Descriptor] = {}
    try:
        readings = [_PARSERS[k](doc, media_type, where, memo) for k in kinds]
        scanned = _parse_unknown(doc, media_type, where, memo)
    except (ValueError, InvalidDigest) as e:
        raise ManifestError(f"{where}: {e}") from None
    if not readings:
        return scanned
    first = readings[0]
    children: list[tuple[str, Descriptor]] = []
    seen: set[tuple[str, str]] = set()
    subject = next((r.subject for r in readings if r.subject is not None), None)
    for r in readings:
        for kind, d in r.children:
            if (kind, d.digest) not in seen:
                seen.add((kind, d.digest))
                children.append((kind, d))
    have = {d.digest for _, d in children} | ({subject.digest} if subject is not None else set())
    if subject is None and scanned.subject is not None:
        subject = scanned.subject
        have.add(subject.digest)
    for kind, d in scanned.children:
        if d.digest not in have:
            have.add(d.digest)
            children.append((kind, d))
    return Parsed(first.kind, first.media_type, tuple(children), subject, first.artifact_type,
                  first.annotations, mismatch)


def _kind_of_type(media_type: str) -> str | None:
    """The kind a known manifest media type names; None for any other type."""
    if media_type in INDEX_TYPES:
        return KIND_INDEX
    if media_type in IMAGE_MANIFEST_TYPES:
        return KIND_MANIFEST
    if media_type == OCI_ARTIFACT:
        return KIND_ARTIFACT
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        return KIND_SCHEMA1
    return None


def _kind_by_fields(doc: dict[str, Any]) -> str | None:
    """The kind the blob's own fields show (umoci writes manifests without a mediaType)."""
    if "schemaVersion" not in doc:
        return None
    if "manifests" in doc:
        return KIND_INDEX
    if "config" in doc or "layers" in doc:
        return KIND_MANIFEST
    if "fsLayers" in doc:
        return KIND_SCHEMA1
    if "blobs" in doc:
        return KIND_ARTIFACT
    return None


def _descriptor(obj: Any, where: str, memo: dict[int, Descriptor]) -> Descriptor:
    """``Descriptor.from_json``, remembered by the identity of ``obj`` (see ``parse``)."""
    desc = memo.get(id(obj))
    if desc is None:
        desc = memo[id(obj)] = Descriptor.from_json(obj, where)
    return desc


def _descriptors(doc: dict[str, Any], key: str, required: bool, memo: dict[int, Descriptor]) -> list[Descriptor]:
    value = doc.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing '{key}'")
        return []
    if not isinstance(value, list):
        raise ValueError(f"'{key}' must be a list")
    return [_descriptor(v, f"{key}[{i}]", memo) for i, v in enumerate(value)]


def _subject(doc: dict[str, Any], memo: dict[int, Descriptor]) -> Descriptor | None:
    return _descriptor(doc["subject"], "subject", memo) if doc.get("subject") is not None else None


def _annotations(doc: dict[str, Any]) -> dict[str, Any] | None:
    ann = doc.get("annotations")
    return ann if isinstance(ann, dict) else None


def _artifact_type(doc: dict[str, Any]) -> str | None:
    at = doc.get("artifactType")
    return at if isinstance(at, str) else None


def _parse_index(doc: dict[str, Any], mt: str, where: str, memo: dict[int, Descriptor]) -> Parsed:
    children = tuple((CHILD, d) for d in _descriptors(doc, "manifests", required=False, memo=memo))
    return Parsed(KIND_INDEX, mt, children, _subject(doc, memo), _artifact_type(doc), _annotations(doc))


def _parse_manifest(doc: dict[str, Any], mt: str, where: str, memo: dict[int, Descriptor]) -> Parsed:
    # A manifest without config breaks the spec but exists in the wild (podman artifacts): keep its layers.
    configs = [(CONFIG, _descriptor(doc["config"], "config", memo))] if doc.get("config") is not None else []
    layers = _descriptors(doc, "layers", required=False, memo=memo)
    children = (*configs, *((LAYER, d) for d in layers))
    return Parsed(KIND_MANIFEST, mt, children, _subject(doc, memo), _artifact_type(doc), _annotations(doc))


def _parse_artifact(doc: dict[str, Any], mt: str, where: str, memo: dict[int, Descriptor]) -> Parsed:
    children = tuple((BLOB, d) for d in _descriptors(doc, "blobs", required=False, memo=memo))
    return Parsed(KIND_ARTIFACT, mt, children, _subject(doc, memo), _artifact_type(doc), _annotations(doc))


def _parse_schema1(doc: dict[str, Any], mt: str, where: str, memo: dict[int, Descriptor]) -> Parsed:
    layers = doc.get("fsLayers")
    if not isinstance(layers, list):
        raise ValueError("schema 1 manifest without 'fsLayers'")
    seen: dict[str, Descriptor] = {}
    for i, layer in enumerate(layers):
        blob_sum = layer.get("blobSum") if isinstance(layer, dict) else None
        if not isinstance(blob_sum, str):
            raise ValueError(f"fsLayers[{i}]: missing blobSum")
        seen.setdefault(blob_sum, Descriptor("", Digest(blob_sum), -1))
    return Parsed(KIND_SCHEMA1, mt or DOCKER_SCHEMA1, tuple((LAYER, d) for d in seen.values()))


def _parse_unknown(doc: dict[str, Any], mt: str, where: str, memo: dict[int, Descriptor]) -> Parsed:
    found: list[tuple[str, Descriptor]] = []
    subject = None
    for path, obj in _scan(doc, "", 0, memo):
        desc = _descriptor(obj, path or "descriptor", memo)
        if path == "subject":
            subject = desc
        else:
            found.append((REF, desc))
    return Parsed(KIND_UNKNOWN_JSON, mt, tuple(found), subject, _artifact_type(doc), _annotations(doc))


def _scan(obj: Any, path: str, depth: int, memo: dict[int, Descriptor]) -> list[tuple[str, dict[str, Any]]]:
    """Every descriptor-shaped object inside ``obj`` (not descending into one once found), with its
    path, in document order. An object in ``memo`` was parsed as a descriptor: it is descriptor-shaped
    (a valid digest and a size). A value nested deeper than ``MAX_JSON_DEPTH`` is refused."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    found: list[tuple[str, dict[str, Any]]] = []
    _scan_into(found, obj, path, depth, memo)
    return found


def _scan_into(found: list[tuple[str, dict[str, Any]]], obj: Any, path: str, depth: int,
               memo: dict[int, Descriptor]) -> None:
    """``_scan`` of a container at ``depth`` (within the limit): its values one level deeper."""
    if isinstance(obj, dict):
        if id(obj) in memo or looks_like_descriptor(obj):
            found.append((path, obj))
            return
        if obj and depth + 1 > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        for k, v in obj.items():
            if isinstance(v, (dict, list)):
                _scan_into(found, v, f"{path}.{k}" if path else str(k), depth + 1, memo)
    elif isinstance(obj, list):
        if obj and depth + 1 > MAX_JSON_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        for i, v in enumerate(obj):
            if isinstance(v, (dict, list)):
                _scan_into(found, v, f"{path}[{i}]", depth + 1, memo)


_PARSERS = {
    KIND_INDEX: _parse_index,
    KIND_MANIFEST: _parse_manifest,
    KIND_ARTIFACT: _parse_artifact,
    KIND_SCHEMA1: _parse_schema1,
    KIND_UNKNOWN_JSON: _parse_unknown,
}
