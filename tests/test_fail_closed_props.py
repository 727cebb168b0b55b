"""Property tests with lying descriptors (docs/design.md, "The graph"): random layouts whose
descriptors lie about the blob they point at (wrong size, wrong or missing media type, fields that
contradict the type, children that do not parse), swept and deleted by the library core, checked
against a reference reader written here, apart from ocigc's own.

The invariant: nothing reachable by any honest reading of what ``index.json`` still lists is
removed. A run that refuses a layout (fail closed) removes nothing at all. A layout whose only lies
are of size, type and contradicting fields is read by the union of its readings and is swept, not
refused; its garbage goes."""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ocigc.gc.plan import DeleteOptions, SweepOptions
from ocigc.gc.run import RunOptions, delete_refs, sweep_layout
from ocigc.layout.layout import Layout
from ocigc.oci.refs import parse_reference
from ocigc.storage.local import LocalStorage
from tests.kit.tree import age, snapshot

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
UNKNOWN_JSON = "application/vnd.example.thing.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
#: Types a reader may take as leaves without reading the blob (docs/design.md, "Residual risk").
LEAF_TYPES = {OCI_CONFIG, OCI_LAYER}
MANIFEST_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]

#: Lies that a reader must see through by reading the blob (union of readings): never a refusal.
SEE_THROUGH = ["size_small", "size_large", "type_missing", "type_wrong", "type_unknown_json",
               "own_type_missing", "contradicting_fields", "manifest_in_layers_untyped", "nested_unknown_json",
               "bad_child_media_type"]
#: Lies that make a reachable blob unreadable: the layout must be refused, nothing removed.
UNPARSABLE = ["child_size_negative", "child_size_string", "truncated_child"]
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")


@dataclass
class Gen:
    root: Path
    rng: random.Random
    lies: set[str]
    used: set[str] = field(default_factory=set)
    garbage: set[str] = field(default_factory=set)

    def put(self, data: bytes, algorithm: str = "sha256") -> str:
        hexd = hashlib.new(algorithm, data).hexdigest()
        d = self.root / "blobs" / algorithm
        d.mkdir(parents=True, exist_ok=True)
        (d / hexd).write_bytes(data)
        return f"{algorithm}:{hexd}"

    def lie(self, kind: str, p: float = 0.35) -> bool:
        if kind in self.lies and self.rng.random() < p:
            self.used.add(kind)
            return True
        return False

    def desc(self, data: bytes, media_type: str | None, digest: str | None = None) -> dict[str, Any]:
        """A descriptor of ``data``, lying about its size or type as the drawn lies allow."""
        alg = "sha512" if self.rng.random() < 0.2 else "sha256"
        d: dict[str, Any] = {"digest": digest or self.put(data, alg), "size": len(data)}
        if media_type is not None and media_type not in LEAF_TYPES:
            if self.lie("type_missing"):
                media_type = None
            elif self.lie("type_wrong"):
                media_type = self.rng.choice([t for t in MANIFEST_TYPES if t != media_type])
            elif self.lie("type_unknown_json"):
                media_type = UNKNOWN_JSON
        if media_type is not None:
            d["mediaType"] = media_type
        if self.lie("size_small"):
            d["size"] = self.rng.randrange(0, max(1, len(data)))
        elif self.lie("size_large"):
            d["size"] = len(data) + self.rng.randrange(1, 10_000)
        return d

    def layer(self) -> dict[str, Any]:
        return self.desc(self.rng.randbytes(self.rng.randrange(1, 64)), OCI_LAYER)

    def own_type(self, doc: dict[str, Any], media_type: str) -> dict[str, Any]:
        if not self.lie("own_type_missing"):
            doc["mediaType"] = media_type
        return doc

    def manifest(self, depth: int = 0) -> dict[str, Any]:
        docker = self.rng.random() < 0.3
        kind = DOCKER_MANIFEST if docker else OCI_MANIFEST
        cfg = self.desc(json.dumps({"os": "linux", "n": self.rng.random()}).encode(), OCI_CONFIG)
        layers: list[Any] = [self.layer() for _ in range(self.rng.randrange(0, 4))]
        if depth < 2 and self.lie("manifest_in_layers_untyped", 0.2):
            inner = self.manifest(depth + 1)  # a manifest listed among layers, with no type: read
            inner.pop("mediaType", None)
            layers.append(inner)
        if self.lie("child_size_negative", 0.15):
            bad = self.layer()
            bad["size"] = -1
            layers.append(bad)
        elif self.lie("child_size_string", 0.15):
            bad = self.layer()
            bad["size"] = str(bad["size"])
            layers.append(bad)
        elif self.lie("bad_child_media_type", 0.15):
            bad = self.layer()
            bad["mediaType"] = "not a media type"
            layers.append(bad)
        doc: dict[str, Any] = self.own_type({"schemaVersion": 2}, kind)
        doc["config"] = cfg
        doc["layers"] = layers
        if self.lie("contradicting_fields", 0.2):
            doc["manifests"] = [self.manifest(depth + 1)] if depth < 2 else []
        if depth < 2 and self.lie("nested_unknown_json", 0.2):
            doc.setdefault("annotations", {})["x"] = "y"
            doc["extra"] = {"deep": [self.unknown_json(depth + 1)]}
        raw = json.dumps(doc).encode()
        if self.lie("truncated_child", 0.1):
            raw = raw[: len(raw) // 2]
        return self.desc(raw, kind)

    def index(self, depth: int = 0) -> dict[str, Any]:
        kids = [self.manifest(depth + 1) for _ in range(self.rng.randrange(1, 4))]
        if depth < 1 and self.rng.random() < 0.3:
            kids.append(self.index(depth + 1))
        docker = self.rng.random() < 0.3
        kind = DOCKER_LIST if docker else OCI_INDEX
        doc = self.own_type({"schemaVersion": 2}, kind)
        doc["manifests"] = kids
        if self.lie("contradicting_fields", 0.2):
            doc["config"] = self.desc(b'{"os":"linux"}', OCI_CONFIG)
            doc["layers"] = [self.layer()]
        return self.desc(json.dumps(doc).encode(), kind)

    def unknown_json(self, depth: int = 0) -> dict[str, Any]:
        body = {"things": [{"nested": self.layer()}, self.manifest(depth + 1) if depth < 2 else self.layer()]}
        return self.desc(json.dumps(body).encode(), UNKNOWN_JSON)

    def build(self) -> list[str]:
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        entries: list[dict[str, Any]] = []
        tags: list[str] = []
        for i in range(self.rng.randrange(1, 5)):
            pick = self.rng.random()
            d = self.manifest() if pick < 0.5 else self.index() if pick < 0.85 else self.unknown_json()
            if self.rng.random() < 0.8:
                d["annotations"] = {REF_NAME: f"t{i}"}
                tags.append(f"t{i}")
            entries.append(d)
        # Garbage: blobs and whole manifests nothing lists (their lies are not the reachable graph's).
        reachable_lies = set(self.used)
        before = _present(self.root)
        for _ in range(self.rng.randrange(1, 4)):
            self.put(b"garbage " + self.rng.randbytes(8))
        self.manifest()
        self.garbage = _present(self.root) - before
        self.used = reachable_lies
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                          "manifests": entries}))
        return tags


def _present(root: Path) -> set[str]:
    return {f"{p.parent.name}:{p.name}" for p in (root / "blobs").glob("*/*")}


def _descriptors(node: Any) -> list[dict[str, Any]]:
    """Every object with a digest anywhere in ``node`` but under ``subject`` (a referrer's subject is
    not a child)."""
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("digest"), str) and _DIGEST.match(node["digest"]):
            out.append(node)
        for k, v in node.items():
            if k != "subject":
                out.extend(_descriptors(v))
    elif isinstance(node, list):
        for v in node:
            out.extend(_descriptors(v))
    return out


def honest_reachable(root: Path) -> set[str]:
    """Reference reader: the union of every honest reading. A blob is read unless the only thing
    said of it is a known leaf type (config, layer); read, whatever its declared size, and every
    digest-bearing object anywhere in it is a child, whatever type or field names say."""
    doc = json.loads((root / "index.json").read_text())
    stack: list[tuple[str, bool]] = [(d["digest"], True) for d in _descriptors(doc.get("manifests") or [])]
    seen: set[str] = set()
    read: set[str] = set()
    while stack:
        digest, must_read = stack.pop()
        seen.add(digest)
        if not must_read or digest in read:
            continue
        read.add(digest)
        alg, _, hexd = digest.partition(":")
        p = root / "blobs" / alg / hexd
        if not p.is_file():
            continue
        try:
            body = json.loads(p.read_bytes())
        except ValueError:
            continue
        for d in _descriptors(body):
            if d is body:
                continue
            stack.append((d["digest"], d.get("mediaType") not in LEAF_TYPES))
    return seen


def _outcome_removed(root: Path, before: set[str], fail: bool, before_tree: dict[str, Any]) -> set[str]:
    if fail:
        assert _present(root) == before, "a refused layout lost blobs"
        assert snapshot(root, control=False) == before_tree
    return before - _present(root)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32), lies=st.sets(st.sampled_from(SEE_THROUGH + UNPARSABLE)))
def test_sweep_never_removes_what_an_honest_reading_reaches(seed: int, lies: set[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gen = Gen(root, random.Random(seed), lies)
        gen.build()
        age(root)
        reach = honest_reachable(root)
        before = _present(root)
        before_tree = snapshot(root, control=False)
        out = sweep_layout(Layout.open(LocalStorage(root)), SweepOptions(grace=0), RunOptions(jobs=2))
        refused = out.error is not None
        event(f"refused={refused} unparsable={bool(gen.used & set(UNPARSABLE))}")
        removed = _outcome_removed(root, before, refused, before_tree)
        assert not (removed & reach), f"removed what an honest reading reaches: {sorted(removed & reach)}"
        if not gen.used & set(UNPARSABLE):
            # Size and type lies are seen through, never a reason to refuse, and garbage still goes.
            assert not refused, f"refused a layout with only see-through lies {sorted(gen.used)}: {out.error}"
            assert gen.garbage - reach <= removed, "garbage left behind"
        if gen.used & set(UNPARSABLE):
            # A child that is not a valid descriptor, or a manifest that does not parse: fail closed.
            assert refused, f"lies {sorted(gen.used)} were not refused"


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), lies=st.sets(st.sampled_from(SEE_THROUGH + UNPARSABLE)), data=st.data())
def test_delete_never_removes_what_remaining_entries_reach(seed: int, lies: set[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gen = Gen(root, random.Random(seed), lies)
        tags = gen.build()
        if not tags:
            return
        age(root)
        victim = data.draw(st.sampled_from(sorted(set(tags))))
        before = _present(root)
        before_tree = snapshot(root, control=False)
        out = delete_refs(Layout.open(LocalStorage(root)), [parse_reference(f"{root}:{victim}")],
                          DeleteOptions(force=True), RunOptions(jobs=2))
        refused = out.error is not None
        event(f"refused={refused}")
        removed = _outcome_removed(root, before, refused, before_tree)
        reach = honest_reachable(root)  # what the entries left in index.json reach
        assert not (removed & reach), f"removed what a remaining entry reaches: {sorted(removed & reach)}"
        if not gen.used & set(UNPARSABLE):
            assert not refused, f"refused a delete with only see-through lies {sorted(gen.used)}: {out.error}"


def test_a_child_with_an_invalid_media_type_is_kept_and_reported(tmp_path: Path) -> None:
    """A ``mediaType`` that is a string but not a media type does not stop the layout: the child
    it describes is kept by a sweep, and ``check`` warns ``bad-media-type``."""
    from tests.kit.cli import OK, run

    gen = Gen(tmp_path, random.Random(1), set())
    layer = gen.layer()
    layer["mediaType"] = "not a media type"
    cfg = gen.desc(b'{"os":"linux"}', OCI_CONFIG)
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer]}).encode()
    entry = gen.desc(raw, OCI_MANIFEST)
    entry["annotations"] = {REF_NAME: "v1"}
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (tmp_path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    junk = gen.put(b"garbage")
    age(tmp_path)
    r = run(["sweep", tmp_path, "--grace", "0s", "--yes"])
    assert r.code == OK, r
    assert junk not in _present(tmp_path) and layer["digest"] in _present(tmp_path)
    doc = run(["check", "--json", tmp_path]).json()
    codes = [p["code"] for lay in doc["layouts"] for p in lay["problems"]]
    assert "bad-media-type" in codes, doc
