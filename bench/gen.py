"""A deterministic generator of realistic layouts for benchmarks.

R repositories x T tags; images with L layers drawn from a shared pool (so layers are shared
across tags and repositories); a fraction of tags are multi-arch indexes over two platform
manifests; a fraction carry a referrer (a signature artifact, an untagged entry); a fraction of
garbage: tags deleted from index.json (their manifests and unique blobs become unreachable) and
stray blobs. Blobs are small by default: a run is about operation counts, not bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EMPTY = "application/vnd.oci.empty.v1+json"
REF = "org.opencontainers.image.ref.name"


@dataclass
class Spec:
    repos: int = 1
    tags: int = 100
    layers: int = 4
    unique: int = 1
    pool: int = 400
    multiarch: float = 0.2
    referrers: float = 0.2
    garbage: float = 0.25
    strays: int = 50
    blob_size: int = 256
    seed: int = 1


@dataclass
class Generated:
    """What was generated (per repository name): the facts a benchmark checks against."""

    root: Path
    blobs: dict[str, set[str]] = field(default_factory=dict)
    manifests: dict[str, set[str]] = field(default_factory=dict)
    reachable: dict[str, set[str]] = field(default_factory=dict)

    @property
    def total_blobs(self) -> int:
        return sum(len(b) for b in self.blobs.values())

    @property
    def total_manifests(self) -> int:
        return sum(len(m) for m in self.manifests.values())

    @property
    def garbage(self) -> int:
        return sum(len(self.blobs[r] - self.reachable[r]) for r in self.blobs)


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.written: set[str] = set()
        self.manifests: set[str] = set()
        self.edges: dict[str, list[str]] = {}

    def blob(self, data: bytes, media_type: str, children: list[str] | None = None) -> dict[str, Any]:
        hexd = hashlib.sha256(data).hexdigest()
        digest = f"sha256:{hexd}"
        if digest not in self.written:
            (self.root / "blobs" / "sha256" / hexd).write_bytes(data)
            self.written.add(digest)
        if children is not None:
            self.manifests.add(digest)
            self.edges[digest] = children
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def manifest(self, layers: list[bytes], config: bytes, subject: dict[str, Any] | None = None,
                 artifact_type: str | None = None) -> dict[str, Any]:
        cfg = self.blob(config, EMPTY if config == b"{}" else CONFIG)
        lays = [self.blob(x, LAYER) for x in layers]
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": MANIFEST}
        if artifact_type:
            doc["artifactType"] = artifact_type
        doc["config"], doc["layers"] = cfg, lays
        if subject:
            doc["subject"] = subject
        return self.blob(json.dumps(doc, separators=(",", ":")).encode(), MANIFEST,
                         [cfg["digest"], *(x["digest"] for x in lays)])

    def index(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests}
        return self.blob(json.dumps(doc, separators=(",", ":")).encode(), INDEX, [m["digest"] for m in manifests])

    def reach(self, roots: list[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(self.edges.get(d, []))
        return seen


def generate(root: Path, spec: Spec) -> Generated:
    rng = random.Random(spec.seed)
    pool = [rng.randbytes(spec.blob_size) for _ in range(spec.pool)]
    out = Generated(root)
    for r in range(spec.repos):
        name = f"team{r % 10}/repo{r}" if spec.repos > 1 else "repo"
        w = _Writer(root / name)
        entries: list[dict[str, Any]] = []
        roots: list[str] = []
        for t in range(spec.tags):
            layers = rng.sample(pool, min(spec.layers, len(pool))) + [rng.randbytes(spec.blob_size)
                                                                       for _ in range(spec.unique)]
            if rng.random() < spec.multiarch:
                plats = [w.manifest(layers, json.dumps({"os": "linux", "architecture": a, "t": t, "r": r}).encode())
                         for a in ("amd64", "arm64")]
                top = w.index([dict(p, platform={"os": "linux", "architecture": a})
                               for p, a in zip(plats, ("amd64", "arm64"), strict=True)])
            else:
                top = w.manifest(layers, json.dumps({"os": "linux", "t": t, "r": r}).encode())
            deleted = rng.random() < spec.garbage
            items = [dict(top, annotations={REF: f"v{t}"})]
            if rng.random() < spec.referrers:
                sig = w.manifest([f"signature {r}/{t}".encode()], b"{}", subject=top,
                                 artifact_type="application/vnd.example.signature")
                items.append(dict(sig, artifactType="application/vnd.example.signature"))
            if not deleted:
                entries.extend(items)
                roots.extend(i["digest"] for i in items)
        for _ in range(spec.strays):
            w.blob(rng.randbytes(spec.blob_size), "application/octet-stream")
        (w.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries},
                                                      separators=(",", ":")))
        out.blobs[name] = set(w.written)
        out.manifests[name] = set(w.manifests)
        out.reachable[name] = w.reach(roots) & w.written
    return out


def age_tree(root: Path, seconds: float = 7200) -> None:
    import time

    t = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (t, t))


def spec_for_blobs(blobs: int, seed: int = 1) -> Spec:
    """A one-repository spec with about ``blobs`` blobs and blobs/10 manifests."""
    tags = max(10, blobs // 11)
    return Spec(repos=1, tags=tags, layers=4, unique=6, pool=max(50, blobs // 20), strays=max(10, blobs // 40),
                seed=seed)
