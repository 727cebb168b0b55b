"""pull: hostile artifacts crafted by hand are refused before anything is written and nothing outside
DIR is touched; blobs are verified while they stream; interrupted pulls leave no half file."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness.tools import ocigc_command
from tests.kit.cli import cli
from tests.kit.layouts import LayoutBuilder, blob_path
from tests.kit.tree import snapshot

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
CONTENT_DIGEST = "io.deis.oras.content.digest"
LAYER = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ORAS_ARTIFACTS = Path(__file__).resolve().parent.parent / "fixtures" / "real" / "oras-cli-zot" / "artifacts"


@pytest.fixture(autouse=True)
def _short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.05")



# --- crafting ------------------------------------------------------------------------------------------
def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            if isinstance(e, tuple):
                info, data = e
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(e)
    return buf.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "",
          mode: int = 0o644) -> tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 1_700_000_000
    info.linkname = linkname
    if kind == tarfile.REGTYPE:
        return info, data
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info


def dir_layer(b: LayoutBuilder, title: str, entries: list[Any], tar_digest: str | None = None,
              raw: bytes | None = None) -> dict[str, Any]:
    tar = tar_bytes(entries)
    gz = raw if raw is not None else gzip.compress(tar, mtime=0)
    desc = b.blob(gz, LAYER_GZIP)
    desc["annotations"] = {TITLE: title, UNPACK: "true",
                           CONTENT_DIGEST: tar_digest or f"sha256:{hashlib.sha256(tar).hexdigest()}"}
    return desc


def file_layer(b: LayoutBuilder, title: str, data: bytes = b"payload") -> dict[str, Any]:
    desc = b.blob(data, LAYER)
    desc["annotations"] = {TITLE: title}
    return desc


def artifact(root: Path, layers: Callable[[LayoutBuilder], list[dict[str, Any]]], tag: str = "v1") -> Path:
    b = LayoutBuilder(root)
    b.add(b.manifest(layers(b), config=b"{}", artifact_type="application/x.test"), tag)
    return b.save()


@pytest.fixture
def arena(tmp_path: Path) -> dict[str, Path]:
    """``outside/`` (must stay untouched), ``out/`` (the pull directory, holding a symlink to outside)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("do not touch")
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    (out / "escape").symlink_to(outside)
    return {"root": tmp_path, "outside": outside, "out": out, "lay": tmp_path / "lay"}


# (title or layer factory, expected message fragment)
HOSTILE: dict[str, tuple[Callable[[LayoutBuilder], list[dict[str, Any]]], str]] = {
    "absolute title": (lambda b: [file_layer(b, "/tmp/ocigc-pwned")], "absolute path"),
    "dotdot title": (lambda b: [file_layer(b, "../pwned")], "'..'"),
    "nested dotdot title": (lambda b: [file_layer(b, "a/../../pwned")], "'..'"),
    "title through symlink": (lambda b: [file_layer(b, "escape/pwned")], "is a symlink"),
    "title is the symlink": (lambda b: [file_layer(b, "escape")], "is a symlink"),
    "dir through symlink": (lambda b: [dir_layer(b, "escape", [entry("escape/x")])], "is a symlink"),
    "title names DIR": (lambda b: [file_layer(b, ".")], "output directory itself"),
    "two blobs one title": (lambda b: [file_layer(b, "same", b"1"), file_layer(b, "same", b"2")], "claimed by two"),
    "tar dotdot": (lambda b: [dir_layer(b, "d", [entry("d/../../pwned")])], "contains '..'"),
    "tar absolute": (lambda b: [dir_layer(b, "d", [entry("/tmp/ocigc-pwned")])], "absolute path"),
    "tar outside prefix": (lambda b: [dir_layer(b, "d", [entry("other/x")])], "is outside 'd'"),
    "tar symlink absolute": (lambda b: [dir_layer(b, "d", [entry("d/l", tarfile.SYMTYPE, linkname="/etc")])],
                             "absolute path"),
    "tar symlink escaping": (lambda b: [dir_layer(b, "d", [entry("d/l", tarfile.SYMTYPE, linkname="../../..")])],
                             "pointing outside"),
    "tar write through symlink": (lambda b: [dir_layer(b, "d", [
        entry("d/sub", tarfile.DIRTYPE, mode=0o755), entry("d/l", tarfile.SYMTYPE, linkname="sub"),
        entry("d/l/x", data=b"x")])], "symlink or not a directory"),
    "tar hardlink outside": (lambda b: [dir_layer(b, "d", [entry("d/h", tarfile.LNKTYPE, linkname="/etc/passwd")])],
                             "absolute path"),
    "tar hardlink dotdot": (lambda b: [dir_layer(b, "d", [entry("d/h", tarfile.LNKTYPE, linkname="d/../../x")])],
                            "contains '..'"),
    "tar char device": (lambda b: [dir_layer(b, "d", [entry("d/null", tarfile.CHRTYPE)])], "device file"),
    "tar block device": (lambda b: [dir_layer(b, "d", [entry("d/sda", tarfile.BLKTYPE)])], "device file"),
    "tar fifo": (lambda b: [dir_layer(b, "d", [entry("d/fifo", tarfile.FIFOTYPE)])], "FIFO"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_artifact_is_refused_and_nothing_outside_is_touched(arena: dict[str, Path], case: str) -> None:
    layers, message = HOSTILE[case]
    artifact(arena["lay"], layers)
    before_outside = snapshot(arena["outside"])
    before_out = sorted(os.listdir(arena["out"]))
    rc, out, err = cli("pull", f"{arena['lay']}:v1", "-o", arena["out"])
    assert rc == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert snapshot(arena["outside"]) == before_outside
    assert sorted(os.listdir(arena["out"])) == before_out  # no file, no temp, no staging dir
    assert not Path("/tmp/ocigc-pwned").exists()
    assert not (arena["root"] / "pwned").exists() and not (arena["root"] / "work" / "pwned").exists()


def test_refused_with_the_library_error_types(arena: dict[str, Path]) -> None:
    from ocigc.layout.layout import Layout
    from ocigc.oci.refs import parse_reference
    from ocigc.storage.local import LocalStorage
    from ocigc.transfer.pull import pull
    from ocigc.transfer.safe_dir import UnsafeArtifact

    artifact(arena["lay"], lambda b: [dir_layer(b, "d", [entry("d/ok", data=b"fine"), entry("d/../x")])])
    with pytest.raises(UnsafeArtifact, match=r"contains '\.\.'"):
        pull(Layout.open(LocalStorage(arena["lay"])), parse_reference(f"{arena['lay']}:v1"), str(arena["out"]))
    assert sorted(os.listdir(arena["out"])) == ["escape"]  # the entry before it was staged, then removed


@pytest.mark.parametrize(("case", "code", "message"), [
    ("corrupt file", 4, "digest"),
    ("longer file", 4, "larger than the expected"),
    ("corrupt directory", 4, "digest"),
    ("tar digest mismatch", 4, CONTENT_DIGEST),
    ("not gzip", 1, "not a valid gzip"),
    ("missing blob", 4, "is missing"),
])
def test_blobs_are_verified_while_streaming(arena: dict[str, Path], case: str, code: int, message: str) -> None:
    lay = arena["lay"]
    holder: dict[str, dict[str, Any]] = {}

    def layers(b: LayoutBuilder) -> list[dict[str, Any]]:
        good = file_layer(b, "good.txt", b"good")
        if case in ("corrupt file", "longer file", "missing blob"):
            holder["bad"] = file_layer(b, "bad.bin", os.urandom(3 * 1024 * 1024))
        elif case == "corrupt directory":
            holder["bad"] = dir_layer(b, "d", [entry("d/a", data=os.urandom(100_000))])
        elif case == "tar digest mismatch":
            holder["bad"] = dir_layer(b, "d", [entry("d/a", data=b"a")], tar_digest="sha256:" + "0" * 64)
        else:
            holder["bad"] = dir_layer(b, "d", [], raw=b"this is not gzip at all")
        return [good, holder["bad"]]

    artifact(lay, layers)
    path = blob_path(lay, holder["bad"]["digest"])
    if case in ("corrupt file", "corrupt directory"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif case == "longer file":
        with open(path, "ab") as f:
            f.write(b"extra")
    elif case == "missing blob":
        path.unlink()
    rc, _, err = cli("pull", f"{lay}:v1", "-o", arena["out"], "--concurrency", "1")
    assert rc == code, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    left = set(os.listdir(arena["out"])) - {"escape", "good.txt"}
    assert left == set(), left  # no half file, no temp file, no staging directory


def test_existing_files_need_overwrite(tmp_path: Path) -> None:
    lay = artifact(tmp_path / "lay", lambda b: [file_layer(b, "a.txt", b"new"),
                                                dir_layer(b, "d", [entry("d", tarfile.DIRTYPE, mode=0o755),
                                                                   entry("d/x", data=b"new x")])])
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    (out / "a.txt").write_text("old")
    (out / "d" / "x").write_text("old x")
    (out / "d" / "mine").write_text("kept")
    rc, _, err = cli("pull", f"{lay}:v1", "-o", out)
    assert rc == 2 and "already exists (use --overwrite" in err
    assert (out / "a.txt").read_text() == "old"
    rc, _, err = cli("pull", f"{lay}:v1", "-o", out, "--overwrite")
    assert rc == 0, err
    assert (out / "a.txt").read_text() == "new" and (out / "d" / "x").read_text() == "new x"
    assert (out / "d" / "mine").read_text() == "kept"  # a directory is merged, not replaced
    assert [n for n in os.listdir(out) if n.startswith(".ocigc")] == []


def test_pull_follows_an_index_and_skips_untitled_layers(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "lay")
    m1 = b.manifest([file_layer(b, "amd64.txt", b"amd64")], config=b"{}")
    m2 = b.manifest([file_layer(b, "arm64.txt", b"arm64"), b.blob(b"untitled", LAYER)], config=b"{}")
    b.add(b.index([m1, m2]), "multi")
    b.save()
    out = tmp_path / "out"
    rc, stdout, err = cli("pull", f"{tmp_path / 'lay'}:multi", "-o", out, "--json")
    assert rc == 0, err
    result = json.loads(stdout)
    assert sorted(f["title"] for f in result["files"]) == ["amd64.txt", "arm64.txt"]
    assert len(result["skipped"]) == 1
    assert sorted(os.listdir(out)) == ["amd64.txt", "arm64.txt"]


def test_pull_a_layout_the_oras_cli_wrote(tmp_path: Path) -> None:
    """oras-cli-zot/artifacts:blob holds hello.tar (a plain tar layer, not unpacked); :unnamed has an
    untitled layer (skipped, as oras does); :empty only the empty descriptor."""
    out = tmp_path / "out"
    rc, stdout, err = cli("pull", f"{ORAS_ARTIFACTS}:blob", "-o", out)
    assert rc == 0, err
    assert "Digest: sha256:ccd5f15fb7e0d27d47e2912b948eb846c968511ae02724672d608f3d05bc61a1" in stdout
    assert (out / "hello.tar").read_bytes() == blob_path(
        ORAS_ARTIFACTS, "sha256:2ef548696ac7dd66ef38aab5cc8fc5cc1fb637dfaedb3a9afc89bf16db9277e1").read_bytes()
    for tag in ("unnamed", "empty"):
        rc, _, err = cli("pull", f"{ORAS_ARTIFACTS}:{tag}", "-o", tmp_path / tag)
        assert rc == 0, err
        assert os.listdir(tmp_path / tag) == []


def test_interrupted_pull_leaves_no_half_file(tmp_path: Path) -> None:
    """The pull is stopped (SIGSTOP) as soon as its temp file appears, then killed (SIGKILL) with
    part of the bytes written. (Blobs are read only when they are regular files, so a FIFO fed by
    the test cannot pace the pull any more; a blob large enough that it cannot be copied and hashed
    between two polls does.)"""
    size = 128 * 1024 * 1024
    data = os.urandom(1024 * 1024) * (size // (1024 * 1024))
    lay = artifact(tmp_path / "lay", lambda b: [file_layer(b, "big.bin", data)])
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OCIGC_LOCK_SETTLE": "0.05"}
    proc = subprocess.Popen([*ocigc_command(), "pull", f"{lay}:v1", "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temps: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [n for n in os.listdir(out) if n.startswith(".ocigc-tmp-")]
            if temps:
                proc.send_signal(signal.SIGSTOP)
                break
            time.sleep(0.001)
        assert temps, "the pull never wrote its temp file"
        written = (out / temps[0]).stat().st_size
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert written < size, "the whole blob was copied before the pull could be stopped"
    assert not (out / "big.bin").exists()
    assert os.listdir(out) == temps  # only the temp name holds bytes


def test_a_blob_that_is_a_fifo_is_refused_unread(tmp_path: Path) -> None:
    """A FIFO under a digest name would block a reader forever: pull refuses it in one line."""
    data = b"x" * 1024
    lay = artifact(tmp_path / "lay", lambda b: [file_layer(b, "f.bin", data)])
    path = blob_path(lay, f"sha256:{hashlib.sha256(data).hexdigest()}")
    path.unlink()
    os.mkfifo(path)
    out = tmp_path / "out"
    proc = subprocess.run([*ocigc_command(), "pull", f"{lay}:v1", "-o", str(out)], capture_output=True,
                          text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "not a regular file" in proc.stderr, proc.stderr
    assert not (out / "f.bin").exists()


def test_concurrent_files_and_progress_counts(tmp_path: Path) -> None:
    from ocigc.layout.layout import Layout
    from ocigc.oci.refs import parse_reference
    from ocigc.storage.local import LocalStorage
    from ocigc.transfer.pull import pull

    payloads = {f"f{i}.bin": os.urandom(200_000 + i) for i in range(8)}
    lay = artifact(tmp_path / "lay", lambda b: [file_layer(b, k, v) for k, v in payloads.items()])
    seen: list[int] = []
    lock = threading.Lock()

    class Counter:
        def add(self, n: int = 1) -> None:
            with lock:
                seen.append(n)

        def set_total(self, total: int) -> None:
            pass

        def close(self) -> None:
            pass

    class Progress:
        def counter(self, desc: str, total: int | None = None, unit: str = "it") -> Counter:
            return Counter()

    result = pull(Layout.open(LocalStorage(lay)), parse_reference(f"{lay}:v1"), str(tmp_path / "out"),
                  concurrency=4, progress=Progress())
    assert sorted(f.title for f in result.files) == sorted(payloads)
    assert sum(seen) == sum(len(v) for v in payloads.values())
    for k, v in payloads.items():
        assert (tmp_path / "out" / k).read_bytes() == v


def test_pull_needs_a_tag_or_digest(tmp_path: Path) -> None:
    lay = artifact(tmp_path / "lay", lambda b: [file_layer(b, "a")])
    rc, _, err = cli("pull", lay, "-o", tmp_path / "out")
    assert rc == 2 and "give a tag" in err
    rc, _, err = cli("pull", f"{lay}:nope", "-o", tmp_path / "out")
    assert rc == 1 and "no tag 'nope'" in err
    shutil.rmtree(tmp_path / "out", ignore_errors=True)
