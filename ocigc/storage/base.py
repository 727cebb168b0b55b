"""The storage seam: every file-system operation ocigc performs goes through a ``Storage``.

Paths are relative to the storage's base and use ``/``. A ``Storage`` can hand out a child
rooted at a sub-directory (``child``), so a root of many layouts and each layout share one
operation counter. The native object-store backend (``ocigc.s3storage``, ``s3://bucket/prefix``)
implements the same protocol, plus optional capabilities the core uses when present: conditional
writes (``ConditionalStorage``), listings with sizes and times (``listing_stats``) and batched
removals (``remove_many``).

On a FUSE mount of a bucket every operation below is a network round trip, so callers list
directories without stat-ing entries where they can and run many small reads in a pool
(``ocigc.parallel``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat as stat_mod
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

#: Prefix of every temporary file ocigc writes. Sweep treats older ones as leftovers.
TEMP_PREFIX = ".ocigc-tmp-"


#: File systems where a listing reflects every completed write at once and a rename is atomic and
#: cheap (a short lock settle suffices; blobs are staged in place).
LOCAL_FSTYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "ramfs", "overlay", "f2fs", "jfs",
    "reiserfs", "bcachefs", "apfs", "hfs", "hfsplus", "vfat", "exfat", "ntfs", "ntfs3", "9p",
    "virtiofs", "fuseblk", "squashfs", "nilfs2",
})
#: FUSE adapters of object stores (``fuse.NAME`` in mountinfo): an object appears when its file is
#: closed, and a rename is a server-side copy of every byte followed by a delete.
OBJECT_STORE_FUSE = frozenset({
    "s3fs", "rclone", "goofys", "mountpoint-s3", "mount-s3", "gcsfuse", "blobfuse", "blobfuse2",
    "geesefs", "ossfs", "cosfs",
})


def fs_type(path: str) -> str | None:
    """The file-system type of the mount holding ``path`` (Linux /proc/self/mountinfo), or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mnt = fields[4].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, best_type = mnt, right.split()[0]
    return best_type


def is_object_store_fuse(kind: str | None) -> bool:
    """True for the mountinfo type of a FUSE mount of an object store (``fuse.s3fs``, ...)."""
    return kind is not None and kind.startswith("fuse.") and kind[5:] in OBJECT_STORE_FUSE


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
# of these it can do better than the generic path (docs/design.md, "Where does a change go").


@runtime_checkable
class HasSettleHint(Protocol):
    """A native store that knows how long the lock-file protocol must wait for its listings."""

    settle_hint: float


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


#: ``--endpoint-url`` of the CLI for s3:// locations (None: boto3's own configuration, e.g.
#: ``AWS_ENDPOINT_URL``).
S3_ENDPOINT_URL: str | None = None


def set_s3_endpoint(url: str | None) -> None:
    global S3_ENDPOINT_URL
    S3_ENDPOINT_URL = url or None


def _norm(rel: str) -> str:
    rel = rel.strip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"path escapes the storage root: {rel!r}")
    return "/".join(parts)


class LocalStorage:
    """A directory of a POSIX file system: a local disk or a FUSE mount of a bucket."""

    def __init__(self, base: str | os.PathLike[str], counter: OpCounter | None = None) -> None:
        self.base = Path(base)
        self.counter = counter if counter is not None else GLOBAL_COUNTER
        #: Set to False after a rename failed with ENOTSUP/EPERM (mountpoint-s3): write in place.
        self.can_rename = True
        self._fs_kind: str | bool | None = False  # False: not looked up yet

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.base)!r})"

    @property
    def url(self) -> str:
        return str(self.base)

    def _p(self, rel: str) -> Path:
        rel = _norm(rel)
        return self.base / rel if rel else self.base

    def join(self, rel: str) -> str:
        return str(self._p(rel))

    def child(self, rel: str) -> LocalStorage:
        sub = LocalStorage(self._p(rel), self.counter)
        sub.can_rename = self.can_rename
        return sub

    @property
    def fs_kind(self) -> str | None:
        """The file-system type of the mount holding the base (``ext4``, ``fuse.s3fs``, ...)."""
        if self._fs_kind is False:
            self._fs_kind = fs_type(str(self.base))
        return self._fs_kind if isinstance(self._fs_kind, str) else None

    @property
    def is_local_disk(self) -> bool:
        """A local file system: atomic, cheap renames and listings that show every completed write."""
        return self.fs_kind in LOCAL_FSTYPES

    @property
    def is_object_store_mount(self) -> bool:
        """A FUSE mount of a bucket (s3fs, rclone, goofys, mountpoint-s3, ...)."""
        return is_object_store_fuse(self.fs_kind)

    def local_path(self, rel: str = "") -> Path | None:
        return self._p(rel)

    def list_dir(self, rel: str = "") -> list[DirEntry]:
        self.counter.add("list")
        with os.scandir(self._p(rel)) as it:
            return [DirEntry(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it]

    def stat(self, rel: str) -> FileStat | None:
        self.counter.add("stat")
        try:
            st = os.stat(self._p(rel))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        return FileStat(st.st_size, st.st_mtime, stat_mod.S_ISDIR(st.st_mode))

    def read_bytes(self, rel: str, limit: int | None = None, nofollow: bool = False) -> bytes:
        self.counter.add("read")
        with self._open(rel, nofollow) as f:
            return f.read() if limit is None else f.read(limit + 1)

    def open_read(self, rel: str, nofollow: bool = False) -> BinaryIO:
        self.counter.add("open")
        return self._open(rel, nofollow)

    def _open(self, rel: str, nofollow: bool) -> BinaryIO:
        """Open a regular file for reading, and nothing else: everything ocigc reads from a layout
        (``index.json``, ``oci-layout``, blobs, lock files, journal and trash records) may be hostile.
        ``O_NONBLOCK`` keeps the open of a FIFO from waiting for a writer; ``fstat`` then refuses a
        FIFO, a device (a symlink to ``/dev/zero``), a socket (``NotRegularFile``) and a directory
        (``IsADirectoryError``) before a byte is read."""
        path = self._p(rel)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
        fd = os.open(path, flags)
        try:
            mode = os.fstat(fd).st_mode
            if stat_mod.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
            if not stat_mod.S_ISREG(mode):
                raise NotRegularFile(errno.EINVAL, f"not a regular file ({file_kind(mode)}; refused)", str(path))
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _temp_name(self, rel: str) -> str:
        head, _, _ = _norm(rel).rpartition("/")
        name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        return f"{head}/{name}" if head else name

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.open_write(rel) as f:
            f.write(data)

    def write_new(self, rel: str, data: bytes) -> None:
        self.counter.add("write")
        fd = os.open(self._p(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        with self._open_write(rel, content=False) as f:
            yield f

    @contextmanager
    def _open_write(self, rel: str, content: bool) -> Iterator[BinaryIO]:
        target = self._p(rel)
        if not self.can_rename:
            self.counter.add("write")
            with open(target, "wb") as f:
                yield f
            return
        tmp_rel = self._temp_name(rel)
        tmp = self._p(tmp_rel)
        self.counter.add("write")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            self._rename_or_copy(tmp, target, content)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextmanager
    def open_write_content(self, rel: str) -> Iterator[BinaryIO]:
        """Write a content-addressed file (a blob): ``open_write`` (temp file, fsync, rename), on every
        file system, object-store FUSE mounts included.

        A blob must never be visible under its digest name before it is whole: a writer killed
        half-way would leave a short object there, which another tool (skopeo, oras) reuses by name
        without a size check. So even on s3fs, where the rename is a server-side copy of every byte
        plus a delete (``docs/performance.md``, "Blob writes on s3fs"), the bytes go to a temp name
        first; a kill leaves at most that temp file, which ``sweep`` removes after the grace period.
        Only where the mount cannot rename at all (mountpoint-s3) is the final name written directly
        (``_rename_or_copy``); the size checks of ``check``, ``push`` and ``pull`` catch a short blob
        there; a block that raises removes what it wrote under the name.
        """
        if self.can_rename:
            with self._open_write(rel, content=True) as f:
                yield f
            return
        target = self._p(rel)
        self.counter.add("write")
        try:
            with open(target, "wb") as f:
                yield f
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(target)
            raise

    def new_temp(self, rel: str) -> tuple[str, Path]:
        """A fresh temp name in the directory of ``rel`` (relative and local path) for a writer that
        learns the final name only once it has written the bytes (a blob hashed as it streams).
        Then ``publish_temp`` (fsync and rename) or ``discard_temp``."""
        tmp_rel = self._temp_name(rel)
        self.counter.add("write")
        return tmp_rel, self._p(tmp_rel)

    def publish_temp(self, tmp_rel: str, rel: str) -> None:
        """fsync a temp file from ``new_temp`` (its writer has closed it) and move it to ``rel``."""
        tmp = self._p(tmp_rel)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._rename_or_copy(tmp, self._p(rel), content=True)

    def discard_temp(self, tmp_rel: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self._p(tmp_rel))

    def _rename_or_copy(self, tmp: Path, target: Path, content: bool = False) -> None:
        """Rename ``tmp`` to ``target``; where the mount cannot rename, copy it there. With ``content``
        (a blob) a copy that fails half-way is removed again: a short blob under its digest name would
        be taken for the blob by other tools (``index.json`` is left as it is: it has a backup)."""
        self.counter.add("rename")
        try:
            os.replace(tmp, target)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.ENOSYS, errno.EXDEV):
                raise
            # The mount cannot rename (mountpoint-s3): write the final name directly.
            self.can_rename = False
            self.counter.add("write")
            try:
                with open(tmp, "rb") as src, open(target, "wb") as dst:
                    while chunk := src.read(1024 * 1024):
                        dst.write(chunk)
            except BaseException:
                if content:
                    with suppress(FileNotFoundError):
                        os.unlink(target)
                raise
            os.unlink(tmp)

    def rename(self, src: str, dst: str) -> None:
        self.counter.add("rename")
        os.replace(self._p(src), self._p(dst))

    def remove(self, rel: str) -> bool:
        self.counter.add("remove")
        try:
            os.unlink(self._p(rel))
        except FileNotFoundError:
            return False
        return True

    def remove_dir(self, rel: str) -> bool:
        self.counter.add("remove")
        try:
            os.rmdir(self._p(rel))
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno == errno.ENOTEMPTY:
                return False
            raise
        return True

    def makedirs(self, rel: str) -> None:
        self.counter.add("mkdir")
        try:
            os.makedirs(self._p(rel), exist_ok=True)
        except FileExistsError as e:  # a file where the directory should be
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory (a file is in the way)",
                                     e.filename or str(self._p(rel))) from None


def open_write_content(storage: Storage, rel: str) -> contextlib.AbstractContextManager[BinaryIO]:
    """``storage.open_write_content`` where the storage has it (see ``LocalStorage``), else ``open_write``."""
    return storage.open_write_content(rel) if isinstance(storage, WritesContent) else storage.open_write(rel)


def open_storage(location: str, counter: OpCounter | None = None) -> Storage:
    """A Storage for a location string: ``s3://bucket/prefix`` (native, needs the s3 extra) or a local
    path (a plain directory or a mounted bucket)."""
    if location.startswith("s3://"):
        try:
            from ocigc.storage.s3 import S3Storage  # type: ignore[import-not-found,unused-ignore]
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            from ocigc.errors import UsageError

            raise UsageError(f"{location}: s3:// locations need the s3 backend (pip install 'ocigc[s3]')") from e
        return S3Storage.from_url(location, counter=counter)  # type: ignore[no-any-return,unused-ignore]
    return LocalStorage(location or ".", counter)
