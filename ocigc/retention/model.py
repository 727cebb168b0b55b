"""Retention policy model: rules and their keys, time sources, stamps and the facts a decision reads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ocigc.digest import Digest
from ocigc.errors import UsageError
from ocigc.layout.layout import Layout

# --- the model ----------------------------------------------------------------------------------
SOURCE_MANIFEST = "manifest-annotation"


SOURCE_ENTRY = "entry-annotation"


SOURCE_CONFIG = "config-created"


SOURCE_MTIME = "mtime"


SOURCES = (SOURCE_MANIFEST, SOURCE_ENTRY, SOURCE_CONFIG, SOURCE_MTIME)


TIME_SOURCES = ("auto", *SOURCES)


SOURCE_WORDS = {
    SOURCE_MANIFEST: "the manifest's org.opencontainers.image.created annotation",
    SOURCE_ENTRY: "the index.json entry's org.opencontainers.image.created annotation",
    SOURCE_CONFIG: "the image config's created field",
    SOURCE_MTIME: "the manifest blob's modification time",
}


DEFAULT_SAME_TIME_WINDOW = 60.0


POLICY_VERSION = 1


UntaggedMode = Literal["keep", "delete"]


ReferrerMode = Literal["delete", "keep"]


AmbiguousMode = Literal["refuse", "proceed"]


#: Keys a rule (or ``[defaults]``) may set, and what each must be (for messages).
RULE_KEYS: dict[str, str] = {
    "name": "a string",
    "repositories": "a glob or a list of globs",
    "keep_last": "a non-negative integer",
    "keep_within": "a duration such as \"30d\"",
    "keep_tags": "a regex or a list of regexes",
    "keep_latest": "true or false",
    "delete_tags": "a regex or a list of regexes",
    "delete_older_than": "a duration such as \"90d\"",
    "untagged": "\"keep\" or \"delete\"",
    "untagged_older_than": "a duration",
    "referrers": "\"delete\" or \"keep\"",
    "grace": "a duration (0 allowed)",
    "trash": "true or false",
    "trash_retention": "a duration",
    "time_source": " or ".join(f'"{s}"' for s in TIME_SOURCES),
    "ambiguous_times": "\"refuse\" or \"proceed\"",
    "same_time_window": "a duration",
}


#: Keys only a rule may set (not ``[defaults]``).
RULE_ONLY = frozenset({"name", "repositories"})


TOP_KEYS = frozenset({"version", "defaults", "rule"})


class PolicyError(UsageError):
    """A policy file that cannot be used: one line naming the file, the line or key, the problem."""


@dataclass(frozen=True)
class Rule:
    name: str
    number: int  # 1-based position in the file
    repositories: tuple[str, ...]
    keep_last: int | None = None
    keep_within: float | None = None
    keep_tags: tuple[str, ...] = ()
    keep_latest: bool = True
    delete_tags: tuple[str, ...] | None = None
    delete_older_than: float | None = None
    untagged: UntaggedMode = "keep"
    untagged_older_than: float | None = None
    referrers: ReferrerMode = "delete"
    grace: float | None = None
    trash: bool | None = None
    trash_retention: float | None = None
    time_source: str = "auto"
    ambiguous_times: AmbiguousMode = "refuse"
    same_time_window: float = DEFAULT_SAME_TIME_WINDOW
    line: int | None = None
    _repo_res: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _keep_res: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _delete_res: tuple[re.Pattern[str], ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_repo_res", tuple(glob_regex(g) for g in self.repositories))
        object.__setattr__(self, "_keep_res", tuple(re.compile(p) for p in self.keep_tags))
        if self.delete_tags is not None:
            object.__setattr__(self, "_delete_res", tuple(re.compile(p) for p in self.delete_tags))

    @property
    def label(self) -> str:
        return self.name

    @property
    def uses_time(self) -> bool:
        """Whether a decision of this rule depends on when a tag was made."""
        return self.keep_last is not None or self.keep_within is not None or self.delete_older_than is not None

    @property
    def removes_tags(self) -> bool:
        return self.delete_tags is not None or self.delete_older_than is not None

    def matches(self, repository: str) -> bool:
        repo = repository.strip("/")
        return any(r.fullmatch(repo) for r in self._repo_res)

    def keep_pattern(self, tag: str) -> str | None:
        for text, rx in zip(self.keep_tags, self._keep_res, strict=True):
            if rx.fullmatch(tag):
                return text
        return None

    def delete_pattern(self, tag: str) -> str | None:
        if self.delete_tags is None or self._delete_res is None:
            return None
        for text, rx in zip(self.delete_tags, self._delete_res, strict=True):
            if rx.fullmatch(tag):
                return text
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "number": self.number, "line": self.line, "repositories": list(self.repositories),
            "keep_last": self.keep_last, "keep_within": self.keep_within, "keep_tags": list(self.keep_tags),
            "keep_latest": self.keep_latest,
            "delete_tags": list(self.delete_tags) if self.delete_tags is not None else None,
            "delete_older_than": self.delete_older_than, "untagged": self.untagged,
            "untagged_older_than": self.untagged_older_than, "referrers": self.referrers, "grace": self.grace,
            "trash": self.trash, "trash_retention": self.trash_retention, "time_source": self.time_source,
            "ambiguous_times": self.ambiguous_times, "same_time_window": self.same_time_window,
        }


def repository_name(layout: Layout) -> str:
    """The name rules match: the layout's path under the sweep root (its directory name for a root)."""
    if layout.name:
        return layout.name.strip("/")
    return Path(layout.location.rstrip("/")).name


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A repository glob: ``*`` and ``?`` stay within one path segment, ``**`` crosses ``/``."""
    pat = pattern.strip().strip("/")
    out: list[str] = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pat.find("]", i + 2 if pat[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pat[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


# --- times ---------------------------------------------------------------------------------------
_FRACTION = re.compile(r"(\.\d+)")


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (as OCI annotations and config ``created`` use) as POSIX seconds."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: m.group(1)[:7], text, count=1)  # Go writes nanoseconds
    text = text.replace(" ", "T", 1) if "T" not in text and "t" not in text else text
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if dt.year < 1971:  # "0001-01-01T00:00:00Z" and epoch zero: reproducible builds mean "unknown"
        return None
    return dt.timestamp()


def format_time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Stamp:
    time: float | None
    source: str | None
    detail: str | None = None  # why there is no time (or what was skipped)


@dataclass
class Facts:
    """What ``decide`` needs beyond the index and the graph; gathered through the layout."""

    #: index.json position -> the time of that tagged entry (only when the rule uses times).
    stamps: dict[int, Stamp] = field(default_factory=dict)
    #: manifest digest -> blob mtime; None when the stat failed or the blob is missing.
    mtimes: dict[Digest, float | None] = field(default_factory=dict)
