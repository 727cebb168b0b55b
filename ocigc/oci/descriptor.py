"""Descriptors and media types.

A descriptor is what a parent says about a child: media type, digest, size, annotations. The
same digest may be described with different media types or sizes by different parents, so the
graph keys nodes by digest only and keeps every description it saw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import InvalidDigest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = frozenset({*INDEX_TYPES, *IMAGE_MANIFEST_TYPES, OCI_ARTIFACT, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
#: Known leaf JSON types: configs hold no descriptors, so they are never read during a walk.
KNOWN_LEAF_JSON = frozenset({OCI_CONFIG, DOCKER_CONFIG, OCI_EMPTY, "application/vnd.docker.plugin.v1+json"})

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_TITLE = "org.opencontainers.image.title"


#: RFC 6838 type/subtype, as the image spec's descriptor schema gives it (parameters allowed after ``;``).
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


def is_valid_media_type(media_type: str) -> bool:
    return _MEDIA_TYPE.match(media_type.split(";", 1)[0].strip()) is not None


def looks_like_json_type(media_type: str | None) -> bool:
    """Unknown media types worth reading and scanning for descriptors: JSON ones."""
    if not media_type:
        return False
    mt = media_type.split(";", 1)[0].strip().lower()
    return mt.endswith("+json") or mt.endswith("/json")


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    platform: Mapping[str, Any] | None = None
    #: Where else the blob may be fetched from (a foreign, non-distributable layer: often absent from
    #: ``blobs/``, and then not damage).
    urls: tuple[str, ...] = ()

    @property
    def ref_name(self) -> str | None:
        value = self.annotations.get(ANNOTATION_REF_NAME)
        return value if isinstance(value, str) else None

    @property
    def has_ref_name(self) -> bool:
        """The entry carries a ref name annotation, whatever its value: an entry whose name is not a
        string (``5``, ``null``) is damage to report, never an untagged entry to drop."""
        return ANNOTATION_REF_NAME in self.annotations

    @property
    def bad_ref_name(self) -> bool:
        """A ref name annotation that is not a string (no command can address it)."""
        return self.has_ref_name and self.ref_name is None

    @classmethod
    def from_json(cls, obj: Any, where: str = "descriptor") -> Descriptor:
        """Parse a descriptor object; raises InvalidDigest or ValueError with a clear message."""
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: not a JSON object")
        digest = obj.get("digest")
        if not isinstance(digest, str):
            raise ValueError(f"{where}: missing digest")
        try:
            dgst = Digest(digest)
        except InvalidDigest as e:
            raise InvalidDigest(f"{where}: {e}") from None
        size = obj.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"{where}: size must be a non-negative integer")
        media_type = obj.get("mediaType")
        if media_type is not None and not isinstance(media_type, str):
            raise ValueError(f"{where}: mediaType must be a string")
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ValueError(f"{where}: annotations must be an object")
        artifact_type = obj.get("artifactType")
        platform = obj.get("platform")
        urls = obj.get("urls")
        return cls(
            media_type or "",
            dgst,
            size,
            {str(k): v for k, v in annotations.items()} if annotations else {},
            artifact_type if isinstance(artifact_type, str) else None,
            platform if isinstance(platform, dict) else None,
            tuple(u for u in urls if isinstance(u, str) and u) if isinstance(urls, list) else (),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform:
            out["platform"] = dict(self.platform)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def looks_like_descriptor(obj: Any) -> bool:
    """Descriptor-shaped: an object with a valid digest and a ``size`` or ``mediaType`` field.

    The field values are not judged here: a descriptor-shaped object whose size is -1 or a string
    is found, then refused by ``Descriptor.from_json`` (fail closed, never ignored)."""
    if not isinstance(obj, dict):
        return False
    if "size" not in obj and "mediaType" not in obj:
        return False
    from ocigc.digest import is_digest

    return is_digest(obj.get("digest"))
