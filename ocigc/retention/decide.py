"""Retention policies: a TOML file of rules, and the decision that turns one into an ``EntrySelection``.

A policy is a list of rules. The first rule whose ``repositories`` globs match a layout's path
under the sweep root applies to that layout; a layout no rule matches keeps every tag. Within a
rule, per tag (an ``index.json`` entry with a name):

* keep criteria are OR'ed and always win: the tag ``latest`` (unless ``keep_latest = false``),
  ``keep_tags`` (anchored regexes), the ``keep_last`` newest tags, tags newer than
  ``keep_within``;
* delete criteria are AND'ed: a tag goes only when it matches every one the rule sets
  (``delete_tags``, ``delete_older_than``); a rule that sets none removes no tag;
* a tag whose manifest blob is younger than the grace period (or cannot be stat-ed) is kept;
* decisions are per tag, acted on per manifest: a manifest with any kept tag, or reachable from
  a kept tag (a platform manifest of a kept index), keeps all its tags;
* referrers (a manifest with a ``subject``, or a referrers-schema tag ``sha256-<hex>[.sig]``) are
  not ranked by the rules: they follow their subject and go with it unless ``referrers = "keep"``
  (a referrer tag matched by ``keep_tags`` stays regardless);
* ``untagged = "delete"`` also drops untagged entries no kept tag reaches that are not referrers
  of a live subject, older (by blob mtime) than ``untagged_older_than`` (default: the grace);
* times come from an explicit source (``time_source``): ``auto`` is the manifest's
  ``org.opencontainers.image.created`` annotation, then the ``index.json`` entry's, then the
  image config's ``created``, then the manifest blob's mtime. When a rule needs times and most
  tagged manifests of a repository have none, or the same one (within ``same_time_window``), the
  rule refuses to act on that repository (``ambiguous_times = "proceed"`` overrides).

``decide`` is pure (the index, the graph and the facts in, an ``EntrySelection`` out);
``gather`` reads what it needs through the layout (config blobs only when the chain gets there).
See ``docs/retention.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ocigc.digest import Digest
from ocigc.duration import format_duration
from ocigc.errors import ManifestError
from ocigc.gc.cascade import cascade
from ocigc.gc.plan import EntryRemoval, EntrySelection, EntrySelector, SweepOptions
from ocigc.gc.run import RunOptions
from ocigc.gc.sweep_plan import untagged_removals
from ocigc.jsonload import load_json
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import Layout
from ocigc.layout.state import LayoutState
from ocigc.oci.descriptor import ANNOTATION_CREATED, Descriptor
from ocigc.oci.index import Index
from ocigc.oci.referrers import tag_subject
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.retention.model import (
    SOURCE_CONFIG,
    SOURCE_ENTRY,
    SOURCE_MANIFEST,
    SOURCE_MTIME,
    SOURCES,
    Facts,
    Rule,
    Stamp,
    format_time,
    parse_time,
    repository_name,
)


@dataclass(frozen=True)
class Policy:
    path: str
    rules: tuple[Rule, ...]
    sha256: str = ""
    warnings: tuple[str, ...] = ()

    def rule_for(self, repository: str) -> Rule | None:
        """The first rule whose ``repositories`` match (None: the repository keeps every tag)."""
        for rule in self.rules:
            if rule.matches(repository):
                return rule
        return None

    def selector(self, layout: Layout, grace: float, jobs: int = DEFAULT_JOBS) -> EntrySelector:
        """The ``SweepOptions.select_entries`` hook for one layout."""
        repo = repository_name(layout)
        rule = self.rule_for(repo)

        def select(lay: Layout, state: LayoutState, now: float) -> EntrySelection:
            if rule is None:
                return EntrySelection(notes=[f"policy {self.path}: no rule matches {repo!r}: every tag kept"])
            facts = gather(rule, lay, state, jobs)
            return decide(rule, repo, state.index, state.graph, facts, now, grace)

        return select

    def sweep_options(self, layout: Layout, base: SweepOptions) -> SweepOptions:
        """``base`` with this policy's selector, and the matching rule's grace (else the command's)."""
        rule = self.rule_for(repository_name(layout))
        grace = rule.grace if rule is not None and rule.grace is not None else base.grace
        return replace(base, grace=grace, select_entries=self.selector(layout, grace, base.jobs))

    def run_options(self, layout: Layout, base: RunOptions) -> RunOptions:
        """``base`` with the matching rule's trash settings (else the command's)."""
        rule = self.rule_for(repository_name(layout))
        if rule is None:
            return base
        if rule.trash is not None:
            base = replace(base, trash=rule.trash)
        if rule.trash_retention is not None:
            base = replace(base, trash_retention=rule.trash_retention)
        return base

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "rules": [r.to_json() for r in self.rules],
                "warnings": list(self.warnings)}


class _TimeReader:
    def __init__(self, layout: Layout, graph: RefGraph, mtimes: Mapping[Digest, float | None]) -> None:
        self.layout = layout
        self.graph = graph
        self.mtimes = mtimes
        self._config: dict[Digest, Stamp] = {}

    def stamp(self, entry: Descriptor, source: str) -> Stamp:
        order = SOURCES if source == "auto" else (source,)
        skipped: list[str] = []
        for src in order:
            st = self._one(entry, src)
            if st.time is not None:
                return st
            if st.detail:
                skipped.append(st.detail)
        return Stamp(None, None, "; ".join(skipped) or f"no {('timestamp' if source == 'auto' else source)}")

    def _one(self, entry: Descriptor, src: str) -> Stamp:
        d = entry.digest
        if src == SOURCE_MANIFEST:
            return self._annotation(self._manifest_annotations(d), src)
        if src == SOURCE_ENTRY:
            return self._annotation(entry.annotations, src)
        if src == SOURCE_CONFIG:
            return self._config_time(d, 0, frozenset())
        mt = self.mtimes.get(d)
        return Stamp(mt, SOURCE_MTIME) if mt is not None else Stamp(None, None, "mtime unknown (stat failed)")

    def _manifest_annotations(self, d: Digest) -> Mapping[str, Any]:
        if d not in self.graph:
            return {}
        ann = self.graph.node(d).get("annotations")
        return ann if isinstance(ann, dict) else {}

    @staticmethod
    def _annotation(annotations: Mapping[str, Any], src: str) -> Stamp:
        value = annotations.get(ANNOTATION_CREATED)
        if value is None:
            return Stamp(None, None)
        t = parse_time(value)
        if t is None:
            return Stamp(None, None, f"{src} {str(value)[:40]!r} is not a usable RFC 3339 time")
        return Stamp(t, src)

    def _config_time(self, d: Digest, depth: int, seen: frozenset[Digest]) -> Stamp:
        """The config's ``created``; for an index the newest of its children's (manifest annotation or config)."""
        if d in self._config:
            return self._config[d]
        if d not in self.graph or d in seen or depth > 4:
            return Stamp(None, None)
        node = self.graph.node(d)
        kids = self.graph.children(d)
        configs = [c for c, kinds in kids if "config" in kinds]
        out = Stamp(None, None)
        if configs:
            out = self._read_config(configs[0])
        elif node.get("kind") == "index":
            best: float | None = None
            for child, kinds in kids:
                if "child" not in kinds:
                    continue
                st = self._annotation(self._manifest_annotations(child), SOURCE_MANIFEST)
                if st.time is None:
                    st = self._config_time(child, depth + 1, seen | {d})
                if st.time is not None and (best is None or st.time > best):
                    best = st.time
            if best is not None:
                out = Stamp(best, SOURCE_CONFIG)
        self._config[d] = out
        return out

    def _read_config(self, config: Digest) -> Stamp:
        try:
            raw = self.layout.read_blob(config, limit=4 * 1024 * 1024)
            doc = load_json(raw, limit=None)
        except (OSError, ManifestError, ValueError):
            return Stamp(None, None, f"config {config.short} unreadable")
        value = doc.get("created") if isinstance(doc, dict) else None
        if value is None:
            return Stamp(None, None)
        t = parse_time(value)
        if t is None:
            return Stamp(None, None, f"config created {str(value)[:40]!r} is not a usable time")
        return Stamp(t, SOURCE_CONFIG)


# --- classification ------------------------------------------------------------------------------
def tag_part(ref_name: str) -> str:
    """What the patterns see: the tag after the last ``:`` that follows the last ``/``."""
    slash = ref_name.rfind("/")
    colon = ref_name.rfind(":")
    return ref_name[colon + 1:] if colon > slash else ref_name


def referrer_subject(entry: Descriptor, graph: RefGraph, present: set[Digest]) -> Digest | None:
    """The subject a tagged entry refers to, when it is a referrer of something in the layout."""
    if entry.digest in graph:
        for s, kinds in graph.children(entry.digest, include_subject=True):
            if "subject" in kinds and s in present:
                return Digest(s)
    return tag_subject(entry.ref_name, present)


def gather(rule: Rule, layout: Layout, state: LayoutState, jobs: int = DEFAULT_JOBS) -> Facts:
    """Read what the rule needs: blob mtimes of tagged (and, for untagged cleanup, untagged)
    manifests, and the times of ranked tags (config blobs only when the chain gets there)."""
    index, graph = state.index, state.graph
    present = graph.reachable(index.root_digests())
    facts = Facts()
    ranked = [(i, e) for i, e in enumerate(index.entries)
              if e.ref_name is not None and referrer_subject(e, graph, present) is None]
    want: set[Digest] = set()
    if rule.removes_tags or rule.time_source in ("auto", SOURCE_MTIME):
        want |= {e.digest for _, e in ranked}
    if rule.untagged == "delete":
        want |= {e.digest for e in index.entries if not e.has_ref_name}
    if not rule.uses_time and not rule.removes_tags:
        want -= {e.digest for _, e in ranked}
    seq = sorted(want)

    def mtime(d: Digest) -> float | None:
        try:
            st = layout.stat_blob(d)
        except OSError:
            return None
        return st.mtime if st is not None else None

    facts.mtimes = dict(zip(seq, pmap(mtime, seq, jobs), strict=True))
    if rule.uses_time and ranked:
        reader = _TimeReader(layout, graph, facts.mtimes)
        stamps = pmap(lambda ie: reader.stamp(ie[1], rule.time_source), ranked, jobs)
        facts.stamps = {i: s for (i, _), s in zip(ranked, stamps, strict=True)}
    return facts


def ambiguity(times: Mapping[Digest, float | None], window: float, source: str) -> str | None:
    """Why the times of a repository's tagged manifests cannot be trusted for ordering, or None."""
    n = len(times)
    if n == 0:
        return None
    missing = sum(1 for t in times.values() if t is None)
    if missing * 2 > n:
        what = "timestamp" if source == "auto" else f"{source} timestamp"
        return f"{missing} of {n} tagged manifests have no {what}"
    known = sorted(t for t in times.values() if t is not None)
    best, lo, at = 0, 0, 0.0
    for hi, t in enumerate(known):
        while t - known[lo] > window:
            lo += 1
        if hi - lo + 1 > best:
            best, at = hi - lo + 1, known[lo]
    if n >= 2 and best >= 2 and best * 2 > n:
        same = "the same timestamp" if window == 0 else f"timestamps within {format_duration(window)} of each other"
        return f"{best} of {n} tagged manifests have {same} ({format_time(at)})"
    return None


# --- the decision --------------------------------------------------------------------------------
@dataclass
class _Tag:
    pos: int
    entry: Descriptor
    name: str  # the full ref.name
    short: str  # what patterns see
    subject: Digest | None
    stamp: Stamp | None = None
    action: str = "keep"
    by: str = "no-delete-match"
    reason: str = ""
    protected: bool = False  # matched a keep criterion (never removed, not even by a cascade)


def decide(rule: Rule, repository: str, index: Index, graph: RefGraph, facts: Facts, now: float,
           grace: float) -> EntrySelection:
    """Per-tag decisions of ``rule`` for one repository, acted on per manifest. Pure."""
    sel = EntrySelection()
    present = graph.reachable(index.root_digests())
    tags = [_Tag(i, e, e.ref_name or "", tag_part(e.ref_name or ""), referrer_subject(e, graph, present))
            for i, e in enumerate(index.entries) if e.ref_name is not None]
    ranked = [t for t in tags if t.subject is None]
    attached = [t for t in tags if t.subject is not None]
    sel.notes.append(f"policy rule {rule.name!r} applies to {repository!r}")

    refused: str | None = None
    if rule.uses_time and ranked:
        for t in ranked:
            t.stamp = facts.stamps.get(t.pos, Stamp(None, None, "not read"))
        by_digest: dict[Digest, float | None] = {}
        for t in ranked:
            assert t.stamp is not None
            by_digest.setdefault(t.entry.digest, t.stamp.time)
        refused = ambiguity(by_digest, rule.same_time_window, rule.time_source)
    if refused is not None and rule.ambiguous_times == "refuse":
        msg = (f"rule {rule.name!r} refuses to act on {repository!r}: {refused}; times are ambiguous, "
               "so no tag or untagged entry is removed here (set ambiguous_times = \"proceed\" or choose "
               "time_source to override)")
        sel.notes.append(msg)
        for t in tags:
            _set(t, "keep", "refused", f"times ambiguous: {refused}")
        sel.decisions.extend(_decision(rule, repository, t) for t in tags)
        return sel
    if refused is not None:
        sel.notes.append(f"rule {rule.name!r}: {refused}; proceeding (ambiguous_times = \"proceed\")")

    _classify(rule, ranked, now)
    for t in attached:  # referrers are not ranked, but an explicit keep still wins
        if rule.keep_latest and t.short == "latest":
            _set(t, "keep", "keep_latest", "\"latest\" is always kept (keep_latest)", protected=True)
        elif (pat := rule.keep_pattern(t.short)) is not None:
            _set(t, "keep", "keep_tags", f"keep_tags \"{pat}\" matches", protected=True)
    _protect_young(rule, ranked, facts, now, grace)
    _per_manifest(index, graph, tags)

    drop: dict[int, str] = {t.pos: f"policy {rule.name}: {t.reason}" for t in ranked if t.action == "remove"}
    targets = {index.entries[p].digest for p in drop}
    protected = {t.pos for t in ranked} | {t.pos for t in attached if t.protected}
    cascade(index, graph, drop, targets, keep_referrers=rule.referrers == "keep", protected=protected,
            verb="removed")

    if rule.untagged == "delete":
        _drop_untagged(rule, index, graph, facts, now, grace, drop, targets, protected, sel)

    for t in attached:
        if t.protected:
            continue
        if t.pos in drop:
            _set(t, "remove", "referrer", drop[t.pos].removeprefix(f"policy {rule.name}: "))
        elif rule.referrers == "keep":
            _set(t, "keep", "referrer", f"referrer of {t.subject.short if t.subject else '?'}; the rule keeps "
                 "referrers")
        else:
            _set(t, "keep", "referrer", f"referrer of {t.subject.short if t.subject else '?'}, which stays")

    by_pos = {t.pos: t for t in tags}
    for pos in sorted(drop):
        e = index.entries[pos]
        hit = by_pos.get(pos)
        if hit is not None and hit.action != "remove":  # a cascade reached a tag: record it
            _set(hit, "remove", "cascade", drop[pos].removeprefix(f"policy {rule.name}: "))
        sel.remove.append(EntryRemoval(pos, e.digest, e.ref_name, drop[pos]))
    sel.decisions.extend(_decision(rule, repository, t) for t in tags)
    return sel


def _drop_untagged(rule: Rule, index: Index, graph: RefGraph, facts: Facts, now: float, grace: float,
                   drop: dict[int, str], targets: set[Digest], protected: set[int], sel: EntrySelection) -> None:
    """``untagged = "delete"``: untagged entries no kept tag reaches, past their age, and (the one
    cascade) what they take along."""
    age = rule.untagged_older_than if rule.untagged_older_than is not None else grace
    for r in untagged_removals(index, graph, set(drop)):
        if r.position in drop:
            continue
        mt = facts.mtimes.get(r.digest)
        if mt is None:
            sel.notes.append(f"untagged entry {r.digest.short} kept: its age is unknown (stat failed)")
        elif now - mt < age:
            sel.notes.append(f"untagged entry {r.digest.short} kept: younger than {format_duration(age)}")
        else:
            drop[r.position] = f"policy {rule.name}: untagged, no kept tag reaches it, older than " \
                               f"{format_duration(age)}"
    # What the untagged removals take along: their referrers (the one cascade, as for tags).
    new = {p for p in drop if p not in protected}
    targets |= {index.entries[p].digest for p in new}
    cascade(index, graph, drop, targets, keep_referrers=rule.referrers == "keep", protected=protected,
            verb="removed")


def _set(t: _Tag, action: str, by: str, reason: str, protected: bool = False) -> None:
    t.action, t.by, t.reason = action, by, reason
    t.protected = t.protected or protected


def _when(t: _Tag) -> str:
    """``2024-05-01T12:00:00Z from manifest-annotation``."""
    if t.stamp is None or t.stamp.time is None:
        return "no time"
    return f"{format_time(t.stamp.time)} from {t.stamp.source}"


def manifest_ranks(ranked: list[_Tag]) -> dict[Digest, int]:
    """keep_last order: tagged manifests newest first (1 = newest); the tags of one manifest count once.

    A manifest's time is the newest of its tags' times; equal times are ordered by the latest
    index.json position among its tags (later entries were written later), then by digest."""
    best: dict[Digest, tuple[float, int]] = {}
    for t in ranked:
        if t.stamp is None or t.stamp.time is None:
            continue
        d = t.entry.digest
        cur = best.get(d)
        key = (t.stamp.time, t.pos)
        best[d] = key if cur is None else (max(cur[0], key[0]), max(cur[1], key[1]))
    order = sorted(best, key=lambda d: (-best[d][0], -best[d][1], d))
    return {d: n for n, d in enumerate(order, 1)}


def _classify(rule: Rule, ranked: list[_Tag], now: float) -> None:
    rank = manifest_ranks(ranked) if rule.keep_last is not None else {}
    for t in ranked:
        time_ = t.stamp.time if t.stamp is not None else None
        keeps: list[tuple[str, str]] = []
        if rule.keep_latest and t.short == "latest":
            keeps.append(("keep_latest", "\"latest\" is always kept (keep_latest)"))
        pat = rule.keep_pattern(t.short)
        if pat is not None:
            keeps.append(("keep_tags", f"keep_tags \"{pat}\" matches"))
        n = rank.get(t.entry.digest)
        if rule.keep_last is not None and n is not None and n <= rule.keep_last:
            keeps.append(("keep_last", f"keep_last {rule.keep_last}: manifest #{n} newest ({_when(t)})"))
        if rule.keep_within is not None and time_ is not None and now - time_ < rule.keep_within:
            keeps.append(("keep_within", f"keep_within {format_duration(rule.keep_within)}: "
                                         f"{format_duration(now - time_)} old, {_when(t)}"))
        if keeps:
            _set(t, "keep", keeps[0][0], "; ".join(k[1] for k in keeps), protected=True)
            continue
        if not rule.removes_tags:
            _set(t, "keep", "no-delete-rule", "the rule has no delete criterion")
            continue
        if rule.uses_time and time_ is None:
            why = t.stamp.detail if t.stamp is not None and t.stamp.detail else "no timestamp"
            _set(t, "keep", "no-time", f"no timestamp ({why}): kept", protected=True)
            continue
        met: list[str] = []
        if rule.delete_tags is not None:
            dpat = rule.delete_pattern(t.short)
            if dpat is None:
                _set(t, "keep", "no-delete-match", "matches no delete_tags pattern")
                continue
            met.append(f"delete_tags \"{dpat}\" matches")
        if rule.delete_older_than is not None:
            assert time_ is not None
            age = now - time_
            if age < rule.delete_older_than:
                _set(t, "keep", "no-delete-match", f"not older than {format_duration(rule.delete_older_than)} "
                     f"({format_duration(age)} old, {_when(t)})")
                continue
            met.append(f"older than {format_duration(rule.delete_older_than)} ({format_duration(age)} old, "
                       f"{_when(t)})")
        _set(t, "remove", "delete_tags" if rule.delete_tags is not None and rule.delete_older_than is None
             else ("delete_older_than" if rule.delete_tags is None else "delete_tags+delete_older_than"),
             " and ".join(met))


def _protect_young(rule: Rule, ranked: list[_Tag], facts: Facts, now: float, grace: float) -> None:
    for t in ranked:
        if t.action != "remove":
            continue
        if t.entry.digest not in facts.mtimes or facts.mtimes[t.entry.digest] is None:
            _set(t, "keep", "grace", "would be removed, but the manifest's age is unknown (stat failed): kept",
                 protected=True)
            continue
        mt = facts.mtimes[t.entry.digest]
        assert mt is not None
        if now - mt < grace:
            _set(t, "keep", "grace", f"would be removed, but the manifest blob is younger than the grace period "
                 f"({format_duration(now - mt)} < {format_duration(grace)})", protected=True)


def _per_manifest(index: Index, graph: RefGraph, tags: list[_Tag]) -> None:
    """A manifest kept (or reached) by any remaining tag keeps all its tags; to a fixpoint."""
    while True:
        kept_roots = [t for t in tags if t.action != "remove"]
        reach_from: dict[Digest, str] = {}
        for t in kept_roots:
            if t.entry.digest in reach_from:
                reach_from.setdefault(t.entry.digest, t.name)
                continue
            for d in graph.reachable([t.entry.digest]):
                reach_from.setdefault(d, t.name)
        changed = False
        for t in tags:
            if t.action == "remove" and t.entry.digest in reach_from:
                other = reach_from[t.entry.digest]
                same = any(k.entry.digest == t.entry.digest and k.name == other for k in kept_roots)
                why = (f"same manifest as kept tag {other!r}" if same
                       else f"reachable from kept tag {other!r} (e.g. a platform manifest of a kept index)")
                _set(t, "keep", "same-manifest", f"{why}; was: {t.reason}", protected=True)
                changed = True
        if not changed:
            return


def _decision(rule: Rule, repository: str, t: _Tag) -> dict[str, Any]:
    return {
        "repository": repository, "rule": rule.name, "tag": t.name, "digest": str(t.entry.digest),
        "position": t.pos, "action": t.action, "by": t.by, "reason": t.reason,
        "time": format_time(t.stamp.time) if t.stamp is not None else None,
        "time_source": t.stamp.source if t.stamp is not None else None,
        "referrer_of": str(t.subject) if t.subject is not None else None,
    }


