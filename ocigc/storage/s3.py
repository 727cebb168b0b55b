"""Native object-store access: ``s3://bucket/prefix`` through boto3 (``pip install 'ocigc[s3]'``).

``S3Storage`` implements the ``Storage`` protocol on the keys under a prefix. Directories are key
prefixes: ``list_dir`` is ListObjectsV2 with ``Delimiter="/"``; there are no directory objects
(``makedirs`` sends nothing; a marker object ``dir/``, written by s3fs or a console, or kept by a
store with a real directory tree such as SeaweedFS after the folder's last key is gone, is
understood and skipped, and ``remove_dir`` deletes it).

On top of the protocol it offers what the core uses when present:

* ``list_blobs_with_stats``: names, sizes and times of a directory from the listing itself (one
  request per 1,000 keys), so a sweep needs no HEAD per candidate;
* ``remove_many``: DeleteObjects, 1,000 keys per request;
* conditional requests (``ConditionalStorage``): ``put_if_absent`` (``If-None-Match: *``),
  ``put_if_match`` (``If-Match``), ``delete_if_match`` and ``read_with_etag``. Whether the server
  honours them is probed at first use (``conditional_writes``): some S3-compatible servers accept
  the headers and ignore them. Where the probe fails, a one-line ``ConditionalWritesWarning``
  says so and callers fall back to the lock-file protocol.

Writes are single PUTs up to ``MULTIPART_THRESHOLD`` and streamed multipart uploads above it, whose
parts are sent while the next one fills (``PARTS_IN_FLIGHT`` at once in the process); an upload
that fails is aborted. Either way an object appears whole or not at all: a PUT whose body
is cut off is rejected, and the parts of a multipart upload stay invisible until
CompleteMultipartUpload, sent only after the writer's block ended without error (the caller has
checked digest and size by then). A process killed half-way leaves at most an incomplete multipart
upload (invisible, billed until aborted: an ``AbortIncompleteMultipartUpload`` lifecycle rule,
``docs/object-storage.md``), never a short object under a blob's name. Blobs
(``blobs/<alg>/<hex>``) are created only if absent where the store honours ``If-None-Match``; one
already there of another size (truncated by another writer) is replaced. A 409
``ConditionalRequestConflict`` is retried.

Requests, the client per bucket, error translation and the probe: ``ocigc.storage.s3client``
(endpoint, credentials, ``OCIGC_S3_CONDITIONAL``).
"""

from __future__ import annotations

import errno
import io
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, cast

from ocigc.errors import UsageError
from ocigc.storage.base import GLOBAL_COUNTER, DirEntry, FileStat, OpCounter, PreconditionFailed, normalize_rel
from ocigc.storage.s3client import (
    CONFLICT_RETRIES,
    BodyReader,
    Bucket,
    ConflictingRequest,
    bucket_client,
    etag_of,
    head_mtime,
    is_not_found_code,
    mtime_of,
)

#: Objects up to this size are written with one PUT; larger ones with a multipart upload.
MULTIPART_THRESHOLD = 16 * 1024 * 1024
#: Part size of multipart uploads (S3: at least 5 MiB except the last part, at most 10,000 parts).
#: It doubles every ``PARTS_PER_SIZE`` parts, so 10,000 parts hold about 480 GiB.
PART_SIZE = 8 * 1024 * 1024
PARTS_PER_SIZE = 2000
#: DeleteObjects takes at most 1,000 keys.
DELETE_BATCH = 1000
#: Objects up to this size are read back when a create-only PUT meets one already there.
READ_BACK_LIMIT = 64 * 1024
_BLOB_REL = re.compile(r"(?:^|/)blobs/[a-z0-9]+/[0-9a-f]{32,}$")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix/`` -> (bucket, "prefix"); UsageError for anything else."""
    if not url.startswith("s3://"):
        raise UsageError(f"{url!r}: not an s3:// location")
    rest = url[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket):
        raise UsageError(f"{url!r}: needs a bucket name (s3://BUCKET/PREFIX)")
    try:
        return bucket, normalize_rel(prefix)
    except ValueError:
        raise UsageError(f"{url!r}: '..' is not allowed in an s3:// prefix") from None


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


#: Parts of multipart uploads in flight at once, across the process. Each holds one part in
#: memory (48 MiB in all below 16 GiB); the writer fills the next part meanwhile. Measured on
#: SeaweedFS, a 1 GiB push peaked at 130 MiB of RSS with one 16 MiB part at a time, 187 MiB with
#: four, 146 MiB with six of 8 MiB.
PARTS_IN_FLIGHT = 6
_PART_SLOTS = threading.BoundedSemaphore(PARTS_IN_FLIGHT)
_PART_POOL: ThreadPoolExecutor | None = None
_PART_POOL_MU = threading.Lock()


def _part_pool() -> ThreadPoolExecutor:
    global _PART_POOL
    with _PART_POOL_MU:
        if _PART_POOL is None:
            _PART_POOL = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="ocigc-part")
        return _PART_POOL


class _Writer(io.RawIOBase):
    """Buffers up to one part; a single PUT when small, a multipart upload otherwise, its parts sent
    while the next fills (at most ``PARTS_IN_FLIGHT`` in the process), aborted on failure."""

    def __init__(self, storage: S3Storage, rel: str, create_only: bool) -> None:
        super().__init__()
        self.storage = storage
        self.rel = rel
        self.key = storage._key(rel)
        self.create_only = create_only
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size

    def write(self, b: Any) -> int:
        data = memoryview(b).cast("B")
        self._buf += data
        self._size += len(data)
        while len(self._buf) >= max(part := self._part_size(), MULTIPART_THRESHOLD if self._upload_id is None else 0):
            with memoryview(self._buf) as view:
                chunk = bytes(view[:part])
            self._upload_part(chunk)
            del self._buf[:part]
        return len(data)

    def _part_size(self) -> int:
        return PART_SIZE << (len(self._parts) // PARTS_PER_SIZE)

    def _upload_part(self, chunk: bytes) -> None:
        s = self.storage
        if self._upload_id is None:
            s.counter.add("write")
            resp = s._call("create_multipart_upload", self.rel, Bucket=s.bucket, Key=self.key, **s._metadata())
            self._upload_id = str(resp["UploadId"])
        for done in self._parts:  # a part that failed ends the upload now, not after the rest is read
            if done.done() and done.exception() is not None:
                raise cast(BaseException, done.exception())
        n = len(self._parts) + 1
        upload_id = self._upload_id

        def send() -> dict[str, Any]:
            s.counter.add("write")
            resp = s._call("upload_part", self.rel, Bucket=s.bucket, Key=self.key, UploadId=upload_id,
                           PartNumber=n, Body=chunk)
            return {"ETag": resp["ETag"], "PartNumber": n}

        _PART_SLOTS.acquire()  # bounds the parts held in memory; given back when this one has ended
        try:
            part = _part_pool().submit(send)
        except BaseException:
            _PART_SLOTS.release()
            raise
        part.add_done_callback(lambda _: _PART_SLOTS.release())  # sent, failed or cancelled
        self._parts.append(part)

    def _sent_parts(self) -> list[dict[str, Any]]:
        """Waits for every part; the first failure is raised once all have ended."""
        wait(self._parts)
        for f in self._parts:
            if f.exception() is not None:
                raise cast(BaseException, f.exception())
        return [f.result() for f in self._parts]

    def finish(self) -> None:
        s = self.storage
        if self._upload_id is None:
            data = bytes(self._buf)
            self._buf.clear()
            if self.create_only:
                s._create_blob(self.rel, data)
            else:
                s._put(self.rel, data)
            return
        if self._buf or not self._parts:
            self._upload_part(bytes(self._buf))
            self._buf.clear()
        parts = self._sent_parts()
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if self.create_only else {}
        for attempt in range(CONFLICT_RETRIES):
            s.counter.add("write")
            try:
                s._call("complete_multipart_upload", self.rel, Bucket=s.bucket, Key=self.key,
                        UploadId=self._upload_id, MultipartUpload={"Parts": parts}, **extra)
                self._upload_id = None
                return
            except PreconditionFailed:
                # An object is there already. Content-addressed: of the right size it is this blob
                # (another writer stored it); of another size it is truncated or foreign (an s3fs
                # writer killed half-way), and the complete upload replaces it. A failed
                # precondition leaves the upload open, so it can still be completed.
                if s._blob_size(self.rel) == self._size:
                    self.abort()
                    return
                extra = {}
                continue
            except ConflictingRequest:
                time.sleep(0.05 * (attempt + 1))
        self.abort()
        raise OSError(errno.EAGAIN, f"{s.join(self.rel)}: upload kept conflicting with another request")

    def abort(self) -> None:
        s = self.storage
        if self._upload_id is None:
            return
        upload_id, self._upload_id = self._upload_id, None
        for f in self._parts:
            f.cancel()
        wait(self._parts)  # a part still being sent would outlive the abort and be stored
        s.counter.add("remove")
        with suppress(Exception):
            s.client.abort_multipart_upload(Bucket=s.bucket, Key=self.key, UploadId=upload_id)


# --------------------------------------------------------------------------------------------
# The storage
# --------------------------------------------------------------------------------------------
class S3Storage:
    """Keys under ``s3://bucket/prefix``; see the module docstring."""

    #: S3 is strongly consistent (read-after-write, listings): a short settle suffices for the
    #: lock-file protocol when conditional writes are missing.
    settle_hint = 0.2
    #: User metadata written with every object (``BehindMountStorage``: what a mount shows as mode).
    object_metadata: dict[str, str] | None = None

    def __init__(self, bucket: Bucket, prefix: str = "", counter: OpCounter | None = None) -> None:
        self._b = bucket
        self.bucket = bucket.bucket
        self.client = bucket.client
        self.prefix = normalize_rel(prefix)
        self.counter = counter if counter is not None else GLOBAL_COUNTER

    @classmethod
    def from_url(cls, url: str, counter: OpCounter | None = None, endpoint_url: str | None = None,
                 client: Any = None) -> S3Storage:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket_client(bucket, endpoint_url, client), prefix, counter)

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    # --- naming --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, rel: str) -> str:
        rel = normalize_rel(rel)
        if not self.prefix:
            return rel
        return f"{self.prefix}/{rel}" if rel else self.prefix

    def join(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self._key(rel)}"

    def child(self, rel: str) -> S3Storage:
        return S3Storage(self._b, self._key(rel), self.counter)

    def local_path(self, rel: str = "") -> Path | None:
        return None

    # --- requests --------------------------------------------------------------------------------
    def _call(self, op: str, rel: str, **kwargs: Any) -> Any:
        return self._b.call(op, self.join(rel), **kwargs)

    def _retrying(self, op: str, rel: str, **kwargs: Any) -> Any:
        return self._b.retrying(op, self.join(rel), **kwargs)

    def _pages(self, prefix: str, delimiter: str | None = None, max_keys: int | None = None,
               rel: str = "") -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if max_keys:
            kwargs["MaxKeys"] = max_keys
        while True:
            self.counter.add("list")
            page = self._call("list_objects_v2", rel, **kwargs)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token or max_keys:
                return
            kwargs["ContinuationToken"] = token

    def _dir_prefix(self, rel: str) -> str:
        key = self._key(rel)
        return f"{key}/" if key else ""

    def _is_dir(self, rel: str) -> bool:
        prefix = self._dir_prefix(rel)
        if not prefix:
            return True
        # with a delimiter, as ``list_dir`` lists: a store that keeps emptied folders shows one as the
        # key ``dir/`` in such a listing only
        for page in self._pages(prefix, delimiter="/", max_keys=1, rel=rel):
            return bool(page.get("KeyCount") or page.get("Contents") or page.get("CommonPrefixes"))
        return False

    def _head(self, rel: str) -> dict[str, Any] | None:
        self.counter.add("stat")
        try:
            return cast(dict[str, Any], self._call("head_object", rel, Bucket=self.bucket, Key=self._key(rel)))
        except FileNotFoundError:
            return None

    # --- Storage protocol ------------------------------------------------------------------------
    def list_dir(self, rel: str = "") -> list[DirEntry]:
        return [DirEntry(name, st.is_dir) for name, st in self._list(rel).items()]

    def list_blobs_with_stats(self, rel: str) -> dict[str, FileStat]:
        """Every entry of a directory, with size and LastModified from the listing (one request per 1,000)."""
        return self._list(rel)

    def _list(self, rel: str) -> dict[str, FileStat]:
        prefix = self._dir_prefix(rel)
        out: dict[str, FileStat] = {}
        marker = False
        for page in self._pages(prefix, delimiter="/", rel=rel):
            for cp in page.get("CommonPrefixes") or []:
                name = str(cp["Prefix"])[len(prefix):].rstrip("/")
                if name and "/" not in name:
                    out.setdefault(name, FileStat(0, 0.0, True))
            for obj in page.get("Contents") or []:
                name = str(obj["Key"])[len(prefix):]
                if not name:
                    marker = True  # an s3fs directory marker object
                    continue
                if "/" in name:
                    continue
                out[name] = FileStat(int(obj.get("Size") or 0), mtime_of(obj.get("LastModified")), False)
        if not out and not marker and prefix:
            if self._head(rel) is not None:
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", self.join(rel))
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", self.join(rel))
        return out

    def stat(self, rel: str) -> FileStat | None:
        if not normalize_rel(rel) and not self.prefix:
            self.counter.add("stat")
            try:
                self._call("head_bucket", "", Bucket=self.bucket)
            except FileNotFoundError:
                return None
            return FileStat(0, 0.0, True)
        if normalize_rel(rel):
            head = self._head(rel)
            if head is not None:
                return FileStat(int(head.get("ContentLength") or 0), head_mtime(head), False)
        return FileStat(0, 0.0, True) if self._is_dir(rel) else None

    def object_size(self, rel: str) -> int | None:
        """One HEAD: the object's size, None when there is no object ``rel`` (a prefix is none)."""
        head = self._head(rel)
        return int(head.get("ContentLength") or 0) if head is not None else None

    def read_bytes(self, rel: str, limit: int | None = None, nofollow: bool = False) -> bytes:
        return self._get(rel, limit)[0]

    def read_with_etag(self, rel: str, limit: int | None = None) -> tuple[bytes, str]:
        data, etag = self._get(rel, limit)
        return data, etag

    def _get(self, rel: str, limit: int | None) -> tuple[bytes, str]:
        self.counter.add("read")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(rel)}
        if limit is not None:
            kwargs["Range"] = f"bytes=0-{limit}"
        try:
            resp = self._call("get_object", rel, **kwargs)
        except FileNotFoundError:
            if normalize_rel(rel) and self._is_dir(rel):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", self.join(rel)) from None
            raise
        except OSError as e:
            if limit is not None and "InvalidRange" in str(e):  # an empty object asked for a range
                return self._get(rel, None)
            raise
        with resp["Body"] as body:
            data = body.read()
        return data, etag_of(resp.get("ETag"))

    def open_read(self, rel: str, nofollow: bool = False) -> BinaryIO:
        self.counter.add("open")
        try:
            resp = self._call("get_object", rel, Bucket=self.bucket, Key=self._key(rel))
        except FileNotFoundError:
            if normalize_rel(rel) and self._is_dir(rel):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", self.join(rel)) from None
            raise
        return cast(BinaryIO, io.BufferedReader(BodyReader(resp["Body"]), buffer_size=1024 * 1024))

    def _metadata(self) -> dict[str, Any]:
        return {"Metadata": self.object_metadata} if self.object_metadata else {}

    def _put(self, rel: str, data: bytes, **extra: Any) -> str:
        self.counter.add("write")
        resp = self._retrying("put_object", rel, Bucket=self.bucket, Key=self._key(rel), Body=data, **extra,
                              **self._metadata())
        return etag_of(resp.get("ETag"))

    def write_bytes(self, rel: str, data: bytes) -> None:
        if len(data) > MULTIPART_THRESHOLD:
            with self.open_write(rel) as f:
                f.write(data)
            return
        if self._create_only(rel):
            self._create_blob(rel, data)
        else:
            self._put(rel, data)

    def write_new(self, rel: str, data: bytes) -> None:
        if self.conditional_writes():
            self.put_if_absent(rel, data)
            return
        # Without conditional writes: as atomic as a FUSE mount (check, then write).
        if self._head(rel) is not None:
            raise FileExistsError(errno.EEXIST, "File exists", self.join(rel))
        self._put(rel, data)

    @contextmanager
    def open_write(self, rel: str) -> Iterator[BinaryIO]:
        writer = _Writer(self, rel, self._create_only(rel))
        try:
            yield cast(BinaryIO, writer)
            writer.finish()
        except BaseException:
            writer.abort()
            raise

    def _create_only(self, rel: str) -> bool:
        return _BLOB_REL.search(normalize_rel(rel)) is not None and self.conditional_writes()

    def _create_blob(self, rel: str, data: bytes) -> None:
        """A blob is created only if absent; one already there with the same size is the same content."""
        try:
            self.put_if_absent(rel, data)
        except FileExistsError:
            if self._blob_size(rel) != len(data):
                self._put(rel, data)  # replace a truncated or foreign object under the digest's name

    def _blob_size(self, rel: str) -> int | None:
        head = self._head(rel)
        return int(head.get("ContentLength") or 0) if head is not None else None

    def rename(self, src: str, dst: str) -> None:
        """Copy, then delete the source (S3 has no rename). FileNotFoundError when ``src`` is gone."""
        self.counter.add("rename")
        source = {"Bucket": self.bucket, "Key": self._key(src)}
        try:
            self._call("copy_object", src, CopySource=source, Bucket=self.bucket, Key=self._key(dst))
        except OSError as e:
            if "EntityTooLarge" not in str(e) and "InvalidRequest" not in str(e):
                raise
            self._b.copy_large(source, self._key(dst), self.join(src))  # larger than 5 GiB
        self.counter.add("remove")
        self._call("delete_object", src, Bucket=self.bucket, Key=self._key(src))

    def remove(self, rel: str) -> bool:
        if self._head(rel) is None:
            return False
        self.counter.add("remove")
        self._call("delete_object", rel, Bucket=self.bucket, Key=self._key(rel))
        return True

    def remove_many(self, rels: list[str]) -> list[tuple[str, str]]:
        """Delete many keys with DeleteObjects (1,000 per request); returns (rel, problem) for failures.
        A key that is already gone counts as removed."""
        failures: list[tuple[str, str]] = []
        by_key = {self._key(r): r for r in rels}
        keys = list(by_key)
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start:start + DELETE_BATCH]
            self.counter.add("remove")
            try:
                resp = self._call("delete_objects", by_key[chunk[0]], Bucket=self.bucket,
                                  Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
            except OSError as e:
                failures.extend((by_key[k], str(e)) for k in chunk)
                continue
            for err in resp.get("Errors") or []:
                key = str(err.get("Key"))
                if is_not_found_code(err.get("Code")):
                    continue
                failures.append((by_key.get(key, key), f"{err.get('Code')}: {err.get('Message')}"))
        return failures

    def remove_dir(self, rel: str) -> bool:
        """Directories are prefixes: True when nothing (but a folder object, now removed) is left under it.

        A folder object is an s3fs or console marker ``dir/``, or the folder a store with a real
        directory tree (SeaweedFS's filer) keeps after its last key is deleted; the latter shows only
        in a listing with a delimiter, as the key ``dir/`` itself."""
        prefix = self._dir_prefix(rel)
        if not prefix:
            return False
        keys: list[str] = []
        for page in self._pages(prefix, delimiter="/", max_keys=2, rel=rel):
            keys = [str(o["Key"]) for o in page.get("Contents") or []]
            if page.get("CommonPrefixes"):
                return False
        if any(k != prefix for k in keys):
            return False
        if prefix in keys:
            self.counter.add("remove")
            self._call("delete_object", rel, Bucket=self.bucket, Key=prefix)
            return True
        return False

    def makedirs(self, rel: str) -> None:
        """Nothing to do: a prefix exists once a key under it does."""

    # --- conditional requests --------------------------------------------------------------------
    def put_if_absent(self, rel: str, data: bytes) -> str:
        """Create ``rel`` with ``data`` only if absent (``If-None-Match: *``); FileExistsError when it exists.

        A PUT retried after its answer was lost (a timeout, a connection reset on the way back)
        finds the object its first attempt stored and gets 412: a small object (a lock file, a
        lease, whose bytes name their owner) that holds exactly ``data`` is ours, not a conflict."""
        try:
            return self._put(rel, data, IfNoneMatch="*")
        except PreconditionFailed:
            if len(data) <= READ_BACK_LIMIT:
                try:
                    body, etag = self._get(rel, READ_BACK_LIMIT + 1)
                except FileNotFoundError:
                    body, etag = None, ""
                if body == data:
                    return etag
            raise FileExistsError(errno.EEXIST, "File exists", self.join(rel)) from None

    def put_if_match(self, rel: str, data: bytes, etag: str) -> str:
        return self._put(rel, data, IfMatch=etag)

    def delete_if_match(self, rel: str, etag: str) -> bool:
        if not self._b.conditional_delete:
            # The server ignores If-Match on DELETE: compare, then delete (a small window remains).
            head = self._head(rel)
            if head is None or etag_of(head.get("ETag")) != etag:
                return False
            self.counter.add("remove")
            self._call("delete_object", rel, Bucket=self.bucket, Key=self._key(rel))
            return True
        self.counter.add("remove")
        try:
            self._retrying("delete_object", rel, Bucket=self.bucket, Key=self._key(rel), IfMatch=etag)
        except (PreconditionFailed, FileNotFoundError):
            return False
        return True

    def conditional_writes(self) -> bool:
        """Does the server honour ``If-None-Match: *`` and ``If-Match``? Probed once per bucket and process."""
        return self._b.conditional_writes(lambda: self._b.probe(self.prefix, self.counter))


class BehindMountStorage(S3Storage):
    """The keys behind a path on a FUSE mount of a bucket, reached through the bucket's API
    (``ocigc.storage.via``): requests as ``S3Storage``, names as the mount's paths (what the user
    typed), and objects written with the metadata the mount shows as a file's mode."""

    def __init__(self, bucket: Bucket, prefix: str, counter: OpCounter | None, display_root: str,
                 object_metadata: dict[str, str] | None = None) -> None:
        super().__init__(bucket, prefix, counter)
        self.display_root = display_root
        self.object_metadata = object_metadata

    def __repr__(self) -> str:
        return f"BehindMountStorage({self.display_root!r} -> {self.s3_url!r})"

    @property
    def url(self) -> str:
        return self.display_root

    @property
    def s3_url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def join(self, rel: str) -> str:
        rel = normalize_rel(rel)
        return f"{self.display_root.rstrip('/')}/{rel}" if rel else self.display_root

    def child(self, rel: str) -> BehindMountStorage:
        return BehindMountStorage(self._b, self._key(rel), self.counter, self.join(rel), self.object_metadata)


__all__ = ["BehindMountStorage", "S3Storage", "parse_s3_url"]
