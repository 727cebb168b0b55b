"""Build small OCI layouts by hand for tests (deterministic JSON, real sha256 digests)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


REPO = Path(__file__).resolve().parents[2]


FIXTURES = REPO / "fixtures"


LAYOUTS = FIXTURES / "layouts"


BAD = FIXTURES / "bad"


REAL = FIXTURES / "real"


def expect(path: Path) -> dict[str, Any]:
    return json.loads((path / "EXPECT.json").read_text())  # type: ignore[no-any-return]


def facts(path: Path) -> dict[str, Any]:
    return expect(path)["facts"]  # type: ignore[no-any-return]


def copy_layout(src: Path, dst: Path) -> Path:
    """A writable copy (symlinks kept as links, files' times kept); fixtures are never changed in place.

    ``dst`` may be a pre-made (possibly mounted) empty directory. Directories' modes and times are
    not copied: s3fs on a store whose folders are not objects (SeaweedFS) refuses them (ENOENT),
    which ``shutil.copytree`` reports as a failed copy."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        target = dst / item.name
        if item.is_symlink():
            os.symlink(os.readlink(item), target)
        elif item.is_dir():
            copy_layout(item, target)
        else:
            shutil.copy2(item, target)
    return dst
