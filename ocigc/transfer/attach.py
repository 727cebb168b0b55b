"""``attach``: a referrer, as ``oras attach`` writes it (oras CLI ``cmd/oras/root/attach.go``).

The referrer is the manifest ``push`` packs (``ocigc.transfer.push.pack_manifest``: the files as
titled layers, the empty config, ``artifactType``, ``org.opencontainers.image.created`` unless
given, Go's JSON encoding) with a ``subject``, the plain descriptor (mediaType, digest, size) of
the manifest the reference names.

* On a layout (local, mounted, ``s3://``) it is ``push`` with a subject and no tag: the same
  blobs, the same shared lock, and an untagged ``index.json`` entry carrying the referrer's
  artifactType and annotations, as oras-go's OCI store records it.
* On a registry the blobs are uploaded, the manifest is PUT by its digest, and when the registry
  does not answer with ``OCI-Subject`` and serves no referrers API, the referrer is added to the
  index tagged ``<alg>-<hex>`` of its subject (the distribution spec's referrers tag schema), as
  ``migrate`` keeps it.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from ocigc.digest import Digest
from ocigc.errors import InvalidOption, UsageError
from ocigc.progress import NullProgress, Progress
from ocigc.transfer.push_request import BlobSource, Locker, PushRequest
from ocigc.transfer.target import RegistryRef, Target

if TYPE_CHECKING:
    from ocigc.transfer.registry_model import RegistryOptions


@dataclass
class AttachRequest:
    target: Target
    artifact_type: str
    files: list[str] = field(default_factory=list)  # FILE[:MEDIATYPE] as given
    annotations: dict[str, str] = field(default_factory=dict)
    annotation_file: dict[str, dict[str, str]] | None = None
    disable_path_validation: bool = False
    concurrency: int = 5
    #: Layouts: the shared lock (as push).
    locker: Locker | None = None
    #: Registries: how to reach them.
    registry: RegistryOptions | None = None


@dataclass
class AttachResult:
    #: The layout path or ``HOST/REPO``.
    name: str
    kind: str  # "oci-layout" | "registry"
    subject: dict[str, Any]
    descriptor: dict[str, Any]
    manifest: bytes
    blobs: list[BlobSource]
    #: Registries: how the referrer is listed ("api": the registry indexes it; "tag": the fallback tag).
    listed_by: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def digest(self) -> Digest:
        return Digest(self.descriptor["digest"])

    def to_json(self) -> dict[str, Any]:
        """oras' ``attach --format json`` shape: the referrer's descriptor with ``ref``, plus ocigc's
        ``subject`` and ``blobs``."""
        return {"ref": f"{self.name}@{self.digest}", **self.descriptor,
                "subject": {"ref": f"{self.name}@{self.subject['digest']}", **self.subject},
                "blobs": [{"title": b.descriptor.get("annotations", {}).get("org.opencontainers.image.title"),
                           "media_type": b.descriptor["mediaType"], "digest": b.descriptor["digest"],
                           "size": b.size, "uploaded": b.uploaded} for b in self.blobs],
                **({"listed_by": self.listed_by} if self.listed_by else {}), "warnings": self.warnings}


def attach(req: AttachRequest, progress: Progress | None = None) -> AttachResult:
    """Write a referrer of the manifest ``req.target`` names (module docstring)."""
    if not req.artifact_type:
        raise InvalidOption("artifact_type", "is required: the type of the artifact attached (e.g. "
                                             "application/vnd.example.sbom.v1)")
    if not req.files and not req.annotations and not req.annotation_file:
        raise UsageError("no file and no annotation given: attach needs at least one of them (as oras)")
    if isinstance(req.target, RegistryRef):
        return _attach_registry(req, req.target, progress or NullProgress())
    from ocigc.transfer.push import push

    ref = req.target
    if ref.tag is None and ref.digest is None:
        raise UsageError(f"{ref}: name the subject by tag (PATH:TAG) or digest (PATH@DIGEST)")
    if ref.tag is not None and not ref.literal and "," in ref.tag:
        raise UsageError(f"{ref}: one subject")
    result = push(PushRequest(
        layout_path=ref.path, tags=[], files=list(req.files), artifact_type=req.artifact_type,
        annotations=dict(req.annotations), annotation_file=req.annotation_file, subject=str(ref),
        disable_path_validation=req.disable_path_validation, concurrency=req.concurrency, locker=req.locker),
        progress)
    import json

    subject = json.loads(result.manifest)["subject"]
    return AttachResult(ref.path, "oci-layout", subject, result.descriptor, result.manifest, result.blobs,
                        warnings=result.warnings)


def _attach_registry(req: AttachRequest, ref: RegistryRef, progress: Progress) -> AttachResult:
    from ocigc.transfer.content import client_for, plain_descriptor
    from ocigc.transfer.push import _hash_sources, _prepare, pack_manifest
    from ocigc.transfer.registry import add_to_referrers_tag

    if not ref.reference:
        raise UsageError(f"{ref}: name the subject by tag (HOST/REPO:TAG) or digest (HOST/REPO@DIGEST)")
    prep = _prepare(PushRequest(
        layout_path=str(ref), tags=[], files=list(req.files), artifact_type=req.artifact_type,
        annotations=dict(req.annotations), annotation_file=req.annotation_file, subject=str(ref),
        disable_path_validation=req.disable_path_validation, concurrency=req.concurrency), layout_path=False)
    client = client_for(ref, req.registry)
    raw, media_type, digest = client.get_manifest(ref.repo, ref.reference)
    subject = plain_descriptor(media_type, digest, len(raw))
    with tempfile.TemporaryDirectory(prefix="ocigc-attach-") as tmp:
        blobs = _hash_sources(prep.items, prep.afile, prep.config_item, prep.config_annotations, tmp,
                              req.concurrency, progress)
        packed = pack_manifest(prep, blobs, subject)
        for b in [packed.config, *packed.layers]:
            if client.blob_exists(ref.repo, str(b.digest)):
                continue
            client.upload_blob(ref.repo, str(b.digest), b.size, _opener(b))
            b.uploaded = True
    answer = client.put_manifest(ref.repo, str(packed.manifest.digest), packed.raw,
                                 packed.manifest.descriptor["mediaType"])
    packed.manifest.uploaded = True
    listed_by = "api"
    if not answer.get("subject") and client.referrers(ref.repo, str(digest)) is None:
        descriptor = {k: v for k, v in packed.manifest.descriptor.items()}
        add_to_referrers_tag(client, ref.repo, str(digest), [descriptor])
        listed_by = "tag"
    return AttachResult(ref.name, "registry", subject, packed.manifest.descriptor, packed.raw,
                        [packed.config, *packed.layers, packed.manifest], listed_by, prep.warnings)


def _opener(b: BlobSource) -> Any:
    def open_source() -> tuple[BinaryIO, int]:
        if b.data is not None:
            return io.BytesIO(b.data), len(b.data)
        assert b.path is not None
        return open(b.path, "rb"), os.path.getsize(b.path)

    return open_source
