"""The delete/sweep scenarios of the local and s3fs tests, on ``s3://`` (the native backend), against
moto's server from the harness; parity with local disk on random layouts; the read-only commands,
push/pull/tag, migrate, locks, trash and policies through the CLI on ``s3://``.

Layouts are built locally with ``tests/kit/layouts.py`` and uploaded with boto3; results are read back
with boto3 (``S3Env.download`` makes a local copy so the independent walks of ``tests/kit/tree.py`` apply).

``S3Env`` and the ``s3`` fixture are shared with the other ``test_s3_*`` modules.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigc.errors import IntegrityError, ReferenceNotFound, UnsafeToModify
from ocigc.gc.plan import DeleteOptions, SweepOptions
from ocigc.gc.run import RunOptions, delete_refs, sweep_layout
from ocigc.layout.layout import Layout
from ocigc.oci.refs import parse_reference
from ocigc.storage.local import LocalStorage
from ocigc.storage.open_storage import open_storage
from ocigc.storage.s3 import S3Storage
from tests.kit.cli import OK, run
from tests.kit.layouts import LAYOUTS, LayoutBuilder, blob_path, random_layout
from tests.kit.s3 import OLD, S3Env, fresh, s3_env
from tests.kit.tree import present, reachable

RUN = RunOptions(jobs=4)
DRY = RunOptions(jobs=4, dry_run=True)
NOW_GRACE = SweepOptions(grace=0)


@pytest.fixture(scope="module")
def s3_bucket(s3_server: Any) -> str:
    return str(s3_server.create_bucket("s3native"))


@pytest.fixture
def s3(s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    """A module-wide bucket on the harness's store, which is the process's AWS endpoint."""
    yield from s3_env(s3_server, s3_bucket, monkeypatch)


@pytest.fixture(params=["0ms", "20ms"])
def s3_rtt(request: pytest.FixtureRequest, s3_server: Any, s3_bucket: str,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    """``s3``, and the same bucket through the latency proxy (20 ms per request) as the AWS endpoint."""
    server = s3_server if request.param == "0ms" else request.getfixturevalue("slow_s3_server")
    yield from s3_env(server, s3_bucket, monkeypatch)


def sweep(env: S3Env, prefix: str, opts: SweepOptions = NOW_GRACE, run_opts: RunOptions = RUN):  # type: ignore[no-untyped-def]
    out = sweep_layout(env.layout(prefix), opts, run_opts)
    if out.error:
        raise out.error
    return out


def delete(env: S3Env, prefix: str, *refs: str, opts: DeleteOptions | None = None,  # type: ignore[no-untyped-def]
           run_opts: RunOptions = RUN):
    url = env.url(prefix)
    out = delete_refs(env.layout(prefix), [parse_reference(f"{url}{r}") for r in refs], opts or DeleteOptions(),
                      run_opts)
    if out.error:
        raise out.error
    return out


def assert_no_dangling(env: S3Env, prefix: str, tmp: Path) -> None:
    root = env.download(prefix, tmp / fresh("dl"))
    reach = reachable(root)
    missing = {d for d in reach if not blob_path(root, d).exists()}
    assert not missing, f"dangling references: {missing}"


# --- references -------------------------------------------------------------------------------------
def test_s3_references_parse() -> None:
    r = parse_reference("s3://bucket/team/app:v1")
    assert (r.path, r.tag, r.digest) == ("s3://bucket/team/app", "v1", None)
    d = "sha256:" + "a" * 64
    r = parse_reference(f"s3://bucket/app@{d}")
    assert (r.path, r.tag, str(r.digest)) == ("s3://bucket/app", None, d)
    for root in ("s3://bucket/", "s3://bucket", "s3://bucket/team/app"):
        r = parse_reference(root)
        assert (r.path, r.tag) == (root, None)
    assert parse_reference("s3://bucket:v1").tag == "v1"  # a layout at the bucket's root


def test_s3_urls_and_names(s3: S3Env) -> None:
    st = open_storage(s3.url("team/app/"))
    assert isinstance(st, S3Storage) and st.prefix == "team/app" and st.url == s3.url("team/app")
    assert st.join("blobs/sha256") == s3.url("team/app/blobs/sha256")
    assert st.child("blobs").url == s3.url("team/app/blobs") and st.local_path() is None
    root = open_storage(s3.url())
    assert root.url == s3.url() and root.stat("") is not None
    from ocigc.errors import UsageError

    for bad in ("s3://", "s3:///x", "s3://b/../x"):
        with pytest.raises(UsageError):
            S3Storage.from_url(bad)


def test_s3_storage_protocol(s3: S3Env) -> None:
    st = s3.storage(fresh("proto"))
    assert st.stat("") is None
    with pytest.raises(FileNotFoundError):
        st.list_dir("")
    st.write_new("a/b.txt", b"hello")
    with pytest.raises(FileExistsError):
        st.write_new("a/b.txt", b"again")
    assert st.read_bytes("a/b.txt") == b"hello" and st.read_bytes("a/b.txt", limit=2) == b"hel"
    assert st.stat("a") is not None and st.stat("a").is_dir  # type: ignore[union-attr]
    assert st.stat("a/b.txt").size == 5  # type: ignore[union-attr]
    assert [(e.name, e.is_dir) for e in st.list_dir("")] == [("a", True)]
    with pytest.raises(IsADirectoryError):
        st.read_bytes("a")
    with pytest.raises(NotADirectoryError):
        st.list_dir("a/b.txt")
    with st.open_read("a/b.txt") as f:
        assert f.read(2) == b"he" and f.read() == b"llo"
    st.write_bytes("empty", b"")
    assert st.read_bytes("empty", limit=10) == b""
    st.rename("a/b.txt", "c.txt")
    assert st.stat("a/b.txt") is None and st.read_bytes("c.txt") == b"hello"
    with pytest.raises(FileNotFoundError):
        st.rename("a/b.txt", "d.txt")
    assert st.remove("c.txt") is True and st.remove("c.txt") is False
    st.write_bytes("x/1", b"1")
    st.write_bytes("x/2", b"2")
    assert st.remove_dir("x") is False
    assert st.remove_many(["x/1", "x/2", "x/never"]) == []
    if s3.server.name == "seaweedfs":
        # SeaweedFS's filer is a directory tree: emptied folders stay, as on a disk, listed and
        # stat'ed as directories until remove_dir removes them
        assert st.stat("x") is not None and st.stat("x").is_dir  # type: ignore[union-attr]
        assert set(st.list_blobs_with_stats("")) == {"a", "x", "empty"}
        assert st.remove_dir("x") is True and st.remove_dir("a") is True
    assert st.stat("x") is None
    stats = st.list_blobs_with_stats("")
    assert set(stats) == {"empty"} and stats["empty"].size == 0 and stats["empty"].mtime > 0


def test_s3_multipart_streaming_and_abort(s3: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import ocigc.storage.s3 as s3mod

    monkeypatch.setattr(s3mod, "PART_SIZE", 5 * 1024 * 1024)
    monkeypatch.setattr(s3mod, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    prefix = fresh("mpu")
    st = s3.storage(prefix)
    data = os.urandom(256 * 1024) * 45  # 11.25 MiB: three parts
    with st.open_write("big") as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
    assert st.read_bytes("big") == data
    with pytest.raises(RuntimeError), st.open_write("broken") as f:
        f.write(data)
        raise RuntimeError("writer failed")
    assert st.stat("broken") is None
    uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads") or []
    assert uploads == [], "a failed upload must be aborted"


def test_s3_multipart_parts_in_flight_and_a_failed_part(s3: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts go up while the next fills (more than one at a time, never more than the process's
    bound); a part the store refuses ends the upload: the error reaches the writer, nothing is
    stored under the name and the multipart upload is aborted."""
    import threading

    import ocigc.storage.s3 as s3mod

    monkeypatch.setattr(s3mod, "PART_SIZE", 5 * 1024 * 1024)
    monkeypatch.setattr(s3mod, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    prefix = fresh("mpc")
    st = s3.storage(prefix)
    real_call = st._call
    mu = threading.Lock()
    state = {"now": 0, "most": 0, "fail_part": 0}
    sizes: dict[int, int] = {}

    def call(op: str, rel: str, **kwargs: Any) -> Any:
        if op != "upload_part":
            return real_call(op, rel, **kwargs)
        with mu:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            sizes[kwargs["PartNumber"]] = len(kwargs["Body"])
        try:
            time.sleep(0.2)  # a slow link: the next parts are filled and sent meanwhile
            if kwargs["PartNumber"] == state["fail_part"]:
                raise OSError(5, "injected: the store refused this part")
            return real_call(op, rel, **kwargs)
        finally:
            with mu:
                state["now"] -= 1

    monkeypatch.setattr(st, "_call", call)
    data = os.urandom(1 << 20) * 31  # 31 MiB: seven parts
    with st.open_write("big") as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
    assert st.read_bytes("big") == data
    assert 1 < state["most"] <= s3mod.PARTS_IN_FLIGHT, state
    assert [sizes[n] >> 20 for n in sorted(sizes)] == [5, 5, 5, 5, 5, 5, 1], sizes

    # a part size that doubles every PARTS_PER_SIZE parts keeps a huge object within 10,000 parts
    monkeypatch.setattr(s3mod, "PARTS_PER_SIZE", 2)
    sizes.clear()
    with st.open_write("grown") as f:
        f.write(data)
    assert st.read_bytes("grown") == data
    assert [sizes[n] >> 20 for n in sorted(sizes)] == [5, 5, 10, 10, 1], sizes
    monkeypatch.setattr(s3mod, "PARTS_PER_SIZE", 2000)

    state["fail_part"] = 2
    with pytest.raises(OSError, match="injected"), st.open_write("broken") as f:
        for i in range(0, len(data), 1 << 20):
            f.write(data[i:i + (1 << 20)])
    assert st.stat("broken") is None
    uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads") or []
    assert uploads == [], "an upload with a failed part must be aborted"
    deadline = time.monotonic() + 5  # a slot is given back by the part's done-callback, just after it ends
    while s3mod._PART_SLOTS._value != s3mod.PARTS_IN_FLIGHT and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert s3mod._PART_SLOTS._value == s3mod.PARTS_IN_FLIGHT, "every part's slot is given back"  # type: ignore[attr-defined]


def test_s3_blobs_created_only_if_absent(s3: S3Env) -> None:
    import hashlib

    prefix = fresh("blob")
    st = s3.storage(prefix)
    data = b"content-addressed"
    rel = f"blobs/sha256/{hashlib.sha256(data).hexdigest()}"
    st.write_bytes(rel, data)
    etag = s3.keys(prefix)[rel]
    st.write_bytes(rel, data)  # same content, already there: not rewritten
    assert s3.keys(prefix)[rel] == etag
    s3.put(f"{prefix}/{rel}", b"trunc")  # a truncated object under the digest's name is replaced
    st.write_bytes(rel, data)
    assert s3.read(f"{prefix}/{rel}") == data


def test_s3_push_replaces_a_short_blob_above_the_multipart_threshold(s3: S3Env, tmp_path: Path) -> None:
    """A blob cut short under its digest's key (an s3fs writer killed half-way) and larger than one
    PUT: the conditional CompleteMultipartUpload fails on the object there, which has the wrong size,
    so the upload is completed over it. ``check`` reports the short blob first (exit 1)."""
    import hashlib

    data = os.urandom(1024 * 1024) * 20  # 20 MiB: a multipart upload
    (tmp_path / "big.bin").write_bytes(data)
    prefix = fresh("short")
    url = s3.url(prefix)
    r = run(["push", f"{url}:v1", "big.bin"], cwd=tmp_path)
    assert r.code == OK, r
    key = f"{prefix}/blobs/sha256/{hashlib.sha256(data).hexdigest()}"
    s3.put(key, data[:1_179_648])
    assert run(["check", url]).code == 1
    r = run(["push", f"{url}:v1", "big.bin"], cwd=tmp_path)
    assert r.code == OK, r
    assert s3.read(key) == data
    assert run(["check", "--verify-digests", url]).code == OK
    uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix).get("Uploads") or []
    assert uploads == []


# --- sweep ------------------------------------------------------------------------------------------
def test_sweep_removes_only_unreachable(s3_rtt: S3Env, tmp_path: Path) -> None:
    s3 = s3_rtt
    b = LayoutBuilder(tmp_path / "l")
    keep = b.image("v1", [b"shared", b"mine"])
    orphan = b.manifest([b"shared", b"orphan-layer"], config=b'{"o":1}')
    stray = b.blob(b"stray", "application/octet-stream")
    b.save()
    prefix = s3.upload(b.root, fresh())
    out = sweep(s3, prefix)
    removed = {r.digest for r in out.result.removed}
    assert orphan["digest"] in removed and stray["digest"] in removed
    assert keep["digest"] not in removed
    assert not s3.has_blob(prefix, stray["digest"])
    assert s3.has_blob(prefix, b.blob(b"shared", "x", write=False)["digest"])
    assert_no_dangling(s3, prefix, tmp_path)


def test_sweep_needs_no_stat_per_blob(s3: S3Env, tmp_path: Path, op_counter: Any) -> None:
    b = LayoutBuilder(tmp_path / "l")
    b.image("v1", [b"a"])
    for i in range(30):
        b.blob(f"garbage-{i}".encode(), "application/octet-stream")
    b.save()
    prefix = s3.upload(b.root, fresh())
    op_counter.reset()
    out = sweep(s3, prefix)
    assert len(out.result.removed) == 30
    ops = op_counter.snapshot()
    assert ops.get("stat", 0) < 10, ops  # no HEAD per candidate: sizes and times came with the listing
    assert ops.get("remove", 0) <= 3, ops  # one DeleteObjects for all 30


def test_grace_period_keeps_young_blobs(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    b.image("v1", [b"a"])
    young = b.blob(b"just uploaded", "application/octet-stream")
    b.save()
    prefix = s3.upload(b.root, fresh(), age=None)
    out = sweep(s3, prefix, SweepOptions(grace=3600))
    assert out.plan.empty and [k.digest for k in out.plan.kept] == [young["digest"]]
    assert "grace" in out.plan.kept[0].reason
    assert s3.has_blob(prefix, young["digest"])


def test_dry_run_changes_nothing(s3: S3Env, tmp_path: Path) -> None:
    random_layout(tmp_path / "l", 11)
    prefix = s3.upload(tmp_path / "l", fresh())
    before = s3.keys(prefix)
    out = sweep(s3, prefix, SweepOptions(grace=0, untagged=True), DRY)
    assert out.result is None and not out.plan.empty
    tag = next(t for t in s3.tags(prefix) if t)
    delete(s3, prefix, f":{tag}", run_opts=DRY)
    assert s3.keys(prefix) == before


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_sweep_and_delete_match_local_disk(s3: S3Env, tmp_path: Path, seed: int) -> None:
    """The same random layout swept (and a tag deleted) on local disk and on s3://: same plans, same result."""
    local = tmp_path / "local"
    random_layout(local, seed)
    prefix = s3.upload(local, fresh("parity"))
    opts = SweepOptions(grace=0, untagged=bool(seed % 2))
    remote = sweep(s3, prefix, opts)
    here = sweep_layout(Layout.open(LocalStorage(local)), opts, RUN)
    assert here.error is None
    assert [b.digest for b in remote.plan.blob_removals] == [b.digest for b in here.plan.blob_removals]
    assert [(e.digest, e.ref_name) for e in remote.plan.remove_entries] == [
        (e.digest, e.ref_name) for e in here.plan.remove_entries]
    got = s3.download(prefix, tmp_path / "got")
    assert present(got) == present(local)
    assert (got / "index.json").read_bytes() == (local / "index.json").read_bytes()
    tags = sorted({t for t in s3.tags(prefix) if t})
    if tags:
        d_remote = delete(s3, prefix, f":{tags[0]}", opts=DeleteOptions(force=True))
        d_local = delete_refs(Layout.open(LocalStorage(local)), [parse_reference(f"{local}:{tags[0]}")],
                              DeleteOptions(force=True), RUN)
        assert d_local.error is None
        assert {b.digest for b in d_remote.result.removed} == {b.digest for b in d_local.result.removed}
        assert_no_dangling(s3, prefix, tmp_path)


def test_untagged_sweep_never_removes_platform_of_tagged_index(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    amd = b.manifest([b"amd64"], b'{"architecture":"amd64"}')
    idx = b.index([{k: amd[k] for k in ("mediaType", "digest", "size")}])
    b.add(idx, "multi")
    b.add(amd, None)
    sig = b.referrer(idx, b"sig")
    b.add(sig, None)
    lonely = b.manifest([b"lonely"])
    b.add(lonely, None)
    b.save()
    prefix = s3.upload(b.root, fresh())
    out = sweep(s3, prefix, SweepOptions(grace=0, untagged=True))
    assert {e.digest for e in out.plan.remove_entries} == {lonely["digest"]}
    assert s3.has_blob(prefix, amd["digest"]) and s3.has_blob(prefix, sig["digest"])


def test_fail_closed_on_corrupt_reachable_manifest(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    m = b.image("a", [b"x"])
    b.blob(b"garbage", "application/octet-stream")
    b.save()
    p = blob_path(b.root, m["digest"])
    p.write_bytes(p.read_bytes()[:10])
    prefix = s3.upload(b.root, fresh())
    before = s3.keys(prefix)
    with pytest.raises(UnsafeToModify, match="invalid JSON"):
        sweep(s3, prefix)
    assert s3.keys(prefix) == before


def test_fail_closed_on_missing_reachable_manifest(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    m = b.image("a", [b"x"])
    b.save()
    blob_path(b.root, m["digest"]).unlink()
    prefix = s3.upload(b.root, fresh())
    with pytest.raises(IntegrityError):
        sweep(s3, prefix)
    assert s3.has_blob(prefix, b.blob(b"x", "x", write=False)["digest"])


def test_leftovers_and_foreign_files(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    b.image("a", [b"x"])
    b.save()
    root = b.root
    (root / "ingest").mkdir()
    (root / "ingest" / "abc").write_bytes(b"partial")
    (root / "oci-put-blob12345").write_bytes(b"partial")
    (root / ".umoci-xyz").mkdir()
    (root / ".umoci-xyz" / "index-1").write_bytes(b"{}")
    (root / "blobs" / "sha256" / ("b" * 64 + ".tmp")).write_bytes(b"regclient")
    (root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"??")
    (root / ".ocigc-tmp-fresh").write_bytes(b"in flight")
    prefix = s3.upload(root, fresh(), young=(".ocigc-tmp-fresh",))
    out = sweep(s3, prefix, SweepOptions(grace=600))
    gone = set(out.result.removed_files)
    assert {"ingest/abc", "oci-put-blob12345", ".umoci-xyz/index-1", f"blobs/sha256/{'b' * 64}.tmp"} <= gone
    keys = s3.keys(prefix)
    assert ".ocigc-tmp-fresh" in keys and "blobs/sha256/not-a-digest" in keys
    assert any("not-a-digest" in r for r in out.plan.reported)
    assert not any(k.startswith(("ingest/", ".umoci-xyz/")) for k in keys)


def test_sweep_of_root_goes_on_after_a_broken_layout(s3: S3Env, tmp_path: Path) -> None:
    from ocigc.layout.discover import open_layouts

    good = LayoutBuilder(tmp_path / "r" / "good")
    good.image("a", [b"x"])
    good.blob(b"garbage", "application/octet-stream")
    good.save()
    bad = LayoutBuilder(tmp_path / "r" / "team" / "bad")
    m = bad.image("a", [b"x"])
    bad.save()
    blob_path(bad.root, m["digest"]).write_bytes(b"{")
    prefix = s3.upload(tmp_path / "r", fresh("root"))
    outcomes = [sweep_layout(lay, NOW_GRACE, RUN) for lay in open_layouts(s3.storage(prefix))]
    by = {o.layout.name: o for o in outcomes}
    assert set(by) == {"good", "team/bad"}
    assert by["good"].result is not None and len(by["good"].result.removed) == 1
    assert isinstance(by["team/bad"].error, UnsafeToModify)


# --- delete -----------------------------------------------------------------------------------------
def test_delete_tag_removes_manifest_blobs_and_referrers(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    hello = b.image("latest", [b"hello", b"shared"])
    other = b.image("other", [b"shared"])
    sig = b.referrer(hello, b"signature")
    sbom = b.referrer(sig, b"sig-of-sig")
    b.add(sig, None)
    b.add(sbom, None)
    b.save()
    prefix = s3.upload(b.root, fresh())
    out = delete(s3, prefix, ":latest")
    assert s3.tags(prefix) == ["other"]
    removed = {r.digest for r in out.result.removed}
    assert {hello["digest"], sig["digest"], sbom["digest"]} <= removed
    assert s3.has_blob(prefix, other["digest"])
    assert s3.has_blob(prefix, b.blob(b"shared", "x", write=False)["digest"])
    assert not s3.has_blob(prefix, b.blob(b"hello", "x", write=False)["digest"])
    assert_no_dangling(s3, prefix, tmp_path)


def test_multiarch_platform_delete_refused_unless_forced(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    amd = b.manifest([b"amd64"], b'{"architecture":"amd64"}')
    arm = b.manifest([b"arm64"], b'{"architecture":"arm64"}')
    idx = b.index([{k: d[k] for k in ("mediaType", "digest", "size")} for d in (amd, arm)])
    b.add(idx, "multi")
    b.add(amd, None)
    b.save()
    prefix = s3.upload(b.root, fresh())
    with pytest.raises(UnsafeToModify, match="listed by index"):
        delete(s3, prefix, "@" + amd["digest"])
    assert s3.tags(prefix) == ["multi", None]
    delete(s3, prefix, "@" + amd["digest"], opts=DeleteOptions(force=True))
    assert s3.tags(prefix) == ["multi"] and s3.has_blob(prefix, amd["digest"])


def test_missing_reference_deletes_nothing(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    b.image("a", [b"x"])
    b.image("b", [b"y"])
    b.save()
    prefix = s3.upload(b.root, fresh())
    before = s3.layout_keys(prefix)
    with pytest.raises(ReferenceNotFound):
        delete(s3, prefix, ":a", ":nope")
    assert s3.layout_keys(prefix) == before


def test_journal_and_backup_written(s3: S3Env, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "l")
    b.image("a", [b"x"])
    b.image("b", [b"y"])
    b.save()
    prefix = s3.upload(b.root, fresh())
    before = s3.read(f"{prefix}/index.json")
    delete(s3, prefix, ":a")
    keys = s3.keys(prefix)
    journal = [k for k in keys if k.startswith(".ocigc/journal/")]
    assert len(journal) == 1
    rec = json.loads(s3.read(f"{prefix}/{journal[0]}"))
    assert rec["kind"] == "delete" and rec["result"]["removed_entries"] == 1
    backups = [k for k in keys if k.startswith(".ocigc/backup/")]
    assert [s3.read(f"{prefix}/{k}") for k in backups] == [before]
    assert not any(k.startswith(".ocigc/locks/") for k in keys), "locks are released"
    assert not any(".ocigc-tmp-" in k for k in keys), "no temp file: index.json is a compare-and-swap"


# --- the CLI on s3:// --------------------------------------------------------------------------------
def _fixture(s3: S3Env, name: str) -> str:
    local = LAYOUTS / name
    prefix = fresh(name)
    for p in sorted(local.rglob("*")):
        if p.is_file() and p.name != "EXPECT.json":
            s3.client.put_object(Bucket=s3.bucket, Key=f"{prefix}/{p.relative_to(local).as_posix()}",
                                 Body=p.read_bytes(), Metadata={"mtime": str(int(time.time() - OLD))})
    return prefix


def test_cli_read_commands(s3: S3Env) -> None:
    prefix = _fixture(s3, "umoci-tags")
    url = s3.url(prefix)
    local_tags = run(["tags", LAYOUTS / "umoci-tags", "--json"]).json()
    r = run(["tags", url, "--json"])
    assert r.code == OK, r
    assert [t["tag"] for t in r.json()["tags"]] == [t["tag"] for t in local_tags["tags"]]
    tag = r.json()["tags"][0]["tag"]
    r = run(["ls", s3.url(), "--json"])
    assert r.code == OK, r
    assert prefix in {lay["layout"] for lay in r.json()["layouts"]}
    r = run(["inspect", f"{url}:{tag}", "--json"])
    assert r.code == OK, r
    r = run(["graph", url, "--format", "dot"])
    assert r.code == OK and "digraph" in r.stdout, r
    r = run(["check", url, "--verify-digests", "--json"])
    assert r.code == OK, r
    r = run(["check", s3.url("nothing-here")])
    assert r.code != OK and "Traceback" not in r.stderr


def test_cli_delete_and_sweep(s3_rtt: S3Env) -> None:
    s3 = s3_rtt
    prefix = _fixture(s3, "garbage")
    url = s3.url(prefix)
    dry = run(["sweep", url, "--grace", "0", "--dry-run", "--json"])
    assert dry.code == OK, dry
    plan = dry.json()["layouts"][0]["plan"]
    doomed = {b["digest"] for b in plan["remove_manifests"] + plan["remove_blobs"]}
    assert doomed
    real = run(["sweep", url, "--grace", "0", "--yes", "--json"])
    assert real.code == OK, real
    assert {b["digest"] for b in real.json()["layouts"][0]["result"]["removed"]} == doomed
    assert not any(s3.has_blob(prefix, d) for d in doomed)
    tag = next(t for t in s3.tags(prefix) if t)
    r = run(["delete", f"{url}:{tag}", "--yes"])
    assert r.code == OK, r
    assert tag not in s3.tags(prefix)
    root = fresh("root")
    for name in ("garbage", "multiarch"):
        sub = _fixture(s3, name)
        for key in s3.keys(sub):
            s3.put(f"{root}/{name}/{key}", s3.read(f"{sub}/{key}"))
    r = run(["sweep", s3.url(f"{root}/"), "--grace", "0", "--yes", "--json"])  # a root of layouts
    assert r.code == OK, r
    assert sorted(o["layout"] for o in r.json()["layouts"]) == ["garbage", "multiarch"]


def test_cli_push_pull_tag(s3_rtt: S3Env, tmp_path: Path) -> None:
    s3 = s3_rtt
    (tmp_path / "hello.txt").write_text("hello s3\n")
    url = s3.url(fresh("art"))
    r = run(["push", f"{url}:v1", "hello.txt:text/plain"], cwd=tmp_path)
    assert r.code == OK, r
    r = run(["tag", f"{url}:v1", "v2"])
    assert r.code == OK, r
    r = run(["pull", f"{url}:v2", "-o", str(tmp_path / "out")])
    assert r.code == OK, r
    assert (tmp_path / "out" / "hello.txt").read_text() == "hello s3\n"
    r = run(["push", f"{url}:v1", "hello.txt:text/plain"], cwd=tmp_path)  # again: blobs already there
    assert r.code == OK, r


def test_cli_migrate_both_ways(s3: S3Env, tmp_path: Path) -> None:
    prefix = _fixture(s3, "umoci-tags")
    r = run(["migrate", s3.url(prefix), str(tmp_path / "copy")])
    assert r.code == OK, r
    r = run(["migrate", str(tmp_path / "copy"), s3.url(f"{prefix}-back")])
    assert r.code == OK, r
    r = run(["check", s3.url(f"{prefix}-back"), "--verify-digests"])
    assert r.code == OK, r
    assert s3.tags(f"{prefix}-back") == s3.tags(prefix)


def test_cli_locks_trash_and_policy(s3: S3Env, tmp_path: Path) -> None:
    prefix = _fixture(s3, "garbage")
    url = s3.url(prefix)
    r = run(["sweep", url, "--grace", "0", "--yes", "--trash", "--json"])
    assert r.code == OK, r
    trash_run = r.json()["layouts"][0]["trash_run"]
    removed = {b["digest"] for b in r.json()["layouts"][0]["result"]["removed"]}
    assert trash_run and removed and not any(s3.has_blob(prefix, d) for d in removed)
    r = run(["trash", "list", url, "--json"])
    assert r.code == OK and [x["run"] for x in r.json()["runs"]] == [trash_run], r
    r = run(["trash", "restore", url, trash_run])
    assert r.code == OK, r
    assert all(s3.has_blob(prefix, d) for d in removed)
    r = run(["trash", "purge", url])
    assert r.code == OK, r
    # a lease left by a dead holder: listed, and broken only when stale or forced
    lease = {"owner_id": "f" * 32, "mode": "X", "scope": "repo", "gen": 1, "host": "elsewhere", "pid": 1,
             "command": "ocigc sweep", "created_unix": time.time(), "acquired_unix": time.time(),
             "expires_unix": time.time() + 900, "epoch": 1}
    s3.put(f"{prefix}/.ocigc/locks/repo.X.lease", json.dumps(lease).encode())
    r = run(["locks", "list", url, "--json"])
    assert r.code == OK, r
    assert [(x["name"], x["mode"], x["owner"]) for x in r.json()["locks"]] == [("repo.X.lease", "exclusive", "f" * 32)]
    r = run(["sweep", url, "--grace", "0", "--yes"])
    assert r.code == 75, r  # lock busy
    r = run(["locks", "break", url, "--owner", "ffff", "--force"])
    assert r.code == OK, r
    assert not s3.exists(f"{prefix}/.ocigc/locks/repo.X.lease")
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nname = "r"\nrepositories = "**"\nkeep_last = 1\ndelete_tags = ".*"\n'
                      'ambiguous_times = "proceed"\n')
    r = run(["policy", "check", str(policy)])
    assert r.code == OK, r
    r = run(["sweep", url, "--grace", "0", "--yes", "--policy", str(policy), "--json"])
    assert r.code == OK, r
    assert r.json()["layouts"][0]["plan"]["decisions"], r
    assert len([t for t in s3.tags(prefix) if t]) == 1
