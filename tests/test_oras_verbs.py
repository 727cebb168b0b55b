"""The verbs oras users type (issue 19, part A): ``attach``, ``discover``, ``manifest fetch|delete``,
``blob fetch|delete``, the prompt rules of the deleting verbs, and ``--format json``.

On real components: layouts on local disk and on s3fs mounts of moto and SeaweedFS
(``layout_dir``), ``s3://`` layouts (the ``s3`` fixture), docker-registry 2.8 (no referrers API:
attach keeps the fallback tag), oras-py as an independent client, and layouts umoci wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.servers import RegistryServer
from tests.harness.tools import oras_push_to_registry, oras_registry, umoci_image
from tests.kit.cli import ERROR, INTEGRITY, OCIGC, OK, USAGE, cli_env, run
from tests.kit.s3 import S3Env, s3_env
from tests.kit.tree import snapshot

SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CREATED = "org.opencontainers.image.created"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(autouse=True)
def _short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.05")


@pytest.fixture
def s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    yield from s3_env(s3_server, str(s3_server.create_bucket("orasverbs")), monkeypatch)


def _state(lay: Path) -> dict[str, Any]:
    """The layout's files and their contents (not directory times, nor ocigc's control directory)."""
    return {k: v for k, v in snapshot(lay, control=False).items() if not k.endswith("/")}


def _files(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "hello.txt").write_text("hello\n")
    (src / "sbom.json").write_text('{"packages": []}\n')
    (src / "sig.bin").write_bytes(b"\x00signature")
    return src


def _ok(args: list[Any], cwd: Path | None = None) -> Any:
    r = run(args, cwd=cwd)
    assert r.code == OK, r
    return r


def _attach_and_discover(where: str, src: Path) -> None:
    pushed = _ok(["push", "--json", f"{where}:v1", "hello.txt"], cwd=src).json()
    r = _ok(["attach", "--wide", f"{where}:v1", "sbom.json", "--artifact-type", SBOM, "-a", "k=v"], cwd=src)
    assert r.stdout.splitlines()[0] == f"Attached to [oci-layout] {where}@{pushed['digest']}"
    sbom = r.stdout.splitlines()[1].removeprefix("Digest: ")
    # the referrer as oras attach writes it: subject, artifactType, annotations with created
    raw = _ok(["manifest", "fetch", f"{where}@{sbom}"]).stdout.encode()
    assert hashlib.sha256(raw).hexdigest() == sbom.split(":")[1]
    doc = json.loads(raw)
    assert doc["subject"] == {"mediaType": OCI_MANIFEST, "digest": pushed["digest"], "size": pushed["size"]}
    assert doc["artifactType"] == SBOM and doc["annotations"]["k"] == "v"
    assert RFC3339.match(doc["annotations"][CREATED])
    assert [layer["annotations"]["org.opencontainers.image.title"] for layer in doc["layers"]] == ["sbom.json"]
    # a referrer of the referrer: discover goes down recursively
    r = _ok(["attach", "--json", f"{where}@{sbom}", "sig.bin", "--artifact-type", SIG], cwd=src)
    sig = r.json()["digest"]
    tree = _ok(["discover", "--format", "json", f"{where}:v1"]).json()
    assert tree["ref"] == f"{where}@{pushed['digest']}" and tree["digest"] == pushed["digest"]
    [child] = tree["referrers"]
    assert (child["digest"], child["artifactType"], child["annotations"]["k"]) == (sbom, SBOM, "v")
    assert [g["digest"] for g in child["referrers"]] == [sig] and child["referrers"][0]["artifactType"] == SIG
    short = _ok(["discover", f"{where}:v1"]).stdout.splitlines()  # digests cut to 12 hex, as everywhere
    assert short[0] == f"{where}@{pushed['digest'][:19]}" and short[2] == f"    └── {sbom[:19]}"
    text = _ok(["discover", "--wide", f"{where}:v1"]).stdout.splitlines()
    assert text == [f"{where}@{pushed['digest']}", f"└── {SBOM}", f"    └── {sbom}", f"        └── {SIG}",
                    f"            └── {sig}"]
    only = _ok(["discover", "--json", "--artifact-type", SIG, f"{where}@{sbom}"]).json()
    assert [g["digest"] for g in only["referrers"]] == [sig]
    assert _ok(["discover", "--json", "--artifact-type", SIG, f"{where}:v1"]).json()["referrers"] == []
    # the layout stays whole, and the referrers are untagged entries a sweep keeps
    assert _ok(["check", where]).code == OK
    _ok(["sweep", "--grace", "0", where])
    assert len(_ok(["discover", "--json", f"{where}:v1"]).json()["referrers"]) == 1


def test_attach_then_discover(layout_dir: Path, tmp_path: Path) -> None:
    _attach_and_discover(str(layout_dir / "app"), _files(tmp_path))


def test_attach_then_discover_s3(s3: S3Env, tmp_path: Path) -> None:
    where = s3.url("app")
    _attach_and_discover(where, _files(tmp_path))
    # the other verbs on s3:// too: fetches verified, a referenced blob kept
    raw = _ok(["manifest", "fetch", f"{where}:v1"]).stdout.encode()
    layer = json.loads(raw)["layers"][0]["digest"]
    _ok(["blob", "fetch", f"{where}@{layer}", "-o", tmp_path / "out"])
    assert (tmp_path / "out").read_text() == "hello\n"
    keys = s3.layout_keys("app")
    r = run(["blob", "delete", "--yes", f"{where}@{layer}"])
    assert r.code == ERROR and "referenced by" in r.stderr, r
    assert s3.layout_keys("app") == keys


def test_attach_refuses_what_oras_refuses(tmp_path: Path) -> None:
    src = _files(tmp_path)
    lay = tmp_path / "lay"
    _ok(["push", f"{lay}:v1", "hello.txt"], cwd=src)
    before = _state(lay)
    r = run(["attach", f"{lay}:v1", "sbom.json"], cwd=src)
    assert r.code == USAGE and "--artifact-type" in r.stderr, r
    r = run(["attach", f"{lay}:v1", "--artifact-type", SBOM], cwd=src)
    assert r.code == USAGE and "at least one" in r.stderr, r
    r = run(["attach", f"{lay}:nope", "sbom.json", "--artifact-type", SBOM], cwd=src)
    assert r.code == ERROR and "nope" in r.stderr, r
    assert _state(lay) == before


def test_attach_to_a_umoci_image(tmp_path: Path) -> None:
    src = _files(tmp_path)
    lay = tmp_path / "umoci"
    digest = umoci_image(lay, "v1", {"etc/hello.txt": b"hi\n"})
    r = _ok(["attach", "--json", f"{lay}:v1", "sbom.json", "--artifact-type", SBOM], cwd=src)
    assert r.json()["subject"]["digest"] == digest
    [child] = _ok(["discover", "--json", f"{lay}:v1"]).json()["referrers"]
    assert child["digest"] == r.json()["digest"]
    listed = subprocess.run(["umoci", "ls", "--layout", str(lay)], capture_output=True, text=True, check=True)
    assert listed.stdout.split() == ["v1"]  # umoci still reads the layout (the referrer is untagged)


def test_manifest_fetch_is_the_blob(layout_dir: Path, tmp_path: Path) -> None:
    src = _files(tmp_path)
    lay = layout_dir / "app"
    pushed = _ok(["push", "--json", f"{lay}:v1", "hello.txt"], cwd=src).json()
    blob = (lay / "blobs" / "sha256" / pushed["digest"].split(":")[1]).read_bytes()
    r = run(["manifest", "fetch", f"{lay}:v1"], mode="proc")
    assert r.code == OK and r.stdout.encode() == blob, r
    _ok(["manifest", "fetch", f"{lay}@{pushed['digest']}", "-o", tmp_path / "m.json"])
    assert (tmp_path / "m.json").read_bytes() == blob
    desc = _ok(["manifest", "fetch", "--descriptor", f"{lay}:v1"]).stdout
    assert json.loads(desc) == {"mediaType": OCI_MANIFEST, "digest": pushed["digest"], "size": len(blob)}
    assert desc == json.dumps(json.loads(desc), separators=(",", ":"))  # compact, as Go marshals it
    assert json.loads(_ok(["manifest", "fetch", "--pretty", f"{lay}:v1"]).stdout) == json.loads(blob)
    doc = _ok(["manifest", "fetch", "--format", "json", f"{lay}:v1"]).json()
    assert doc["command"] == "manifest fetch" and doc["content"] == json.loads(blob)
    assert doc["ref"] == f"{lay}@{pushed['digest']}" and doc["size"] == len(blob)


def test_blob_fetch_is_verified(tmp_path: Path) -> None:
    src = _files(tmp_path)
    lay = tmp_path / "app"
    pushed = _ok(["push", "--json", f"{lay}:v1", "hello.txt"], cwd=src).json()
    layer = next(b for b in pushed["blobs"] if b["title"] == "hello.txt")["digest"]
    out = tmp_path / "out.txt"
    _ok(["blob", "fetch", f"{lay}@{layer}", "-o", out])
    assert out.read_text() == "hello\n"
    r = run(["blob", "fetch", f"{lay}@{layer}", "-o", "-"], mode="proc")
    assert r.code == OK and r.stdout == "hello\n", r
    # a corrupt blob is refused and never lands at the output path
    (lay / "blobs" / "sha256" / layer.split(":")[1]).write_text("HELLO\n")
    bad = tmp_path / "bad.txt"
    r = run(["blob", "fetch", f"{lay}@{layer}", "-o", bad])
    assert r.code == INTEGRITY and "hashes to" in r.stderr, r
    assert not bad.exists() and not list(tmp_path.glob(".ocigc-blob-*"))
    r = run(["blob", "fetch", f"{lay}:v1", "-o", bad])
    assert r.code == USAGE, r


def test_blob_delete_refuses_a_referenced_blob(layout_dir: Path, tmp_path: Path) -> None:
    src = _files(tmp_path)
    lay = layout_dir / "app"
    pushed = _ok(["push", "--json", f"{lay}:v1", "hello.txt"], cwd=src).json()
    layer = next(b for b in pushed["blobs"] if b["title"] == "hello.txt")["digest"]
    before = _state(lay)
    r = run(["blob", "delete", "--yes", f"{lay}@{layer}"])
    assert r.code == ERROR and "referenced by" in r.stderr and pushed["digest"] in r.stderr, r
    assert _state(lay) == before
    r = run(["blob", "delete", "--yes", f"{lay}@{pushed['digest']}"])
    assert r.code == ERROR and "manifest delete" in r.stderr, r
    assert _state(lay) == before
    # a blob nothing references goes; --force removes a referenced one and check sees the damage
    stray = b"stray\n"
    stray_digest = "sha256:" + hashlib.sha256(stray).hexdigest()
    (lay / "blobs" / "sha256" / stray_digest.split(":")[1]).write_bytes(stray)
    r = _ok(["blob", "delete", "--yes", "--json", f"{lay}@{stray_digest}"])
    assert r.json()["deleted"] is True and r.json()["dangling_in"] == []
    assert not (lay / "blobs" / "sha256" / stray_digest.split(":")[1]).exists()
    r = _ok(["blob", "delete", "--yes", "--force", f"{lay}@{layer}"])
    assert "dangling" not in r.stdout and "now reference a missing blob" in r.stderr
    assert not (lay / "blobs" / "sha256" / layer.split(":")[1]).exists()
    assert run(["check", lay]).code == INTEGRITY


def _proc(args: list[Any]) -> subprocess.CompletedProcess[str]:
    """``ocigc ARGS`` as CI runs it: stdin is no terminal."""
    return subprocess.run([OCIGC, *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=cli_env(), timeout=300, check=False)


def test_deleting_without_a_terminal_needs_yes(layout_dir: Path, tmp_path: Path) -> None:
    src = _files(tmp_path)
    lay = layout_dir / "app"
    pushed = _ok(["push", "--json", f"{lay}:v1", "hello.txt"], cwd=src).json()
    _ok(["push", f"{lay}:v2", "sbom.json"], cwd=src)
    layer = next(b for b in pushed["blobs"] if b["title"] == "hello.txt")["digest"]
    before = _state(lay)
    for args in (["delete", f"{lay}:v1"], ["manifest", "delete", f"{lay}:v1"], ["blob", "delete", f"{lay}@{layer}"],
                 ["delete", "--json", f"{lay}:v1"]):
        p = _proc(args)
        assert p.returncode == USAGE, (args, p.stderr)
        errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "--yes" in errors[0], (args, p.stderr)
        assert _state(lay) == before, args
    assert _proc(["delete", "--dry-run", f"{lay}:v1"]).returncode == OK  # a dry run changes nothing
    # sweep runs unattended (docs/cron.md): only what nothing references, after the grace period
    assert _proc(["sweep", "--grace", "0", lay]).returncode == OK
    assert _state(lay) == before
    # -f (oras' --force of manifest delete) and --yes go ahead
    p = _proc(["manifest", "delete", "-f", f"{lay}:v1"])
    assert p.returncode == OK, p.stderr
    assert "v1" not in _ok(["tags", "--names", lay]).stdout.split()
    assert _proc(["delete", "--yes", f"{lay}:v2"]).returncode == OK
    assert _ok(["tags", "--names", lay]).stdout == ""


def test_format_json_is_json(tmp_path: Path) -> None:
    src = _files(tmp_path)
    lay = tmp_path / "app"
    _ok(["push", f"{lay}:v1", "hello.txt"], cwd=src)
    for command in (["tags", lay], ["ls", tmp_path], ["check", lay], ["inspect", f"{lay}:v1"]):
        a = _ok([*command, "--json"]).json()
        b = _ok([*command, "--format", "json"]).json()
        c = _ok([*command, "--format=json"]).json()
        assert a == b == c, command
    r = run(["tags", lay, "--format", "yaml"])
    assert r.code == USAGE, r
    assert _ok(["graph", lay, "--format", "dot"]).stdout.startswith("digraph")
    assert _ok(["tags", "--names", lay]).stdout.splitlines() == ["v1"]


# --- registries -----------------------------------------------------------------------------------
def test_registry_attach_discover_fetch(registry: RegistryServer, tmp_path: Path) -> None:
    """oras-py pushes the subject; ocigc attaches to it (docker-registry 2.8 has no referrers API:
    the fallback tag), discovers it, fetches manifests and blobs byte for byte; oras-py reads back."""
    src = _files(tmp_path)
    repo = "orasverbs/app"
    digest = oras_push_to_registry(registry, repo, "v1", {"hello.txt": b"hello\n"})
    ref = f"{registry.host}/{repo}"
    r = _ok(["attach", "--plain-http", "--json", f"{ref}:v1", "sbom.json", "--artifact-type", SBOM, "-a", "k=v"],
            cwd=src)
    doc = r.json()
    assert doc["subject"]["digest"] == digest and doc["listed_by"] == "tag"
    sbom = doc["digest"]
    status, raw, _ = registry.get(f"/v2/{repo}/manifests/{sbom}")
    assert status == 200 and json.loads(raw)["subject"]["digest"] == digest
    status, index, _ = registry.get(f"/v2/{repo}/manifests/sha256-{digest.split(':')[1]}")
    assert status == 200 and [m["digest"] for m in json.loads(index)["manifests"]] == [sbom]
    # the independent client sees the referrer's manifest as ocigc wrote it
    client = oras_registry(registry)
    fetched = client.get_manifest(client.get_container(f"{ref}@{sbom}"))
    assert fetched["artifactType"] == SBOM and fetched["annotations"]["k"] == "v"
    tree = _ok(["discover", "--plain-http", "--json", f"{ref}:v1"]).json()
    assert tree["digest"] == digest and [c["digest"] for c in tree["referrers"]] == [sbom]
    assert tree["referrers"][0]["artifactType"] == SBOM
    # manifest fetch: the registry's bytes; blob fetch: verified
    p = subprocess.run([OCIGC, "manifest", "fetch", "--plain-http", f"{ref}@{sbom}"], capture_output=True,
                       env=cli_env(), stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert p.returncode == OK and p.stdout == raw
    layer = json.loads(raw)["layers"][0]["digest"]
    out = tmp_path / "sbom.out"
    _ok(["blob", "fetch", "--plain-http", f"{ref}@{layer}", "-o", out])
    assert out.read_bytes() == (src / "sbom.json").read_bytes()
    # a second attach joins the fallback index
    _ok(["attach", "--plain-http", f"{ref}:v1", "sig.bin", "--artifact-type", SIG], cwd=src)
    status, index, _ = registry.get(f"/v2/{repo}/manifests/sha256-{digest.split(':')[1]}")
    assert len(json.loads(index)["manifests"]) == 2
    assert len(_ok(["discover", "--plain-http", "--json", f"{ref}:v1"]).json()["referrers"]) == 2
    # manifest delete: refused without a terminal and without --yes; then the referrer leaves the
    # fallback index, and the subject goes by tag
    p = subprocess.run([OCIGC, "manifest", "delete", "--plain-http", f"{ref}@{sbom}"], capture_output=True,
                       text=True, env=cli_env(), stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert p.returncode == USAGE and "--yes" in p.stderr, p.stderr
    assert registry.get(f"/v2/{repo}/manifests/{sbom}")[0] == 200
    r = _ok(["manifest", "delete", "-f", "--plain-http", "--json", f"{ref}@{sbom}"])
    assert r.json()["deleted"] is True and r.json()["referrers_tag_updated"] is True
    assert registry.get(f"/v2/{repo}/manifests/{sbom}")[0] == 404
    status, index, _ = registry.get(f"/v2/{repo}/manifests/sha256-{digest.split(':')[1]}")
    assert status == 200 and len(json.loads(index)["manifests"]) == 1
    assert len(_ok(["discover", "--plain-http", "--json", f"{ref}:v1"]).json()["referrers"]) == 1
    _ok(["manifest", "delete", "--yes", "--plain-http", f"{ref}:v1"])
    assert registry.get(f"/v2/{repo}/manifests/v1")[0] == 404
    assert run(["manifest", "fetch", "--plain-http", f"{ref}:v1"]).code == ERROR
