"""References as oras writes them: ``PATH``, ``PATH:TAG``, ``PATH@ALG:HEX``, and ``PATH::NAME``.

The grammar (docs/cli.md, "References"):

* ``PATH@ALG:HEX``: a digest follows the last ``@`` (when what follows is not a path).
* ``PATH:TAG``: the tag separator is the last ``:`` after the last ``/`` (``host:5000/x`` has no tag).
  ``PATH:TAG1,TAG2`` (push) gives several tags.
* ``PATH::NAME``: the first ``::`` separates a layout from a ref name taken literally, whatever it
  holds: the entries podman and skopeo write with a full reference as their ref name
  (``org.opencontainers.image.ref.name`` = ``localhost/app:v2``) are ``L::localhost/app:v2``. It only
  *addresses* entries: a tag ocigc writes is always a registry tag (``TAG_RE``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ocigc.digest import Digest, is_digest
from ocigc.errors import InvalidDigest, ReferenceNotFound, UsageError, printable

#: A registry tag (the distribution spec's grammar): what ``push`` and ``tag`` write. Other ref names
#: found in a layout (full references, ``1.0+build``) are kept and can be addressed (``PATH::NAME``).
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
TAG_RULE = "a tag is 1 to 128 of A-Z a-z 0-9 _ . - and starts with none of . -, as registries require"
#: Separates a layout from a ref name taken literally.
LITERAL = "::"


@dataclass(frozen=True, slots=True)
class Reference:
    path: str
    tag: str | None = None
    digest: Digest | None = None
    #: ``PATH::NAME``: ``tag`` is an exact ref name (one name, no commas), not necessarily a registry tag.
    literal: bool = False

    def __str__(self) -> str:
        if self.digest:
            return f"{self.path}@{self.digest}"
        if self.tag is not None:
            return f"{self.path}{LITERAL if self.literal else ':'}{self.tag}"
        return self.path

    @property
    def tags(self) -> list[str]:
        if self.literal:
            return [self.tag] if self.tag is not None else []
        return [t for t in (self.tag or "").split(",") if t]


def check_tag(tag: str, where: str | None = None) -> str:
    """``tag`` when it is a registry tag; else a UsageError (exit 2) naming it and the grammar."""
    if TAG_RE.match(tag):
        return tag
    prefix = f"{where}: " if where else ""
    raise UsageError(f"{prefix}{tag!r} is not a valid tag: {TAG_RULE}")


def address(path: str, name: str) -> str:
    """How to write the reference of the entry named ``name`` in the layout at ``path``: ``PATH:NAME``
    when that parses back to the same name, else ``PATH::NAME``."""
    plain = f"{path}:{name}"
    try:
        back = parse_reference(plain)
    except UsageError:
        back = None
    if back is not None and back.path == path and back.tag == name and name and "," not in name:
        return plain
    return f"{path}{LITERAL}{name}"


def name_hint(path: str, name: str, names: Iterable[str]) -> str:
    """`` (did you mean ...?)`` for a tag that is not there: ref names ending in ``:NAME`` or ``/NAME``
    (full references, as podman and skopeo write them), each written so that it can be typed back."""
    close = sorted(n for n in set(names) if n != name and (n.endswith(f":{name}") or n.endswith(f"/{name}")))
    if not close:
        return ""
    return f" (did you mean {', '.join(address(path, n) for n in close[:3])}?)"


def no_such_tag(ref: Reference, names: Iterable[str]) -> ReferenceNotFound:
    """The error for a tag no ``index.json`` entry carries, naming the close ref names as they can be
    typed back (``L::localhost/app:v2`` for a full reference)."""
    assert ref.tag is not None
    what = "ref name" if ref.literal else "tag"
    return ReferenceNotFound(f"{printable(ref.path)}: no {what} {ref.tag!r} in index.json"
                             f"{name_hint(ref.path, ref.tag, names)}")


def parse_reference(text: str) -> Reference:
    if not text:
        raise UsageError("empty reference")
    if LITERAL in text:
        path, _, name = text.partition(LITERAL)
        if not path:
            raise UsageError(f"{text!r}: missing layout path before '{LITERAL}'")
        if not name:
            raise UsageError(f"{text!r}: empty ref name after '{LITERAL}'")
        return Reference(path, name, literal=True)
    path, at, rest = text.rpartition("@")
    if at and "/" not in rest:
        if not path:
            raise UsageError(f"{text!r}: missing layout path before '@'")
        try:
            return Reference(path, None, Digest(rest))
        except InvalidDigest as e:
            raise UsageError(f"{text!r}: {e}") from None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash and colon != -1:
        path, tag = text[:colon], text[colon + 1:]
        if not path:
            raise UsageError(f"{text!r}: missing layout path before ':'")
        if not tag:
            raise UsageError(f"{text!r}: empty tag after ':'")
        return Reference(path, tag)
    return Reference(text)


def colon_splits(text: str) -> list[tuple[str, str]]:
    """Every way to read ``text`` as ``LAYOUT:NAME`` with NAME holding a ``/`` or ``:`` (a full
    reference), longest layout path first: for the hint when the path the grammar gives does not
    exist (``L:localhost/app:v2`` is read as layout ``L:localhost/app``, tag ``v2``)."""
    start = text.find("://") + 3 if text.startswith("s3://") else 0
    out: list[tuple[str, str]] = []
    i = text.find(":", start)
    while i != -1:
        path, name = text[:i], text[i + 1:]
        if path and name and ("/" in name or ":" in name):
            out.append((path, name))
        i = text.find(":", i + 1)
    return list(reversed(out))


def ambiguous_tag(path: str) -> str | None:
    """For a layout path holding ``:`` (after an ``s3://`` scheme): what oras would read as its tag
    (``L:Bad/Tag`` -> ``Bad/Tag``). A writer that would create such a layout refuses instead."""
    start = path.find("://") + 3 if path.startswith("s3://") else 0
    i = path.rfind(":", start)
    return path[i + 1:] if i != -1 else None


def same_location(a: str, b: str) -> bool:
    """Whether two layout locations name one layout (``L`` and ``./L/``; ``s3://b/x`` and ``s3://b/x/``)."""
    if a.startswith("s3://") or b.startswith("s3://"):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def reference_in(text: str, layout_path: str) -> Reference | None:
    """``text`` as a reference to an entry of the layout at ``layout_path`` (``tag``'s new tags,
    ``push --subject``): ``TAG``, ``DIGEST``, ``@DIGEST``, ``::NAME``, or a reference whose layout is
    that one (``L:TAG``, ``L@DIGEST``, ``L::NAME``, and ``L:NAME`` with NAME a full reference such as
    ``localhost/app:v2``, which the grammar alone would read as layout ``L:localhost/app``). None when
    ``text`` names another layout."""
    bare = text[1:] if text.startswith("@") else text
    if is_digest(bare):
        return Reference(layout_path, None, Digest(bare))
    if text.startswith(LITERAL):
        if len(text) == len(LITERAL):
            raise UsageError(f"{text!r}: empty ref name after '{LITERAL}'")
        return Reference(layout_path, text[len(LITERAL):], literal=True)
    if not any(c in text for c in "/:@"):
        return Reference(layout_path, text)
    ref = parse_reference(text)
    if same_location(ref.path, layout_path):
        return Reference(layout_path, ref.tag, ref.digest, ref.literal)
    for path, name in colon_splits(text):
        if same_location(path, layout_path):
            return Reference(layout_path, name, literal=True)
    return None
