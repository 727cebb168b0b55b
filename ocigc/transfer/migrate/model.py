"""What migrate works on: endpoints, tag mapping, filters, and the plan of each repository (nodes,
blobs, entries, what each becomes in the destination)."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO, Protocol

from ocigc.digest import Digest
from ocigc.errors import EXIT_ERROR, InvalidOption, UsageError
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import (
    Descriptor,
)
from ocigc.oci.refs import TAG_RE
from ocigc.progress import Counter, Progress
from ocigc.transfer.registry_model import RegistryOptions

#: What happens to a blob, manifest or entry in the destination.
COPY, PRESENT, MOUNT, MOVE = "copy", "present", "mount", "move"
DEFAULT_JOBS = 8


#: A repository name (distribution spec): lowercase components joined by ``/``.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"


REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


_TAG_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


#: A foreign layer (its descriptor has ``urls``) that the source does not hold: not copied.
FOREIGN = "foreign"


class InvalidTags(StrEnum):
    """What to do with a layout ref name that is not a registry tag and not a full reference."""

    refuse = "refuse"
    digest = "digest"
    sanitize = "sanitize"


# --------------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    kind: str  # "layout" | "registry"
    text: str
    path: str = ""
    host: str = ""
    prefix: str = ""

    @property
    def is_registry(self) -> bool:
        return self.kind == "registry"

    def __str__(self) -> str:
        if self.is_registry:
            return f"{self.host}/{self.prefix}" if self.prefix else self.host
        return self.path


def parse_endpoint(text: str) -> Endpoint:
    """A layout path or a registry reference.

    ``docker://HOST/...`` is always a registry and ``oci:PATH`` always a path. Otherwise a
    path that exists, or starts with ``/``, ``.`` or ``~``, is a layout path; a first component
    holding ``.`` or ``:`` (or ``localhost``) makes a registry reference (``HOST[:PORT]/PREFIX``).
    """
    if not text:
        raise UsageError("empty source or destination")
    if text.startswith("docker://"):
        return _registry_endpoint(text, text[len("docker://"):])
    if text.startswith("oci:"):
        return Endpoint("layout", text, path=text[len("oci:"):] or ".")
    if text.startswith("s3://") or os.path.exists(text) or text[0] in "/.~":
        return Endpoint("layout", text, path=os.path.expanduser(text))
    first = text.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        return _registry_endpoint(text, text)
    return Endpoint("layout", text, path=text)


def _registry_endpoint(text: str, ref: str) -> Endpoint:
    host, _, prefix = ref.partition("/")
    prefix = prefix.strip("/")
    if not host:
        raise UsageError(f"{text!r}: no registry host")
    if "@" in prefix or ":" in prefix:
        raise UsageError(f"{text!r}: give a registry and an optional repository prefix (HOST[:PORT]/PREFIX), "
                         "without a tag or digest")
    if prefix and not REPO_RE.match(prefix):
        raise UsageError(f"{text!r}: {prefix!r} is not a valid repository name (lowercase letters, digits, "
                         "separators '.', '_', '__', '-', components joined by '/')")
    return Endpoint("registry", text, host=host, prefix=prefix)


def parse_reference(text: str) -> tuple[Endpoint, str | None]:
    """``cp``'s SRC or DST: an endpoint (one layout, or ``HOST[:PORT]/REPO``) and its tag or digest
    (None when the text names none), oras' syntax: ``L:T``, ``L@sha256:...``,
    ``host[:port]/repo:tag``, ``host/repo@sha256:...``. The reference is split off first (a ``:``
    after the last ``/``, or ``@``); what remains is told a layout or a registry as ``migrate``
    tells them (``parse_endpoint``: ``docker://`` and ``oci:`` prefixes force either)."""
    if not text:
        raise UsageError("empty source or destination")
    scheme = ""
    for prefix in ("docker://", "oci:", "s3://"):
        if text.startswith(prefix):
            scheme, text = prefix, text[len(prefix):]
            break
    base, at, digest = text.partition("@")
    ref: str | None = digest if at else None
    if at and not digest:
        raise UsageError(f"{scheme}{text!r}: nothing after '@'")
    if not at:
        slash, colon = base.rfind("/"), base.rfind(":")
        if colon > slash:
            base, ref = base[:colon], base[colon + 1:]
    if ref is not None and not ref:
        raise UsageError(f"{scheme}{text!r}: empty tag")
    return parse_endpoint(scheme + base), ref


def join_repo(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


# --------------------------------------------------------------------------------------------------
# Ref names -> registry tags
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TagMapping:
    tag: str | None
    note: str | None = None
    error: str | None = None


def map_tag(name: str, mode: InvalidTags = InvalidTags.refuse) -> TagMapping:
    """The registry tag for a layout ref name (the rule of docs/migrate.md).

    1. A valid tag (``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``) stays as it is.
    2. A full reference (``docker.io/library/alpine:3.19``, ``host:5000/team/app:v1``): the part
       after the last ``:`` that follows the last ``/``, when that part is a valid tag.
    3. A reference by digest (``name@sha256:...``) names no tag: the manifest goes by digest.
    4. Anything else: ``refuse`` (the repository is not copied), ``digest`` (pushed by digest,
       untagged) or ``sanitize`` (every character outside ``[A-Za-z0-9_.-]`` becomes ``-``, a
       leading ``.`` or ``-`` gets a ``_`` prefix, and a name over 128 characters is cut to 119
       and ends with ``-`` and 8 hex digits of the sha256 of the original name).
    """
    if TAG_RE.match(name):
        return TagMapping(name)
    base, at, _ = name.partition("@")
    slash, colon = base.rfind("/"), base.rfind(":")
    candidate = base[colon + 1:] if colon > slash else None
    if candidate and TAG_RE.match(candidate):
        return TagMapping(candidate, f"ref name {name!r} -> tag {candidate!r} (full reference)")
    if at and candidate is None:
        return TagMapping(None, f"ref name {name!r} names a digest, not a tag: pushed by digest only")
    why = "longer than 128 characters" if len(name) > 128 else "not a valid registry tag"
    if mode is InvalidTags.digest:
        return TagMapping(None, f"ref name {name!r} is {why}: pushed by digest only (--invalid-tags digest)")
    if mode is InvalidTags.sanitize:
        tag = _sanitize(candidate if candidate else name, name)
        return TagMapping(tag, f"ref name {name!r} -> tag {tag!r} (--invalid-tags sanitize)")
    return TagMapping(None, error=f"ref name {name!r} is {why} and not a full reference NAME:TAG; "
                                  "rename it, --exclude it, or pass --invalid-tags digest|sanitize")


def _sanitize(text: str, original: str) -> str:
    tag = _TAG_BAD_CHARS.sub("-", text)
    if not tag or not re.match(r"[A-Za-z0-9_]", tag[0]):
        tag = "_" + tag
    if len(tag) > 128:
        tag = f"{tag[:119]}-{hashlib.sha256(original.encode()).hexdigest()[:8]}"
    return tag


# --------------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------------
class FilterMatchesNothing(InvalidOption):
    """An ``--include`` or ``--exclude`` that matched no repository and no tag: an error (exit 1), not an
    empty run that looks like success."""

    exit_code = EXIT_ERROR


@dataclass(frozen=True)
class Filters:
    """``--include``/``--exclude`` globs: ``REPO`` matches repositories, ``REPO:TAG`` tags of them.

    Repository names are those of the source (a layout's path under the root, ``""`` for a source
    that is one layout; a registry repository under the prefix); tags are source ref names (before
    mapping). ``matched`` collects the patterns that matched something (``unmatched``).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    matched: set[str] = field(default_factory=set, compare=False, hash=False)

    @staticmethod
    def _split(pattern: str) -> tuple[str, str | None]:
        repo, colon, tag = pattern.partition(":")
        return repo, (tag if colon else None)

    def _hits(self, patterns: tuple[str, ...], repo: str, tag: str | None = None) -> list[str]:
        """Repository patterns matching ``repo`` (``tag`` None), or tag patterns matching ``repo:tag``."""
        hits = []
        for p in patterns:
            r, t = self._split(p)
            if (t is None) != (tag is None) or not fnmatch.fnmatchcase(repo, r):
                continue
            if tag is None or t is None or fnmatch.fnmatchcase(tag, t):
                hits.append(p)
        self.matched.update(hits)
        return hits

    def _repo_level(self, patterns: tuple[str, ...], repo: str) -> bool:
        return bool(self._hits(patterns, repo))

    def _tag_level(self, patterns: tuple[str, ...], repo: str, tag: str) -> bool:
        return bool(self._hits(patterns, repo, tag))

    def repo_selected(self, repo: str) -> bool:
        if self._repo_level(self.exclude, repo):
            return False
        if not self.include:
            return True
        return any(fnmatch.fnmatchcase(repo, r) for r, _ in map(self._split, self.include))

    def untagged_selected(self, repo: str) -> bool:
        """Untagged roots follow the repository unless only some of its tags are included."""
        return self.repo_selected(repo) and (not self.include or self._repo_level(self.include, repo))

    def tag_selected(self, repo: str, tag: str) -> bool:
        excluded = self._tag_level(self.exclude, repo, tag)
        if not self.repo_selected(repo) or excluded:
            return False
        if not self.include:
            return True
        whole, some = self._repo_level(self.include, repo), self._tag_level(self.include, repo, tag)
        return whole or some

    def unmatched(self) -> list[tuple[str, str]]:
        """(option, pattern) of every filter that matched nothing."""
        return [(opt, p) for opt, pats in (("include", self.include), ("exclude", self.exclude)) for p in pats
                if p not in self.matched]


# --------------------------------------------------------------------------------------------------
# Plan model
# --------------------------------------------------------------------------------------------------
@dataclass
class Root:
    digest: Digest
    media_type: str
    size: int
    name: str | None
    entry: dict[str, Any] | None = None


@dataclass
class Node:
    """A manifest (or index) to copy, with its exact bytes."""

    digest: Digest
    media_type: str
    raw: bytes
    kind: str
    children: tuple[tuple[str, Descriptor], ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, Any] | None = None
    config_media_type: str | None = None

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def is_manifest(self) -> bool:
        return self.kind != "leaf"

    def registry_digests(self) -> set[str]:
        """Digests a registry may report for this content (it hashes with sha256)."""
        return {self.digest, Digest.from_bytes(self.raw, "sha256")}

    def referrer_descriptor(self) -> dict[str, Any]:
        """The descriptor the referrers API (and its fallback tag) lists for this manifest."""
        desc: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        artifact_type = self.artifact_type or (self.config_media_type if self.kind == mf.KIND_MANIFEST else None)
        if artifact_type:
            desc["artifactType"] = artifact_type
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return desc


@dataclass
class BlobItem:
    digest: Digest
    size: int
    media_type: str
    state: str = COPY
    mount_from: str | None = None
    urls: tuple[str, ...] = ()


@dataclass
class EntryPlan:
    """One root as the destination will carry it: a tag (or layout ref name), or untagged."""

    digest: Digest
    media_type: str
    size: int
    name: str | None
    src_name: str | None
    entry: dict[str, Any] | None = None
    referrer: bool = False
    state: str = COPY
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "digest": self.digest, "media_type": self.media_type,
                               "state": self.state}
        if self.src_name is not None and self.src_name != self.name:
            out["source_name"] = self.src_name
        if self.referrer:
            out["referrer"] = True
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class RepoStats:
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0
    blobs_mounted: int = 0
    bytes_mounted: int = 0
    blobs_present: int = 0
    bytes_present: int = 0
    manifests_written: int = 0
    manifests_present: int = 0
    tags_written: int = 0
    tags_present: int = 0
    referrer_tags: int = 0
    verified: int = 0


@dataclass
class RepoPlan:
    src_repo: str
    dst_repo: str
    source_label: str
    dest_label: str
    source: Source | None = None
    dest: Dest | None = None
    entries: list[EntryPlan] = field(default_factory=list)
    nodes: dict[Digest, Node] = field(default_factory=dict)
    order: list[Digest] = field(default_factory=list)
    manifest_state: dict[Digest, str] = field(default_factory=dict)
    blobs: dict[Digest, BlobItem] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stats: RepoStats = field(default_factory=RepoStats)
    failed: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors and self.failed is None

    def fail(self, message: str) -> None:
        with self.lock:
            if self.failed is None:
                self.failed = message

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def blob_totals(self) -> dict[str, int]:
        out = {"copy": 0, "copy_bytes": 0, "mount": 0, "mount_bytes": 0, "present": 0, "present_bytes": 0,
               "foreign": 0, "foreign_bytes": 0}
        for b in self.blobs.values():
            out[b.state] += 1
            out[f"{b.state}_bytes"] += b.size
        return out

    def manifest_totals(self) -> dict[str, int]:
        copy = sum(1 for d in self.order if self.manifest_state.get(d, COPY) == COPY)
        return {"copy": copy, "present": len(self.order) - copy}

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source_label, "destination": self.dest_label,
            "repository": self.src_repo, "destination_repository": self.dst_repo,
            "tags": [e.to_json() for e in self.entries if e.name is not None],
            "untagged": [e.to_json() for e in self.entries if e.name is None],
            "manifests": self.manifest_totals(), "blobs": self.blob_totals(),
            "notes": self.notes, "errors": self.errors, "failed": self.failed,
            "stats": dict(self.stats.__dict__),
        }


@dataclass(frozen=True)
class OneRef:
    """``cp``: one reference instead of whole repositories. ``src_ref`` is a tag (a layout ref name)
    or a digest; ``dst_tag`` what the destination calls it (None: by digest, untagged in a layout);
    ``referrers``: carry the subject-linked manifests (and theirs) along, as migrate always does."""

    src_ref: str
    dst_tag: str | None
    referrers: bool = False


@dataclass
class MigrateOptions:
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    repos: tuple[str, ...] = ()
    jobs: int = DEFAULT_JOBS
    verify: bool = False
    invalid_tags: InvalidTags = InvalidTags.refuse
    lock_wait: float = 0.0
    registry: RegistryOptions = field(default_factory=RegistryOptions)
    #: ``cp``: copy this one reference (the endpoints name one layout or one repository each).
    single: OneRef | None = None

    @functools.cached_property
    def filters(self) -> Filters:
        """One ``Filters`` per run: it records which patterns matched."""
        return Filters(self.include, self.exclude)


@dataclass
class MigratePlan:
    source: Endpoint
    dest: Endpoint
    options: MigrateOptions
    repos: list[RepoPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Every repository name of the source, selected by the filters or not (what they match against).
    repo_names: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    verify_errors: list[str] = field(default_factory=list)
    aborted: str | None = None

    def totals(self) -> dict[str, int]:
        t: dict[str, int] = {"repositories": len(self.repos), "tags": 0, "untagged": 0, "manifests_copy": 0,
                             "manifests_present": 0, "blobs_copy": 0, "bytes_copy": 0, "blobs_mount": 0,
                             "bytes_mount": 0, "blobs_present": 0, "bytes_present": 0, "errors": 0}
        for r in self.repos:
            t["tags"] += sum(1 for e in r.entries if e.name is not None)
            t["untagged"] += sum(1 for e in r.entries if e.name is None)
            m = r.manifest_totals()
            t["manifests_copy"] += m["copy"]
            t["manifests_present"] += m["present"]
            b = r.blob_totals()
            for k in ("copy", "mount", "present"):
                t[f"blobs_{k}"] += b[k]
                t[f"bytes_{k}"] += b[f"{k}_bytes"]
            t["errors"] += len(r.errors)
        return t

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {k: 0 for k in RepoStats().__dict__}
        for r in self.repos:
            for k, v in r.stats.__dict__.items():
                out[k] += v
        return out

    @property
    def failed(self) -> list[RepoPlan]:
        return [r for r in self.repos if not r.ok]

    def to_json(self, executed: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": str(self.source), "destination": str(self.dest), "dry_run": not executed,
            "totals": self.totals(), "notes": self.notes,
            "repositories": [r.to_json() for r in self.repos],
        }
        if executed:
            out["stats"] = self.stats()
            out["seconds"] = round(self.elapsed, 3)
            out["failed"] = [{"repository": r.src_repo, "error": r.failed or "; ".join(r.errors)} for r in self.failed]
            out["verify_errors"] = self.verify_errors
            out["aborted"] = self.aborted
        return out


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------
class Source(Protocol):
    label: str

    def roots(self, want: Callable[[str | None], bool]) -> list[Root]: ...

    def resolve(self, ref: str) -> list[Root]: ...

    def manifest(self, desc: Descriptor) -> tuple[bytes, str]: ...

    def small_blob(self, desc: Descriptor) -> bytes: ...

    def open_blob(self, digest: Digest, size: int) -> tuple[BinaryIO, int]: ...

    def referrers(self, digest: Digest) -> list[Descriptor] | None: ...

    def registry_location(self) -> tuple[str, str] | None: ...


# --------------------------------------------------------------------------------------------------
# Destinations
# --------------------------------------------------------------------------------------------------
class Dest(Protocol):
    label: str
    is_registry: bool

    def inspect(self, plan: RepoPlan, jobs: int) -> None: ...


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------
class _Abort(Exception):
    pass


@dataclass
class _Run:
    plan: MigratePlan
    progress: Progress
    abort: threading.Event = field(default_factory=threading.Event)
    #: (registry host, digest) -> the future of the task that uploads it first.
    uploads: dict[tuple[str, Digest], Future[str | None]] = field(default_factory=dict)
    claimed: set[tuple[str, Digest]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_bar: Counter | None = None

    def claim(self, key: tuple[str, Digest]) -> Future[str | None] | None:
        """The future to resolve when this task is the first to upload ``key`` in this run."""
        with self.lock:
            fut = self.uploads.get(key)
            if fut is None or key in self.claimed:
                return None
            self.claimed.add(key)
        fut.set_running_or_notify_cancel()
        return fut
