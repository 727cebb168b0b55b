"""Referrer tags: the one home of the rules that tie a tag to the subject it is about.

Two schemes name a subject in a tag, for stores without the referrers API:

* the distribution spec's referrers tag schema: ``<alg>-<hex>`` (the hex truncated to 64
  characters, so a sha512 subject's tag holds the first half of its hex), an index listing the
  referrers of ``<alg>:<hex>``;
* cosign's tags: ``<alg>-<hex>.sig``, ``.att`` and ``.sbom``, a signature, an attestation or an
  SBOM of ``<alg>:<hex>``.

Both are referrer tags everywhere in ocigc (delete, ``sweep --untagged``, retention): they follow
their subject, kept while it is, removed with it unless referrers are kept (``docs/design.md``,
"Referrers"). Any other suffix (``sha256-<hex>.backup``) is an ordinary tag.
"""

from __future__ import annotations

import re
from collections.abc import Set

from ocigc.digest import ALGORITHMS, Digest

#: cosign's suffixes: signature, attestation, SBOM.
COSIGN_SUFFIXES = ("sig", "att", "sbom")
#: The spec truncates the hex of a referrers tag to this many characters.
TAG_HEX_CHARS = 64

_REFERRER_TAG = re.compile(r"^(sha256|sha384|sha512)-([0-9a-f]+)(?:\.(" + "|".join(COSIGN_SUFFIXES) + r"))?$")


def referrers_tag(digest: str) -> str:
    """The distribution spec's referrers tag for a digest: ``<alg>-<first 64 of hex>``."""
    alg, _, enc = digest.partition(":")
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', alg[:32])}-{re.sub(r'[^A-Za-z0-9_.-]', '-', enc[:TAG_HEX_CHARS])}"


def tag_names_subject(name: str | None, digest: Digest) -> bool:
    """Whether tag ``name`` is a referrer tag of ``digest`` (either scheme)."""
    m = _REFERRER_TAG.match(name or "")
    if m is None or m.group(1) != digest.algorithm:
        return False
    hexpart = m.group(2)
    full = ALGORITHMS[digest.algorithm]
    if len(hexpart) == full:
        return hexpart == digest.encoded
    return len(hexpart) == min(full, TAG_HEX_CHARS) and digest.encoded.startswith(hexpart)


def tag_subject(name: str | None, candidates: Set[Digest]) -> Digest | None:
    """The digest among ``candidates`` that tag ``name`` names as its subject, if it is a referrer tag."""
    m = _REFERRER_TAG.match(name or "")
    if m is None:
        return None
    alg, hexpart = m.group(1), m.group(2)
    if len(hexpart) == ALGORITHMS[alg]:
        d = Digest(f"{alg}:{hexpart}")
        return d if d in candidates else None
    if len(hexpart) != TAG_HEX_CHARS:
        return None
    return next((d for d in sorted(candidates) if d.algorithm == alg and d.encoded.startswith(hexpart)), None)


def is_referrer_tag(name: str | None) -> bool:
    """Whether ``name`` has the shape of a referrer tag (whatever its subject)."""
    m = _REFERRER_TAG.match(name or "")
    return m is not None and len(m.group(2)) in (ALGORITHMS[m.group(1)], TAG_HEX_CHARS)
