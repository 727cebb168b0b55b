"""Directories packed as oras-go packs them: a tar of the directory, gzip-compressed, hashed as it
is written."""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
import tarfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from ocigc.digest import Digest
from ocigc.errors import (
    UsageError,
)
from ocigc.transfer.conventions import (
    GZIP_LEVEL,
)


# --- directory packing (oras-go content/file: tarDirectory + gzip) --------------------------------
class _HashingSink:
    """A write-only stream for tarfile: hashes the tar, gzips it and hashes and writes the gzip."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.tar_hash = hashlib.sha256()
        self.gz_hash = hashlib.sha256()
        self.gz_size = 0
        self._pos = 0
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def write(self, data: bytes) -> int:
        self.tar_hash.update(data)
        self._pos += len(data)
        self._emit(self._z.compress(data))
        return len(data)

    def tell(self) -> int:
        return self._pos

    def _emit(self, gz: bytes) -> None:
        if gz:
            self.gz_hash.update(gz)
            self.gz_size += len(gz)
            self.out.write(gz)

    def finish(self) -> None:
        self._emit(self._z.flush())


@dataclass
class PackedDir:
    path: str
    digest: Digest
    size: int
    tar_digest: Digest


def pack_directory(src_dir: str, prefix: str, out_path: str) -> PackedDir:
    """Tar ``src_dir`` with every entry named under ``prefix`` (the title), gzip it into ``out_path``.

    As oras-go ``tarDirectory``: a pre-order walk in lexical order, the root itself is the entry
    ``prefix``, uid/gid 0 and no user or group names, modes and mtimes (whole seconds) kept,
    symlinks stored as symlinks, hard links as regular files. Devices, FIFOs and sockets are
    refused (a pull would refuse them)."""
    with open(out_path, "wb") as out:
        sink = _HashingSink(out)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
            _tar_walk(tf, src_dir, prefix)
        sink.finish()
        out.flush()
    return PackedDir(out_path, Digest(f"sha256:{sink.gz_hash.hexdigest()}"), sink.gz_size,
                     Digest(f"sha256:{sink.tar_hash.hexdigest()}"))


def _tar_walk(tf: tarfile.TarFile, path: str, name: str) -> None:
    st = os.lstat(path)
    info = tarfile.TarInfo(name)
    info.mode = stat_mod.S_IMODE(st.st_mode)
    info.mtime = round(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat_mod.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tf.addfile(info)
    elif stat_mod.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
        with open(path, "rb") as f:
            tf.addfile(info, f)
    elif stat_mod.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        for entry in sorted(os.listdir(path)):
            _tar_walk(tf, os.path.join(path, entry), f"{name}/{entry}" if name not in ("", ".") else entry)
    else:
        kind = "device file" if stat_mod.S_ISCHR(st.st_mode) or stat_mod.S_ISBLK(st.st_mode) else (
            "FIFO" if stat_mod.S_ISFIFO(st.st_mode) else "socket or special file")
        raise UsageError(f"{path}: is a {kind}; only regular files, directories and symlinks can be pushed")
