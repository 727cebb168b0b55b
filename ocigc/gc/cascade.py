"""The deletion cascade: what else leaves ``index.json`` when entries are dropped.

One cascade for ``delete``, ``sweep --untagged`` and retention policies (``docs/design.md``,
"delete" and "Referrers"). Given the entries already dropped (``drop``: entry position -> reason)
and the manifests being removed (``targets``), it drops, until nothing changes:

* the untagged entries of what is removed (its own untagged entries, the platform manifests of a
  removed index) that no remaining entry reaches; an untagged index that lists another candidate
  goes first, the candidate on the next pass;
* unless referrers are kept, the referrers of what goes: entries whose manifest has a ``subject``
  that goes, and entries whose tag names a subject that goes (``ocigc.oci.referrers``: the
  referrers tag schema and cosign's ``.sig``/``.att``/``.sbom`` tags).

``protected`` entries (retention's kept tags) are never dropped, nor is anything they reach.
"""

from __future__ import annotations

from collections.abc import Iterable

from ocigc.digest import Digest
from ocigc.layout.graph import RefGraph
from ocigc.oci.index import Index
from ocigc.oci.referrers import tag_subject


def cascade(index: Index, graph: RefGraph, drop: dict[int, str], targets: set[Digest], *,
            keep_referrers: bool = False, protected: Iterable[int] = (), verb: str = "deleted") -> None:
    """Extend ``drop`` and ``targets`` in place. ``verb`` words the reasons (``deleted``, ``removed``)."""
    entries = index.entries
    shielded = set(protected)
    everything = graph.reachable(e.digest for e in entries)
    while True:
        keep = graph.reachable(e.digest for i, e in enumerate(entries) if i not in drop)
        gone = (everything - keep) | {t for t in targets if t not in keep}
        added = _drop_untagged(index, graph, drop, targets, shielded, verb)
        if not keep_referrers:
            added |= _drop_referrers(index, graph, drop, targets, shielded, gone, verb)
        if not added:
            return


def _drop_untagged(index: Index, graph: RefGraph, drop: dict[int, str], targets: set[Digest],
                   shielded: set[int], verb: str) -> bool:
    entries = index.entries
    part_of = _part_of(graph, targets)
    cands = {i for i, e in enumerate(entries)
             if i not in drop and i not in shielded and not e.has_ref_name and e.digest in part_of}
    if not cands:
        return False
    base = graph.reachable(e.digest for i, e in enumerate(entries) if i not in drop and i not in cands)
    below = graph.reachable(c for d in {entries[i].digest for i in cands} if d in graph for c, _ in graph.children(d))
    added = False
    for i in sorted(cands):
        d = entries[i].digest
        if d in base or d in below:
            continue
        owner = part_of[d]
        drop[i] = (f"untagged entry of {verb} {owner.short}" if owner == d
                   else f"untagged child of {verb} {owner.short}")
        added = True
    return added


def _drop_referrers(index: Index, graph: RefGraph, drop: dict[int, str], targets: set[Digest],
                    shielded: set[int], gone: set[Digest], verb: str) -> bool:
    entries = index.entries
    shield = graph.reachable(entries[i].digest for i in shielded if i not in drop)
    added = False
    for i, e in enumerate(entries):
        if i in drop or i in shielded or e.digest in shield:
            continue
        subjects = ({Digest(s) for s, kinds in graph.children(e.digest, include_subject=True) if "subject" in kinds}
                    if e.digest in graph else set())
        dead = sorted(subjects & gone)
        subject = dead[0] if dead else tag_subject(e.ref_name, gone)
        if subject is None:
            continue
        drop[i] = f"referrer of {verb} {subject.short}"
        targets.add(e.digest)
        added = True
    return added


def _part_of(graph: RefGraph, targets: set[Digest]) -> dict[Digest, Digest]:
    """Everything the removed manifests reach -> the removed manifest it belongs to."""
    out: dict[Digest, Digest] = {}
    for t in sorted(targets):
        for d in graph.reachable([t]):
            out.setdefault(Digest(d), t)
    for t in targets:
        out[t] = t
    return out
