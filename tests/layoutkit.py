"""Build small OCI layouts by hand for tests (deterministic JSON, real sha256 digests)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class LayoutBuilder:
    """``b = LayoutBuilder(path); m = b.image("v1", [b"layer"]); b.save()``."""

    def __init__(self, root: str | os.PathLike[str], index_extra: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.entries: list[dict[str, Any]] = []
        self.index_extra = index_extra or {}
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data: bytes, media_type: str, algorithm: str = "sha256", write: bool = True) -> dict[str, Any]:
        hexd = hashlib.new(algorithm, data).hexdigest()
        if write:
            d = self.root / "blobs" / algorithm
            d.mkdir(parents=True, exist_ok=True)
            (d / hexd).write_bytes(data)
        return {"mediaType": media_type, "digest": f"{algorithm}:{hexd}", "size": len(data)}

    def manifest(self, layers: list[bytes] | list[dict[str, Any]], config: bytes | None = None,
                 subject: dict[str, Any] | None = None, artifact_type: str | None = None,
                 media_type: str | None = OCI_MANIFEST, annotations: dict[str, str] | None = None,
                 write_layers: bool = True) -> dict[str, Any]:
        cfg = self.blob(config if config is not None else b'{"architecture":"amd64","os":"linux"}', OCI_CONFIG)
        lays = [x if isinstance(x, dict) else self.blob(x, OCI_LAYER, write=write_layers) for x in layers]
        doc: dict[str, Any] = {"schemaVersion": 2}
        if media_type:
            doc["mediaType"] = media_type
        if artifact_type:
            doc["artifactType"] = artifact_type
        doc["config"] = cfg
        doc["layers"] = lays
        if subject:
            doc["subject"] = subject
        if annotations:
            doc["annotations"] = annotations
        desc = self.blob(dumps(doc), media_type or OCI_MANIFEST)
        if artifact_type:
            desc["artifactType"] = artifact_type
        return desc

    def index(self, manifests: list[dict[str, Any]], subject: dict[str, Any] | None = None,
              media_type: str = OCI_INDEX) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
        if subject:
            doc["subject"] = subject
        return self.blob(dumps(doc), media_type)

    def referrer(self, subject: dict[str, Any], payload: bytes, artifact_type: str = "application/vnd.example.sig"
                 ) -> dict[str, Any]:
        return self.manifest([self.blob(payload, "application/vnd.example.payload")], config=b"{}",
                             subject={k: subject[k] for k in ("mediaType", "digest", "size")},
                             artifact_type=artifact_type)

    def add(self, desc: dict[str, Any], tag: str | None = None, **extra: Any) -> dict[str, Any]:
        entry = {k: desc[k] for k in ("mediaType", "digest", "size")}
        if desc.get("artifactType"):
            entry["artifactType"] = desc["artifactType"]
        entry.update(extra)
        if tag is not None:
            entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: tag}
        self.entries.append(entry)
        return entry

    def image(self, tag: str | None, layers: list[bytes], config: bytes | None = None) -> dict[str, Any]:
        desc = self.manifest(layers, config)
        self.add(desc, tag)
        return desc

    def save(self) -> Path:
        doc = {"schemaVersion": 2, **self.index_extra, "manifests": self.entries}
        (self.root / "index.json").write_bytes(dumps(doc))
        return self.root


def blob_path(root: Path, digest: str) -> Path:
    alg, hexd = digest.split(":")
    return root / "blobs" / alg / hexd


def tree_snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: (content, mtime_ns): a dry run must leave this identical."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns)
    for dirpath, dirs, _files in os.walk(root):
        for d in dirs:
            p = Path(dirpath) / d
            out[str(p.relative_to(root)) + "/"] = (b"", p.stat().st_mtime_ns)
    return out


def make_old(root: Path, seconds: float = 7200) -> None:
    """Age every file under ``root`` (so the grace period does not keep it)."""
    import time

    t = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(Path(dirpath) / f, (t, t))


def random_layout(root: Path, seed: int, n_layers: int = 8, n_images: int = 6) -> LayoutBuilder:
    """A random layout: images sharing layers, indexes (nested), referrers, untagged entries, garbage."""
    import random

    rng = random.Random(seed)
    b = LayoutBuilder(root)
    pool = [f"layer-{seed}-{i}".encode() * rng.randint(1, 4) for i in range(n_layers)]
    manifests: list[dict[str, Any]] = []
    for i in range(n_images):
        layers = rng.sample(pool, rng.randint(0, min(3, len(pool))))
        config = json.dumps({"i": i, "seed": seed}).encode()
        mt = rng.choice([OCI_MANIFEST, OCI_MANIFEST, None])
        manifests.append(b.manifest(layers, config, media_type=mt))
    indexes: list[dict[str, Any]] = []
    for _ in range(rng.randint(0, 3)):
        kids = rng.sample(manifests + indexes, rng.randint(1, min(3, len(manifests) + len(indexes))))
        indexes.append(b.index([{k: v for k, v in d.items() if k in ("mediaType", "digest", "size")}
                                for d in kids]))
    nodes = manifests + indexes
    referrers = []
    for _ in range(rng.randint(0, 3)):
        subject = rng.choice(nodes + referrers)
        referrers.append(b.referrer(subject, f"sig-{rng.random()}".encode()))
    for n, desc in enumerate(nodes + referrers):
        roll = rng.random()
        if roll < 0.45:
            b.add(desc, f"t{n}")
        elif roll < 0.65:
            b.add(desc, None)
        # else: not an entry (garbage unless something else reaches it)
    if rng.random() < 0.3 and b.entries:
        b.add(rng.choice(nodes), "dup")  # a name on two entries / a digest with two names
    for i in range(rng.randint(0, 3)):
        b.blob(f"stray-{seed}-{i}".encode(), "application/octet-stream")
    b.save()
    return b


def independent_reachable(root: Path) -> set[str]:
    """Closure over index.json by a naive walk: follows manifests/config/layers/blobs, not subject."""
    index = json.loads((root / "index.json").read_text())
    stack = [m["digest"] for m in index.get("manifests") or []]
    seen: set[str] = set()
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        p = blob_path(root, d)
        if not p.exists():
            continue
        try:
            doc = json.loads(p.read_bytes())
        except ValueError:
            continue
        if not isinstance(doc, dict) or "schemaVersion" not in doc:
            continue
        kids = list(doc.get("manifests") or []) + list(doc.get("layers") or []) + list(doc.get("blobs") or [])
        if isinstance(doc.get("config"), dict):
            kids.append(doc["config"])
        stack.extend(k["digest"] for k in kids)
    return seen


def present_blobs(root: Path) -> set[str]:
    out = set()
    for alg_dir in (root / "blobs").iterdir():
        for f in alg_dir.iterdir():
            out.add(f"{alg_dir.name}:{f.name}")
    return out
