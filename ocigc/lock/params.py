"""Timing of the lock protocol: ``LockParams`` (TTL, refresh, settle, back-off, skew, fence margin;
``OCIGC_LOCK_*`` variables) and the one settle default per file system (``default_settle``), which
``ocigc doctor`` measures caches against. docs/locking.md explains the values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ocigc.errors import OcigcError
from ocigc.layout.layout import Layout
from ocigc.storage.base import HasSettleHint
from ocigc.storage.mounts import LOCAL_FSTYPES, fs_type


class LockError(OcigcError):
    """The lock protocol cannot work here (our own lock file is not visible, unreadable, ...)."""


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
    #: The settle delay of hosts that reach the layout through a mount (the API side's exclusive lock
    #: waits this long before the listing that decides); derived: ``settle`` when set, else the FUSE default.
    mount_settle: float | None = None
    #: Overrides the host identity (tests simulate two hosts on one machine with it). When set,
    #: the dead-process shortcut only applies between processes that carry the same value.
    host_id: str | None = None

    ENV: ClassVar[dict[str, str]] = {
        "ttl": "OCIGC_LOCK_TTL", "refresh": "OCIGC_LOCK_REFRESH", "settle": "OCIGC_LOCK_SETTLE",
        "backoff_min": "OCIGC_LOCK_BACKOFF_MIN", "backoff_max": "OCIGC_LOCK_BACKOFF_MAX",
        "backoff_cap": "OCIGC_LOCK_BACKOFF_CAP", "max_skew": "OCIGC_LOCK_MAX_SKEW", "poll": "OCIGC_LOCK_POLL",
        "fence_margin": "OCIGC_LOCK_FENCE_MARGIN", "hold_wait": "OCIGC_LOCK_HOLD_WAIT",
        "mount_settle": "OCIGC_LOCK_MOUNT_SETTLE",
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
        mount_settle = self.mount_settle if self.mount_settle is not None else (
            self.settle if self.settle is not None else DEFAULT_FUSE_SETTLE)
        return replace(self, settle=settle, refresh=refresh, fence_margin=margin, mount_settle=mount_settle,
                       backoff_max=max(self.backoff_max, self.backoff_min))

    @property
    def stale_after(self) -> float:
        """Observed age after which a lock file is stale (a live holder renames every ``refresh``)."""
        return self.ttl + (self.settle or 0.0) + self.poll


#: The settle on a FUSE or network file system (cross-host visibility) when ``OCIGC_LOCK_SETTLE`` is
#: not set: a cache that can hide another host's files for longer defeats the "create, settle, list
#: again" rule (``ocigc doctor`` measures caches against it).
DEFAULT_FUSE_SETTLE = 2.0
#: The settle on a disk of this kernel, whose listings show every completed write at once (it only
#: has to outlast the other process's write call).
LOCAL_DISK_SETTLE = 0.02
#: The settle on a local file system another kernel shares (``HOST_SHARED_FSTYPES``).
HOST_SHARED_SETTLE = 0.1

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
        return DEFAULT_FUSE_SETTLE
    kind = fs_type(str(path))
    if kind is not None and kind in LOCAL_FSTYPES:
        return HOST_SHARED_SETTLE if kind in HOST_SHARED_FSTYPES else LOCAL_DISK_SETTLE
    return DEFAULT_FUSE_SETTLE
