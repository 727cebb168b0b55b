"""References as oras writes them: ``PATH``, ``PATH:TAG``, ``PATH@ALG:HEX``.

The tag separator is the last ``:`` after the last ``/``; a digest follows the last ``@``.
``PATH:TAG1,TAG2`` (push) gives several tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocigc.digest import Digest
from ocigc.errors import InvalidDigest, UsageError

#: A registry tag (distribution spec). ocigc accepts any ref name in a layout, but warns on others.
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True)
class Reference:
    path: str
    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        if self.digest:
            return f"{self.path}@{self.digest}"
        if self.tag is not None:
            return f"{self.path}:{self.tag}"
        return self.path

    @property
    def tags(self) -> list[str]:
        return [t for t in (self.tag or "").split(",") if t]


def parse_reference(text: str) -> Reference:
    if not text:
        raise UsageError("empty reference")
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
