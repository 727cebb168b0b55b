"""The storage seam: every file-system operation ocigc performs goes through a ``Storage``.

Paths are relative to the storage's base and use ``/``. A ``Storage`` can hand out a child
rooted at a sub-directory (``child``), so a root of many layouts and each layout share one
operation counter. This module holds the protocol, the optional capabilities (each a small
protocol of its own), ``FileStat``, ``DirEntry``, ``OpCounter`` and the errors; the backends are
``ocigc.storage.local`` (a directory: a local disk or a FUSE mount of a bucket) and
``ocigc.storage.s3`` (native, ``s3://bucket/prefix``), which adds conditional writes
(``ConditionalStorage``), listings with sizes and times (``listing_stats``) and batched removals
(``remove_many``). ``ocigc.storage.open_storage`` picks one for a location string.

On a FUSE mount of a bucket every operation below is a network round trip, so callers list
directories without stat-ing entries where they can and run many small reads in a pool
(``ocigc.parallel``).
"""

from __future__ import annotations

import contextlib
import os
import stat as stat_mod
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ocigc.errors import naming

#: Prefix of every temporary file ocigc writes. Sweep treats older ones as leftovers.
TEMP_PREFIX = ".ocigc-tmp-"


@dataclass(frozen=True, slots=True)
class FileStat:
    size: int
    mtime: float
    is_dir: bool


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    is_dir: bool
    is_symlink: bool = False


class OpCounter:
    """Thread-safe counts of storage operations by kind (list, stat, read, write, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, op: str, n: int = 1) -> None:
        with self._lock:
            self._counts[op] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


#: The process-wide counter used when none is given; benchmarks and tests read it.
GLOBAL_COUNTER = OpCounter()


class Storage(Protocol):
    """What ocigc needs of a place that holds files."""

    counter: OpCounter

    @property
    def url(self) -> str:
        """Where this storage points, for messages (a path or an s3:// URL)."""
        ...

    def child(self, rel: str) -> Storage: ...

    def join(self, rel: str) -> str:
        """The human-readable location of ``rel`` (for error messages)."""
        ...

    def list_dir(self, rel: str = "") -> list[DirEntry]:
        """Entries of a directory, without stat-ing them. FileNotFoundError when missing."""
        ...

    def stat(self, rel: str) -> FileStat | None:
        """Size and mtime, or None when the file does not exist."""
        ...

    def read_bytes(self, rel: str, limit: int | None = None, nofollow: bool = False) -> bytes:
        """The whole file; with ``limit``, at most ``limit + 1`` bytes (so callers can detect excess).

        With ``nofollow``, a symlink as the last component fails (OSError ELOOP)."""
        ...

    def open_read(self, rel: str, nofollow: bool = False) -> BinaryIO: ...

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` as a whole: temp file then rename, or a direct write where rename fails."""
        ...

    def write_new(self, rel: str, data: bytes) -> None:
        """Create ``rel``; FileExistsError if it exists (only as atomic as the file system)."""
        ...

    @contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        """Stream into a temp file, moved to ``rel`` when the block ends without error."""
        ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, rel: str) -> bool:
        """Remove a file; False when it was already gone (idempotent)."""
        ...

    def remove_dir(self, rel: str) -> bool: ...

    def makedirs(self, rel: str) -> None: ...

    def local_path(self, rel: str = "") -> Path | None:
        """The local path of ``rel`` when this storage is a file system, else None."""
        ...


class NotRegularFile(OSError):
    """A path ocigc would read is a FIFO, a device or a socket: refused unread (it could block
    forever or never end)."""


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, name in ((stat_mod.S_ISFIFO, "a FIFO"), (stat_mod.S_ISCHR, "a character device"),
                       (stat_mod.S_ISBLK, "a block device"), (stat_mod.S_ISSOCK, "a socket"),
                       (stat_mod.S_ISDIR, "a directory"), (stat_mod.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


class PreconditionFailed(OSError):
    """A conditional write or delete lost: the object changed (or appeared) since it was read."""


# --- optional capabilities ----------------------------------------------------------------------
# Each is a small protocol of its own; core code asks ``isinstance(storage, Capability)`` (or the
# helper below it) and never probes attribute names. A new backend implements ``Storage`` and any
# of these it can do better than the generic path (docs/design.md, "Code map": where does a change go).


@runtime_checkable
class HasSettleHint(Protocol):
    """A native store that knows how long the lock-file protocol must wait for its listings."""

    settle_hint: float


@runtime_checkable
class SizesObjects(Protocol):
    """The size of one object in one request, and no cache in between (an object store's HEAD):
    what a writer asks before storing a blob. None when there is none (a directory is none)."""

    def object_size(self, rel: str) -> int | None: ...


@runtime_checkable
class RemovesMany(Protocol):
    """Batched removals (S3 ``DeleteObjects``): ``(rel, problem)`` for each that failed."""

    def remove_many(self, rels: list[str]) -> list[tuple[str, str]]: ...


@runtime_checkable
class ListsWithStats(Protocol):
    """Listings that carry each entry's size and time (an object-store listing): no stat per entry."""

    def list_blobs_with_stats(self, rel: str) -> dict[str, FileStat]: ...


@runtime_checkable
class WritesContent(Protocol):
    """A cheaper way to write a content-addressed file than ``open_write`` (no fsync of a temp)."""

    def open_write_content(self, rel: str) -> contextlib.AbstractContextManager[BinaryIO]: ...


@runtime_checkable
class StagesTemp(Protocol):
    """A file system where a writer may fill a temp file by path and publish it by rename."""

    @property
    def is_local_disk(self) -> bool: ...

    def new_temp(self, rel: str) -> tuple[str, Path]: ...

    def publish_temp(self, tmp_rel: str, rel: str) -> None: ...

    def discard_temp(self, tmp_rel: str) -> None: ...


def stager(storage: Storage) -> StagesTemp:
    """``storage`` as a ``StagesTemp``; a TypeError where it is not (callers check first)."""
    if not isinstance(storage, StagesTemp):
        raise TypeError(f"{storage.url}: cannot stage temp files")
    return storage


@runtime_checkable
class ConditionalStorage(Storage, Protocol):
    """Optional capabilities of a store with conditional requests (the native S3 backend).

    Core code asks ``conditional(storage)`` and uses these only when it returns the storage;
    the base ``Storage`` protocol stays as it is."""

    def conditional_writes(self) -> bool:
        """True when the store honours ``If-None-Match``/``If-Match`` (probed at first use)."""
        ...

    def read_with_etag(self, rel: str, limit: int | None = None) -> tuple[bytes, str]:
        """The whole object and its ETag (with ``limit``, at most ``limit + 1`` bytes of it);
        FileNotFoundError when missing."""
        ...

    def put_if_absent(self, rel: str, data: bytes) -> str:
        """Create ``rel``; FileExistsError when it exists. Returns the new ETag."""
        ...

    def put_if_match(self, rel: str, data: bytes, etag: str) -> str:
        """Replace ``rel`` only if its ETag is ``etag``; PreconditionFailed otherwise (FileNotFoundError
        when it is gone). Returns the new ETag."""
        ...

    def delete_if_match(self, rel: str, etag: str) -> bool:
        """Delete ``rel`` only if its ETag is ``etag``; False when it changed or is gone."""
        ...


def conditional(storage: Storage) -> ConditionalStorage | None:
    """``storage`` when it supports conditional writes (probing the store at first use), else None."""
    if isinstance(storage, ConditionalStorage) and storage.conditional_writes():
        return storage
    return None


def listing_stats(storage: Storage, rel: str) -> dict[str, FileStat] | None:
    """Every entry of a directory with its size and mtime from the listing itself, when the storage
    can (an object-store listing carries them: no stat per entry); None otherwise."""
    return storage.list_blobs_with_stats(rel) if isinstance(storage, ListsWithStats) else None


def normalize_rel(rel: str) -> str:
    rel = rel.strip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"path escapes the storage root: {rel!r}")
    return "/".join(parts)


def open_write_content(storage: Storage, rel: str) -> contextlib.AbstractContextManager[BinaryIO]:
    """``storage.open_write_content`` where the storage has it (see ``LocalStorage``), else ``open_write``."""
    return storage.open_write_content(rel) if isinstance(storage, WritesContent) else storage.open_write(rel)


def write_and_close(fd: int, data: bytes, path: Path) -> None:
    """All of ``data`` to ``fd``, fsynced, then closed (also on failure); an OSError's one line
    names ``path`` (ENOSPC, EIO, EROFS at close on a mount)."""
    with naming(path):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
