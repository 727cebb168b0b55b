"""Which way a layout on a mounted bucket is reached: through the mount, or through the bucket's API.

``--via auto|mount|api`` (``OCIGC_VIA`` for cron; default ``auto``) decides for every path on a FUSE
mount of a bucket (s3fs, goofys, rclone, mountpoint-s3):

* ``mount``: files through the mount, the lock-file protocol (as before ``--via`` existed);
* ``api``: the bucket behind the mount (``ocigc.storage.behind``) through its S3 API, with the
  endpoint and credentials the mount uses: lease objects, compare-and-swap of ``index.json``,
  listings with sizes, batch deletes, direct uploads. A bucket that cannot be found is an error;
* ``auto``: ``api`` when the bucket is found *and* answers conditional writes (the probe of
  ``s3://``), else ``mount``. A bucket that cannot be found falls back silently (``--verbose`` and
  ``ocigc doctor`` say why); one whose store ignores conditional requests, or refuses the mount's
  credentials, falls back with one ``warning:`` line.

Paths that are not on a FUSE mount of a bucket are plain directories and never affected. Each
decision is a ``Route``; ``routes()`` lists those of this process (``--verbose`` prints them as they
are made, ``--json`` output carries them as ``"via"``). What a reader through the mount sees of
writes made through the API, and the other way round: docs/locking.md, "Two ways to one bucket".
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ocigc.errors import OcigcError, UsageError
from ocigc.storage.base import OpCounter, Storage
from ocigc.storage.local import LocalStorage

if TYPE_CHECKING:
    from ocigc.storage.behind import BucketBehind

VIA_ENV = "OCIGC_VIA"
AUTO, MOUNT, API = "auto", "mount", "api"
VIA_CHOICES = (AUTO, MOUNT, API)

#: What a file written through an s3fs mount carries and s3fs shows as its mode: a regular file,
#: rw-r--r-- (an object without it shows as rw-r-----, unreadable to other users of the mount).
S3FS_FILE_METADATA = {"mode": str(0o100644)}


class ConditionalWritesIgnored(UserWarning):
    """``auto`` fell back to the mount: the store behind it does not honour conditional requests."""


@dataclass(frozen=True)
class Route:
    """How one path on a FUSE mount of a bucket is reached, and why."""

    path: str
    #: What was asked: auto, mount or api.
    requested: str
    #: What is used: "mount" or "api".
    used: str
    mount_point: str
    #: The bucket behind the mount (None when it could not be told).
    bucket: BucketBehind | None
    #: One line: why this way (the reason a bucket could not be found, the probe's answer, ...).
    reason: str

    def describe(self) -> str:
        target = f" -> {self.bucket.s3_url()}" if self.bucket is not None and self.used == API else ""
        return f"via {self.used} ({self.requested}): {self.path}{target}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "requested": self.requested, "used": self.used, "mount_point": self.mount_point,
                "bucket": self.bucket.s3_url() if self.bucket is not None else None, "reason": self.reason}


_setting: str | None = None
_routes: dict[tuple[str, str], Route] = {}
_mu = threading.Lock()
_listener: Callable[[Route], None] | None = None


def check_via(value: str, where: str = "--via") -> str:
    v = (value or AUTO).strip().lower()
    if v not in VIA_CHOICES:
        raise UsageError(f"{where}: {value!r} is not one of {', '.join(VIA_CHOICES)}")
    return v


def set_via(value: str | None) -> None:
    """The CLI's ``--via`` (None: ``OCIGC_VIA``, else auto)."""
    global _setting
    _setting = check_via(value) if value else None


def via_setting() -> str:
    if _setting is not None:
        return _setting
    return check_via(os.environ.get(VIA_ENV) or AUTO, VIA_ENV)


def on_route(listener: Callable[[Route], None] | None) -> None:
    """Call ``listener`` with every new route (the CLI's ``--verbose``)."""
    global _listener
    _listener = listener


def routes() -> list[Route]:
    """The routes this process took, in order."""
    with _mu:
        return list(_routes.values())


def reset() -> None:
    """Forget routes and the setting (tests)."""
    global _setting
    with _mu:
        _routes.clear()
    _setting = None


def _record(route: Route) -> None:
    with _mu:
        key = (route.mount_point, route.used)
        new = key not in _routes
        if new:
            _routes[key] = route
    if new and _listener is not None:
        _listener(route)


def bucket_mount_of(path: str) -> str | None:
    """The mount point when ``path`` is on a FUSE mount of a bucket (or another FUSE file system), else None."""
    from ocigc.doctor.mounts import ADAPTER_BINARIES, FUSE_OTHER, identify_adapter
    from ocigc.storage.mounts import find_mount, parse_mountinfo

    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            entries = parse_mountinfo(f.read())
    except OSError:
        return None
    mount = find_mount(entries, os.path.realpath(path or "."))
    if mount is None:
        return None
    adapter = identify_adapter(mount)
    return mount.mount_point if adapter in ADAPTER_BINARIES or adapter == FUSE_OTHER else None


def open_local_path(location: str, counter: OpCounter | None = None) -> Storage:
    """A Storage for a local path: the directory itself, or, on a mounted bucket, what ``--via`` picks."""
    path = location or "."
    mount_point = bucket_mount_of(path)
    if mount_point is None:
        return LocalStorage(path, counter)
    requested = via_setting()
    if requested == MOUNT:
        _record(Route(path, requested, MOUNT, mount_point, None, f"{VIA_ENV}/--via mount"))
        return LocalStorage(path, counter)
    storage, route = _through_api(path, mount_point, requested, counter)
    _record(route)
    return storage if storage is not None else LocalStorage(path, counter)


def route_for(path: str, mount_point: str, behind: BucketBehind | str, requested: str | None = None) -> Route:
    """The route ``--via`` (``requested``, default the setting) takes for ``path`` on a bucket mount,
    with the bucket behind it as already found (``ocigc doctor``). Probes conditional writes."""
    requested = requested or via_setting()
    if requested == MOUNT:
        return Route(path, requested, MOUNT, mount_point, None, f"{VIA_ENV}/--via mount")
    try:
        return _through_api(path, mount_point, requested, None, behind)[1]
    except UsageError as e:
        return Route(path, requested, MOUNT, mount_point, None, f"refused: {e}")


def _through_api(path: str, mount_point: str, requested: str, counter: OpCounter | None,
                 behind: BucketBehind | str | None = None) -> tuple[Storage | None, Route]:
    """The bucket's API behind ``path``, or (None, why not) when ``auto`` falls back to the mount."""
    from ocigc.storage.behind import find_bucket_behind

    if behind is None:
        behind = find_bucket_behind(path)
    if isinstance(behind, str):
        if requested == API:
            raise UsageError(f"{path}: --via api: cannot reach the bucket behind the mount: {behind}")
        return None, Route(path, requested, MOUNT, mount_point, None, f"bucket not found: {behind}")
    try:
        from ocigc.storage.s3 import BehindMountStorage
        from ocigc.storage.s3client import ConditionalWritesWarning, behind_bucket
    except ImportError:  # pragma: no cover - depends on the optional extra
        why = "the s3 backend is not installed (pip install 'ocigc[s3]')"
        if requested == API:
            raise UsageError(f"{path}: --via api: {why}") from None
        return None, Route(path, requested, MOUNT, mount_point, behind, why)
    try:
        bucket = behind_bucket(behind)
    except OcigcError as e:  # a client that cannot be made (a profile that is not there)
        if requested == API:
            raise UsageError(f"{path}: --via api: {e}") from None
        warnings.warn(f"{path}: cannot reach the bucket behind the mount ({e}); going through the mount",
                      ConditionalWritesIgnored, stacklevel=2)
        return None, Route(path, requested, MOUNT, mount_point, behind, f"no client: {e}")
    metadata = S3FS_FILE_METADATA if behind.adapter == "s3fs" else None
    storage = BehindMountStorage(bucket, behind.key_prefix, counter, path, metadata)
    if requested == API:  # the user's choice: without conditional writes, the lock-file protocol on the API
        storage.conditional_writes()
        return storage, Route(path, requested, API, mount_point, behind, bucket.probe_reason or "as asked")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditionalWritesWarning)
        ok = storage.conditional_writes()
    if ok:
        return storage, Route(path, requested, API, mount_point, behind, bucket.probe_reason)
    why = bucket.probe_reason
    warnings.warn(f"{path}: the bucket behind the mount ({behind.s3_url()}) does not answer conditional writes "
                  f"as needed ({why}); going through the mount (lock-file protocol)", ConditionalWritesIgnored,
                  stacklevel=2)
    return None, Route(path, requested, MOUNT, mount_point, behind, f"conditional writes unavailable: {why}")


__all__ = ["API", "AUTO", "MOUNT", "VIA_CHOICES", "VIA_ENV", "Route", "bucket_mount_of", "on_route",
           "open_local_path", "route_for", "routes", "set_via", "via_setting"]
