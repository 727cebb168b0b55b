"""Layouts inside layouts and layouts sharing blobs through symlinks (docs/design.md, "Layouts and
references"): a directory holding ``oci-layout`` is a layout wherever it is (never a writer's
leftover), and what a layout under the swept root links to is referenced. Through the real CLI, on
local disk and on an s3fs mount (``layout_dir``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.kit.cli import INTEGRITY, OK, run
from tests.kit.layouts import OCI_LAYER, LayoutBuilder, blob_path
from tests.kit.tree import age

NESTED_AT = ["ingest", ".umoci-x", "ingest/deep", ".umoci-y/a/b", "oci-put-blob-x", "ingest/x/.umoci-z"]


def _files(root: Path) -> set[str]:
    """Every file under ``root`` but ocigc's own control files (journal records)."""
    found = {str((Path(d) / f).relative_to(root)) for d, _dirs, files in os.walk(root) for f in files}
    return {f for f in found if not f.startswith(".ocigc/")}


@pytest.mark.parametrize("sub", NESTED_AT)
def test_nested_layout_under_leftover_name_is_a_layout(layout_dir: Path, sub: str) -> None:
    outer = LayoutBuilder(layout_dir)
    outer.image("v1", [b"outer layer"])
    outer.save()
    inner_root = layout_dir / sub
    inner = LayoutBuilder(inner_root)
    inner.image("inner", [b"inner layer"])
    inner_garbage = inner.blob(b"inner garbage", OCI_LAYER)
    inner.save()
    # Real leftovers next to it are still removed.
    temp_dir = layout_dir / (".umoci-tmp" if sub.startswith("ingest") else "ingest")
    temp_dir.mkdir(exist_ok=True)
    (temp_dir / "leftover-upload").write_bytes(b"partial")
    (layout_dir / "oci-put-blob-123").write_bytes(b"partial")
    age(layout_dir)
    inner_files = _files(inner_root)
    r = run(["sweep", layout_dir, "--grace", "0s", "--yes"])
    assert r.code == OK, r
    # The inner layout is swept as a layout of its own (its garbage goes), never as a leftover.
    assert not blob_path(inner_root, inner_garbage["digest"]).exists()
    assert _files(inner_root) == inner_files - {str(blob_path(inner_root, inner_garbage["digest"])
                                                   .relative_to(inner_root))}
    assert not (temp_dir / "leftover-upload").exists()
    assert not (layout_dir / "oci-put-blob-123").exists()
    for cmd in (["ls", "--json"], ["check", "--json"]):
        doc = run([*cmd, layout_dir]).json()
        names = {lay.get("layout", lay.get("name")) for lay in doc["layouts"]}
        assert sub in names, doc
    assert run(["check", inner_root]).code == OK


def test_leftover_dir_with_layout_deep_below_keeps_the_layout_and_its_parents(layout_dir: Path) -> None:
    outer = LayoutBuilder(layout_dir)
    outer.image("v1", [b"outer"])
    outer.save()
    inner_root = layout_dir / ".umoci-q" / "a" / "b"
    inner = LayoutBuilder(inner_root)
    inner.image("t", [b"deep"])
    inner.save()
    (layout_dir / ".umoci-q" / "stale").write_bytes(b"umoci temp")
    age(layout_dir)
    plan = run(["sweep", layout_dir, "--grace", "0s", "--dry-run", "--json"]).json()
    outer_plan = next(o["plan"] for o in plan["layouts"] if o["layout"] == str(layout_dir))
    paths = [f["path"] for f in outer_plan["remove_files"]]
    assert paths == [".umoci-q/stale"], paths
    assert run(["sweep", layout_dir, "--grace", "0s", "--yes"]).code == OK
    assert not (layout_dir / ".umoci-q" / "stale").exists()
    assert (inner_root / "oci-layout").exists() and (inner_root / "index.json").exists()
    assert run(["check", inner_root]).code == OK


def test_empty_umoci_temp_dir_is_removed_and_one_over_a_layout_is_not(layout_dir: Path) -> None:
    """An empty ``.umoci-*`` directory is a leftover of its own (removed with rmdir, which never
    removes what is not empty); one with nothing but a layout further down is not a leftover at all."""
    outer = LayoutBuilder(layout_dir)
    outer.image("v1", [b"outer"])
    outer.save()
    (layout_dir / ".umoci-empty" / "sub").mkdir(parents=True)
    inner_root = layout_dir / ".umoci-full" / "a" / "b"
    inner = LayoutBuilder(inner_root)
    inner.image("t", [b"deep"])
    inner.save()
    age(layout_dir)
    plan = run(["sweep", layout_dir, "--grace", "0s", "--dry-run", "--json"]).json()
    outer_plan = next(o["plan"] for o in plan["layouts"] if o["layout"] == str(layout_dir))
    assert [f["path"] for f in outer_plan["remove_files"]] == [".umoci-empty/sub/"]
    r = run(["sweep", layout_dir, "--grace", "0s", "--yes"])
    assert r.code == OK, r
    assert not (layout_dir / ".umoci-empty").exists()
    assert run(["check", inner_root]).code == OK
    assert _files(inner_root) >= {"oci-layout", "index.json"}


def test_oci_layout_inside_blobs_is_never_a_digest_nor_deleted(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    b.image("v1", [b"x"])
    b.save()
    odd = layout_dir / "blobs" / "sha256" / "oci-put-blob-dir"
    LayoutBuilder(odd).save()  # a "layout" inside blobs/<alg>/: a foreign directory, reported only
    (layout_dir / "blobs" / "sha256" / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    age(layout_dir)
    before = _files(layout_dir / "blobs")
    r = run(["sweep", layout_dir, "--grace", "0s", "--yes"])
    assert r.code == OK, r
    assert _files(layout_dir / "blobs") == before


def _shared(root: Path) -> tuple[Path, Path, list[str], str]:
    """Layout ``a`` with an unreachable image that layout ``b`` references through digest-named links."""
    a, b = root / "a", root / "b"
    ba = LayoutBuilder(a)
    ba.image("v1", [b"a layer"])
    shared = ba.manifest([b"shared layer"], config=b'{"architecture":"arm64","os":"linux"}')
    garbage = ba.blob(b"a garbage", OCI_LAYER)
    ba.save()
    digests = [shared["digest"]]
    man = blob_path(a, shared["digest"]).read_bytes()
    doc = json.loads(man)
    digests += [doc["config"]["digest"], doc["layers"][0]["digest"]]
    bb = LayoutBuilder(b)
    for d in digests:
        os.symlink(os.path.relpath(blob_path(a, d), blob_path(b, d).parent), blob_path(b, d))
    bb.add(shared, "v1")
    bb.save()
    return a, b, digests, garbage["digest"]


def test_sweep_root_keeps_what_a_sibling_layout_links_to(layout_dir: Path) -> None:
    a, b, digests, garbage = _shared(layout_dir)
    age(layout_dir)
    plan = run(["sweep", layout_dir, "--grace", "0s", "--dry-run", "--json"]).json()
    by_name = {o["layout"]: o for o in plan["layouts"]}
    assert by_name["b"]["error"] is None, by_name["b"]
    kept = {k["digest"]: k["reason"] for k in by_name["a"]["plan"]["kept"]}
    assert set(digests) <= kept.keys() and all(kept[d].startswith("linked from ") for d in digests), kept
    r = run(["sweep", layout_dir, "--grace", "0s", "--yes"])
    assert r.code == OK, r
    assert all(blob_path(a, d).is_file() for d in digests)
    assert not blob_path(a, garbage).exists()
    assert all(blob_path(b, d).is_symlink() for d in digests)
    assert run(["check", b]).code == OK
    assert run(["check", "--verify-digests", layout_dir]).code == OK


def test_link_with_wrong_content_is_refused_and_nothing_removed(tmp_path: Path) -> None:
    a, b, digests, _garbage = _shared(tmp_path)
    # b's manifest link now leads to a's *config*: the content does not match the name.
    link = blob_path(b, digests[0])
    link.unlink()
    os.symlink(blob_path(a, digests[1]), link)
    bb_garbage = b / "blobs" / "sha256" / ("0" * 64)
    bb_garbage.write_bytes(b"not this digest")
    age(tmp_path)
    r = run(["sweep", tmp_path, "--grace", "0s", "--yes"])
    assert r.code != OK and "does not match its digest" in r.stderr, r
    assert bb_garbage.exists()  # b refused as a whole
    assert all(blob_path(a, d).is_file() for d in digests[1:])  # still linked from b


def test_single_layout_sweep_cannot_see_links_into_it_and_refuses_links_out(tmp_path: Path) -> None:
    """Documented: sweep the common root. A layout whose links lead outside the swept path is refused."""
    _a, b, digests, _garbage = _shared(tmp_path)
    age(tmp_path)
    r = run(["sweep", b, "--grace", "0s", "--yes"])
    assert r.code != OK and "leading outside" in r.stderr, r
    assert all(blob_path(b, d).is_symlink() for d in digests)


def test_dangling_link_is_damage_for_check(tmp_path: Path) -> None:
    a, b, digests, _garbage = _shared(tmp_path)
    blob_path(a, digests[2]).unlink()
    assert run(["check", b]).code == INTEGRITY


def test_read_commands_read_through_verified_links(layout_dir: Path) -> None:
    _a, b, digests, _garbage = _shared(layout_dir)
    r = run(["inspect", "--wide", f"{b}:v1"])
    assert r.code == OK and digests[2] in r.stdout and "MISSING" not in r.stdout, r
    doc = run(["check", "--verify-digests", "--json", b]).json()
    codes = {p["code"] for p in doc["layouts"][0]["problems"]}
    assert doc["exit_code"] == OK and "symlink-blob" in codes, doc
    blob_path(_a, digests[2]).unlink()
    assert "MISSING" in run(["inspect", f"{b}:v1"]).stdout
