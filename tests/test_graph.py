"""The reference graph: reachability, referrers, guards — against independent computations."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocigc.layout.graph import MAX_DEPTH, RefGraph
from ocigc.layout.layout import Layout
from ocigc.layout.state import LayoutState
from ocigc.storage.local import LocalStorage
from tests.kit.layouts import LayoutBuilder, dumps, random_layout
from tests.kit.tree import reachable


def load(root: Path) -> LayoutState:
    return LayoutState.load(Layout.open(LocalStorage(root)))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**31))
def test_reachable_equals_independent_closure(seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_layout(root, seed)
        state = load(root)
        assert state.reachable() == reachable(root)


def test_referrer_does_not_keep_subject_alive(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    img = b.manifest([b"layer"])
    sig = b.referrer(img, b"signature")
    b.add(sig, None)
    b.save()
    state = load(tmp_path)
    assert img["digest"] not in state.reachable()
    assert state.graph.referrers(img["digest"]) == [sig["digest"]]


def test_unknown_json_is_scanned_and_non_json_is_a_leaf(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    hidden = b.blob(b"hidden payload", "application/octet-stream")
    thing = b.blob(dumps({"nested": {"ref": hidden}}), "application/vnd.example.thing+json")
    leaf = b.blob(b"\x00\x01binary", "application/vnd.example.bin")
    m = b.manifest([thing, leaf])
    b.add(m, "t")
    b.save()
    assert {hidden["digest"], thing["digest"], leaf["digest"]} <= load(tmp_path).reachable()


def test_missing_blobs_are_tolerated_and_reported(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    m = b.manifest([b"present", b"absent"], write_layers=True)
    b.add(m, "t")
    gone = b.manifest([b"x"])
    b.add(gone, "gone")
    b.save()
    (tmp_path / "blobs" / "sha256" / gone["digest"].split(":")[1]).unlink()
    state = load(tmp_path)
    assert state.graph.missing_manifests(state.reachable()) == {gone["digest"]}


def test_depth_guard(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    desc = b.manifest([b"bottom"])
    for _ in range(MAX_DEPTH + 5):
        desc = b.index([{k: desc[k] for k in ("mediaType", "digest", "size")}])
    b.add(desc, "deep")
    b.save()
    state = load(tmp_path)
    errors = state.graph.errors()
    assert any("deeper" in e for e in errors.values())


def test_truncated_manifest_is_an_error_not_a_leaf(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    m = b.manifest([b"l"])
    b.add(m, "t")
    b.save()
    p = tmp_path / "blobs" / "sha256" / m["digest"].split(":")[1]
    p.write_bytes(p.read_bytes()[: m["size"] // 2])
    state = load(tmp_path)
    assert "invalid JSON" in state.graph.errors()[m["digest"]]


def test_same_digest_with_different_descriptors(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    shared = b.blob(b"shared", "application/vnd.oci.image.layer.v1.tar")
    other = dict(shared, mediaType="application/vnd.example.other")
    m1 = b.manifest([shared])
    m2 = b.manifest([other], config=b'{"x":1}')
    b.add(m1, "a")
    b.add(m2, "b")
    b.save()
    node = load(tmp_path).graph.node(shared["digest"])
    assert node["media_types"] == {"application/vnd.oci.image.layer.v1.tar", "application/vnd.example.other"}


def test_rebuild_with_known_graph_reads_only_new_manifests(tmp_path: Path) -> None:
    from ocigc.storage.base import OpCounter

    random_layout(tmp_path, 7)
    counter = OpCounter()
    layout = Layout.open(LocalStorage(tmp_path, counter))
    first = LayoutState.load(layout)
    reads = counter.snapshot().get("read", 0)
    assert reads > 1
    counter.reset()
    second = LayoutState.load(layout, known=first.graph)
    assert counter.snapshot().get("read", 0) == 1  # index.json only
    assert second.reachable() == first.reachable()


@pytest.mark.parametrize("fmt", ["json", "dot", "graphml"])
def test_exports(tmp_path: Path, fmt: str) -> None:
    random_layout(tmp_path, 3)
    g: RefGraph = load(tmp_path).graph
    out = {"json": lambda: str(g.to_json()), "dot": g.to_dot, "graphml": g.to_graphml}[fmt]()
    assert all(d in out for d in g.nodes())
