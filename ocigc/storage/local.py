"""``LocalStorage``: the ``Storage`` of a directory of a POSIX file system (a local disk or a FUSE
mount of a bucket).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat as stat_mod
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, cast

from ocigc.errors import naming
from ocigc.storage.base import (
    GLOBAL_COUNTER,
    TEMP_PREFIX,
    DirEntry,
    FileStat,
    NotRegularFile,
    OpCounter,
    file_kind,
    normalize_rel,
    write_and_close,
)
from ocigc.storage.mounts import LOCAL_FSTYPES, fs_type, is_object_store_fuse


class _NamedReader:
    """A file opened for reading whose errors name it: a read on a mount can fail without a file name
    (s3fs stages a download in its tmpdir: ENOSPC, EIO)."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self._f = f
        self._path = path

    def read(self, n: int = -1) -> bytes:
        with naming(self._path):
            return self._f.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:
        with naming(self._path):
            return self._f.readinto(b)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._f, name)

    def __enter__(self) -> _NamedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


class LocalStorage:
    """A directory of a POSIX file system: a local disk or a FUSE mount of a bucket."""

    def __init__(self, base: str | os.PathLike[str], counter: OpCounter | None = None) -> None:
        self.base = Path(base)
        base_str = str(self.base)
        #: What ``_p`` puts before a relative path (as a string: ``_s``).
        self._prefix = "" if base_str == "." else base_str if base_str.endswith("/") else base_str + "/"
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
        rel = normalize_rel(rel)
        return self.base / rel if rel else self.base

    def _s(self, rel: str) -> str:
        """``str(self._p(rel))`` without pathlib for a plain ``rel`` (no empty, ``.`` or ``..`` part): the
        path of every blob, listing and stat goes through here."""
        if rel and rel[0] not in "/." and rel[-1] != "/" and "//" not in rel and "/." not in rel:
            return self._prefix + rel
        return str(self._p(rel))

    def join(self, rel: str) -> str:
        return self._s(rel)

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
        with os.scandir(self._s(rel)) as it:
            return [DirEntry(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it]

    def stat(self, rel: str) -> FileStat | None:
        self.counter.add("stat")
        try:
            st = os.stat(self._s(rel))
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        return FileStat(st.st_size, st.st_mtime, stat_mod.S_ISDIR(st.st_mode))

    def read_bytes(self, rel: str, limit: int | None = None, nofollow: bool = False) -> bytes:
        self.counter.add("read")
        fd, size = self._open_fd(rel, nofollow)
        try:
            return _read_fd(fd, size, limit)
        except OSError as e:  # ``naming`` inline (no context manager on the hot path)
            if e.filename is None and e.errno is not None:
                raise type(e)(e.errno, e.strerror or os.strerror(e.errno), self._s(rel)) from e
            raise
        finally:
            os.close(fd)

    def open_read(self, rel: str, nofollow: bool = False) -> BinaryIO:
        self.counter.add("open")
        return cast(BinaryIO, _NamedReader(self._open(rel, nofollow), self._p(rel)))

    def _open(self, rel: str, nofollow: bool) -> BinaryIO:
        """Open a regular file for reading, and nothing else: everything ocigc reads from a layout
        (``index.json``, ``oci-layout``, blobs, lock files, journal and trash records) may be hostile.
        ``O_NONBLOCK`` keeps the open of a FIFO from waiting for a writer; ``fstat`` then refuses a
        FIFO, a device (a symlink to ``/dev/zero``), a socket (``NotRegularFile``) and a directory
        (``IsADirectoryError``) before a byte is read."""
        fd, _ = self._open_fd(rel, nofollow)
        try:
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _open_fd(self, rel: str, nofollow: bool) -> tuple[int, int]:
        """``_open``'s checks on a bare descriptor: the descriptor and the file's size."""
        path = self._s(rel)
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
        fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            mode = st.st_mode
            if stat_mod.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
            if not stat_mod.S_ISREG(mode):
                raise NotRegularFile(errno.EINVAL, f"not a regular file ({file_kind(mode)}; refused)", str(path))
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return fd, st.st_size
        except BaseException:
            os.close(fd)
            raise

    def _temp_name(self, rel: str) -> str:
        head, _, _ = normalize_rel(rel).rpartition("/")
        name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        return f"{head}/{name}" if head else name

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.open_write(rel) as f:
            f.write(data)

    def write_new(self, rel: str, data: bytes) -> None:
        """Create ``rel`` (it must not exist) holding ``data``. A write that fails half-way (ENOSPC,
        EIO, EROFS at close on a mount) removes the file it created: an empty or short file left
        behind would read as someone else's (a lock file held by nobody until it is stale)."""
        self.counter.add("write")
        path = self._p(rel)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_and_close(fd, data, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise

    @contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        with self._open_write(rel, content=False) as f:
            yield f

    @contextmanager
    def _open_write(self, rel: str, content: bool) -> Iterator[BinaryIO]:
        target = self._p(rel)
        if not self.can_rename:
            self.counter.add("write")
            with naming(target), open(target, "wb") as f:
                yield f
            return
        tmp_rel = self._temp_name(rel)
        tmp = self._p(tmp_rel)
        self.counter.add("write")
        try:
            with naming(tmp), open(tmp, "wb") as f:
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
            with naming(target), open(target, "wb") as f:
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
            with naming(tmp):
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
                with naming(target), open(tmp, "rb") as src, open(target, "wb") as dst:
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
            os.unlink(self._s(rel))
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


def _read_fd(fd: int, size: int, limit: int | None) -> bytes:
    """The whole file (with ``limit``, at most ``limit + 1`` bytes of it), read with ``os.read``: a
    small file (a manifest) in one read of its size and one that finds its end."""
    cap = None if limit is None else limit + 1
    chunks: list[bytes] = []
    total = 0
    request = size + 1
    while True:
        n = request if cap is None else min(request, cap - total)
        if n <= 0:
            break
        chunk = os.read(fd, n)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        request = 1024 * 1024
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
