"""An OCI image layout on a Storage: ``oci-layout``, ``index.json`` and ``blobs/<alg>/<hex>``."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ocigc.digest import ALGORITHMS, Digest
from ocigc.errors import BlobTooLarge, LayoutError, ManifestError, describe_oserror, printable
from ocigc.jsonload import JSONInputError, load_json
from ocigc.oci.index import Index
from ocigc.storage.base import TEMP_PREFIX, DirEntry, FileStat, Storage, listing_stats

OCI_LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs"
CONTROL_DIR = ".ocigc"
#: Largest manifest or index we read (registries use 4 MiB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
#: Largest ``index.json`` read (``docs/design.md``, "Bad input"): a bigger one stops the layout.
MAX_INDEX_BYTES = 64 * 1024 * 1024
#: Largest ``oci-layout`` read (the file is ``{"imageLayoutVersion": "1.0.0"}``).
OCI_LAYOUT_MAX_BYTES = 64 * 1024


#: A temp file named after the blob it was meant to become (``<hex>.tmp``, ``<hex>.<n>.tmp``). Other
#: ``*.tmp`` names in ``blobs/`` (``not-a-digest.tmp``) are foreign files: reported, never deleted.
_BLOB_TEMP = re.compile(r"^[0-9a-f]{32,}\.(?:[^/]*\.)?tmp$")


def is_temp_leftover(rel: str) -> bool:
    """Temp files other writers leave behind (oras, skopeo, umoci, regclient, ocigc)."""
    name = rel.rsplit("/", 1)[-1]
    top = rel.split("/", 1)[0]
    return (
        top == "ingest"  # oras-go
        or name.startswith("oci-put-blob")  # skopeo / containers/image
        or top.startswith(".umoci-")  # umoci
        or _BLOB_TEMP.match(name) is not None  # regclient: <hex>.<random>.tmp next to the blob it becomes
        or name.startswith(TEMP_PREFIX)  # ocigc
    )


@dataclass
class BlobListing:
    """What ``blobs/`` holds: valid digests, and files that are not (reported, never deleted)."""

    digests: set[Digest] = field(default_factory=set)
    foreign: list[str] = field(default_factory=list)
    temp: list[str] = field(default_factory=list)
    symlinks: list[str] = field(default_factory=list)
    #: Digest-named symlinks: present for reachability, never removed.
    symlinked: set[Digest] = field(default_factory=set)
    unknown_algorithms: list[str] = field(default_factory=list)
    #: Size and mtime of each digest when the listing itself carries them (an object-store listing):
    #: callers use these instead of a stat per blob. Empty on a file system.
    stats: dict[Digest, FileStat] = field(default_factory=dict)


class Layout:
    """One layout directory. Cheap to construct; ``open`` validates ``oci-layout``."""

    def __init__(self, storage: Storage, name: str = "") -> None:
        self.storage = storage
        #: The layout's path under the root it was found in ("" for the root itself).
        self.name = name
        self._dirs_checked: set[str] = set()
        #: ``oci-layout`` was read and valid (it never changes: one read per layout and run).
        self._oci_layout_ok = False
        #: Digest-named symlinks in ``blobs/<alg>/`` are read through (content verified against the
        #: name) only when their target is a regular file under this directory: the root being swept
        #: (``discover.open_layouts``). None: never read through (refused, fail closed).
        self.link_root: Path | None = None
        #: Read-only commands: also read through a link whose target is the blob of the same name of
        #: another layout (``<dir holding oci-layout>/blobs/<alg>/<hex>``), wherever it is. A link to any
        #: other file outside ``link_root`` (``/etc/hostname``) stays refused.
        self.follow_blob_links = False
        #: Set by ``discover.map_links`` for a sweep of a root: digests in this layout's ``blobs/`` that a
        #: symlink of another layout under the root leads to (digest -> the link), whole ``blobs/<alg>/``
        #: directories another layout's symlinked directory leads to (algorithm -> the link), and this
        #: layout's own symlinks that lead outside the root (invisible to the sweep: noted in the plan).
        self.linked_from: dict[Digest, str] = {}
        self.linked_dirs: dict[str, str] = {}
        self.links_out: list[str] = []

    def __repr__(self) -> str:
        return f"Layout({self.storage.url!r})"

    @property
    def location(self) -> str:
        return self.storage.url

    @property
    def label(self) -> str:
        """The layout's name in every output, text and JSON (docs/cli.md, "Layout names"): its path
        under the PATH argument (``team/app``), or PATH as given for the layout PATH itself."""
        return self.name or self.location

    @property
    def display(self) -> str:
        """``label`` for text output: control characters escaped."""
        return _printable(self.label)

    def where(self, rel: str) -> str:
        """``rel`` for messages: control characters escaped, so that a message stays one line."""
        return _printable(self.storage.join(rel))

    @classmethod
    def open(cls, storage: Storage, name: str = "") -> Layout:
        layout = cls(storage, name)
        layout.check_oci_layout()
        return layout

    def check_oci_layout(self) -> None:
        if self._oci_layout_ok:
            return
        where = self.where(OCI_LAYOUT_FILE)
        try:
            raw = self.storage.read_bytes(OCI_LAYOUT_FILE, limit=OCI_LAYOUT_MAX_BYTES)
        except FileNotFoundError:
            if self.storage.stat("") is None:
                raise LayoutError(f"{_printable(self.storage.url)}: no such directory") from None
            raise LayoutError(f"{where}: missing (not an OCI image layout)") from None
        except IsADirectoryError:
            raise LayoutError(f"{where}: is a directory") from None
        except NotADirectoryError:
            raise LayoutError(f"{_printable(self.storage.url)}: not a directory") from None
        try:
            doc = load_json(raw, limit=OCI_LAYOUT_MAX_BYTES)
        except JSONInputError as e:
            raise LayoutError(f"{where}: {e}") from None
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if version != "1.0.0":
            raise LayoutError(f"{where}: imageLayoutVersion must be \"1.0.0\", got {version!r}")
        self._oci_layout_ok = True

    # --- index.json ------------------------------------------------------------------------
    def read_index_bytes(self) -> bytes:
        """``index.json``'s bytes: a regular file of at most ``MAX_INDEX_BYTES`` (else ``LayoutError``)."""
        try:
            raw = self.storage.read_bytes(INDEX_FILE, limit=MAX_INDEX_BYTES)
        except FileNotFoundError:
            raise LayoutError(f"{self.where(INDEX_FILE)}: missing") from None
        except IsADirectoryError:
            raise LayoutError(f"{self.where(INDEX_FILE)}: is a directory") from None
        except OSError as e:
            if e.errno in (errno.EIO, errno.ESTALE, errno.EAGAIN):
                raise  # transient on a mount while another host replaces it: the caller retries
            raise LayoutError(describe_oserror(e, self.where(INDEX_FILE))) from None
        check_index_size(raw, self.where(INDEX_FILE))
        return raw

    def read_index(self) -> Index:
        return Index.parse(self.read_index_bytes(), self.where(INDEX_FILE))

    # --- blobs -----------------------------------------------------------------------------
    def read_blob(self, digest: Digest, limit: int | None = MAX_MANIFEST_BYTES) -> bytes:
        """A blob's bytes; FileNotFoundError when absent, ManifestError when over ``limit`` or a symlink."""
        self._check_blob_dir(digest.algorithm)
        try:
            data = self.storage.read_bytes(digest.blob_path(), limit=limit, nofollow=True)
        except OSError as e:
            if e.errno == errno.ELOOP:
                data = self._read_through_link(digest, limit)
            else:
                raise
        if limit is not None and len(data) > limit:
            raise BlobTooLarge(f"{self.where(digest.blob_path())}: larger than {limit} bytes")
        return data

    def open_blob(self, digest: Digest) -> BinaryIO:
        self._check_blob_dir(digest.algorithm)
        try:
            return self.storage.open_read(digest.blob_path(), nofollow=True)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return os.fdopen(self._open_link_target(digest), "rb")
            raise

    def link_target(self, digest: Digest) -> Path | None:
        """Where the digest-named symlink ``blobs/<alg>/<hex>`` leads (resolved), when it leads to a
        path under ``link_root``; None otherwise."""
        local = self.storage.local_path(digest.blob_path())
        if local is None:
            return None
        target = Path(os.path.realpath(local))
        if self.link_root is not None and target.is_relative_to(os.path.realpath(self.link_root)):
            return target
        if self.follow_blob_links and _is_layout_blob(target, digest):
            return target
        return None

    def _open_link_target(self, digest: Digest) -> int:
        """An fd on the regular file a digest-named symlink leads to, under ``link_root``; else refused."""
        where = self.where(digest.blob_path())
        target = self.link_target(digest)
        if target is None:
            raise ManifestError(f"{where}: is a symlink leading outside "
                                f"{_printable(str(self.link_root or self.storage.url))} (refused: sweep a directory "
                                "holding both ends)")
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise ManifestError(f"{where}: symlink target {_printable(str(target))}: {e.strerror or e} "
                                "(refused)") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ManifestError(f"{where}: symlink target {_printable(str(target))} is not a regular file "
                                "(refused)")
        return fd

    def _read_through_link(self, digest: Digest, limit: int | None) -> bytes:
        """A digest-named symlink's content, read through the link and verified against the name."""
        fd = self._open_link_target(digest)
        with os.fdopen(fd, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise ManifestError(f"{self.where(digest.blob_path())}: larger than {limit} bytes")
        if Digest.from_bytes(data, digest.algorithm) != digest:
            raise ManifestError(f"{self.where(digest.blob_path())}: symlink target's content does not match "
                                "its digest (refused)")
        return data

    def stat_blob(self, digest: Digest) -> FileStat | None:
        return self.storage.stat(digest.blob_path())

    def _check_blob_dir(self, algorithm: str) -> None:
        """Refuse ``blobs/`` when a symlink leads outside the layout, and ``blobs/<alg>/`` when it is a
        symlink at all: ``list_blobs`` never lists through it, so reading through it would make its
        blobs referenced yet absent (checked once)."""
        if algorithm in self._dirs_checked:
            return
        root = self.storage.local_path("")
        if root is not None:
            real_root = Path(os.path.realpath(root))
            blobs = root / BLOBS_DIR
            if blobs.is_symlink() and not Path(os.path.realpath(blobs)).is_relative_to(real_root):
                raise ManifestError(f"{self.where(BLOBS_DIR)}: symlink leads outside the layout "
                                    f"(to {_printable(os.path.realpath(blobs))})")
            alg_dir = blobs / algorithm
            if alg_dir.is_symlink():
                raise ManifestError(f"{self.where(f'{BLOBS_DIR}/{algorithm}')}: is a symlink (to "
                                    f"{_printable(os.path.realpath(alg_dir))}); never read through")
        self._dirs_checked.add(algorithm)

    def list_blobs(self) -> BlobListing:
        """List ``blobs/<alg>/`` without stat-ing entries: one listing per directory (on an object store,
        the listing's sizes and times go to ``stats``)."""
        try:
            return self._list_blobs()
        except FileNotFoundError as e:  # blobs/<alg>/ vanished between two listings
            raise LayoutError(describe_oserror(e, self.where(BLOBS_DIR))) from None
        except OSError as e:  # blobs/ or blobs/<alg>/ a file, unreadable, ...: the layout stops here
            raise LayoutError(f"{describe_oserror(e, self.where(BLOBS_DIR))} (cannot list the blobs)") from None

    def _list_blobs(self) -> BlobListing:
        out = BlobListing()
        try:
            algs = self.storage.list_dir(BLOBS_DIR)
        except FileNotFoundError:
            return out
        for alg in sorted(algs, key=lambda e: e.name):
            rel = f"{BLOBS_DIR}/{alg.name}"
            if alg.is_symlink:
                out.symlinks.append(rel)
                continue
            if not alg.is_dir:
                if alg.name in ALGORITHMS:  # blobs/sha256 a file: its blobs cannot be listed or read
                    raise NotADirectoryError(errno.ENOTDIR, "Not a directory", self.storage.join(rel))
                out.foreign.append(rel)
                continue
            if alg.name not in ALGORITHMS:
                out.unknown_algorithms.append(rel)
                continue
            stats = listing_stats(self.storage, rel)
            if stats is None:
                for entry in self.storage.list_dir(rel):
                    self._classify(out, alg.name, rel, entry)
                continue
            for name, st in stats.items():
                self._classify(out, alg.name, rel, DirEntry(name, st.is_dir))
                digest = None if st.is_dir else Digest.from_blob_name(alg.name, name)
                if digest is not None:
                    out.stats[digest] = st
        return out

    @staticmethod
    def _classify(out: BlobListing, alg: str, rel: str, entry: DirEntry) -> None:
        path = f"{rel}/{entry.name}"
        if entry.is_symlink:
            # Never a deletion candidate: ocigc neither reads nor deletes through a symlink (reported only).
            out.symlinks.append(path)
            linked = Digest.from_blob_name(alg, entry.name)
            if linked is not None:
                out.symlinked.add(linked)
            return
        digest = None if entry.is_dir else Digest.from_blob_name(alg, entry.name)
        if digest is not None:
            out.digests.add(digest)
        elif not entry.is_dir and is_temp_leftover(path):
            # A directory here (even one named like a writer's temp file, or one holding an
            # ``oci-layout``) is never a digest nor a leftover: reported as foreign, never deleted.
            out.temp.append(path)
        else:
            out.foreign.append(path)

    def list_temp_leftovers(self) -> list[str]:
        """Leftovers of writers at the layout root: ``ingest/``, ``oci-put-blob*``, ``.umoci-*``.

        A directory holding ``oci-layout`` is a layout wherever it is (a repository may be named
        ``ingest`` or ``.umoci-x``): nothing in it or below it is ever a leftover, at any depth, and a
        leftover-named directory that holds a layout further down keeps that subtree."""
        found: list[str] = []
        try:
            top = self.storage.list_dir("")
        except FileNotFoundError:
            return found
        for e in top:
            if e.is_symlink:
                continue
            if e.name == "ingest" and e.is_dir:
                # An empty ingest/ (a sweep killed after removing its files, before the rmdir) is a
                # leftover of its own, like an empty umoci temp directory.
                files, nested = self._walk_files("ingest")
                found.extend(files or ([] if nested else ["ingest/"]))
            elif e.name.startswith(".umoci-") and e.is_dir:
                files, nested = self._walk_files(e.name)
                # An empty umoci temp directory is itself the leftover ("<name>/": removed with rmdir,
                # which only ever removes an empty directory); one with a layout below it never is.
                found.extend(files or ([] if nested else [e.name + "/"]))
            elif not e.is_dir and (e.name.startswith("oci-put-blob") or e.name.startswith(TEMP_PREFIX)
                                   or (e.name.startswith("index.json") and e.name.endswith(".tmp"))):
                found.append(e.name)
        return sorted(found)

    def _walk_files(self, rel: str, depth: int = 0) -> tuple[list[str], bool]:
        """Files below ``rel`` (an empty directory as ``<path>/``), and whether a nested layout (a
        directory holding ``oci-layout``) lies at or below it: a nested layout is never walked nor a
        leftover. Symlinks are never followed nor listed."""
        out: list[str] = []
        try:
            entries = self.storage.list_dir(rel)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return out, False
        if any(e.name == OCI_LAYOUT_FILE for e in entries) or depth > 64:
            return [], True
        nested = False
        for e in entries:
            path = f"{rel}/{e.name}"
            if e.is_symlink:
                continue
            if e.is_dir:
                files, below = self._walk_files(path, depth + 1)
                # An empty directory is listed as "<path>/" (removed with rmdir, parents after it).
                out.extend(files or ([] if below else [path + "/"]))
                nested = nested or below
            else:
                out.append(path)
        return out, nested

    def holds_layout(self, rel: str) -> bool:
        """Whether directory ``rel`` of this layout is itself a layout (holds ``oci-layout``)."""
        return self.storage.stat(f"{rel}/{OCI_LAYOUT_FILE}") is not None


def _is_layout_blob(target: Path, digest: Digest) -> bool:
    """``target`` is ``<layout>/blobs/<alg>/<hex>`` of ``digest`` in a directory holding ``oci-layout``."""
    blobs = target.parent.parent
    return (target.name == digest.encoded and target.parent.name == digest.algorithm
            and blobs.name == BLOBS_DIR and (blobs.parent / OCI_LAYOUT_FILE).is_file())


def check_index_size(raw: bytes, where: str) -> None:
    """``LayoutError`` when ``raw`` (read with ``limit=MAX_INDEX_BYTES``) is over the cap."""
    if len(raw) > MAX_INDEX_BYTES:
        raise LayoutError(f"{where}: larger than {MAX_INDEX_BYTES // (1024 * 1024)} MiB (refused; "
                          "see docs/design.md, \"Bad input\")")


_printable = printable
