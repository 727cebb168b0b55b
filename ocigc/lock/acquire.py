"""``acquire``: the entry point of the lock protocol. A ``LeaseHandle`` (``lock.lease``) on a store
with conditional writes, a ``LockHandle`` (``lock.handle``) elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

from ocigc.layout.layout import Layout
from ocigc.lock.files import LockInfo
from ocigc.lock.handle import LockHandle, Mode
from ocigc.lock.lease import LeaseHandle
from ocigc.lock.params import LockParams
from ocigc.storage.base import conditional


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
