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

Native mode (a store whose conditional writes passed the probe: ``s3://`` on AWS, MinIO, moto):
an exclusive lock is one *lease object* per scope, ``<scope>.X.lease``, created with
``If-None-Match: *`` (exactly one creator wins), renewed with ``If-Match: <our ETag>`` (a 412 means
the lease was taken over: LockLost), taken over when stale with ``If-Match: <the ETag seen>``
(exactly one breaker wins; the body's ``epoch`` goes up) and released with a conditional delete
(never a successor's lease). Shared holders keep their unique files; an exclusive holder drains
them behind its lease as above. Staleness of a lease is judged as for a file, with the observed
age counted per ETag (a live holder renews every ``ttl/3``). See ``LeaseHandle``.

On a FUSE mount of a bucket there is no atomic create across hosts, so the mutual exclusion is
as good as its assumptions: ``close()`` returns after the upload, a listing shows every write
that completed before it began, the settle delay exceeds the cross-host visibility delay, no
holder pauses longer than the fence margin, clocks tick at the same rate (and differ by less than
``max_skew`` for the expiry shortcut). See ``docs/locking.md``.

This module never prints: waiting is reported through ``on_wait``; errors are exceptions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from ocigc import __version__
from ocigc.errors import LockBusy, LockLost, OcigcError
from ocigc.jsonload import load_json
from ocigc.layout.journal import write_record
from ocigc.layout.layout import CONTROL_DIR, Layout
from ocigc.storage.base import ConditionalStorage, HasSettleHint, PreconditionFailed, conditional
from ocigc.storage.mounts import LOCAL_FSTYPES, fs_type

LOCK_DIR = f"{CONTROL_DIR}/locks"
#: Largest lock file read (ours are under 1 KiB); a larger one is reported, never parsed.
LOCK_MAX_BYTES = 64 * 1024
SCOPE_REPO = "repo"
SCOPE_INDEX = "index"
SHARED, EXCLUSIVE = "S", "X"
UNKNOWN_MODE = "?"
#: Environment variable naming lock owners (comma-separated) whose locks a process treats as its own.
INHERIT_ENV = "OCIGC_LOCK_INHERIT"

Mode = Literal["shared", "exclusive"]

class LockError(OcigcError):
    """The lock protocol cannot work here (our own lock file is not visible, unreadable, ...)."""


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
def _env_float(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise LockError(f"environment variable {name}={raw!r}: not a number of seconds") from None
    if value < 0:
        raise LockError(f"environment variable {name}={raw!r}: must not be negative")
    return value


@dataclass(frozen=True)
class LockParams:
    """Timing of the protocol. ``None`` fields are derived (see ``resolve``).

    Defaults (docs/locking.md explains them): TTL 15 min, refresh every TTL/3, settle 2 s on a
    network or FUSE file system (0.02 s on a local disk, 0.1 s on 9p/virtiofs), back-off
    U(1 s, 5 s) doubling up to 60 s, assumed clock skew 10 min, fence margin max(2 x settle,
    TTL/4), drain poll 1 s, and the short exclusive hold waits up to 5 min (or ``--lock-wait`` when longer).
    """

    ttl: float = 900.0
    refresh: float | None = None
    settle: float | None = None
    backoff_min: float = 1.0
    backoff_max: float = 5.0
    backoff_cap: float = 60.0
    max_skew: float = 600.0
    poll: float = 1.0
    fence_margin: float | None = None
    hold_wait: float = 300.0
    #: Overrides the host identity (tests simulate two hosts on one machine with it). When set,
    #: the dead-process shortcut only applies between processes that carry the same value.
    host_id: str | None = None

    ENV: ClassVar[dict[str, str]] = {
        "ttl": "OCIGC_LOCK_TTL", "refresh": "OCIGC_LOCK_REFRESH", "settle": "OCIGC_LOCK_SETTLE",
        "backoff_min": "OCIGC_LOCK_BACKOFF_MIN", "backoff_max": "OCIGC_LOCK_BACKOFF_MAX",
        "backoff_cap": "OCIGC_LOCK_BACKOFF_CAP", "max_skew": "OCIGC_LOCK_MAX_SKEW", "poll": "OCIGC_LOCK_POLL",
        "fence_margin": "OCIGC_LOCK_FENCE_MARGIN", "hold_wait": "OCIGC_LOCK_HOLD_WAIT",
    }

    @classmethod
    def from_env(cls, base: LockParams | None = None) -> LockParams:
        """``base`` (or the defaults) with every ``OCIGC_LOCK_*`` variable that is set applied."""
        params = base or cls()
        changes: dict[str, Any] = {}
        for attr, var in cls.ENV.items():
            value = _env_float(var)
            if value is not None:
                changes[attr] = value
        host = os.environ.get("OCIGC_LOCK_HOST_ID")
        if host:
            changes["host_id"] = host
        return replace(params, **changes) if changes else params

    def resolve(self, layout: Layout | None = None) -> LockParams:
        """Fill the derived fields; the settle default depends on the file system of ``layout``."""
        if self.ttl <= 0:
            raise LockError(f"lock TTL must be positive, got {self.ttl:g}s")
        settle = self.settle
        if settle is None:
            settle = default_settle(layout)
        refresh = self.refresh if self.refresh is not None else self.ttl / 3
        margin = self.fence_margin if self.fence_margin is not None else max(2 * settle, self.ttl / 4)
        if refresh >= self.ttl - margin:
            raise LockError(f"lock refresh interval {refresh:g}s must be shorter than TTL {self.ttl:g}s minus "
                            f"the fence margin {margin:g}s")
        return replace(self, settle=settle, refresh=refresh, fence_margin=margin,
                       backoff_max=max(self.backoff_max, self.backoff_min))

    @property
    def stale_after(self) -> float:
        """Observed age after which a lock file is stale (a live holder renames every ``refresh``)."""
        return self.ttl + (self.settle or 0.0) + self.poll


#: Local file systems that another kernel sees too (a VM's host through 9p or virtiofs), whose
#: caches can delay what the other side sees: a longer settle than on a disk of this kernel.
HOST_SHARED_FSTYPES = frozenset({"9p", "virtiofs"})


def default_settle(layout: Layout | None) -> float:
    """2 s on FUSE and network file systems (cross-host visibility); 0.02 s on a disk of this kernel,
    whose listings show every completed write at once (the settle only has to outlast the other
    process's write call); 0.1 s on 9p/virtiofs; what the storage says (``settle_hint``) for a
    native object store with consistent listings."""
    if layout is not None and isinstance(layout.storage, HasSettleHint):
        return float(layout.storage.settle_hint)
    path = layout.storage.local_path("") if layout is not None else None
    if path is None:
        return 2.0
    kind = fs_type(str(path))
    if kind is not None and kind in LOCAL_FSTYPES:
        return 0.1 if kind in HOST_SHARED_FSTYPES else 0.02
    return 2.0


# --------------------------------------------------------------------------------------------
# Identity and clocks
# --------------------------------------------------------------------------------------------
def now_boot() -> float:
    """A clock that keeps running during suspend (CLOCK_BOOTTIME on Linux)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    if clock is not None:
        return time.clock_gettime(clock)
    return time.monotonic()


def _read_first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def pid_starttime(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (guards against PID reuse); None when the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw.rpartition(")")[2].split()
    if not rest or rest[0] in ("Z", "X"):
        return None
    try:
        return int(rest[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class HostIdentity:
    host: str
    host_id: str
    boot_id: str
    pidns: int

    @classmethod
    def current(cls, override: str | None = None) -> HostIdentity:
        boot_id = _read_first_line("/proc/sys/kernel/random/boot_id")
        pidns = _pidns()
        host_id = override or hashlib.sha256(f"{boot_id}|{pidns}".encode()).hexdigest()[:32]
        return cls(socket.gethostname(), host_id, boot_id, pidns)


# --------------------------------------------------------------------------------------------
# Lock files
# --------------------------------------------------------------------------------------------
def lock_name(scope: str, mode: str, owner: str, gen: int) -> str:
    return f"{scope}~{mode}~{owner}~{gen:08d}.json"


LEASE_SUFFIX = ".X.lease"


def lease_name(scope: str) -> str:
    """The one lease object of an exclusive ``scope`` in native mode (``repo.X.lease``)."""
    return f"{scope}{LEASE_SUFFIX}"


def is_lease(name: str) -> bool:
    return name.endswith(LEASE_SUFFIX) and name[:-len(LEASE_SUFFIX)] in (SCOPE_REPO, SCOPE_INDEX)


@dataclass
class LockInfo:
    """One lock file as seen in a listing. ``body`` is None when the file is empty or unreadable."""

    name: str
    scope: str
    mode: str
    owner: str
    gen: int
    body: dict[str, Any] | None = None
    problem: str | None = None
    #: Seconds this process has seen this name (0 on first sight); for a lease, this ETag of it.
    observed: float = 0.0
    #: A lease object's ETag (or content hash) when read.
    etag: str | None = None

    @classmethod
    def from_name(cls, name: str) -> LockInfo:
        if is_lease(name):  # owner and generation come from the body
            return cls(name, name[:-len(LEASE_SUFFIX)], EXCLUSIVE, "", 0)
        stem = name[:-5] if name.endswith(".json") else name
        parts = stem.split("~")
        if len(parts) == 4 and parts[0] in (SCOPE_REPO, SCOPE_INDEX) and parts[1] in (SHARED, EXCLUSIVE):
            try:
                gen = int(parts[3])
            except ValueError:
                gen = -1
            if gen >= 0 and name.endswith(".json"):
                return cls(name, parts[0], parts[1], parts[2], gen)
        # A name we did not write: held (conflicting with everything) until it is stale.
        return cls(name, SCOPE_REPO, UNKNOWN_MODE, name, 0, problem="unrecognised lock file name")

    # --- what the body says ------------------------------------------------------------------
    def _get(self, key: str) -> Any:
        return self.body.get(key) if self.body else None

    @property
    def host(self) -> str:
        return str(self._get("host") or "?")

    @property
    def pid(self) -> int | None:
        pid = self._get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def command(self) -> str:
        return str(self._get("command") or "")

    @property
    def created(self) -> float | None:
        v = self._get("created_unix")
        return float(v) if isinstance(v, int | float) else None

    @property
    def acquired(self) -> float | None:
        v = self._get("acquired_unix")
        return float(v) if isinstance(v, int | float) else self.created

    @property
    def expires(self) -> float | None:
        v = self._get("expires_unix")
        return float(v) if isinstance(v, int | float) else None

    @property
    def mode_name(self) -> str:
        return {SHARED: "shared", EXCLUSIVE: "exclusive"}.get(self.mode, "unknown")

    def conflicts_with(self, mode: str) -> bool:
        """Does this lock (same scope) conflict with an acquirer of ``mode``?"""
        return not (mode == SHARED and self.mode == SHARED)

    def describe(self, now_wall: float | None = None) -> str:
        now_wall = now_wall if now_wall is not None else time.time()
        if self.body is None:
            return f"{self.name} ({self.problem or 'empty or unreadable'}, seen for {self.observed:.0f}s)"
        age = f"{max(0.0, now_wall - self.acquired):.0f}s" if self.acquired is not None else "?"
        return (f"{self.mode_name} {self.scope} lock of host={self.host} pid={self.pid} "
                f"command={self.command!r} age={age} owner={self.owner}")

    def to_json(self, now_wall: float | None = None) -> dict[str, Any]:
        now_wall = now_wall if now_wall is not None else time.time()
        return {
            "name": self.name, "scope": self.scope, "mode": self.mode_name, "owner": self.owner, "gen": self.gen,
            "host": self.host, "pid": self.pid, "command": self.command,
            "age_s": None if self.acquired is None else round(now_wall - self.acquired, 3),
            "expires_in_s": None if self.expires is None else round(self.expires - now_wall, 3),
            "observed_s": round(self.observed, 3), "problem": self.problem,
        }


@dataclass
class StaleVerdict:
    stale: bool
    reason: str = ""


class LockDir:
    """Reads ``.ocigc/locks/`` and judges staleness; remembers when it first saw each name."""

    def __init__(self, layout: Layout, params: LockParams, identity: HostIdentity | None = None) -> None:
        self.layout = layout
        self.params = params
        self.identity = identity or HostIdentity.current(params.host_id)
        self._first_seen: dict[str, float] = {}
        self._bodies: dict[str, dict[str, Any]] = {}
        self._mu = threading.Lock()

    def where(self, name: str = "") -> str:
        return self.layout.where(f"{LOCK_DIR}/{name}" if name else LOCK_DIR)

    def names(self) -> list[str]:
        try:
            entries = self.layout.storage.list_dir(LOCK_DIR)
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if not e.is_dir)

    def scan(self, scope: str | None = None) -> list[LockInfo]:
        """List and read every lock file (of ``scope``); bodies are cached by name (written once).

        A lease object is rewritten in place: it is read at every scan and its observed age is
        counted per ETag (per content where the store has no ETags)."""
        names = self.names()
        t = now_boot()
        out: list[LockInfo] = []
        with self._mu:
            seen = set(names)
            for gone in [n for n in self._first_seen if n.split("#", 1)[0] not in seen]:
                del self._first_seen[gone]
                self._bodies.pop(gone, None)
            for name in names:
                if not is_lease(name):
                    self._first_seen.setdefault(name, t)
        for name in names:
            info = LockInfo.from_name(name)
            if scope is not None and info.scope != scope and info.mode != UNKNOWN_MODE:
                continue
            if is_lease(name):
                if not self._read_lease(info, t):
                    continue  # released meanwhile
            else:
                info.observed = t - self._first_seen.get(name, t)
                if info.mode != UNKNOWN_MODE:
                    self._read_body(info)
            out.append(info)
        return out

    def lease(self, name: str) -> LockInfo | None:
        """The lease object ``name`` as it is now (None when there is none)."""
        info = LockInfo.from_name(name)
        return info if self._read_lease(info, now_boot()) else None

    def _read_lease(self, info: LockInfo, t: float) -> bool:
        """Read a lease object (never cached); False when it is gone."""
        rel = f"{LOCK_DIR}/{info.name}"
        storage = self.layout.storage
        try:
            if isinstance(storage, ConditionalStorage):
                raw, etag = storage.read_with_etag(rel)
            else:
                raw = storage.read_bytes(rel, limit=LOCK_MAX_BYTES)
                etag = hashlib.sha256(raw).hexdigest()
        except FileNotFoundError:
            return False
        except OSError as e:
            info.problem = f"unreadable ({e.strerror or e})"
            return True
        info.etag = str(etag)
        key = f"{info.name}#{info.etag}"
        with self._mu:
            for old in [k for k in self._first_seen if k.startswith(f"{info.name}#") and k != key]:
                del self._first_seen[old]
            self._first_seen.setdefault(key, t)
            info.observed = t - self._first_seen[key]
        try:
            body = load_json(raw, limit=LOCK_MAX_BYTES) if raw.strip() else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            info.problem = "empty" if not raw.strip() else "invalid JSON"
            return True
        info.body = body
        info.owner = str(body.get("owner_id") or "")
        gen = body.get("gen")
        info.gen = gen if isinstance(gen, int) else 0
        return True

    def _read_body(self, info: LockInfo) -> None:
        cached = self._bodies.get(info.name)
        if cached is not None:
            info.body = cached
            return
        try:
            raw = self.layout.storage.read_bytes(f"{LOCK_DIR}/{info.name}", limit=LOCK_MAX_BYTES)
        except FileNotFoundError:
            info.problem = "vanished while being read"
            return
        except OSError as e:
            info.problem = f"unreadable ({e.strerror or e})"
            return
        if not raw.strip():
            info.problem = "empty"
            return
        try:
            body = load_json(raw, limit=LOCK_MAX_BYTES)
        except ValueError as e:
            info.problem = str(e)
            return
        if not isinstance(body, dict):
            info.problem = "not a JSON object"
            return
        info.body = body
        with self._mu:
            self._bodies[info.name] = body

    def verdict(self, info: LockInfo, now_wall: float | None = None) -> StaleVerdict:
        """Stale by observed age, by clearly past expiry, or by a dead process on this host."""
        p = self.params
        if info.observed >= p.stale_after:
            return StaleVerdict(True, f"unchanged for {info.observed:.0f}s (observed; TTL {p.ttl:g}s)")
        if info.body is None:
            return StaleVerdict(False)
        now_wall = now_wall if now_wall is not None else time.time()
        exp = info.expires
        if exp is not None and exp + p.max_skew < now_wall:
            return StaleVerdict(True, f"expired {now_wall - exp:.0f}s ago (beyond the {p.max_skew:g}s skew allowance)")
        if self._dead_here(info):
            return StaleVerdict(True, f"process {info.pid} on this host is gone")
        return StaleVerdict(False)

    def _dead_here(self, info: LockInfo) -> bool:
        body = info.body or {}
        me = self.identity
        if body.get("host_id") != me.host_id or body.get("boot_id") != me.boot_id or body.get("pidns") != me.pidns:
            return False
        pid = info.pid
        if pid is None or pid <= 0:
            return False
        start = pid_starttime(pid)
        return start is None or start != body.get("pid_starttime")

    def break_lock(self, info: LockInfo, reason: str, *, breaker: str, run: str | None = None,
                   forced: bool = False) -> bool:
        """Journal the break, then remove exactly that file. True when we removed it."""
        # One record per break (a unique name; ``run`` goes into the body).
        write_record(self.layout, "lock-break", {
            "lock": info.name, "scope": info.scope, "mode": info.mode_name, "owner": info.owner,
            "holder": info.body, "reason": reason, "forced": forced, "breaker": breaker, "run": run,
        })
        rel = f"{LOCK_DIR}/{info.name}"
        store = conditional(self.layout.storage) if is_lease(info.name) and info.etag else None
        if store is not None and info.etag is not None:
            removed = store.delete_if_match(rel, info.etag)  # never a lease renewed or taken over since
        else:
            removed = self.layout.storage.remove(rel)
        with self._mu:
            self._first_seen.pop(info.name, None)
            self._bodies.pop(info.name, None)
        return removed


# --------------------------------------------------------------------------------------------
# Holding
# --------------------------------------------------------------------------------------------
@dataclass
class _Instance:
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
        self._held: dict[str, _Instance] = {}
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

    def _acquire_instance(self, scope: str, mode: str, wait: float) -> _Instance:
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

    def _settle_and_check(self, inst: _Instance, scope: str, mode: str, deadline: float) -> list[LockInfo] | None:
        """Wait the settle delay and list again: None when we hold the lock, else the live conflicts."""
        settle = self.params.settle or 0.0
        time.sleep(settle)
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

    def _drain(self, inst: _Instance, scope: str, deadline: float) -> bool:
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
        while True:
            locks = self.dir.scan(scope)
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
        waited = f"after waiting {self._waiting:g}s" if self._waiting else "(--lock-wait 0)"
        return f"{self.dir.where()}: lock busy {waited}: held by {holders}{more}"

    def _whoami(self) -> str:
        return f"{self.identity.host} pid={os.getpid()} owner={self.owner} command={self.command!r}"

    # --- files ---------------------------------------------------------------------------------
    def _body(self, inst: _Instance, prev: str | None) -> bytes:
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

    def _write_new(self, scope: str, mode: str) -> _Instance:
        inst = _Instance(scope, mode, 1, time.time(), now_boot())
        self._write_gen(inst, None)
        return inst

    def _write_gen(self, inst: _Instance, prev: str | None) -> None:
        inst.name = lock_name(inst.scope, inst.mode, self.owner, inst.gen)
        rel = f"{LOCK_DIR}/{inst.name}"
        data = self._body(inst, prev)
        storage = self.layout.storage
        storage.makedirs(LOCK_DIR)
        storage.write_new(rel, data)
        try:
            back = storage.read_bytes(rel, limit=LOCK_MAX_BYTES)
        except OSError as e:
            back = f"<{e}>".encode()
        if back != data:
            with contextlib.suppress(OSError):
                storage.remove(rel)
            raise LockError(f"{self.dir.where(inst.name)}: read back differs from what we wrote "
                            f"({len(back)} of {len(data)} bytes); the mount did not store our lock file")

    def _delete(self, inst: _Instance) -> None:
        with contextlib.suppress(OSError):
            self.layout.storage.remove(f"{LOCK_DIR}/{inst.name}")

    def _register(self, inst: _Instance) -> _Instance:
        with self._mu:
            self._held[inst.scope] = inst
        return inst

    def _drop(self, inst: _Instance) -> None:
        with self._mu:
            if self._held.get(inst.scope) is inst:
                del self._held[inst.scope]
        with inst.mu:
            inst.dropped = True
            self._delete(inst)

    # --- refresh -------------------------------------------------------------------------------
    def _refresh_if_due(self, inst: _Instance) -> None:
        if now_boot() - inst.confirmed >= (self.params.refresh or self.params.ttl / 3):
            self._refresh(inst)

    def _refresh(self, inst: _Instance) -> None:
        """Write the next generation, confirm the current one is still there, delete it."""
        with inst.mu:
            if inst.dropped:
                return
            started = now_boot()
            old = inst.name
            if old not in self.dir.names():
                raise LockLost(f"{self.dir.where(old)}: our lock file is gone (broken by another process); "
                               "stopped before the next destructive step")
            new = _Instance(inst.scope, inst.mode, inst.gen + 1, inst.acquired_unix, started)
            self._write_gen(new, old)
            if old not in self.dir.names():
                self._delete(new)
                raise LockLost(f"{self.dir.where(old)}: our lock file vanished during refresh (broken by another "
                               "process); stopped before the next destructive step")
            self.layout.storage.remove(f"{LOCK_DIR}/{old}")
            inst.gen, inst.name, inst.confirmed = new.gen, new.name, started

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

    def __repr__(self) -> str:
        return f"LeaseHandle({self.layout.location!r}, mode={self.mode!r}, owner={self.owner[:8]})"

    # --- acquisition ---------------------------------------------------------------------------
    def _acquire_instance(self, scope: str, mode: str, wait: float) -> _Instance:
        if mode != EXCLUSIVE:
            return super()._acquire_instance(scope, mode, wait)
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
                try:
                    live = self._live_conflicts(scope, EXCLUSIVE)
                    if live and all(c.mode == SHARED for c in live):
                        live = [] if self._drain(inst, scope, deadline) else self._live_conflicts(scope, EXCLUSIVE)
                except BaseException:
                    self._delete(inst)
                    raise
                if not live:
                    return self._register(inst)
                self._delete(inst)
                blocking = live
            self._back_off(blocking, deadline, backoff)
            backoff = min(backoff * 2, p.backoff_cap)

    def _take_lease(self, scope: str) -> _Instance | LockInfo:
        """Create the lease, or take over a stale one; else the live holder."""
        name = lease_name(scope)
        rel = f"{LOCK_DIR}/{name}"
        holder: LockInfo | None = None
        for _ in range(8):  # the lease may vanish or change between our create and our read
            inst = _Instance(scope, EXCLUSIVE, 1, time.time(), now_boot(), name=name, epoch=1)
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

    def _lease_body(self, inst: _Instance, prev: str | None) -> bytes:
        body = json.loads(self._body(inst, prev))
        body["epoch"] = inst.epoch
        body["lease"] = True
        return json.dumps(body, indent=1).encode()

    # --- refresh and release -------------------------------------------------------------------
    def _refresh(self, inst: _Instance) -> None:
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
            nxt = _Instance(inst.scope, inst.mode, inst.gen + 1, inst.acquired_unix, started, name=inst.name,
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

    def _delete(self, inst: _Instance) -> None:
        if not is_lease(inst.name):
            super()._delete(inst)
            return
        if inst.borrowed or inst.etag is None:
            return
        with contextlib.suppress(OSError):
            self.store.delete_if_match(f"{LOCK_DIR}/{inst.name}", inst.etag)


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else "?"


def acquire(layout: Layout, mode: Mode, *, wait: float = 0.0, command: str = "",
            params: LockParams | None = None, run: str | None = None,
            on_wait: Callable[[list[LockInfo]], None] | None = None) -> LockHandle:
    """Take the layout's ``repo`` lock in ``mode``; LockBusy (exit 75) names the holders when ``wait`` runs out.

    On a store with conditional writes (probed at first use) the handle is a ``LeaseHandle``.

    ``params`` defaults to ``LockParams.from_env()`` (``OCIGC_LOCK_*`` variables). The handle is a
    context manager; a lease is refreshed in a background thread until ``release``.
    """
    store = conditional(layout.storage)
    if store is not None:  # native mode: lease objects (LeaseHandle)
        return LeaseHandle(layout, store, command=command, params=params, run=run, on_wait=on_wait).acquire(mode, wait)
    handle = LockHandle(layout, command=command, params=params, run=run, on_wait=on_wait)
    return handle.acquire(mode, wait)


def hold_for(handle: LockHandle | None) -> Callable[[], AbstractContextManager[object]] | None:
    """The ``hold=`` argument for ``update_index``: the handle's short exclusive hold, if any."""
    return handle.exclusive_hold if handle is not None else None


def list_locks(layout: Layout, params: LockParams | None = None) -> list[tuple[LockInfo, StaleVerdict]]:
    """Every lock file of a layout with a staleness verdict (observed age is not known from one look)."""
    resolved = LockParams.from_env(params).resolve(layout)
    d = LockDir(layout, resolved)
    now_wall = time.time()
    return [(info, d.verdict(info, now_wall)) for info in d.scan()]


def break_locks(layout: Layout, *, owner: str | None = None, force: bool = False, breaker: str = "",
                params: LockParams | None = None, run: str | None = None,
                ) -> tuple[list[tuple[LockInfo, str]], list[LockInfo]]:
    """Break stale locks (of ``owner``, or all); live ones only with ``force``.

    Returns (broken with reason, refused as live). Every break is journaled first.
    """
    resolved = LockParams.from_env(params).resolve(layout)
    d = LockDir(layout, resolved)
    now_wall = time.time()
    broken: list[tuple[LockInfo, str]] = []
    refused: list[LockInfo] = []
    for info in d.scan():
        if owner is not None and not (info.owner == owner or info.owner.startswith(owner) or info.name == owner):
            continue
        v = d.verdict(info, now_wall)
        if v.stale or force:
            reason = v.reason if v.stale else "forced by the operator (lock was live)"
            d.break_lock(info, reason, breaker=breaker or f"{socket.gethostname()} pid={os.getpid()}", run=run,
                         forced=not v.stale)
            broken.append((info, reason))
        else:
            refused.append(info)
    return broken, refused


__all__ = [
    "EXCLUSIVE", "INHERIT_ENV", "LOCK_DIR", "SCOPE_INDEX", "SCOPE_REPO", "SHARED", "AcquireStats", "HostIdentity",
    "LeaseHandle", "LockDir",
    "LockError", "LockHandle", "LockInfo", "LockParams", "StaleVerdict", "acquire", "break_locks", "default_settle",
    "fs_type", "hold_for", "list_locks", "now_boot",
]
