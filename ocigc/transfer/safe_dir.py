"""Writing pulled files safely: through directory file descriptors opened with O_NOFOLLOW, new
files created exclusively, so a symlink in the output tree or in the artifact never leads outside."""

from __future__ import annotations

import contextlib
import errno
import os
import stat as stat_mod
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from ocigc.digest import Digest
from ocigc.errors import AlreadyExists, IntegrityError, OcigcError
from ocigc.oci.descriptor import Descriptor
from ocigc.progress import Counter
from ocigc.storage.base import TEMP_PREFIX
from ocigc.transfer.hashing import CHUNK, copy_hashing

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


#: What setting a directory's mode or times answers on mounts that keep no directory metadata:
#: s3fs on a store whose folders are not objects (SeaweedFS: ENOENT), goofys and mountpoint-s3
#: (ENOTSUP, EPERM). The directory is still usable; only its metadata is not kept.
_NO_DIR_METADATA = frozenset({errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})


def set_dir_metadata(fd: int, mode: int | None = None, times_ns: tuple[int, int] | None = None) -> None:
    """chmod/utime an open directory where the file system keeps such metadata; nothing elsewhere."""
    try:
        if mode is not None:
            os.chmod(fd, mode)
        if times_ns is not None:
            os.utime(fd, ns=times_ns)
    except OSError as e:
        if e.errno not in _NO_DIR_METADATA:
            raise


class UnsafeArtifact(OcigcError):
    """An artifact that would write outside the pull directory (or is otherwise refused)."""


# --- safe writing through directory file descriptors -----------------------------------------------------
class SafeDir:
    """A directory and the descendants reached without following symlinks."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: str) -> Iterator[SafeDir]:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            yield cls(fd, path)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def sub(self, parts: tuple[str, ...] | list[str], create: bool, where: str = "") -> Iterator[SafeDir]:
        """The sub-directory ``parts``, refusing symlinks and non-directories on the way."""
        fds: list[int] = []
        cur, path = self.fd, self.path
        try:
            for p in parts:
                path = os.path.join(path, p)
                try:
                    fd = os.open(p, _O_DIR, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(p, 0o777, dir_fd=cur)
                    fd = os.open(p, _O_DIR, dir_fd=cur)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise UnsafeArtifact(f"{path}: is a symlink or not a directory{where}; refused") from None
                    raise
                fds.append(fd)
                cur = fd
            yield SafeDir(cur, path)
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return None

    def temp_name(self) -> str:
        return f"{TEMP_PREFIX}{uuid.uuid4().hex}"


def _write_file_into(d: SafeDir, name: str, src: BinaryIO, desc: Descriptor, overwrite: bool,
                     counter: Counter, where: str) -> None:
    """Stream a blob into ``d/name`` through a temp name, verifying digest and size first."""
    tmp = d.temp_name()
    fd = os.open(tmp, _O_NEW, 0o666, dir_fd=d.fd)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            got, size = copy_hashing(src, out.write, desc.digest.algorithm, max_bytes=desc.size,
                                     on_bytes=counter.add, where=where)
        _check_blob(got, size, desc, where)
        _replace(d, tmp, name, overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=d.fd)
        raise


def _check_blob(got: Digest, size: int, desc: Descriptor, where: str) -> None:
    if size != desc.size:
        raise IntegrityError(f"{where}: size {size} does not match the descriptor ({desc.size} bytes)")
    if got != desc.digest:
        raise IntegrityError(f"{where}: digest {got} does not match the descriptor ({desc.digest})")


def _replace(d: SafeDir, tmp: str, name: str, overwrite: bool) -> None:
    st = d.lstat(name)
    if st is not None:
        if not overwrite:
            raise AlreadyExists(f"{os.path.join(d.path, name)}: already exists")
        if stat_mod.S_ISDIR(st.st_mode):
            raise UnsafeArtifact(f"{os.path.join(d.path, name)}: is a directory; not replaced by a file")
    os.replace(tmp, name, src_dir_fd=d.fd, dst_dir_fd=d.fd)


def _copy_within(src_dir: SafeDir, src: str, dst_dir: SafeDir, dst: str) -> None:
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_dir.fd)
    with os.fdopen(sfd, "rb") as fin:
        mode = os.fstat(fin.fileno()).st_mode & 0o777
        dfd = os.open(dst, _O_NEW, mode, dir_fd=dst_dir.fd)
        with os.fdopen(dfd, "wb") as fout:
            while chunk := fin.read(CHUNK):
                fout.write(chunk)


def _move_into(src_parent: SafeDir, src: str, dst_parent: SafeDir, dst: str, overwrite: bool) -> None:
    """Move ``src`` (a staged file, link or directory) to ``dst``; merge into an existing directory."""
    sst = os.lstat(src, dir_fd=src_parent.fd)
    dst_st = dst_parent.lstat(dst)
    if dst_st is None:
        os.rename(src, dst, src_dir_fd=src_parent.fd, dst_dir_fd=dst_parent.fd)
        return
    where = os.path.join(dst_parent.path, dst)
    if not overwrite:
        raise AlreadyExists(f"{where}: already exists")
    if stat_mod.S_ISDIR(sst.st_mode):
        if stat_mod.S_ISLNK(dst_st.st_mode) or not stat_mod.S_ISDIR(dst_st.st_mode):
            os.unlink(dst, dir_fd=dst_parent.fd)
            os.rename(src, dst, src_dir_fd=src_parent.fd, dst_dir_fd=dst_parent.fd)
            return
        with src_parent.sub([src], create=False) as s, dst_parent.sub([dst], create=False) as d:
            st = os.fstat(s.fd)
            set_dir_metadata(s.fd, 0o700)  # it is emptied and removed; its mode goes to the target
            set_dir_metadata(d.fd, 0o700 | (dst_st.st_mode & 0o777))
            for name in sorted(os.listdir(s.fd)):
                _move_into(s, name, d, name, overwrite)
            set_dir_metadata(d.fd, st.st_mode & 0o777, (st.st_atime_ns, st.st_mtime_ns))
        os.rmdir(src, dir_fd=src_parent.fd)
        return
    if stat_mod.S_ISDIR(dst_st.st_mode):
        raise UnsafeArtifact(f"{where}: is a directory; not replaced by a file")
    os.replace(src, dst, src_dir_fd=src_parent.fd, dst_dir_fd=dst_parent.fd)


def _remove_tree(parent: SafeDir, name: str) -> None:
    st = parent.lstat(name)
    if st is None:
        return
    if stat_mod.S_ISDIR(st.st_mode):
        with contextlib.suppress(OSError), parent.sub([name], create=False) as d:
            set_dir_metadata(d.fd, 0o700)
            for child in os.listdir(d.fd):
                _remove_tree(d, child)
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=parent.fd)
    else:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=parent.fd)
