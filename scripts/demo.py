"""`make demo`: build a small layout in ./demo and show ocigc's main job on it.

The layout holds three tags of an image that share layers and some garbage a writer left
behind; `ocigc push` adds an artifact and a signature of it (a referrer). Then: ls, tags,
inspect, check, a dry-run sweep, a delete, a sweep.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
LAYOUT = DEMO / "hello"
OCIGC = [str(Path(sys.executable).parent / "ocigc")]


def blob(data: bytes, media_type: str) -> dict[str, Any]:
    hexd = hashlib.sha256(data).hexdigest()
    (LAYOUT / "blobs" / "sha256" / hexd).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{hexd}", "size": len(data)}


def manifest(layers: list[bytes], config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    doc.update({k: v for k, v in extra.items() if k == "artifactType"})
    doc["config"] = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    doc["layers"] = [blob(layer, "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers]
    doc.update({k: v for k, v in extra.items() if k != "artifactType"})
    return blob(json.dumps(doc, separators=(",", ":")).encode(), doc["mediaType"])


def build() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    (LAYOUT / "blobs" / "sha256").mkdir(parents=True)
    (LAYOUT / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    base, libs = b"base layer " * 1000, b"shared libraries " * 500
    v1 = manifest([base, libs, b"app v1"], {"created": "2026-01-01T00:00:00Z", "v": 1})
    v2 = manifest([base, libs, b"app v2"], {"created": "2026-02-01T00:00:00Z", "v": 2})
    v3 = manifest([base, b"app v3"], {"created": "2026-03-01T00:00:00Z", "v": 3})
    ref = "org.opencontainers.image.ref.name"
    entries = [dict(v1, annotations={ref: "v1"}), dict(v2, annotations={ref: "v2"}),
               dict(v3, annotations={ref: "latest"})]
    (LAYOUT / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    # Garbage a writer left behind: an old manifest nobody lists, and an interrupted upload.
    manifest([b"abandoned build"], {"v": 0})
    (LAYOUT / "ingest").mkdir()
    (LAYOUT / "ingest" / "upload-1234").write_bytes(b"partial upload")
    old = time.time() - 3 * 3600
    for dirpath, _, files in os.walk(LAYOUT):
        for f in files:
            os.utime(Path(dirpath) / f, (old, old))


def run(*args: str) -> None:
    print(f"\n$ ocigc {' '.join(args)}", flush=True)
    rc = subprocess.call([*OCIGC, *args], cwd=DEMO)
    if rc not in (0,):
        print(f"(exit code {rc})", flush=True)
        if rc not in (1, 4):
            sys.exit(rc)


def push_artifacts() -> None:
    """An artifact and its signature, pushed the way `oras push --oci-layout` would."""
    (DEMO / "hello.txt").write_text("hello world\n")
    (DEMO / "hello.sig").write_text("-----signature-----\n")
    run("push", "hello:notes", "hello.txt:text/plain")
    run("push", "hello", "hello.sig:application/vnd.example.signature", "--subject", "notes",
        "--artifact-type", "application/vnd.example.signature")


def main() -> None:
    build()
    print(f"Built a small layout in {LAYOUT}: 3 image tags sharing layers, and garbage a writer left behind.")
    push_artifacts()
    run("ls", ".")
    run("tags", "hello", "--all")
    run("inspect", "hello:notes")
    run("check", "hello")
    run("sweep", ".", "--dry-run")
    run("delete", "--yes", "hello:v1", "hello:notes")
    run("sweep", ".", "--yes")
    run("check", "hello")
    run("ls", ".")


if __name__ == "__main__":
    main()
