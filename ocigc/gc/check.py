"""Integrity check of a layout: what is broken, what is suspicious, and why.

Severities: ``dangling`` (a referenced blob is missing: exit 4), ``error`` (exit 1), ``warning``
(reported; fails only with ``strict``), ``info`` (context such as reclaimable garbage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest, digest_stream
from ocigc.errors import EXIT_ERROR, EXIT_INTEGRITY, EXIT_OK, OcigcError, describe_oserror, printable
from ocigc.layout.layout import Layout
from ocigc.layout.state import LayoutState, stat_blobs
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import ANNOTATION_REF_NAME, MANIFEST_TYPES, is_valid_media_type, looks_like_json_type
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.progress import NullProgress, Progress
from ocigc.storage.base import FileStat

DANGLING, ERROR, WARNING, INFO = "dangling", "error", "warning", "info"


@dataclass(frozen=True, slots=True)
class Problem:
    severity: str
    code: str
    message: str
    digest: str | None = None
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in {"severity": self.severity, "code": self.code, "message": self.message,
                                  "digest": self.digest, "path": self.path}.items() if v is not None}


@dataclass
class CheckReport:
    name: str
    location: str
    problems: list[Problem] = field(default_factory=list)
    blobs: int = 0
    #: Blobs present that index.json reaches (a missing one is counted in ``missing``, not here).
    reachable: int = 0
    #: Reachable blobs that are missing (dangling references; foreign layers are not counted).
    missing: int = 0
    manifests: int = 0
    verified: int = 0

    def add(self, severity: str, code: str, message: str, digest: str | None = None, path: str | None = None) -> None:
        self.problems.append(Problem(severity, code, message, digest, path))

    def exit_code(self, strict: bool = False) -> int:
        sev = {p.severity for p in self.problems}
        if DANGLING in sev:
            return EXIT_INTEGRITY
        if ERROR in sev or (strict and WARNING in sev):
            return EXIT_ERROR
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {"layout": self.name, "location": self.location, "blobs": self.blobs,
                "reachable": self.reachable, "missing": self.missing, "manifests": self.manifests,
                "verified": self.verified,
                "problems": [p.to_json() for p in self.problems]}


def check_layout(layout: Layout, verify_digests: bool = False, jobs: int = DEFAULT_JOBS,
                 progress: Progress | None = None) -> CheckReport:
    """Check one layout. A layout that cannot be read at all (``oci-layout``, ``index.json``, ``blobs/``
    unusable, or any OSError on the way) is one ``layout`` error problem naming the path: the caller
    goes on with the next layout."""
    progress = progress or NullProgress()
    report = CheckReport(layout.label, layout.location)
    try:
        _check(report, layout, verify_digests, jobs, progress)
    except OcigcError as e:
        report.add(ERROR, "layout", str(e))
    except OSError as e:
        report.add(ERROR, "layout", describe_oserror(e, layout.where("")))
    return report


def _check(report: CheckReport, layout: Layout, verify_digests: bool, jobs: int, progress: Progress) -> None:
    layout.check_oci_layout()
    state = LayoutState.load(layout, jobs, progress)
    graph = state.graph
    listing = layout.list_blobs()
    present = listing.digests
    reachable = state.reachable()
    report.blobs = len(present)
    report.reachable = len(reachable & present)
    report.manifests = sum(1 for d in graph.read if graph.node(d)["present"] and graph.is_manifest(d))

    for d, err in sorted(graph.errors(reachable).items()):
        if graph.node(d)["present"] is False:
            continue  # reported below as missing
        report.add(ERROR, "unparsable", err, d)
    # A symlinked blobs/<alg>/ is never listed (reported below): what it holds is unknown, not missing.
    unlisted = {path.split("/")[1] for path in listing.symlinks if path.count("/") == 1}
    foreign = graph.foreign(reachable - present - listing.symlinked)
    for d in sorted(foreign):
        parents = ", ".join(p.short for p, _ in graph.parents(d)) or "index.json"
        report.add(INFO, "foreign-layer", f"{layout.where(d.blob_path())}: foreign layer (its descriptor has urls; "
                   f"fetched from there, not stored in blobs/), referenced by {parents}", d)
    for d in sorted(reachable - present - listing.symlinked - foreign):
        if d.algorithm in unlisted:
            continue
        node = graph.node(d)
        parents = ", ".join(p.short for p, _ in graph.parents(d)) or "index.json"
        what = "manifest" if node["media_types"] & MANIFEST_TYPES or node["root"] else "blob"
        report.add(DANGLING, f"missing-{what}", f"{layout.where(d.blob_path())}: referenced {what} is missing "
                   f"(referenced by {parents})", d)
    _check_subjects(report, layout, graph, present)
    _check_types(report, layout, state, reachable)
    symlinks = set(listing.symlinks)
    linked = {d for d in present if d.blob_path() in symlinks} if symlinks else set()  # never stat-ed or hashed through
    _check_sizes(report, layout, state, (reachable & present) - linked, jobs, progress, listing.stats)
    _check_listing(report, layout, listing, reachable, verify_digests)
    if verify_digests:
        _verify_digests(report, layout, present - linked, jobs, progress)
    report.missing = len({p.digest or p.path for p in report.problems if p.severity == DANGLING})
    garbage = present - reachable
    if garbage:
        report.add(INFO, "unreferenced", f"{len(garbage)} blob(s) not reachable from index.json "
                   "(`ocigc sweep` reclaims them)")


def _check_subjects(report: CheckReport, layout: Layout, graph: Any, present: set[Digest]) -> None:
    for d in sorted(set(graph.nodes()) - present):  # a subject in blobs/ is no finding
        for ref in graph.referrers(d):
            report.add(INFO, "external-subject", f"{layout.where(ref.blob_path())}: subject {d.short} is not "
                       "in this layout", ref)


def _check_types(report: CheckReport, layout: Layout, state: LayoutState, reachable: set[Digest]) -> None:
    graph = state.graph
    for i, entry in enumerate(state.index.entries):
        if entry.bad_ref_name:
            value = entry.annotations.get(ANNOTATION_REF_NAME)
            report.add(ERROR, "bad-ref-name", f"{layout.where('index.json')}: manifests[{i}] ({entry.digest.short}) "
                       f"has a ref.name that is not a string ({json.dumps(value)[:60]}): no command can address "
                       "it; it stays a root and is never dropped as untagged", entry.digest)
        mt = entry.media_type
        if mt and mt not in MANIFEST_TYPES and not looks_like_json_type(mt):
            report.add(WARNING, "unknown-media-type", f"{layout.where('index.json')}: entry {entry.digest.short} "
                       f"has media type {mt!r}, not a manifest or index", entry.digest)
        elif not mt:
            report.add(WARNING, "missing-media-type", f"{layout.where('index.json')}: entry "
                       f"{entry.digest.short} has no mediaType", entry.digest)
    valid: dict[str, bool] = {}  # per media type: a layout uses a few, on every blob
    for d in sorted(reachable):
        node = graph.node(d)
        bad = sorted(t for t in node["media_types"]
                     if t and not (valid[t] if t in valid else valid.setdefault(t, is_valid_media_type(t))))
        if bad:
            report.add(WARNING, "bad-media-type", f"{layout.where(d.blob_path())}: described with media type "
                       f"{printable(bad[0])!r}, not a valid media type (the blob is kept as a child)", d)
        if node.get("mismatch"):
            report.add(WARNING, "media-type-mismatch", f"{layout.where(d.blob_path())}: {node['mismatch']}", d)
        if node["kind"] == mf.KIND_UNKNOWN_JSON and node["present"]:
            report.add(INFO, "unknown-json", f"{layout.where(d.blob_path())}: unknown JSON media type "
                       f"{','.join(sorted(node['media_types'])) or '(none)'}; scanned for descriptors", d)


def _check_sizes(report: CheckReport, layout: Layout, state: LayoutState, digests: set[Digest], jobs: int,
                 progress: Progress, known: dict[Digest, FileStat] | None = None) -> None:
    """Every reachable blob against the sizes its descriptors declare: a blob of another size (one
    truncated by a writer killed half-way, which a tool reusing blobs by name would build on) is
    ``size-mismatch``, an error (exit 1): the bytes are there but not the ones declared, the same
    class as ``digest-mismatch``; exit 4 stays "a referenced blob is missing" (``docs/cli.md``).
    Sizes come from the listing where it carries them (``s3://``), else from one stat per blob."""
    stats = stat_blobs(layout, digests, jobs, progress, known)
    for d, st in sorted(stats.items()):
        if st is None:
            report.add(DANGLING, "missing-blob", f"{layout.where(d.blob_path())}: vanished during the check", d)
            continue
        sizes = {s for s in state.graph.node(d)["sizes"] if s >= 0}
        wrong = sorted(s for s in sizes if s != st.size)
        if wrong:
            report.add(ERROR, "size-mismatch", f"{layout.where(d.blob_path())}: descriptor size "
                       f"{', '.join(map(str, wrong))} but the blob has {st.size} bytes", d)


def _check_listing(report: CheckReport, layout: Layout, listing: Any, reachable: set[Digest],
                   verify: bool = False) -> None:
    for path in listing.symlinks:
        parts = path.split("/")
        linked = Digest.from_blob_name(parts[1], parts[2]) if len(parts) == 3 else None
        target = layout.link_target(linked) if linked is not None else None
        if linked is not None and target is not None and target.is_file():
            # A digest-named link to a regular file (a sibling layout's blob): read through, the
            # content verified against the name; never deleted.
            if verify:
                try:
                    with layout.open_blob(linked) as f:
                        got, _ = digest_stream(f, linked.algorithm)
                except (OSError, OcigcError) as e:
                    report.add(ERROR, "symlink", f"{layout.where(path)}: {e}", path=path)
                    continue
                if got != linked:
                    report.add(ERROR, "digest-mismatch", f"{layout.where(path)}: symlink target "
                               f"{printable(str(target))} holds {got}, not {linked}", linked)
                    continue
            report.add(INFO, "symlink-blob", f"{layout.where(path)}: symlink to {printable(str(target))}",
                       path=path)
            continue
        if linked is not None and target is not None and not target.exists():
            level = DANGLING if linked in reachable else WARNING
            report.add(level, "missing-blob" if level == DANGLING else "symlink-dangling",
                       f"{layout.where(path)}: symlink target {printable(str(target))} is missing", linked)
            continue
        report.add(ERROR, "symlink", f"{layout.where(path)}: symlink in blobs/ (ocigc never follows or deletes "
                   "through it)", path=path)
    for path in listing.foreign:
        report.add(WARNING, "foreign-file", f"{layout.where(path)}: not a valid digest name (reported, never "
                   "deleted)", path=path)
    for path in listing.unknown_algorithms:
        report.add(WARNING, "unknown-algorithm", f"{layout.where(path)}: unsupported digest algorithm directory",
                   path=path)
    for path in [*listing.temp, *layout.list_temp_leftovers()]:
        report.add(WARNING, "temp-leftover", f"{layout.where(path)}: leftover temporary file of a writer "
                   "(`ocigc sweep` removes it after the grace period)", path=path)


def _verify_digests(report: CheckReport, layout: Layout, present: set[Digest], jobs: int,
                    progress: Progress) -> None:
    seq = sorted(present)
    counter = progress.counter("verify", total=len(seq))

    def verify(d: Digest) -> str | None:
        try:
            with layout.open_blob(d) as f:
                actual, _ = digest_stream(f, d.algorithm)
        except OSError as e:
            return f"cannot read: {e.strerror or e}"
        except OcigcError as e:
            return f"cannot read: {e}"
        return None if actual == d else f"content hashes to {actual}"

    for d, err in zip(seq, pmap(verify, seq, jobs, on_done=counter.add), strict=True):
        if err:
            report.add(ERROR, "digest-mismatch", f"{layout.where(d.blob_path())}: {err}", d)
    counter.close()
    report.verified = len(seq)
