"""Lock files under ``<layout>/.ocigc/locks/``: their names, this host's identity and clocks, the
bodies as read back (bounded: ``LOCK_MAX_BYTES``), the staleness verdicts, breaking one (journaled),
and listing and breaking them for ``ocigc locks``. The protocol that writes them: ``lock.handle``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ocigc.jsonload import load_json
from ocigc.layout.journal import write_record
from ocigc.layout.layout import CONTROL_DIR, Layout
from ocigc.lock.params import LockParams
from ocigc.storage.base import ConditionalStorage, conditional

LOCK_DIR = f"{CONTROL_DIR}/locks"
#: Largest lock file read (ours are under 1 KiB); a larger one is reported, never parsed.
LOCK_MAX_BYTES = 64 * 1024
SCOPE_REPO = "repo"
SCOPE_INDEX = "index"
SHARED, EXCLUSIVE = "S", "X"
UNKNOWN_MODE = "?"


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
        self.listed: list[str] = []

    def where(self, name: str = "") -> str:
        return self.layout.where(f"{LOCK_DIR}/{name}" if name else LOCK_DIR)

    def names(self) -> list[str]:
        try:
            entries = self.layout.storage.list_dir(LOCK_DIR)
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if not e.is_dir)

    def scan(self, scope: str | None = None, *, read: Callable[[LockInfo], bool] | None = None,
             known: Mapping[str, str] | None = None) -> list[LockInfo]:
        """List and read every lock file (of ``scope``); bodies are cached by name (written once).

        A lease object is rewritten in place: it is read at every scan and its observed age is
        counted per ETag (per content where the store has no ETags). ``read``: which lock files'
        bodies to read (default all; an acquirer needs only those of conflicting locks: on a bucket
        each read is a round trip); ``known``: lease names we hold now, to their owner (not read).
        ``listed`` keeps the names of the last listing."""
        names = self.names()
        self.listed = names
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
                if known is not None and name in known:
                    info.owner = known[name]
                elif not self._read_lease(info, t):
                    continue  # released meanwhile
            else:
                info.observed = t - self._first_seen.get(name, t)
                if info.mode != UNKNOWN_MODE and (read is None or read(info)):
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
