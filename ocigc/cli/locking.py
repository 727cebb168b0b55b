"""What writing commands share about locks: ``--lock-wait``, a ``locker`` that takes the layout's
lock with a waiting message on stderr, the command line recorded in lock files, and the layouts a
PATH names (``locks``, ``trash``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ocigc.cli._common import Settings
from ocigc.cli.read import layouts_under
from ocigc.errors import UnsafeMount

if TYPE_CHECKING:
    from ocigc.layout.layout import Layout
    from ocigc.lock.files import LockInfo
    from ocigc.lock.handle import LockHandle

LockWaitOpt = Annotated[str, typer.Option(
    "--lock-wait", metavar="DURATION",
    help="How long to wait for a conflicting lock before giving up with exit 75 (0, 30s, 10m).")]
AllowUnsafeMountOpt = Annotated[bool, typer.Option(
    "--allow-unsafe-mount", help="Run even on a mount that 'ocigc doctor' rates unsafe (exit 5 otherwise).")]


#: Set to 1 to accept a mount that doctor rates unsafe without a word (docs/object-storage.md).
ALLOW_UNSAFE_MOUNT_ENV = "OCIGC_ALLOW_UNSAFE_MOUNT"


def check_mounts(paths: Iterable[str], *, refuse: bool) -> None:
    """doctor's cheap mount checks before anything takes a lock (docs/object-storage.md): on a mount
    whose caches make the lock unsafe, ``delete`` and ``sweep`` refuse (``refuse``: exit 5) and the
    other writers say so in a ``warning:`` line, even with --quiet. ``OCIGC_ALLOW_UNSAFE_MOUNT=1``:
    the configuration is known and accepted (no check). A layout that ``--via`` reaches through the
    bucket's API (lease locks, compare-and-swap) does not depend on the mount's caches: not checked."""
    if os.environ.get(ALLOW_UNSAFE_MOUNT_ENV, "").lower() in ("1", "yes", "true"):
        return
    from ocigc.doctor.report import unsafe_mounts

    for report in unsafe_mounts([p for p in paths if not _through_bucket_api(p)]):
        why = "; ".join(f"{f.message}" + (f" (fix: {f.recommended})" if f.recommended else "") for f in report.unsafe)
        message = (f"{report.path}: unsafe mount for ocigc ({report.adapter_label}): {why}; 'ocigc doctor "
                   f"{report.path}' explains")
        if refuse:
            raise UnsafeMount(f"{message}; --allow-unsafe-mount runs anyway")
        typer.echo(f"warning: {message}", err=True)


def _through_bucket_api(path: str) -> bool:
    """True when ``path`` is on a mounted bucket that ``--via`` reaches through the bucket's API."""
    if path.startswith("s3://"):
        return False
    from ocigc.storage.local import LocalStorage
    from ocigc.storage.via import open_local_path

    return not isinstance(open_local_path(path), LocalStorage)


def waiting_reporter(s: Settings, layout: Layout) -> Callable[[list[LockInfo]], None]:
    """An ``on_wait`` callback that says once (on stderr) who we are waiting for."""
    said: set[str] = set()

    def report(holders: list[LockInfo]) -> None:
        if s.quiet:
            return
        new = [h for h in holders if h.owner not in said]
        if not new:
            return
        said.update(h.owner for h in new)
        who = "; ".join(h.describe() for h in new[:3])
        typer.echo(f"{layout.display}: waiting for lock: {who}", err=True)

    return report


def make_locker(s: Settings, wait: float, command: str,
                ) -> Callable[[Layout, Literal["shared", "exclusive"]], AbstractContextManager[LockHandle]]:
    """A ``locker`` for ``ocigc.gc.run.RunOptions``: the layout's lock, waiting up to ``wait`` seconds."""

    def locker(layout: Layout, mode: Literal["shared", "exclusive"]) -> AbstractContextManager[LockHandle]:
        from ocigc.lock.acquire import acquire

        return acquire(layout, mode, wait=wait, command=command, on_wait=waiting_reporter(s, layout))

    return locker


def command_line() -> str:
    return " ".join(["ocigc", *sys.argv[1:]])[:500]


def layouts_at(path: str, jobs: int) -> list[Layout]:
    """The layout at ``path``, or every layout under it."""
    from ocigc.layout.layout import Layout
    from ocigc.storage.open_storage import open_storage

    storage = open_storage(path)
    if storage.stat("oci-layout") is not None:
        return [Layout(storage)]
    return layouts_under(path, jobs)
