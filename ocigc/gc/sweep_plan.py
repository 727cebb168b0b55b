"""Planning a sweep: unreachable blobs past the grace period, untagged entries, trash restores and
purges, links from other layouts."""

from __future__ import annotations

import time

from ocigc.digest import Digest
from ocigc.gc.cascade import cascade
from ocigc.gc.plan import (
    BlobRemoval,
    EntryRemoval,
    Plan,
    SweepOptions,
    TrashPurge,
    TrashRestore,
    TrashView,
    _kind,
    choose_blobs,
    choose_leftovers,
    missing_from,
    refuse_dangling,
    refuse_unsafe,
    report_listing,
)
from ocigc.gc.trash import root_names, trashed_digests
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import BlobListing, Layout
from ocigc.layout.state import LayoutState
from ocigc.oci.index import Index
from ocigc.parallel import pmap
from ocigc.storage.base import FileStat


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
    plan = Plan("sweep", layout.label, layout.location, index.fingerprint)
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
