"""A server that accepts conditional headers and ignores them (mountx#19, s3gw#674): simulated by the
harness's proxy on 127.0.0.1, in front of each store, dropping ``If-None-Match`` and ``If-Match``. The probe must
notice, say so in one ``warning:`` line, and ocigc must fall back to the lock-file protocol and the
temp-file-free, read-back-checked ``index.json`` update; commands still work.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigc.layout.indexio import update_index
from ocigc.lock import acquire as lock
from ocigc.lock.handle import LockHandle
from ocigc.lock.lease import LeaseHandle
from ocigc.storage.s3 import S3Storage
from ocigc.storage.s3client import ConditionalWritesWarning, finish_background, reset_clients
from tests.harness.objectstores import LatencyProxy, S3Server
from tests.harness.tools import run_ocigc
from tests.kit.cli import OK, run
from tests.kit.layouts import REF_NAME, LayoutBuilder
from tests.kit.s3 import S3Env, fresh, s3_env


@pytest.fixture(scope="module")
def s3_bucket(s3_server: S3Server) -> str:
    return str(s3_server.create_bucket("s3fallback"))


@pytest.fixture
def s3(s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    yield from s3_env(s3_server, s3_bucket, monkeypatch)


@pytest.fixture
def ignoring_server(s3_server: S3Server, proxy_factory: Any) -> LatencyProxy:
    """A proxy in front of the store that drops the conditional headers (``.stripped()`` lists them)."""
    proxy: LatencyProxy = proxy_factory(s3_server, strip_conditional=True)
    return proxy


def _layout(tmp: Path, s3: S3Env) -> str:
    b = LayoutBuilder(tmp / "l")
    b.image("v1", [b"a"])
    b.blob(b"garbage", "application/octet-stream")
    b.save()
    return s3.upload(b.root, fresh("fallback"))


def test_probe_detects_a_server_that_ignores_conditional_headers(s3: S3Env, ignoring_server: LatencyProxy,
                                                                  tmp_path: Path) -> None:
    endpoint = ignoring_server.endpoint_url
    prefix = _layout(tmp_path, s3)
    reset_clients()
    st = S3Storage.from_url(s3.url(prefix), endpoint_url=endpoint)
    expected = "does not honour conditional writes.*If-None-Match.*lock-file protocol"
    with pytest.warns(ConditionalWritesWarning, match=expected):
        assert st.conditional_writes() is False
    assert ignoring_server.stripped(), "the proxy saw (and dropped) the probe's conditional headers"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert st.child("x").conditional_writes() is False  # probed once per bucket: no second warning
    finish_background()  # the probe objects are removed in the background
    assert not any(k.startswith(".ocigc/probe/") for k in s3.keys(prefix)), "the probe object is removed"


def test_fallback_uses_lock_files_and_read_back_index_updates(s3: S3Env, ignoring_server: LatencyProxy,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = ignoring_server.endpoint_url
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


def test_cli_warns_once_and_still_works(s3: S3Env, s3_server: S3Server, ignoring_server: LatencyProxy,
                                        tmp_path: Path) -> None:
    endpoint = ignoring_server.endpoint_url
    prefix = _layout(tmp_path, s3)
    env = {**s3_server.env(), "OCIGC_LOCK_SETTLE": "0.05"}
    r = run_ocigc("--endpoint-url", endpoint, "sweep", s3.url(prefix), "--grace", "0", "--yes", env=env)
    assert r.returncode == OK, r.stderr
    warning_lines = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1, r.stderr
    assert "conditional" in warning_lines[0] and "lock-file protocol" in warning_lines[0]
    assert "Traceback" not in r.stderr and "warnings.warn" not in r.stderr
    assert len([k for k in s3.keys(prefix) if k.startswith("blobs/")]) == 3  # config, layer, manifest left


def test_cli_native_has_no_warning(s3: S3Env, s3_server: S3Server, tmp_path: Path) -> None:
    prefix = _layout(tmp_path, s3)
    r = run(["sweep", s3.url(prefix), "--grace", "0", "--yes"])
    assert r.code == OK, r
    assert "warning:" not in r.stderr
