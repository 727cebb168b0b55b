"""Planning a delete: resolve every reference first, drop its entries, cascade, then the blobs
nothing remaining reaches."""

from __future__ import annotations

import time

from ocigc.digest import Digest
from ocigc.errors import ReferenceNotFound, UnsafeToModify, UsageError
from ocigc.gc.cascade import cascade
from ocigc.gc.plan import (
    DEFAULT_GRACE,
    DeleteOptions,
    EntryRemoval,
    Plan,
    choose_blobs,
    missing_from,
    refuse_dangling,
    refuse_unsafe,
)
from ocigc.gc.young import young_closure
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import BlobListing, Layout
from ocigc.layout.state import LayoutState
from ocigc.oci.index import Index
from ocigc.oci.refs import Reference, no_such_tag
from ocigc.parallel import pmap
from ocigc.storage.base import FileStat


# --- delete --------------------------------------------------------------------------------------
def plan_delete(layout: Layout, state: LayoutState, listing: BlobListing, refs: list[Reference],
                opts: DeleteOptions, now: float | None = None) -> Plan:
    now = time.time() if now is None else now
    index, graph = state.index, state.graph
    plan = Plan("delete", layout.label, layout.location, index.fingerprint)
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
            raise no_such_tag(ref, (e.ref_name for e in index.entries if e.ref_name is not None))
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
