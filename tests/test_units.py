"""Unit tests of the core value types: digests, references, durations, index.json, manifests."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocigc.digest import Digest, digest_stream, is_digest
from ocigc.duration import parse_duration
from ocigc.errors import InvalidDigest, LayoutError, ManifestError, UsageError
from ocigc.oci import manifest as mf
from ocigc.oci.index import Index
from ocigc.oci.refs import parse_reference

H64 = "a" * 64


@pytest.mark.parametrize("text", [f"sha256:{H64}", f"sha384:{'b' * 96}", f"sha512:{'c' * 128}"])
def test_valid_digests(text: str) -> None:
    d = Digest(text)
    assert d == text and d.blob_path() == f"blobs/{d.algorithm}/{d.encoded}"


@pytest.mark.parametrize("text", ["", "sha256", f"sha256:{H64[:-1]}", f"sha256:{H64.upper()}", f"md5:{H64}",
                                  f"sha256:{H64}0", "sha256:../../etc/passwd", f"sha512:{H64}"])
def test_invalid_digests(text: str) -> None:
    with pytest.raises(InvalidDigest):
        Digest(text)
    assert not is_digest(text)


def test_streaming_digest_matches_hashlib() -> None:
    import hashlib
    import io

    data = b"x" * (3 * 1024 * 1024 + 7)
    d, n = digest_stream(io.BytesIO(data), "sha512")
    assert n == len(data) and d == f"sha512:{hashlib.sha512(data).hexdigest()}"


@pytest.mark.parametrize(("text", "path", "tag", "digest"), [
    ("s3/hello:latest", "s3/hello", "latest", None),
    ("s3/hello", "s3/hello", None, None),
    ("/mnt/s3/team/app:v1.2", "/mnt/s3/team/app", "v1.2", None),
    ("host:5000/x", "host:5000/x", None, None),  # the last ':' is before the last '/': no tag
    (f"lay@sha256:{H64}", "lay", None, f"sha256:{H64}"),
    ("lay:a,b", "lay", "a,b", None),
    ("./a:b/lay:t", "./a:b/lay", "t", None),
])
def test_reference_parsing_like_oras(text: str, path: str, tag: str | None, digest: str | None) -> None:
    r = parse_reference(text)
    assert (r.path, r.tag, r.digest) == (path, tag, digest)


@pytest.mark.parametrize("text", ["", "lay:", ":tag", "lay@sha256:xyz", "@sha256:" + H64])
def test_bad_references(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


@pytest.mark.parametrize(("text", "seconds"), [("0", 0), ("90s", 90), ("30m", 1800), ("2h", 7200),
                                               ("7d", 604800), ("1h30m", 5400), ("1.5", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "5x", "m", "1h 2m", "abc"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def test_index_parse_errors_are_clear() -> None:
    with pytest.raises(LayoutError, match="empty"):
        Index.parse(b"", "x/index.json")
    with pytest.raises(LayoutError, match="invalid JSON"):
        Index.parse(b"{", "x/index.json")
    with pytest.raises(LayoutError, match="schemaVersion"):
        Index.parse(b'{"manifests":[]}', "x/index.json")
    with pytest.raises(LayoutError, match=r"manifests\[0\].*invalid digest"):
        Index.parse(b'{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:xyz","size":1}]}')
    with pytest.raises(LayoutError, match="size"):
        Index.parse(json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "x", "digest": f"sha256:{H64}", "size": "1"}]}).encode())


def test_index_manifests_null_is_empty() -> None:
    assert Index.parse(b'{"schemaVersion":2,"manifests":null}').entries == ()


def test_index_rewrite_keeps_fields_annotations_and_order() -> None:
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "annotations": {"keep": "me"}, "x-extra": [1, 2], "manifests": [
                          {"mediaType": "m", "digest": f"sha256:{'1' * 64}", "size": 1, "annotations": {
                              "org.opencontainers.image.ref.name": "a", "other": "z"}, "platform": {"os": "linux"}},
                          {"mediaType": "m", "digest": f"sha256:{'2' * 64}", "size": 2},
                          {"mediaType": "m", "digest": f"sha256:{'3' * 64}", "size": 3,
                           "annotations": {"org.opencontainers.image.ref.name": "c"}}]}).encode()
    idx = Index.parse(raw)
    new = idx.without(lambda _i, e: e.size == 2)
    doc = json.loads(new.dumps())
    assert doc["annotations"] == {"keep": "me"} and doc["x-extra"] == [1, 2]
    assert [m["size"] for m in doc["manifests"]] == [1, 3]
    assert doc["manifests"][0]["platform"] == {"os": "linux"} and doc["manifests"][0]["annotations"]["other"] == "z"


def _m(obj: object, declared: str | None = None) -> mf.Parsed:
    return mf.parse(json.dumps(obj).encode(), declared, "blob")


def test_parse_kinds() -> None:
    d = {"mediaType": "x", "digest": f"sha256:{H64}", "size": 1}
    assert _m({"schemaVersion": 2, "config": d, "layers": [d]}).kind == mf.KIND_MANIFEST  # no mediaType (umoci)
    assert _m({"schemaVersion": 2, "manifests": [d]}).kind == mf.KIND_INDEX
    art = _m({"mediaType": "application/vnd.oci.artifact.manifest.v1+json", "blobs": [d], "subject": d})
    assert art.kind == mf.KIND_ARTIFACT and art.subject is not None and art.children == ((mf.BLOB, art.children[0][1]),)
    docker = _m({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                 "manifests": [d]})
    assert docker.kind == mf.KIND_INDEX
    s1 = _m({"schemaVersion": 1, "fsLayers": [{"blobSum": f"sha256:{H64}"}, {"blobSum": f"sha256:{H64}"}]})
    assert s1.kind == mf.KIND_SCHEMA1 and len(s1.children) == 1
    unknown = _m({"stuff": {"deep": [{"x": d}]}, "subject": d}, "application/vnd.example+json")
    assert unknown.kind == mf.KIND_UNKNOWN_JSON and [c[0] for c in unknown.children] == [mf.REF]
    assert unknown.subject is not None


def test_parse_refuses_broken_manifests() -> None:
    with pytest.raises(ManifestError, match="invalid JSON"):
        mf.parse(b'{"schemaVersion":2,"config":', "application/vnd.oci.image.manifest.v1+json", "f")
    with pytest.raises(ManifestError, match="invalid digest"):
        _m({"schemaVersion": 2, "manifests": [{"mediaType": "x", "digest": "sha256:zz", "size": 1}]})
    with pytest.raises(ManifestError, match="not a JSON object"):
        mf.parse(b"[1,2]", "application/vnd.oci.image.index.v1+json", "f")
    with pytest.raises(ManifestError):
        mf.parse(b"[" * 100000, "application/vnd.oci.image.index.v1+json", "f")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from([None, "application/vnd.oci.image.manifest.v1+json",
                                                  "application/vnd.oci.image.index.v1+json", "x/y+json"]))
def test_parse_never_crashes_on_random_bytes(data: bytes, declared: str | None) -> None:
    try:
        mf.parse(data, declared, "blob")
    except ManifestError as e:
        assert str(e).startswith("blob: ")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([None, "application/vnd.oci.image.index.v1+json", "application/x+json"]))
def test_parse_never_crashes_on_random_json(doc: object, declared: str | None) -> None:
    with contextlib.suppress(ManifestError):
        mf.parse(json.dumps(doc).encode(), declared, "blob")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_index_parse_never_crashes(data: bytes) -> None:
    with contextlib.suppress(LayoutError):
        Index.parse(data)


def test_journal_records_of_one_run_and_kind_never_overwrite_each_other(tmp_path: Path) -> None:
    from ocigc.layout.journal import read_records, run_id, write_record
    from ocigc.layout.layout import Layout
    from ocigc.storage.local import LocalStorage

    layout = Layout(LocalStorage(tmp_path))
    run = run_id()
    first = write_record(layout, "race", {"attempt": 1}, run)
    second = write_record(layout, "race", {"attempt": 2}, run)
    assert first != second
    assert sorted(r["attempt"] for r in read_records(layout, "race")) == [1, 2]
    assert all(run in name for name in (first, second))


def test_pmap_keeps_order_counts_and_raises_the_first_failing_items_error() -> None:
    import threading

    from ocigc.parallel import pmap

    done: list[int] = []
    lock = threading.Lock()

    def on_done() -> None:
        with lock:
            done.append(1)

    assert pmap(lambda x: x * x, range(1000), 16, on_done) == [x * x for x in range(1000)]
    assert len(done) == 1000
    seen: set[int] = set()

    def flaky(x: int) -> int:
        with lock:
            seen.add(x)
        if x in (700, 300):
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 300"):
        pmap(flaky, range(1000), 8)
    assert seen == set(range(1000))  # every item was still processed


def test_pmap_stops_handing_out_items_on_an_interrupt() -> None:
    from ocigc.parallel import pmap

    seen: list[int] = []

    def interrupted(x: int) -> int:
        seen.append(x)
        if x == 5:
            raise KeyboardInterrupt
        return x

    with pytest.raises(KeyboardInterrupt):
        pmap(interrupted, range(100_000), 4)
    assert len(seen) < 100_000


def test_pmap_brings_in_threads_for_slow_items() -> None:
    """The calling thread starts alone (a local disk's stat or unlink takes microseconds: no thread
    to start); items that wait (a mounted bucket's round trip) are spread over up to ``jobs`` threads."""
    import threading
    import time

    from ocigc.parallel import SLOW_ITEM, pmap

    def slow(x: int) -> int:
        time.sleep(SLOW_ITEM * 20)
        return threading.get_ident()

    used = pmap(slow, range(64), 8)
    assert len(set(used)) > 1 and len(set(used)) <= 8
    assert used[0] == threading.get_ident()  # the first item always runs in the calling thread


def test_workers_keep_their_threads_from_batch_to_batch() -> None:
    """A run's batches (removals 64 at a time, graph levels) share the threads the first slow batch
    started, instead of starting them again for every batch; order and errors as with ``pmap``."""
    import threading
    import time

    from ocigc.parallel import SLOW_ITEM, Workers

    def slow(x: int) -> int:
        time.sleep(SLOW_ITEM * 20)
        return threading.get_ident()

    with Workers(4) as workers:
        first = workers.map(slow, range(32))
        started = {t.ident for t in threading.enumerate() if t.name.startswith("ocigc-pmap-")}
        second = workers.map(slow, range(32))
        assert workers.map(lambda x: x * 2, range(100)) == [x * 2 for x in range(100)]
        with pytest.raises(ValueError, match="item 3"):
            workers.map(lambda x: (_ for _ in ()).throw(ValueError(f"item {x}")) if x in (3, 9) else x, range(20))
    assert 1 < len(set(first)) <= 4
    assert set(second) - {threading.get_ident()} <= started  # no new threads for the second batch
    assert not [t for t in threading.enumerate() if t.ident in started]  # all joined when the block ends
