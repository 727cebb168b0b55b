"""Delete and sweep drivers: open, plan, (lock,) apply — one layout at a time.

The CLI calls these and renders what they return. Locking is injected (``locker``): the
sweep takes the exclusive lock for its re-mark-and-remove phase; delete holds the shared lock
for the run and the short exclusive hold around the ``index.json`` merge.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ocigc.apply import ApplyResult, Disposer, apply_plan, remove_file
from ocigc.errors import OcigcError
from ocigc.layout import Layout
from ocigc.plan import DeleteOptions, Plan, SweepOptions, plan_delete, plan_sweep
from ocigc.progress import NullProgress, Progress
from ocigc.refs import Reference
from ocigc.survey import LayoutState

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

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout.name, "location": self.layout.location, "dry_run": self.dry_run,
            "plan": self.plan.to_json() if self.plan else None,
            "result": self.result.to_json() if self.result else None,
            "error": str(self.error) if self.error else None,
            "exit_code": self.error.exit_code if self.error else 0,
            "declined": self.declined,
        }


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    jobs: int = 16
    settle: float = 0.0
    locker: Locker = no_lock
    dispose: Disposer = remove_file
    confirm: Confirm | None = None


def sweep_layout(layout: Layout, opts: SweepOptions, run: RunOptions, progress: Progress | None = None) -> Outcome:
    progress = progress or NullProgress()
    out = Outcome(layout, dry_run=run.dry_run)
    try:
        layout.check_oci_layout()
        state = LayoutState.load(layout, run.jobs, progress)
        listing = layout.list_blobs()
        out.plan = plan_sweep(layout, state, listing, opts)
        if run.dry_run or out.plan.empty:
            return out
        if run.confirm and not run.confirm(out.plan):
            out.declined = True
            return out
        with run.locker(layout, "exclusive") as lock:
            out.result = apply_plan(layout, out.plan, state, jobs=run.jobs, guard=lock.ensure_held,
                                    dispose=run.dispose, progress=progress, settle=run.settle)
    except OcigcError as e:
        out.error = e
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
            out.plan, state = _plan_delete(layout, refs, opts, run, progress)
            if run.confirm and not run.confirm(out.plan):
                out.declined = True
                return out
            # The index merge, re-mark and removals run under the short exclusive hold: a push
            # (shared) must not reference a blob between our re-mark and its removal.
            with lock.exclusive_hold():
                out.result = apply_plan(layout, out.plan, state, jobs=run.jobs, guard=lock.ensure_held,
                                        dispose=run.dispose, progress=progress, settle=run.settle)
    except OcigcError as e:
        out.error = e
    return out


def _plan_delete(layout: Layout, refs: list[Reference], opts: DeleteOptions, run: RunOptions,
                 progress: Progress) -> tuple[Plan, LayoutState]:
    state = LayoutState.load(layout, run.jobs, progress)
    listing = layout.list_blobs()
    return plan_delete(layout, state, listing, refs, opts), state
