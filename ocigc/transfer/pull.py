"""Pull an artifact's titled files out of a layout into a directory, safely.

What is written, as ``oras pull`` does (oras CLI ``cmd/oras/root/pull.go``, oras-go
``content/file``): every layer (or titled config) with ``org.opencontainers.image.title`` becomes
``DIR/<title>``; a layer annotated ``io.deis.oras.content.unpack: "true"`` is a gzipped tar whose
entries live under ``<title>/`` and is unpacked there; untitled layers and the empty descriptor are
skipped; an index is followed into its manifests.

Safety against hostile artifacts, checked before anything is written:

- titles that are absolute, contain ``..``, or lead through a symlink or non-directory under DIR
  are refused (UnsafeArtifact, exit 1); two layers may not claim the same title with different
  content, nor a file and a directory the same path;
- tar entries outside ``<title>/``, absolute or with ``..``, symlinks and hard links whose target
  leaves the unpacked directory, device files and FIFOs are refused; entries are created through
  directory file descriptors with ``O_NOFOLLOW``, so an entry can never be written through a
  symlink, not even one the same archive made;
- every blob's digest and size are verified while it streams (and the tar digest of a directory);
  a mismatch is an IntegrityError (exit 4);
- files go to temp names (``.ocigc-tmp-*``) in their final directory and are renamed into place
  after verification; a directory is unpacked into a temp directory and moved (or, with
  ``--overwrite``, merged) into place; an interrupted pull leaves no half file under a final name;
- an existing target is an error unless ``overwrite``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_mod
import tarfile
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ocigc.digest import Digest
from ocigc.errors import (
    AlreadyExists,
    IntegrityError,
    InvalidDigest,
    InvalidOption,
    ManifestError,
    StorageError,
    UsageError,
    printable,
)
from ocigc.jsonload import load_json
from ocigc.layout.indexio import read_index_retrying
from ocigc.layout.layout import MAX_MANIFEST_BYTES, Layout
from ocigc.oci.descriptor import ANNOTATION_TITLE, INDEX_TYPES, OCI_EMPTY, Descriptor
from ocigc.oci.refs import Reference
from ocigc.parallel import pmap
from ocigc.progress import Counter, NullProgress, Progress
from ocigc.transfer.arguments import title_problem
from ocigc.transfer.conventions import (
    ANNOTATION_CONTENT_DIGEST,
    ANNOTATION_UNPACK,
    DEFAULT_PULL_CONCURRENCY,
    EMPTY_JSON_DIGEST,
)
from ocigc.transfer.hashing import CHUNK, SizeExceeded
from ocigc.transfer.push import resolve_manifest
from ocigc.transfer.safe_dir import (
    _O_NEW,
    SafeDir,
    UnsafeArtifact,
    _check_blob,
    _copy_within,
    _move_into,
    _remove_tree,
    _write_file_into,
    set_dir_metadata,
)


@dataclass
class PullItem:
    title: str
    parts: tuple[str, ...]
    descriptor: Descriptor
    unpack: bool

    @property
    def tar_digest(self) -> Digest | None:
        value = self.descriptor.annotations.get(ANNOTATION_CONTENT_DIGEST)
        try:
            return Digest(value) if isinstance(value, str) else None
        except InvalidDigest:
            return None


@dataclass
class PulledFile:
    title: str
    path: str
    digest: Digest
    size: int
    unpacked: bool

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "path": self.path, "digest": self.digest, "size": self.size,
                "unpacked": self.unpacked}


@dataclass
class PullResult:
    layout: str
    reference: str
    digest: Digest
    media_type: str
    out_dir: str
    files: list[PulledFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: Foreign layers (descriptor with ``urls``) absent from the layout: not pulled, not an error.
    foreign: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.layout, "reference": self.reference, "digest": self.digest,
                "media_type": self.media_type, "output": self.out_dir,
                "files": [f.to_json() for f in self.files], "skipped": self.skipped, "foreign": self.foreign}


# --- collecting what to write -------------------------------------------------------------------------
def collect(layout: Layout, root: dict[str, Any],
            foreign: list[Descriptor] | None = None) -> tuple[list[PullItem], list[str]]:
    """The titled blobs under a manifest (through indexes), and the digests skipped as untitled.

    ``foreign`` collects the untitled layers whose descriptor has ``urls`` (foreign layers)."""
    items: list[PullItem] = []
    skipped: list[str] = []
    seen: set[str] = set()

    def walk(desc: Descriptor, where: str) -> None:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        doc = read_manifest(layout, desc, where)
        if isinstance(doc.get("manifests"), list) or desc.media_type in INDEX_TYPES:
            for i, child in enumerate(doc.get("manifests") or []):
                walk(_desc(child, f"{where} manifests[{i}]"), f"{where} -> manifests[{i}]")
            return
        blobs: list[tuple[str, Any]] = []
        if isinstance(doc.get("layers"), list):
            blobs = [(f"layers[{i}]", d) for i, d in enumerate(doc["layers"])]
        elif isinstance(doc.get("blobs"), list):  # OCI artifact manifest
            blobs = [(f"blobs[{i}]", d) for i, d in enumerate(doc["blobs"])]
        elif not isinstance(doc.get("config"), dict):
            raise ManifestError(f"{layout.where(desc.digest.blob_path())}: {where} is not an image or artifact "
                                f"manifest (no layers or blobs)")
        if isinstance(doc.get("config"), dict):
            blobs.append(("config", doc["config"]))
        for label, obj in blobs:
            d = _desc(obj, f"{where} {label}")
            title = d.annotations.get(ANNOTATION_TITLE)
            if not isinstance(title, str) or title == "":
                if not (d.digest == EMPTY_JSON_DIGEST or d.media_type == OCI_EMPTY) and label != "config":
                    skipped.append(str(d.digest))
                    if d.urls and foreign is not None:
                        foreign.append(d)
                continue
            items.append(PullItem(title, (), d, d.annotations.get(ANNOTATION_UNPACK) == "true"))

    walk(_desc(root, "manifest"), "manifest")
    return items, skipped


def _desc(obj: Any, where: str) -> Descriptor:
    try:
        return Descriptor.from_json(obj, where)
    except (ValueError, InvalidDigest) as e:
        raise ManifestError(str(e)) from None


def read_manifest(layout: Layout, desc: Descriptor, where: str) -> dict[str, Any]:
    """A manifest's JSON, after checking the bytes against the descriptor's digest and size."""
    path = layout.where(desc.digest.blob_path())
    try:
        raw = layout.read_blob(desc.digest, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: {where} is missing") from None
    got = Digest.from_bytes(raw, desc.digest.algorithm)
    if got != desc.digest or len(raw) != desc.size:
        raise IntegrityError(f"{path}: {where} does not match its descriptor (digest {got.short}, {len(raw)} bytes; "
                             f"expected {desc.digest.short}, {desc.size} bytes)")
    try:
        doc = load_json(raw, limit=None)
    except ValueError as e:
        raise ManifestError(f"{path}: {where} is not usable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{path}: {where} is not a JSON object")
    return doc


def plan(items: list[PullItem], out_dir: str, overwrite: bool) -> list[PullItem]:
    """Check every title before anything is written; drop exact duplicates; the items to write."""
    by_title: dict[tuple[str, ...], PullItem] = {}
    for item in items:
        problem = title_problem(item.title)
        if problem:
            raise UnsafeArtifact(f"{item.descriptor.digest.short}: title {item.title!r} refused ({problem})")
        parts = tuple(p for p in item.title.split("/") if p not in ("", "."))
        if not parts and not item.unpack:
            raise UnsafeArtifact(f"{item.descriptor.digest.short}: title {item.title!r} names the output "
                                 f"directory itself")
        item.parts = parts
        other = by_title.get(parts)
        if other is not None:
            if other.descriptor.digest == item.descriptor.digest and other.unpack == item.unpack:
                continue
            raise UnsafeArtifact(f"title {item.title!r} is claimed by two different blobs "
                                 f"({other.descriptor.digest.short}, {item.descriptor.digest.short})")
        by_title[parts] = item
    titles = sorted(by_title)
    for a in titles:
        for b in titles:
            if a != b and b[:len(a)] == a and not by_title[a].unpack:
                raise UnsafeArtifact(f"title {'/'.join(a)!r} is a file but {'/'.join(b)!r} puts a file under it")
    for parts, item in by_title.items():
        _check_target(out_dir, parts, item, overwrite)
    return list(by_title.values())


def _check_target(out_dir: str, parts: tuple[str, ...], item: PullItem, overwrite: bool) -> None:
    cur = out_dir
    for i, p in enumerate(parts):
        cur = os.path.join(cur, p)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return
        last = i == len(parts) - 1
        if stat_mod.S_ISLNK(st.st_mode):
            raise UnsafeArtifact(f"{cur}: is a symlink; refusing to write {item.title!r} through it")
        if not last and not stat_mod.S_ISDIR(st.st_mode):
            raise UnsafeArtifact(f"{cur}: is not a directory; cannot write {item.title!r}")
        if last:
            if stat_mod.S_ISDIR(st.st_mode) and not item.unpack:
                raise UnsafeArtifact(f"{cur}: is a directory; cannot write the file {item.title!r} there")
            if not overwrite:
                raise AlreadyExists(f"{cur}: already exists")


# --- unpacking ---------------------------------------------------------------------------------------------
class _GunzipReader:
    """A file-like view of the gunzipped bytes of a stream (several gzip members allowed, zero
    padding after the last tolerated); hashes what it returns, i.e. the tar."""

    def __init__(self, raw: BinaryIO, where: str) -> None:
        self.raw = raw
        self.where = where
        self.tar_hash = hashlib.sha256()
        self._z = zlib.decompressobj(31)
        self._member_done = False
        self._pending = b""
        self._buf = b""
        self._pos = 0
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
            while not self._eof and not self._buf:
                self._fill()
        if n < 0 or n >= len(self._buf) - self._pos:
            out = self._buf[self._pos:] if self._pos else self._buf
            self._buf, self._pos = b"", 0
        else:
            out = self._buf[self._pos:self._pos + n]
            self._pos += n
        self.tar_hash.update(out)
        return out

    def _fill(self) -> None:
        try:
            if self._member_done:
                data = self._pending or self.raw.read(CHUNK)
                self._pending = b""
                if not data:
                    self._eof = True
                    return
                if not data.strip(b"\x00"):
                    return  # zero padding after the last member
                self._z = zlib.decompressobj(31)  # a further gzip member
                self._member_done = False
            else:
                data = self._z.unconsumed_tail or self.raw.read(CHUNK)
                if not data:
                    raise UnsafeArtifact(f"{self.where}: truncated gzip stream")
            self._buf = self._z.decompress(data, CHUNK)
            if self._z.eof:
                self._member_done = True
                self._pending = self._z.unused_data
        except zlib.error as e:
            raise UnsafeArtifact(f"{self.where}: not a valid gzip stream ({e})") from None

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


@dataclass
class _DirMeta:
    parts: tuple[str, ...]
    mode: int
    mtime: float


def _entry_parts(name: str, prefix: tuple[str, ...], where: str) -> tuple[str, ...]:
    if name.startswith("/"):
        raise UnsafeArtifact(f"{where}: tar entry {name!r} has an absolute path; refused")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArtifact(f"{where}: tar entry {name!r} contains '..'; refused")
    if "\x00" in name:
        raise UnsafeArtifact(f"{where}: tar entry {name!r} contains a NUL byte; refused")
    if parts[:len(prefix)] != prefix:
        raise UnsafeArtifact(f"{where}: tar entry {name!r} is outside {'/'.join(prefix) or '.'!r}; refused")
    return parts[len(prefix):]


def _link_target_inside(entry: tuple[str, ...], target: str) -> bool:
    """Whether a symlink at ``entry`` pointing at ``target`` (relative) stays inside the unpack root."""
    depth = 0
    for p in [*entry[:-1], *target.split("/")]:
        if p in ("", "."):
            continue
        if p == "..":
            depth -= 1
            if depth < 0:
                return False
        else:
            depth += 1
    return True


def unpack(src: BinaryIO, staging: SafeDir, item: PullItem, counter: Counter, where: str) -> None:
    """Extract the gzipped tar of a directory layer into ``staging`` (checked entry by entry), then
    verify the blob's digest and size and the tar digest annotation."""
    desc = item.descriptor
    raw_hash = hashlib.new(desc.digest.algorithm)
    raw_size = [0]

    class _Raw:
        def read(self, n: int = -1) -> bytes:
            data = src.read(n)
            raw_size[0] += len(data)
            if raw_size[0] > desc.size:
                raise SizeExceeded(f"{where}: larger than the expected {desc.size} bytes")
            raw_hash.update(data)
            counter.add(len(data))
            return data

    gz = _GunzipReader(_Raw(), where)  # type: ignore[arg-type]
    dirs: list[_DirMeta] = []
    try:
        try:
            with tarfile.open(fileobj=gz, mode="r|") as tf:  # type: ignore[call-overload]
                for member in tf:
                    _extract_member(tf, member, staging, item, dirs, where)
        except tarfile.TarError as e:
            raise UnsafeArtifact(f"{where}: not a valid tar archive ({e})") from None
        gz.drain()
    except UnsafeArtifact:
        # a blob that is not what its descriptor says is an integrity failure first
        while _Raw().read(CHUNK):
            pass
        _check_blob(Digest(f"{desc.digest.algorithm}:{raw_hash.hexdigest()}"), raw_size[0], desc, where)
        raise
    while _Raw().read(CHUNK):
        pass
    got = Digest(f"{desc.digest.algorithm}:{raw_hash.hexdigest()}")
    _check_blob(got, raw_size[0], desc, where)
    want_tar = item.tar_digest
    if want_tar is not None and want_tar.algorithm == "sha256":
        got_tar = Digest(f"sha256:{gz.tar_hash.hexdigest()}")
        if got_tar != want_tar:
            raise IntegrityError(f"{where}: unpacked content digest {got_tar} does not match "
                                 f"{ANNOTATION_CONTENT_DIGEST} ({want_tar})")
    for meta in sorted(dirs, key=lambda m: len(m.parts), reverse=True):
        with staging.sub(meta.parts, create=False) as d:
            mtime_ns = int(meta.mtime * 1e9)
            set_dir_metadata(d.fd, meta.mode & 0o777, (mtime_ns, mtime_ns))


def _extract_member(tf: tarfile.TarFile, m: tarfile.TarInfo, staging: SafeDir, item: PullItem,
                    dirs: list[_DirMeta], where: str) -> None:
    parts = _entry_parts(m.name, item.parts, where)
    label = f"{where}: tar entry {m.name!r}"
    if not parts:
        if not m.isdir():
            raise UnsafeArtifact(f"{label} replaces the unpack directory itself; refused")
        dirs.append(_DirMeta((), m.mode, m.mtime))
        return
    if m.ischr() or m.isblk():
        raise UnsafeArtifact(f"{label} is a device file; refused")
    if m.isfifo():
        raise UnsafeArtifact(f"{label} is a FIFO; refused")
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        raise UnsafeArtifact(f"{label} has an unsupported type {m.type!r}; refused")
    with staging.sub(parts[:-1], create=True, where=f" (reached by {label})") as d:
        name = parts[-1]
        st = d.lstat(name)
        if m.isdir():
            if st is not None and not stat_mod.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=d.fd)
                st = None
            if st is None:
                os.mkdir(name, 0o700, dir_fd=d.fd)
            dirs.append(_DirMeta(parts, m.mode, m.mtime))
            return
        if st is not None:
            if stat_mod.S_ISDIR(st.st_mode):
                raise UnsafeArtifact(f"{label} would replace a directory of the same archive; refused")
            os.unlink(name, dir_fd=d.fd)
        if m.issym():
            if m.linkname.startswith("/"):
                raise UnsafeArtifact(f"{label} is a symlink to an absolute path ({m.linkname!r}); refused")
            if not _link_target_inside(parts, m.linkname):
                raise UnsafeArtifact(f"{label} is a symlink pointing outside the directory ({m.linkname!r}); refused")
            os.symlink(m.linkname, name, dir_fd=d.fd)
            return
        if m.islnk():
            target = _entry_parts(m.linkname, item.parts, f"{label} hard link")
            if not target:
                raise UnsafeArtifact(f"{label} is a hard link to the directory itself; refused")
            with staging.sub(target[:-1], create=False, where=f" (hard link {label})") as td:
                tst = td.lstat(target[-1])
                if tst is None or not stat_mod.S_ISREG(tst.st_mode):
                    raise UnsafeArtifact(f"{label} is a hard link to {m.linkname!r}, which is not a regular file "
                                         f"of the archive; refused")
                try:
                    os.link(target[-1], name, src_dir_fd=td.fd, dst_dir_fd=d.fd, follow_symlinks=False)
                except OSError as e:
                    if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EOPNOTSUPP):
                        raise
                    _copy_within(td, target[-1], d, name)
            return
        fd = os.open(name, _O_NEW, m.mode & 0o777, dir_fd=d.fd)
        with os.fdopen(fd, "wb", buffering=0) as out:
            f = tf.extractfile(m)
            if f is not None:
                while chunk := f.read(CHUNK):
                    out.write(chunk)
        os.utime(name, (m.mtime, m.mtime), dir_fd=d.fd, follow_symlinks=False)


# --- pull ------------------------------------------------------------------------------------------------
def pull(layout: Layout, ref: Reference, out_dir: str, *, overwrite: bool = False,
         concurrency: int = DEFAULT_PULL_CONCURRENCY, progress: Progress | None = None) -> PullResult:
    """Write the titled files of ``ref`` under ``out_dir``; see the module docstring."""
    progress = progress or NullProgress()
    if concurrency < 1:
        raise InvalidOption("concurrency", "must be at least 1")
    if ref.tag is None and ref.digest is None:
        raise UsageError(f"{ref}: give a tag (PATH:TAG) or a digest (PATH@DIGEST) to pull")
    index = read_index_retrying(layout)  # a writer that is not ocigc may be rewriting it in place
    root = resolve_manifest(layout, index, ref)
    untitled_foreign: list[Descriptor] = []
    items, skipped = collect(layout, root, untitled_foreign)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where the output directory (or a parent) is
        raise StorageError(f"{printable(out_dir)}: not a directory (the output directory)") from None
    out_abs = os.path.abspath(out_dir)
    todo = plan(items, out_abs, overwrite)
    present = pmap(lambda i: layout.stat_blob(i.descriptor.digest) is not None, todo, max(concurrency, 4))
    foreign: list[dict[str, Any]] = []
    for item, ok in zip(todo, present, strict=True):  # every blob is there before the first byte is written
        if ok:
            continue
        if item.descriptor.urls:
            # A foreign (non-distributable) layer: its descriptor says where it is fetched from, and
            # layouts commonly leave it out (skopeo does). Not pulled, said so; not an error.
            foreign.append({"digest": item.descriptor.digest, "title": item.title,
                            "urls": list(item.descriptor.urls)})
            continue
        raise IntegrityError(f"{layout.where(item.descriptor.digest.blob_path())}: blob of {item.title!r} "
                             f"is missing")
    for d in untitled_foreign:
        foreign.append({"digest": d.digest, "title": None, "urls": list(d.urls)})
    skipped_foreign = {f["digest"] for f in foreign}
    todo = [i for i in todo if i.descriptor.digest not in skipped_foreign]
    counter = progress.counter("pull", total=sum(i.descriptor.size for i in todo) or None, unit="B")
    result = PullResult(layout.location, str(ref), Digest(root["digest"]), root.get("mediaType", ""), out_abs,
                        skipped=[d for d in skipped if d not in skipped_foreign], foreign=foreign)
    lock = threading.Lock()
    with SafeDir.open(out_abs) as base:

        def one(item: PullItem) -> None:
            _pull_one(layout, base, item, overwrite, counter)
            with lock:
                result.files.append(PulledFile(item.title, os.path.join(out_abs, *item.parts),
                                               item.descriptor.digest, item.descriptor.size, item.unpack))

        # directories first, in order, so a file titled inside an unpacked directory lands after it
        dirs = [i for i in todo if i.unpack]
        files = [i for i in todo if not i.unpack]
        for item in sorted(dirs, key=lambda i: len(i.parts)):
            one(item)
        _run(one, files, concurrency)
    counter.close()
    result.files.sort(key=lambda f: f.title)
    return result


def _run(fn: Callable[[PullItem], None], items: list[PullItem], jobs: int) -> None:
    if jobs <= 1 or len(items) <= 1:
        for i in items:
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=min(jobs, len(items))) as pool:
        futures = [pool.submit(fn, i) for i in items]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e


def _pull_one(layout: Layout, base: SafeDir, item: PullItem, overwrite: bool, counter: Counter) -> None:
    desc = item.descriptor
    where = f"{layout.where(desc.digest.blob_path())} ({item.title})"
    try:
        src = layout.open_blob(desc.digest)
    except FileNotFoundError:
        raise IntegrityError(f"{where}: missing") from None
    with src:
        if not item.unpack:
            with base.sub(item.parts[:-1], create=True, where=f" (for {item.title!r})") as d:
                _write_file_into(d, item.parts[-1], src, desc, overwrite, counter, where)
            return
        parent_parts, name = (item.parts[:-1], item.parts[-1]) if item.parts else ((), None)
        with base.sub(parent_parts, create=True, where=f" (for {item.title!r})") as parent:
            staging = parent.temp_name()
            os.mkdir(staging, 0o700, dir_fd=parent.fd)
            try:
                with parent.sub([staging], create=False) as s:
                    unpack(src, s, item, counter, where)
                if name is None:  # title "." : the output directory itself
                    with parent.sub([staging], create=False) as s:
                        for child in sorted(os.listdir(s.fd)):
                            _move_into(s, child, parent, child, overwrite)
                else:
                    _move_into(parent, staging, parent, name, overwrite)
            finally:
                _remove_tree(parent, staging)

