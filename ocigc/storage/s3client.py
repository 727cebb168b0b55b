"""The botocore side of the native S3 backend (``ocigc.storage.s3``): one client per (endpoint, bucket)
shared by every ``S3Storage`` of the process, requests with botocore's errors turned into
``OSError`` subclasses (or ``S3Error`` for bucket-level ones), the probe of conditional requests,
and the fields of S3's answers (bodies, times, ETags). The only module that imports botocore (and
s3transfer, for copies over 5 GiB).

Endpoint, region and credentials come the standard AWS way (environment, profiles,
``AWS_ENDPOINT_URL``); ``open_storage`` passes the CLI's ``--endpoint-url``.
``OCIGC_S3_CONDITIONAL=auto|on|off`` forces the conditional capability (``auto``: probe).
"""

from __future__ import annotations

import errno
import io
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ocigc.errors import OcigcError
from ocigc.storage.base import OpCounter, PreconditionFailed

if TYPE_CHECKING:
    from ocigc.storage.behind import BucketBehind

try:  # the optional extra (boto3's own import, about 50 ms more, is not needed: botocore's session is)
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound
except ImportError as _e:  # pragma: no cover - depends on the installation
    raise ImportError("s3:// locations need boto3: pip install 'ocigc[s3]'") from _e

#: Retries of a 409 ConditionalRequestConflict (a concurrent conditional operation on the key).
CONFLICT_RETRIES = 5
#: Directory of the capability probe objects, under the storage's root prefix.
PROBE_DIR = ".ocigc/probe"
CONDITIONAL_ENV = "OCIGC_S3_CONDITIONAL"
ADDRESSING_ENV = "OCIGC_S3_ADDRESSING_STYLE"

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION = frozenset({"PreconditionFailed", "412"})
_CONFLICT = frozenset({"ConditionalRequestConflict", "409", "OperationAborted"})
_DENIED = frozenset({"AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
#: An ETag no object has: conditional requests with it must fail.
_WRONG_ETAG = '"00000000000000000000000000000000"'


#: Background work of this process (probe clean-up): joined by ``finish_background``.
_BACKGROUND: list[threading.Thread] = []
_BACKGROUND_MU = threading.Lock()


def finish_background(timeout: float = 60.0) -> None:
    """Wait for this process's background clean-up (the probe objects) to end."""
    with _BACKGROUND_MU:
        threads, _BACKGROUND[:] = list(_BACKGROUND), []
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


class S3Error(OcigcError):
    """The bucket cannot be used at all: no credentials, no such bucket, access denied, no endpoint."""


class ConditionalWritesWarning(UserWarning):
    """The server ignores conditional requests: ocigc falls back to the lock-file protocol."""


class ConflictingRequest(OSError):
    """409 ConditionalRequestConflict: retry."""


def is_not_found_code(code: Any) -> bool:
    """An error code of a DeleteObjects answer that means the key was already gone."""
    return code in _NOT_FOUND


def _code(e: ClientError) -> str:
    err = e.response.get("Error", {}) if isinstance(e.response, dict) else {}
    code = str(err.get("Code") or "")
    status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")) if isinstance(
        e.response, dict) else ""
    return code or status


def _status(e: ClientError) -> int:
    try:
        return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    except (TypeError, ValueError, AttributeError):
        return 0


def _is(e: ClientError, codes: frozenset[str]) -> bool:
    return _code(e) in codes or str(_status(e)) in codes


def etag_of(value: Any) -> str:
    return str(value or "")


@dataclass
class Bucket:
    """One bucket at one endpoint, with its client and what the probe found (per process)."""

    bucket: str
    endpoint_url: str | None
    client: Any
    #: Probe results, per process: None until probed.
    conditional: bool | None = None
    conditional_delete: bool | None = None
    probe_reason: str = ""
    mu: threading.Lock = field(default_factory=threading.Lock)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _at(self) -> str:
        return f" at {self.endpoint_url}" if self.endpoint_url else ""

    def call(self, op: str, where: str, **kwargs: Any) -> Any:
        """One request (``where`` names the object for messages); botocore errors become OSError
        subclasses (or S3Error for bucket-level ones)."""
        try:
            return getattr(self.client, op)(**kwargs)
        except ClientError as e:
            raise self._translate(e, where) from None
        except NoCredentialsError:
            raise S3Error(f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                          "AWS_PROFILE or an instance role)") from None
        except BotoCoreError as e:
            raise S3Error(f"{where}: {e}") from None

    def _translate(self, e: ClientError, where: str) -> Exception:
        code = _code(e)
        message = str(e.response.get("Error", {}).get("Message") or code) if isinstance(e.response, dict) else code
        if code == "NoSuchBucket":
            return S3Error(f"s3://{self.bucket}: no such bucket{self._at()}")
        if code == "NoSuchUpload":
            return FileNotFoundError(errno.ENOENT, f"{where}: multipart upload vanished")
        if _is(e, _NOT_FOUND):
            return FileNotFoundError(errno.ENOENT, "No such file or directory", where)
        if _is(e, _PRECONDITION):
            return PreconditionFailed(errno.EEXIST, f"{where}: precondition failed (changed by another writer)")
        if _is(e, _CONFLICT):
            return ConflictingRequest(errno.EAGAIN, f"{where}: conflicting concurrent request ({code})")
        if _is(e, _DENIED):
            return S3Error(f"{where}: access denied ({message}){self._at()}")
        return OSError(errno.EIO, f"{where}: {code}: {message}")

    def retrying(self, op: str, where: str, **kwargs: Any) -> Any:
        """``call`` with 409 conflicts retried."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                return self.call(op, where, **kwargs)
            except ConflictingRequest:
                if attempt + 1 == CONFLICT_RETRIES:
                    raise PreconditionFailed(errno.EAGAIN, f"{where}: kept conflicting with concurrent "
                                             f"requests (409) {CONFLICT_RETRIES} times") from None
                time.sleep(0.02 * (attempt + 1) * (1 + (uuid.uuid4().int % 100) / 100))
        raise AssertionError("unreachable")  # pragma: no cover

    def copy_large(self, source: dict[str, str], key: str, where: str) -> None:
        """A copy larger than 5 GiB: a multipart copy (s3transfer's managed transfer, as boto3's
        ``client.copy`` does)."""
        from s3transfer.manager import TransferManager

        try:
            with TransferManager(self.client) as manager:
                manager.copy(source, self.bucket, key).result()
        except ClientError as e:
            raise self._translate(e, where) from None

    def conditional_writes(self, probe: Callable[[], tuple[bool, bool, str]]) -> bool:
        """Does the server honour ``If-None-Match: *`` and ``If-Match``? ``probe`` asks it, once per
        bucket and process, unless ``OCIGC_S3_CONDITIONAL`` forces the answer."""
        if self.conditional is not None:
            return self.conditional
        with self.mu:
            if self.conditional is None:
                forced = (os.environ.get(CONDITIONAL_ENV) or "auto").strip().lower()
                if forced in ("off", "0", "no", "false"):
                    self.conditional, self.conditional_delete = False, False
                    self.probe_reason = f"{CONDITIONAL_ENV}={forced}"
                elif forced in ("on", "1", "yes", "true"):
                    self.conditional, self.conditional_delete = True, True
                    self.probe_reason = f"{CONDITIONAL_ENV}={forced}"
                else:
                    ok, cond_delete, why = probe()
                    self.conditional_delete = cond_delete
                    self.probe_reason = why
                    self.conditional = ok
                    if not ok:
                        warnings.warn(f"{self.where}: the server does not honour conditional writes ({why}); "
                                      "falling back to the lock-file protocol (no atomic create, no "
                                      "compare-and-swap of index.json)", ConditionalWritesWarning, stacklevel=3)
        return bool(self.conditional)

    def probe(self, root_key: str, counter: OpCounter) -> tuple[bool, bool, str]:
        """Two round trips: create two probe objects with ``If-None-Match: *``; then, at once, a second
        ``If-None-Match: *`` PUT of the first (must fail with 412), a PUT of it with ``If-Match`` on a
        wrong ETag (must fail), and a DELETE of the second with ``If-Match`` on a wrong ETag (must not
        delete; a second object, so that a store which ignores that condition cannot make the first
        check pass or fail by deleting the first). The objects go to ``<root_key>/.ocigc/probe/``
        (where we may write) and are removed in the background (``finish_background``)."""
        base = f"{root_key}/{PROBE_DIR}" if root_key else PROBE_DIR
        token = uuid.uuid4().hex
        key, key_del = f"{base}/{token}", f"{base}/{token}-delete"

        def put(k: str, data: bytes, **extra: str) -> None:
            counter.add("write")
            self.retrying("put_object", f"s3://{self.bucket}/{k}", Bucket=self.bucket, Key=k, Body=data, **extra)

        def delete_if_wrong_etag() -> None:
            self.call("delete_object", f"s3://{self.bucket}/{key_del}", Bucket=self.bucket, Key=key_del,
                      IfMatch=_WRONG_ETAG)

        created: list[str] = []
        try:
            with ThreadPoolExecutor(3, thread_name_prefix="ocigc-probe") as pool:
                firsts = {k: pool.submit(put, k, b"ocigc conditional-write probe\n", IfNoneMatch="*")
                          for k in (key, key_del)}
                errors = {k: f.exception() for k, f in firsts.items()}
                created = [k for k, e in errors.items() if e is None]
                failed = next((e for e in errors.values() if e is not None), None)
                if isinstance(failed, S3Error):
                    raise failed
                if failed is not None:
                    return False, False, f"a PUT with If-None-Match failed: {failed}"
                second = pool.submit(put, key, b"second\n", IfNoneMatch="*")
                third = pool.submit(put, key, b"third\n", IfMatch=_WRONG_ETAG)
                fourth = pool.submit(delete_if_wrong_etag)
                e2, e3, e4 = second.exception(), third.exception(), fourth.exception()
            for e in (e2, e3, e4):
                if e is not None and not isinstance(e, OSError):
                    raise e
            if e2 is None:
                return False, False, "a second PUT with If-None-Match: * of the same key succeeded"
            if not isinstance(e2, PreconditionFailed):
                raise e2
            if e3 is None:
                return False, False, "a PUT with If-Match on a wrong ETag succeeded"
            if not isinstance(e3, (PreconditionFailed, FileNotFoundError)):
                raise e3
            if isinstance(e4, (PreconditionFailed, FileNotFoundError)):
                return True, True, "conditional writes and deletes honoured"
            if e4 is not None:
                return True, False, "conditional writes honoured; conditional delete rejected"
            counter.add("stat")
            try:
                self.call("head_object", f"s3://{self.bucket}/{key_del}", Bucket=self.bucket, Key=key_del)
                cond_delete = True
            except FileNotFoundError:
                cond_delete = False
            return True, cond_delete, ("conditional writes and deletes honoured" if cond_delete
                                       else "conditional writes honoured; conditional delete ignored")
        except S3Error as e:
            return False, False, f"probe failed: {e}"
        finally:
            self._clean_up_probe(created, base, counter)

    def _clean_up_probe(self, keys: list[str], base: str, counter: OpCounter) -> None:
        """Delete the probe objects, then the folders a store may keep for them (SeaweedFS), in a
        thread of its own: the command goes on meanwhile; the process waits for it before it exits
        (not a daemon) and ``finish_background`` joins it. Deleting a folder key never removes what
        is under it (a store with folders refuses or ignores it), so our own later writes are safe."""

        def run() -> None:
            for k in keys:
                with suppress(Exception):
                    self.client.delete_object(Bucket=self.bucket, Key=k)
            for folder in (base, base.rsplit("/", 1)[0]):
                with suppress(Exception):
                    self._remove_if_empty_folder(f"{folder}/", counter)

        t = threading.Thread(target=run, name="ocigc-probe-cleanup")
        with _BACKGROUND_MU:
            _BACKGROUND.append(t)
        t.start()

    def _remove_if_empty_folder(self, prefix: str, counter: OpCounter) -> None:
        """Stores with a real directory tree (SeaweedFS's filer) keep a folder after its last key is
        deleted and list it, in a listing with a delimiter, as the object ``prefix`` itself: delete that
        when nothing else is under it."""
        counter.add("list")
        page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, Delimiter="/", MaxKeys=2)
        keys = [str(o["Key"]) for o in page.get("Contents") or []]
        if keys == [prefix] and not page.get("CommonPrefixes"):
            counter.add("remove")
            self.client.delete_object(Bucket=self.bucket, Key=prefix)


_BUCKETS: dict[tuple[str | None, str], Bucket] = {}
_BUCKETS_MU = threading.Lock()


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(endpoint_url: str | None, *, region: str | None = None, addressing_style: str | None = None,
                access_key_id: str | None = None, secret_access_key: str | None = None,
                session_token: str | None = None, profile: str | None = None, anonymous: bool = False) -> Any:
    """A botocore S3 client. Unset parts come the standard AWS way (environment, profiles); the
    addressing style defaults to ``OCIGC_S3_ADDRESSING_STYLE``, else path style with an endpoint.
    ``ocigc.storage.behind.BucketBehind.client_options`` gives the arguments a mount uses."""
    style = addressing_style or os.environ.get(ADDRESSING_ENV) or (
        "path" if endpoint_url or _env_endpoint() else "auto")
    config = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 5},
                    s3={"addressing_style": style}, connect_timeout=10, read_timeout=120,
                    **({"signature_version": UNSIGNED} if anonymous else {}))
    try:
        session = botocore.session.Session(profile=None if access_key_id else profile)
        if access_key_id:
            session.set_credentials(access_key_id, secret_access_key, session_token)
        return session.create_client("s3", region_name=region, endpoint_url=endpoint_url, config=config)
    except ProfileNotFound as e:
        raise S3Error(f"profile {profile}: {e}") from None


def bucket_client(bucket: str, endpoint_url: str | None, client: Any = None) -> Bucket:
    """The process's ``Bucket`` for (endpoint, bucket); a new one when ``client`` is another client."""
    key = (endpoint_url, bucket)
    with _BUCKETS_MU:
        found = _BUCKETS.get(key)
        if found is None or (client is not None and found.client is not client):
            found = Bucket(bucket, endpoint_url or _env_endpoint(), client or make_client(endpoint_url))
            _BUCKETS[key] = found
        return found


_BEHIND: dict[tuple[str, ...], Bucket] = {}


def behind_bucket(behind: BucketBehind) -> Bucket:
    """The process's ``Bucket`` for the bucket behind a mount, reached as the mount reaches it (its
    endpoint, region, addressing style and credentials): one client and one probe per process."""
    options = behind.client_options()
    key = (behind.bucket, *(f"{k}={v}" for k, v in sorted(options.items())))
    with _BUCKETS_MU:
        found = _BEHIND.get(key)
        if found is None:
            found = Bucket(behind.bucket, behind.endpoint_url, make_client(**options))
            _BEHIND[key] = found
        return found


def reset_clients() -> None:
    """Forget the per-process clients and probe results (tests), once their clean-up is done."""
    finish_background()
    with _BUCKETS_MU:
        _BUCKETS.clear()
        _BEHIND.clear()


class BodyReader(io.RawIOBase):
    """A GET's body as a read-only binary stream (no fileno, no seek)."""

    def __init__(self, body: Any) -> None:
        super().__init__()
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return cast(bytes, self._body.read())
        return cast(bytes, self._body.read(size))

    def close(self) -> None:
        if not self.closed:
            with suppress(Exception):
                self._body.close()
        super().close()


def mtime_of(value: Any) -> float:
    ts = getattr(value, "timestamp", None)
    return float(ts()) if ts is not None else 0.0


def head_mtime(head: dict[str, Any]) -> float:
    """``x-amz-meta-mtime`` (what s3fs and rclone write) when present, else LastModified."""
    meta = head.get("Metadata") or {}
    for key in ("mtime", "Mtime"):
        raw = meta.get(key)
        if raw:
            with suppress(ValueError):
                return float(raw)
    return mtime_of(head.get("LastModified"))
