"""Trash: blobs moved aside instead of removed, so a delete can be undone and a raced sweep repaired.

Layout of one trash run (``<layout>/.ocigc/trash/<run>/``)::

    run.json                 written once, before the first move: kind, created, host, command
    entries.json             delete only: the index.json entries the run removes (written before
                             index.json is rewritten), with their positions
    blobs/<alg>/<hex>        the moved blobs (manifests and layers alike)

A later sweep, under the exclusive lock, first *resurrects* every trashed blob that a manifest
references again (a push that found the blob present just before the sweep moved it, and
referenced it anyway) and reports which tag raced the sweep; then it purges runs older than the
retention. ``restore`` undoes a run: blobs go back first, then the index.json entries (never a
dangling reference in between).

Moving is a rename inside the layout (on s3fs a server-side copy and a delete); where the mount
cannot rename (mountpoint-s3) the blob is copied and then removed.

This module never prints; the CLI renders what it returns.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import ALGORITHMS, Digest
from ocigc.errors import LayoutError, ManifestError, OcigcError, UsageError
from ocigc.jsonload import MAX_SMALL_JSON_BYTES, load_json
from ocigc.layout.closure import closure_problems
from ocigc.layout.graph import RefGraph
from ocigc.layout.indexio import read_index_retrying, update_index
from ocigc.layout.journal import run_id, write_record
from ocigc.layout.layout import CONTROL_DIR, MAX_INDEX_BYTES, MAX_MANIFEST_BYTES, Layout
from ocigc.oci.descriptor import Descriptor
from ocigc.oci.index import Index
from ocigc.parallel import DEFAULT_JOBS, pmap

TRASH_DIR = f"{CONTROL_DIR}/trash"
RUN_FILE = "run.json"
ENTRIES_FILE = "entries.json"
DEFAULT_RETENTION = 24 * 3600.0
BATCH = 64


def _noop() -> None:
    pass


def _run_dir(run: str) -> str:
    if not run or "/" in run or run in (".", "..") or run.startswith("."):
        raise UsageError(f"{run!r}: not a trash run name (see 'ocigc trash list')")
    return f"{TRASH_DIR}/{run}"


# --------------------------------------------------------------------------------------------
# Writing: a run that moves blobs into the trash
# --------------------------------------------------------------------------------------------
class TrashRun:
    """One run's trash. ``dispose`` has the signature of ``ocigc.gc.apply.Disposer``."""

    def __init__(self, layout: Layout, kind: str, command: str = "", run: str | None = None) -> None:
        self.layout = layout
        self.kind = kind
        self.command = command
        self.run = run or run_id()
        self.dir = _run_dir(self.run)
        self.moved: list[Digest] = []
        self._ready: set[str] = set()
        self._mu = threading.Lock()
        self._started = False

    def _start(self) -> None:
        with self._mu:
            if self._started:
                return
            storage = self.layout.storage
            storage.makedirs(self.dir)
            meta = {"run": self.run, "kind": self.kind, "command": self.command, "created_unix": time.time(),
                    "host": _hostname(), "pid": os.getpid()}
            storage.write_bytes(f"{self.dir}/{RUN_FILE}", json.dumps(meta, indent=1).encode())
            self._started = True

    def _ensure_dir(self, rel_dir: str) -> None:
        with self._mu:
            if rel_dir in self._ready:
                return
        self.layout.storage.makedirs(rel_dir)
        with self._mu:
            self._ready.add(rel_dir)

    def record_entries(self, entries: Iterable[tuple[int, dict[str, Any]]], index_fingerprint: str) -> None:
        """Remember index.json entries (position, raw JSON) this run is about to remove."""
        items = [{"position": pos, "entry": raw} for pos, raw in entries]
        if not items:
            return
        self._start()
        body = {"index_before": index_fingerprint, "entries": items}
        self.layout.storage.write_bytes(f"{self.dir}/{ENTRIES_FILE}", json.dumps(body, indent=1).encode())

    def dispose(self, layout: Layout, rel: str) -> bool:
        """Move ``blobs/<alg>/<hex>`` into the trash; anything else is removed. False when already gone."""
        digest = _blob_digest(rel)
        if digest is None:
            return layout.storage.remove(rel)
        self._start()
        dst_dir = f"{self.dir}/blobs/{digest.algorithm}"
        self._ensure_dir(dst_dir)
        moved = _move(layout, rel, f"{dst_dir}/{digest.encoded}")
        if moved:
            with self._mu:
                self.moved.append(digest)
        return moved


def _blob_digest(rel: str) -> Digest | None:
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] != "blobs":
        return None
    return Digest.from_blob_name(parts[1], parts[2])


def _move(layout: Layout, src: str, dst: str) -> bool:
    """Rename ``src`` to ``dst``; copy and remove where the mount cannot rename. False when ``src`` is gone."""
    storage = layout.storage
    try:
        storage.rename(src, dst)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENOSYS, errno.EXDEV, errno.EACCES):
            raise
    try:
        src_f = storage.open_read(src)
    except FileNotFoundError:
        return False
    with src_f, storage.open_write(dst) as out:
        while chunk := src_f.read(1024 * 1024):
            out.write(chunk)
    return storage.remove(src)


def entries_to_record(index: Index, identities: Collection[tuple[str, str | None]]) -> list[tuple[int, dict[str, Any]]]:
    """The raw entries of ``index`` matching (digest, ref name) identities, with their positions."""
    raw = index.doc.get("manifests") or []
    return [(i, raw[i]) for i, e in enumerate(index.entries) if (e.digest, e.ref_name) in identities]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
@dataclass
class TrashInfo:
    """One trash run as found on storage."""

    run: str
    kind: str = "?"
    command: str = ""
    host: str = "?"
    created: float | None = None
    blobs: list[str] = field(default_factory=list)  # paths relative to the layout
    entries: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None

    @property
    def pairs(self) -> list[tuple[str, Digest]]:
        """(path in trash, digest) of every trashed blob."""
        out = []
        for rel in self.blobs:
            parts = rel.split("/")
            d = Digest.from_blob_name(parts[-2], parts[-1])
            if d is not None:
                out.append((rel, d))
        return out

    @property
    def digests(self) -> list[Digest]:
        return [d for _, d in self.pairs]

    def age(self, now: float | None = None) -> float | None:
        if self.created is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - self.created)

    def to_json(self, layout: Layout | None = None, sizes: dict[str, int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run": self.run, "kind": self.kind, "command": self.command, "host": self.host,
            "created_unix": self.created, "age_s": None if self.created is None else round(self.age() or 0, 1),
            "blobs": len(self.blobs), "digests": [str(d) for d in self.digests],
            "entries": [e.get("entry", {}).get("annotations", {}).get("org.opencontainers.image.ref.name")
                        or e.get("entry", {}).get("digest") for e in self.entries],
        }
        if sizes is not None:
            out["bytes"] = sum(sizes.get(b, 0) for b in self.blobs)
        if self.problem:
            out["problem"] = self.problem
        return out


def has_trash(layout: Layout) -> bool:
    try:
        return any(e.is_dir for e in layout.storage.list_dir(TRASH_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return False


def list_runs(layout: Layout) -> list[TrashInfo]:
    """Every trash run, oldest first (run names sort by their UTC stamp)."""
    try:
        entries = layout.storage.list_dir(TRASH_DIR)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [read_run(layout, e.name) for e in sorted(entries, key=lambda e: e.name) if e.is_dir]


def read_run(layout: Layout, run: str) -> TrashInfo:
    d = _run_dir(run)
    storage = layout.storage
    try:
        top = storage.list_dir(d)
    except FileNotFoundError:
        raise LayoutError(f"{layout.where(d)}: no such trash run (see 'ocigc trash list')") from None
    info = TrashInfo(run)
    names = {e.name for e in top}
    if RUN_FILE in names:
        try:
            meta = load_json(storage.read_bytes(f"{d}/{RUN_FILE}", limit=MAX_SMALL_JSON_BYTES))
            info.kind = str(meta.get("kind", "?"))
            info.command = str(meta.get("command", ""))
            info.host = str(meta.get("host", "?"))
            created = meta.get("created_unix")
            info.created = float(created) if isinstance(created, int | float) else None
        except (OSError, ValueError, AttributeError) as e:
            info.problem = f"{RUN_FILE}: unreadable ({e})"
    if info.created is None:
        info.created = _stamp_time(run)
    if ENTRIES_FILE in names:
        try:
            body = load_json(storage.read_bytes(f"{d}/{ENTRIES_FILE}", limit=MAX_INDEX_BYTES), limit=MAX_INDEX_BYTES)
            info.entries = [e for e in body.get("entries", []) if isinstance(e, dict) and isinstance(e.get("entry"),
                                                                                                   dict)]
        except (OSError, ValueError, AttributeError) as e:
            info.problem = f"{ENTRIES_FILE}: unreadable ({e})"
    if "blobs" in names:
        for alg in storage.list_dir(f"{d}/blobs"):
            if not alg.is_dir or alg.name not in ALGORITHMS:
                continue
            for b in storage.list_dir(f"{d}/blobs/{alg.name}"):
                if not b.is_dir and Digest.from_blob_name(alg.name, b.name) is not None:
                    info.blobs.append(f"{d}/blobs/{alg.name}/{b.name}")
    info.blobs.sort()
    return info


def _stamp_time(run: str) -> float | None:
    """The creation time encoded in a run id (``20260101T120000.123456Z-...``)."""
    from datetime import UTC, datetime

    try:
        return datetime.strptime(run.split("-", 1)[0], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def trashed_digests(layout: Layout, runs: list[TrashInfo] | None = None) -> dict[Digest, list[tuple[str, str]]]:
    """Digest -> [(run, path in trash)], newest run first."""
    out: dict[Digest, list[tuple[str, str]]] = {}
    for info in reversed(runs if runs is not None else list_runs(layout)):
        for rel, d in info.pairs:
            out.setdefault(d, []).append((info.run, rel))
    return out


class TrashOverlay(Layout):
    """A read-only view for planning: a blob absent from ``blobs/`` is read from its newest trash copy,
    so that a sweep's dry run sees what its real run sees once it has restored what is referenced
    again. Never written through."""

    def __init__(self, layout: Layout, trashed: dict[Digest, list[tuple[str, str]]]) -> None:
        super().__init__(layout.storage, layout.name)
        self.trashed = trashed

    def read_blob(self, digest: Digest, limit: int | None = MAX_MANIFEST_BYTES) -> bytes:
        try:
            return super().read_blob(digest, limit)
        except FileNotFoundError:
            copies = self.trashed.get(digest)
            if not copies:
                raise
        rel = copies[0][1]
        data = self.storage.read_bytes(rel, limit=limit, nofollow=True)
        if limit is not None and len(data) > limit:
            raise ManifestError(f"{self.where(rel)}: larger than {limit} bytes")
        return data


# --------------------------------------------------------------------------------------------
# Resurrection (sweep) and restore (undo)
# --------------------------------------------------------------------------------------------
@dataclass
class Resurrection:
    digest: Digest
    run: str
    roots: list[str]  # tags (or digests of untagged entries) that reference it now

    def message(self) -> str:
        who = ", ".join(self.roots[:5]) or "an index.json entry"
        return (f"push raced sweep: {who} references {self.digest}, which trash run {self.run} had moved away; "
                "restored")

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "run": self.run, "roots": self.roots, "message": self.message()}


def root_names(graph: RefGraph, index: Index, digest: Digest) -> list[str]:
    names: list[str] = []
    for e in index.entries:
        if digest == e.digest or digest in graph.reachable([e.digest]):
            names.append(e.ref_name or str(e.digest))
    return sorted(set(names))


def resurrect(layout: Layout, *, jobs: int = DEFAULT_JOBS, guard: Callable[[], None] = _noop,
              run: str | None = None, rounds: int = 32) -> list[Resurrection]:
    """Move back every trashed blob that the current index.json reaches and ``blobs/`` lacks.

    Repeats until nothing more is found (a restored manifest reveals its children).
    """
    runs = list_runs(layout)
    trashed = trashed_digests(layout, runs)
    out: list[Resurrection] = []
    if not trashed:
        return out
    known: RefGraph | None = None
    for _ in range(rounds):
        index = read_index_retrying(layout)
        graph = RefGraph.build(layout, index, jobs, known=known)
        known = graph
        reachable = graph.reachable(index.root_digests())
        wanted = [d for d in sorted(reachable) if d in trashed]
        missing = [d for d, st in zip(wanted, pmap(layout.stat_blob, wanted, jobs), strict=True) if st is None]
        if not missing:
            break
        guard()
        for d in missing:
            for trash_run, rel in trashed[d]:
                if _move(layout, rel, d.blob_path()):
                    out.append(Resurrection(d, trash_run, root_names(graph, index, d)))
                    break
        # A manifest that was missing is re-read in the next round (not from the cache).
        known = _forget(graph, missing)
    if out:
        write_record(layout, "trash-resurrect", {"restored": [r.to_json() for r in out], "run": run})
    return out


def _forget(graph: RefGraph, digests: Iterable[Digest]) -> RefGraph:
    for d in digests:
        graph.results.pop(d, None)
    return graph


@dataclass
class RestoreResult:
    run: str
    blobs_restored: list[Digest] = field(default_factory=list)
    blobs_already_present: list[Digest] = field(default_factory=list)
    entries_restored: list[str] = field(default_factory=list)
    entries_skipped: list[str] = field(default_factory=list)
    races: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "blobs_restored": [str(d) for d in self.blobs_restored],
                "blobs_already_present": [str(d) for d in self.blobs_already_present],
                "entries_restored": self.entries_restored, "entries_skipped": self.entries_skipped,
                "races": self.races}


def restore(layout: Layout, run: str, *, hold: Callable[[], AbstractContextManager[object]] | None = None,
            guard: Callable[[], None] = _noop, settle: float | None = None, jobs: int = DEFAULT_JOBS,
            journal_run: str | None = None) -> RestoreResult:
    """Undo a trash run: blobs back into ``blobs/``, then the index.json entries it removed."""
    info = read_run(layout, run)
    result = RestoreResult(run)
    guard()
    present = dict(zip(info.digests, pmap(layout.stat_blob, info.digests, jobs), strict=True))
    for rel, d in info.pairs:
        if present.get(d) is not None:
            layout.storage.remove(rel)  # pushed again since: the trash copy is redundant
            result.blobs_already_present.append(d)
        elif _move(layout, rel, d.blob_path()):
            result.blobs_restored.append(d)
    if info.entries:
        _restore_entries(layout, info, result, hold, settle, jobs, journal_run)
    _remove_run(layout, info)
    write_record(layout, "trash-restore", {**result.to_json(), "journal_run": journal_run})
    return result


def _restore_entries(layout: Layout, info: TrashInfo, result: RestoreResult,
                     hold: Callable[[], AbstractContextManager[object]] | None, settle: float | None,
                     jobs: int, journal_run: str | None) -> None:
    # Only entries whose whole closure is present go back (never a dangling reference).
    wanted: list[tuple[int, dict[str, Any]]] = []
    for item in sorted(info.entries, key=lambda e: int(e.get("position", 0))):
        raw = item["entry"]
        try:
            desc = Descriptor.from_json(raw, "entry")
        except (ValueError, OcigcError) as e:
            result.entries_skipped.append(f"{raw.get('digest')}: invalid entry ({e})")
            continue
        missing = _missing_closure(layout, desc, jobs)
        label = desc.ref_name or str(desc.digest)
        if missing:
            result.entries_skipped.append(f"{label}: {missing[0]} (not in this trash run); not restored")
            continue
        wanted.append((int(item.get("position", 0)), raw))
    if not wanted:
        return
    restored: list[str] = []
    skipped: list[str] = []

    def mutate(current: Index) -> Index | None:
        restored.clear()
        skipped.clear()
        doc = dict(current.doc)
        manifests = list(doc.get("manifests") or [])
        for pos, raw in wanted:
            desc = Descriptor.from_json(raw, "entry")
            label = desc.ref_name or str(desc.digest)
            if raw in manifests:
                skipped.append(f"{label}: already in index.json")
                continue
            if desc.ref_name is not None and any(e.ref_name == desc.ref_name and e.digest != desc.digest
                                                 for e in current.entries):
                skipped.append(f"{label}: the tag now names another manifest; not restored")
                continue
            manifests.insert(min(pos, len(manifests)), raw)
            restored.append(label)
        if not restored:
            return None
        doc["manifests"] = manifests
        return Index.parse(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())

    update = update_index(layout, mutate, hold=hold, settle=settle, run=journal_run)
    result.entries_restored.extend(restored)
    result.entries_skipped.extend(skipped)
    result.races.extend(update.races)


def _missing_closure(layout: Layout, desc: Descriptor, jobs: int) -> list[str]:
    return closure_problems(layout, [desc], jobs)


def _remove_run(layout: Layout, info: TrashInfo) -> None:
    storage = layout.storage
    d = _run_dir(info.run)
    for rel in info.blobs:
        storage.remove(rel)
    storage.remove(f"{d}/{ENTRIES_FILE}")
    storage.remove(f"{d}/{RUN_FILE}")
    with contextlib.suppress(FileNotFoundError):
        for alg in storage.list_dir(f"{d}/blobs"):
            with contextlib.suppress(OSError):
                storage.remove_dir(f"{d}/blobs/{alg.name}")
    with contextlib.suppress(OSError):
        storage.remove_dir(f"{d}/blobs")
    with contextlib.suppress(OSError):
        storage.remove_dir(d)


# --------------------------------------------------------------------------------------------
# Purge
# --------------------------------------------------------------------------------------------
@dataclass
class PurgeResult:
    resurrected: list[Resurrection] = field(default_factory=list)
    purged_runs: list[str] = field(default_factory=list)
    purged_blobs: int = 0
    kept_runs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"resurrected": [r.to_json() for r in self.resurrected], "purged_runs": self.purged_runs,
                "purged_blobs": self.purged_blobs, "kept_runs": self.kept_runs, "failed": self.failed}


def purge(layout: Layout, *, older_than: float | None = DEFAULT_RETENTION, guard: Callable[[], None] = _noop,
          jobs: int = DEFAULT_JOBS, exclude: Iterable[str] = (), now: float | None = None,
          run: str | None = None, only: Collection[str] | None = None) -> PurgeResult:
    """Resurrect what is referenced again, then empty trash runs older than ``older_than`` (None: all).

    ``only``: purge exactly these runs (a sweep's plan named them; ``older_than`` is then not looked
    at again). Call it under the exclusive lock: ``guard`` (the lock's ``ensure_held``) runs before
    every batch.
    """
    result = PurgeResult()
    guard()
    result.resurrected = resurrect(layout, jobs=jobs, guard=guard, run=run)
    now = now if now is not None else time.time()
    skip = set(exclude)
    for info in list_runs(layout):
        age = info.age(now)
        if only is not None:
            if info.run not in only:
                result.kept_runs.append(info.run)
                continue
        elif info.run in skip or (older_than is not None and (age is None or age < older_than)):
            result.kept_runs.append(info.run)
            continue
        for start in range(0, len(info.blobs), BATCH):
            guard()
            chunk = info.blobs[start:start + BATCH]
            for rel, err in zip(chunk, pmap(lambda r: _remove_quietly(layout, r), chunk, jobs), strict=True):
                if err:
                    result.failed.append(f"{layout.where(rel)}: {err}")
                else:
                    result.purged_blobs += 1
        guard()
        _remove_run(layout, info)
        result.purged_runs.append(info.run)
    if result.purged_runs:
        write_record(layout, "trash-purge", {**result.to_json(), "run": run})
    return result


def _remove_quietly(layout: Layout, rel: str) -> str | None:
    try:
        layout.storage.remove(rel)
    except OSError as e:
        return e.strerror or str(e)
    return None


__all__ = [
    "DEFAULT_RETENTION", "TRASH_DIR", "PurgeResult", "RestoreResult", "Resurrection", "TrashInfo", "TrashOverlay",
    "TrashRun",
    "entries_to_record", "has_trash", "list_runs", "purge", "read_run", "restore", "resurrect", "root_names",
    "trashed_digests",
]


def _hostname() -> str:
    """``socket.gethostname()`` (socket is imported when a record is written, not by every run)."""
    import socket

    return socket.gethostname()
