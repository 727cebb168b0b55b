"""Lock files for last-write-wins stores (object-store mounts), after restic and borg.

A lock is a set of files under ``<layout>/.ocigc/locks/``. Every file has a unique name and is
written once, never overwritten, so last-write-wins never applies::

    <scope>~<mode>~<owner>~<gen:08d>.json      e.g. repo~S~5f0c...~00000003.json

* ``scope``: ``repo`` (writers vs sweep) or ``index`` (the short exclusive hold around an
  ``index.json`` merge). ``mode``: ``S`` shared or ``X`` exclusive (``index`` is always ``X``).
* ``owner``: random per handle (one run of a command); ``gen``: bumped at every refresh.

Acquire = list, write own file, wait the settle delay, list again; a conflicting lock that is not
stale means delete own file and back off with jitter. An exclusive acquirer that sees only shared
holders after its settle keeps its file as a barrier (new shared acquirers see it and back off)
and waits for them to drain. The lease is refreshed in the background by writing the next
generation and deleting the previous one; a holder calls ``ensure_held`` before every
destructive step and stops with ``LockLost`` when its lease may have lapsed.

A lock file is stale when (any of) this process has seen the same name for longer than
``ttl + settle + poll`` (observed age: a live holder renames every ``ttl/3``), its embedded
expiry plus the assumed clock skew is in the past, or its holder is a dead process on this host.
An empty or unreadable lock file is held until it is stale by observed age. Breaking a lock
removes only that file and is journaled.

On a FUSE mount of a bucket there is no atomic create across hosts, so the mutual exclusion is
as good as its assumptions: ``close()`` returns after the upload, a listing shows every write
that completed before it began, the settle delay exceeds the cross-host visibility delay, no
holder pauses longer than the fence margin, clocks tick at the same rate (and differ by less than
``max_skew`` for the expiry shortcut). See ``docs/locking.md``.

Module map: ``lock.params`` (timing, the settle default), ``lock.files`` (names, bodies, reading
and judging lock files), this module (holding them), ``lock.lease`` (native mode), ``lock.acquire``.
The lock modules never print: waiting is reported through ``on_wait``; errors are exceptions.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Literal

from ocigc import __version__, status
from ocigc.errors import LockBusy, LockLost, OcigcError
from ocigc.layout.layout import Layout
from ocigc.lock.files import (
    EXCLUSIVE,
    LOCK_DIR,
    LOCK_MAX_BYTES,
    SCOPE_INDEX,
    SCOPE_REPO,
    SHARED,
    LockDir,
    LockInfo,
    lock_name,
    now_boot,
    pid_starttime,
)
from ocigc.lock.params import LockError, LockParams
from ocigc.storage.base import StagesTemp, Storage, conditional, write_and_close

#: Environment variable naming lock owners (comma-separated) whose locks a process treats as its own.
INHERIT_ENV = "OCIGC_LOCK_INHERIT"

Mode = Literal["shared", "exclusive"]


@dataclass
class HeldLock:
    """A lock we hold (or are acquiring): its current generation and when we last confirmed it."""

    scope: str
    mode: str
    gen: int
    acquired_unix: float
    confirmed: float  # now_boot() before the write of the current generation
    name: str = ""
    dropped: bool = False
    mu: threading.Lock = field(default_factory=threading.Lock)
    #: Native mode: our lease object's current ETag and fencing epoch; ``borrowed`` when the lease
    #: is an inherited owner's (``ocigc exec``): never renewed or released by us.
    etag: str | None = None
    epoch: int = 0
    borrowed: bool = False


@dataclass
class AcquireStats:
    """What one acquisition cost: attempts, back-offs and stale locks broken (tests and benchmarks)."""

    attempts: int = 0
    backoffs: int = 0
    broken: list[str] = field(default_factory=list)
    seconds: float = 0.0


class LockHandle:
    """Locks held on one layout by one run. A context manager: leaving it releases everything."""

    def __init__(self, layout: Layout, *, command: str = "", params: LockParams | None = None,
                 run: str | None = None, on_wait: Callable[[list[LockInfo]], None] | None = None) -> None:
        self.layout = layout
        self.params = (params if params is not None else LockParams.from_env()).resolve(layout)
        self.command = command
        self.run = run
        self.on_wait = on_wait
        self.owner = uuid.uuid4().hex
        #: Owners whose locks count as ours: ``ocigc exec`` passes its own to the command it runs
        #: (``OCIGC_LOCK_INHERIT``), so an ocigc writer inside ``exec`` does not wait for its parent.
        self.inherited = frozenset(o for o in os.environ.get(INHERIT_ENV, "").split(",") if o)
        self.dir = LockDir(layout, self.params)
        self.identity = self.dir.identity
        self.mode: str | None = None
        self.wait = 0.0
        self._waiting = 0.0
        self.stats = AcquireStats()
        self._held: dict[str, HeldLock] = {}
        self._mu = threading.RLock()
        self._hold_mu = threading.Lock()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._starttime = pid_starttime(os.getpid())

    def __repr__(self) -> str:
        return f"LockHandle({self.layout.location!r}, mode={self.mode!r}, owner={self.owner[:8]})"

    # --- context manager -----------------------------------------------------------------------
    def __enter__(self) -> LockHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- public API ----------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        with self._mu:
            return bool(self._held) and self._lost is None

    def lock_files(self) -> list[str]:
        with self._mu:
            return [inst.name for inst in self._held.values()]

    def ensure_held(self) -> None:
        """Raise LockLost unless every lock we hold was confirmed recently enough to act on it."""
        with self._mu:
            if self._lost:
                raise LockLost(self._lost)
            now = now_boot()
            limit = self.params.ttl - (self.params.fence_margin or 0.0)
            for inst in self._held.values():
                if now - inst.confirmed >= limit:
                    self._lost = (f"{self.dir.where(inst.name)}: lease not refreshed for {now - inst.confirmed:.0f}s "
                                  f"(TTL {self.params.ttl:g}s); stopped before the next destructive step")
                    raise LockLost(self._lost)

    @contextmanager
    def exclusive_hold(self) -> Iterator[object]:
        """The short exclusive hold around an ``index.json`` merge (a no-op under the exclusive lock)."""
        self.ensure_held()
        if self.mode == EXCLUSIVE:
            yield self
            return
        with self._hold_mu:
            inst = self._acquire_instance(SCOPE_INDEX, EXCLUSIVE, max(self.wait, self.params.hold_wait))
            try:
                self.ensure_held()
                yield self
            finally:
                self._drop(inst)

    def release(self) -> None:
        """Stop refreshing and delete our lock files (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._mu:
            insts = list(self._held.values())
            self._held.clear()
        for inst in insts:
            self._delete(inst)

    # --- acquisition ---------------------------------------------------------------------------
    def acquire(self, mode: Mode, wait: float = 0.0) -> LockHandle:
        code = {"shared": SHARED, "exclusive": EXCLUSIVE}.get(mode)
        if code is None:
            raise ValueError(f"lock mode must be 'shared' or 'exclusive', got {mode!r}")
        self.mode, self.wait = code, max(0.0, wait)
        started = now_boot()
        self._acquire_instance(SCOPE_REPO, code, self.wait)
        self.stats.seconds = now_boot() - started
        self._thread = threading.Thread(target=self._refresher, name=f"ocigc-lock-{self.owner[:8]}", daemon=True)
        self._thread.start()
        return self

    def _acquire_instance(self, scope: str, mode: str, wait: float) -> HeldLock:
        p = self.params
        deadline = now_boot() + wait
        self._waiting = wait
        backoff = random.uniform(p.backoff_min, p.backoff_max)
        while True:
            self.stats.attempts += 1
            live = self._live_conflicts(scope, mode)
            # An exclusive acquirer that sees only shared holders puts its file up at once as a
            # barrier and drains them (writer preference: a stream of pushes cannot starve a sweep).
            blocking = [c for c in live if c.mode != SHARED] if mode == EXCLUSIVE else live
            if blocking:
                self._back_off(blocking, deadline, backoff)
                backoff = min(backoff * 2, p.backoff_cap)
                continue
            inst = self._write_new(scope, mode)
            try:
                after = self._settle_and_check(inst, scope, mode, deadline)
            except BaseException:
                self._delete(inst)
                raise
            if after is None:
                # A slow acquisition (settle, draining, a loaded mount) must not hand out a lease
                # that is already close to its fence: refresh it first when it is due.
                self._refresh_if_due(inst)
                return self._register(inst)
            self._delete(inst)
            self._back_off(after, deadline, backoff)
            backoff = min(backoff * 2, p.backoff_cap)

    def _settle_for(self, scope: str, mode: str) -> float:
        """The wait between writing our lock file and the listing that decides (docs/locking.md,
        "Acquiring"): the settle delay for the index hold; for the repository's lock, none when
        shared and twice the settle delay when exclusive. Of a shared and an exclusive acquirer
        that race, the exclusive one then decides on a listing at least 2 x settle after its write,
        and a shared one that missed it wrote later than its write minus the cache expiry: the
        exclusive listing shows it (settle > cache expiry). One wait where both sides waited, and
        on the side that runs rarely (a sweep), not on every push."""
        settle = self.params.settle or 0.0
        if scope == SCOPE_REPO:
            return 0.0 if mode == SHARED else 2 * settle
        return settle

    def _settle_and_check(self, inst: HeldLock, scope: str, mode: str, deadline: float) -> list[LockInfo] | None:
        """Wait the settle delay and list again: None when we hold the lock, else the live conflicts."""
        settle = self._settle_for(scope, mode)
        if settle > 0:
            status.waiting(settle, f"{self.layout.display}: {'shared' if mode == SHARED else 'exclusive'} lock "
                                    "written, waiting for it to settle")
            time.sleep(settle)
            # (a shared acquirer lists at once: a mount's listing may not show its own file yet, and
            # need not: the exclusive side, which waits, is the one that must see it)
            if inst.name not in self.dir.names():
                raise LockError(f"{self.dir.where(inst.name)}: our own lock file is not listed {settle:g}s after "
                                "writing it; the mount caches directory listings, so locking cannot work here "
                                "(see docs/locking.md)")
        live = self._live_conflicts(scope, mode)
        if not live:
            return None
        if mode == EXCLUSIVE and all(c.mode == SHARED for c in live):
            if self._drain(inst, scope, deadline):
                return None
            live = self._live_conflicts(scope, mode)
        return live

    def _drain(self, inst: HeldLock, scope: str, deadline: float) -> bool:
        """Keep our exclusive file as a barrier and wait for shared holders to finish. False: give up."""
        p = self.params
        x_since: dict[str, float] = {}
        while True:
            now = now_boot()
            if now >= deadline:
                return False
            self._refresh_if_due(inst)
            time.sleep(min(p.poll, max(0.0, deadline - now)))
            live = self._live_conflicts(scope, EXCLUSIVE)
            if not live:
                return True
            if self.on_wait:
                self.on_wait(live)
            # Another exclusive acquirer that wrote after our settle sees us and deletes its file
            # within its own settle; one that stays that long means both of us hold a barrier
            # (a listing anomaly): back off rather than deadlock.
            now = now_boot()
            for c in live:
                if c.mode != SHARED:
                    x_since.setdefault(c.name, now)
                    if now - x_since[c.name] > 3 * (p.settle or 0.0) + 2 * p.poll:
                        return False

    def _live_conflicts(self, scope: str, mode: str) -> list[LockInfo]:
        """Conflicting locks of others in ``scope``; stale ones are broken (journaled) on the way."""
        def conflicting(c: LockInfo) -> bool:
            return c.owner != self.owner and c.owner not in self.inherited and c.conflicts_with(mode)

        while True:
            locks = self.dir.scan(scope, read=conflicting, known=self._own_leases())
            conflicts = [c for c in locks
                         if c.owner != self.owner and c.owner not in self.inherited and c.conflicts_with(mode)]
            now_wall = time.time()
            broke = False
            live: list[LockInfo] = []
            for c in conflicts:
                v = self.dir.verdict(c, now_wall)
                if v.stale:
                    self.dir.break_lock(c, v.reason, breaker=self._whoami(), run=self.run)
                    self.stats.broken.append(c.name)
                    broke = True
                else:
                    live.append(c)
            if not broke:
                return live

    def _own_leases(self) -> dict[str, str] | None:
        """Lease objects this handle holds or is taking (name -> our owner id): not read back."""
        return None

    def _back_off(self, live: list[LockInfo], deadline: float, backoff: float) -> None:
        now = now_boot()
        if now >= deadline:
            raise LockBusy(self._busy_message(live))
        if self.on_wait:
            self.on_wait(live)
        self.stats.backoffs += 1
        time.sleep(min(random.uniform(0.5, 1.0) * backoff * 2, deadline - now))

    def _busy_message(self, live: list[LockInfo]) -> str:
        now_wall = time.time()
        holders = "; ".join(c.describe(now_wall) for c in live[:5])
        more = f" (+{len(live) - 5} more)" if len(live) > 5 else ""
        waited = f"after waiting {self._waiting:g}s" if self._waiting else "without waiting"
        return f"{self.dir.where()}: lock busy {waited}: held by {holders}{more}"

    def _whoami(self) -> str:
        return f"{self.identity.host} pid={os.getpid()} owner={self.owner} command={self.command!r}"

    # --- files ---------------------------------------------------------------------------------
    def _body(self, inst: HeldLock, prev: str | None) -> bytes:
        now = time.time()
        me = self.identity
        body = {
            "v": 1, "tool": f"ocigc/{__version__}", "scope": inst.scope, "mode": inst.mode,
            "owner_id": self.owner, "gen": inst.gen, "nonce": uuid.uuid4().hex,
            "command": self.command, "run": self.run,
            "host": me.host, "host_id": me.host_id, "boot_id": me.boot_id, "pidns": me.pidns,
            "pid": os.getpid(), "pid_starttime": self._starttime, "user": _user(),
            "ci_job": os.environ.get("CI_JOB_URL") or os.environ.get("GITHUB_RUN_ID"),
            "created_unix": now, "acquired_unix": inst.acquired_unix, "ttl_s": self.params.ttl,
            "expires_unix": now + self.params.ttl, "prev": prev,
        }
        return json.dumps(body, indent=1).encode()

    def _write_new(self, scope: str, mode: str) -> HeldLock:
        inst = HeldLock(scope, mode, 1, time.time(), now_boot())
        self._write_gen(inst, None)
        return inst

    def _write_gen(self, inst: HeldLock, prev: str | None) -> None:
        inst.name = lock_name(inst.scope, inst.mode, self.owner, inst.gen)
        rel = f"{LOCK_DIR}/{inst.name}"
        data = self._body(inst, prev)
        storage = self.layout.storage
        storage.makedirs(LOCK_DIR)
        store = conditional(storage)
        if store is not None:
            # a create with If-None-Match that the store answered 200 holds these bytes (the probe
            # showed the store honours the condition): nothing a read-back could add. Its ETag lets
            # the release be one conditional DELETE of exactly this generation.
            inst.etag = store.put_if_absent(rel, data)
            return
        self._create_lock_file(storage, rel, data)
        try:
            back = storage.read_bytes(rel, limit=LOCK_MAX_BYTES)
        except OSError as e:
            back = f"<{e}>".encode()
        if back != data:
            with contextlib.suppress(OSError):
                storage.remove(rel)
            raise LockError(f"{self.dir.where(inst.name)}: read back differs from what we wrote "
                            f"({len(back)} of {len(data)} bytes); the mount did not store our lock file")

    def _create_lock_file(self, storage: Storage, rel: str, data: bytes) -> None:
        """Create lock file ``rel`` where no conditional write is at hand (a mount, a local disk).

        On a bucket mount ``.ocigc/locks/`` may exist only as the prefix of the lock objects in it:
        a host that locks through the bucket's API writes no directory marker. When that host
        removes the last of them between our ``makedirs`` (which the mount's cache answered) and
        our create, the mount answers ENOENT for the directory. Make it again (now with a marker)
        and retry until the mount's caches have caught up (twice the settle delay, at least 2 s)."""
        deadline = now_boot() + max(2.0, 2 * (self.params.settle or 0.0))
        while True:
            try:
                if not _create_whole_on_local_disk(storage, rel, data):
                    storage.write_new(rel, data)
                return
            except FileNotFoundError:
                if now_boot() >= deadline:
                    raise
            time.sleep(min(0.2, self.params.poll))
            storage.makedirs(LOCK_DIR)

    def _delete(self, inst: HeldLock) -> None:
        store = conditional(self.layout.storage) if inst.etag is not None else None
        with contextlib.suppress(OSError):
            if store is not None and inst.etag is not None:
                store.delete_if_match(f"{LOCK_DIR}/{inst.name}", inst.etag)
            else:
                self.layout.storage.remove(f"{LOCK_DIR}/{inst.name}")

    def _register(self, inst: HeldLock) -> HeldLock:
        with self._mu:
            self._held[inst.scope] = inst
        return inst

    def _drop(self, inst: HeldLock) -> None:
        with self._mu:
            if self._held.get(inst.scope) is inst:
                del self._held[inst.scope]
        with inst.mu:
            inst.dropped = True
            self._delete(inst)

    # --- refresh -------------------------------------------------------------------------------
    def _refresh_if_due(self, inst: HeldLock) -> None:
        if now_boot() - inst.confirmed >= (self.params.refresh or self.params.ttl / 3):
            self._refresh(inst)

    def _refresh(self, inst: HeldLock) -> None:
        """Write the next generation, confirm the current one is still there, delete it."""
        with inst.mu:
            if inst.dropped:
                return
            started = now_boot()
            old = inst.name
            if old not in self.dir.names():
                raise LockLost(f"{self.dir.where(old)}: our lock file is gone (broken by another process); "
                               "stopped before the next destructive step")
            new = HeldLock(inst.scope, inst.mode, inst.gen + 1, inst.acquired_unix, started)
            self._write_gen(new, old)
            if old not in self.dir.names():
                self._delete(new)
                raise LockLost(f"{self.dir.where(old)}: our lock file vanished during refresh (broken by another "
                               "process); stopped before the next destructive step")
            self.layout.storage.remove(f"{LOCK_DIR}/{old}")
            inst.gen, inst.name, inst.confirmed, inst.etag = new.gen, new.name, started, new.etag

    def _refresher(self) -> None:
        p = self.params
        interval = p.refresh or p.ttl / 3
        while not self._stop.is_set():
            with self._mu:
                insts = list(self._held.values())
            failed = False
            for inst in insts:
                if self._stop.is_set():
                    return
                if now_boot() - inst.confirmed < interval:
                    continue
                try:
                    self._refresh(inst)
                except LockLost as e:
                    with self._mu:
                        self._lost = str(e)
                    return
                except (OSError, OcigcError):
                    failed = True  # retried soon; ensure_held fences if it never succeeds
            with self._mu:
                insts = list(self._held.values())
            next_due = min((i.confirmed + interval for i in insts), default=now_boot() + interval)
            pause = min(p.poll, interval / 4) if failed else next_due - now_boot()
            self._stop.wait(max(0.02, pause))


def _create_whole_on_local_disk(storage: Storage, rel: str, data: bytes) -> bool:
    """Create the lock file ``rel`` so that nobody ever sees it empty, on a local disk: written and
    synced under a temporary name in ``.ocigc/`` (not in the lock directory, where every name is a
    lock), then hard-linked into place (a link fails when the name exists, as ``O_EXCL`` does). A
    process killed between creating a file and writing it would leave an empty lock file, held by
    nobody anyone can name until it is stale (TTL). False where this does not apply or links are
    not supported: the caller creates the file in place."""
    if not (isinstance(storage, StagesTemp) and storage.is_local_disk):
        return False
    path = storage.local_path(rel)
    if path is None:
        return False
    tmp = path.parent.parent / f".lock-{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return False
    try:
        write_and_close(fd, data, path)  # ENOSPC, EIO: the one line names the lock file
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        except OSError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def hold_for(handle: LockHandle | None) -> Callable[[], AbstractContextManager[object]] | None:
    """The ``hold=`` argument for ``update_index``: the handle's short exclusive hold, if any."""
    return handle.exclusive_hold if handle is not None else None
