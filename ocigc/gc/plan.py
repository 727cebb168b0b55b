"""Plans for delete and sweep: pure decisions over what a layout holds, printed by a dry run and
executed unchanged by a real run (``ocigc.apply``).

A plan lists the ``index.json`` entries to drop, the manifests to remove (parents first), the
other blobs to remove, what is kept and why (grace period, failed stat), and what is only
reported (files in ``blobs/`` that are not digests). Planning never writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import IntegrityError, ManifestError, ReferenceNotFound, UnsafeToModify, UsageError
from ocigc.gc.cascade import cascade
from ocigc.gc.trash import TrashInfo, root_names, trashed_digests
from ocigc.jsonload import JSONInputError, load_json
from ocigc.layout.graph import RefGraph, wants_read
from ocigc.layout.layout import MAX_MANIFEST_BYTES, BlobListing, Layout
from ocigc.layout.state import LayoutState
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import MANIFEST_TYPES, Descriptor
from ocigc.oci.index import Index
from ocigc.oci.refs import Reference
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.storage.base import FileStat

DEFAULT_GRACE = 3600.0
#: The shortest JSON that can hold a descriptor ({"digest":"sha256:<64 hex>","size":0}): a young
#: blob shorter than this (by its real size) references nothing.
MIN_DESCRIPTOR_BYTES = 88


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


@dataclass
class YoungClosure:
    """What young unreachable manifests reference (transitively): blob -> the young manifest."""

    protected: dict[Digest, Digest] = field(default_factory=dict)
    #: Young blobs that look like manifests but cannot be parsed: their children are unknown.
    unknown: list[str] = field(default_factory=list)


def _looks_like_manifest(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    if doc.get("mediaType") in MANIFEST_TYPES:
        return True
    return doc.get("schemaVersion") in (1, 2) and any(
        k in doc for k in ("manifests", "config", "layers", "fsLayers", "blobs", "subject"))


def _read_if_json(layout: Layout, d: Digest) -> bytes | None:
    """The blob's bytes when it starts like JSON (``{``), else None after reading only its head: a
    young gzip layer costs one short read, not a whole one."""
    with layout.open_blob(d) as f:
        head = f.read(512)
        if head.lstrip()[:1] not in (b"{", b""):
            return None
        rest = f.read(MAX_MANIFEST_BYTES + 1 - len(head))
    raw = head + rest
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{layout.where(d.blob_path())}: larger than {MAX_MANIFEST_BYTES} bytes")
    return raw if raw.lstrip()[:1] == b"{" else None


def young_closure(layout: Layout, graph: RefGraph, young: dict[Digest, FileStat], jobs: int) -> YoungClosure:
    """Read the young blobs that could be manifests (JSON, at most 4 MiB) and collect everything they
    reference, through nested manifests (read by the graph's rules, reusing what ``graph`` read).

    Only young blobs are read, so the cost is bounded by what was written within the grace period.
    A young blob that is JSON shaped like a manifest but does not parse (or a truncated one) goes
    to ``unknown``: its children cannot be known, and the caller keeps every candidate."""
    out = YoungClosure()
    small = sorted(d for d, st in young.items() if MIN_DESCRIPTOR_BYTES <= st.size <= MAX_MANIFEST_BYTES)

    def read(d: Digest) -> tuple[mf.Parsed | None, str | None]:
        where = layout.where(d.blob_path())
        try:
            raw = _read_if_json(layout, d)
        except FileNotFoundError:
            return None, None  # gone meanwhile: nothing to protect
        except (OSError, ManifestError) as e:
            return None, f"{where}: cannot read ({getattr(e, 'strerror', None) or e})"
        if raw is None:
            return None, None  # not JSON: a leaf
        try:
            doc = load_json(raw, limit=None)
        except JSONInputError:
            head = raw[:4096]
            if b'"schemaVersion"' in head or b'"mediaType"' in head:
                return None, f"{where}: young blob looks like a manifest but is not valid JSON (truncated?)"
            return None, None
        try:
            return mf.parse(raw, None, where), None
        except ManifestError as e:
            return None, str(e) if _looks_like_manifest(doc) else None

    follow: dict[Digest, Descriptor] = {}
    direct: dict[Digest, list[Digest]] = {}
    for d, (parsed, problem) in zip(small, pmap(read, small, jobs), strict=True):
        if problem:
            out.unknown.append(problem)
        if parsed is None:
            continue
        direct[d] = []
        for kind, child in parsed.children:
            direct[d].append(child.digest)
            if wants_read(child, listed=kind == mf.CHILD):
                follow.setdefault(child.digest, child)
    if follow:
        doc = {"schemaVersion": 2, "manifests": [c.to_json() for c in follow.values()]}
        sub = RefGraph.build(layout, Index.parse(json.dumps(doc).encode()), jobs, known=graph)
        below: dict[Digest, set[Digest]] = {c: sub.reachable([c]) for c in follow}
        errors = sub.errors(set().union(*below.values()))
        out.unknown.extend(err for d, err in sorted(errors.items()) if sub.node(d)["present"] is not False)
    else:
        below = {}
    for parent in sorted(direct):
        for cd in direct[parent]:
            for blob in below.get(cd, {cd}):
                if blob != parent:
                    out.protected.setdefault(blob, parent)
    return out


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
                                         f"younger than the grace period ({_age(now - st.mtime)} old)"))
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


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{seconds / n:.1f}{unit}"
    return f"{seconds:.0f}s"


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
        item = FileRemoval(path, st.size, age, "leftover temp file of a writer")
        if age < grace:
            plan.kept_files.append(FileRemoval(path, st.size, age, f"younger than the grace period ({_age(age)})"))
        else:
            plan.remove_files.append(item)


def _stat_file(layout: Layout, path: str) -> FileStat | None:
    try:
        return layout.storage.stat(path)
    except OSError:
        return None


# --- sweep ---------------------------------------------------------------------------------------
def keep_linked(plan: Plan, layout: Layout, graph: RefGraph, listing: BlobListing, keep: set[Digest]) -> set[Digest]:
    """The hook for digests referenced from outside the layout: what a symlink of another layout under
    the swept root leads to (``discover.map_links``) is referenced, kept and reported "linked from
    <link>". The layout's own links that lead outside the swept root are noted: their targets can only
    be protected by sweeping a root that holds both ends (``docs/design.md``)."""
    extra: set[Digest] = set()
    for d in sorted(listing.digests - keep):
        source = layout.linked_from.get(d) or layout.linked_dirs.get(d.algorithm)
        if source is None:
            continue
        extra.add(d)
        st = listing.stats.get(d)
        plan.kept.append(BlobRemoval(d, st.size if st else None, _kind(graph, d), f"linked from {source}"))
    if layout.links_out:
        more = f" (and {len(layout.links_out) - 1} more)" if len(layout.links_out) > 1 else ""
        plan.notes.append(f"symlink {layout.links_out[0]}{more} leads outside the swept path: sweep a "
                          "directory holding both ends, or its target may be removed by that layout's sweep")
    return extra


def untagged_removals(index: Index, graph: RefGraph, dropped: set[int] | None = None) -> list[EntryRemoval]:
    """Untagged entries that no tagged root reaches and that are not referrers of a live subject.

    ``dropped``: positions of tagged entries already going (a retention policy's removals)."""
    dropped = dropped or set()
    live = graph.reachable({e.digest for i, e in enumerate(index.entries)
                            if e.has_ref_name and i not in dropped})
    untagged = [(i, e) for i, e in enumerate(index.entries) if not e.has_ref_name]
    changed = True
    while changed:  # referrers of live subjects are live, and so on down referrer chains
        changed = False
        for _, e in untagged:
            if e.digest in live:
                continue
            subjects = {s for s, kinds in graph.children(e.digest, include_subject=True) if "subject" in kinds}
            if subjects & live:
                live |= graph.reachable([e.digest])
                changed = True
    return [EntryRemoval(i, e.digest, None, "untagged, unreachable from every tag")
            for i, e in untagged if e.digest not in live]


def plan_sweep(layout: Layout, state: LayoutState, listing: BlobListing, opts: SweepOptions,
               now: float | None = None, trash: TrashView | None = None) -> Plan:
    """``trash``: the trash runs found; ``state`` must then have been read through
    ``ocigc.gc.trash.TrashOverlay`` (a trashed manifest referenced again is read from the trash)."""
    now = time.time() if now is None else now
    index, graph = state.index, state.graph
    plan = Plan("sweep", layout.name, layout.location, index.fingerprint)
    roots = list(index.root_digests())
    refuse_unsafe(layout, graph, graph.reachable(roots))
    restored: set[Digest] = set()
    if trash is not None:
        restored = plan_trash(plan, layout, state, listing, trash, now)
    if opts.select_entries is not None:
        selection = opts.select_entries(layout, state, now)
        plan.remove_entries.extend(selection.remove)
        plan.decisions.extend(selection.decisions)
        plan.notes.extend(selection.notes)
    if opts.untagged:
        dropped_by_policy = {r.position for r in plan.remove_entries}
        removals = [r for r in untagged_removals(index, graph, dropped_by_policy)
                    if r.position not in dropped_by_policy]
        old = _old_enough(layout, [r.digest for r in removals], opts.grace, opts.jobs, now, listing.stats)
        for r in removals:
            if r.digest in old:
                plan.remove_entries.append(r)
            else:
                plan.notes.append(f"untagged entry {r.digest.short} kept: younger than the grace period")
        if opts.select_entries is None:  # a policy cascades its own removals (its `referrers` setting)
            _cascade_untagged(plan, layout, state, opts, now, listing)
    dropped = {r.position for r in plan.remove_entries}
    roots = [e.digest for i, e in enumerate(index.entries) if i not in dropped]
    keep = graph.reachable(roots)
    plan.dangling = missing_from(graph, keep, listing, restored)
    report_foreign(plan, layout, graph, keep, listing)
    refuse_dangling(layout, plan)
    keep = keep | keep_linked(plan, layout, graph, listing, keep)
    choose_blobs(plan, layout, graph, listing.digests, keep, "unreachable", opts.grace, opts.jobs, now,
                 listing.stats)
    choose_leftovers(plan, layout, listing, opts.grace, opts.jobs, now)
    report_listing(plan, layout, listing)
    return plan


def _cascade_untagged(plan: Plan, layout: Layout, state: LayoutState, opts: SweepOptions, now: float,
                      listing: BlobListing) -> None:
    """The referrers of the untagged manifests a sweep drops go with them, as in ``delete`` (the one
    cascade, ``ocigc.gc.cascade``): entries whose manifest's ``subject`` goes, and referrer tags
    (``sha256-<hex>``, cosign's ``.sig``/``.att``/``.sbom``) of what goes; past the grace period."""
    index, graph = state.index, state.graph
    drop = {r.position: r.reason for r in plan.remove_entries}
    targets = {index.entries[i].digest for i in drop}
    before = set(drop)
    cascade(index, graph, drop, targets, keep_referrers=False)
    added = sorted(set(drop) - before)
    old = _old_enough(layout, [index.entries[i].digest for i in added], opts.grace, opts.jobs, now, listing.stats)
    for i in added:
        e = index.entries[i]
        if e.digest in old:
            plan.remove_entries.append(EntryRemoval(i, e.digest, e.ref_name, drop[i]))
        else:
            plan.notes.append(f"{drop[i]} {e.digest.short} kept: younger than the grace period")


def missing_from(graph: RefGraph, keep: set[Digest], listing: BlobListing,
                 restored: Iterable[Digest] = ()) -> list[Digest]:
    """What ``keep`` references that ``blobs/`` lacks: damage, except foreign layers (a descriptor with
    ``urls``: fetched from there) and blobs the run restores from the trash first."""
    absent = keep - listing.digests - listing.symlinked - set(restored)
    return sorted(absent - graph.foreign(absent))


def report_foreign(plan: Plan, layout: Layout, graph: RefGraph, keep: set[Digest], listing: BlobListing) -> None:
    absent = keep - listing.digests - listing.symlinked
    for d in sorted(graph.foreign(absent)):
        plan.reported.append(f"{layout.where(d.blob_path())}: foreign layer (has urls), not in blobs/: "
                             "not damage")


def plan_trash(plan: Plan, layout: Layout, state: LayoutState, listing: BlobListing, trash: TrashView,
               now: float) -> set[Digest]:
    """Trashed blobs the current ``index.json`` reaches again and ``blobs/`` lacks go back (from the
    newest run holding them, as ``ocigc.gc.trash.resurrect`` does), then runs older than the retention
    are purged. Read-only; returns the digests restored."""
    trashed = trashed_digests(layout, trash.runs)
    reach = state.reachable()
    wanted = sorted((reach - listing.digests - listing.symlinked) & trashed.keys())
    taken: dict[str, int] = {}
    for d in wanted:
        run, rel = trashed[d][0]
        plan.trash_restore.append(TrashRestore(d, run, rel, root_names(state.graph, state.index, d)))
        taken[run] = taken.get(run, 0) + 1
    for info in trash.runs:
        age = info.age(now)
        if trash.retention is None or (age is not None and age >= trash.retention):
            plan.trash_purge.append(TrashPurge(info.run, len(info.blobs) - taken.get(info.run, 0), age, info.kind))
    return set(wanted)


def _old_enough(layout: Layout, digests: list[Digest], grace: float, jobs: int, now: float,
                known: dict[Digest, FileStat] | None = None) -> set[Digest]:
    known = known or {}

    def old(d: Digest) -> bool:
        try:
            st = known[d] if d in known else layout.stat_blob(d)
        except OSError:
            return False
        return st is None or now - st.mtime >= grace

    return {d for d, ok in zip(digests, pmap(old, digests, jobs), strict=True) if ok}


# --- delete --------------------------------------------------------------------------------------
def plan_delete(layout: Layout, state: LayoutState, listing: BlobListing, refs: list[Reference],
                opts: DeleteOptions, now: float | None = None) -> Plan:
    now = time.time() if now is None else now
    index, graph = state.index, state.graph
    plan = Plan("delete", layout.name, layout.location, index.fingerprint)
    drop: dict[int, str] = {}
    targets: set[Digest] = set()
    for ref in refs:
        _select(layout, index, graph, ref, opts, drop, targets)
    cascade(index, graph, drop, targets, keep_referrers=opts.keep_referrers)
    remaining = [e.digest for i, e in enumerate(index.entries) if i not in drop]
    keep = graph.reachable(remaining)
    refuse_unsafe(layout, graph, keep)
    plan.dangling = missing_from(graph, keep, listing)
    refuse_dangling(layout, plan)
    for i in sorted(drop):
        e = index.entries[i]
        plan.remove_entries.append(EntryRemoval(i, e.digest, e.ref_name, drop[i]))
    for d in sorted(targets & keep):
        plan.notes.append(f"{d.short} stays: still reachable from another tag or index")
    everything = graph.reachable([e.digest for e in index.entries])
    doomed = everything - keep
    # Delete has no grace period for what it makes unreachable, but a young manifest that nothing
    # references yet (a writer between its manifest and its index.json update) keeps its closure.
    never = sorted(listing.digests - everything) if listing.digests & doomed else []
    stats = stat_known(layout, never, opts.jobs, listing.stats)
    young = {d: st for d, st in stats.items() if st is not None and now - st.mtime < DEFAULT_GRACE}
    protect = young_closure(layout, graph, young, opts.jobs) if young and doomed else None
    choose_blobs(plan, layout, graph, listing.digests & doomed, keep, "no longer reachable", None, opts.jobs, now,
                 listing.stats, protect=protect)
    return plan


def stat_known(layout: Layout, digests: list[Digest], jobs: int,
               known: dict[Digest, FileStat] | None = None) -> dict[Digest, FileStat | None]:
    known = known or {}

    def one(d: Digest) -> FileStat | None:
        if d in known:
            return known[d]
        try:
            return layout.stat_blob(d)
        except OSError:
            return None

    return dict(zip(digests, pmap(one, digests, jobs), strict=True))


def _select(layout: Layout, index: Index, graph: RefGraph, ref: Reference, opts: DeleteOptions,
            drop: dict[int, str], targets: set[Digest]) -> None:
    if ref.digest is None and ref.tag is None:
        raise UsageError(f"{ref.path}: name a tag (PATH:TAG) or a digest (PATH@DIGEST) to delete")
    if ref.tag is not None:
        hits = [(i, e) for i, e in enumerate(index.entries) if e.ref_name == ref.tag]
        if not hits:
            raise ReferenceNotFound(f"{layout.where('index.json')}: no tag {ref.tag!r}")
        for i, e in hits:
            drop[i] = f"tag {ref.tag} deleted"
            targets.add(e.digest)
        return
    assert ref.digest is not None
    d = ref.digest
    if d not in graph:
        raise ReferenceNotFound(f"{layout.where('index.json')}: {d} is neither an entry nor reachable from one")
    listed_by = [p for p, _ in graph.parents(d)]
    live_parents = [p for p in listed_by if p in graph.reachable(index.root_digests())]
    if live_parents and not opts.force:
        parent = live_parents[0]
        tags = sorted(graph.node(parent)["tags"])
        named = f" (tag {', '.join(tags)})" if tags else ""
        raise UnsafeToModify(f"{layout.where(d.blob_path())}: listed by index {parent.short}{named}; delete that "
                             "index instead, or --force to remove only this digest's own index.json entries")
    for i, e in enumerate(index.entries):
        if e.digest == d:
            drop[i] = f"digest {d.short} deleted"
    targets.add(d)


