"""The REF of the oras-style verbs (``attach``, ``discover``, ``manifest``, ``blob``): a layout
reference (``PATH:TAG``, ``PATH@DIGEST``, ``PATH::NAME``, local, mounted or ``s3://``) or a registry
reference (``HOST[:PORT]/REPO:TAG``, ``HOST[:PORT]/REPO@DIGEST``).

Which one a text names is decided on its location (what precedes the tag or digest) as ``migrate``
decides it for its endpoints (``ocigc.transfer.migrate.model.parse_endpoint``): ``oci:PATH`` is
always a layout and ``docker://`` always a registry; a path that exists, an ``s3://`` URL or a
path starting with ``/``, ``.`` or ``~`` is a layout; a first component holding ``.`` or ``:``
(``registry.example.com/app``, ``localhost:5000/app``) or ``localhost`` is a registry; anything
else a layout. No registry client is imported here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ocigc.digest import Digest, is_digest
from ocigc.errors import UsageError
from ocigc.oci.refs import Reference, check_tag, parse_reference

#: A repository name (distribution spec): lowercase components joined by '/'.
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")


@dataclass(frozen=True)
class RegistryRef:
    """``HOST/REPO:TAG`` or ``HOST/REPO@DIGEST`` (both: the digest wins, as registries resolve it)."""

    host: str
    repo: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """``HOST/REPO``: what oras prints before ``@DIGEST``."""
        return f"{self.host}/{self.repo}"

    @property
    def reference(self) -> str:
        """The tag or digest as the registry API takes it."""
        return str(self.digest) if self.digest is not None else (self.tag or "")

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}" if self.tag else self.name


Target = Reference | RegistryRef


def parse_target(text: str) -> Target:
    """``text`` as a layout ``Reference`` or a ``RegistryRef`` (module docstring)."""
    if not text:
        raise UsageError("empty reference")
    if text.startswith("docker://"):
        return _registry(text, text[len("docker://"):])
    if text.startswith("oci:"):
        return parse_reference(text[len("oci:"):])
    if text.startswith("s3://"):
        return parse_reference(text)
    ref = parse_reference(text)
    location = ref.path
    if ref.literal or os.path.exists(location) or location[0] in "/.~" or os.path.exists(text):
        return ref
    first = location.split("/", 1)[0]
    if "/" in location and ("." in first or ":" in first or first == "localhost"):
        return _registry(text, text)
    return ref


def _registry(text: str, ref: str) -> RegistryRef:
    host, _, rest = ref.partition("/")
    if not host or not rest:
        raise UsageError(f"{text!r}: give HOST[:PORT]/REPO:TAG or HOST[:PORT]/REPO@DIGEST")
    digest: Digest | None = None
    tag: str | None = None
    if "@" in rest:
        rest, _, raw = rest.rpartition("@")
        if not is_digest(raw):
            raise UsageError(f"{text!r}: {raw!r} is not a digest (ALG:HEX)")
        digest = Digest(raw)
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], check_tag(rest[colon + 1:], text)
    if not _REPO_RE.match(rest):
        raise UsageError(f"{text!r}: {rest!r} is not a valid repository name (lowercase letters, digits, "
                         "separators '.', '_', '__', '-', components joined by '/')")
    return RegistryRef(host, rest, tag, digest)


def require_layout(target: Target, what: str) -> Reference:
    """``target`` when it names a layout; a usage error for a registry reference (``what`` says which
    verb needs a layout)."""
    if isinstance(target, RegistryRef):
        raise UsageError(f"{target}: {what} works on layouts (a path, a mounted bucket or s3://), not on a registry")
    return target
