"""Interop with real tools: oras-py (the registry client) and skopeo, through docker-registry 2.8.

- a layout ocigc pushed goes to the registry (blobs with oras-py, the manifest as its raw bytes, so
  the digest is kept) and oras-py pulls identical files; an image ocigc pushed is copied by skopeo
  (layout -> registry -> layout) and pulled back by ocigc identically;
- an artifact oras-py pushed to the registry is fetched into a layout by a small helper below (raw
  manifest bytes, blobs by digest) and ocigc pulls identical files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.harness.servers import RegistryServer
from tests.harness.tools import (
    oras_push_to_registry,
    oras_registry,
    read_index,
    registry_put_manifest,
    skopeo_copy,
    skopeo_inspect,
    tag_digest,
)
from tests.kit.cli import cli

REF_NAME = "org.opencontainers.image.ref.name"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(autouse=True)
def _short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.05")


def _blob_path(layout: Path, digest: str) -> Path:
    alg, hexd = digest.split(":")
    return layout / "blobs" / alg / hexd


def layout_to_registry(layout: Path, tag: str, registry: RegistryServer, repo: str) -> str:
    """Push one tagged manifest of a layout with oras-py: every blob by digest, then the manifest's
    own bytes (oras-py's upload_manifest would re-serialise them). Returns the registry's digest."""
    client = oras_registry(registry)
    container = client.get_container(registry.ref(repo, tag))
    digest = tag_digest(layout, tag)
    assert digest is not None
    raw = _blob_path(layout, digest).read_bytes()
    manifest = json.loads(raw)
    for desc in [manifest["config"], *manifest["layers"]]:
        plain = {k: desc[k] for k in ("mediaType", "digest", "size")}
        response = client.upload_blob(str(_blob_path(layout, desc["digest"])), container, plain)
        assert response.status_code in (200, 201, 202), response.text
    return registry_put_manifest(registry, repo, tag, raw, manifest.get("mediaType", OCI_MANIFEST))


def registry_to_layout(registry: RegistryServer, repo: str, tag: str, layout: Path) -> str:
    """Bring a registry artifact into an OCI layout with oras-py: the raw manifest, its blobs, and
    an index.json entry tagged ``tag``. Returns the manifest digest."""
    client = oras_registry(registry)
    container = client.get_container(registry.ref(repo, tag))
    response = client.do_request(f"{registry.url}/v2/{repo}/manifests/{tag}", "GET",
                                 headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200, response.text
    raw = response.content
    digest = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    assert response.headers.get("Docker-Content-Digest", digest) == digest
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    _blob_path(layout, digest).write_bytes(raw)
    manifest = json.loads(raw)
    for desc in [manifest["config"], *manifest["layers"]]:
        client.download_blob(container, desc["digest"], str(_blob_path(layout, desc["digest"])))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {"mediaType": manifest.get("mediaType", OCI_MANIFEST), "digest": digest, "size": len(raw),
             "annotations": {REF_NAME: tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return digest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> dict[str, str]:
    """Regular files (content hashes) and symlinks (targets) under root."""
    out: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else _sha(p)
    return out


def test_ocigc_push_then_registry_then_oras_py_pull(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "hello.txt").write_text("hello from ocigc\n")
    (src / "data.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 17))
    (src / "tree" / "a.txt").write_text("a")
    (src / "tree" / "sub" / "b.bin").write_bytes(os.urandom(5000))
    (src / "tree" / "link").symlink_to("a.txt")
    lay = tmp_path / "lay"
    rc, _, err = cli("push", f"{lay}:v1", "hello.txt", "data.bin", "tree", "-a", "org.example=1", cwd=src)
    assert rc == 0, err
    pushed = tag_digest(lay, "v1")

    assert layout_to_registry(lay, "v1", registry, "interop/ocigc-art") == pushed
    client = oras_registry(registry)
    out_dir = tmp_path / "oras-out"
    client.pull(target=registry.ref("interop/ocigc-art", "v1"), outdir=str(out_dir))
    assert _files(out_dir) == _files(src)


def test_oras_py_push_then_layout_then_ocigc_pull(registry: RegistryServer, tmp_path: Path) -> None:
    files = {"readme.md": b"# from oras-py\n", "payload.bin": os.urandom(3 * 1024 * 1024 + 5), "empty": b""}
    pushed = oras_push_to_registry(registry, "interop/oraspy-art", "v1", files,
                                   annotations={"org.example": "oras-py"})
    lay = tmp_path / "lay"
    assert registry_to_layout(registry, "interop/oraspy-art", "v1", lay) == pushed
    rc, _, err = cli("check", lay)
    assert rc == 0, err
    out_dir = tmp_path / "out"
    rc, out, err = cli("pull", f"{lay}:v1", "-o", out_dir)
    assert rc == 0, err
    assert f"Digest: {pushed}" in out
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == files


def test_oras_py_directory_is_written_as_its_archive(registry: RegistryServer, tmp_path: Path) -> None:
    """oras-py packs a directory as tar+gzip without oras-go's unpack annotation: ocigc (like the
    oras CLI) writes the archive itself under the title, verified, and unpacks nothing."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "x").write_text("x")
    client = oras_registry(registry)
    cwd = os.getcwd()
    os.chdir(src)
    try:
        client.push(target=registry.ref("interop/oraspy-dir", "v1"), files=["d"], quiet=True)
    finally:
        os.chdir(cwd)
    lay = tmp_path / "lay"
    registry_to_layout(registry, "interop/oraspy-dir", "v1", lay)
    layer = json.loads(_blob_path(lay, tag_digest(lay, "v1") or "").read_bytes())["layers"][0]
    rc, _, err = cli("pull", f"{lay}:v1", "-o", tmp_path / "out")
    assert rc == 0, err
    assert (tmp_path / "out" / "d").read_bytes() == _blob_path(lay, layer["digest"]).read_bytes()
    with tarfile.open(tmp_path / "out" / "d") as tf:
        assert "d/x" in tf.getnames()


def _image(src: Path) -> tuple[list[str], dict[str, Any]]:
    """A real one-layer image (config with the layer's diff_id) as files to push."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        data = b"hello from an ocigc-pushed image\n"
        info = tarfile.TarInfo("etc/hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
        tf.addfile(info, io.BytesIO(data))
    raw_tar = tar.getvalue()
    (src / "layer.tar.gz").write_bytes(gzip.compress(raw_tar, mtime=0))
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw_tar).hexdigest()}"]}}
    (src / "config.json").write_text(json.dumps(config))
    return ["layer.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip"], config


def test_ocigc_pushed_image_copies_with_skopeo(registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files, _config = _image(src)
    lay = tmp_path / "lay"
    rc, _, err = cli("push", f"{lay}:v1", *files, "--config",
                       "config.json:application/vnd.oci.image.config.v1+json", cwd=src)
    assert rc == 0, err
    digest = tag_digest(lay, "v1")
    manifest = json.loads(_blob_path(lay, digest or "").read_bytes())
    assert "artifactType" not in manifest  # --config without --artifact-type: a plain image manifest

    skopeo_copy(f"oci:{lay}:v1", f"docker://{registry.ref('interop/ocigc-image', 'v1')}")
    assert skopeo_inspect(f"docker://{registry.ref('interop/ocigc-image', 'v1')}", raw=True) == manifest
    info = skopeo_inspect(f"docker://{registry.ref('interop/ocigc-image', 'v1')}")
    assert info["Digest"] == digest
    assert info["Os"] == "linux" and info["Architecture"] == "amd64"

    back = tmp_path / "back"
    skopeo_copy(f"docker://{registry.ref('interop/ocigc-image', 'v1')}", f"oci:{back}:v1")
    assert [e["digest"] for e in read_index(back)["manifests"]] == [digest]
    out_dir = tmp_path / "out"
    rc, _, err = cli("pull", f"{back}:v1", "-o", out_dir)
    assert rc == 0, err
    assert (out_dir / "layer.tar.gz").read_bytes() == (src / "layer.tar.gz").read_bytes()

    copy = tmp_path / "copy"
    skopeo_copy(f"oci:{lay}:v1", f"oci:{copy}:v1")
    assert tag_digest(copy, "v1") == digest
