"""The state of a layout as read: its `index.json` and reference graph (``LayoutState``), and blob stats."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ocigc.digest import Digest
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import Layout
from ocigc.oci.index import Index
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.progress import NullProgress, Progress
from ocigc.storage.base import FileStat


@dataclass
class LayoutState:
    """What a layout says right now: ``index.json`` and the graph built from it."""

    layout: Layout
    index: Index
    graph: RefGraph

    @classmethod
    def load(cls, layout: Layout, jobs: int = DEFAULT_JOBS, progress: Progress | None = None,
             known: RefGraph | None = None, index: Index | None = None) -> LayoutState:
        """Read ``index.json`` (unless given) and build the graph, reusing what ``known`` read."""
        index = index if index is not None else layout.read_index()
        counter = (progress or NullProgress()).counter(f"manifests {layout.name or layout.location}")
        return cls(layout, index, RefGraph.build(layout, index, jobs, counter, known))

    def reachable(self) -> set[Digest]:
        return self.graph.reachable(self.index.root_digests())


def stat_blobs(layout: Layout, digests: Iterable[Digest], jobs: int = DEFAULT_JOBS,
               progress: Progress | None = None, known: dict[Digest, FileStat] | None = None,
               ) -> dict[Digest, FileStat | None]:
    """Stat many blobs in a pool; None for a blob that is gone. ``known``: stats a listing already gave."""
    known = known or {}
    digests = list(digests)
    seq = sorted(d for d in digests if d not in known)
    counter = (progress or NullProgress()).counter("stat", total=len(seq))
    stats = pmap(layout.stat_blob, seq, jobs, on_done=counter.add)
    counter.close()
    out: dict[Digest, FileStat | None] = {d: known[d] for d in digests if d in known}
    out.update(zip(seq, stats, strict=True))
    return out


