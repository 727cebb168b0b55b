"""Fail closed in planning and applying (issue 14, items 5, 7, 8 and the plain writer), through the
real CLI on local disk and, where storage matters, on an s3fs mount (``layout_dir``):

- grace protects the closure of a young unreachable manifest (and delete never removes it);
- ``tag`` and ``push --subject`` refuse a manifest whose closure is incomplete, changing nothing;
- a foreign layer (descriptor with ``urls``) absent from ``blobs/`` does not block the sweep, is
  reported by ``check`` as foreign, and ``pull`` says it skipped it;
- the dry run prints the trash restores and purges the real run then performs (journal record);
- a plain writer that references a blob the run removed is reported as a lost race (exit 3).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocigc.gc.plan import SweepOptions
from ocigc.gc.run import RunOptions, sweep_layout
from ocigc.layout.journal import read_records
from ocigc.layout.layout import Layout
from ocigc.progress import Counter, NullCounter
from ocigc.storage.local import LocalStorage
from tests.kit.cli import INTEGRITY, LOST_RACE, OK, run
from tests.kit.layouts import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    REF_NAME,
    LayoutBuilder,
    blob_path,
    dumps,
    random_layout,
)
from tests.kit.tree import age, present, snapshot

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
YOUNG = "referenced by a manifest younger than the grace period"


@pytest.fixture(autouse=True)
def _short_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.05")


def _age_file(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def index_bytes(root: Path) -> bytes:
    return (root / "index.json").read_bytes()


def entry_for(desc: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
    e = {k: desc[k] for k in ("mediaType", "digest", "size")}
    if tag is not None:
        e["annotations"] = {REF_NAME: tag}
    return e


def add_entries(root: Path, *entries: dict[str, Any]) -> None:
    """What a plain writer does: rewrite index.json with more entries (no lock)."""
    doc = json.loads(index_bytes(root))
    doc["manifests"].extend(entries)
    (root / "index.json").write_bytes(dumps(doc))


def layout_with_young_unreachable_manifest(root: Path) -> tuple[LayoutBuilder, dict[str, Any], dict[str, Any]]:
    """The issue's example: an unreachable manifest 1 minute old whose config and layer are 2 hours old;
    plus real garbage (2 hours old) and a tagged image."""
    b = LayoutBuilder(root)
    b.image("keep", [b"kept layer"])
    garbage = b.blob(b"real garbage", "application/octet-stream")
    young = b.manifest([b"layer of a manifest not tagged yet"], config=b'{"architecture":"arm64","os":"linux"}')
    b.save()
    age(root, 7200)
    _age_file(blob_path(root, young["digest"]), 60)
    return b, young, garbage


# --- (5) grace protects the closure of a young unreachable manifest -----------------------------------
def test_grace_keeps_the_closure_of_a_young_manifest_and_tag_then_works(layout_dir: Path) -> None:
    _, young, garbage = layout_with_young_unreachable_manifest(layout_dir)
    closure = [young["digest"], *(d["digest"] for d in _children(layout_dir, young))]
    r = run(["sweep", layout_dir, "--json"])
    assert r.code == OK, r
    plan = r.json()["layouts"][0]["plan"]
    kept = {k["digest"]: k["reason"] for k in plan["kept"]}
    assert kept[young["digest"]].startswith("younger than the grace period")
    for d in closure[1:]:  # config and layer: 2 hours old, kept for the young manifest that references them
        assert kept[d].startswith(YOUNG), kept
    assert [x["digest"] for x in plan["remove_blobs"]] == [garbage["digest"]]
    assert all(blob_path(layout_dir, d).exists() for d in closure)
    assert not blob_path(layout_dir, garbage["digest"]).exists()
    r = run(["tag", f"{layout_dir}@{young['digest']}", "newtag"])
    assert r.code == OK, r
    r = run(["check", layout_dir])
    assert r.code == OK, r


def test_grace_protects_transitively_through_an_old_index(tmp_path: Path) -> None:
    """A young index over an old manifest: the old manifest's config and layer are kept too."""
    b = LayoutBuilder(tmp_path)
    b.image("keep", [b"kept"])
    inner = b.manifest([b"platform layer"], config=b'{"architecture":"riscv64","os":"linux"}')
    top = b.index([inner])
    b.save()
    age(tmp_path, 7200)
    _age_file(blob_path(tmp_path, top["digest"]), 30)
    r = run(["sweep", tmp_path, "--json"])
    assert r.code == OK, r
    plan = r.json()["layouts"][0]["plan"]
    assert plan["remove_blobs"] == [] and plan["remove_manifests"] == []
    kept = {k["digest"]: k["reason"] for k in plan["kept"]}
    for d in [inner["digest"], *(c["digest"] for c in _children(tmp_path, inner))]:
        assert kept[d].startswith(YOUNG), kept
    assert run(["tag", f"{tmp_path}@{top['digest']}", "multi"]).code == OK
    assert run(["check", tmp_path]).code == OK


def test_a_young_unparsable_manifest_keeps_every_candidate(tmp_path: Path) -> None:
    """Its children are unknown: nothing unreachable is removed until it is past the grace period."""
    b = LayoutBuilder(tmp_path)
    b.image("keep", [b"kept"])
    garbage = b.blob(b"old garbage", "application/octet-stream")
    cfg = b.blob(b'{"architecture":"amd64","os":"linux"}', OCI_CONFIG)
    bad = b.blob(dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
                        "layers": [{"mediaType": OCI_LAYER, "digest": garbage["digest"], "size": -1}]}),
                 OCI_MANIFEST)
    b.save()
    age(tmp_path, 7200)
    _age_file(blob_path(tmp_path, bad["digest"]), 10)
    r = run(["sweep", tmp_path, "--json"])
    assert r.code == OK, r
    plan = r.json()["layouts"][0]["plan"]
    assert plan["remove_blobs"] == [] and plan["remove_manifests"] == []
    assert any("children are unknown" in n for n in plan["notes"]), plan["notes"]
    assert blob_path(tmp_path, garbage["digest"]).exists() and blob_path(tmp_path, cfg["digest"]).exists()
    _age_file(blob_path(tmp_path, bad["digest"]), 7200)  # once it is old, it is ordinary garbage
    r = run(["sweep", tmp_path])
    assert r.code == OK, r
    assert not blob_path(tmp_path, garbage["digest"]).exists() and not blob_path(tmp_path, bad["digest"]).exists()


def test_delete_keeps_what_a_young_never_tagged_manifest_shares(tmp_path: Path) -> None:
    """delete removes what it made unreachable, but not a blob a young untagged manifest (a writer
    between its manifest and its index.json update) references."""
    b = LayoutBuilder(tmp_path)
    old = b.image("old", [b"shared layer", b"only old"])
    young = b.manifest([b"shared layer"], config=b'{"architecture":"s390x","os":"linux"}')
    b.save()
    age(tmp_path, 7200)
    _age_file(blob_path(tmp_path, young["digest"]), 60)
    shared = b.blob(b"shared layer", OCI_LAYER, write=False)["digest"]
    only_old = b.blob(b"only old", OCI_LAYER, write=False)["digest"]
    r = run(["delete", f"{tmp_path}:old", "--yes", "--json"])
    assert r.code == OK, r
    plan = r.json()["layouts"][0]["plan"]
    assert {k["digest"]: k["reason"] for k in plan["kept"]}[shared].startswith(YOUNG)
    assert blob_path(tmp_path, shared).exists()
    assert not blob_path(tmp_path, only_old).exists() and not blob_path(tmp_path, old["digest"]).exists()
    assert run(["tag", f"{tmp_path}@{young['digest']}", "young"]).code == OK
    assert run(["check", tmp_path]).code == OK


# --- (5) making a manifest reachable verifies its closure ----------------------------------------------
def test_tag_refuses_a_manifest_whose_closure_is_incomplete(layout_dir: Path) -> None:
    _, young, _ = layout_with_young_unreachable_manifest(layout_dir)
    layer = next(c for c in _children(layout_dir, young) if c["mediaType"] == OCI_LAYER)
    blob_path(layout_dir, layer["digest"]).unlink()  # what the blob-by-blob grace of old left behind
    before = index_bytes(layout_dir)
    r = run(["tag", f"{layout_dir}@{young['digest']}", "newtag"])
    assert r.code == INTEGRITY, r
    assert len(r.error_lines) == 1 and layer["digest"].split(":")[1] in r.error_lines[0], r
    assert index_bytes(layout_dir) == before
    assert run(["check", layout_dir]).code == OK  # nothing dangling was created


def test_tag_refuses_a_manifest_with_a_truncated_layer(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    m = b.manifest([b"a layer that is cut short"])
    b.save()
    layer = next(c for c in _children(tmp_path, m) if c["mediaType"] == OCI_LAYER)
    blob_path(tmp_path, layer["digest"]).write_bytes(b"a layer")
    r = run(["tag", f"{tmp_path}@{m['digest']}", "v1"])
    assert r.code == INTEGRITY, r
    assert "has 7 bytes" in r.error_lines[0], r
    assert json.loads(index_bytes(tmp_path))["manifests"] == []


def test_tag_refuses_an_index_whose_platform_manifest_lacks_a_layer(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    inner = b.manifest([b"never uploaded"], write_layers=False)
    top = b.index([inner])
    b.add(top, "v1")
    b.save()
    os.unlink(blob_path(tmp_path, inner["digest"]))
    r = run(["tag", f"{tmp_path}:v1", "v2"])
    assert r.code == INTEGRITY, r
    assert inner["digest"].split(":")[1] in r.error_lines[0] and "manifest is missing" in r.error_lines[0], r
    assert [m.get("annotations", {}).get(REF_NAME) for m in json.loads(index_bytes(tmp_path))["manifests"]] == ["v1"]


def test_push_subject_onto_an_incomplete_closure_is_refused(layout_dir: Path, tmp_path: Path) -> None:
    b = LayoutBuilder(layout_dir)
    base = b.image("base", [b"base layer"])
    b.save()
    layer = next(c for c in _children(layout_dir, base) if c["mediaType"] == OCI_LAYER)
    blob_path(layout_dir, layer["digest"]).unlink()
    before, blobs_before = index_bytes(layout_dir), present(layout_dir)
    (tmp_path / "sig.txt").write_text("signature")
    r = run(["push", f"{layout_dir}:sig", "sig.txt", "--subject", "base", "--artifact-type",
             "application/vnd.example.sig"], cwd=tmp_path)
    assert r.code == INTEGRITY, r
    assert layer["digest"].split(":")[1] in r.stderr, r
    assert index_bytes(layout_dir) == before
    assert present(layout_dir) == blobs_before  # nothing was stored either
    # with the closure complete, the same push works
    b.blob(b"base layer", OCI_LAYER)
    r = run(["push", f"{layout_dir}:sig", "sig.txt", "--subject", "base", "--artifact-type",
             "application/vnd.example.sig"], cwd=tmp_path)
    assert r.code == OK, r


def test_trash_restore_of_an_entry_needs_its_closure(tmp_path: Path) -> None:
    """Restoring a deleted tag is another way to make a manifest reachable: it needs the closure."""
    b = LayoutBuilder(tmp_path)
    v1 = b.image("v1", [b"v1 layer"])
    b.image("v2", [b"v2 layer"])
    b.save()
    r = run(["delete", f"{tmp_path}:v1", "--trash", "--yes", "--json"])
    assert r.code == OK, r
    trash_run = r.json()["layouts"][0]["trash_run"]
    layer = b.blob(b"v1 layer", OCI_LAYER, write=False)["digest"]
    os.unlink(tmp_path / ".ocigc" / "trash" / trash_run / "blobs" / "sha256" / layer.split(":")[1])
    r = run(["trash", "restore", tmp_path, trash_run, "--json"])
    assert "v1" not in json.dumps(r.json().get("entries_restored", [])), r
    assert run(["check", tmp_path]).code == OK
    assert v1["digest"] not in {m["digest"] for m in json.loads(index_bytes(tmp_path))["manifests"]}


# --- (7) foreign layers ------------------------------------------------------------------------------
def skopeo_like(root: Path, titled: bool = False) -> tuple[LayoutBuilder, str, str]:
    """A Docker image whose foreign layer is absent (skopeo leaves it out), an OCI artifact with a
    non-distributable titled layer absent, real garbage, everything old."""
    b = LayoutBuilder(root)
    cfg = b.blob(b'{"architecture":"amd64","os":"windows"}', DOCKER_CONFIG)
    foreign = b.blob(b"windows base layer", DOCKER_FOREIGN, write=False)
    foreign["urls"] = ["https://mcr.example/blobs/" + foreign["digest"]]
    normal = b.blob(b"an ordinary layer", "application/vnd.docker.image.rootfs.diff.tar.gzip")
    doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": cfg, "layers": [foreign, normal]}
    b.add(b.blob(dumps(doc), DOCKER_MANIFEST), "win")
    nd = b.blob(b"non-distributable file", OCI_NONDIST, write=False)
    nd["urls"] = ["https://example.com/nd.bin"]
    nd["annotations"] = {"org.opencontainers.image.title": "nd.bin"}
    present_nd = b.blob(b"a foreign-typed layer that IS present", OCI_NONDIST)
    present_nd["urls"] = ["https://example.com/present.bin"]
    present_nd["annotations"] = {"org.opencontainers.image.title": "present.bin"}
    b.add(b.manifest([nd, present_nd], config=b"{}"), "nd")
    garbage = b.blob(b"real garbage", "application/octet-stream")
    b.save()
    age(root, 7200)
    return b, foreign["digest"], garbage["digest"]


def test_a_foreign_layer_absent_does_not_block_the_sweep(layout_dir: Path, tmp_path: Path) -> None:
    b, foreign, garbage = skopeo_like(layout_dir)
    present_layer = b.blob(b"a foreign-typed layer that IS present", OCI_NONDIST, write=False)["digest"]
    r = run(["sweep", layout_dir, "--json"])
    assert r.code == OK, r
    plan = r.json()["layouts"][0]["plan"]
    assert [x["digest"] for x in plan["remove_blobs"]] == [garbage], plan
    assert plan["dangling"] == []
    assert any("foreign layer" in x and foreign.split(":")[1] in x for x in plan["reported"]), plan["reported"]
    assert not blob_path(layout_dir, garbage).exists()
    assert blob_path(layout_dir, present_layer).exists()  # a foreign-typed layer that is present is kept
    r = run(["check", layout_dir, "--json"])
    assert r.code == OK, r
    problems = r.json()["layouts"][0]["problems"] if "layouts" in r.json() else r.json()["problems"]
    foreign_lines = [p for p in problems if p["code"] == "foreign-layer"]
    assert {p["digest"] for p in foreign_lines} >= {foreign} and all(p["severity"] == "info" for p in foreign_lines)
    r = run(["check", layout_dir])
    assert r.code == OK and "foreign layer" in r.stdout + r.stderr, r
    # pull: the absent non-distributable file is skipped and said so; the present one is written
    out = tmp_path / "out"
    r = run(["pull", f"{layout_dir}:nd", "-o", out])
    assert r.code == OK, r
    assert "Skipped foreign layer 'nd.bin'" in r.stderr and "https://example.com/nd.bin" in r.stderr, r
    assert (out / "present.bin").read_bytes() == b"a foreign-typed layer that IS present"
    assert not (out / "nd.bin").exists()
    r = run(["pull", f"{layout_dir}:win", "-o", tmp_path / "win", "--json"])
    assert r.code == OK, r
    assert [f["digest"] for f in r.json()["foreign"]] == [foreign]


def test_an_absent_layer_without_urls_still_stops_the_sweep(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    b.image("broken", [b"never uploaded"])
    b.save()
    os.unlink(blob_path(tmp_path, b.blob(b"never uploaded", OCI_LAYER, write=False)["digest"]))
    garbage = b.blob(b"garbage", "application/octet-stream")["digest"]
    age(tmp_path)
    r = run(["sweep", tmp_path])
    assert r.code == INTEGRITY, r
    assert blob_path(tmp_path, garbage).exists()


@pytest.mark.parametrize("where", ["index child", "config"])
def test_urls_excuse_only_a_layer(tmp_path: Path, where: str) -> None:
    """``urls`` on an index's child (a manifest whose children would be unknown) or on a config does
    not make its absence harmless: the sweep still refuses, check still says dangling."""
    b = LayoutBuilder(tmp_path)
    if where == "index child":
        inner = b.manifest([b"platform layer"], config=b'{"architecture":"mips64le","os":"linux"}')
        blob_path(tmp_path, inner["digest"]).unlink()
        b.add(b.index([{**inner, "urls": ["https://example.com/m"]}]), "v1")
    else:
        cfg = b.blob(b'{"architecture":"ppc64le","os":"linux"}', OCI_CONFIG, write=False)
        layer = b.blob(b"a layer", OCI_LAYER)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {**cfg, "urls": ["https://example.com/c"]},
               "layers": [layer]}
        b.add(b.blob(dumps(doc), OCI_MANIFEST), "v1")
    garbage = b.blob(b"garbage", "application/octet-stream")["digest"]
    b.save()
    age(tmp_path)
    r = run(["sweep", tmp_path])
    assert r.code == INTEGRITY, r
    assert blob_path(tmp_path, garbage).exists()
    assert run(["check", tmp_path]).code == INTEGRITY


# --- (8) the dry run prints the trash restores and purges; the real run does exactly that ---------------
def _trash_with_a_rereferenced_image(root: Path) -> tuple[dict[str, Any], str]:
    b = LayoutBuilder(root)
    v1 = b.image("v1", [b"v1 layer"])
    b.image("v2", [b"v2 layer"])
    b.save()
    r = run(["delete", f"{root}:v1", "--trash", "--yes", "--json"])
    assert r.code == OK, r
    add_entries(root, entry_for(v1, "v1"))  # a plain writer references the trashed manifest again
    return v1, r.json()["layouts"][0]["trash_run"]


def _strip_ages(plan: dict[str, Any]) -> dict[str, Any]:
    plan = json.loads(json.dumps(plan))
    for p in plan["trash_purge"]:
        p.pop("age_seconds")
    return plan


@pytest.mark.parametrize("retention", ["24h", "0s"])
def test_dry_run_shows_the_trash_plan_the_real_run_executes(layout_dir: Path, retention: str) -> None:
    v1, trash_run = _trash_with_a_rereferenced_image(layout_dir)
    before = snapshot(layout_dir)
    r = run(["sweep", layout_dir, "--grace", "0s", "--trash-retention", retention, "--dry-run", "--json"])
    assert r.code == OK, r
    dry = r.json()["layouts"][0]["plan"]
    restored = {t["digest"] for t in dry["trash_restore"]}
    assert v1["digest"] in restored and len(restored) == 2  # the manifest and its layer (the config is v2's too)
    assert all(t["run"] == trash_run and "v1" in t["roots"] for t in dry["trash_restore"])
    assert [p["run"] for p in dry["trash_purge"]] == ([trash_run] if retention == "0s" else [])
    text = run(["sweep", layout_dir, "--grace", "0s", "--trash-retention", retention, "--dry-run"])
    assert text.code == OK, text
    assert snapshot(layout_dir) == before  # the dry runs changed nothing at all (trash and journal included)
    assert text.stdout.count("restore blob") == 2
    assert ("purge   trash run " + trash_run in text.stdout) == (retention == "0s")

    r = run(["sweep", layout_dir, "--grace", "0s", "--trash-retention", retention, "--json"])
    assert r.code == OK, r
    (record,) = read_records(Layout(LocalStorage(layout_dir)), "sweep")
    assert _strip_ages(record["plan"]) == _strip_ages(dry)
    assert run(["check", layout_dir]).code == OK
    runs_left = {p.name for p in (layout_dir / ".ocigc" / "trash").iterdir()} if (
        layout_dir / ".ocigc" / "trash").exists() else set()
    assert (trash_run in runs_left) == (retention != "0s")


# --- a plain writer references a blob the run removed: a lost race (exit 3), journaled -------------------
class _RewriteAfterRemoval:
    """A Progress whose "remove" counter, when closed (removals done, verification next), acts like
    a plain writer: rewrites index.json to reference ``entry`` again."""

    def __init__(self, root: Path, entry: dict[str, Any]) -> None:
        self.root, self.entry, self.fired = root, entry, False

    def counter(self, desc: str, total: int | None = None, unit: str = "it") -> Counter:
        outer = self

        class _C(NullCounter):
            def close(self) -> None:
                if desc == "remove" and not outer.fired:
                    outer.fired = True
                    add_entries(outer.root, outer.entry)

        return _C()


@pytest.mark.parametrize("trash", [False, True])
def test_a_plain_writer_referencing_a_removed_blob_is_a_lost_race(layout_dir: Path, trash: bool) -> None:
    b = LayoutBuilder(layout_dir)
    b.image("keep", [b"kept"])
    gone = b.manifest([b"garbage layer"])  # unreachable: the sweep removes it
    b.save()
    age(layout_dir)
    writer = _RewriteAfterRemoval(layout_dir, entry_for(gone, "back"))
    out = sweep_layout(Layout.open(LocalStorage(layout_dir)), SweepOptions(grace=0),
                       RunOptions(jobs=2, trash=trash), progress=writer)
    assert out.error is not None and out.error.exit_code == LOST_RACE, out.error
    message = str(out.error)
    assert "this run removed it" in message and gone["digest"].split(":")[1] in message
    races = read_records(Layout(LocalStorage(layout_dir)), "race")
    assert any(gone["digest"] in r.get("raced", []) for r in races), races
    (record,) = read_records(Layout(LocalStorage(layout_dir)), "sweep")
    assert gone["digest"] in record["result"]["raced"]
    if trash:
        assert out.trash_run is not None and f"ocigc trash restore {layout_dir} {out.trash_run}" in message
        r = run(["trash", "restore", layout_dir, out.trash_run])
        assert r.code == OK, r
        assert run(["check", layout_dir]).code == OK
    else:
        assert "trash" in message  # says how to keep such blobs restorable next time


def test_a_stale_index_snapshot_bringing_a_deleted_tag_back_is_a_lost_race(layout_dir: Path) -> None:
    """A plain writer writes back the index.json it read before the delete: the deleted tag returns,
    dangling. The delete's verification says so (exit 3, race record) instead of exiting 0."""
    from ocigc.gc.plan import DeleteOptions
    from ocigc.gc.run import delete_refs
    from ocigc.oci.refs import parse_reference

    b = LayoutBuilder(layout_dir)
    b.image("keep", [b"kept"])
    old = b.image("old", [b"old layer"])
    b.save()
    writer = _RewriteAfterRemoval(layout_dir, entry_for(old, "old"))
    out = delete_refs(Layout.open(LocalStorage(layout_dir)), [parse_reference(f"{layout_dir}:old")], DeleteOptions(),
                      RunOptions(jobs=2), progress=writer)
    assert writer.fired
    assert out.error is not None and out.error.exit_code == LOST_RACE, out.error
    assert old["digest"].split(":")[1] in str(out.error)
    assert read_records(Layout(LocalStorage(layout_dir)), "race")
    (record,) = read_records(Layout(LocalStorage(layout_dir)), "delete")
    assert old["digest"] in record["result"]["raced"]


def test_cli_reports_the_race_with_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through the CLI: the hook is the library's disposer, swapped in for the run."""
    import ocigc.gc.run as gc_mod
    from ocigc.gc.apply import remove_file

    b = LayoutBuilder(tmp_path)
    b.image("keep", [b"kept"])
    gone = b.manifest([b"garbage layer"])
    b.save()
    age(tmp_path)
    fired: list[str] = []

    def dispose(layout: Layout, rel: str) -> bool:
        ok = remove_file(layout, rel)
        if not fired:
            fired.append(rel)
            add_entries(tmp_path, entry_for(gone, "back"))
        return ok

    monkeypatch.setattr(gc_mod.RunOptions, "__init__", _with_dispose(gc_mod.RunOptions.__init__, dispose))
    r = run(["sweep", tmp_path, "--grace", "0s"])
    assert r.code == LOST_RACE, r
    assert "warning" in r.stdout and "this run removed it" in r.stderr, r
    assert read_records(Layout(LocalStorage(tmp_path)), "race")


def _with_dispose(init: Any, dispose: Any) -> Any:
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["dispose"] = dispose
        init(self, *args, **kwargs)

    return wrapped


def _children(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    doc = json.loads(blob_path(root, manifest["digest"]).read_bytes())
    return [doc["config"], *doc["layers"]]


# --- (7) migrate: a foreign layer absent from the source is not copied; the manifest goes as is ---------
def test_migrate_copies_a_manifest_with_an_absent_foreign_layer_as_is(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _, foreign, _ = skopeo_like(src)
    r = run(["migrate", src, dst])
    assert r.code == OK, r
    assert f"foreign layer {foreign} is not in the source" in r.stdout + r.stderr, r
    tags = {m["annotations"][REF_NAME] for m in json.loads(index_bytes(dst))["manifests"]}
    assert tags == {"win", "nd"}
    assert not blob_path(dst, foreign).exists()
    r = run(["check", dst, "--json"])
    assert r.code == OK, r
    assert foreign in {p.get("digest") for p in r.json()["layouts"][0]["problems"] if p["code"] == "foreign-layer"}


def test_migrate_to_a_registry_with_an_absent_foreign_layer(tmp_path: Path, registry: Any) -> None:
    """docker-registry 2.8 in its default configuration refuses a manifest whose layer has urls and is
    not stored ("invalid URL on layer", "blob unknown"): migrate says beforehand that it copies the
    manifest as is, and the refusal is the registry's error, not a silent loss."""
    src = tmp_path / "src"
    _, foreign, _ = skopeo_like(src)
    dry = run(["migrate", src, f"{registry.host}/foreign-{os.getpid()}", "--plain-http", "--dry-run"])
    assert dry.code == OK, dry
    assert f"foreign layer {foreign} is not in the source" in dry.stdout and "may refuse" in dry.stdout, dry
    assert "2 foreign not in the source" in dry.stdout, dry  # the Docker one and the titled OCI one
    r = run(["migrate", src, f"{registry.host}/foreign-{os.getpid()}", "--plain-http", "--json"])
    assert r.code != OK, r
    assert any(n.startswith(f"foreign layer {foreign}") for n in r.json()["repositories"][0]["notes"]), r
    assert "PUT manifest" in r.stderr, r


# --- property: after a sweep, every young manifest still present can be tagged -----------------------
def _naive_closure(root: Path, digest: str) -> set[str]:
    stack, seen = [digest], set()
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        p = blob_path(root, d)
        if not p.exists():
            continue
        try:
            doc = json.loads(p.read_bytes())
        except ValueError:
            continue
        if not isinstance(doc, dict) or "schemaVersion" not in doc:
            continue
        kids = list(doc.get("manifests") or []) + list(doc.get("layers") or []) + list(doc.get("blobs") or [])
        if isinstance(doc.get("config"), dict):
            kids.append(doc["config"])
        stack.extend(k["digest"] for k in kids)
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), young_share=st.floats(0.05, 0.6))
def test_property_every_young_manifest_keeps_its_closure(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                                         young_share: float) -> None:
    import random

    root = tmp_path_factory.mktemp("prop")
    random_layout(root, seed)
    rng = random.Random(seed)
    age(root, 7200)
    young: set[str] = set()
    for p in (root / "blobs" / "sha256").iterdir():
        if rng.random() < young_share:
            _age_file(p, 60)
            young.add(f"sha256:{p.name}")
    out = sweep_layout(Layout.open(LocalStorage(root)), SweepOptions(), RunOptions(jobs=2))
    assert out.error is None, out.error
    here = present(root)
    for d in young & here:
        missing = {c for c in _naive_closure(root, d) if c not in here}
        assert not missing, f"young {d} lost {missing}"
