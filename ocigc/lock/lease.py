"""Native mode (a store whose conditional writes passed the probe: ``s3://`` on AWS, MinIO, moto):
an exclusive lock is one *lease object* per scope, ``<scope>.X.lease``, created with
``If-None-Match: *`` (exactly one creator wins), renewed with ``If-Match: <our ETag>`` (a 412 means
the lease was taken over: LockLost), taken over when stale with ``If-Match: <the ETag seen>``
(exactly one breaker wins; the body's ``epoch`` goes up) and released with a conditional delete
(never a successor's lease). Shared holders keep their unique files; an exclusive holder drains
them behind its lease as above. Staleness of a lease is judged as for a file, with the observed
age counted per ETag (a live holder renews every ``ttl/3``). See ``LeaseHandle``.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from typing import Any

from ocigc import status
from ocigc.errors import LockLost
from ocigc.layout.journal import write_record
from ocigc.layout.layout import Layout
from ocigc.lock.files import (
    EXCLUSIVE,
    LOCK_DIR,
    SCOPE_REPO,
    SHARED,
    LockInfo,
    is_lease,
    lease_name,
    now_boot,
)
from ocigc.lock.handle import HeldLock, LockHandle
from ocigc.lock.params import LockError
from ocigc.storage.base import ConditionalStorage, PreconditionFailed


class LeaseHandle(LockHandle):
    """Native mode: exclusive scopes are lease objects written with conditional requests.

    ``<scope>.X.lease`` is created with ``If-None-Match: *``: of two acquirers exactly one PUT
    succeeds, with no settle delay. The loser reads the lease; a live one means back off (or
    LockBusy), a stale one (the verdicts of ``LockDir``) is taken over with ``If-Match`` on the
    ETag it read, so of several breakers exactly one wins; ``epoch`` in the body counts takeovers.
    The holder renews with ``If-Match`` on its own ETag (412: the lease was taken over, LockLost)
    and releases with a conditional delete. Shared locks are the unique files of ``LockHandle``
    (created with ``If-None-Match``); an exclusive holder drains them behind its lease, and
    exclusive lock files of lock-file-protocol writers (a host on a mount) count as conflicts.
    """

    def __init__(self, layout: Layout, store: ConditionalStorage, **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)
        self.store = store
        #: The lease being taken (created, not yet registered): ours, not read back by a scan.
        self._taking: str | None = None
        #: Leases of finished holds being deleted in the background (``_drop``).
        self._releasing: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"LeaseHandle({self.layout.location!r}, mode={self.mode!r}, owner={self.owner[:8]})"

    # --- acquisition ---------------------------------------------------------------------------
    def _own_leases(self) -> dict[str, str] | None:
        with self._mu:
            held = {inst.name: self.owner for inst in self._held.values() if is_lease(inst.name)}
        if self._taking is not None:
            held[self._taking] = self.owner
        return held

    def _acquire_instance(self, scope: str, mode: str, wait: float) -> HeldLock:
        if mode != EXCLUSIVE:
            return self._acquire_shared(scope, wait)
        self._finish_releasing()  # our own lease of the last hold must be gone before we create it again
        p = self.params
        deadline = now_boot() + wait
        self._waiting = wait
        backoff = random.uniform(p.backoff_min, p.backoff_max)
        while True:
            self.stats.attempts += 1
            got = self._take_lease(scope)
            if isinstance(got, LockInfo):
                blocking = [got]
            else:
                inst = got
                self._taking = inst.name
                try:
                    if scope == SCOPE_REPO:
                        self._wait_for_mount_hosts()
                    live = self._live_conflicts(scope, EXCLUSIVE)
                    if live and all(c.mode == SHARED for c in live):
                        live = [] if self._drain(inst, scope, deadline) else self._live_conflicts(scope, EXCLUSIVE)
                except BaseException:
                    self._delete(inst)
                    raise
                finally:
                    self._taking = None
                if not live:
                    return self._register(inst)
                self._delete(inst)
                blocking = live
            self._back_off(blocking, deadline, backoff)
            backoff = min(backoff * 2, p.backoff_cap)

    def _acquire_shared(self, scope: str, wait: float) -> HeldLock:
        """A shared lock on a store that passed the probe: create our file, list once.

        No settle delay and no listing first: the store is linearizable (a request answered is
        visible to every later request, listings included), so of a shared acquirer and an
        exclusive one (a lease, or a lock file of a host on the mount) at least one sees the other
        in the listing it makes after its own write, and backs off. A host on the mount sees our
        file too: it lists after its own settle delay, which exceeds its mount's cache expiry.
        Two requests when nothing conflicts (docs/locking.md, "Native mode")."""
        p = self.params
        deadline = now_boot() + wait
        self._waiting = wait
        backoff = random.uniform(p.backoff_min, p.backoff_max)
        while True:
            self.stats.attempts += 1
            inst = self._write_new(scope, SHARED)
            try:
                live = self._live_conflicts(scope, SHARED)
                if inst.name not in self.dir.listed:
                    raise LockError(f"{self.dir.where(inst.name)}: our own lock file is not listed right after "
                                    "the store accepted it; this store's listings lag its writes, so locking "
                                    "cannot work through its API (see docs/locking.md)")
            except BaseException:
                self._delete(inst)
                raise
            if not live:
                self._refresh_if_due(inst)
                return self._register(inst)
            self._delete(inst)
            self._back_off(live, deadline, backoff)
            backoff = min(backoff * 2, p.backoff_cap)

    def _wait_for_mount_hosts(self) -> None:
        """Before the listing that decides an exclusive lock of the repository: a host on a mount
        takes a shared lock without a settle delay (``LockHandle._settle_for``), listing right after
        its write with a view up to its cache expiry old; a shared file it wrote after missing our
        lease is in our listing once we have waited longer than that expiry (the mount hosts'
        settle delay). A sweep's cost, once; pushes and deletes do not take this lock."""
        wait = self.params.mount_settle or 0.0
        if wait > 0:
            status.waiting(wait, f"{self.layout.display}: lease taken, waiting for hosts on a mount to see it")
            time.sleep(wait)

    def _take_lease(self, scope: str) -> HeldLock | LockInfo:
        """Create the lease, or take over a stale one; else the live holder."""
        name = lease_name(scope)
        rel = f"{LOCK_DIR}/{name}"
        holder: LockInfo | None = None
        for _ in range(8):  # the lease may vanish or change between our create and our read
            inst = HeldLock(scope, EXCLUSIVE, 1, time.time(), now_boot(), name=name, epoch=1)
            try:
                inst.etag = self.store.put_if_absent(rel, self._lease_body(inst, None))
                return inst
            except FileExistsError:
                pass
            holder = self.dir.lease(name)
            if holder is None:
                continue
            if holder.owner and holder.owner in self.inherited:
                inst.borrowed, inst.epoch = True, int((holder.body or {}).get("epoch") or 0)
                return inst
            verdict = self.dir.verdict(holder)
            if not verdict.stale or holder.etag is None:
                return holder
            inst.epoch = int((holder.body or {}).get("epoch") or 0) + 1
            try:
                inst.etag = self.store.put_if_match(rel, self._lease_body(inst, holder.owner or None), holder.etag)
            except (PreconditionFailed, FileNotFoundError):
                continue  # another breaker won, or the holder renewed or released: look again
            write_record(self.layout, "lock-break", {
                "lock": name, "scope": scope, "mode": "exclusive", "owner": holder.owner, "holder": holder.body,
                "reason": verdict.reason, "forced": False, "breaker": self._whoami(), "run": self.run,
                "takeover": True, "epoch": inst.epoch,
            })
            self.stats.broken.append(name)
            return inst
        return holder if holder is not None else LockInfo(name, scope, EXCLUSIVE, "", 0,
                                                          problem="changing too fast to read")

    def _lease_body(self, inst: HeldLock, prev: str | None) -> bytes:
        body = json.loads(self._body(inst, prev))
        body["epoch"] = inst.epoch
        body["lease"] = True
        return json.dumps(body, indent=1).encode()

    # --- refresh and release -------------------------------------------------------------------
    def _drop(self, inst: HeldLock) -> None:
        """The end of a short hold: its lease is deleted in the background (one round trip the
        command does not wait for: what it does next needs no hold), joined before we take a lease
        again and when the handle is released."""
        if not is_lease(inst.name) or inst.borrowed:
            super()._drop(inst)
            return
        with self._mu:
            if self._held.get(inst.scope) is inst:
                del self._held[inst.scope]
        with inst.mu:
            inst.dropped = True
        t = threading.Thread(target=self._delete, args=(inst,), name="ocigc-lease-release")
        self._releasing.append(t)
        t.start()

    def _finish_releasing(self) -> None:
        while self._releasing:
            self._releasing.pop().join()

    def release(self) -> None:
        try:
            super().release()
        finally:
            self._finish_releasing()

    def _refresh(self, inst: HeldLock) -> None:
        if not is_lease(inst.name):
            super()._refresh(inst)
            return
        with inst.mu:
            if inst.dropped:
                return
            started = now_boot()
            where = self.dir.where(inst.name)
            if inst.borrowed:
                holder = self.dir.lease(inst.name)
                if holder is None or holder.owner not in self.inherited:
                    raise LockLost(f"{where}: the inherited lease is gone; stopped before the next destructive step")
                inst.confirmed = started
                return
            nxt = HeldLock(inst.scope, inst.mode, inst.gen + 1, inst.acquired_unix, started, name=inst.name,
                            epoch=inst.epoch)
            assert inst.etag is not None
            try:
                etag = self.store.put_if_match(f"{LOCK_DIR}/{inst.name}", self._lease_body(nxt, self.owner), inst.etag)
            except (PreconditionFailed, FileNotFoundError):
                lost = (f"{where}: our lease was taken over or removed by another process (renewal refused); "
                        "stopped before the next destructive step")
                with self._mu:
                    self._lost = lost
                raise LockLost(lost) from None
            inst.gen, inst.etag, inst.confirmed = nxt.gen, etag, started

    def _delete(self, inst: HeldLock) -> None:
        if not is_lease(inst.name):
            super()._delete(inst)
            return
        if inst.borrowed or inst.etag is None:
            return
        with contextlib.suppress(OSError):
            self.store.delete_if_match(f"{LOCK_DIR}/{inst.name}", inst.etag)
