"""Trash and restore: delete/sweep --trash, undo a delete, resurrect what a raced push references, purge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ocigc.gc.check import check_layout
from ocigc.gc.trash import TRASH_DIR, list_runs, purge, resurrect
from ocigc.layout.journal import read_records
from ocigc.layout.layout import Layout
from ocigc.storage.local import LocalStorage
from tests.harness.tools import run_ocigc
from tests.kit.layouts import LayoutBuilder, blob_path
from tests.kit.tree import age, present

ENV = {"OCIGC_LOCK_SETTLE": "0.05", "OCIGC_LOCK_BACKOFF_MIN": "0.05", "OCIGC_LOCK_BACKOFF_MAX": "0.1"}


def build(root: Path) -> tuple[LayoutBuilder, dict[str, dict[str, object]]]:
    b = LayoutBuilder(root)
    m1 = b.image("v1", [b"shared layer", b"only v1"])
    m2 = b.image("v2", [b"shared layer", b"only v2"])
    b.save()
    return b, {"v1": m1, "v2": m2}


def index_doc(root: Path) -> dict[str, object]:
    return json.loads((root / "index.json").read_text())  # type: ignore[no-any-return]


def check(root: Path) -> int:
    return check_layout(Layout.open(LocalStorage(root))).exit_code()


def ocigc(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
    rc, out, err, _ = run_ocigc(*args, env=ENV)
    return rc, out, err


def test_delete_with_trash_then_restore_undoes_it(layout_dir: Path) -> None:
    _, ms = build(layout_dir)
    before_index = (layout_dir / "index.json").read_bytes()
    before_blobs = present(layout_dir)
    rc, out, err = ocigc("delete", f"{layout_dir}:v1", "--trash", "--yes")
    assert rc == 0, err
    assert "trash restore" in out
    assert [e["annotations"]["org.opencontainers.image.ref.name"]  # type: ignore[index]
            for e in index_doc(layout_dir)["manifests"]] == ["v2"]  # type: ignore[union-attr]
    assert blob_path(layout_dir, str(ms["v1"]["digest"])).exists() is False
    layout = Layout.open(LocalStorage(layout_dir))
    (run,) = list_runs(layout)
    assert run.kind == "delete" and len(run.blobs) == 2  # the manifest and "only v1" (the config is shared)
    rc, out, err = ocigc("trash", "list", layout_dir, "--json")
    assert rc == 0, err
    listed = json.loads(out)["runs"]
    assert listed[0]["run"] == run.run and listed[0]["entries"] == ["v1"]
    assert check(layout_dir) == 0
    rc, out, err = ocigc("trash", "restore", layout_dir, run.run)
    assert rc == 0, err
    assert "1 index.json entries" in out
    assert (layout_dir / "index.json").read_bytes() == before_index
    assert present(layout_dir) == before_blobs
    assert list_runs(layout) == []
    assert check(layout_dir) == 0
    assert read_records(layout, "trash-restore")


def test_restore_skips_a_tag_that_now_names_another_manifest(tmp_path: Path) -> None:
    root = tmp_path / "lay"
    _, ms = build(root)
    assert ocigc("delete", f"{root}:v1", "--trash", "--yes")[0] == 0
    # v1 is pushed again, to other content, before the restore
    rc, _, err = ocigc("tag", f"{root}:v2", "v1")
    assert rc == 0, err
    run = list_runs(Layout.open(LocalStorage(root)))[0].run
    rc, _out, err = ocigc("trash", "restore", str(root), run)
    assert rc == 1 and "now names another manifest" in err
    tags = {e["annotations"]["org.opencontainers.image.ref.name"]: e["digest"]  # type: ignore[index]
            for e in index_doc(root)["manifests"]}  # type: ignore[union-attr]
    assert tags == {"v1": ms["v2"]["digest"], "v2": ms["v2"]["digest"]}
    assert blob_path(root, str(ms["v1"]["digest"])).exists()  # blobs came back anyway (harmless garbage)


def test_sweep_with_trash_and_purge_after_retention(tmp_path: Path) -> None:
    root = tmp_path / "lay"
    b, _ = build(root)
    garbage = [b.blob(f"garbage {i}".encode(), "application/octet-stream") for i in range(3)]
    age(root)
    rc, out, err = ocigc("sweep", root, "--grace", "0", "--trash", "--yes")
    assert rc == 0, err
    layout = Layout.open(LocalStorage(root))
    (run,) = list_runs(layout)
    assert run.kind == "sweep" and sorted(run.digests) == sorted(g["digest"] for g in garbage)
    # a second sweep within the retention keeps the trash
    rc, out, err = ocigc("sweep", root, "--grace", "0", "--yes")
    assert rc == 0, err
    assert len(list_runs(layout)) == 1
    rc, out, err = ocigc("sweep", root, "--grace", "0", "--trash-retention", "0", "--yes", "--json")
    assert rc == 0, err
    report = json.loads(out)["layouts"][0]
    assert report["trash"]["purged_runs"] == [run.run] and report["trash"]["purged_blobs"] == 3
    assert list_runs(layout) == [] and read_records(layout, "trash-purge")
    assert not (root / TRASH_DIR / run.run).exists()


def test_sweep_resurrects_a_trashed_blob_a_push_referenced_again(tmp_path: Path) -> None:
    """A push that found the blob present just before the sweep moved it, and referenced it anyway."""
    root = tmp_path / "lay"
    b, _ = build(root)
    late_layer = b"layer the raced push skipped uploading"
    orphan = b.manifest([late_layer])  # written, not tagged yet: garbage to the sweep
    age(root)
    rc, _, err = ocigc("sweep", root, "--grace", "0", "--trash", "--yes")
    assert rc == 0, err
    assert not blob_path(root, str(orphan["digest"])).exists()
    # The raced push now commits its tag: index.json references blobs that sit in the trash.
    b.add(orphan, "raced")
    b.save()
    assert check(root) == 4  # dangling until a sweep (or restore) repairs it
    rc, out, err = ocigc("sweep", root, "--grace", "0", "--json", "--yes")
    assert rc == 0, err
    report = json.loads(out)["layouts"][0]
    raced = report["resurrected"]
    assert {r["digest"] for r in raced} >= {orphan["digest"]}
    assert all(r["roots"] == ["raced"] for r in raced) and "push raced sweep" in raced[0]["message"]
    assert check(root) == 0
    assert read_records(Layout.open(LocalStorage(root)), "trash-resurrect")


def test_purge_resurrects_before_emptying(tmp_path: Path) -> None:
    root = tmp_path / "lay"
    b, _ = build(root)
    m = b.manifest([b"needed later"])
    age(root)
    assert ocigc("sweep", root, "--grace", "0", "--trash", "--yes")[0] == 0
    b.add(m, "late")
    b.save()
    layout = Layout.open(LocalStorage(root))
    result = purge(layout, older_than=None)
    assert {r.digest for r in result.resurrected} >= {m["digest"]}
    assert len(result.purged_runs) == 1 and list_runs(layout) == []
    assert check(root) == 0
    assert resurrect(layout) == []


def test_trash_purge_cli_older_than(tmp_path: Path) -> None:
    root = tmp_path / "lay"
    b, _ = build(root)
    b.blob(b"junk", "application/octet-stream")
    age(root)
    assert ocigc("delete", f"{root}:v1", "--trash", "--yes")[0] == 0
    assert ocigc("sweep", root, "--grace", "0", "--trash", "--yes")[0] == 0
    layout = Layout.open(LocalStorage(root))
    assert len(list_runs(layout)) == 2
    rc, out, err = ocigc("trash", "purge", root, "--older-than", "1h")
    assert rc == 0 and "purged 0 runs" in out, err
    rc, out, err = ocigc("trash", "purge", root)
    assert rc == 0 and "purged 2 runs" in out, err
    assert list_runs(layout) == []
    assert check(root) == 0


def test_restore_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "lay"
    build(root)
    rc, _, err = ocigc("trash", "restore", root, "nope")
    assert rc == 1 and "no such trash run" in err
    rc, _, err = ocigc("trash", "restore", root, "../x")
    assert rc == 2 and "not a trash run" in err


@pytest.mark.parametrize("cmd", [["trash", "list"], ["locks", "list"]])
def test_read_commands_on_an_empty_layout(tmp_path: Path, cmd: list[str]) -> None:
    root = tmp_path / "lay"
    build(root)
    rc, out, err = ocigc(*cmd, root)
    assert rc == 0 and out == "" and err.strip()
