"""Executing a plan, in the one order that keeps a crash harmless.

1. ``index.json`` first (under the index protocol of ``ocigc.layout.indexio``), dropping exactly the
   entries the plan named, matched by (digest, ref name) on the fresh index;
2. re-read ``index.json`` and re-mark (reusing what was already read: blobs are immutable);
   a reachable manifest that is missing or unparsable stops here;
3. manifests top-down, then the other blobs, skipping anything the re-mark found referenced
   again; ``guard`` (the lock's ``ensure_held``) runs before every batch;
4. writers' leftover temp files;
5. verify: every blob the current ``index.json`` reaches exists. One this run removed means a
   writer that does not take the lock referenced it again meanwhile: a lost race (warning, journal
   ``race`` record, exit 3; with ``--trash`` the blob is in the trash run). One missing that the
   run did not remove is damage (exit 4). Given the
   listing the plan was made from (``listed``), only what the listing cannot vouch for is stat-ed:
   blobs this run removed or tried to, and blobs that appeared after the listing (a concurrent
   writer's). Everything else was listed and is not removed by anyone while the exclusive lock is
   held, so a second listing of ``blobs/`` (on a mounted bucket, a HEAD per blob) is not needed;
6. a journal record under ``.ocigc/journal/``.
A kill at any point leaves garbage at most, never a dangling reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import IntegrityError, LostRace, OcigcError
from ocigc.gc.plan import BlobRemoval, Plan, refuse_unsafe
from ocigc.layout.indexio import read_index_retrying, update_index
from ocigc.layout.journal import run_id, write_record
from ocigc.layout.layout import Layout
from ocigc.layout.state import LayoutState
from ocigc.oci.index import Index
from ocigc.parallel import DEFAULT_JOBS, Workers, pmap
from ocigc.progress import Counter, NullProgress, Progress
from ocigc.storage.base import RemovesMany

#: Removes one file of the layout; returns False when it was already gone. The trash swaps it.
Disposer = Callable[[Layout, str], bool]
BATCH = 64
#: With plain removal on a storage that has ``remove_many`` (an object store's DeleteObjects, 1,000
#: keys per request), blobs go in batches of this size, ``guard()`` before each.
MANY_BATCH = 1000


def remove_file(layout: Layout, rel: str) -> bool:
    return layout.storage.remove(rel)


def _noop() -> None:
    pass


class RunRaced(LostRace):
    """Verification found ``index.json`` referencing a blob this run removed (a plain writer raced it)."""

    def __init__(self, message: str, result: ApplyResult) -> None:
        super().__init__(message)
        self.result = result


class RunDamaged(IntegrityError):
    """Verification found a referenced blob missing that this run did not remove."""

    def __init__(self, message: str, result: ApplyResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ApplyResult:
    run: str
    removed_entries: int = 0
    removed: list[BlobRemoval] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    #: Bytes of the writers' leftovers removed (the plan counts them in ``bytes_reclaimed`` too).
    bytes_removed_files: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    index_before: str = ""
    index_after: str = ""
    races: list[str] = field(default_factory=list)
    #: Blobs this run removed that index.json referenced again by the verification (a plain writer).
    raced: list[Digest] = field(default_factory=list)
    journal: str | None = None
    seconds: float = 0.0

    #: Why the run stopped before its end (an interrupt, a lost lock, a storage error): the journal
    #: record then holds what was done until there.
    stopped: str | None = None

    @property
    def bytes_removed(self) -> int:
        """Blobs and writers' leftovers removed: what the plan's ``bytes_reclaimed`` counted."""
        return sum(b.size or 0 for b in self.removed) + self.bytes_removed_files

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run, "removed_entries": self.removed_entries,
            "removed": [b.to_json() for b in self.removed], "removed_files": self.removed_files,
            "skipped": self.skipped, "failed": self.failed, "bytes_removed": self.bytes_removed,
            "bytes_removed_files": self.bytes_removed_files, "stopped": self.stopped,
            "index_before": self.index_before, "index_after": self.index_after, "races": self.races,
            "raced": list(self.raced), "journal": self.journal, "seconds": round(self.seconds, 3),
        }


def apply_plan(layout: Layout, plan: Plan, state: LayoutState, *, jobs: int = DEFAULT_JOBS,
               guard: Callable[[], None] = _noop,
               hold: Callable[[], AbstractContextManager[object]] | None = None,
               dispose: Disposer = remove_file, progress: Progress | None = None, settle: float | None = None,
               run: str | None = None, listed: set[Digest] | None = None, trash_run: str | None = None,
               extra: dict[str, Any] | None = None) -> ApplyResult:
    if plan.executed:
        raise RuntimeError("a plan runs once")
    plan.executed = True
    started = time.monotonic()
    progress = progress or NullProgress()
    result = ApplyResult(run or run_id(), index_before=state.index.fingerprint)
    guard()
    try:
        return _apply(layout, plan, state, result, started, jobs=jobs, guard=guard, hold=hold, dispose=dispose,
                      progress=progress, settle=settle, listed=listed, trash_run=trash_run, extra=extra)
    except BaseException as e:
        if result.journal is None and (result.removed_entries or result.removed or result.removed_files
                                       or result.failed):
            # Stopped half-way (Ctrl-C, a lost lock, a storage error): what was done so far is recorded,
            # as a completed run would be; a record that cannot be written does not hide the cause.
            result.stopped = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            result.seconds = time.monotonic() - started
            with suppress(Exception):
                result.journal = write_record(layout, plan.command, {"plan": plan.to_json(),
                                                                     "result": result.to_json(), **(extra or {})},
                                              result.run)
        raise


def _apply(layout: Layout, plan: Plan, state: LayoutState, result: ApplyResult, started: float, *, jobs: int,
           guard: Callable[[], None], hold: Callable[[], AbstractContextManager[object]] | None,
           dispose: Disposer, progress: Progress, settle: float | None, listed: set[Digest] | None,
           trash_run: str | None, extra: dict[str, Any] | None) -> ApplyResult:
    index = state.index
    if plan.remove_entries:
        update = update_index(layout, _drop_entries(plan), hold=hold, settle=settle, run=result.run)
        result.races = update.races
        result.removed_entries = len(update.before.entries) - len(update.after.entries) if update.changed else 0
        result.index_after = update.after.fingerprint
        index = update.after
    else:
        index = read_index_retrying(layout)
    # Re-mark against what index.json says now. Unchanged, and with every manifest read at planning
    # (blobs are immutable), the plan's graph is that graph: reused rather than built twice.
    if index.fingerprint == state.index.fingerprint and state.graph.complete():
        fresh = state
    else:
        fresh = LayoutState.load(layout, jobs, None, known=state.graph, index=index)
    reachable = fresh.reachable()
    refuse_unsafe(layout, fresh.graph, reachable)
    _remove_blobs(layout, plan.remove_manifests, reachable, result, jobs, guard, dispose, progress, ordered=True)
    _remove_blobs(layout, plan.remove_blobs, reachable, result, jobs, guard, dispose, progress, ordered=False)
    _remove_leftovers(layout, plan, result, guard)
    vouched = None if listed is None else listed - {r.digest for r in plan.blob_removals}
    fingerprint, missing = _verify(layout, fresh, jobs, set(plan.dangling), vouched)
    result.index_after = fingerprint
    removed = {b.digest for b in result.removed} | {b.digest for b in plan.blob_removals
                                                     if b.digest not in reachable}
    result.raced = [d for d in missing if d in removed]
    damaged = [d for d in missing if d not in removed]
    error: OcigcError | None = None
    if result.raced:
        error = RunRaced(_race_message(layout, result.raced, trash_run), result)
        write_record(layout, "race", {"problem": "index.json references blobs this run removed (a writer "
                                      "that does not take the lock raced it)", "raced": result.raced,
                                      "index": fingerprint, "run": result.run, "trash_run": trash_run})
    if damaged:
        write_record(layout, "integrity", {"missing": damaged, "index": fingerprint})
        error = RunDamaged(f"{layout.where(damaged[0].blob_path())}: referenced blob is missing after the run "
                           f"({len(damaged)} missing, not removed by this run); see "
                           f"{layout.where('.ocigc/journal')}", result)
    result.seconds = time.monotonic() - started
    record: dict[str, Any] = {"plan": plan.to_json(), "result": result.to_json(), **(extra or {})}
    result.journal = write_record(layout, plan.command, record, result.run)
    if error is not None:
        raise error
    return result


def _race_message(layout: Layout, raced: list[Digest], trash_run: str | None) -> str:
    more = f" (and {len(raced) - 1} more)" if len(raced) > 1 else ""
    head = (f"{layout.where(raced[0].blob_path())}{more}: index.json references it again, but this run removed "
            "it (a writer that does not take the lock raced the run)")
    if trash_run is not None:
        return (f"{head}; it is in trash run {trash_run}: 'ocigc trash restore {layout.location} {trash_run}' "
                "brings it back (so does the next sweep)")
    return f"{head}; the reference dangles: push the image again (sweep with --trash to keep such blobs restorable)"


def _drop_entries(plan: Plan) -> Callable[[Index], Index | None]:
    identities = {(e.digest, e.ref_name) for e in plan.remove_entries}

    def mutate(current: Index) -> Index | None:
        return current.without(lambda _i, e: (e.digest, e.ref_name) in identities)

    return mutate


def _remove_blobs(layout: Layout, items: list[BlobRemoval], reachable: set[Digest], result: ApplyResult,
                  jobs: int, guard: Callable[[], None], dispose: Disposer, progress: Progress,
                  ordered: bool) -> None:
    todo = []
    for item in items:
        if item.digest in reachable:
            result.skipped.append(f"{item.digest}: referenced again since planning (kept)")
        else:
            todo.append(item)
    if not todo:
        return
    counter = progress.counter("remove", total=len(todo))
    many: Callable[[list[str]], list[tuple[str, str]]] | None = None
    if dispose is remove_file:
        many = layout.storage.remove_many if isinstance(layout.storage, RemovesMany) else None
    # Plan order (manifests parents first), in parallel batches; guard() before each batch.
    batch = MANY_BATCH if many is not None else BATCH
    with Workers(jobs) as workers:  # threads (when removals wait) kept from batch to batch
        _remove_batches(layout, todo, batch, many, result, workers, guard, dispose, counter)
    counter.close()


def _remove_batches(layout: Layout, todo: list[BlobRemoval], batch: int,
                    many: Callable[[list[str]], list[tuple[str, str]]] | None, result: ApplyResult,
                    workers: Workers, guard: Callable[[], None], dispose: Disposer, counter: Counter) -> None:
    for start in range(0, len(todo), batch):
        guard()
        chunk = todo[start:start + batch]
        if many is not None:
            failures = dict(many([item.path for item in chunk]))
            for item in chunk:
                if item.path in failures:
                    result.failed.append(f"{layout.where(item.path)}: {failures[item.path]}")
                else:
                    result.removed.append(item)
            counter.add(len(chunk))
            continue

        done: dict[int, BlobRemoval] = {}

        def one(pair: tuple[int, BlobRemoval], done: dict[int, BlobRemoval] = done) -> str | None:
            i, item = pair
            try:
                dispose(layout, item.path)
            except OSError as e:
                return f"{layout.where(item.path)}: {e.strerror or e}"
            done[i] = item
            return None

        try:
            errors = workers.map(one, list(enumerate(chunk)), on_done=counter.add)
        finally:  # interrupted half-way through a batch: what went is still recorded (the journal)
            result.removed.extend(done[i] for i in sorted(done))
        result.failed.extend(err for err in errors if err)


def _remove_leftovers(layout: Layout, plan: Plan, result: ApplyResult, guard: Callable[[], None]) -> None:
    if not plan.remove_files:
        return
    guard()
    dirs: set[str] = set()
    for f in plan.remove_files:
        try:
            if f.path.endswith("/"):  # an empty temp directory of a writer: rmdir, never recursive
                if layout.holds_layout(f.path.rstrip("/")):
                    continue
                layout.storage.remove_dir(f.path.rstrip("/"))
            else:
                layout.storage.remove(f.path)
            result.removed_files.append(f.path)
            result.bytes_removed_files += f.size or 0
        except OSError as e:
            result.failed.append(f"{layout.where(f.path)}: {e.strerror or e}")
        head = f.path.rsplit("/", 1)[0] if "/" in f.path else ""
        while head and (head.startswith("ingest") or head.split("/")[0].startswith(".umoci-")):
            dirs.add(head)
            head = head.rsplit("/", 1)[0] if "/" in head else ""
    for d in sorted(dirs, key=lambda p: -p.count("/")):
        if layout.holds_layout(d):
            continue  # a nested layout is never an empty leftover directory (on s3:// rmdir is not "if empty")
        with suppress(OSError):  # not empty or already gone: harmless
            layout.storage.remove_dir(d)


def _verify(layout: Layout, state: LayoutState, jobs: int, known_missing: set[Digest] | None = None,
            vouched: set[Digest] | None = None) -> tuple[str, list[Digest]]:
    """The blobs the current index.json reaches that are missing (but those already missing before
    the run, and foreign layers), and the fingerprint checked. ``vouched``: blobs known to exist
    without looking again (listed before the run and not removed by it); the others reachable are
    stat-ed, or, without it, the blob directories listed again."""
    index = read_index_retrying(layout)
    if index.fingerprint != state.index.fingerprint:
        state = LayoutState.load(layout, jobs, None, known=state.graph, index=index)
    reach = state.reachable()
    unknown = reach - (known_missing or set()) - state.graph.foreign(reach)
    if vouched is None:
        missing = sorted(unknown - layout.list_blobs().digests)
    else:
        to_stat = sorted(unknown - vouched)
        missing = [d for d, st in zip(to_stat, pmap(layout.stat_blob, to_stat, jobs), strict=True) if st is None]
    return index.fingerprint, missing
