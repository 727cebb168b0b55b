"""The committed fixtures (fixtures/layouts, fixtures/bad) still hold what their EXPECT.json says.

Independent of the ocigc package: only the files, fixtures/build.py and (optionally) umoci/skopeo.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
BUILD = FIXTURES / "build.py"
HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}
REF_NAME = "org.opencontainers.image.ref.name"


def _fixture_dirs() -> list[Path]:
    return sorted(p for g in ("layouts", "bad") if (FIXTURES / g).is_dir() for p in (FIXTURES / g).iterdir()
                  if p.is_dir())


FIXTURE_DIRS = _fixture_dirs()
IDS = [f"{p.parent.name}/{p.name}" for p in FIXTURE_DIRS]


def _expect(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((path / "EXPECT.json").read_text())
    return doc


def _build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fixtures_build", BUILD)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fixtures_build"] = mod
    spec.loader.exec_module(mod)
    return mod


def _is_digest_name(alg: str, name: str) -> bool:
    return alg in HEX_LEN and len(name) == HEX_LEN[alg] and all(c in "0123456789abcdef" for c in name)


def test_every_fixture_is_there() -> None:
    build = _build_module()
    names = {p.name for p in FIXTURE_DIRS}
    assert names == set(build.BUILDERS), "fixtures/ and build.py disagree on the list of fixtures"
    for p in FIXTURE_DIRS:
        assert (p / "EXPECT.json").is_file(), p


def test_build_check_mode_passes() -> None:
    proc = subprocess.run([sys.executable, str(BUILD), "--check"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", FIXTURE_DIRS, ids=IDS)
def test_blobs_hash_to_their_names(path: Path) -> None:
    exp = _expect(path)
    corrupt = set(exp["intent"].get("corrupt", {}))
    symlinks = {s["path"] for s in exp["facts"]["symlinks"]}
    non_digest = set(exp["facts"]["non_digest_files"])
    for alg_dir in sorted((path / "blobs").iterdir()):
        rel_dir = f"blobs/{alg_dir.name}"
        if alg_dir.is_symlink():
            assert rel_dir in symlinks
        for f in sorted(alg_dir.iterdir()):
            rel = f"{rel_dir}/{f.name}"
            if f.is_symlink():
                assert rel in symlinks, f"undeclared symlink {rel}"
                continue
            if not _is_digest_name(alg_dir.name, f.name):
                assert rel in non_digest, f"undeclared non-digest file {rel}"
                continue
            d = f"{alg_dir.name}:{f.name}"
            matches = hashlib.new(alg_dir.name, f.read_bytes()).hexdigest() == f.name
            assert matches != (d in corrupt), f"{rel}: hash matches={matches}, declared corrupt={d in corrupt}"
    assert corrupt <= set(exp["facts"]["blob_files"])


@pytest.mark.parametrize("path", FIXTURE_DIRS, ids=IDS)
def test_expect_lists_agree_with_files(path: Path) -> None:
    exp = _expect(path)
    f = exp["facts"]

    def blob(d: str) -> Path:
        alg, _, hexpart = d.partition(":")
        return path / "blobs" / alg / hexpart

    present = {f"{a.name}:{b.name}" for a in (path / "blobs").iterdir() if a.is_dir()
               for b in a.iterdir() if _is_digest_name(a.name, b.name)}
    assert set(f["blob_files"]) == present
    assert set(f["reachable"]) | set(f["unreachable"]) == present
    assert not set(f["reachable"]) & set(f["unreachable"])
    assert f["blob_count"] == len(present)
    for d in f["reachable"] + f["unreachable"]:
        assert os.path.lexists(blob(d)), d
    for x in f["dangling"]:
        assert not os.path.lexists(blob(x["digest"])), x
    for rel in f["leftovers"] + f["non_digest_files"]:
        assert os.path.lexists(path / rel), rel
    for r, info in f["referrers"].items():
        body = json.loads(blob(r).read_bytes())
        assert body["subject"]["digest"] == info["subject"]
    # tags and entries, read straight from index.json when it parses
    try:
        index = json.loads((path / "index.json").read_bytes())
    except (OSError, ValueError):
        index = None
    if isinstance(index, dict):
        entries = index.get("manifests") or []
        assert [e.get("digest") for e in entries] == [e["digest"] for e in f["index"]["entries"]]
        tags: dict[str, list[str]] = {}
        for e in entries:
            name = (e.get("annotations") or {}).get(REF_NAME)
            if name is not None:
                tags.setdefault(name, []).append(e["digest"])
        assert tags == {t: [x["digest"] for x in v] for t, v in f["tags"].items()}
    if exp["group"] == "layouts":
        assert f["valid"] and not f["errors"]
        assert exp["suggested_error"] is None
    else:
        assert not f["valid"] or exp["suggested_error"]["code"] == "depth-exceeded"
        assert exp["suggested_error"]["code"] in {e["code"] for e in f["errors"]} | {"depth-exceeded"}
    for d in exp["intent"].get("reachable", []):
        assert d in f["reachable"]
    for d in exp["intent"].get("unreachable", []):
        assert d in f["unreachable"]


def test_fixtures_are_small() -> None:
    for path in FIXTURE_DIRS:
        total = sum(p.stat().st_size for p in path.rglob("*")
                    if p.is_file() and not p.is_symlink() and p.name != "EXPECT.json")
        assert total <= 50 * 1024, f"{path}: {total} bytes"


@pytest.mark.skipif(not (shutil.which("umoci") and shutil.which("skopeo")), reason="needs umoci and skopeo")
def test_rebuild_reproduces_the_committed_structure(tmp_path: Path) -> None:
    build = _build_module()
    proc = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for path in FIXTURE_DIRS:
        old = _expect(path)
        new = _expect(tmp_path / path.parent.name / path.name)
        assert build.shape(new) == build.shape(old), f"{path.name}: structure changed"
        if old["deterministic"] and new["built_with"] == old["built_with"]:
            assert new["facts"] == old["facts"], f"{path.name}: a reproducible fixture changed"
