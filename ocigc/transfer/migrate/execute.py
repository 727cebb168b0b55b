"""migrate: copy repositories between layouts and registries, every digest intact.

A source or destination is a layout, a root of layouts (every layout at any depth is one
repository, named by its path under the root), or a registry reference ``HOST[:PORT][/PREFIX]``.

Plan, then execute (``--dry-run`` prints the plan; a real run executes that plan):

1. **Plan.** For each repository: the roots (``index.json`` entries of a layout, tagged or not;
   the tags of a registry repository), filtered by ``--include``/``--exclude``; the closure of
   manifests (nested indexes, all platforms) and blobs (configs, layers, artifact blobs, blobs
   named inside unknown JSON); referrers of copied content (a layout's untagged entries whose
   ``subject`` is copied; a registry's referrers API); the destination names (``map_tag``).
   Then what the destination already holds (HEAD requests, or one blob listing of a layout), and
   which missing blobs can be mounted from another repository of the same registry.
2. **Blobs** before manifests, in a pool of ``jobs`` transfers: streamed in constant memory,
   each blob uploaded once per destination registry and mounted into the other repositories.
3. **Manifests** per repository, children before parents and subjects before referrers, as
   their raw bytes with their own media type (digests cannot change); tags after their manifest.
   Referrers on a registry without the referrers API get the spec's fallback tag
   (``sha256-<hex>``: an index listing them, merged with what the tag already lists).
   A layout destination takes the shared lock for the run, writes blobs through the storage
   seam (temp + rename, hashed as written) and merges ``index.json`` once per repository with
   ``update_index`` under the lock's exclusive hold.
4. ``--verify`` re-reads what was written and compares digests.

A rerun finds what arrived (HEAD 200, present blobs) and copies only the rest. A repository
whose plan has errors (unmappable tag names in ``refuse`` mode, an invalid repository name,
unreadable manifests) is not copied at all; the others are. An unreachable registry stops the run.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from enum import StrEnum
from graphlib import CycleError, TopologicalSorter
from typing import Any, BinaryIO, Protocol

from ocigc.digest import Digest, DigestingReader
from ocigc.errors import (
    IntegrityError,
    InvalidDigest,
    LayoutError,
    LockBusy,
    ManifestError,
    OcigcError,
    TransferError,
    UsageError,
)
from ocigc.jsonload import load_json
from ocigc.layout.discover import find_layouts
from ocigc.layout.graph import wants_read
from ocigc.layout.indexio import read_index_retrying, update_index
from ocigc.layout.layout import INDEX_FILE, MAX_MANIFEST_BYTES, OCI_LAYOUT_FILE, Layout
from ocigc.layout.state import stat_blobs
from ocigc.lock import handle as locking
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import (
    ANNOTATION_REF_NAME,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
)
from ocigc.oci.index import Index
from ocigc.oci.referrers import referrers_tag
from ocigc.oci.refs import TAG_RE
from ocigc.parallel import pmap
from ocigc.progress import Counter, NullProgress, Progress
from ocigc.storage.base import Storage, open_storage, open_write_content
from ocigc.transfer.push import copy_hashing, ensure_layout
from ocigc.transfer.registry import (
    BlobNotFound,
    RegistryClient,
    RegistryOptions,
    RegistryRejected,
    RegistryUnavailable,
    StreamInterrupted,
    backoff_delay,
)

DEFAULT_JOBS = 8
#: A repository name (distribution spec): lowercase components joined by ``/``.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

COPY, PRESENT, MOUNT, MOVE = "copy", "present", "mount", "move"
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
@dataclass(frozen=True)
class Filters:
    """``--include``/``--exclude`` globs: ``REPO`` matches repositories, ``REPO:TAG`` tags of them.

    Repository names are those of the source (a layout's path under the root, a registry
    repository under the prefix); tags are source ref names (before mapping).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @staticmethod
    def _split(pattern: str) -> tuple[str, str | None]:
        repo, colon, tag = pattern.partition(":")
        return repo, (tag if colon else None)

    def _repo_level(self, patterns: tuple[str, ...], repo: str) -> bool:
        return any(t is None and fnmatch.fnmatchcase(repo, r) for r, t in map(self._split, patterns))

    def _tag_level(self, patterns: tuple[str, ...], repo: str, tag: str) -> bool:
        return any(t is not None and fnmatch.fnmatchcase(repo, r) and fnmatch.fnmatchcase(tag, t)
                   for r, t in map(self._split, patterns))

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
        if not self.repo_selected(repo) or self._tag_level(self.exclude, repo, tag):
            return False
        return not self.include or self._repo_level(self.include, repo) or self._tag_level(self.include, repo, tag)


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
        out: dict[str, Any] = {"name": self.name, "digest": self.digest, "mediaType": self.media_type,
                               "state": self.state}
        if self.src_name is not None and self.src_name != self.name:
            out["sourceName"] = self.src_name
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
            "repository": self.src_repo, "destinationRepository": self.dst_repo,
            "tags": [e.to_json() for e in self.entries if e.name is not None],
            "untagged": [e.to_json() for e in self.entries if e.name is None],
            "manifests": self.manifest_totals(), "blobs": self.blob_totals(),
            "notes": self.notes, "errors": self.errors, "failed": self.failed,
            "stats": dict(self.stats.__dict__),
        }


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

    @property
    def filters(self) -> Filters:
        return Filters(self.include, self.exclude)


@dataclass
class MigratePlan:
    source: Endpoint
    dest: Endpoint
    options: MigrateOptions
    repos: list[RepoPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
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
            "source": str(self.source), "destination": str(self.dest), "dryRun": not executed,
            "totals": self.totals(), "notes": self.notes,
            "repositories": [r.to_json() for r in self.repos],
        }
        if executed:
            out["stats"] = self.stats()
            out["seconds"] = round(self.elapsed, 3)
            out["failed"] = [{"repository": r.src_repo, "error": r.failed or "; ".join(r.errors)} for r in self.failed]
            out["verifyErrors"] = self.verify_errors
            out["aborted"] = self.aborted
        return out


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------
class Source(Protocol):
    label: str

    def roots(self, want: Callable[[str | None], bool]) -> list[Root]: ...

    def manifest(self, desc: Descriptor) -> tuple[bytes, str]: ...

    def small_blob(self, desc: Descriptor) -> bytes: ...

    def open_blob(self, digest: Digest, size: int) -> tuple[BinaryIO, int]: ...

    def referrers(self, digest: Digest) -> list[Descriptor] | None: ...

    def registry_location(self) -> tuple[str, str] | None: ...


class LayoutSource:
    """A layout read through the storage seam (no lock: reading takes none)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.label = layout.location

    def roots(self, want: Callable[[str | None], bool]) -> list[Root]:
        index = read_index_retrying(self.layout)
        raw_list = index.doc.get("manifests") or []
        return [Root(e.digest, e.media_type, e.size, e.ref_name, dict(raw_list[i]))
                for i, e in enumerate(index.entries)]

    def _read(self, desc: Descriptor) -> bytes:
        try:
            return self.layout.read_blob(desc.digest)
        except FileNotFoundError:
            raise BlobNotFound(f"{self.layout.where(desc.digest.blob_path())}: missing") from None

    def manifest(self, desc: Descriptor) -> tuple[bytes, str]:
        return self._read(desc), ""

    def small_blob(self, desc: Descriptor) -> bytes:
        return self._read(desc)

    def open_blob(self, digest: Digest, size: int) -> tuple[BinaryIO, int]:
        try:
            f = self.layout.open_blob(digest)
        except FileNotFoundError:
            raise BlobNotFound(f"{self.layout.where(digest.blob_path())}: missing") from None
        try:
            actual = os.fstat(f.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            st = self.layout.stat_blob(digest)
            actual = st.size if st else -1
        return f, actual

    def referrers(self, digest: Digest) -> list[Descriptor] | None:
        return None  # a layout's referrers are its own (untagged) index.json entries

    def registry_location(self) -> tuple[str, str] | None:
        return None


class RegistrySource:
    """A registry repository: its tags are the roots; referrers come from the referrers API."""

    def __init__(self, client: RegistryClient, repo: str, jobs: int) -> None:
        self.client = client
        self.repo = repo
        self.jobs = jobs
        self.label = f"{client.host}/{repo}"
        self._cache: dict[Digest, tuple[bytes, str]] = {}
        self._lock = threading.Lock()

    def roots(self, want: Callable[[str | None], bool]) -> list[Root]:
        tags = [t for t in self.client.tags(self.repo) if want(t)]

        def fetch(tag: str) -> Root:
            raw, media_type, digest = self.client.get_manifest(self.repo, tag)
            with self._lock:
                self._cache[digest] = (raw, media_type)
            return Root(digest, media_type, len(raw), tag)

        return pmap(fetch, tags, self.jobs)

    def manifest(self, desc: Descriptor) -> tuple[bytes, str]:
        with self._lock:
            hit = self._cache.get(desc.digest)
        if hit is not None:
            return hit
        raw, media_type, _ = self.client.get_manifest(self.repo, desc.digest)
        return raw, media_type

    def small_blob(self, desc: Descriptor) -> bytes:
        return self.client.read_blob(self.repo, desc.digest)

    def open_blob(self, digest: Digest, size: int) -> tuple[BinaryIO, int]:
        stream = self.client.open_blob(self.repo, digest)
        return stream, stream.size  # type: ignore[return-value]

    def referrers(self, digest: Digest) -> list[Descriptor] | None:
        found = self.client.referrers(self.repo, digest)
        if found is None:
            return None
        out = []
        for obj in found:
            with contextlib.suppress(ValueError, InvalidDigest):
                out.append(Descriptor.from_json(obj, "referrer"))
        return out

    def registry_location(self) -> tuple[str, str] | None:
        return self.client.host, self.repo


# --------------------------------------------------------------------------------------------------
# Destinations
# --------------------------------------------------------------------------------------------------
class Dest(Protocol):
    label: str
    is_registry: bool

    def inspect(self, plan: RepoPlan, jobs: int) -> None: ...


class LayoutDest:
    is_registry = False

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.label = storage.url
        self.layout: Layout | None = None
        self.handle: Any = None
        self.listing: set[Digest] = set()
        self.index: Index | None = None
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def inspect(self, plan: RepoPlan, jobs: int) -> None:
        if self.storage.stat(OCI_LAYOUT_FILE) is None:
            return  # a new layout: everything is to copy
        layout = Layout.open(self.storage)
        self.index = read_index_retrying(layout)
        self.listing = self._intact(layout, plan, jobs)
        for d in plan.order:
            plan.manifest_state[d] = PRESENT if d in self.listing else COPY
        for b in plan.blobs.values():
            if b.digest in self.listing:
                b.state = PRESENT
        current = self.index.tags()
        untagged = {e.digest for e in self.index.entries if e.ref_name is None}
        for e in plan.entries:
            if e.name is None:
                e.state = PRESENT if e.digest in untagged else COPY
                continue
            have = [x.digest for x in current.get(e.name, [])]
            e.state = PRESENT if e.digest in have else (MOVE if have else COPY)

    @staticmethod
    def _intact(layout: Layout, plan: RepoPlan, jobs: int) -> set[Digest]:
        """The listed blobs, less those the plan needs whose size is not the one it expects: a blob
        truncated under its digest name (a writer killed half-way) is copied again, never trusted
        by name. Sizes come from the listing where it carries them (``s3://``), else a stat each."""
        listing = layout.list_blobs()
        present = set(listing.digests)
        expected: dict[Digest, int] = {d: plan.nodes[d].size for d in plan.order if d in present and d in plan.nodes}
        expected.update({d: b.size for d, b in plan.blobs.items() if d in present})
        stats = stat_blobs(layout, expected, jobs, known=listing.stats)
        for d, size in expected.items():
            st = stats.get(d)
            if st is None or st.size != size:
                present.discard(d)
                if st is not None:
                    plan.notes.append(f"{layout.where(d.blob_path())}: has {st.size} bytes, expected {size}; "
                                      "copied again")
        return present

    def prepare(self, lock_wait: float) -> None:
        self.layout = ensure_layout(self.storage)
        self.handle = locking.acquire(self.layout, "shared", wait=lock_wait, command="migrate")

    def recheck(self, plan: RepoPlan) -> None:
        """Under the lock: what the plan found present may have been swept since; list again."""
        assert self.layout is not None
        if not self.listing:
            return
        now = set(self.layout.list_blobs().digests)
        for b in plan.blobs.values():
            if b.state == PRESENT and b.digest not in now:
                b.state = COPY
        for d in plan.order:
            if plan.manifest_state.get(d) == PRESENT and d not in now:
                plan.manifest_state[d] = COPY

    def release(self) -> None:
        if self.handle is not None:
            self.handle.release()
            self.handle = None

    def _blob_dir(self, digest: Digest) -> None:
        rel = f"blobs/{digest.algorithm}"
        # makedirs under the lock: a thread that finds ``rel`` in the set must find it made, too
        # (marking it before making it let a second copy write into a directory not yet there).
        with self._dirs_lock:
            if rel in self._dirs:
                return
            self.storage.makedirs(rel)
            self._dirs.add(rel)

    def write_blob(self, digest: Digest, size: int, src: BinaryIO, on_bytes: Callable[[int], None] | None) -> None:
        assert self.layout is not None
        self._blob_dir(digest)
        where = self.layout.where(digest.blob_path())
        with open_write_content(self.storage, digest.blob_path()) as out:
            got, n = copy_hashing(src, out.write, digest.algorithm, max_bytes=size, on_bytes=on_bytes, where=where)
            if got != digest or n != size:
                raise IntegrityError(f"{where}: the source gave {n} bytes hashing to {got}, not {digest} "
                                     f"({size} bytes); nothing stored")

    def write_manifest(self, node: Node) -> None:
        self._blob_dir(node.digest)
        self.storage.write_bytes(node.digest.blob_path(), node.raw)


class RegistryDest:
    is_registry = True

    def __init__(self, client: RegistryClient, repo: str) -> None:
        self.client = client
        self.repo = repo
        self.label = f"{client.host}/{repo}"

    def inspect(self, plan: RepoPlan, jobs: int) -> None:
        client, repo = self.client, self.repo
        head_jobs = max(4, jobs * 2)
        # Every check, even in a repository without tags: an interrupted run leaves blobs behind.
        tags = client.tags(repo)

        def head_manifest(d: Digest) -> bool:
            node = plan.nodes[d]
            info = client.head_manifest(repo, Digest.from_bytes(node.raw, "sha256") if d.algorithm != "sha256"
                                        else d)
            return info is not None

        present = pmap(head_manifest, plan.order, head_jobs)
        covered: set[Digest] = set()
        for d, here in zip(plan.order, present, strict=True):
            plan.manifest_state[d] = PRESENT if here else COPY
            node = plan.nodes[d]
            if here and node.kind == mf.KIND_MANIFEST:  # a registry holds every blob of a stored manifest
                covered.update(c.digest for kind, c in node.children if kind in (mf.CONFIG, mf.LAYER))
        todo = [b for b in plan.blobs.values() if b.digest not in covered and b.state != FOREIGN]
        for b in plan.blobs.values():
            if b.digest in covered:
                b.state = PRESENT
        for b, here in zip(todo, pmap(lambda b: client.blob_exists(repo, b.digest), todo, head_jobs), strict=True):
            b.state = PRESENT if here else COPY
        names = sorted({e.name for e in plan.entries if e.name is not None and e.name in set(tags)})
        infos = dict(zip(names, pmap(lambda t: client.head_manifest(repo, t), names, head_jobs), strict=True))
        for e in plan.entries:
            if e.name is None:
                e.state = plan.manifest_state.get(e.digest, COPY)
                continue
            info = infos.get(e.name)
            target = plan.nodes.get(e.digest)
            if info is None:
                e.state = COPY
            elif info.digest is not None and target is not None and info.digest in target.registry_digests():
                e.state = PRESENT
            else:
                e.state = MOVE


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------
def _layout_storage(path: str) -> Storage:
    return open_storage(path)


def build_plan(source: Endpoint, dest: Endpoint, options: MigrateOptions,
               progress: Progress | None = None) -> MigratePlan:
    """Everything to copy, and what the destination already holds. Reads only."""
    if source.kind == dest.kind and str(source).rstrip("/") == str(dest).rstrip("/"):
        raise UsageError(f"{source.text} -> {dest.text}: source and destination are the same")
    progress = progress or NullProgress()
    plan = MigratePlan(source, dest, options)
    clients: dict[str, RegistryClient] = {}

    def client_for(host: str) -> RegistryClient:
        if host not in clients:
            clients[host] = RegistryClient(host, _pool_options(options))
            clients[host].ping()
        return clients[host]

    pairs = _repositories(source, dest, options, plan, client_for)
    counter = progress.counter("planning repositories", total=len(pairs))
    outer = max(1, min(options.jobs, len(pairs)))
    inner = max(2, options.jobs // outer)
    plan.repos = pmap(lambda p: _plan_repo(p, options, inner), pairs, outer, on_done=counter.add)
    counter.close()
    _assign_mounts(plan)
    return plan


def _pool_options(options: MigrateOptions) -> RegistryOptions:
    reg = options.registry
    return RegistryOptions(plain_http=reg.plain_http, insecure=reg.insecure, retries=reg.retries,
                           backoff=reg.backoff, backoff_max=reg.backoff_max, timeout=reg.timeout,
                           docker_config=reg.docker_config, pool_size=max(reg.pool_size, options.jobs * 2 + 4))


def _repositories(source: Endpoint, dest: Endpoint, options: MigrateOptions, plan: MigratePlan,
                  client_for: Callable[[str], RegistryClient]) -> list[RepoPlan]:
    """The repository pairs: (source, destination) with their names; not yet planned."""
    filters = options.filters
    pairs: list[RepoPlan] = []
    if source.is_registry:
        client = client_for(source.host)
        names = _registry_repos(client, source.prefix, options.repos, plan)
        for repo in names:
            rel = repo[len(source.prefix):].strip("/") if source.prefix else repo
            if not filters.repo_selected(rel):
                continue
            rp = RepoPlan(rel, "", f"{client.host}/{repo}", "")
            rp.source = RegistrySource(client, repo, max(2, options.jobs))
            pairs.append(rp)
    else:
        root = _layout_storage(source.path)
        if options.repos:
            raise UsageError("--repo selects repositories of a registry source; for layouts use --include")
        rels = find_layouts(root)
        if not rels:
            raise LayoutError(f"{source.path}: no OCI image layout found (no oci-layout file at any depth)")
        for rel in rels:
            if not filters.repo_selected(rel):
                continue
            storage = root.child(rel) if rel else root
            rp = RepoPlan(rel, "", storage.url, "")
            try:
                rp.source = LayoutSource(Layout.open(storage, rel))
            except OcigcError as e:
                rp.errors.append(str(e))
            pairs.append(rp)
    for rp in pairs:
        _attach_dest(rp, source, dest, client_for)
    return pairs


def _registry_repos(client: RegistryClient, prefix: str, listed: tuple[str, ...], plan: MigratePlan) -> list[str]:
    if listed:
        return [join_repo(prefix, name) for name in listed]
    try:
        catalog = client.catalog()
    except RegistryRejected as e:
        if not prefix:
            raise
        plan.notes.append(f"{e}; copying {prefix} as one repository")
        return [prefix]
    names = [r for r in catalog if not prefix or r == prefix or r.startswith(prefix + "/")]
    if not names and prefix:
        return [prefix]
    return sorted(names)


def _attach_dest(rp: RepoPlan, source: Endpoint, dest: Endpoint,
                 client_for: Callable[[str], RegistryClient]) -> None:
    rel = rp.src_repo
    if dest.is_registry:
        name = join_repo(dest.prefix, rel)
        if not name and not source.is_registry:
            base = os.path.basename(os.path.normpath(source.path))
            name = base if REPO_RE.match(base) else ""
            if not name:
                rp.errors.append(f"{source.path}: give the repository in the destination ({dest.host}/NAME); "
                                 f"{base!r} is not a valid repository name")
        if name and not REPO_RE.match(name):
            rp.errors.append(f"{rp.source_label}: repository name {name!r} is not valid (lowercase letters, digits, "
                             "separators '.', '_', '__', '-', components joined by '/'); rename the layout's "
                             "directory or --exclude it")
        rp.dst_repo = name
        client = client_for(dest.host)
        rp.dest = RegistryDest(client, name)
        rp.dest_label = f"{dest.host}/{name}"
    else:
        root = _layout_storage(dest.path)
        if rel and any(part in ("", ".", "..") for part in rel.split("/")):
            rp.errors.append(f"{rel!r}: not a usable layout path")
            rel = ""
        storage = root.child(rel) if rel else root
        rp.dst_repo = rel
        rp.dest = LayoutDest(storage)
        rp.dest_label = storage.url


def _plan_repo(rp: RepoPlan, options: MigrateOptions, jobs: int) -> RepoPlan:
    if rp.errors or rp.source is None or rp.dest is None:
        return rp
    try:
        _walk_repo(rp, options, jobs)
        if rp.errors:
            return rp
        rp.dest.inspect(rp, jobs)
    except RegistryUnavailable:
        raise
    except OcigcError as e:
        rp.errors.append(str(e))
    except OSError as e:
        rp.errors.append(f"{rp.source_label}: {e.strerror or e}")
    return rp


def _walk_repo(rp: RepoPlan, options: MigrateOptions, jobs: int) -> None:
    assert rp.source is not None and rp.dest is not None
    src, filters, repo = rp.source, options.filters, rp.src_repo
    to_registry = rp.dest.is_registry
    all_untagged = filters.untagged_selected(repo)

    def want(name: str | None) -> bool:
        return filters.tag_selected(repo, name) if name is not None else True

    roots = src.roots(want)
    chosen = [r for r in roots if (r.name is not None and filters.tag_selected(repo, r.name))
              or (r.name is None and all_untagged)]
    pending_untagged = [r for r in roots if r.name is None and not all_untagged]
    nodes: dict[Digest, Node] = {}
    blobs: dict[Digest, BlobItem] = {}
    expanded: set[Digest] = set()
    _walk(src, [_root_desc(r) for r in chosen], nodes, blobs, rp.errors, jobs, expanded)
    # Referrers of what is copied follow it: untagged layout entries whose subject is copied ...
    if pending_untagged:
        _walk(src, [_root_desc(r) for r in pending_untagged], nodes, {}, rp.errors, jobs, expanded, shallow=True)
    extra: list[Root] = []
    copied = set(_closure(nodes, [r.digest for r in chosen]))
    changed = True
    while changed and pending_untagged:
        changed = False
        for r in list(pending_untagged):
            node = nodes.get(r.digest)
            if node is not None and node.subject is not None and node.subject.digest in copied:
                pending_untagged.remove(r)
                chosen.append(r)
                _walk(src, [_root_desc(r)], nodes, blobs, rp.errors, jobs, expanded)
                copied |= set(_closure(nodes, [r.digest]))
                changed = True
    # ... and what the registry's referrers API lists for copied manifests.
    asked: set[Digest] = set()
    while True:
        ask = [d for d in sorted(copied) if d in nodes and nodes[d].is_manifest and d not in asked]
        if not ask:
            break
        asked.update(ask)
        found = pmap(src.referrers, ask, jobs)
        if all(f is None for f in found):
            break
        new: list[Root] = []
        for refs in found:
            for desc in refs or []:
                if desc.digest not in copied and all(r.digest != desc.digest for r in extra + new):
                    new.append(Root(desc.digest, desc.media_type, desc.size, None))
        if not new:
            continue
        _walk(src, [_root_desc(r) for r in new], nodes, blobs, rp.errors, jobs, expanded)
        extra.extend(new)
        copied |= set(_closure(nodes, [r.digest for r in new]))
    if rp.errors:
        return
    rp.nodes = {d: n for d, n in nodes.items() if d in copied}
    rp.blobs = blobs
    _foreign_layers(rp, src, jobs, to_registry)
    rp.order = _order(rp.nodes)
    if to_registry:  # a root that is no manifest cannot go to a registry (noted below)
        rp.nodes = {d: n for d, n in rp.nodes.items() if n.is_manifest}
        rp.order = [d for d in rp.order if d in rp.nodes]
    referrer_digests = {d for d, n in rp.nodes.items() if n.subject is not None and n.subject.digest in copied}
    for r in chosen + extra:
        node = rp.nodes.get(r.digest)
        entry = EntryPlan(r.digest, _send_type(node, r.media_type) if node else r.media_type,
                          node.size if node else r.size, r.name, r.name, r.entry,
                          referrer=r.name is None and r.digest in referrer_digests)
        if node is None and to_registry and r.digest in nodes:
            entry.note = f"{r.digest} is not a manifest ({r.media_type or 'no media type'}): skipped"
            rp.notes.append(entry.note)
            continue
        rp.entries.append(entry)
    if to_registry:
        _map_names(rp, options.invalid_tags)
    else:
        for e in rp.entries:
            if e.entry is None:
                e.entry = _entry_json(e, rp.nodes.get(e.digest))
    for d in rp.order:
        rp.manifest_state.setdefault(d, COPY)


def _source_has(src: Source, digest: Digest) -> bool:
    if isinstance(src, LayoutSource):
        return src.layout.stat_blob(digest) is not None
    if isinstance(src, RegistrySource):
        return src.client.blob_exists(src.repo, digest)
    return True


def _foreign_layers(rp: RepoPlan, src: Source, jobs: int, to_registry: bool) -> None:
    """A foreign layer (descriptor with ``urls``) the source does not hold (skopeo leaves them out of
    layouts; registries rarely store them) is not copied: the manifests that list it are copied as
    they are, byte for byte, and the note says so. A foreign-typed layer the source holds is copied."""
    foreign = [b for b in rp.blobs.values() if b.urls]
    if not foreign:
        return
    for b, here in zip(foreign, pmap(lambda b: _source_has(src, b.digest), foreign, jobs), strict=True):
        if here:
            continue
        b.state = FOREIGN
        where = ("a registry may refuse a manifest whose layer it does not hold, or accept it when it "
                 "allows foreign URLs" if to_registry else "the destination layout lacks it as the source did")
        rp.notes.append(f"foreign layer {b.digest} is not in the source (fetched from {', '.join(b.urls)}): not "
                        f"copied; the manifest is copied as is ({where})")


def _root_desc(r: Root) -> Descriptor:
    return Descriptor(r.media_type, r.digest, r.size)


def _walk(src: Source, starts: list[Descriptor], nodes: dict[Digest, Node], blobs: dict[Digest, BlobItem],
          errors: list[str], jobs: int, expanded: set[Digest], shallow: bool = False) -> None:
    """Read manifests level by level from ``starts`` (index children recursively), collect blobs.

    ``nodes`` caches what was read, ``expanded`` what was walked below. ``shallow``: read only
    ``starts`` (to learn their subjects), nothing below them.
    """
    level = list({d.digest: d for d in starts if d.digest not in expanded}.values())
    scanned: set[Digest] = set()
    while level:
        todo = [d for d in level if d.digest not in nodes]  # a shallow read earlier: not read again
        for desc, res in zip(todo, pmap(lambda d: _read_node(src, d), todo, jobs), strict=True):
            if isinstance(res, str):
                errors.append(res)
            else:
                nodes[desc.digest] = res
        if shallow:
            return
        following: dict[Digest, Descriptor] = {}
        scan: dict[Digest, Descriptor] = {}
        for desc in level:
            node = nodes.get(desc.digest)
            if node is None:
                continue
            expanded.add(desc.digest)
            for kind, child in node.children:
                if kind == mf.CHILD:
                    if child.digest not in expanded and child.digest not in following:
                        following[child.digest] = child
                    continue
                blobs.setdefault(child.digest, BlobItem(child.digest, child.size, child.media_type, urls=child.urls))
                if wants_read(child) and child.digest not in scanned:
                    scan[child.digest] = child
        # Unknown JSON blobs may name more blobs (the graph follows them; so does a faithful copy).
        while scan:
            scanned.update(scan)
            found = pmap(lambda d: _scan_blob(src, d), list(scan.values()), jobs)
            scan = {}
            for children in found:
                for child in children:
                    blobs.setdefault(child.digest, BlobItem(child.digest, child.size, child.media_type,
                                                            urls=child.urls))
                    if wants_read(child) and child.digest not in scanned:
                        scan[child.digest] = child
        level = list(following.values())


def _read_node(src: Source, desc: Descriptor) -> Node | str:
    try:
        raw, served_type = src.manifest(desc)
    except OcigcError as e:
        return str(e)
    except OSError as e:
        return f"{desc.digest}: cannot read ({e.strerror or e})"
    got = Digest.from_bytes(raw, desc.digest.algorithm)
    if got != desc.digest:
        return f"{desc.digest}: content hashes to {got}"
    declared = served_type or desc.media_type or None
    try:
        parsed = mf.parse(raw, declared, str(desc.digest))
    except ManifestError as e:
        if desc.media_type in MANIFEST_TYPES or served_type:
            return str(e)
        return Node(desc.digest, desc.media_type, raw, "leaf")
    config = next((c for kind, c in parsed.children if kind == mf.CONFIG), None)
    node = Node(desc.digest, "", raw, parsed.kind, parsed.children, parsed.subject, parsed.artifact_type,
                parsed.annotations, config.media_type if config else None)
    node.media_type = served_type or _send_type(node, desc.media_type)
    return node


def _scan_blob(src: Source, desc: Descriptor) -> list[Descriptor]:
    try:
        raw = src.small_blob(desc)
    except (OcigcError, OSError):
        return []  # a missing blob shows when it is copied
    if raw.lstrip()[:1] != b"{":
        return []
    try:
        parsed = mf.parse(raw, desc.media_type or None, str(desc.digest))
    except ManifestError:
        return []
    return [c for _, c in parsed.children]


def _send_type(node: Node | None, declared: str) -> str:
    """The Content-Type a manifest goes out with: its own mediaType, else the descriptor's, else by shape."""
    if node is None:
        return declared
    if node.media_type:
        return node.media_type
    try:
        own = load_json(node.raw, limit=None).get("mediaType")
    except (ValueError, AttributeError):
        own = None
    if isinstance(own, str) and own:
        return own
    if declared:
        return declared
    if node.kind == mf.KIND_INDEX:
        return OCI_INDEX
    if node.kind == mf.KIND_MANIFEST:
        return OCI_MANIFEST
    return declared


def _closure(nodes: dict[Digest, Node], roots: list[Digest]) -> Iterator[Digest]:
    seen: set[Digest] = set()
    stack = list(roots)
    while stack:
        d = stack.pop()
        if d in seen or d not in nodes:
            continue
        seen.add(d)
        yield d
        stack.extend(c.digest for kind, c in nodes[d].children if kind == mf.CHILD)


def _order(nodes: dict[Digest, Node]) -> list[Digest]:
    """Children before parents, subjects before their referrers (graphlib: dependencies first)."""
    deps: dict[Digest, set[Digest]] = {}
    for d, n in sorted(nodes.items()):
        wanted = {c.digest for kind, c in n.children if kind == mf.CHILD and c.digest in nodes}
        if n.subject is not None and n.subject.digest in nodes:
            wanted.add(n.subject.digest)
        deps[d] = wanted - {d}
    try:
        return list(TopologicalSorter(deps).static_order())
    except CycleError:
        raise ManifestError("manifests reference each other in a cycle (refusing to order them)") from None


def _map_names(rp: RepoPlan, mode: InvalidTags) -> None:
    """Layout ref names -> registry tags; conflicts resolved (an exact name beats a mapped one,
    then the last index.json entry wins, as oras resolves duplicates); the others go untagged."""
    for e in rp.entries:
        if e.src_name is None:
            continue
        m = map_tag(e.src_name, mode)
        if m.error:
            rp.errors.append(f"{rp.source_label}: {m.error}")
            continue
        e.name = m.tag
        if m.note:
            e.note = m.note
            rp.notes.append(m.note)
    by_name: dict[str, list[EntryPlan]] = {}
    for e in rp.entries:
        if e.name is not None:
            by_name.setdefault(e.name, []).append(e)
    for name, group in by_name.items():
        digests = {e.digest for e in group}
        exact = [e for e in group if e.src_name == name]
        winner = (exact or group)[-1]
        for e in group:
            if e is winner:
                continue
            if e.digest != winner.digest:
                note = (f"tag {name!r}: {e.src_name!r} ({e.digest.short}) loses to {winner.src_name!r} "
                        f"({winner.digest.short}); pushed by digest only")
                rp.notes.append(note)
                e.note = note
            e.name = None
        if len(digests) > 1:
            winner.note = winner.note or f"tag {name!r} named {len(digests)} digests; this one won"
    seen: set[tuple[str | None, Digest]] = set()
    unique = []
    for e in rp.entries:
        key = (e.name, e.digest)
        if key in seen:
            continue
        seen.add(key)
        unique.append(e)
    rp.entries = unique


def _entry_json(e: EntryPlan, node: Node | None) -> dict[str, Any]:
    """An index.json entry for a manifest that came from a registry."""
    out: dict[str, Any] = {"mediaType": e.media_type, "digest": str(e.digest), "size": e.size}
    if node is not None and node.artifact_type:
        out["artifactType"] = node.artifact_type
    if e.name is not None:
        out["annotations"] = {ANNOTATION_REF_NAME: e.name}
    return out


def _assign_mounts(plan: MigratePlan) -> None:
    """Missing blobs that another repository of the same registry holds, or copies earlier in this
    run, are mounted from it instead of uploaded again."""
    where: dict[tuple[str, Digest], str] = {}
    for rp in plan.repos:
        if rp.ok and isinstance(rp.dest, RegistryDest):
            loc = rp.source.registry_location() if rp.source is not None else None
            if loc is not None and loc[0] == rp.dest.client.host:
                for d in rp.blobs:
                    where.setdefault((loc[0], d), loc[1])
            for b in rp.blobs.values():
                if b.state == PRESENT:
                    where.setdefault((rp.dest.client.host, b.digest), rp.dst_repo)
    for rp in plan.repos:
        if not rp.ok or not isinstance(rp.dest, RegistryDest):
            continue
        host = rp.dest.client.host
        for b in rp.blobs.values():
            if b.state != COPY:
                continue
            holder = where.get((host, b.digest))
            if holder is not None and holder != rp.dst_repo:
                b.state, b.mount_from = MOUNT, holder
            else:
                where.setdefault((host, b.digest), rp.dst_repo)


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


def execute(plan: MigratePlan, progress: Progress | None = None) -> MigratePlan:
    """Carry out ``plan``: blobs, then manifests and tags, then (``--verify``) re-read."""
    run = _Run(plan, progress or NullProgress())
    todo = [rp for rp in plan.repos if rp.ok]
    with contextlib.ExitStack() as stack:
        try:
            _prepare_dests(run, todo, stack)
            _copy_blobs(run, [rp for rp in todo if rp.ok])
            _copy_manifests(run, [rp for rp in todo if rp.ok])
            if plan.options.verify and not run.abort.is_set():
                _verify(run, [rp for rp in todo if rp.ok])
        except RegistryUnavailable as e:
            plan.aborted = plan.aborted or str(e)
        except _Abort:
            pass
        finally:
            plan.elapsed = time.monotonic() - plan.started
    return plan


def _prepare_dests(run: _Run, repos: list[RepoPlan], stack: contextlib.ExitStack) -> None:
    layouts = [rp for rp in repos if isinstance(rp.dest, LayoutDest)]
    if not layouts:
        return

    def prepare(rp: RepoPlan) -> None:
        assert isinstance(rp.dest, LayoutDest)
        try:
            rp.dest.prepare(run.plan.options.lock_wait)
            rp.dest.recheck(rp)
        except LockBusy as e:
            rp.fail(str(e))
        except OcigcError as e:
            rp.fail(str(e))
        except OSError as e:
            rp.fail(f"{rp.dest_label}: {e.strerror or e}")

    for rp in layouts:
        stack.callback(rp.dest.release)  # type: ignore[union-attr]
    pmap(prepare, layouts, max(1, min(run.plan.options.jobs, len(layouts))))


def _copy_blobs(run: _Run, repos: list[RepoPlan]) -> None:
    copies: list[tuple[RepoPlan, BlobItem]] = []
    mounts: list[tuple[RepoPlan, BlobItem]] = []
    total = 0
    for rp in repos:
        for b in rp.blobs.values():
            if b.state == PRESENT:
                rp.add(blobs_present=1, bytes_present=b.size)
            elif b.state == FOREIGN:
                continue
            elif b.state == MOUNT:
                mounts.append((rp, b))
            else:
                copies.append((rp, b))
                total += b.size
                if isinstance(rp.dest, RegistryDest):
                    key = (rp.dest.client.host, b.digest)
                    run.uploads.setdefault(key, Future())
    if not copies and not mounts:
        return
    copies.sort(key=lambda t: -t[1].size)  # big blobs first: the pool ends together
    bar = run.progress.counter("blobs", total=total, unit="B")
    run.bytes_bar = bar
    jobs = max(1, run.plan.options.jobs)
    try:
        _run_pool([functools.partial(_copy_blob, run, rp, b) for rp, b in copies + mounts], jobs, run)
    finally:
        bar.close()
        for fut in run.uploads.values():  # never leave a waiter behind
            if not fut.done():
                fut.set_result(None)


def _run_pool(tasks: list[Callable[[], None]], jobs: int, run: _Run) -> None:
    if not tasks:
        return
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(tasks)), thread_name_prefix="ocigc-migrate")
    futures = [pool.submit(t) for t in tasks]
    try:
        pending = set(futures)
        while pending:
            done, pending = wait_futures(pending, timeout=0.5)
            for f in done:
                exc = f.exception()
                if exc is not None and not isinstance(exc, _Abort):
                    run.abort.set()
                    raise exc
    except BaseException:
        run.abort.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _copy_blob(run: _Run, rp: RepoPlan, b: BlobItem) -> None:
    dest, src = rp.dest, rp.source
    assert dest is not None and src is not None
    designated: Future[str | None] | None = None
    if isinstance(dest, RegistryDest) and b.state == COPY:
        designated = run.claim((dest.client.host, b.digest))
    holder: str | None = None
    try:  # from the claim on: whatever happens, the waiters of ``designated`` get an answer
        if run.abort.is_set():
            raise _Abort()
        if rp.failed is not None:
            return
        if isinstance(dest, RegistryDest):
            mount_from = b.mount_from
            if b.state == MOUNT:
                fut = run.uploads.get((dest.client.host, b.digest))
                if fut is not None:  # the repository that uploads it in this run (None: that failed)
                    mount_from = _wait(run, fut)
            how = dest.client.upload_blob(dest.repo, b.digest, b.size, lambda: src.open_blob(b.digest, b.size),
                                          on_bytes=_bytes_cb(run), mount_from=mount_from)
            if how == "mounted":
                rp.add(blobs_mounted=1, bytes_mounted=b.size)
            else:
                rp.add(blobs_uploaded=1, bytes_uploaded=b.size)
            holder = dest.repo
        else:
            assert isinstance(dest, LayoutDest)
            _with_retries(run, lambda: _write_layout_blob(run, src, dest, b))
            rp.add(blobs_uploaded=1, bytes_uploaded=b.size)
    except RegistryUnavailable as e:
        run.plan.aborted = str(e)
        rp.fail(str(e))
        raise
    except OcigcError as e:
        rp.fail(f"blob {b.digest}: {e}")
    except OSError as e:
        rp.fail(f"blob {b.digest}: {e.strerror or e}")
    finally:
        if designated is not None:
            designated.set_result(holder)


def _wait(run: _Run, fut: Future[str | None]) -> str | None:
    while True:
        try:
            return fut.result(timeout=0.5)
        except FuturesTimeout:
            if run.abort.is_set():
                raise _Abort() from None


def _bytes_cb(run: _Run) -> Callable[[int], None]:
    """Progress of a transfer; also where a running transfer notices that the run stopped
    (an interrupt or a fatal error): it raises, so an upload in flight ends at the next chunk."""
    bar = run.bytes_bar

    def on_bytes(n: int) -> None:
        if run.abort.is_set():
            raise _Abort()
        if bar is not None:
            bar.add(n)

    return on_bytes


def _write_layout_blob(run: _Run, src: Source, dest: LayoutDest, b: BlobItem) -> None:
    stream, actual = src.open_blob(b.digest, b.size)
    with contextlib.closing(stream):
        if actual >= 0 and actual != b.size:
            raise IntegrityError(f"blob {b.digest}: the source holds {actual} bytes, its descriptor says {b.size}")
        counted = [0]
        cb = _bytes_cb(run)

        def on_bytes(n: int) -> None:
            counted[0] += n
            cb(n)

        try:
            dest.write_blob(b.digest, b.size, stream, on_bytes)
        except StreamInterrupted:
            if counted[0] and run.bytes_bar is not None:
                run.bytes_bar.add(-counted[0])
            raise


def _with_retries(run: _Run, fn: Callable[[], None]) -> None:
    options = run.plan.options.registry
    attempt = 0
    while True:
        try:
            fn()
            return
        except StreamInterrupted as e:
            if attempt >= options.retries:
                raise RegistryUnavailable(f"{e} (after {attempt + 1} attempt(s))") from None
            time.sleep(backoff_delay(attempt, options))
            attempt += 1


def _copy_manifests(run: _Run, repos: list[RepoPlan]) -> None:
    todo = [rp for rp in repos if rp.ok]
    if not todo or run.abort.is_set():
        return
    counter = run.progress.counter("manifests", total=sum(len(rp.order) for rp in todo))

    def one(rp: RepoPlan) -> None:
        if run.abort.is_set():
            raise _Abort()
        try:
            if isinstance(rp.dest, RegistryDest):
                _manifests_to_registry(rp, rp.dest, counter)
            else:
                assert isinstance(rp.dest, LayoutDest)
                _manifests_to_layout(rp, rp.dest, counter)
        except RegistryUnavailable as e:
            run.plan.aborted = str(e)
            rp.fail(str(e))
            raise
        except OcigcError as e:
            rp.fail(str(e))
        except OSError as e:
            rp.fail(f"{rp.dest_label}: {e.strerror or e}")

    try:
        _run_pool([functools.partial(one, rp) for rp in todo], max(1, min(run.plan.options.jobs, len(todo))), run)
    finally:
        counter.close()


def _manifests_to_registry(rp: RepoPlan, dest: RegistryDest, counter: Counter) -> None:
    if rp.failed is not None:
        return
    client, repo = dest.client, dest.repo
    api_seen = False
    for d in rp.order:
        node = rp.nodes[d]
        pending = [e for e in rp.entries if e.digest == d and e.name is not None and e.state != PRESENT]
        if rp.manifest_state.get(d) != PRESENT:
            first = pending.pop(0).name if pending else str(d)
            assert first is not None
            answer = client.put_manifest(repo, first, node.raw, node.media_type)
            _check_stored(rp, node, answer.get("digest", ""), first)
            api_seen = api_seen or bool(answer.get("subject"))
            rp.add(manifests_written=1, tags_written=0 if first == str(d) else 1)
        else:
            rp.add(manifests_present=1)
        for e in pending:
            assert e.name is not None
            answer = client.put_manifest(repo, e.name, node.raw, node.media_type)
            _check_stored(rp, node, answer.get("digest", ""), e.name)
            rp.add(tags_written=1)
        counter.add()
    rp.add(tags_present=sum(1 for e in rp.entries if e.name is not None and e.state == PRESENT))
    _referrers_fallback(rp, dest, api_seen)


def _check_stored(rp: RepoPlan, node: Node, reported: str, ref: str) -> None:
    if reported and reported not in node.registry_digests():
        raise IntegrityError(f"{rp.dest_label}: the registry stored {ref} as {reported}, not {node.digest} "
                             "(it changed the manifest)")


def _referrers_fallback(rp: RepoPlan, dest: RegistryDest, api_seen: bool) -> None:
    """Registries without the referrers API: keep the index tagged ``<alg>-<hex>`` of each subject
    listing its referrers (distribution spec, "Referrers Tag Schema"), merged with what it lists."""
    by_subject: dict[Digest, list[Node]] = {}
    for d in rp.order:
        node = rp.nodes[d]
        if node.subject is not None:
            by_subject.setdefault(node.subject.digest, []).append(node)
    if not by_subject or api_seen:
        return
    client, repo = dest.client, dest.repo
    first = next(iter(by_subject))
    if client.referrers(repo, first) is not None:
        return  # the registry lists referrers itself
    for subject, referrers in by_subject.items():
        tag = referrers_tag(subject)
        try:
            raw, _, _ = client.get_manifest(repo, tag)
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
                raise ValueError
        except (BlobNotFound, ValueError):
            doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        listed = {m.get("digest") for m in doc["manifests"] if isinstance(m, dict)}
        added = [n.referrer_descriptor() for n in referrers if n.digest not in listed]
        if not added:
            continue
        doc["manifests"].extend(added)
        raw = json.dumps(doc, separators=(",", ":")).encode()
        client.put_manifest(repo, tag, raw, doc.get("mediaType") or OCI_INDEX)
        rp.add(referrer_tags=1)


def _manifests_to_layout(rp: RepoPlan, dest: LayoutDest, counter: Counter) -> None:
    if rp.failed is not None:
        return
    assert dest.layout is not None
    if dest.handle is not None:
        dest.handle.ensure_held()
    for d in rp.order:
        if rp.manifest_state.get(d) != PRESENT:
            dest.write_manifest(rp.nodes[d])
            rp.add(manifests_written=1)
        else:
            rp.add(manifests_present=1)
        counter.add()
    entries = [e for e in rp.entries if e.entry is not None]
    changed = {"tags": 0}

    def mutate(index: Index) -> Index | None:
        return _merge_entries(index, entries, changed)

    if dest.handle is not None:
        dest.handle.ensure_held()
    if mutate(read_index_retrying(dest.layout)) is not None:  # the exclusive hold only when there is a change
        hold = dest.handle.exclusive_hold if dest.handle is not None else None
        update_index(dest.layout, mutate, hold=hold)
    rp.add(tags_written=changed["tags"],
           tags_present=sum(1 for e in entries if e.name is not None) - changed["tags"])


def _merge_entries(index: Index, entries: list[EntryPlan], changed: dict[str, int]) -> Index | None:
    """Add the copied entries to ``index``: a name is made to list exactly the source's digests for
    it (in the source's order); an untagged entry is added unless an untagged one has its digest."""
    new = index
    handled: dict[str, bool] = {}  # name -> already matches
    desired: dict[str, list[Digest]] = {}
    for e in entries:
        if e.name is not None:
            desired.setdefault(e.name, []).append(e.digest)
    changed["tags"] = 0
    for e in entries:
        assert e.entry is not None
        if e.name is None:
            if any(x.ref_name is None and x.digest == e.digest for x in new.entries):
                continue
            new = new.with_entries([e.entry])
            continue
        name = e.name
        if name not in handled:
            have = [x.digest for x in new.entries if x.ref_name == name]
            handled[name] = have == desired[name]
            if not handled[name]:
                new = new.without(lambda _i, x, n=name: x.ref_name == n)  # type: ignore[misc]
        if handled[name]:
            continue
        entry = dict(e.entry)
        annotations = dict(entry.get("annotations") or {})
        annotations[ANNOTATION_REF_NAME] = name
        entry["annotations"] = annotations
        new = new.with_entries([entry])
        changed["tags"] += 1
    return new if new.dumps() != index.dumps() else None


# --------------------------------------------------------------------------------------------------
# Verify
# --------------------------------------------------------------------------------------------------
def _verify(run: _Run, repos: list[RepoPlan]) -> None:
    items: list[tuple[RepoPlan, str, Any]] = []
    for rp in repos:
        if not rp.ok:
            continue
        items.extend((rp, "entry", e) for e in rp.entries)
        items.extend((rp, "manifest", d) for d in rp.order)
        items.extend((rp, "blob", b) for b in rp.blobs.values() if b.state != FOREIGN)
    counter = run.progress.counter("verify", total=len(items))
    lock = threading.Lock()
    indexes: dict[int, Index] = {}

    def check(item: tuple[RepoPlan, str, Any]) -> None:
        rp, kind, obj = item
        try:
            problem = _verify_one(rp, kind, obj, indexes, lock)
        except OcigcError as e:
            problem = str(e)
        except OSError as e:
            problem = f"{rp.dest_label}: {e.strerror or e}"
        if problem:
            with lock:
                run.plan.verify_errors.append(problem)
        else:
            rp.add(verified=1)

    pmap(check, items, max(1, run.plan.options.jobs), on_done=counter.add)
    counter.close()


def _verify_one(rp: RepoPlan, kind: str, obj: Any, indexes: dict[int, Index], lock: threading.Lock) -> str | None:
    dest = rp.dest
    if isinstance(dest, RegistryDest):
        client, repo = dest.client, dest.repo
        if kind == "entry":
            e: EntryPlan = obj
            if e.name is None:
                return None
            info = client.head_manifest(repo, e.name)
            node = rp.nodes[e.digest]
            if info is None or info.digest not in node.registry_digests():
                return f"{rp.dest_label}:{e.name}: is {info.digest if info else 'missing'}, expected {e.digest}"
            return None
        if kind == "manifest":
            node = rp.nodes[obj]
            ref = obj if obj.algorithm == "sha256" else Digest.from_bytes(node.raw, "sha256")
            raw, _, _ = client.get_manifest(repo, ref)
            return None if raw == node.raw else f"{rp.dest_label}@{obj}: bytes differ from the source"
        b: BlobItem = obj
        with client.open_blob(repo, b.digest) as stream:
            return _hash_check(stream, b, f"{rp.dest_label}@{b.digest}")
    assert isinstance(dest, LayoutDest) and dest.layout is not None
    if kind == "entry":
        e = obj
        with lock:
            index = indexes.get(id(rp))
            if index is None:
                index = indexes[id(rp)] = read_index_retrying(dest.layout)
        if e.name is not None and e.digest not in [x.digest for x in index.tags().get(e.name, [])]:
            return f"{dest.layout.where(INDEX_FILE)}: {e.name!r} does not name {e.digest}"
        if e.name is None and e.digest not in index.root_digests():
            return f"{dest.layout.where(INDEX_FILE)}: no entry for {e.digest}"
        return None
    if kind == "manifest":
        raw = dest.layout.read_blob(obj, limit=MAX_MANIFEST_BYTES)
        return None if raw == rp.nodes[obj].raw else f"{dest.layout.where(obj.blob_path())}: differs from the source"
    b = obj
    with dest.layout.open_blob(b.digest) as f:
        return _hash_check(f, b, dest.layout.where(b.digest.blob_path()))


def _hash_check(stream: Any, b: BlobItem, where: str) -> str | None:
    reader = DigestingReader(stream, b.digest.algorithm)
    while reader.read(1024 * 1024):
        pass
    if reader.digest() != b.digest or reader.size != b.size:
        return f"{where}: reads back as {reader.digest()} ({reader.size} bytes), expected {b.digest} ({b.size} bytes)"
    return None


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def migrate(source: str, dest: str, options: MigrateOptions, *, dry_run: bool = False,
            progress: Progress | None = None, on_plan: Callable[[MigratePlan], None] | None = None) -> MigratePlan:
    """Plan (and unless ``dry_run``, execute) a migration. Errors of single repositories are kept
    in the plan (``plan.failed``); an unreachable registry raises RegistryUnavailable."""
    src, dst = parse_endpoint(source), parse_endpoint(dest)
    plan = build_plan(src, dst, options, progress)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return plan
    return execute(plan, progress)


__all__ = [
    "COPY", "DEFAULT_JOBS", "MOUNT", "MOVE", "PRESENT", "BlobItem", "Endpoint", "EntryPlan", "Filters",
    "InvalidTags", "MigrateOptions", "MigratePlan", "RepoPlan", "TagMapping", "TransferError", "build_plan",
    "execute", "map_tag", "migrate", "parse_endpoint",
]
