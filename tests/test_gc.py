"""delete and sweep: the semantics of docs/design.md, properties and crash safety (library level)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocigc.errors import IntegrityError, LostRace, ReferenceNotFound, UnsafeToModify
from ocigc.gc.plan import DeleteOptions, SweepOptions
from ocigc.gc.run import RunOptions, delete_refs, sweep_layout
from ocigc.layout.layout import Layout
from ocigc.oci.refs import parse_reference
from ocigc.storage.local import LocalStorage
from tests.kit.layouts import LayoutBuilder, blob_path, random_layout
from tests.kit.tree import age, present, reachable, snapshot

RUN = RunOptions(jobs=4)
DRY = RunOptions(jobs=4, dry_run=True)
NOW_GRACE = SweepOptions(grace=0)


def open_layout(root: Path) -> Layout:
    return Layout.open(LocalStorage(root))


def sweep(root: Path, opts: SweepOptions = NOW_GRACE, run: RunOptions = RUN):  # type: ignore[no-untyped-def]
    out = sweep_layout(open_layout(root), opts, run)
    if out.error:
        raise out.error
    return out


def delete(root: Path, *refs: str, opts: DeleteOptions | None = None, run: RunOptions = RUN):  # type: ignore[no-untyped-def]
    out = delete_refs(open_layout(root), [parse_reference(f"{root}{r}") for r in refs], opts or DeleteOptions(), run)
    if out.error:
        raise out.error
    return out


def tags(root: Path) -> list[str]:
    doc = json.loads((root / "index.json").read_text())
    return [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in doc["manifests"]]


def assert_no_dangling(root: Path) -> None:
    reach = reachable(root)
    missing = {d for d in reach if not blob_path(root, d).exists()}
    assert not missing, f"dangling references: {missing}"


# --- sweep --------------------------------------------------------------------------------------
def test_sweep_removes_only_unreachable(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    keep = b.image("v1", [b"shared", b"mine"])
    orphan = b.manifest([b"shared", b"orphan-layer"], config=b'{"o":1}')
    stray = b.blob(b"stray", "application/octet-stream")
    b.save()
    age(layout_dir)
    out = sweep(layout_dir)
    removed = {r.digest for r in out.result.removed}
    assert orphan["digest"] in removed and stray["digest"] in removed
    assert keep["digest"] not in removed
    assert_no_dangling(layout_dir)
    assert blob_path(layout_dir, b.blob(b"shared", "x", write=False)["digest"]).exists()


def test_grace_period_keeps_young_blobs(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    b.image("v1", [b"a"])
    young = b.blob(b"just uploaded", "application/octet-stream")
    b.save()
    out = sweep(layout_dir, SweepOptions(grace=3600))
    assert out.plan.empty and [k.digest for k in out.plan.kept] == [young["digest"]]
    assert "grace" in out.plan.kept[0].reason
    assert blob_path(layout_dir, young["digest"]).exists()


def test_dry_run_changes_nothing(layout_dir: Path) -> None:
    random_layout(layout_dir, 11)
    age(layout_dir)
    before = snapshot(layout_dir)
    out = sweep(layout_dir, SweepOptions(grace=0, untagged=True), DRY)
    assert out.result is None and not out.plan.empty
    assert snapshot(layout_dir) == before
    out = delete(layout_dir, ":" + next(t for t in tags(layout_dir) if t), run=DRY)
    assert snapshot(layout_dir) == before


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**31), st.booleans())
def test_sweep_properties(seed: int, untagged: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_layout(root, seed)
        age(root)
        reach_before = reachable(root) & present(root)
        tagged_reach = None
        sweep(root, SweepOptions(grace=0, untagged=untagged))
        assert_no_dangling(root)
        if not untagged:
            assert reach_before <= present(root)  # nothing reachable was removed
        assert present(root) <= reachable(root) | set()  # no garbage left
        again = sweep(root, SweepOptions(grace=0, untagged=untagged))
        assert again.plan.empty, "a second sweep must remove nothing"
        del tagged_reach


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**31), st.data())
def test_delete_properties(seed: int, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        random_layout(root, seed)
        names = sorted({t for t in tags(root) if t})
        if not names:
            return
        victim = data.draw(st.sampled_from(names))
        out = delete(root, f":{victim}", opts=DeleteOptions(force=True))
        assert victim not in tags(root)
        assert_no_dangling(root)
        # whatever the remaining roots reach is still there
        assert reachable(root) <= present(root) | {
            d for d in reachable(root) if not blob_path(root, d).exists()}
        assert out.result is not None


# --- delete -------------------------------------------------------------------------------------
def test_delete_tag_removes_manifest_blobs_and_referrers(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    hello = b.image("latest", [b"hello", b"shared"])
    other = b.image("other", [b"shared"])
    sig = b.referrer(hello, b"signature")
    sbom = b.referrer(sig, b"sig-of-sig")
    b.add(sig, None)
    b.add(sbom, None)
    b.save()
    out = delete(layout_dir, ":latest")
    assert tags(layout_dir) == ["other"]
    removed = {r.digest for r in out.result.removed}
    assert {hello["digest"], sig["digest"], sbom["digest"]} <= removed
    assert blob_path(layout_dir, other["digest"]).exists()
    assert blob_path(layout_dir, b.blob(b"shared", "x", write=False)["digest"]).exists()
    assert not blob_path(layout_dir, b.blob(b"hello", "x", write=False)["digest"]).exists()
    assert_no_dangling(layout_dir)
    order = [r.digest for r in out.result.removed]  # manifests top-down, then blobs
    assert order.index(hello["digest"]) < order.index(b.blob(b"hello", "x", write=False)["digest"])
    assert max(order.index(d) for d in (hello["digest"], sig["digest"], sbom["digest"])) < min(
        order.index(r.digest) for r in out.result.removed if r.kind in ("config", "layer"))


def test_keep_referrers(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    hello = b.image("latest", [b"hello"])
    sig = b.referrer(hello, b"signature")
    b.add(sig, None)
    b.save()
    delete(tmp_path, ":latest", opts=DeleteOptions(keep_referrers=True))
    assert tags(tmp_path) == [None]
    assert blob_path(tmp_path, sig["digest"]).exists()


def test_delete_tag_of_shared_manifest_keeps_it(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    m = b.image("a", [b"x"])
    b.add(m, "b")
    b.save()
    out = delete(tmp_path, ":a")
    assert tags(tmp_path) == ["b"] and not out.result.removed
    assert blob_path(tmp_path, m["digest"]).exists()


def test_delete_untagged_entries_of_the_deleted_manifest(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    m = b.image("a", [b"x"])
    b.add(m, None)  # oras writes an untagged entry too
    b.save()
    delete(tmp_path, ":a")
    assert tags(tmp_path) == []
    assert not blob_path(tmp_path, m["digest"]).exists()


def test_multiarch_platform_delete_refused_unless_forced(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    amd = b.manifest([b"amd64"], b'{"architecture":"amd64"}')
    arm = b.manifest([b"arm64"], b'{"architecture":"arm64"}')
    idx = b.index([{k: d[k] for k in ("mediaType", "digest", "size")} for d in (amd, arm)])
    b.add(idx, "multi")
    b.add(amd, None)
    b.save()
    with pytest.raises(UnsafeToModify, match="listed by index"):
        delete(layout_dir, "@" + amd["digest"])
    assert tags(layout_dir) == ["multi", None]
    delete(layout_dir, "@" + amd["digest"], opts=DeleteOptions(force=True))
    assert tags(layout_dir) == ["multi"] and blob_path(layout_dir, amd["digest"]).exists()
    assert_no_dangling(layout_dir)


def test_deleting_one_tag_of_an_index_keeps_platforms_of_other_tags(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    amd = b.manifest([b"amd64"], b'{"architecture":"amd64"}')
    arm = b.manifest([b"arm64"], b'{"architecture":"arm64"}')
    short = [{k: d[k] for k in ("mediaType", "digest", "size")} for d in (amd, arm)]
    i1 = b.index(short)
    i2 = b.index(short[:1])
    b.add(i1, "v1")
    b.add(i2, "v2")
    b.save()
    delete(tmp_path, ":v1")
    assert blob_path(tmp_path, amd["digest"]).exists() and not blob_path(tmp_path, arm["digest"]).exists()
    assert_no_dangling(tmp_path)


def test_untagged_sweep_never_removes_platform_of_tagged_index(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    amd = b.manifest([b"amd64"], b'{"architecture":"amd64"}')
    idx = b.index([{k: amd[k] for k in ("mediaType", "digest", "size")}])
    b.add(idx, "multi")
    b.add(amd, None)
    sig = b.referrer(idx, b"sig")
    b.add(sig, None)
    lonely = b.manifest([b"lonely"])
    b.add(lonely, None)
    b.save()
    age(layout_dir)
    out = sweep(layout_dir, SweepOptions(grace=0, untagged=True))
    dropped = {e.digest for e in out.plan.remove_entries}
    assert dropped == {lonely["digest"]}
    assert blob_path(layout_dir, amd["digest"]).exists() and blob_path(layout_dir, sig["digest"]).exists()


def test_missing_reference_deletes_nothing(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    b.image("a", [b"x"])
    b.image("b", [b"y"])
    b.save()
    before = snapshot(layout_dir)
    with pytest.raises(ReferenceNotFound):
        delete(layout_dir, ":a", ":nope")
    assert snapshot(layout_dir) == before


def test_fail_closed_on_corrupt_reachable_manifest(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    m = b.image("a", [b"x"])
    b.blob(b"garbage", "application/octet-stream")
    b.save()
    age(layout_dir)
    p = blob_path(layout_dir, m["digest"])
    p.write_bytes(p.read_bytes()[:10])
    before = snapshot(layout_dir)
    with pytest.raises(UnsafeToModify, match="invalid JSON"):
        sweep(layout_dir)
    (layout_dir / p.name).unlink(missing_ok=True)
    assert snapshot(layout_dir) == before


def test_fail_closed_on_missing_reachable_manifest(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    m = b.image("a", [b"x"])
    b.save()
    age(tmp_path)
    blob_path(tmp_path, m["digest"]).unlink()
    with pytest.raises(IntegrityError):
        sweep(tmp_path)
    assert blob_path(tmp_path, b.blob(b"x", "x", write=False)["digest"]).exists()


def test_leftovers_and_foreign_files(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    b.image("a", [b"x"])
    b.save()
    (layout_dir / "ingest").mkdir()
    (layout_dir / "ingest" / "abc").write_bytes(b"partial")
    (layout_dir / "oci-put-blob12345").write_bytes(b"partial")
    (layout_dir / ".umoci-xyz").mkdir()
    (layout_dir / ".umoci-xyz" / "index-1").write_bytes(b"{}")
    (layout_dir / "blobs" / "sha256" / ("b" * 64 + ".tmp")).write_bytes(b"regclient")
    (layout_dir / "blobs" / "sha256" / "not-a-digest").write_bytes(b"??")
    age(layout_dir)
    fresh = layout_dir / ".ocigc-tmp-fresh"
    fresh.write_bytes(b"in flight")
    out = sweep(layout_dir, SweepOptions(grace=600))
    gone = set(out.result.removed_files)
    assert {"ingest/abc", "oci-put-blob12345", ".umoci-xyz/index-1", f"blobs/sha256/{'b' * 64}.tmp"} <= gone
    assert fresh.exists() and (layout_dir / "blobs" / "sha256" / "not-a-digest").exists()
    assert any("not-a-digest" in r for r in out.plan.reported)
    assert not (layout_dir / "ingest").exists() and not (layout_dir / ".umoci-xyz").exists()


def test_journal_and_backup_written(layout_dir: Path) -> None:
    b = LayoutBuilder(layout_dir)
    b.image("a", [b"x"])
    b.image("b", [b"y"])
    b.save()
    before = (layout_dir / "index.json").read_bytes()
    delete(layout_dir, ":a")
    journal = list((layout_dir / ".ocigc" / "journal").iterdir())
    assert len(journal) == 1
    rec = json.loads(journal[0].read_text())
    assert rec["kind"] == "delete" and rec["result"]["removed_entries"] == 1
    assert rec["result"]["index_before"] != rec["result"]["index_after"]
    backups = list((layout_dir / ".ocigc" / "backup").iterdir())
    assert [p.read_bytes() for p in backups] == [before]


def test_sweep_of_root_goes_on_after_a_broken_layout(layout_dir: Path) -> None:
    from ocigc.layout.discover import open_layouts

    good = LayoutBuilder(layout_dir / "good")
    good.image("a", [b"x"])
    good.blob(b"garbage", "application/octet-stream")
    good.save()
    bad = LayoutBuilder(layout_dir / "team" / "bad")
    m = bad.image("a", [b"x"])
    bad.save()
    blob_path(layout_dir / "team" / "bad", m["digest"]).write_bytes(b"{")
    age(layout_dir)
    outcomes = [sweep_layout(lay, NOW_GRACE, RUN) for lay in open_layouts(LocalStorage(layout_dir))]
    by = {o.layout.name: o for o in outcomes}
    assert set(by) == {"good", "team/bad"}
    assert by["good"].result is not None and len(by["good"].result.removed) == 1
    assert isinstance(by["team/bad"].error, UnsafeToModify)


def test_real_fixtures_sweep_like_the_catalog(tmp_path: Path) -> None:
    """Every real layout: a sweep removes exactly the catalog's unreferenced blobs, and adds no dangling ref."""
    import shutil

    real = Path(__file__).parent.parent / "fixtures" / "real"
    catalog = json.loads((real / "catalog.json").read_text())
    checked = 0
    for name, info in catalog.items():
        stats = info["stats"]
        if not stats["has_oci_layout"]:
            continue
        dst = tmp_path / name
        shutil.copytree(real / name, dst)
        age(dst)
        missing_before = {d for d in reachable(dst) if not blob_path(dst, d).exists()}
        out = sweep_layout(open_layout(dst), NOW_GRACE, RUN)
        missing_after = {d for d in reachable(dst) if not blob_path(dst, d).exists()}
        assert missing_after == missing_before, name
        if stats["referenced_but_missing"]:
            assert out.error is None or isinstance(out.error, IntegrityError), (name, out.error)
            continue
        assert out.error is None, (name, out.error)
        assert {b.digest for b in out.plan.blob_removals} == set(stats["unreferenced_blobs_from_index_walk"]), name
        checked += 1
    assert checked >= 30


def test_delete_index_drops_untagged_platform_entries_nothing_else_keeps(tmp_path: Path) -> None:
    """oras lists each platform manifest as an untagged entry: deleting the index takes them along."""
    b = LayoutBuilder(tmp_path)
    amd = b.manifest([b"amd64"], b'{"architecture":"amd64"}')
    arm = b.manifest([b"arm64"], b'{"architecture":"arm64"}')
    short = [{k: d[k] for k in ("mediaType", "digest", "size")} for d in (amd, arm)]
    i1 = b.index(short)
    i2 = b.index(short[1:])
    b.add(i1, "v1")
    b.add(amd, None)
    b.add(arm, None)
    b.add(i2, "v2")
    b.save()
    out = delete(tmp_path, ":v1")
    assert tags(tmp_path) == [None, "v2"]  # arm64's untagged entry stays: v2 lists it
    reasons = {e.digest: e.reason for e in out.plan.remove_entries}
    assert reasons[amd["digest"]].startswith("untagged child of deleted")
    assert not blob_path(tmp_path, amd["digest"]).exists() and blob_path(tmp_path, arm["digest"]).exists()
    assert_no_dangling(tmp_path)


# --- the verification after a run (a plain writer racing the removals) -----------------------------
def _racing_writer(root: Path, add: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    """A dispose that removes as usual and, at its first call, acts like a plain writer (no locks):
    writes index.json with ``add`` appended."""
    from ocigc.gc.apply import remove_file

    fired: list[str] = []

    def dispose(layout: Layout, rel: str) -> bool:
        gone = remove_file(layout, rel)
        if not fired:
            fired.append(rel)
            doc = json.loads((root / "index.json").read_text())
            doc["manifests"].extend(add)
            (root / "index.json").write_text(json.dumps(doc))
        return gone

    return dispose


def test_verify_fails_when_a_racing_writer_references_a_blob_the_run_removed(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    b.image("keep", [b"kept layer"])
    old = b.image("old", [b"old layer"])
    b.save()
    delete(tmp_path, ":old", run=RUN)  # old's manifest and layer are now garbage ...
    b2 = LayoutBuilder(tmp_path)
    b2.image("keep", [b"kept layer"])
    b2.save()
    old_layer = b.manifest([b"old layer"])  # rewrites the same blobs: they exist again as garbage
    assert old_layer["digest"] == old["digest"]
    # ... and a plain writer tags the old manifest again while the sweep removes it
    entry = {**{k: old[k] for k in ("mediaType", "digest", "size")},
             "annotations": {"org.opencontainers.image.ref.name": "old"}}
    out = sweep_layout(open_layout(tmp_path), NOW_GRACE, RunOptions(jobs=4, dispose=_racing_writer(tmp_path, [entry])))
    # the run removed what index.json now references: a lost race with a plain writer (exit 3), not damage
    assert isinstance(out.error, LostRace) and out.error.exit_code == 3
    assert "this run removed it" in str(out.error)
    records = list((tmp_path / ".ocigc" / "journal").glob("*-race.json"))
    assert records, "the race is journaled"
    assert out.result is not None and old["digest"] in out.result.raced


def test_verify_stats_what_a_racing_writer_added_and_passes_when_it_is_complete(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    b.image("keep", [b"kept layer"])
    b.blob(b"stray", "application/octet-stream")  # something to sweep, so the run applies
    b.save()
    writer = LayoutBuilder(tmp_path)
    new = writer.manifest([b"a new layer"])  # blobs written after the sweep's listing
    entry = {**{k: new[k] for k in ("mediaType", "digest", "size")},
             "annotations": {"org.opencontainers.image.ref.name": "new"}}
    for p in (tmp_path / "blobs" / "sha256").iterdir():  # hide them from the listing: not there yet
        if p.read_bytes() in (b"a new layer",) or p.name == new["digest"].split(":")[1]:
            p.rename(tmp_path / p.name)
    hidden = [p for p in tmp_path.iterdir() if len(p.name) == 64]

    def dispose(layout: Layout, rel: str) -> bool:
        for p in hidden:  # the writer's blobs land, then its index.json entry
            if p.exists():
                p.rename(tmp_path / "blobs" / "sha256" / p.name)
        return _inner(layout, rel)

    _inner = _racing_writer(tmp_path, [entry])
    out = sweep_layout(open_layout(tmp_path), NOW_GRACE, RunOptions(jobs=4, dispose=dispose))
    assert out.error is None, out.error
    assert set(tags(tmp_path)) == {"keep", "new"}
    assert_no_dangling(tmp_path)


def test_verify_catches_a_racing_writer_that_references_a_blob_never_written(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path)
    b.image("keep", [b"kept layer"])
    b.blob(b"stray", "application/octet-stream")
    b.save()
    broken = b.manifest([b"never uploaded"], write_layers=False)
    blob_path(tmp_path, broken["digest"]).unlink()  # never written either: not something the run removed
    entry = {**{k: broken[k] for k in ("mediaType", "digest", "size")},
             "annotations": {"org.opencontainers.image.ref.name": "broken"}}
    out = sweep_layout(open_layout(tmp_path), NOW_GRACE, RunOptions(jobs=4, dispose=_racing_writer(tmp_path, [entry])))
    assert isinstance(out.error, IntegrityError) and out.error.exit_code == 4
    assert "not removed by this run" in str(out.error)
