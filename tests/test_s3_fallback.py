"""A server that accepts conditional headers and ignores them (mountx#19, s3gw#674): simulated by a small
HTTP proxy on 127.0.0.1 in front of moto that strips ``If-None-Match`` and ``If-Match``. The probe must
notice, say so in one ``warning:`` line, and ocigc must fall back to the lock-file protocol and the
temp-file-free, read-back-checked ``index.json`` update; commands still work.
"""

from __future__ import annotations

import http.client
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from ocigc.layout.indexio import update_index
from ocigc.lock import acquire as lock
from ocigc.lock.handle import LockHandle
from ocigc.lock.lease import LeaseHandle
from ocigc.storage.s3 import S3Storage
from ocigc.storage.s3client import ConditionalWritesWarning, reset_clients
from tests.harness.tools import run_ocigc
from tests.kit.cli import OK, run
from tests.kit.layouts import REF_NAME, LayoutBuilder
from tests.kit.s3 import S3Env, fresh, s3_env

STRIPPED = ("if-none-match", "if-match")


@pytest.fixture(scope="module")
def s3_bucket(moto_server: Any) -> str:
    return str(moto_server.create_bucket("s3fallback"))


@pytest.fixture
def s3(moto_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    yield from s3_env(moto_server, s3_bucket, monkeypatch)


class _Proxy(BaseHTTPRequestHandler):
    """Forwards every request to moto, minus the conditional headers; counts what it stripped."""

    upstream: ClassVar[tuple[str, int]] = ("127.0.0.1", 0)
    stripped: ClassVar[list[str]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body: bytes | None = self._read_chunked()
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
        headers = {}
        for k, v in self.headers.items():
            if k.lower() in STRIPPED:
                self.stripped.append(f"{self.command} {k}")
                continue
            if k.lower() in ("host", "connection"):
                continue
            headers[k] = v
        if body is not None and "Transfer-Encoding" in headers:
            headers.pop("Content-Length", None)
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "server", "date"):
                continue
            if k.lower() == "content-length" and self.command != "HEAD":
                continue
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_chunked(self) -> bytes:
        """The raw chunked body, framing kept (forwarded with its Transfer-Encoding header)."""
        out = bytearray()
        while True:
            line = self.rfile.readline()
            out += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = self.rfile.readline()
                    out += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(out)
            out += self.rfile.read(size + 2)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.fixture
def ignoring_server(moto_server: Any) -> Iterator[tuple[str, list[str]]]:
    """The endpoint URL of a proxy to moto that ignores (strips) conditional headers, and its strip log."""
    up = urlsplit(moto_server.endpoint_url)
    handler = type("Proxy", (_Proxy,), {"upstream": (up.hostname, up.port), "stripped": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.stripped  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def _layout(tmp: Path, s3: S3Env) -> str:
    b = LayoutBuilder(tmp / "l")
    b.image("v1", [b"a"])
    b.blob(b"garbage", "application/octet-stream")
    b.save()
    return s3.upload(b.root, fresh("fallback"))


def test_probe_detects_a_server_that_ignores_conditional_headers(s3: S3Env, ignoring_server: tuple[str, list[str]],
                                                                  tmp_path: Path) -> None:
    endpoint, stripped = ignoring_server
    prefix = _layout(tmp_path, s3)
    reset_clients()
    st = S3Storage.from_url(s3.url(prefix), endpoint_url=endpoint)
    expected = "does not honour conditional writes.*If-None-Match.*lock-file protocol"
    with pytest.warns(ConditionalWritesWarning, match=expected):
        assert st.conditional_writes() is False
    assert stripped, "the proxy saw (and dropped) the probe's conditional headers"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert st.child("x").conditional_writes() is False  # probed once per bucket: no second warning
    assert not any(k.startswith(".ocigc/probe/") for k in s3.keys(prefix)), "the probe object is removed"


def test_fallback_uses_lock_files_and_read_back_index_updates(s3: S3Env, ignoring_server: tuple[str, list[str]],
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, _ = ignoring_server
    prefix = _layout(tmp_path, s3)
    reset_clients()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    layout = s3.layout(prefix)
    with pytest.warns(ConditionalWritesWarning):
        handle = lock.acquire(layout, "exclusive")
    try:
        assert type(handle) is LockHandle and not isinstance(handle, LeaseHandle)
        names = handle.lock_files()
        assert names and names[0].startswith("repo~X~") and names[0].endswith(".json")
    finally:
        handle.release()

    def add(index: Any) -> Any:
        import json

        from ocigc.oci.index import Index

        doc = json.loads(index.dumps())
        doc["manifests"].append({**doc["manifests"][0], "annotations": {REF_NAME: "v2"}})
        return Index.parse(json.dumps(doc).encode(), "index.json")

    result = update_index(layout, add, settle=0)
    assert result.changed and s3.tags(prefix) == ["v1", "v2"]


def test_cli_warns_once_and_still_works(s3: S3Env, moto_server: Any, ignoring_server: tuple[str, list[str]],
                                        tmp_path: Path) -> None:
    endpoint, _ = ignoring_server
    prefix = _layout(tmp_path, s3)
    env = {**moto_server.env(), "OCIGC_LOCK_SETTLE": "0.05"}
    r = run_ocigc("--endpoint-url", endpoint, "sweep", s3.url(prefix), "--grace", "0", "--yes", env=env)
    assert r.returncode == OK, r.stderr
    warning_lines = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1, r.stderr
    assert "conditional" in warning_lines[0] and "lock-file protocol" in warning_lines[0]
    assert "Traceback" not in r.stderr and "warnings.warn" not in r.stderr
    assert len([k for k in s3.keys(prefix) if k.startswith("blobs/")]) == 3  # config, layer, manifest left


def test_cli_native_has_no_warning(s3: S3Env, moto_server: Any, tmp_path: Path) -> None:
    prefix = _layout(tmp_path, s3)
    r = run(["sweep", s3.url(prefix), "--grace", "0", "--yes"])
    assert r.code == OK, r
    assert "warning:" not in r.stderr
