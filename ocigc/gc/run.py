"""Delete and sweep drivers: open, plan, (lock,) apply — one layout at a time.

The CLI calls these and renders what they return. Locking is injected (``locker``): the
sweep takes the exclusive lock for its re-mark-and-remove phase; delete holds the shared lock
for the run and the short exclusive hold around the ``index.json`` merge.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ocigc.digest import Digest
from ocigc.errors import OcigcError, StorageError, storage_error
from ocigc.gc.apply import ApplyResult, Disposer, apply_plan, remove_file
from ocigc.gc.delete_plan import plan_delete
from ocigc.gc.plan import DeleteOptions, Plan, SweepOptions, TrashView
from ocigc.gc.sweep_plan import plan_sweep
from ocigc.gc.trash import (
    DEFAULT_RETENTION,
    TRASH_DIR,
    PurgeResult,
    Resurrection,
    TrashOverlay,
    TrashRun,
    entries_to_record,
    has_trash,
    list_runs,
    purge,
    trashed_digests,
)
from ocigc.layout.indexio import read_index_retrying
from ocigc.layout.journal import prepare as prepare_journal
from ocigc.layout.layout import BlobListing, Layout
from ocigc.layout.state import LayoutState
from ocigc.oci.refs import Reference
from ocigc.progress import NullProgress, Progress
from ocigc.storage.base import SizesObjects

Mode = Literal["shared", "exclusive"]


class LockLike(Protocol):
    def ensure_held(self) -> None: ...
    def exclusive_hold(self) -> AbstractContextManager[object]: ...


class _Unlocked:
    """No lock: for library callers that coordinate writers themselves."""

    def ensure_held(self) -> None:
        pass

    def exclusive_hold(self) -> AbstractContextManager[object]:
        return nullcontext()


Locker = Callable[[Layout, Mode], AbstractContextManager[LockLike]]


def no_lock(layout: Layout, mode: Mode) -> AbstractContextManager[LockLike]:
    return nullcontext(_Unlocked())


#: Decides whether a real run goes ahead once the plan is known (the CLI asks on a terminal).
Confirm = Callable[[Plan], bool]


@dataclass
class Outcome:
    """What happened to one layout: its plan, the result of applying it, or the error that stopped it."""

    layout: Layout
    plan: Plan | None = None
    result: ApplyResult | None = None
    error: OcigcError | None = None
    dry_run: bool = False
    declined: bool = False
    #: With --trash: the trash run that holds what this run moved aside.
    trash_run: str | None = None
    #: Trash upkeep of a sweep: blobs brought back because a manifest references them again, and
    #: trash runs purged after the retention.
    resurrected: list[Resurrection] = field(default_factory=list)
    trash: PurgeResult | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout.label, "location": self.layout.location, "dry_run": self.dry_run,
            "plan": self.plan.to_json() if self.plan else None,
            "result": self.result.to_json() if self.result else None,
            "error": str(self.error) if self.error else None,
            "exit_code": self.error.exit_code if self.error else 0,
            "declined": self.declined,
            "trash_run": self.trash_run,
            "resurrected": [r.to_json() for r in self.resurrected],
            "trash": self.trash.to_json() if self.trash else None,
        }


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    jobs: int = 16
    #: index.json settle delay; None: the lock protocol's (2 s on FUSE, 0.02 s on a local disk).
    settle: float | None = None
    locker: Locker = no_lock
    dispose: Disposer = remove_file
    confirm: Confirm | None = None
    #: Move blobs to .ocigc/trash/<run>/ instead of removing them (undo with 'ocigc trash restore').
    trash: bool = False
    #: A sweep purges trash runs older than this (after bringing back what is referenced again).
    trash_retention: float = DEFAULT_RETENTION
    command: str = ""


def sweep_layout(layout: Layout, opts: SweepOptions, run: RunOptions, progress: Progress | None = None) -> Outcome:
    progress = progress or NullProgress()
    out = Outcome(layout, dry_run=run.dry_run)
    try:
        layout.check_oci_layout()
        # The trash is part of the plan: what index.json references again is read from the trash
        # (read-only) and restored first; runs older than the retention are purged. A dry run
        # prints both; the real run executes them under the exclusive lock, re-checked there.
        runs = list_runs(layout) if has_trash(layout) else []
        trashed = trashed_digests(layout, runs)
        view = TrashOverlay(layout, trashed) if trashed else layout
        state, listing = _load_and_list(layout, run, progress, view)
        trash = TrashView(runs, run.trash_retention) if runs else None
        out.plan = plan_sweep(layout, state, listing, opts, trash=trash)
        if run.dry_run or out.plan.empty:
            return out
        if run.confirm and not run.confirm(out.plan):
            out.declined = True
            return out
        with run.locker(layout, "exclusive") as lock:
            # before the first irreversible step (trash purge, removals)
            prepare_journal(layout, *([TRASH_DIR] if run.trash else []))
            extra: dict[str, object] = {}
            if out.plan.trash_restore or out.plan.trash_purge:
                # resurrect() re-checks under the lock what index.json references now (a push that
                # raced the planning is covered too); then exactly the planned runs are purged.
                out.trash = purge(layout, guard=lock.ensure_held, jobs=run.jobs,
                                  only=[p.run for p in out.plan.trash_purge])
                out.resurrected = out.trash.resurrected
                extra["trash"] = out.trash.to_json()
            dispose = run.dispose
            if run.trash and out.plan.blob_removals:
                bin_ = TrashRun(layout, "sweep", run.command)
                dispose, out.trash_run = bin_.dispose, bin_.run
            out.result = apply_plan(layout, out.plan, state, jobs=run.jobs, guard=lock.ensure_held,
                                    dispose=dispose, progress=progress, settle=run.settle,
                                    listed=listing.digests | listing.symlinked, trash_run=out.trash_run,
                                    extra=extra)
    except OcigcError as e:
        out.error = e
        out.result = getattr(e, "result", None) or out.result
    except OSError as e:  # EACCES, ENOTDIR, EROFS, ENOSPC, EIO...: this layout stops, the next one runs
        out.error = storage_error(e, layout.where(""))
    _fail_on_failed_removals(out)
    return out


def delete_refs(layout: Layout, refs: list[Reference], opts: DeleteOptions, run: RunOptions,
                progress: Progress | None = None) -> Outcome:
    progress = progress or NullProgress()
    out = Outcome(layout, dry_run=run.dry_run)
    try:
        layout.check_oci_layout()
        if run.dry_run:
            out.plan = _plan_delete(layout, refs, opts, run, progress)[0]
            return out
        with run.locker(layout, "shared") as lock:
            out.plan, state, listed = _plan_delete(layout, refs, opts, run, progress)
            if run.confirm and not run.confirm(out.plan):
                out.declined = True
                return out
            prepare_journal(layout, *([TRASH_DIR] if run.trash else []))
            dispose = run.dispose
            if run.trash and not out.plan.empty:
                bin_ = TrashRun(layout, "delete", run.command)
                identities = {(e.digest, e.ref_name) for e in out.plan.remove_entries}
                bin_.record_entries(entries_to_record(state.index, identities), state.index.fingerprint)
                dispose, out.trash_run = bin_.dispose, bin_.run
            # The index merge, re-mark and removals run under the short exclusive hold: a push
            # (shared) must not reference a blob between our re-mark and its removal.
            with lock.exclusive_hold():
                out.result = apply_plan(layout, out.plan, state, jobs=run.jobs, guard=lock.ensure_held,
                                        dispose=dispose, progress=progress, settle=run.settle, listed=listed,
                                        trash_run=out.trash_run)
    except OcigcError as e:
        out.error = e
        out.result = getattr(e, "result", None) or out.result
    except OSError as e:  # EACCES, ENOTDIR, EROFS, ENOSPC, EIO...: this layout stops, the next one runs
        out.error = storage_error(e, layout.where(""))
    _fail_on_failed_removals(out)
    return out


def _fail_on_failed_removals(out: Outcome) -> None:
    """A removal the storage refused (EACCES, EROFS, EIO on one blob) is an error of the run (exit 1),
    not a footnote of a successful one: the plan was not carried out."""
    if out.error is None and out.result is not None and out.result.failed:
        failed = out.result.failed
        out.error = StorageError(f"{len(failed)} removal(s) failed; first: {failed[0]}")


def _load_and_list(layout: Layout, run: RunOptions, progress: Progress,
                   view: Layout | None = None) -> tuple[LayoutState, BlobListing]:
    """The graph (from a fresh read of index.json) and the listing of the blobs, the listing begun
    after index.json was read (as before: a blob that index.json names was written before it, so
    it is listed). On a bucket the listing goes out beside the manifest reads (its own round trips,
    none of theirs)."""
    index = read_index_retrying(layout)
    if not isinstance(layout.storage, SizesObjects):
        state = LayoutState.load(view or layout, run.jobs, progress, index=index)
        return state, layout.list_blobs()
    with ThreadPoolExecutor(1, thread_name_prefix="ocigc-list") as side:
        listing = side.submit(layout.list_blobs)
        state = LayoutState.load(view or layout, run.jobs, progress, index=index)
        return state, listing.result()


def _plan_delete(layout: Layout, refs: list[Reference], opts: DeleteOptions, run: RunOptions,
                 progress: Progress) -> tuple[Plan, LayoutState, set[Digest]]:
    state, listing = _load_and_list(layout, run, progress)
    return plan_delete(layout, state, listing, refs, opts), state, listing.digests | listing.symlinked
