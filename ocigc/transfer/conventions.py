"""What oras writes, byte for byte: its media types and annotations, and JSON encoded as Go's
encoding/json does (so digests match oras')."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import (
    UsageError,
)
from ocigc.oci.descriptor import (
    ANNOTATION_CREATED,
    OCI_EMPTY,
)

# --- oras conventions -------------------------------------------------------------------------
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"


MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


MEDIA_TYPE_UNKNOWN_CONFIG = "application/vnd.unknown.config.v1+json"


MEDIA_TYPE_UNKNOWN_ARTIFACT = "application/vnd.unknown.artifact.v1"


ANNOTATION_CONTENT_DIGEST = "io.deis.oras.content.digest"


ANNOTATION_UNPACK = "io.deis.oras.content.unpack"


#: Keys of ``--annotation-file`` that are not file names.
ANNOTATION_FILE_MANIFEST = "$manifest"


ANNOTATION_FILE_CONFIG = "$config"


EMPTY_JSON = b"{}"


EMPTY_JSON_DIGEST = Digest("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")


OCI_LAYOUT_CONTENT = b'{"imageLayoutVersion":"1.0.0"}'


NEW_INDEX_CONTENT = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'


DEFAULT_PUSH_CONCURRENCY = 5  # oras push
DEFAULT_PULL_CONCURRENCY = 3  # oras pull


GZIP_LEVEL = 6  # Go's compress/gzip DefaultCompression


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# --- Go encoding/json ---------------------------------------------------------------------------
_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


_GO_ESCAPE_RE = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029]')


def _go_string(s: str) -> str:
    return '"' + _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), s) + '"'


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's ``json.Marshal`` writes it. Dicts keep their order: build structs in
    field order and sort map keys (``annotations``) before calling."""
    out: list[str] = []
    _go_encode(value, out)
    return "".join(out).encode()


def _go_encode(v: Any, out: list[str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, str):
        out.append(_go_string(v))
    elif isinstance(v, Mapping):
        out.append("{")
        for i, (k, val) in enumerate(v.items()):
            if i:
                out.append(",")
            out.append(_go_string(str(k)))
            out.append(":")
            _go_encode(val, out)
        out.append("}")
    elif isinstance(v, list | tuple):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _go_encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def descriptor_json(media_type: str, digest: str, size: int, annotations: Mapping[str, str] | None = None,
                    data: str | None = None, artifact_type: str | None = None) -> dict[str, Any]:
    """A descriptor in the field order of image-spec's Go ``Descriptor`` struct."""
    d: dict[str, Any] = {"mediaType": media_type, "digest": str(digest), "size": size}
    if annotations:
        d["annotations"] = dict(sorted(annotations.items()))
    if data is not None:
        d["data"] = data
    if artifact_type:
        d["artifactType"] = artifact_type
    return d


def empty_descriptor(annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``ocispec.DescriptorEmptyJSON``: the ``{}`` blob, with its data inline (``e30=``)."""
    return descriptor_json(OCI_EMPTY, EMPTY_JSON_DIGEST, len(EMPTY_JSON), annotations, data="e30=")


def utc_now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_rfc3339(value: str, where: str) -> None:
    ok = bool(_RFC3339.match(value))
    if ok:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            ok = False
    if not ok:
        raise UsageError(f"{where}: {ANNOTATION_CREATED} must be an RFC 3339 date and time, got {value!r}")
