"""One manifest or blob at a time, as ``oras manifest fetch``, ``oras blob fetch`` and ``oras blob
delete`` do, and the referrers graph of ``oras discover``: on layouts (local, mounted, ``s3://``) and,
for the reading verbs, on registries (``ocigc.transfer.registry``, imported only for a registry).

Nothing here knows the terminal: the CLI (``ocigc.cli.content``) renders what these return.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ocigc.digest import Digest
from ocigc.errors import (
    IntegrityError,
    ManifestError,
    ReferenceNotFound,
    UnsafeToModify,
    UsageError,
    naming,
    printable,
)
from ocigc.jsonload import load_json
from ocigc.layout.indexio import read_index_retrying
from ocigc.layout.layout import MAX_MANIFEST_BYTES, Layout
from ocigc.layout.views import open_at
from ocigc.oci.descriptor import OCI_INDEX, OCI_MANIFEST
from ocigc.oci.refs import Reference
from ocigc.transfer.conventions import go_json
from ocigc.transfer.target import RegistryRef, Target

if TYPE_CHECKING:
    from ocigc.gc.run import Locker
    from ocigc.transfer.registry import RegistryClient
    from ocigc.transfer.registry_model import RegistryOptions

#: Bytes per read while a blob streams out.
CHUNK = 1 << 20
#: How deep ``discover`` follows referrers of referrers (a cycle cannot loop: each digest once).
MAX_DEPTH = 64


def client_for(ref: RegistryRef, options: RegistryOptions | None) -> RegistryClient:
    """The registry client of ``ref``'s host (oras-py and requests are imported here, on this path only)."""
    from ocigc.transfer.registry import RegistryClient

    return RegistryClient(ref.host, options)


def plain_descriptor(media_type: str, digest: str, size: int) -> dict[str, Any]:
    """``{"mediaType", "digest", "size"}``, in the order Go's encoder writes an OCI descriptor."""
    return {"mediaType": media_type, "digest": str(digest), "size": size}


def target_name(target: Target) -> str:
    """What oras prints before ``@DIGEST``: the layout path, or ``HOST/REPO``."""
    return target.name if isinstance(target, RegistryRef) else target.path


# --- manifest fetch ------------------------------------------------------------------------------
@dataclass
class FetchedManifest:
    """A manifest's exact bytes and its descriptor (``oras manifest fetch`` and ``--descriptor``)."""

    name: str
    raw: bytes
    descriptor: dict[str, Any]

    @property
    def digest(self) -> Digest:
        return Digest(self.descriptor["digest"])

    def content(self) -> Any:
        return load_json(self.raw, limit=None)

    def descriptor_bytes(self) -> bytes:
        return go_json(self.descriptor)

    def to_json(self) -> dict[str, Any]:
        """oras' ``manifest fetch --format json``: the descriptor with ``ref``, and the content."""
        return {"ref": f"{self.name}@{self.digest}", **self.descriptor, "content": self.content()}


def fetch_manifest(target: Target, options: RegistryOptions | None = None) -> FetchedManifest:
    """The manifest a tag or digest names, its bytes verified against its digest."""
    if isinstance(target, RegistryRef):
        if not target.reference:
            raise UsageError(f"{target}: name a tag or a digest")
        raw, media_type, digest = client_for(target, options).get_manifest(target.repo, target.reference)
        return FetchedManifest(target.name, raw, plain_descriptor(media_type, digest, len(raw)))
    layout, entry = _layout_manifest(target)
    digest = Digest(entry["digest"])
    raw = layout.read_blob(digest, MAX_MANIFEST_BYTES)
    got = Digest.from_bytes(raw, digest.algorithm)
    if got != digest:
        raise IntegrityError(f"{layout.where(digest.blob_path())}: content hashes to {got}, not {digest}")
    return FetchedManifest(target.path, raw, plain_descriptor(entry["mediaType"], digest, len(raw)))


def _layout_manifest(ref: Reference) -> tuple[Layout, dict[str, Any]]:
    from ocigc.transfer.push import resolve_manifest

    if ref.tag is None and ref.digest is None:
        raise UsageError(f"{printable(str(ref))}: name a tag (PATH:TAG) or a digest (PATH@DIGEST)")
    layout = open_at(ref, str(ref))
    layout.follow_blob_links = True
    return layout, resolve_manifest(layout, read_index_retrying(layout), ref)


# --- manifest delete on a registry ---------------------------------------------------------------
@dataclass
class RegistryManifest:
    """A registry's manifest about to be deleted: what the prompt and the report name."""

    ref: RegistryRef
    digest: Digest
    media_type: str
    size: int
    subject: str | None

    def to_json(self) -> dict[str, Any]:
        return {"ref": f"{self.ref.name}@{self.digest}", **plain_descriptor(self.media_type, self.digest, self.size)}


def resolve_registry_manifest(ref: RegistryRef, options: RegistryOptions | None = None) -> RegistryManifest:
    """The manifest a registry tag or digest names (``ReferenceNotFound`` when there is none)."""
    from ocigc.transfer.registry_model import BlobNotFound

    if not ref.reference:
        raise UsageError(f"{ref}: name a tag or a digest")
    try:
        raw, media_type, digest = client_for(ref, options).get_manifest(ref.repo, ref.reference)
    except BlobNotFound as e:
        raise ReferenceNotFound(f"{ref}: the manifest does not exist ({e})") from None
    doc = load_json(raw, limit=None)
    subject = doc.get("subject") if isinstance(doc, dict) else None
    subject_digest = subject.get("digest") if isinstance(subject, dict) else None
    return RegistryManifest(ref, digest, media_type, len(raw), subject_digest if isinstance(subject_digest, str)
                            else None)


def delete_registry_manifest(found: RegistryManifest, options: RegistryOptions | None = None) -> bool:
    """DELETE the manifest (by digest: the registry drops its tags), as ``oras manifest delete``;
    a referrer is also dropped from its subject's ``<alg>-<hex>`` index on a registry without the
    referrers API. True when that index changed."""
    from ocigc.transfer.registry import remove_from_referrers_tag

    client = client_for(found.ref, options)
    client.delete_manifest(found.ref.repo, str(found.digest))
    if found.subject is None or client.referrers(found.ref.repo, found.subject) is not None:
        return False
    return remove_from_referrers_tag(client, found.ref.repo, found.subject, str(found.digest))


# --- blob fetch ----------------------------------------------------------------------------------
@dataclass
class FetchedBlob:
    name: str
    digest: Digest
    size: int
    output: str

    def to_json(self) -> dict[str, Any]:
        return {"ref": f"{self.name}@{self.digest}", "digest": str(self.digest), "size": self.size,
                "output": self.output}


def fetch_blob(target: Target, output: str | None, write: Callable[[bytes], object] | None = None,
               options: RegistryOptions | None = None) -> FetchedBlob:
    """Stream the blob ``target`` names (``@DIGEST``) into ``output`` (a file: written beside it and
    renamed into place only once its digest and size are verified, so a corrupt blob never lands)
    or, with ``output`` None, to ``write`` (a stream: a mismatch is found at the end, exit 4)."""
    digest = target.digest
    if digest is None:
        raise UsageError(f"{printable(str(target))}: a blob is named by digest (REF@DIGEST)")
    with _open_blob(target, digest, options) as (src, declared):
        if output is None:
            assert write is not None
            size = _copy_verified(src, write, digest, declared, str(target))
            return FetchedBlob(target_name(target), digest, size, "-")
        folder = os.path.dirname(os.path.abspath(output))
        fd, tmp = tempfile.mkstemp(prefix=".ocigc-blob-", dir=folder)
        try:
            with naming(tmp), os.fdopen(fd, "wb") as out:
                size = _copy_verified(src, out.write, digest, declared, str(target))
                out.flush()
                os.fsync(out.fileno())
            with naming(output):
                os.replace(tmp, output)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return FetchedBlob(target_name(target), digest, size, output)


@contextlib.contextmanager
def _open_blob(target: Target, digest: Digest,
               options: RegistryOptions | None) -> Iterator[tuple[BinaryIO, int | None]]:
    if isinstance(target, RegistryRef):
        with client_for(target, options).open_blob(target.repo, str(digest)) as stream:
            yield stream, None  # type: ignore[misc]
        return
    layout = open_at(target, str(target))
    layout.follow_blob_links = True
    try:
        src = layout.open_blob(digest)
    except FileNotFoundError:
        raise ReferenceNotFound(f"{printable(target.path)}: no blob {digest} in the layout") from None
    with src:
        st = layout.stat_blob(digest)
        yield src, (st.size if st is not None else None)


def _copy_verified(src: BinaryIO, write: Callable[[bytes], object], digest: Digest, declared: int | None,
                   what: str) -> int:
    import hashlib

    h = hashlib.new(digest.algorithm)
    size = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
        write(chunk)
    got = f"{digest.algorithm}:{h.hexdigest()}"
    if got != digest:
        raise IntegrityError(f"{printable(what)}: content hashes to {got} ({size} bytes), not {digest}")
    if declared is not None and declared != size:
        raise IntegrityError(f"{printable(what)}: {size} bytes read, {declared} stored")
    return size


# --- blob delete ---------------------------------------------------------------------------------
@dataclass
class BlobDeleteResult:
    layout: str
    digest: Digest
    size: int | None
    deleted: bool
    #: Manifests (reachable from index.json) that still reference the blob: dangling now (``force``).
    dangling_in: list[Digest] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.layout, "digest": str(self.digest), "size": self.size, "deleted": self.deleted,
                "dangling_in": [str(d) for d in self.dangling_in]}


def delete_blob(ref: Reference, locker: Locker, *, force: bool = False, jobs: int = 16) -> BlobDeleteResult:
    """Remove one blob of a layout (``oras blob delete``), under the lock ``delete`` takes (shared,
    then the short exclusive hold for the check and the removal).

    Refused (``UnsafeToModify``, exit 1, nothing removed) when a manifest or index reachable from
    ``index.json`` references it, unless ``force``: then it goes and those references dangle (exit 4
    for ``check`` until the blob is put back). An ``index.json`` entry's own manifest is always
    refused: ``manifest delete`` removes that. A blob that is not there: ``ReferenceNotFound``, or
    nothing to do with ``force`` (as oras)."""
    from ocigc.layout.state import LayoutState

    digest = ref.digest
    if digest is None or ref.tag is not None:
        raise UsageError(f"{printable(str(ref))}: a blob is named by digest (PATH@DIGEST)")
    layout = open_at(ref, str(ref))
    layout.check_oci_layout()
    with locker(layout, "shared") as lock, lock.exclusive_hold():
        lock.ensure_held()
        st = layout.stat_blob(digest)
        if st is None:
            if force:
                return BlobDeleteResult(layout.location, digest, None, False)
            raise ReferenceNotFound(f"{printable(ref.path)}: no blob {digest} in the layout")
        state = LayoutState.load(layout, jobs, index=read_index_retrying(layout))
        if digest in state.index.root_digests():
            raise UnsafeToModify(f"{printable(ref.path)}: {digest} is a manifest index.json lists; "
                                 f"'ocigc manifest delete {printable(ref.path)}@{digest}' removes it")
        reachable = state.reachable()
        users = sorted(p for p, _ in state.graph.parents(digest) if p in reachable) if digest in state.graph else []
        if users and not force:
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            raise UnsafeToModify(f"{printable(ref.path)}: blob {digest} is referenced by {users[0]}{more}, which "
                                 "index.json reaches; nothing removed (--force removes it anyway and leaves a "
                                 "dangling reference)")
        lock.ensure_held()
        layout.storage.remove(digest.blob_path())
    return BlobDeleteResult(layout.location, digest, st.size, True, users)


# --- discover ------------------------------------------------------------------------------------
@dataclass
class ReferrerNode:
    """A subject or a referrer, with its referrers: oras' discover model (``ref``, the descriptor,
    ``referrers``)."""

    name: str
    descriptor: dict[str, Any]
    referrers: list[ReferrerNode] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return str(self.descriptor["digest"])

    @property
    def artifact_type(self) -> str | None:
        return self.descriptor.get("artifactType")

    def to_json(self) -> dict[str, Any]:
        return {"ref": f"{self.name}@{self.digest}", **self.descriptor,
                "referrers": [r.to_json() for r in self.referrers]}

    def walk(self, depth: int = 0) -> Iterator[tuple[int, ReferrerNode, ReferrerNode]]:
        """(depth, referrer, its subject) for every referrer below, depth first."""
        for r in self.referrers:
            yield depth + 1, r, self
            yield from r.walk(depth + 1)


def referrer_descriptor(raw: bytes, digest: str) -> dict[str, Any]:
    """The descriptor the referrers API lists for a manifest: its media type, digest and size, its
    ``artifactType`` (for an image manifest without one, its config's media type) and annotations."""
    doc = load_json(raw, limit=None)
    if not isinstance(doc, dict):
        raise ManifestError(f"{digest}: not a manifest")
    media_type = doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
    desc = plain_descriptor(str(media_type), digest, len(raw))
    artifact_type = doc.get("artifactType")
    config = doc.get("config")
    if not artifact_type and isinstance(config, dict) and media_type == OCI_MANIFEST:
        artifact_type = config.get("mediaType")
    if isinstance(doc.get("annotations"), dict) and doc["annotations"]:
        desc["annotations"] = dict(doc["annotations"])
    if artifact_type:
        desc["artifactType"] = artifact_type
    return desc


def discover(target: Target, artifact_type: str | None = None, options: RegistryOptions | None = None,
             jobs: int = 16) -> ReferrerNode:
    """The referrers of the manifest ``target`` names, and theirs, recursively (``oras discover``).
    ``artifact_type`` keeps only referrers of that type, at every level. A layout's referrers are
    the manifests whose ``subject`` is the digest (ocigc's reference graph: tagged, untagged or
    listed by a referrers-tag index); a registry's come from the referrers API, else from the
    ``<alg>-<hex>`` tag."""
    if isinstance(target, RegistryRef):
        return _discover_registry(target, artifact_type, options)
    from ocigc.layout.state import LayoutState

    layout, entry = _layout_manifest(target)
    state = LayoutState.load(layout, jobs)
    graph = state.graph
    root = ReferrerNode(target.path, plain_descriptor(entry["mediaType"], entry["digest"], int(entry["size"])))
    seen = {root.digest}

    def fill(node: ReferrerNode, depth: int) -> None:
        if depth >= MAX_DEPTH:
            return
        for d in sorted(graph.referrers(node.digest)):
            if d in seen:
                continue
            try:
                raw = layout.read_blob(d, MAX_MANIFEST_BYTES)
            except FileNotFoundError:
                raise IntegrityError(f"{layout.where(d.blob_path())}: referrer of {node.digest} is missing") from None
            desc = referrer_descriptor(raw, d)
            if artifact_type and desc.get("artifactType") != artifact_type:
                continue
            seen.add(d)
            child = ReferrerNode(target.path, desc)
            node.referrers.append(child)
            fill(child, depth + 1)

    fill(root, 0)
    return root


def _discover_registry(target: RegistryRef, artifact_type: str | None,
                       options: RegistryOptions | None) -> ReferrerNode:
    from ocigc.oci.referrers import referrers_tag
    from ocigc.transfer.registry_model import BlobNotFound

    if not target.reference:
        raise UsageError(f"{target}: name a tag or a digest")
    client = client_for(target, options)
    raw, media_type, digest = client.get_manifest(target.repo, target.reference)
    root = ReferrerNode(target.name, plain_descriptor(media_type, digest, len(raw)))
    seen = {root.digest}

    def listed(subject: str) -> list[dict[str, Any]]:
        found = client.referrers(target.repo, subject)
        if found is not None:
            return found
        try:
            index_raw, _, _ = client.get_manifest(target.repo, referrers_tag(subject))
        except BlobNotFound:
            return []
        try:
            doc = json.loads(index_raw)
        except ValueError:
            return []
        return [m for m in (doc.get("manifests") or []) if isinstance(m, dict)] if isinstance(doc, dict) else []

    def fill(node: ReferrerNode, depth: int) -> None:
        if depth >= MAX_DEPTH:
            return
        for m in sorted(listed(node.digest), key=lambda m: str(m.get("digest"))):
            d = str(m.get("digest"))
            if d in seen or (artifact_type and m.get("artifactType") != artifact_type):
                continue
            seen.add(d)
            desc = plain_descriptor(str(m.get("mediaType")), d, int(m.get("size") or 0))
            if m.get("annotations"):
                desc["annotations"] = dict(m["annotations"])
            if m.get("artifactType"):
                desc["artifactType"] = m["artifactType"]
            child = ReferrerNode(target.name, desc)
            node.referrers.append(child)
            fill(child, depth + 1)

    fill(root, 0)
    return root
