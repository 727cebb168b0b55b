"""push: oras conventions (byte-exact against manifests the oras CLI wrote), round trips on local
disk and on s3fs, index.json merging, errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocigc.errors import IntegrityError
from ocigc.layout.layout import Layout
from ocigc.storage.local import LocalStorage
from ocigc.transfer.arguments import clean_path, parse_file_ref
from ocigc.transfer.blobs import staged_blobs_here, write_blob
from ocigc.transfer.conventions import EMPTY_JSON_DIGEST, descriptor_json, go_json
from ocigc.transfer.hashing import CHUNK, SizeExceeded, copy_hashing
from ocigc.transfer.push_request import BlobSource
from tests.harness.tools import read_index, run_ocigc, tag_digest
from tests.kit.cli import cli

ORAS_ARTIFACTS = Path(__file__).resolve().parent.parent / "fixtures" / "real" / "oras-cli-zot" / "artifacts"
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
TITLE = "org.opencontainers.image.title"
MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """One writer at a time in these tests: the lock's cross-host settle delay only costs time."""
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.05")


def ok(*args: str | os.PathLike[str], cwd: Path | None = None) -> str:
    rc, out, err = cli(*args, cwd=cwd)
    assert rc == 0, f"ocigc {' '.join(map(str, args))} -> {rc}\n{out}\n{err}"
    return out


def digest_of(out: str) -> str:
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Digest: "))


def blob(layout: Path, digest: str) -> bytes:
    alg, hexd = digest.split(":")
    return (layout / "blobs" / alg / hexd).read_bytes()


def manifest_of(layout: Path, tag: str) -> dict[str, Any]:
    d = tag_digest(layout, tag)
    assert d is not None, f"no tag {tag}"
    return json.loads(blob(layout, d))  # type: ignore[no-any-return]


# --- units ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "path", "media_type"), [
    ("hi.txt", "hi.txt", ""),
    ("hi.txt:application/vnd.me.hi", "hi.txt", "application/vnd.me.hi"),
    ("hi:txt:", "hi:txt", ""),  # oras' own example: a colon in the name, default type
    ("dir/a.b:text/plain", "dir/a.b", "text/plain"),
    ("a\\:b", "a:b", ""),  # an escaped colon is part of the name
])
def test_parse_file_ref(text: str, path: str, media_type: str) -> None:
    assert parse_file_ref(text) == (path, media_type)


def test_clean_path_like_go() -> None:
    assert [clean_path(p) for p in ["a//b/./c/", "./x", "", "a/../b", "//abs", "../up"]] == [
        "a/b/c", "x", ".", "b", "/abs", "../up"]


def test_go_json_escapes_like_encoding_json() -> None:
    raw = go_json({"b": [1, True, None], "a": "<&>\u2028\n\t\x01\"\\é"})
    assert raw == b'{"b":[1,true,null],"a":"\\u003c\\u0026\\u003e\\u2028\\n\\t\\u0001\\"\\\\\xc3\xa9"}'
    assert json.loads(raw)["a"] == "<&>\u2028\n\t\x01\"\\é"


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, 20 * CHUNK])
def test_copy_hashing_copies_and_hashes_every_byte(size: int) -> None:
    data = os.urandom(size)
    out = io.BytesIO()
    seen: list[int] = []
    digest, n = copy_hashing(io.BytesIO(data), out.write, on_bytes=seen.append)
    assert (digest, n) == (f"sha256:{hashlib.sha256(data).hexdigest()}", size)
    assert out.getvalue() == data and sum(seen) == size


def test_copy_hashing_short_reads_and_limits() -> None:
    data = os.urandom(5 * CHUNK + 123)

    class Trickle:  # a stream without readinto that returns little at a time, like a pipe
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int = -1) -> bytes:
            chunk = data[self.pos:self.pos + min(n, 70_001)]
            self.pos += len(chunk)
            return chunk

    out = io.BytesIO()
    digest, _ = copy_hashing(Trickle(), out.write, "sha512")  # type: ignore[arg-type]
    assert digest == f"sha512:{hashlib.sha512(data).hexdigest()}" and out.getvalue() == data
    with pytest.raises(SizeExceeded, match="larger than the expected"):
        copy_hashing(io.BytesIO(data), io.BytesIO().write, max_bytes=len(data) - 1)
    with pytest.raises(SizeExceeded):
        copy_hashing(io.BytesIO(b"abc"), io.BytesIO().write, max_bytes=2)

    def failing(_view: memoryview) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):  # the writer's error stops the reader thread
        copy_hashing(io.BytesIO(data), failing)


# --- oras conventions, byte for byte ----------------------------------------------------------------
def test_manifests_are_byte_identical_to_oras(tmp_path: Path) -> None:
    """Three artifacts of the oras CLI e2e data (pushed by oras 1.3), packed again by ocigc with
    the same inputs and creation time: the same manifest bytes, so the same digests."""
    lay = tmp_path / "lay"
    shutil.copytree(ORAS_ARTIFACTS, lay)
    src = tmp_path / "src"
    src.mkdir()
    (src / "arm64").write_bytes(blob(lay, "sha256:01fa0c3558d5badb8b58a95a549f4c08e678866d604c79d699108873de4813c7"))
    (src / "referrerimage").write_bytes(
        blob(lay, "sha256:ecbd32686867dec5cd74471abcf29a818889a294be605d6570cbe8b603a752b3"))

    out = ok("push", f"{lay}:x1", "arm64", "-a", f"{CREATED}=2025-06-05T04:26:57Z", cwd=src)
    assert digest_of(out) == "sha256:6aa11331ce0c766d6333b60dac98d584d98eea45fa93bbfc9b5bdb915ce3a43f"
    out = ok("push", f"{lay}:x2", "--artifact-type", "test/empty.artifact", "-a",
             f"{CREATED}=2023-11-06T08:07:54Z", cwd=src)
    assert digest_of(out) == "sha256:7156dd4030da2375969c4da97e051d907f54ff8e9d28cc82c57289bbd22e3f9f"
    out = ok("push", f"{lay}:x3", "--artifact-type", "referrer/image", "referrerimage",
             "--subject", "sha256:ab01d6e284e843d51fb5e753904a540f507a62361a5fd7e434e4f27b285ca5c9",
             "-a", f"{CREATED}=2025-06-05T04:30:10Z", cwd=src)
    assert digest_of(out) == "sha256:20e7d3a6ce087c54238c18a3428853b50cdaf4478a9d00caa8304119b58ae8a9"

    entries = {e["annotations"].get(REF_NAME): e for e in read_index(lay)["manifests"] if e.get("annotations")}
    # oras-go content/oci saveIndex: the pushed descriptor (artifactType, manifest annotations) + ref name
    assert entries["x1"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:6aa11331ce0c766d6333b60dac98d584d98eea45fa93bbfc9b5bdb915ce3a43f", "size": 584,
        "annotations": {CREATED: "2025-06-05T04:26:57Z", REF_NAME: "x1"},
        "artifactType": "application/vnd.unknown.artifact.v1"}
    # the fixture's untagged entry for 20e7d3 was replaced by the tagged one (as oras-go dedupes)
    assert [e["digest"] for e in read_index(lay)["manifests"]].count(
        "sha256:20e7d3a6ce087c54238c18a3428853b50cdaf4478a9d00caa8304119b58ae8a9") == 1


def test_new_layout_files_are_oras_ones(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    out = ok("push", tmp_path / "new/lay:v1", "f", cwd=tmp_path)
    lay = tmp_path / "new" / "lay"
    assert (lay / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    index = read_index(lay)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [e["digest"] for e in index["manifests"]] == [digest_of(out)]
    m = manifest_of(lay, "v1")
    assert list(m) == ["schemaVersion", "mediaType", "artifactType", "config", "layers", "annotations"]
    assert m["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_JSON_DIGEST,
                           "size": 2, "data": "e30="}
    assert m["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert m["layers"][0]["annotations"] == {TITLE: "f"}
    created = m["annotations"][CREATED]
    assert len(created) == 20 and created.endswith("Z") and created[10] == "T"
    assert blob(lay, EMPTY_JSON_DIGEST) == b"{}"


# --- round trips --------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under root: kind, content hash / link target, permission bits, mtime (seconds)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), round(st.st_mtime))
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode),
                            round(st.st_mtime))
    return out


def _payload_empty(src: Path) -> list[str]:
    return []


def _payload_small(src: Path) -> list[str]:
    (src / "hello.txt").write_bytes(b"hello, world\n")
    (src / "empty.bin").write_bytes(b"")
    return ["hello.txt", "empty.bin:application/vnd.example.empty"]


def _payload_64mib(src: Path) -> list[str]:
    with open(src / "big.bin", "wb") as f:
        block = os.urandom(MiB)
        for i in range(64):
            f.write(hashlib.sha256(bytes([i])).digest() + block[32:])
    return ["big.bin"]


def _payload_directory(src: Path) -> list[str]:
    d = src / "tree"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "empty-dir").mkdir()
    (d / "a.txt").write_text("a\n")
    (d / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (d / "sub" / "deeper" / "c").write_text("c")
    (d / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (d / "run.sh").chmod(0o755)
    (d / "link-to-a").symlink_to("a.txt")
    (d / "sub" / "up-link").symlink_to("../a.txt")
    os.link(d / "a.txt", d / "hardlink-a")  # packed as a regular file, as oras-go does
    for p in [d / "sub" / "deeper", d / "sub", d / "empty-dir", d]:
        os.utime(p, (1_700_000_000, 1_700_000_000))
    return ["tree"]


def _payload_several(src: Path) -> list[str]:
    (src / "docs").mkdir()
    (src / "docs" / "readme.md").write_text("# readme\n")
    (src / "one.json").write_text('{"one": 1}')
    (src / "two.bin").write_bytes(os.urandom(70_000))
    (src / "assets" / "img").mkdir(parents=True)
    (src / "assets" / "img" / "logo.svg").write_text("<svg/>")
    return ["docs/readme.md:text/markdown", "one.json:application/json", "two.bin", "assets"]


PAYLOADS: dict[str, Callable[[Path], list[str]]] = {
    "empty": _payload_empty, "small": _payload_small, "64MiB": _payload_64mib,
    "directory": _payload_directory, "several": _payload_several,
}


def _expected(src: Path, names: list[str]) -> dict[str, tuple[Any, ...]]:
    """What a pull must produce: files by content, pushed directories entry by entry (modes, mtimes,
    links), the parents of nested titles as plain directories."""
    want: dict[str, tuple[Any, ...]] = {}
    for name in names:
        p = src / name
        parent = Path(name).parent
        while str(parent) != ".":
            want[str(parent)] = ("dir",)
            parent = parent.parent
        if p.is_dir():
            st = p.stat()
            want[name] = ("dir", stat.S_IMODE(st.st_mode), round(st.st_mtime))
            want.update({f"{name}/{k}": v for k, v in _tree(p).items()})
        else:
            want[name] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return want


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_round_trip(layout_dir: Path, tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = PAYLOADS[kind](src)
    digest = digest_of(ok("push", f"{layout_dir}:v1,latest", *files, cwd=src))
    index = read_index(layout_dir)
    assert {e["annotations"][REF_NAME] for e in index["manifests"]} == {"v1", "latest"}
    assert {e["digest"] for e in index["manifests"]} == {digest}

    out = tmp_path / "out"
    assert digest_of(ok("pull", f"{layout_dir}:latest", "-o", out)) == digest
    want = _expected(src, [parse_file_ref(f)[0] for f in files])
    got = _tree(out)
    for k, v in want.items():  # files and intermediate directories: compare what is specified
        if v[0] == "file" or v == ("dir",):
            got[k] = got[k][:len(v)] if k in got else got.get(k, ())
    assert got == want
    rc, _, err = cli("check", layout_dir)
    assert rc == 0, err


def test_annotations_annotation_file_and_config(layout_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    afile = tmp_path / "annotations.json"
    afile.write_text(json.dumps({
        "$manifest": {"org.example.m": "1", CREATED: "2024-01-02T03:04:05Z"},
        "$config": {"org.example.c": "2"},
        "a.txt": {"org.example.f": "3"},
        "d": {"org.example.dir": "4"},
    }))
    lay = layout_dir
    ok("push", f"{lay}:t", "a.txt", "d", "--annotation-file", afile, "--artifact-type", "application/x.test",
       cwd=tmp_path)
    m = manifest_of(lay, "t")
    assert m["artifactType"] == "application/x.test"
    assert m["annotations"] == {"org.example.m": "1", CREATED: "2024-01-02T03:04:05Z"}
    assert m["config"]["annotations"] == {"org.example.c": "2"} and m["config"]["digest"] == EMPTY_JSON_DIGEST
    a, d = m["layers"]
    assert a["annotations"] == {"org.example.f": "3", TITLE: "a.txt"}
    assert d["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert d["annotations"]["io.deis.oras.content.unpack"] == "true"
    assert d["annotations"]["io.deis.oras.content.digest"].startswith("sha256:")
    assert d["annotations"]["org.example.dir"] == "4" and d["annotations"][TITLE] == "d"

    # --config without --artifact-type: oras packs an image-spec v1.0 manifest
    (tmp_path / "cfg.json").write_text('{"k": "v"}')
    ok("push", f"{lay}:v10", "--config", "cfg.json", "-a", "k=v", cwd=tmp_path)
    m = manifest_of(lay, "v10")
    assert "artifactType" not in m and m["layers"] == []
    assert m["config"]["mediaType"] == "application/vnd.unknown.config.v1+json"
    assert blob(lay, m["config"]["digest"]) == b'{"k": "v"}'
    entry = next(e for e in read_index(lay)["manifests"] if e["annotations"].get(REF_NAME) == "v10")
    assert entry["artifactType"] == "application/vnd.unknown.config.v1+json"  # oras-go: the config type
    ok("push", f"{lay}:v11", "--config", "cfg.json:application/x.cfg", "--artifact-type", "application/x.art",
       cwd=tmp_path)
    m = manifest_of(lay, "v11")
    assert m["artifactType"] == "application/x.art" and m["config"]["mediaType"] == "application/x.cfg"
    assert m["layers"][0]["digest"] == EMPTY_JSON_DIGEST  # no files: the empty descriptor as the layer


def test_subject_makes_an_untagged_referrer(layout_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("base")
    (tmp_path / "sig").write_text("signature")
    base = digest_of(ok("push", f"{layout_dir}:v1", "base.txt", cwd=tmp_path))
    ref = digest_of(ok("push", layout_dir, "sig", "--artifact-type", "application/x.sig", "--subject", "v1",
                       cwd=tmp_path))
    m = json.loads(blob(layout_dir, ref))
    base_size = len(blob(layout_dir, base))
    assert m["subject"] == {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": base,
                            "size": base_size}
    entries = read_index(layout_dir)["manifests"]
    referrer = [e for e in entries if e["digest"] == ref]
    assert len(referrer) == 1 and REF_NAME not in referrer[0].get("annotations", {})
    assert referrer[0]["artifactType"] == "application/x.sig"
    # the same referrer by PATH@DIGEST of the subject: nothing new
    ok("push", layout_dir, "sig", "--artifact-type", "application/x.sig", "--subject", f"{layout_dir}@{base}",
       "-a", f"{CREATED}={m['annotations'][CREATED]}", cwd=tmp_path)
    assert len(read_index(layout_dir)["manifests"]) == 2


def test_repush_does_not_write_present_blobs(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(os.urandom(3 * MiB))
    lay = tmp_path / "lay"
    first = json.loads(ok("push", f"{lay}:a", "big", "--json", cwd=tmp_path))
    layer = next(b for b in first["blobs"] if b["title"] == "big")
    assert layer["uploaded"]
    path = lay / "blobs" / "sha256" / layer["digest"].split(":")[1]
    before = path.stat()
    second = json.loads(ok("push", f"{lay}:b", "big", "--json", cwd=tmp_path))
    again = next(b for b in second["blobs"] if b["title"] == "big")
    assert not again["uploaded"]
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_moved_tag_leaves_the_old_manifest_untagged(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("one")
    lay = tmp_path / "lay"
    old = digest_of(ok("push", f"{lay}:v1", "f", cwd=tmp_path))
    (tmp_path / "f").write_text("two")
    new = digest_of(ok("push", f"{lay}:v1", "f", cwd=tmp_path))
    entries = read_index(lay)["manifests"]
    assert [e["digest"] for e in entries] == [old, new]
    assert REF_NAME not in entries[0]["annotations"] and entries[0]["annotations"][CREATED]
    assert entries[1]["annotations"][REF_NAME] == "v1"


def test_merge_keeps_everything_else_in_index_json(tmp_path: Path) -> None:
    lay = tmp_path / "lay"
    (tmp_path / "f").write_text("f")
    ok("push", f"{lay}:first", "f", cwd=tmp_path)
    index = read_index(lay)
    index["annotations"] = {"org.example.top": "kept"}
    index["x-unknown"] = {"nested": [1, 2]}
    index["manifests"][0]["platform"] = {"os": "linux", "architecture": "arm64"}
    index["manifests"][0]["x-field"] = True
    index["manifests"].append({**index["manifests"][0], "annotations": {REF_NAME: "other"}})
    (lay / "index.json").write_text(json.dumps(index))
    (tmp_path / "g").write_text("g")
    ok("push", f"{lay}:second", "g", cwd=tmp_path)
    after = read_index(lay)
    assert after["manifests"][:2] == index["manifests"]
    assert after["annotations"] == {"org.example.top": "kept"} and after["x-unknown"] == {"nested": [1, 2]}
    assert after["manifests"][2]["annotations"][REF_NAME] == "second"


def test_export_manifest(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    out = ok("push", tmp_path / "lay:v1", "f", "--export-manifest", "m.json", cwd=tmp_path)
    assert (tmp_path / "m.json").read_bytes() == blob(tmp_path / "lay", digest_of(out))


@pytest.mark.parametrize(("args", "code", "message"), [
    (["/etc/hostname"], 2, "absolute file path"),
    (["../outside.txt"], 2, "'..'"),
    (["missing.txt"], 2, "missing.txt: no such file"),
    (["f", "./f"], 2, "duplicate file name"),
    (["f", "-a", "novalue"], 2, "KEY=VALUE"),
    (["f", "-a", "k=v", "--annotation-file", "ann.json"], 2, "cannot both"),
    (["f", "-a", f"{CREATED}=yesterday"], 2, "RFC 3339"),
    (["f", "--annotation-file", "bad.json"], 2, "bad.json: invalid annotation JSON"),
    (["f", "--subject", "nosuchtag"], 1, "no layout there"),
    (["f", "--config", "cfg.json", "--subject", "x"], 2, "--subject: needs --artifact-type"),
    (["f", "--lock-wait", "soon"], 2, "--lock-wait"),
    # Core errors name the option; the CLI names the flag (errors.InvalidOption).
    (["f", "-a", "k=v", "-a", "k=w"], 2, "error: --annotation: duplicate annotation key 'k'"),
    (["f", "--config", "nocfg.json", "--artifact-type", "t/x"], 2, "error: --config: nocfg.json: no such file"),
    (["/etc/{x}"], 2, "error: /etc/{x}: absolute file path detected. If it's intentional, use --disable-path-valid"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "f").write_text("f")
    (tmp_path / "outside.txt").write_text("o")
    (work / "ann.json").write_text("{}")
    (work / "bad.json").write_text("{nope")
    (work / "cfg.json").write_text("{}")
    before = sorted(p.name for p in work.iterdir())
    rc, _out, err = cli("push", work / "lay:v1", *args, cwd=work)
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert sorted(p.name for p in work.iterdir()) == before  # no layout created


def test_push_refuses_a_digest_reference_and_a_foreign_subject(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    ok("push", f"{tmp_path / 'a'}:v1", "f", cwd=tmp_path)
    ok("push", f"{tmp_path / 'b'}:v1", "f", cwd=tmp_path)
    rc, _, err = cli("push", f"{tmp_path / 'a'}@{EMPTY_JSON_DIGEST}", "f", cwd=tmp_path)
    assert rc == 2 and "not a digest" in err
    rc, _, err = cli("push", tmp_path / "a", "f", "--artifact-type", "x/y", "--subject",
                     f"{tmp_path / 'b'}:v1", cwd=tmp_path)
    assert rc == 2 and "must be in the layout pushed to" in err


def test_a_file_that_changes_between_hash_and_upload_is_not_stored(layout_dir: Path, tmp_path: Path) -> None:
    """The two-pass path (mounted buckets): the blob goes to a temp name, which is removed again."""
    lay = Layout(LocalStorage(layout_dir))
    (layout_dir / "blobs" / "sha256").mkdir(parents=True)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * MiB))
    stale = hashlib.sha256(b"what it was").hexdigest()
    source = BlobSource(descriptor_json("x/y", f"sha256:{stale}", 3 * MiB), path=str(src))
    with pytest.raises(IntegrityError, match="changed while pushing"):
        write_blob(lay, source)
    assert os.listdir(layout_dir / "blobs" / "sha256") == []  # neither the blob nor a temp file


def test_storage_kinds_pick_the_blob_write_path(layout_dir: Path, request: pytest.FixtureRequest) -> None:
    storage = LocalStorage(layout_dir)
    on_s3fs = "s3fs" in request.node.name
    assert storage.is_object_store_mount is on_s3fs
    assert storage.is_local_disk is (not on_s3fs)
    assert staged_blobs_here(storage) is (not on_s3fs)


def test_blobs_reach_their_digest_name_by_rename_on_every_file_system(layout_dir: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """On a local disk and on s3fs alike (where the rename is a server-side copy, docs/performance.md)
    every blob is written to a temp name and renamed to its digest when whole, so a killed push never
    leaves a short blob under that name (tests/test_crash.py kills one); index.json too is renamed."""
    renamed: list[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        renamed.append(os.fspath(dst))
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "f.bin").write_bytes(os.urandom(2 * MiB))
    digest = digest_of(ok("push", f"{layout_dir}:v1", "f.bin", cwd=tmp_path))
    blob_renames = [d for d in renamed if "/blobs/" in d]
    assert sorted(os.path.basename(d) for d in blob_renames) == sorted(
        n for n in os.listdir(layout_dir / "blobs" / "sha256"))  # layer, empty config, manifest
    assert len(blob_renames) == 3
    assert any(d.endswith("index.json") for d in renamed)
    assert not [n for n in os.listdir(layout_dir / "blobs" / "sha256") if n.startswith(".ocigc-tmp-")]
    rc, _, err = cli("check", layout_dir, "--verify-digests")
    assert rc == 0, err
    assert digest_of(ok("pull", f"{layout_dir}:v1", "-o", tmp_path / "out")) == digest
    assert (tmp_path / "out" / "f.bin").read_bytes() == (tmp_path / "f.bin").read_bytes()


def test_one_pass_push_stores_the_bytes_it_hashed_while_the_source_changes(tmp_path: Path) -> None:
    """Local disk: each file is read once, so a file rewritten during the push cannot be stored under
    a digest of other bytes; whatever was read is what is stored and named."""
    src = tmp_path / "moving.bin"
    src.write_bytes(os.urandom(48 * MiB))
    stop = threading.Event()

    def scribble() -> None:
        with open(src, "r+b") as f:
            while not stop.is_set():
                f.seek(int.from_bytes(os.urandom(3), "big") % (47 * MiB))
                f.write(os.urandom(64 * 1024))
                f.flush()

    t = threading.Thread(target=scribble)
    t.start()
    try:
        for i in range(3):
            ok("push", f"{tmp_path / 'lay'}:v{i}", "moving.bin", cwd=tmp_path)
    finally:
        stop.set()
        t.join()
    rc, _, err = cli("check", tmp_path / "lay", "--verify-digests")
    assert rc == 0, err
    names = os.listdir(tmp_path / "lay" / "blobs" / "sha256")
    assert not [n for n in names if n.startswith(".ocigc-tmp-")]


def test_one_pass_repush_and_duplicates_leave_no_temp_files(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"same bytes")
    (tmp_path / "b.bin").write_bytes(b"same bytes")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    lay = tmp_path / "lay"
    ok("push", f"{lay}:v1", "a.bin", "b.bin", "d", cwd=tmp_path)
    ok("push", f"{lay}:v2", "a.bin", "b.bin", "d", cwd=tmp_path)
    names = os.listdir(lay / "blobs" / "sha256")
    assert not [n for n in names if n.startswith(".ocigc-tmp-")], names
    rc, _, err = cli("check", lay, "--verify-digests")
    assert rc == 0, err


def test_a_failed_one_pass_push_leaves_no_temp_files_and_no_tag(tmp_path: Path) -> None:
    (tmp_path / "good.bin").write_bytes(os.urandom(MiB))
    bad = tmp_path / "bad"
    bad.mkdir()
    os.mkfifo(bad / "fifo")
    lay = tmp_path / "lay"
    ok("push", f"{lay}:v0", "good.bin", cwd=tmp_path)
    index_before = (lay / "index.json").read_bytes()
    rc, _, err = cli("push", f"{lay}:v1", "good.bin", "bad", cwd=tmp_path)
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
    assert (lay / "index.json").read_bytes() == index_before
    names = os.listdir(lay / "blobs" / "sha256")
    assert not [n for n in names if n.startswith(".ocigc-tmp-")], names


def test_concurrent_pushes_of_different_tags_keep_every_tag(tmp_path: Path) -> None:
    lay = tmp_path / "lay"
    (tmp_path / "shared.bin").write_bytes(os.urandom(MiB))
    ok("push", f"{lay}:base", "shared.bin", cwd=tmp_path)
    results: dict[int, tuple[int, str]] = {}

    def one(i: int) -> None:
        (tmp_path / f"own{i}.txt").write_text(f"own {i}")
        rc, out, err, _ = run_ocigc("push", f"{lay}:t{i}", "shared.bin", f"own{i}.txt", "--lock-wait", "60s",
                                    cwd=tmp_path)
        results[i] = (rc, out + err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(rc == 0 for rc, _ in results.values()), results
    tags = {e["annotations"][REF_NAME] for e in read_index(lay)["manifests"]}
    assert tags == {"base", *(f"t{i}" for i in range(4))}
    rc, _, err, _ = run_ocigc("check", lay)
    assert rc == 0, err


def test_core_errors_name_the_option_and_the_cli_the_flag() -> None:
    """The core raises ``InvalidOption`` naming its field; ``str()`` words it, the CLI flags it."""
    from ocigc.cli._common import flag_of
    from ocigc.errors import InvalidOption

    e = InvalidOption("subject", "needs {artifact_type} when {config} is given", also=("artifact_type", "config"))
    assert str(e) == "subject: needs artifact type when config is given"
    assert e.render(flag_of) == "--subject: needs --artifact-type when --config is given"
    assert e.exit_code == 2
    # A brace in what the user gave is not a placeholder.
    odd = InvalidOption("subject", "'a{b}{c}': needs a tag or a digest")
    assert odd.render(flag_of) == "--subject: 'a{b}{c}': needs a tag or a digest"
