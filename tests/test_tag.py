"""tag: new ref names on an existing manifest, under the index.json protocol (local disk and s3fs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.tools import read_index
from tests.kit.cli import cli

REF_NAME = "org.opencontainers.image.ref.name"


@pytest.fixture(autouse=True)
def _short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.05")


def _push(layout: Path, ref: str, tmp: Path, *extra: str) -> str:
    rc, out, err = cli("push", f"{layout}{ref}", *extra, cwd=tmp)
    assert rc == 0, err
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Digest: "))


def test_tag_copies_the_entry_and_moves_tags(layout_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    da = _push(layout_dir, ":v1", tmp_path, "a", "--artifact-type", "application/x.a", "-a", "k=v")
    db = _push(layout_dir, ":other", tmp_path, "b")

    rc, out, err = cli("tag", f"{layout_dir}:v1", "stable", "1.0")
    assert rc == 0, err
    assert out.splitlines() == ["Tagged stable", "Tagged 1.0", f"Digest: {da}"]
    entries = read_index(layout_dir)["manifests"]
    by_tag = {e["annotations"][REF_NAME]: e for e in entries if REF_NAME in e.get("annotations", {})}
    assert set(by_tag) == {"v1", "other", "stable", "1.0"}
    for t in ("stable", "1.0"):  # the whole descriptor is copied: artifactType, annotations
        assert {k: v for k, v in by_tag[t].items() if k != "annotations"} == \
               {k: v for k, v in by_tag["v1"].items() if k != "annotations"}
        assert by_tag[t]["annotations"]["k"] == "v" and by_tag[t]["artifactType"] == "application/x.a"

    # moving "other" to a: b loses its only tag and stays as an untagged entry (never silently dropped)
    rc, _, err = cli("tag", f"{layout_dir}@{da}", "other")
    assert rc == 0, err
    entries = read_index(layout_dir)["manifests"]
    assert [e["digest"] for e in entries if REF_NAME not in e.get("annotations", {})] == [db]
    assert {e["annotations"][REF_NAME] for e in entries if REF_NAME in e.get("annotations", {})} == \
           {"v1", "stable", "1.0", "other"}
    # tagging again with the same names changes nothing
    before = (layout_dir / "index.json").read_bytes()
    rc, _, err = cli("tag", f"{layout_dir}:v1", "stable", "--json")
    assert rc == 0, err
    assert (layout_dir / "index.json").read_bytes() == before


def test_tag_an_untagged_referrer_by_digest(tmp_path: Path) -> None:
    lay = tmp_path / "lay"
    (tmp_path / "base").write_text("base")
    (tmp_path / "sig").write_text("sig")
    _push(lay, ":v1", tmp_path, "base")
    ref = _push(lay, "", tmp_path, "sig", "--artifact-type", "application/x.sig", "--subject", "v1")
    rc, stdout, err = cli("tag", f"{lay}@{ref}", "sig-v1", "--json")
    assert rc == 0, err
    assert json.loads(stdout)["digest"] == ref
    entries = [e for e in read_index(lay)["manifests"] if e["digest"] == ref]
    assert len(entries) == 1  # the untagged entry became the tagged one (as oras-go writes it)
    assert entries[0]["annotations"][REF_NAME] == "sig-v1" and entries[0]["artifactType"] == "application/x.sig"


def test_tag_a_child_manifest_that_is_no_index_entry(tmp_path: Path) -> None:
    from tests.kit.layouts import LayoutBuilder

    b = LayoutBuilder(tmp_path / "lay")
    child = b.manifest([b"layer"])
    b.add(b.index([child]), "multi")
    b.save()
    rc, _, err = cli("tag", f"{tmp_path / 'lay'}@{child['digest']}", "amd64")
    assert rc == 0, err
    entry = read_index(tmp_path / "lay")["manifests"][-1]
    assert entry == {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": child["digest"],
                     "size": child["size"], "annotations": {REF_NAME: "amd64"}}


@pytest.mark.parametrize(("args", "code", "message"), [
    ([":nope", "x"], 1, "no tag 'nope'"),
    (["@sha256:" + "a" * 64, "x"], 1, "no such manifest"),
    ([":v1", "bad tag"], 2, "'bad tag' is not a valid tag"),
    ([":v1", "a/b"], 2, "'a/b' is not a valid tag"),
    ([":v1", "1.0+build"], 2, "'1.0+build' is not a valid tag"),  # migrate would refuse it later
    ([":v1", ".hidden"], 2, "'.hidden' is not a valid tag"),
    ([":v1", "t" * 129], 2, "is not a valid tag"),
    ([":v1", "ok", "x:y"], 2, "names another layout"),
    (["", "x"], 2, "give PATH:TAG, PATH::NAME or PATH@DIGEST"),
    ([":v1,v2", "x"], 2, "one source tag"),
    ([":v1", "x", "--lock-wait", "later"], 2, "--lock-wait"),
])
def test_tag_errors(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    lay = tmp_path / "lay"
    (tmp_path / "f").write_text("f")
    _push(lay, ":v1", tmp_path, "f")
    before = (lay / "index.json").read_bytes()
    rc, _, err = cli("tag", f"{lay}{args[0]}", *args[1:])
    assert rc == code, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert (lay / "index.json").read_bytes() == before


def test_tag_needs_a_layout(tmp_path: Path) -> None:
    rc, _, err = cli("tag", f"{tmp_path / 'none'}:v1", "x")
    assert rc == 1 and "no such directory" in err
