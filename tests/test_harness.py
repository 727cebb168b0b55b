"""Tests of the real-component harness itself (tests/harness): the components answer and behave.

No timed assertions: visibility across mounts is polled up to a generous bound and the measured
delays are only reported (``record_property`` and ``-s`` output).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.common import ComponentUnavailable, require_command, unavailable, wait_until
from tests.harness.fixtures import S3fsPair
from tests.harness.mounts import S3FS_RECOMMENDED_OPTIONS, RcloneMount, S3fsMount, find_mount, mounts_under
from tests.harness.objectstores import LatencyProxy, S3Server, SeaweedServer
from tests.harness.servers import RegistryServer, http_status
from tests.harness.tools import (
    oras_push_to_registry,
    read_index,
    run_ocigc,
    skopeo_copy,
    skopeo_inspect,
    tag_digest,
    umoci_gc,
    umoci_image,
    umoci_tags,
)

#: Upper bound for a change made through one mount to show through another. The measured
#: delays are about 0.01 s (new file, listing, read) and about 2 s (stat after overwrite/delete).
VISIBLE_WITHIN = 20.0


def _report(record_property: Callable[[str, object], None], name: str, value: float | None) -> None:
    record_property(name, value)
    print(f"{name}: {value if value is None else round(value, 3)} s")


@pytest.fixture(scope="module", autouse=True)
def _no_test_mount_left(harness_dir: Path) -> Iterator[None]:
    """After this module, only session-wide mounts may remain (the plugin checks the rest at exit)."""
    yield
    leftovers = [e for e in mounts_under(harness_dir) if "s3fs-session" not in e.mount_point]
    assert leftovers == []


# ------------------------------------------------------------------------------ object stores


def test_store_answers_and_honours_conditional_writes(s3_server: S3Server, s3_client: Any, bucket: str) -> None:
    """What ocigc's leases and index.json compare-and-swap rely on, on each store of the matrix."""
    from botocore.exceptions import ClientError

    def refused(**kwargs: Any) -> int:
        with pytest.raises(ClientError) as excinfo:
            if kwargs.pop("delete", False):
                s3_client.delete_object(Bucket=bucket, **kwargs)
            else:
                s3_client.put_object(Bucket=bucket, Body=b"two", **kwargs)
        return int(excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"])

    etag = s3_client.put_object(Bucket=bucket, Key="lock/a", Body=b"one")["ETag"]
    assert s3_client.get_object(Bucket=bucket, Key="lock/a")["Body"].read() == b"one"
    assert refused(Key="lock/a", IfNoneMatch="*") == 412
    s3_client.put_object(Bucket=bucket, Key="lock/b", Body=b"new", IfNoneMatch="*")
    assert refused(Key="lock/a", IfMatch='"0123456789abcdef0123456789abcdef"') == 412
    assert refused(Key="lock/a", IfMatch='"0123456789abcdef0123456789abcdef"', delete=True) == 412
    assert s3_client.get_object(Bucket=bucket, Key="lock/a")["Body"].read() == b"one"
    s3_client.put_object(Bucket=bucket, Key="lock/a", Body=b"three", IfMatch=etag)
    assert s3_client.get_object(Bucket=bucket, Key="lock/a")["Body"].read() == b"three"
    assert refused(Key="lock/a", IfMatch=etag) == 412  # the ETag is stale now
    part = b"p" * (5 * 1024 * 1024)
    upload = s3_client.create_multipart_upload(Bucket=bucket, Key="lock/a")["UploadId"]
    tag = s3_client.upload_part(Bucket=bucket, Key="lock/a", UploadId=upload, PartNumber=1, Body=part)["ETag"]
    with pytest.raises(ClientError) as excinfo:
        s3_client.complete_multipart_upload(Bucket=bucket, Key="lock/a", UploadId=upload, IfNoneMatch="*",
                                            MultipartUpload={"Parts": [{"ETag": tag, "PartNumber": 1}]})
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3_client.abort_multipart_upload(Bucket=bucket, Key="lock/a", UploadId=upload)
    assert s3_client.get_object(Bucket=bucket, Key="lock/a")["Body"].read() == b"three"


def test_seaweedfs_starts_and_stops_leaving_no_process(tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path / "weed")
    try:
        server.start()
    except ComponentUnavailable as e:
        unavailable(str(e))
    pid = server.proc.pid  # type: ignore[union-attr]
    bucket = server.create_bucket("own")
    server.client().put_object(Bucket=bucket, Key="k", Body=b"v")
    server.stop()
    assert not server.running
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert (tmp_path / "weed" / "data").is_dir() and (tmp_path / "weed" / "seaweedfs.log").exists()


def test_latency_proxy_delays_every_request_and_serves_them_at_once(
    s3_server: S3Server, bucket: str, proxy_factory: Callable[..., LatencyProxy]
) -> None:
    """Each request through the proxy takes at least its delay; eight at once take less than the
    eight delays they would take one after another (served concurrently: about one delay; the
    bound is the serial time, so a loaded machine cannot make it flaky). Bodies pass unchanged."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    delay = 0.3
    proxy = proxy_factory(s3_server, delay=delay)
    client = proxy.client()
    body = os.urandom(3 * 1024 * 1024 + 17)
    start = time.monotonic()
    client.put_object(Bucket=bucket, Key="proxy/big", Body=body)
    assert time.monotonic() - start >= delay
    assert client.get_object(Bucket=bucket, Key="proxy/big")["Body"].read() == body
    client.list_objects_v2(Bucket=bucket, Prefix="proxy/")  # a kept-alive connection per thread, warmed
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.head_object(Bucket=bucket, Key="proxy/big"), range(8)))
        start = time.monotonic()
        list(pool.map(lambda _: client.head_object(Bucket=bucket, Key="proxy/big"), range(8)))
        elapsed = time.monotonic() - start
    print(f"8 concurrent HEADs at {delay * 1000:.0f} ms each: {elapsed:.2f} s")
    assert delay <= elapsed < 8 * delay


def test_buckets_are_fresh(make_bucket: Callable[..., str], s3_client: Any) -> None:
    first, second = make_bucket("x"), make_bucket("x")
    assert first != second
    assert s3_client.list_objects_v2(Bucket=first).get("KeyCount") == 0


# -------------------------------------------------------------------------------------- s3fs


def test_s3fs_mount_a_changes_show_through_mount_b(
    s3fs_mounts: S3fsPair, record_property: Callable[[str, object], None]
) -> None:
    a, b = s3fs_mounts.a, s3fs_mounts.b
    (a / "d").mkdir()
    assert wait_until(lambda: (b / "d").is_dir(), VISIBLE_WITHIN) is not None
    assert os.listdir(b / "d") == []
    # B has looked at the directory and missed the file: nothing negative may stick.
    assert not (b / "d" / "f").exists()

    (a / "d" / "f").write_bytes(b"x" * 10)
    delays = {
        "new_listing": wait_until(lambda: "f" in os.listdir(b / "d"), VISIBLE_WITHIN),
        "new_stat": wait_until(lambda: (b / "d" / "f").stat().st_size == 10, VISIBLE_WITHIN),
        "new_content": wait_until(lambda: (b / "d" / "f").read_bytes() == b"x" * 10, VISIBLE_WITHIN),
    }
    (b / "d" / "f").stat()  # B caches the old attributes
    (a / "d" / "f").write_bytes(b"y" * 20)
    # stat first: an open() on B would refresh B's cached attributes.
    delays["overwrite_stat"] = wait_until(lambda: (b / "d" / "f").stat().st_size == 20, VISIBLE_WITHIN)
    (b / "d" / "f").stat()
    (a / "d" / "f").write_bytes(b"z" * 30)
    delays["overwrite_content"] = wait_until(lambda: (b / "d" / "f").read_bytes() == b"z" * 30, VISIBLE_WITHIN)

    (a / "d" / "f").unlink()
    delays["delete_listing"] = wait_until(lambda: "f" not in os.listdir(b / "d"), VISIBLE_WITHIN)
    delays["delete_stat"] = wait_until(lambda: not (b / "d" / "f").exists(), VISIBLE_WITHIN)
    for name, delay in delays.items():
        _report(record_property, f"s3fs_a_to_b_{name}", delay)
    assert None not in delays.values(), f"not visible through mount B within {VISIBLE_WITHIN} s: {delays}"


def test_boto3_write_is_visible_on_the_mount(
    s3fs_mounts: S3fsPair, s3_client: Any, record_property: Callable[[str, object], None]
) -> None:
    a = s3fs_mounts.a
    assert os.listdir(a) == []
    s3_client.put_object(Bucket=s3fs_mounts.bucket, Key="blobs/sha256/abc", Body=b"hello")
    listed = wait_until(lambda: os.listdir(a / "blobs" / "sha256") == ["abc"], VISIBLE_WITHIN)
    _report(record_property, "boto3_to_s3fs_listing", listed)
    assert listed is not None
    assert (a / "blobs" / "sha256" / "abc").read_bytes() == b"hello"
    # ... and what the mount writes is an ordinary object.
    (a / "index.json").write_bytes(b"{}")
    assert s3_client.get_object(Bucket=s3fs_mounts.bucket, Key="index.json")["Body"].read() == b"{}"


def _cmdline(mount: S3fsMount) -> list[str]:
    assert mount.proc is not None
    return Path(f"/proc/{mount.proc.pid}/cmdline").read_bytes().decode().split("\0")


def test_default_and_recommended_mounts_differ_where_doctor_looks(
    s3fs_default_mount: S3fsMount, s3fs_mounts: S3fsPair
) -> None:
    """Both are live s3fs mounts; only the process command line tells their cache options apart."""
    assert find_mount(s3fs_default_mount.mount_point) is not None
    assert find_mount(s3fs_default_mount.mount_point).fstype == "fuse.s3fs"  # type: ignore[union-attr]
    default_args = ",".join(_cmdline(s3fs_default_mount))
    recommended_args = ",".join(_cmdline(s3fs_mounts.mount_a))
    for option in S3FS_RECOMMENDED_OPTIONS:
        assert option not in default_args
        assert option in recommended_args
    assert "enable_noobj_cache" not in default_args + recommended_args
    (s3fs_default_mount.mount_point / "probe").write_bytes(b"ok")
    assert (s3fs_default_mount.mount_point / "probe").read_bytes() == b"ok"


def test_unmount_leaves_no_mount_and_no_process(
    make_bucket: Callable[..., str], s3fs_factory: Callable[..., S3fsMount]
) -> None:
    mount = s3fs_factory(make_bucket("unmount"))
    proc = mount.proc
    assert proc is not None and mount.mounted
    with open(mount.mount_point / "file", "wb") as f:
        f.write(b"x")
    assert mount.unmount()
    assert find_mount(mount.mount_point) is None
    assert proc.poll() is not None


# ------------------------------------------------------------------------------- layout_dir


def test_layout_dir_holds_a_umoci_layout(layout_dir: Path) -> None:
    """umoci builds, stacks, lists and collects on local disk and on s3fs alike."""
    base = umoci_image(layout_dir, "base", {"etc/hello.txt": b"hello\n"})
    app = umoci_image(layout_dir, "app", {"app/run.sh": b"#!/bin/sh\n"}, base="base")
    assert base != app
    assert sorted(umoci_tags(layout_dir)) == ["app", "base"]
    assert json.loads((layout_dir / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    before = len(os.listdir(layout_dir / "blobs" / "sha256"))
    umoci_gc(layout_dir)
    after = os.listdir(layout_dir / "blobs" / "sha256")
    assert len(after) < before  # umoci leaves its intermediate manifests/configs for gc
    assert base.split(":")[1] in after and app.split(":")[1] in after
    assert tag_digest(layout_dir, "base") == base


# ------------------------------------------------------------------------------------ rclone


def test_rclone_lists_what_s3fs_wrote(
    s3fs_mounts: S3fsPair, rclone_mount: RcloneMount, record_property: Callable[[str, object], None]
) -> None:
    (s3fs_mounts.a / "dir").mkdir()
    (s3fs_mounts.a / "dir" / "from-s3fs").write_bytes(b"written by s3fs")
    seen = wait_until(lambda: "from-s3fs" in os.listdir(rclone_mount.path / "dir"), VISIBLE_WITHIN)
    _report(record_property, "s3fs_to_rclone_listing", seen)
    assert seen is not None
    assert (rclone_mount.path / "dir" / "from-s3fs").read_bytes() == b"written by s3fs"
    assert rclone_mount.mounted


# ---------------------------------------------------------------------------------- registry


def test_registry_accepts_a_skopeo_copy_of_a_umoci_image(registry: RegistryServer, tmp_path: Path) -> None:
    assert http_status(registry.url + "/v2/") == 200
    layout = tmp_path / "lay"
    digest = umoci_image(layout, "v1", {"etc/os-release": b"ID=ocigc\n"})
    skopeo_copy(f"oci:{layout}:v1", f"docker://{registry.ref('harness/skopeo', 'v1')}")
    status, body, _ = registry.get("/v2/harness/skopeo/tags/list")
    assert status == 200 and json.loads(body)["tags"] == ["v1"]
    assert skopeo_inspect(f"docker://{registry.ref('harness/skopeo', 'v1')}")["Digest"] == digest
    # ... and back into a second layout, oci -> oci.
    skopeo_copy(f"docker://{registry.ref('harness/skopeo', 'v1')}", f"oci:{tmp_path / 'back'}:copy")
    assert tag_digest(tmp_path / "back", "copy") == digest


def test_auth_registry_wants_credentials(auth_registry: RegistryServer, tmp_path: Path) -> None:
    assert http_status(auth_registry.url + "/v2/") == 401
    assert http_status(auth_registry.url + "/v2/", auth=auth_registry.credentials) == 200
    digest = oras_push_to_registry(auth_registry, "harness/oras", "v1", {"a.txt": b"artifact"}, media_type="text/plain")
    layout = tmp_path / "lay"
    umoci_image(layout, "v1", {"f": b"x"})
    skopeo_copy(f"oci:{layout}:v1", f"docker://{auth_registry.ref('harness/img', 'v1')}",
                dest_creds=auth_registry.credentials)
    status, body, headers = auth_registry.get("/v2/harness/oras/manifests/v1")
    assert status == 200 and headers["Docker-Content-Digest"] == digest
    assert json.loads(body)["layers"][0]["annotations"]["org.opencontainers.image.title"] == "a.txt"


def test_registry_restarts_on_the_same_port_and_storage(registry_factory: Callable[..., RegistryServer]) -> None:
    server = registry_factory()
    port = server.port
    digest = oras_push_to_registry(server, "harness/restart", "v1", {"x.bin": b"\0" * 100})
    server.kill()
    assert http_status(server.url + "/v2/", timeout=0.5) is None
    server.start()
    assert server.port == port and server.starts == 2
    status, _, headers = server.get("/v2/harness/restart/manifests/v1")
    assert status == 200 and headers["Docker-Content-Digest"] == digest
    server.stop()
    gc = server.garbage_collect(dry_run=True)
    assert gc.returncode == 0, gc.stderr


# ------------------------------------------------------------------------------- ocigc & CI


def test_run_ocigc_returns_output_and_storage_counts(tmp_path: Path) -> None:
    rc, out, err, ops = run_ocigc("--version")
    assert rc == 0, err
    assert out.startswith("ocigc ")
    assert ops == {}  # written at exit even though no storage operation ran
    assert run_ocigc("--version", stats=False).op_counts is None


def test_op_counter_counts_storage_operations(op_counter: Any, tmp_path: Path) -> None:
    from ocigc.storage.local import LocalStorage

    storage = LocalStorage(tmp_path)
    storage.write_bytes("a", b"1")
    storage.read_bytes("a")
    storage.list_dir()
    counts = op_counter.snapshot()
    assert counts["read"] == 1 and counts["list"] == 1 and counts["write"] >= 1


def test_missing_component_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ComponentUnavailable, match="apt-get install s3fs"):
        monkeypatch.setenv("PATH", "/nonexistent")
        require_command("s3fs")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="s3fs not installed"):
        unavailable("s3fs not installed: apt-get install s3fs")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="s3fs not installed"):
        unavailable("s3fs not installed: apt-get install s3fs")


def test_layout_index_helpers(tmp_path: Path) -> None:
    umoci_image(tmp_path / "lay", "t", {"a": b"a"})
    entries = read_index(tmp_path / "lay")["manifests"]
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in entries] == ["t"]
    assert tag_digest(tmp_path / "lay", "missing") is None
