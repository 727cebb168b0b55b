"""Push's file arguments as oras takes them: ``PATH[:TYPE]``, titles that are safe as file names,
annotations and annotation files."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence

from ocigc.errors import (
    InvalidOption,
    UsageError,
)


# --- file arguments, titles, annotations --------------------------------------------------------
def parse_file_ref(text: str, default_media_type: str = "") -> tuple[str, str]:
    """``FILE[:MEDIATYPE]`` as oras parses it (``cmd/oras/internal/fileref/unix.go``): the media type
    follows the right-most ``:`` not escaped by a backslash; backslashes escape the next character.
    ``hi:txt:`` is the file ``hi:txt`` with the default type."""
    i = len(text)
    while True:
        i = text.rfind(":", 0, i)
        if i < 0 or not _escaped(text, i):
            break
    if i < 0:
        path, media_type = _unescape(text), default_media_type
    else:
        path, media_type = _unescape(text[:i]), text[i + 1:] or default_media_type
    if not path:
        raise UsageError(f"found empty file path in {text!r}")
    return path, media_type


def _escaped(text: str, offset: int) -> bool:
    n = 0
    i = offset - 1
    while i >= 0 and text[i] == "\\":
        n += 1
        i -= 1
    return n % 2 == 1


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 < len(text):
                out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def clean_path(path: str) -> str:
    """Go's ``filepath.Clean`` (POSIX): the shortest equivalent path, ``.`` for empty."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def title_problem(title: str) -> str | None:
    """Why a title would write outside the pull directory, or None when it is safe."""
    if not title:
        return "empty title"
    if "\x00" in title:
        return "title contains a NUL byte"
    if title.startswith("/"):
        return "absolute path"
    if ".." in title.split("/"):
        return "path contains '..'"
    return None


def parse_annotation_flags(flags: Sequence[str]) -> dict[str, str]:
    """``--annotation KEY=VALUE`` (repeatable), as oras: split at the first ``=``; a key twice is an error."""
    out: dict[str, str] = {}
    for anno in flags:
        key, sep, value = anno.partition("=")
        if not sep:
            raise InvalidOption("annotation", f"{anno!r}: annotation value doesn't match the required format KEY=VALUE")
        if key in out:
            raise InvalidOption("annotation", f"duplicate annotation key {key!r}")
        out[key] = value
    return out


def load_annotation_file(path: str) -> dict[str, dict[str, str]]:
    """oras' ``--annotation-file``: ``{"$manifest": {...}, "$config": {...}, "<file>": {...}}``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(16 * 1024 * 1024 + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read the annotation file: {e.strerror or e}") from None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise UsageError(f"{path}: invalid annotation JSON file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: the annotation file must be a JSON object of objects")
    out: dict[str, dict[str, str]] = {}
    for key, value in doc.items():
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise UsageError(f"{path}: annotations of {key!r} must be an object of strings")
        out[key] = {str(k): v for k, v in value.items()}
    return out
