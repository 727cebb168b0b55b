"""HTTP pieces of the registry client: streamed upload bodies, download streams, and reading a
registry's answers (media types, errors, Retry-After, what a failed connection was)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NoReturn

import requests
from requests.adapters import HTTPAdapter

from ocigc.errors import IntegrityError
from ocigc.transfer.registry_model import (
    CHUNK,
    RegistryAuthError,
    RegistryRejected,
    StreamInterrupted,
)

_LINK_NEXT = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")


class _BlockAdapter(HTTPAdapter):
    """An adapter whose connections send bodies in 1 MiB blocks (urllib3's default is 16 KiB)."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs.setdefault("blocksize", CHUNK)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


class _UploadBody:
    """A streamed request body of a known length, read from ``src`` as the request goes out.

    ``requests`` sees ``__len__`` (Content-Length) and ``read`` (streamed, never buffered whole).
    A source that ends early or gives more bytes than announced is an error of the source, kept
    in ``error`` (the request then fails and the caller reports this error, not the network one).
    """

    def __init__(self, src: BinaryIO, size: int, on_bytes: Callable[[int], None] | None) -> None:
        self._src = src
        self._size = size
        self._on_bytes = on_bytes
        self.sent = 0
        self.error: Exception | None = None

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        want = self._size - self.sent
        if want <= 0:
            return b""
        n = want if n is None or n < 0 else min(n, want)
        try:
            data = self._src.read(n)
        except Exception as e:
            self.error = e
            raise
        if not data:
            self.error = IntegrityError(f"source ended after {self.sent} of {self._size} bytes")
            raise self.error
        self.sent += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        return data

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk


class ResponseStream:
    """A blob download as a read-only binary stream; errors mid-stream become StreamInterrupted."""

    def __init__(self, response: requests.Response, where: str) -> None:
        self._response = response
        self._where = where
        self.size = int(response.headers.get("Content-Length") or -1)

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._response.raw.read(None if n is None or n < 0 else n, decode_content=True)
        except Exception as e:  # urllib3 and socket errors: the connection broke
            raise StreamInterrupted(f"{self._where}: download interrupted ({_short(e)})") from None
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Restart(Exception):
    """Internal: restart an upload from its POST (after a re-authentication or a transient failure)."""

    def __init__(self, reason: str, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.transient = transient
        self.retry_after = retry_after


# --- helpers ---------------------------------------------------------------------------------------
def _short(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def _tls_problem(e: BaseException) -> str:
    """``certificate verify failed: self-signed certificate`` out of urllib3's nested message."""
    m = re.search(r"\[SSL(?:: [A-Z_]+)?\] ([^()'\"]+?)(?: \(_ssl|['\")]|$)", str(e))
    return m.group(1).strip() if m else _short(e)


def _connection_problem(e: BaseException) -> str:
    text = str(e)
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    if "Connection reset" in text or "RemoteDisconnected" in text or "Connection aborted" in text:
        return "connection reset"
    if isinstance(e, requests.Timeout):
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text or "NameResolution" in text:
        return "host name not found"
    return _short(e)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _media_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip()


def _own_media_type(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return ""
    mt = doc.get("mediaType") if isinstance(doc, dict) else None
    return mt if isinstance(mt, str) else ""


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        raise RegistryRejected(f"{response.url}: response is not JSON") from None
    return doc if isinstance(doc, dict) else {}


def _error_of(response: requests.Response) -> tuple[str, str]:
    """The first ``{"errors": [{"code", "message"}]}`` of an error response."""
    try:
        doc = json.loads(response.content or b"{}")
    except ValueError:
        return "", response.text[:120].strip() if response.content else ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code") or ""), str(errors[0].get("message") or "")
    return "", ""


def _raise_for(response: requests.Response, what: str) -> NoReturn:
    code, message = _error_of(response)
    response.close()
    status = response.status_code
    if status == 403:
        raise RegistryAuthError(f"{what}: access denied (403{' ' + code if code else ''})")
    detail = f" {code}" if code else ""
    detail += f": {message}" if message else ""
    raise RegistryRejected(f"{what}: {status}{detail}", status, code)
