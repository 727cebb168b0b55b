"""Lying or unparsable descriptors never make reachable blobs look unreachable (docs/design.md, "The graph").

Each layout is hand-made; ``ocigc sweep --grace 0s`` and ``ocigc delete`` run through the CLI, and
every blob that any honest reading of the graph reaches must survive.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.kit.cli import ERROR, OK, run

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
UNKNOWN = "application/x-unknown+json"


class Lay:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(self, data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / h).write_bytes(data)
        return f"sha256:{h}"

    def desc(self, data: bytes, mt: str | None, size: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"digest": self.put(data), "size": len(data) if size is None else size}
        if mt is not None:
            d["mediaType"] = mt
        return d

    def image(self, tag: str, own_mt: str | None = OCI_MANIFEST) -> tuple[bytes, list[str]]:
        cfg = self.desc(f'{{"os":"linux","tag":"{tag}"}}'.encode(), OCI_CONFIG)
        lay = self.desc(f"layer of {tag}".encode(), OCI_LAYER)
        doc: dict[str, Any] = {"schemaVersion": 2, "config": cfg, "layers": [lay]}
        if own_mt:
            doc["mediaType"] = own_mt
        raw = json.dumps(doc).encode()
        return raw, [cfg["digest"], lay["digest"]]

    def index(self, entries: list[dict[str, Any]]) -> None:
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))

    def blobs(self) -> set[str]:
        return {f"sha256:{p.name}" for p in (self.root / "blobs" / "sha256").iterdir()}


def entry(d: dict[str, Any], tag: str | None) -> dict[str, Any]:
    e = dict(d)
    if tag is not None:
        e["annotations"] = {"org.opencontainers.image.ref.name": tag}
    return e


def _sweep(lay: Lay, expect: int) -> None:
    r = run(["sweep", "--grace", "0s", lay.root])
    assert r.code == expect, str(r)
    if expect != OK:
        assert str(lay.root) in r.stderr, str(r)


# --- item: an unparsable manifest-like blob stops the layout ----------------------------------

def _bad_layer_manifest(lay: Lay, own_mt: str | None) -> tuple[bytes, list[str]]:
    cfg = lay.desc(b'{"os":"linux"}', OCI_CONFIG)
    good = lay.desc(b"good layer", OCI_LAYER)
    bad = {"mediaType": OCI_LAYER, "digest": lay.put(b"bad layer"), "size": -1}
    doc: dict[str, Any] = {"schemaVersion": 2, "config": cfg, "layers": [good, bad]}
    if own_mt:
        doc["mediaType"] = own_mt
    return json.dumps(doc).encode(), [cfg["digest"], good["digest"], bad["digest"]]


@pytest.mark.parametrize("entry_mt", [None, UNKNOWN, "application/octet-stream"])
@pytest.mark.parametrize("own_mt", [OCI_MANIFEST, None])
def test_unparsable_manifest_under_any_entry_type_stops_the_layout(tmp_path: Path, entry_mt: str | None,
                                                                   own_mt: str | None) -> None:
    lay = Lay(tmp_path / "l")
    raw, kids = _bad_layer_manifest(lay, own_mt)
    lay.index([entry(lay.desc(raw, entry_mt), "v1")])
    junk = lay.put(b"garbage nobody references")
    before = lay.blobs()
    _sweep(lay, ERROR)
    assert lay.blobs() == before and junk in before and set(kids) <= before


def test_unknown_json_with_invalid_descriptor_shape_fails_closed(tmp_path: Path) -> None:
    lay = Lay(tmp_path / "l")
    child = lay.put(b"child")
    doc = {"things": [{"digest": child, "size": "5"}]}
    lay.index([entry(lay.desc(json.dumps(doc).encode(), UNKNOWN), "v1")])
    before = lay.blobs()
    _sweep(lay, ERROR)
    assert lay.blobs() == before


@pytest.mark.parametrize("entry_mt", [None, UNKNOWN])
def test_truncated_listed_json_fails_closed(tmp_path: Path, entry_mt: str | None) -> None:
    lay = Lay(tmp_path / "l")
    raw, _kids = lay.image("v1")
    lay.put(raw)
    truncated = raw[: len(raw) // 2]
    lay.index([entry(lay.desc(truncated, entry_mt), "v1")])
    before = lay.blobs()
    _sweep(lay, ERROR)
    assert lay.blobs() == before


def test_binary_blob_listed_without_type_is_a_leaf(tmp_path: Path) -> None:
    lay = Lay(tmp_path / "l")
    keep = lay.desc(b"\x1f\x8b binary", None)
    lay.index([entry(keep, "v1")])
    junk = lay.put(b"junk")
    _sweep(lay, OK)
    assert lay.blobs() == {keep["digest"]} and junk not in lay.blobs()


# --- item: declared type and size never hide what the blob references ------------------------

def _index_blob(lay: Lay, own_mt: str | None) -> tuple[bytes, set[str]]:
    raw, kids = lay.image("p")
    m = lay.desc(raw, OCI_MANIFEST)
    doc: dict[str, Any] = {"schemaVersion": 2, "manifests": [m]}
    if own_mt:
        doc["mediaType"] = own_mt
    return json.dumps(doc).encode(), {m["digest"], *kids}


@pytest.mark.parametrize("own_mt", [None, OCI_INDEX])
@pytest.mark.parametrize("declared", [OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json",
                                      OCI_CONFIG, UNKNOWN, None])
def test_index_blob_declared_as_something_else_keeps_its_children(tmp_path: Path, own_mt: str | None,
                                                                   declared: str | None) -> None:
    lay = Lay(tmp_path / "l")
    raw, kids = _index_blob(lay, own_mt)
    top = lay.desc(raw, declared)
    lay.index([entry(top, "v1")])
    junk = lay.put(b"junk")
    _sweep(lay, OK)
    assert kids | {top["digest"]} <= lay.blobs()
    assert junk not in lay.blobs()


def test_image_manifest_declared_as_docker_list_keeps_config_and_layer(tmp_path: Path) -> None:
    lay = Lay(tmp_path / "l")
    raw, kids = lay.image("v1", own_mt=None)
    top = lay.desc(raw, DOCKER_LIST)
    lay.index([entry(top, "v1")])
    _sweep(lay, OK)
    assert set(kids) <= lay.blobs()


@pytest.mark.parametrize("delta", [-50, -1, 1, 10_000_000])
@pytest.mark.parametrize("declared", [UNKNOWN, None, OCI_MANIFEST])
def test_declared_size_other_than_the_blob_hides_nothing(tmp_path: Path, delta: int, declared: str | None) -> None:
    lay = Lay(tmp_path / "l")
    raw, kids = lay.image("v1")
    top = lay.desc(raw, declared, size=len(raw) + delta)
    lay.index([entry(top, "v1")])
    junk = lay.put(b"junk")
    r = run(["sweep", "--grace", "0s", lay.root])
    assert r.code in (OK, ERROR), str(r)
    assert set(kids) | {top["digest"]} <= lay.blobs()
    if r.code == OK:
        assert junk not in lay.blobs()


def test_unknown_json_child_with_small_declared_size_is_read(tmp_path: Path) -> None:
    """A manifest's unknown-JSON layer declared 2 bytes long that is really a manifest."""
    lay = Lay(tmp_path / "l")
    inner, kids = lay.image("inner")
    hidden = lay.desc(inner, UNKNOWN, size=2)
    cfg = lay.desc(b'{"os":"linux"}', OCI_CONFIG)
    outer = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [hidden]}).encode()
    top = lay.desc(outer, OCI_MANIFEST)
    lay.index([entry(top, "v1")])
    _sweep(lay, OK)
    assert set(kids) <= lay.blobs()


def test_delete_other_tag_keeps_what_a_lying_entry_reaches(tmp_path: Path) -> None:
    lay = Lay(tmp_path / "l")
    raw, kids = _index_blob(lay, None)
    liar = lay.desc(raw, OCI_MANIFEST)
    other, _other_kids = lay.image("other")
    od = lay.desc(other, OCI_MANIFEST)
    lay.index([entry(liar, "v1"), entry(od, "v2")])
    r = run(["delete", "--yes", f"{lay.root}:v2"])
    assert r.code == OK, str(r)
    run(["sweep", "--grace", "0s", lay.root])
    assert kids <= lay.blobs()
    r = run(["check", lay.root])
    assert r.code == OK, str(r)
