"""Push files to a layout as an oras artifact, and tag existing manifests.

The layout written is the one ``oras push --oci-layout`` writes (oras CLI ``cmd/oras/root/push.go``,
``file.go``, ``internal/option/packer.go``; oras-go ``pack.go``, ``content/file``, ``content/oci``):

- an OCI image manifest with ``artifactType`` (default ``application/vnd.unknown.artifact.v1``) and
  the empty config ``{}`` (``application/vnd.oci.empty.v1+json``, with its ``data``); with
  ``--config`` and no ``--artifact-type`` an image-spec v1.0 manifest (no ``artifactType``, config
  type default ``application/vnd.unknown.config.v1+json``); no files gives the empty descriptor as
  the single layer;
- ``org.opencontainers.image.title`` on each layer (the cleaned path as given), default layer type
  ``application/vnd.oci.image.layer.v1.tar``; a directory is packed as tar+gzip
  (``...tar+gzip``) with ``io.deis.oras.content.digest`` (sha256 of the tar) and
  ``io.deis.oras.content.unpack: "true"``;
- ``org.opencontainers.image.created`` (RFC 3339, UTC, seconds) on the manifest unless given;
- manifests serialised as Go's ``encoding/json`` does (struct field order, sorted annotation keys,
  ``<``/``>``/``&`` escaped), so a manifest ocigc packs is the one oras would pack;
- ``index.json``: one entry per tag with ``org.opencontainers.image.ref.name``; an untagged entry
  when pushed without a tag (the way oras records referrers); a tag that moves leaves its old
  manifest as an untagged entry when nothing else lists it (oras-go and containers/image do the same).

How blobs are stored depends on where the layout is (memory stays constant whatever the size):

- on a local disk, in one pass: each file streams into a temp file in ``blobs/<alg>/`` while it is
  hashed (dirty pages are flushed in the background as it goes); once the digest is known the temp
  file is fsynced and renamed to it, or dropped when a blob of that digest and size is there
  already. The bytes hashed are the bytes stored, whatever the source file does meanwhile;
- on a mounted bucket or ``s3://``, where writing is the expensive part, in two passes: files are
  hashed first, blobs already present with the right size are not written again, and the others
  are hashed again as they stream out, so that a file that changed in between is caught and never
  stored under a wrong digest.

Whatever the storage, a blob becomes visible under its digest name only when it is whole
(``LocalStorage.open_write_content``, ``S3Storage.open_write``): a temp file renamed into place on a
file system, FUSE mounts of buckets included (where the rename is a server-side copy); on ``s3://``
an object created by one PUT or by CompleteMultipartUpload after the last part. A push killed at
any point leaves at most a temp file (``sweep`` removes it after the grace period), never a short
blob under its digest. A blob already under the digest is trusted only with the declared size;
one of another size (written by an older or foreign writer) is replaced.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import posixpath
import queue
import re
import stat as stat_mod
import tarfile
import tempfile
import threading
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol

from ocigc.digest import Digest, is_digest
from ocigc.errors import (
    IntegrityError,
    InvalidDigest,
    LayoutError,
    LostRace,
    ManifestError,
    OcigcError,
    ReferenceNotFound,
    UsageError,
)
from ocigc.jsonload import load_json
from ocigc.layout.closure import require_closure
from ocigc.layout.indexio import update_index
from ocigc.layout.layout import INDEX_FILE, MAX_MANIFEST_BYTES, OCI_LAYOUT_FILE, Layout
from ocigc.lock.acquire import acquire
from ocigc.lock.handle import LockHandle, hold_for
from ocigc.oci.descriptor import (
    ANNOTATION_CREATED,
    ANNOTATION_REF_NAME,
    ANNOTATION_TITLE,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
)
from ocigc.oci.index import Index
from ocigc.oci.refs import Reference, parse_reference
from ocigc.parallel import pmap
from ocigc.progress import Counter, NullCounter, NullProgress, Progress
from ocigc.storage.base import StagesTemp, Storage, open_write_content, stager
from ocigc.storage.open_storage import open_storage

# --- oras conventions -------------------------------------------------------------------------
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_UNKNOWN_CONFIG = "application/vnd.unknown.config.v1+json"
MEDIA_TYPE_UNKNOWN_ARTIFACT = "application/vnd.unknown.artifact.v1"
ANNOTATION_CONTENT_DIGEST = "io.deis.oras.content.digest"
ANNOTATION_UNPACK = "io.deis.oras.content.unpack"
#: Keys of ``--annotation-file`` that are not file names.
ANNOTATION_FILE_MANIFEST = "$manifest"
ANNOTATION_FILE_CONFIG = "$config"

EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = Digest("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
OCI_LAYOUT_CONTENT = b'{"imageLayoutVersion":"1.0.0"}'
NEW_INDEX_CONTENT = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'

#: Streaming chunk size and the number of chunks in flight between the reading and writing threads.
CHUNK = 1024 * 1024
PIPELINE_DEPTH = 8
DEFAULT_PUSH_CONCURRENCY = 5  # oras push
GZIP_LEVEL = 6  # Go's compress/gzip DefaultCompression

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# --- Go encoding/json ---------------------------------------------------------------------------
_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029]')


def _go_string(s: str) -> str:
    return '"' + _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), s) + '"'


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's ``json.Marshal`` writes it. Dicts keep their order: build structs in
    field order and sort map keys (``annotations``) before calling."""
    out: list[str] = []
    _go_encode(value, out)
    return "".join(out).encode()


def _go_encode(v: Any, out: list[str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, str):
        out.append(_go_string(v))
    elif isinstance(v, Mapping):
        out.append("{")
        for i, (k, val) in enumerate(v.items()):
            if i:
                out.append(",")
            out.append(_go_string(str(k)))
            out.append(":")
            _go_encode(val, out)
        out.append("}")
    elif isinstance(v, list | tuple):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _go_encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def descriptor_json(media_type: str, digest: str, size: int, annotations: Mapping[str, str] | None = None,
                    data: str | None = None, artifact_type: str | None = None) -> dict[str, Any]:
    """A descriptor in the field order of image-spec's Go ``Descriptor`` struct."""
    d: dict[str, Any] = {"mediaType": media_type, "digest": str(digest), "size": size}
    if annotations:
        d["annotations"] = dict(sorted(annotations.items()))
    if data is not None:
        d["data"] = data
    if artifact_type:
        d["artifactType"] = artifact_type
    return d


def empty_descriptor(annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``ocispec.DescriptorEmptyJSON``: the ``{}`` blob, with its data inline (``e30=``)."""
    return descriptor_json(OCI_EMPTY, EMPTY_JSON_DIGEST, len(EMPTY_JSON), annotations, data="e30=")


def utc_now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_rfc3339(value: str, where: str) -> None:
    ok = bool(_RFC3339.match(value))
    if ok:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            ok = False
    if not ok:
        raise UsageError(f"{where}: {ANNOTATION_CREATED} must be an RFC 3339 date and time, got {value!r}")


# --- streaming ---------------------------------------------------------------------------------
class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def hash_file(path: str, algorithm: str = "sha256", counter: Counter | None = None) -> tuple[Digest, int]:
    """Digest and size of a local file, read in constant memory."""
    h = hashlib.new(algorithm)
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
            if counter is not None:
                counter.add(n)
    return Digest(f"{algorithm}:{h.hexdigest()}"), size


class SizeExceeded(OcigcError):
    """A stream held more bytes than its descriptor says."""

    exit_code = IntegrityError.exit_code


def _fill(src: BinaryIO, buf: bytearray) -> int:
    """Read into ``buf`` (``readinto`` when the stream has it); 0 at EOF."""
    readinto = getattr(src, "readinto", None)
    if readinto is not None:
        return int(readinto(buf) or 0)
    data = src.read(len(buf))
    buf[:len(data)] = data
    return len(data)


def copy_hashing(src: BinaryIO, write: Callable[[memoryview], object], algorithm: str = "sha256", *,
                 max_bytes: int | None = None, on_bytes: Callable[[int], None] | None = None,
                 where: str = "stream") -> tuple[Digest, int]:
    """Copy ``src`` to ``write`` until EOF, hashing every byte; returns the digest and the size.

    A helper thread reads and hashes while the calling thread writes, so hashing (CPU) overlaps
    the write (I/O). Chunks live in a fixed pool of ``PIPELINE_DEPTH + 2`` buffers of ``CHUNK``
    bytes, reused (constant memory, no allocation per chunk); ``write`` gets a memoryview it must
    not keep. With ``max_bytes`` the copy stops with SizeExceeded as soon as the stream holds more.
    """
    h = hashlib.new(algorithm)
    first = bytearray(CHUNK)
    n = _fill(src, first)
    if n < CHUNK:  # small (or a short read): finish inline when the stream ends here
        extra = bytearray(CHUNK)
        m = _fill(src, extra) if n else 0
        if not m:
            if max_bytes is not None and n > max_bytes:
                raise SizeExceeded(f"{where}: larger than the expected {max_bytes} bytes")
            view = memoryview(first)[:n]
            h.update(view)
            if n:
                write(view)
                if on_bytes:
                    on_bytes(n)
            return Digest(f"{algorithm}:{h.hexdigest()}"), n
        return _copy_pipelined(src, write, h, algorithm, [(first, n), (extra, m)], max_bytes, on_bytes, where)
    return _copy_pipelined(src, write, h, algorithm, [(first, n)], max_bytes, on_bytes, where)


def _copy_pipelined(src: BinaryIO, write: Callable[[memoryview], object], h: _Hasher, algorithm: str,
                    firsts: list[tuple[bytearray, int]], max_bytes: int | None,
                    on_bytes: Callable[[int], None] | None, where: str) -> tuple[Digest, int]:
    q: queue.Queue[tuple[bytearray, int] | BaseException | None] = queue.Queue(maxsize=PIPELINE_DEPTH)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(PIPELINE_DEPTH + 2 - len(firsts)):
        free.put(bytearray(CHUNK))
    stop = threading.Event()
    total = [0]

    def put(item: tuple[bytearray, int] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take() -> bytearray | None:
        while not stop.is_set():
            try:
                return free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def reader() -> None:
        try:
            pending = list(firsts)
            while True:
                if pending:
                    buf, n = pending.pop(0)
                else:
                    got = take()
                    if got is None:
                        return
                    buf, n = got, _fill(src, got)
                if not n:
                    put(None)
                    return
                total[0] += n
                if max_bytes is not None and total[0] > max_bytes:
                    raise SizeExceeded(f"{where}: larger than the expected {max_bytes} bytes")
                h.update(memoryview(buf)[:n])
                if not put((buf, n)):
                    return
        except BaseException as e:  # handed to the writer, which raises it
            put(e)

    t = threading.Thread(target=reader, name="ocigc-read", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            write(memoryview(buf)[:n])
            free.put(buf)
            if on_bytes:
                on_bytes(n)
    finally:
        stop.set()
        t.join()
    return Digest(f"{algorithm}:{h.hexdigest()}"), total[0]


# --- file arguments, titles, annotations --------------------------------------------------------
def parse_file_ref(text: str, default_media_type: str = "") -> tuple[str, str]:
    """``FILE[:MEDIATYPE]`` as oras parses it (``cmd/oras/internal/fileref/unix.go``): the media type
    follows the right-most ``:`` not escaped by a backslash; backslashes escape the next character.
    ``hi:txt:`` is the file ``hi:txt`` with the default type."""
    i = len(text)
    while True:
        i = text.rfind(":", 0, i)
        if i < 0 or not _escaped(text, i):
            break
    if i < 0:
        path, media_type = _unescape(text), default_media_type
    else:
        path, media_type = _unescape(text[:i]), text[i + 1:] or default_media_type
    if not path:
        raise UsageError(f"found empty file path in {text!r}")
    return path, media_type


def _escaped(text: str, offset: int) -> bool:
    n = 0
    i = offset - 1
    while i >= 0 and text[i] == "\\":
        n += 1
        i -= 1
    return n % 2 == 1


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 < len(text):
                out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def clean_path(path: str) -> str:
    """Go's ``filepath.Clean`` (POSIX): the shortest equivalent path, ``.`` for empty."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def title_problem(title: str) -> str | None:
    """Why a title would write outside the pull directory, or None when it is safe."""
    if not title:
        return "empty title"
    if "\x00" in title:
        return "title contains a NUL byte"
    if title.startswith("/"):
        return "absolute path"
    if ".." in title.split("/"):
        return "path contains '..'"
    return None


def parse_annotation_flags(flags: Sequence[str]) -> dict[str, str]:
    """``--annotation KEY=VALUE`` (repeatable), as oras: split at the first ``=``; a key twice is an error."""
    out: dict[str, str] = {}
    for anno in flags:
        key, sep, value = anno.partition("=")
        if not sep:
            raise UsageError(f"--annotation {anno!r}: annotation value doesn't match the required format KEY=VALUE")
        if key in out:
            raise UsageError(f"--annotation: duplicate annotation key {key!r}")
        out[key] = value
    return out


def load_annotation_file(path: str) -> dict[str, dict[str, str]]:
    """oras' ``--annotation-file``: ``{"$manifest": {...}, "$config": {...}, "<file>": {...}}``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(16 * 1024 * 1024 + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read the annotation file: {e.strerror or e}") from None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise UsageError(f"{path}: invalid annotation JSON file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: the annotation file must be a JSON object of objects")
    out: dict[str, dict[str, str]] = {}
    for key, value in doc.items():
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise UsageError(f"{path}: annotations of {key!r} must be an object of strings")
        out[key] = {str(k): v for k, v in value.items()}
    return out


# --- requests and results -----------------------------------------------------------------------
@dataclass
class PushRequest:
    layout_path: str
    tags: list[str]
    files: list[str] = field(default_factory=list)  # FILE[:MEDIATYPE] as given
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)  # --annotation (manifest)
    annotation_file: dict[str, dict[str, str]] | None = None
    config: str | None = None  # FILE[:MEDIATYPE]
    subject: str | None = None
    disable_path_validation: bool = False
    concurrency: int = DEFAULT_PUSH_CONCURRENCY
    lock_wait: float = 0.0
    #: Takes the shared lock (default: ``shared_locker(lock_wait, "push")``).
    locker: Locker | None = None
    #: Base directory for relative FILE paths (the working directory when None).
    cwd: str | None = None


@dataclass
class BlobSource:
    """One blob to push: where its bytes come from and what the manifest says about it."""

    descriptor: dict[str, Any]
    path: str | None = None  # local file (a packed directory's temp file too)
    data: bytes | None = None  # small inline blobs (the empty config, the manifest)
    label: str = ""
    uploaded: bool = False
    #: A temp file in the layout already holding these bytes (one-pass push on a local disk).
    staged: str | None = None

    @property
    def digest(self) -> Digest:
        return Digest(self.descriptor["digest"])

    @property
    def size(self) -> int:
        return int(self.descriptor["size"])


@dataclass
class PushResult:
    layout: str
    reference: str
    tags: list[str]
    descriptor: dict[str, Any]
    manifest: bytes
    blobs: list[BlobSource]
    warnings: list[str] = field(default_factory=list)
    index_changed: bool = True

    @property
    def digest(self) -> Digest:
        return Digest(self.descriptor["digest"])

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout, "reference": self.reference, "tags": self.tags,
            "mediaType": self.descriptor["mediaType"], "digest": self.descriptor["digest"],
            "size": self.descriptor["size"], "artifactType": self.descriptor.get("artifactType"),
            "blobs": [{"title": b.descriptor.get("annotations", {}).get(ANNOTATION_TITLE), "label": b.label,
                       "mediaType": b.descriptor["mediaType"], "digest": b.descriptor["digest"],
                       "size": b.size, "uploaded": b.uploaded} for b in self.blobs],
            "warnings": self.warnings,
        }


@dataclass
class _FileItem:
    raw: str
    path: str  # as given (a key of the annotation file)
    abs_path: str
    media_type: str
    title: str
    is_dir: bool


# --- layout creation and blobs --------------------------------------------------------------------
def ensure_layout(storage: Storage) -> Layout:
    """Open the layout, creating ``oci-layout``, ``index.json`` and ``blobs/sha256`` when missing
    (the files oras-go writes). An existing but invalid ``oci-layout`` is an error."""
    if storage.stat(OCI_LAYOUT_FILE) is not None:  # the common case: one stat
        layout = Layout.open(storage)
        if storage.stat(INDEX_FILE) is None:
            with contextlib.suppress(FileExistsError):
                storage.write_new(INDEX_FILE, NEW_INDEX_CONTENT)
        if storage.stat("blobs/sha256") is None:
            storage.makedirs("blobs/sha256")
        return layout
    st = storage.stat("")
    if st is None:
        storage.makedirs("")
    elif not st.is_dir:
        raise LayoutError(f"{storage.url}: not a directory")
    with contextlib.suppress(FileExistsError):
        storage.write_new(OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)
    layout = Layout.open(storage)
    if storage.stat(INDEX_FILE) is None:
        with contextlib.suppress(FileExistsError):
            storage.write_new(INDEX_FILE, NEW_INDEX_CONTENT)
    storage.makedirs("blobs/sha256")
    return layout


def blob_size_if_present(layout: Layout, digest: Digest) -> int | None:
    """The size of a blob, found by opening it (not by stat: s3fs's stat cache can claim a blob that
    another host deleted). None when it is absent."""
    try:
        f = layout.open_blob(digest)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with f:
        try:
            return os.fstat(f.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            st = layout.stat_blob(digest)
            return st.size if st else None


def write_blob(layout: Layout, blob: BlobSource, counter: Counter | None = None) -> bool:
    """Store one blob unless it is present with the right size; returns True when it wrote.

    A staged blob's temp file is published under the digest; any other streams from its source
    (``open_write_content``) while digest and size of what is written are checked."""
    digest, size = blob.digest, blob.size
    present = blob_size_if_present(layout, digest)
    if present == size:
        if counter is not None:
            counter.add(size)
        return False  # a staged temp file stays until the push ends (``discard_staged``)
    rel = digest.blob_path()
    if blob.staged is not None:  # a failed publish leaves it for ``discard_staged``
        stager(layout.storage).publish_temp(blob.staged, rel)
        blob.staged = None
        return True
    where = blob.path or blob.label or str(digest)
    with open_write_content(layout.storage, rel) as out:
        if blob.data is not None:
            got_digest, got_size = Digest.from_bytes(blob.data, digest.algorithm), len(blob.data)
            out.write(blob.data)
            if counter is not None:
                counter.add(got_size)
        else:
            if blob.path is None:  # a packed directory, stored earlier and removed since
                raise IntegrityError(f"{blob.label or digest}: {digest} was removed while pushing; push again")
            try:
                src = open(blob.path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise IntegrityError(f"{where}: vanished while pushing; nothing stored") from None
            with src:
                got_digest, got_size = copy_hashing(src, out.write, digest.algorithm, max_bytes=size,
                                                    on_bytes=counter.add if counter else None, where=where)
        if got_digest != digest or got_size != size:
            raise IntegrityError(f"{where}: changed while pushing (hashed {digest} ({size} bytes), "
                                 f"then read {got_digest} ({got_size} bytes)); nothing stored")
    return True


#: While a blob streams into a temp file on a local disk, a helper thread flushes its dirty pages
#: every this many bytes, so the disk writes overlap the hashing and the fsync before the rename
#: finds little left to do.
WRITEBACK_BYTES = 32 * CHUNK


class _Writeback:
    """``write`` to a file whose dirty pages a helper thread flushes (fdatasync) as they pile up."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.fd = out.fileno()
        self.pending = 0
        self.wake = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._run, name="ocigc-writeback", daemon=True)
        self.thread.start()

    def write(self, data: memoryview) -> None:
        self.out.write(data)
        self.pending += len(data)
        if self.pending >= WRITEBACK_BYTES:
            self.pending = 0
            self.out.flush()
            self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.done:
                return
            try:
                os.fdatasync(self.fd)
            except OSError:  # the fsync before the rename reports it
                return

    def close(self) -> None:
        self.done = True
        self.wake.set()
        self.thread.join()


def staged_blobs_here(storage: Storage) -> bool:
    """Whether push stages blobs in one pass (a local disk, where writing a temp copy is cheap)."""
    return isinstance(storage, StagesTemp) and storage.is_local_disk


def stage_file(layout: Layout, path: str, where: str, counter: Counter | None = None,
               algorithm: str = "sha256") -> tuple[Digest, int, str]:
    """Stream a local file into a temp file in ``blobs/<alg>/`` while hashing it (one pass).

    Returns the digest, the size and the temp file's name, for ``write_blob`` to publish under
    the digest (or for ``discard_staged``); the temp file is removed when this raises."""
    storage = layout.storage
    tmp_rel, tmp_path = stager(storage).new_temp(f"blobs/{algorithm}/staged")
    try:
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise IntegrityError(f"{where}: vanished while pushing; nothing stored") from None
        with src, open(tmp_path, "wb") as out:
            wb = _Writeback(out)
            try:
                digest, size = copy_hashing(src, wb.write, algorithm,
                                            on_bytes=counter.add if counter else None, where=where)
            finally:
                wb.close()
    except BaseException:
        stager(storage).discard_temp(tmp_rel)
        raise
    return digest, size, tmp_rel


def discard_staged(layout: Layout, blobs: Sequence[BlobSource]) -> None:
    """Remove the temp files of staged blobs that were not published (present already, or failed)."""
    for b in blobs:
        if b.staged is not None:
            stager(layout.storage).discard_temp(b.staged)
            b.staged = None


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


# --- push -----------------------------------------------------------------------------------------
#: Takes the layout's lock for a writer's run (the shared lock) and returns the handle.
Locker = Callable[[Layout], contextlib.AbstractContextManager[LockHandle]]


def shared_locker(wait: float = 0.0, command: str = "") -> Locker:
    """The default locker: the layout's shared lock, waiting up to ``wait`` seconds (else LockBusy, 75)."""

    def locker(layout: Layout) -> contextlib.AbstractContextManager[LockHandle]:
        return acquire(layout, "shared", wait=wait, command=command)

    return locker


def _prepare_files(req: PushRequest, annotation_file: Mapping[str, Mapping[str, str]]) -> list[_FileItem]:
    items: list[_FileItem] = []
    seen: dict[str, str] = {}
    base = req.cwd or os.getcwd()
    for raw in req.files:
        path, media_type = parse_file_ref(raw)
        title = clean_path(path)
        if not req.disable_path_validation:
            if os.path.isabs(path):
                raise UsageError(f"{path}: absolute file path detected. If it's intentional, "
                                 f"use --disable-path-validation to skip this check")
            if ".." in title.split("/"):
                raise UsageError(f"{path}: path leaves the working directory ('..'); a pull would refuse "
                                 f"its title. If it's intentional, use --disable-path-validation")
        abs_path = path if os.path.isabs(path) else os.path.join(base, path)
        try:
            st = os.stat(abs_path)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file or directory") from None
        except OSError as e:
            raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
        is_dir = stat_mod.S_ISDIR(st.st_mode)
        if not is_dir and not stat_mod.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: not a regular file or directory")
        if title in seen:
            raise UsageError(f"{path}: duplicate file name {title!r} (also given as {seen[title]!r})")
        seen[title] = path
        final_title = annotation_file.get(path, {}).get(ANNOTATION_TITLE, title)
        if not req.disable_path_validation and (problem := title_problem(final_title)):
            raise UsageError(f"{path}: title {final_title!r} is unsafe to pull ({problem})")
        if title == "." and not is_dir:
            raise UsageError(f"{path}: a file needs a name")
        items.append(_FileItem(raw, path, abs_path, media_type, title, is_dir))
    return items


def _resolve_subject(layout: Layout, index: Index, text: str) -> dict[str, Any]:
    """``--subject``: a tag or digest of the same layout (``TAG``, ``sha256:...``, ``@sha256:...``,
    ``PATH:TAG``, ``PATH@DIGEST``), as a plain descriptor (mediaType, digest, size)."""
    ref: Reference
    bare = text[1:] if text.startswith("@") else text
    if is_digest(bare):
        ref = Reference(layout.location, None, Digest(bare))
    elif "/" not in text and ":" not in text and "@" not in text:
        ref = Reference(layout.location, text)
    else:
        ref = parse_reference(text)
        if ref.tag is None and ref.digest is None:
            raise UsageError(f"--subject {text!r}: needs a tag or a digest")
        if os.path.realpath(ref.path) != os.path.realpath(layout.location):
            raise UsageError(f"--subject {text!r}: the subject must be in the layout pushed to ({layout.location})")
    desc = resolve_manifest(layout, index, ref)
    # A referrer of a manifest whose closure is incomplete would hang off a broken image: refuse.
    require_closure(layout, _as_descriptor(layout, desc), "attach a referrer to")
    return descriptor_json(desc["mediaType"], desc["digest"], desc["size"])


def _as_descriptor(layout: Layout, entry: Mapping[str, Any]) -> Descriptor:
    try:
        return Descriptor.from_json(dict(entry), layout.where("index.json"))
    except (ValueError, InvalidDigest) as e:
        raise ManifestError(str(e)) from None


def resolve_manifest(layout: Layout, index: Index, ref: Reference) -> dict[str, Any]:
    """The raw ``index.json`` entry (a copy) a tag or digest names; for a digest with no entry, a
    plain descriptor read from the blob. ReferenceNotFound when there is none."""
    if ref.tag is None and ref.digest is None:
        raise UsageError(f"{ref}: needs a tag or a digest")
    raw_list = index.doc.get("manifests") or []
    if ref.tag is not None:
        found = [i for i, e in enumerate(index.entries) if e.ref_name == ref.tag]
        if not found:
            raise ReferenceNotFound(f"{ref.path}: no tag {ref.tag!r} in index.json")
        digests = {index.entries[i].digest for i in found}
        if len(digests) > 1:
            raise ManifestError(f"{ref.path}: tag {ref.tag!r} names {len(digests)} different manifests in "
                                f"index.json ({', '.join(sorted(d.short for d in digests))})")
        entry = copy.deepcopy(raw_list[found[-1]])
    else:
        assert ref.digest is not None
        found = [i for i, e in enumerate(index.entries) if e.digest == ref.digest]
        entry = copy.deepcopy(raw_list[found[0]]) if found else _plain_from_blob(layout, ref.digest, str(ref))
    if not entry.get("mediaType"):
        entry["mediaType"] = _plain_from_blob(layout, Digest(entry["digest"]), str(ref))["mediaType"]
    if blob_size_if_present(layout, Digest(entry["digest"])) is None:
        raise IntegrityError(f"{layout.where(Digest(entry['digest']).blob_path())}: manifest of {ref} is missing")
    return dict(entry)


def _plain_from_blob(layout: Layout, digest: Digest, what: str) -> dict[str, Any]:
    try:
        raw = layout.read_blob(digest, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ReferenceNotFound(f"{what}: no such manifest in the layout") from None
    try:
        doc = load_json(raw, limit=None)
    except ValueError as e:
        raise ManifestError(f"{layout.where(digest.blob_path())}: {what} is not a manifest ({e})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{layout.where(digest.blob_path())}: {what} is not a manifest")
    mt = doc.get("mediaType")
    if not isinstance(mt, str) or not mt:
        if isinstance(doc.get("manifests"), list):
            mt = OCI_INDEX
        elif isinstance(doc.get("config"), dict):
            mt = OCI_MANIFEST
        else:
            raise ManifestError(f"{layout.where(digest.blob_path())}: {what} is not a manifest")
    return descriptor_json(mt, digest, len(raw))


def _without_ref_name(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(entry))
    annotations = dict(out.get("annotations") or {})
    annotations.pop(ANNOTATION_REF_NAME, None)
    if annotations:
        out["annotations"] = annotations
    else:
        out.pop("annotations", None)
    return out


def with_ref_name(entry: Mapping[str, Any], tag: str) -> dict[str, Any]:
    out = _without_ref_name(entry)
    out["annotations"] = dict(sorted({**(out.get("annotations") or {}), ANNOTATION_REF_NAME: tag}.items()))
    # keep the Go field order: annotations before data/platform/artifactType
    ordered: dict[str, Any] = {k: out[k] for k in ("mediaType", "digest", "size", "urls", "annotations") if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    return ordered


def set_tag(index: Index, entry: Mapping[str, Any], tag: str) -> Index:
    """Point ``tag`` at ``entry`` (an index.json descriptor without ref name), as oras-go does:

    - entries carrying ``tag`` for another digest lose it; one whose digest nothing else lists
      stays, untagged, at its place (so a moved tag never silently drops a root);
    - untagged entries for ``entry``'s digest go (the tagged entry replaces them);
    - the tagged entry is appended. Nothing changes when ``tag`` already names that digest."""
    digest = entry["digest"]
    raw_list = list(index.doc.get("manifests") or [])
    current = [e for e in index.entries if e.ref_name == tag]
    if current and all(e.digest == digest for e in current):
        return index
    keep_digests = {e.digest for e in index.entries if e.ref_name not in (None, tag)}
    new_list: list[Any] = []
    untagged_kept: set[str] = set()
    for raw, e in zip(raw_list, index.entries, strict=True):
        if e.ref_name == tag:
            if e.digest == digest or e.digest in keep_digests or e.digest in untagged_kept:
                continue
            if any(o.digest == e.digest and o.ref_name is None for o in index.entries):
                continue  # an untagged entry for it is already there
            new_list.append(_without_ref_name(raw))
            untagged_kept.add(e.digest)
        elif e.ref_name is None and e.digest == digest:
            continue
        else:
            new_list.append(raw)
    new_list.append(with_ref_name(entry, tag))
    doc = copy.deepcopy(index.doc)
    doc["manifests"] = new_list
    return Index.parse(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


def add_untagged(index: Index, entry: Mapping[str, Any]) -> Index:
    """Record ``entry`` untagged unless ``index.json`` already lists its digest."""
    if index.entries_for(entry["digest"]):
        return index
    return index.with_entries([_without_ref_name(entry)])


def push(req: PushRequest, progress: Progress | None = None) -> PushResult:
    """Pack, upload and record an artifact; see the module docstring for the layout written."""
    progress = progress or NullProgress()
    if req.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    for tag in req.tags:
        if not tag or any(c.isspace() for c in tag):
            raise UsageError(f"{req.layout_path}: invalid tag {tag!r}")
    afile = req.annotation_file or {}
    if req.annotation_file is not None and req.annotations:
        raise UsageError("--annotation and --annotation-file cannot both be given")
    manifest_annotations = (dict(afile.get(ANNOTATION_FILE_MANIFEST, {})) if req.annotation_file is not None
                            else dict(req.annotations))
    config_annotations = dict(afile.get(ANNOTATION_FILE_CONFIG, {}))
    created = manifest_annotations.get(ANNOTATION_CREATED)
    if created is not None:
        check_rfc3339(created, "annotations")
    items = _prepare_files(req, afile)
    warnings = [f"--annotation-file: {key!r} matches no file pushed (ignored)" for key in afile
                if key not in (ANNOTATION_FILE_MANIFEST, ANNOTATION_FILE_CONFIG) and key not in {i.path for i in items}]

    # oras: --config without --artifact-type packs an image-spec v1.0 manifest
    spec_v1_0 = req.config is not None and not req.artifact_type
    artifact_type = req.artifact_type or (None if req.config else MEDIA_TYPE_UNKNOWN_ARTIFACT)
    if spec_v1_0 and req.subject:
        raise UsageError("--subject needs --artifact-type when --config is given (image-spec v1.0 has no subject)")
    config_item: tuple[str, str, str] | None = None
    if req.config is not None:
        cpath, cmt = parse_file_ref(req.config, MEDIA_TYPE_UNKNOWN_CONFIG)
        cabs = cpath if os.path.isabs(cpath) else os.path.join(req.cwd or os.getcwd(), cpath)
        if not os.path.isfile(cabs):
            raise UsageError(f"{cpath}: --config: no such file")
        config_item = (cpath, cabs, cmt)

    storage = open_storage(req.layout_path)
    if req.subject and storage.stat(OCI_LAYOUT_FILE) is None:
        raise ReferenceNotFound(f"{req.layout_path}: no layout there, so no subject {req.subject!r}")
    one_pass = staged_blobs_here(storage)
    blobs: list[BlobSource] = []
    with tempfile.TemporaryDirectory(prefix="ocigc-push-") as tmp:
        if not one_pass:  # hash first, so that blobs already in the bucket are not uploaded
            blobs = _hash_sources(items, afile, config_item, config_annotations, tmp, req.concurrency, progress)
        layout = ensure_layout(storage)
        locker = req.locker or shared_locker(req.lock_wait, "push")
        with locker(layout) as handle, contextlib.ExitStack() as cleanup:
            if one_pass:  # stream every file into the layout while hashing it
                cleanup.callback(lambda: discard_staged(layout, blobs))
                blobs = _hash_sources(items, afile, config_item, config_annotations, tmp, req.concurrency,
                                      progress, stage_in=layout)
            layers = [b for b in blobs if b.label != "$config"]
            config_blob = next((b for b in blobs if b.label == "$config"), None)
            if config_blob is None:
                config_blob = BlobSource(empty_descriptor(config_annotations or None), data=EMPTY_JSON,
                                         label="$config")
            if not layers and not spec_v1_0:
                layers = [BlobSource(empty_descriptor(), data=EMPTY_JSON, label="(empty)")]
            if ANNOTATION_CREATED not in manifest_annotations:
                manifest_annotations[ANNOTATION_CREATED] = utc_now_rfc3339()
            subject = _resolve_subject(layout, layout.read_index(), req.subject) if req.subject else None
            manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
            if artifact_type and not spec_v1_0:
                manifest["artifactType"] = artifact_type
            manifest["config"] = config_blob.descriptor
            manifest["layers"] = [b.descriptor for b in layers]
            if subject is not None:
                manifest["subject"] = subject
            manifest["annotations"] = dict(sorted(manifest_annotations.items()))
            manifest_bytes = go_json(manifest)
            manifest_digest = Digest.from_bytes(manifest_bytes)
            # oras-go pushManifest: the descriptor carries artifactType (the config type in v1.0) and
            # the manifest annotations; oras-go's index.json entry is that descriptor plus the ref name.
            entry = descriptor_json(OCI_MANIFEST, manifest_digest, len(manifest_bytes), manifest["annotations"],
                                    artifact_type=config_blob.descriptor["mediaType"] if spec_v1_0 else artifact_type)
            manifest_blob = BlobSource(entry, data=manifest_bytes, label="manifest")
            all_blobs = _unique([config_blob, *layers])
            _upload(layout, all_blobs, req.concurrency, progress)
            manifest_blob.uploaded = write_blob(layout, manifest_blob)

            def mutate(index: Index) -> Index:
                # Inside the short exclusive hold: a delete or sweep (which remove blobs only under an
                # exclusive hold) may have removed a blob we skipped as present; store it again before
                # index.json names it, so the merge never commits a dangling reference.
                pmap(lambda b: write_blob(layout, b), [*all_blobs, manifest_blob], req.concurrency)
                for tag in req.tags:
                    index = set_tag(index, entry, tag)
                if not req.tags:
                    index = add_untagged(index, entry)
                return index

            handle.ensure_held()
            result = update_index(layout, mutate, hold=hold_for(handle))
            verify_present(layout, [*all_blobs, manifest_blob], req.concurrency)
    ref = f"{req.layout_path}:{','.join(req.tags)}" if req.tags else f"{req.layout_path}@{manifest_digest}"
    return PushResult(layout.location, ref, list(req.tags), entry, manifest_bytes,
                      [config_blob, *layers, manifest_blob], warnings, result.changed)


def _unique(blobs: list[BlobSource]) -> list[BlobSource]:
    seen: set[str] = set()
    out = []
    for b in blobs:
        if b.descriptor["digest"] not in seen:
            seen.add(b.descriptor["digest"])
            out.append(b)
    return out


def _hash_sources(items: list[_FileItem], afile: Mapping[str, Mapping[str, str]], config: tuple[str, str, str] | None,
                  config_annotations: Mapping[str, str], tmp: str, jobs: int, progress: Progress,
                  stage_in: Layout | None = None) -> list[BlobSource]:
    """Hash every file and pack every directory (in a pool); the descriptors oras would write.

    With ``stage_in`` (a layout on a local disk, under its lock) files are streamed into temp files
    of the layout as they are hashed and directories packed straight into one: ``BlobSource.staged``.
    """
    total = sum(os.path.getsize(i.abs_path) for i in items if not i.is_dir)
    counter = progress.counter("push" if stage_in is not None else "hash", total=total or None, unit="B")
    staged: list[BlobSource] = []  # removed again if another item fails
    staged_lock = threading.Lock()

    def one(item: _FileItem) -> BlobSource:
        if item.is_dir:
            tmp_rel = None
            if stage_in is not None:
                tmp_rel, out_path = stager(stage_in.storage).new_temp("blobs/sha256/staged")
                out = str(out_path)
            else:
                out = os.path.join(tmp, f"{uuid.uuid4().hex}.tar.gz")
            try:
                packed = pack_directory(item.abs_path, item.title, out)
            except BaseException:
                if stage_in is not None and tmp_rel is not None:
                    stager(stage_in.storage).discard_temp(tmp_rel)
                raise
            annotations = {ANNOTATION_CONTENT_DIGEST: str(packed.tar_digest), ANNOTATION_UNPACK: "true",
                           ANNOTATION_TITLE: item.title}
            annotations.update(afile.get(item.path, {}))
            desc = descriptor_json(item.media_type or MEDIA_TYPE_LAYER_GZIP, packed.digest, packed.size, annotations)
            blob = BlobSource(desc, path=None if tmp_rel else packed.path, label=item.path, staged=tmp_rel)
        elif stage_in is not None:
            digest, size, tmp_rel = stage_file(stage_in, item.abs_path, item.path, counter)
            annotations = {ANNOTATION_TITLE: item.title, **afile.get(item.path, {})}
            desc = descriptor_json(item.media_type or MEDIA_TYPE_LAYER, digest, size, annotations)
            blob = BlobSource(desc, path=item.abs_path, label=item.path, staged=tmp_rel)
        else:
            digest, size = hash_file(item.abs_path, counter=counter)
            annotations = {ANNOTATION_TITLE: item.title, **afile.get(item.path, {})}
            desc = descriptor_json(item.media_type or MEDIA_TYPE_LAYER, digest, size, annotations)
            return BlobSource(desc, path=item.abs_path, label=item.path)
        with staged_lock:
            staged.append(blob)
        return blob

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items) or 1))) as pool:
            blobs = list(pool.map(one, items))
    except BaseException:
        if stage_in is not None:
            discard_staged(stage_in, staged)
        raise
    counter.close()
    if config is not None:
        _cpath, cabs, cmt = config
        digest, size = hash_file(cabs)
        blobs.append(BlobSource(descriptor_json(cmt, digest, size, config_annotations or None), path=cabs,
                                label="$config"))
    return blobs


def _upload(layout: Layout, blobs: list[BlobSource], jobs: int, progress: Progress) -> None:
    streamed = [b for b in blobs if b.staged is None]  # staged ones were counted as they streamed
    counter = (progress.counter("push", total=sum(b.size for b in streamed) or None, unit="B") if streamed
               else NullCounter())

    def one(b: BlobSource) -> None:
        b.uploaded = write_blob(layout, b, None if b.staged is not None else counter)

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(blobs)))) as pool:
        for _ in pool.map(one, blobs):
            pass
    counter.close()


def verify_present(layout: Layout, blobs: Sequence[BlobSource], jobs: int = DEFAULT_PUSH_CONCURRENCY) -> None:
    """After the merge: every blob the manifest references opens with the right size."""
    problems = []
    descs = [b.descriptor for b in blobs]
    sizes = pmap(lambda desc: blob_size_if_present(layout, Digest(desc["digest"])), descs, jobs)
    for desc, got in zip(descs, sizes, strict=True):
        d = Digest(desc["digest"])
        if got is None:
            problems.append(f"{d} missing")
        elif got != desc["size"]:
            problems.append(f"{d} has {got} bytes, expected {desc['size']}")
    if problems:
        raise IntegrityError(f"{layout.where('blobs')}: after the index.json merge: {'; '.join(problems)} "
                             f"(a concurrent sweep or writer removed it; push again)")


# --- tag --------------------------------------------------------------------------------------------
@dataclass
class TagResult:
    layout: str
    source: str
    digest: Digest
    tags: list[str]
    changed: bool


def tag(layout_path: str, source: Reference, new_tags: Sequence[str], *, lock_wait: float = 0.0,
        locker: Locker | None = None) -> TagResult:
    """Add tags to an existing manifest (``oras tag --oci-layout``), under the index.json protocol.
    Each new entry copies the source entry (annotations, artifactType, ...) with the new ref name."""
    if not new_tags:
        raise UsageError("give at least one new tag")
    for t in new_tags:
        if not t or any(c.isspace() for c in t) or "/" in t:
            raise UsageError(f"invalid tag {t!r}")
    storage = open_storage(layout_path)
    layout = Layout.open(storage)
    with (locker or shared_locker(lock_wait, "tag"))(layout) as handle:
        entry = resolve_manifest(layout, layout.read_index(), source)
        base = _without_ref_name(entry)
        # Tagging makes the manifest reachable (again): its whole closure must be there first. Under
        # the shared lock no sweep or delete removes blobs, so checking once here holds for the update.
        require_closure(layout, _as_descriptor(layout, base), "tag")

        def mutate(index: Index) -> Index:
            # re-resolve on the fresh index: the source tag may have moved since
            fresh = resolve_manifest(layout, index, source)
            if fresh["digest"] != base["digest"]:
                raise LostRace(f"{source}: moved to {fresh['digest']} while tagging; run again")
            for t in new_tags:
                index = set_tag(index, base, t)
            return index

        handle.ensure_held()
        result = update_index(layout, mutate, hold=hold_for(handle))
        if blob_size_if_present(layout, Digest(base["digest"])) is None:
            raise IntegrityError(f"{layout.where(Digest(base['digest']).blob_path())}: tagged manifest vanished")
    return TagResult(layout.location, str(source), Digest(base["digest"]), list(new_tags), result.changed)

