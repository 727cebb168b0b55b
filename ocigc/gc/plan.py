"""Plans for delete and sweep: pure decisions over what a layout holds, printed by a dry run and
executed unchanged by a real run (``ocigc.gc.apply``). The plan objects and the steps delete and
sweep share live here; ``gc.sweep_plan`` and ``gc.delete_plan`` plan each command.

A plan lists the ``index.json`` entries to drop, the manifests to remove (parents first), the
other blobs to remove, what is kept and why (grace period, failed stat), and what is only
reported (files in ``blobs/`` that are not digests). Planning never writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest
from ocigc.duration import format_duration
from ocigc.errors import IntegrityError, UnsafeToModify
from ocigc.gc.trash import TrashInfo
from ocigc.gc.young import YoungClosure, young_closure
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import BlobListing, Layout
from ocigc.layout.state import LayoutState
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.storage.base import FileStat

DEFAULT_GRACE = 3600.0


@dataclass(frozen=True, slots=True)
class EntryRemoval:
    position: int
    digest: Digest
    ref_name: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "digest": self.digest, "tag": self.ref_name, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class BlobRemoval:
    digest: Digest
    size: int | None
    kind: str
    reason: str

    @property
    def path(self) -> str:
        return self.digest.blob_path()

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "kind": self.kind, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class FileRemoval:
    """A writer's leftover temp file (not a blob)."""

    path: str
    size: int | None
    age: float | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "age_seconds": self.age, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class TrashRestore:
    """A trashed blob that ``index.json`` references again: moved back before anything is removed."""

    digest: Digest
    run: str
    path: str
    roots: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "run": self.run, "path": self.path, "roots": self.roots}


@dataclass(frozen=True, slots=True)
class TrashPurge:
    """A trash run older than the retention: emptied for good (after the restores)."""

    run: str
    blobs: int
    age: float | None
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "blobs": self.blobs, "age_seconds": self.age, "kind": self.kind}


@dataclass(frozen=True)
class TrashView:
    """The trash runs a sweep found (read-only), and the retention it purges by (None: keep all)."""

    runs: list[TrashInfo]
    retention: float | None


@dataclass
class EntrySelection:
    """Entries a retention policy removes, and every decision it made (kept or removed, and why)."""

    remove: list[EntryRemoval] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: A retention policy: decides which index.json entries go before the sweep marks.
EntrySelector = Callable[[Layout, LayoutState, float], EntrySelection]


@dataclass(frozen=True, slots=True)
class SweepOptions:
    grace: float = DEFAULT_GRACE
    untagged: bool = False
    jobs: int = DEFAULT_JOBS
    #: Retention policy (``ocigc.retention``); None sweeps only what nothing references.
    select_entries: EntrySelector | None = None


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    keep_referrers: bool = False
    force: bool = False
    jobs: int = DEFAULT_JOBS


@dataclass
class Plan:
    """What one run will do to one layout. ``executed`` makes sure a plan runs once."""

    command: str
    name: str
    location: str
    index_fingerprint: str
    remove_entries: list[EntryRemoval] = field(default_factory=list)
    remove_manifests: list[BlobRemoval] = field(default_factory=list)
    remove_blobs: list[BlobRemoval] = field(default_factory=list)
    remove_files: list[FileRemoval] = field(default_factory=list)
    kept: list[BlobRemoval] = field(default_factory=list)
    kept_files: list[FileRemoval] = field(default_factory=list)
    reported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Per-tag decisions of a retention policy (kept/removed and the rule that decided).
    decisions: list[dict[str, Any]] = field(default_factory=list)
    #: Blobs that what remains references but that were already missing before this run
    #: (a dangling reference the run neither caused nor can fix: reported, exit 4).
    dangling: list[Digest] = field(default_factory=list)
    #: Sweep: trashed blobs referenced again (restored first) and trash runs purged.
    trash_restore: list[TrashRestore] = field(default_factory=list)
    trash_purge: list[TrashPurge] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    executed: bool = False

    @property
    def blob_removals(self) -> list[BlobRemoval]:
        return [*self.remove_manifests, *self.remove_blobs]

    @property
    def bytes_reclaimed(self) -> int:
        return sum(b.size or 0 for b in self.blob_removals) + sum(f.size or 0 for f in self.remove_files)

    @property
    def empty(self) -> bool:
        return not (self.remove_entries or self.remove_manifests or self.remove_blobs or self.remove_files
                    or self.trash_restore or self.trash_purge)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command, "layout": self.name, "location": self.location,
            "index_fingerprint": self.index_fingerprint,
            "remove_entries": [e.to_json() for e in self.remove_entries],
            "remove_manifests": [b.to_json() for b in self.remove_manifests],
            "remove_blobs": [b.to_json() for b in self.remove_blobs],
            "remove_files": [f.to_json() for f in self.remove_files],
            "kept": [b.to_json() for b in self.kept],
            "kept_files": [f.to_json() for f in self.kept_files],
            "reported": self.reported, "notes": self.notes, "decisions": self.decisions,
            "dangling": list(self.dangling),
            "trash_restore": [t.to_json() for t in self.trash_restore],
            "trash_purge": [t.to_json() for t in self.trash_purge],
            "bytes_reclaimed": self.bytes_reclaimed,
        }


# --- shared steps ---------------------------------------------------------------------------------
def refuse_dangling(layout: Layout, plan: Plan) -> None:
    """Fail closed (exit 4) when what remains already references a missing blob: like restic's prune
    with an incomplete index, remove nothing until the damage is looked at (`ocigc check`; deleting the
    broken tag itself is allowed, since its missing blobs are not among what remains)."""
    if not plan.dangling:
        return
    first = plan.dangling[0]
    more = f" (and {len(plan.dangling) - 1} more)" if len(plan.dangling) > 1 else ""
    raise IntegrityError(f"{layout.where(first.blob_path())}: referenced blob is missing{more} (a dangling "
                         "reference from before this run); refusing to remove anything from this layout")


def refuse_unsafe(layout: Layout, graph: RefGraph, reachable: set[Digest]) -> None:
    """Fail closed: a reachable manifest that is missing or cannot be parsed stops the layout."""
    missing = sorted(graph.missing_manifests(reachable))
    if missing:
        raise IntegrityError(f"{layout.where(missing[0].blob_path())}: referenced manifest is missing"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                             + "; refusing to remove anything from this layout")
    errors = graph.errors(reachable)
    if errors:
        _, err = sorted(errors.items())[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UnsafeToModify(f"{err}{more}; refusing to remove anything from this layout")


def _kind(graph: RefGraph, d: Digest) -> str:
    if d not in graph:
        return "blob"
    return str(graph.node(d)["kind"] or "blob")


def _size(graph: RefGraph, d: Digest, stats: dict[Digest, FileStat | None]) -> int | None:
    st = stats.get(d)
    if st is not None:
        return st.size
    if d in graph:
        sizes = [s for s in graph.node(d)["sizes"] if s >= 0]
        return max(sizes) if sizes else None
    return None


#: Why a blob older than the grace period stays: a young unreachable manifest references it.
YOUNG_PARENT = "referenced by a manifest younger than the grace period"


def choose_blobs(plan: Plan, layout: Layout, graph: RefGraph, present: set[Digest], keep: set[Digest],
                 reason: str, grace: float | None, jobs: int, now: float,
                 known: dict[Digest, FileStat] | None = None, protect: YoungClosure | None = None) -> None:
    """Every present blob outside ``keep``: removed (manifests parents-first), or kept when young, or
    when a young unreachable manifest references it (``protect``; computed here when ``grace`` is set).

    ``known``: sizes and mtimes the listing already gave (an object store): no stat for those."""
    candidates = sorted(present - keep)
    stats: dict[Digest, FileStat | None] = {}
    failed: set[Digest] = set()
    known = known or {}

    def stat(d: Digest) -> FileStat | None:
        try:
            return layout.stat_blob(d)
        except OSError:
            failed.add(d)
            return None

    unknown = [d for d in candidates if d not in known]
    for d, st in zip(unknown, pmap(stat, unknown, jobs), strict=True):
        stats[d] = st
    for d in candidates:
        if d in known:
            stats[d] = known[d]
    young: dict[Digest, FileStat] = {}
    for d in candidates:
        st = stats[d]
        if st is not None and d not in failed and grace is not None and now - st.mtime < grace:
            young[d] = st
    if protect is None and young:
        protect = young_closure(layout, graph, young, jobs)
    protect = protect or YoungClosure()
    if protect.unknown:
        more = f" (and {len(protect.unknown) - 1} more)" if len(protect.unknown) > 1 else ""
        plan.notes.append(f"{protect.unknown[0]}{more}: its children are unknown, so every unreachable blob "
                          "is kept until it is older than the grace period")
    go: list[Digest] = []
    for d in candidates:
        st = stats[d]
        if d in failed:
            plan.kept.append(BlobRemoval(d, None, _kind(graph, d), "stat failed: kept"))
        elif st is None:
            continue  # gone already
        elif d in young:
            plan.kept.append(BlobRemoval(d, st.size, _kind(graph, d),
                                         f"younger than the grace period "
                                         f"({format_duration(now - st.mtime, 'age')} old)"))
        elif d in protect.protected:
            plan.kept.append(BlobRemoval(d, st.size, _kind(graph, d),
                                         f"{YOUNG_PARENT} ({protect.protected[d].short})"))
        elif protect.unknown:
            plan.kept.append(BlobRemoval(d, st.size, _kind(graph, d),
                                         "kept: a young blob that looks like a manifest cannot be parsed"))
        else:
            go.append(d)
    manifests = [d for d in go if d in graph and graph.is_manifest(d) and graph.node(d)["present"]]
    for d in graph.topo_parents_first(manifests):
        plan.remove_manifests.append(BlobRemoval(d, _size(graph, d, stats), _kind(graph, d), reason))
    mset = set(manifests)
    for d in go:
        if d not in mset:
            plan.remove_blobs.append(BlobRemoval(d, _size(graph, d, stats), _kind(graph, d), reason))


def report_listing(plan: Plan, layout: Layout, listing: BlobListing) -> None:
    for path in listing.foreign:
        plan.reported.append(f"{layout.where(path)}: not a digest name (never deleted)")
    for path in listing.unknown_algorithms:
        plan.reported.append(f"{layout.where(path)}: unsupported digest algorithm directory (never swept)")
    for path in listing.symlinks:
        plan.reported.append(f"{layout.where(path)}: symlink in blobs/ (never deleted)")


def choose_leftovers(plan: Plan, layout: Layout, listing: BlobListing, grace: float, jobs: int, now: float) -> None:
    paths = sorted({*listing.temp, *layout.list_temp_leftovers()})
    stats = pmap(lambda p: _stat_file(layout, p), paths, jobs)
    for path, st in zip(paths, stats, strict=True):
        if st is None:
            continue
        age = now - st.mtime
        size = 0 if st.is_dir else st.size  # an empty temp directory frees no bytes worth counting
        item = FileRemoval(path, size, age, "leftover temp file of a writer")
        if age < grace:
            plan.kept_files.append(FileRemoval(path, size, age,
                                               f"younger than the grace period ({format_duration(age, 'age')})"))
        else:
            plan.remove_files.append(item)


def _stat_file(layout: Layout, path: str) -> FileStat | None:
    try:
        return layout.storage.stat(path)
    except OSError:
        return None


def missing_from(graph: RefGraph, keep: set[Digest], listing: BlobListing,
                 restored: Iterable[Digest] = ()) -> list[Digest]:
    """What ``keep`` references that ``blobs/`` lacks: damage, except foreign layers (a descriptor with
    ``urls``: fetched from there) and blobs the run restores from the trash first."""
    absent = keep - listing.digests - listing.symlinked - set(restored)
    return sorted(absent - graph.foreign(absent))


