"""``ocigc delete`` and ``ocigc sweep`` end to end: in-process (CliRunner) and as the installed
script, on local disk and on a real s3fs mount (the harness's ``layout_dir``). Asserts what users
rely on: which tags remain, that the removed digests are exactly the ones no remaining root
reaches (EXPECT.json), that a dry run prints the plan the real run executes and changes nothing,
the documented JSON shapes and exit codes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness.fixtures import S3FS_DIRS
from tests.kit.cli import ERROR, MODES, OK, USAGE, Result, run
from tests.kit.layouts import LAYOUTS, LayoutBuilder, copy_layout, facts, random_layout
from tests.kit.tree import age, closure, index_tags, present, reachable, snapshot


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


#: local disk in-process and as the script; the s3fs mount in-process only (bounded run time).
WHERE = pytest.mark.parametrize(("layout_dir", "mode"),
                                [("local", "runner"), ("local", "proc"), *((d, "runner") for d in S3FS_DIRS)],
                                indirect=["layout_dir"])


def fixture_copy(name: str, dst: Path, old: bool = True) -> Path:
    copy_layout(LAYOUTS / name, dst)
    (dst / "EXPECT.json").unlink()  # not part of the layout (and not a leftover): keep the tree clean
    if old:
        age(dst)
    return dst


def outcome(r: Result, index: int = 0) -> dict[str, Any]:
    return r.json()["layouts"][index]  # type: ignore[no-any-return]


def removed(r: Result) -> set[str]:
    return {b["digest"] for lay in r.json()["layouts"] for b in (lay["result"] or {}).get("removed", [])}


def planned(r: Result) -> set[str]:
    return {b["digest"] for lay in r.json()["layouts"] if lay["plan"]
            for b in [*lay["plan"]["remove_manifests"], *lay["plan"]["remove_blobs"]]}


def assert_clean(root: Path) -> None:
    """No dangling reference (independent walk) and ``ocigc check`` agrees."""
    missing = reachable(root) - present(root)
    assert not missing, missing
    r = run(["check", "--json", root])
    assert r.code == OK, r


# --- JSON shapes (docs/cli.md) ---------------------------------------------------------------------
PLAN_KEYS = {"command": str, "layout": str, "location": str, "index_fingerprint": str, "remove_entries": list,
             "remove_manifests": list, "remove_blobs": list, "remove_files": list, "kept": list,
             "kept_files": list, "reported": list, "notes": list, "bytes_reclaimed": int}
RESULT_KEYS = {"run": str, "removed_entries": int, "removed": list, "removed_files": list, "skipped": list,
               "failed": list, "bytes_removed": int, "index_before": str, "index_after": str, "races": list}
BLOB_KEYS = {"digest": str, "kind": str, "reason": str}


def assert_shape(doc: dict[str, Any], command: str, dry_run: bool) -> None:
    assert doc["command"] == command and isinstance(doc["exit_code"], int)
    for lay in doc["layouts"]:
        assert {"layout", "location", "dry_run", "plan", "result", "error", "exit_code", "declined"} <= set(lay)
        assert lay["dry_run"] is dry_run and isinstance(lay["declined"], bool)
        plan = lay["plan"]
        if plan is not None:
            for key, typ in PLAN_KEYS.items():
                assert isinstance(plan[key], typ), key
            assert plan["command"] == command
            for b in [*plan["remove_manifests"], *plan["remove_blobs"], *plan["kept"]]:
                for key, typ in BLOB_KEYS.items():
                    assert isinstance(b[key], typ), key
                assert b["size"] is None or isinstance(b["size"], int)
            for e in plan["remove_entries"]:
                assert {"position", "digest", "tag", "reason"} <= set(e)
            for f in [*plan["remove_files"], *plan["kept_files"]]:
                assert {"path", "size", "age_seconds", "reason"} <= set(f)
        if dry_run or lay["error"] or not plan or not (plan["remove_entries"] or plan["remove_manifests"]
                                                          or plan["remove_blobs"] or plan["remove_files"]):
            assert lay["result"] is None
        else:
            for key, typ in RESULT_KEYS.items():
                assert isinstance(lay["result"][key], typ), key
            assert isinstance(lay["result"]["seconds"], int | float)


# --- delete -------------------------------------------------------------------------------------------
@WHERE
def test_delete_tag_removes_exactly_what_no_other_tag_reaches(layout_dir: Path, mode: str) -> None:
    lay = fixture_copy("umoci-tags", layout_dir)
    f = facts(LAYOUTS / "umoci-tags")
    [v2] = f["tags"]["v2"]
    others = [t["digest"] for name, ts in f["tags"].items() if name != "v2" for t in ts]
    expected = closure(lay, [v2["digest"]]) - closure(lay, others)
    assert len(expected) == 3  # the v2 manifest, its config, layer C
    dry = run(["delete", "--dry-run", "--json", f"{lay}:v2"], mode)
    assert dry.code == OK, dry
    assert_shape(dry.json(), "delete", dry_run=True)
    assert planned(dry) == expected
    r = run(["delete", "--yes", "--json", f"{lay}:v2"], mode)
    assert r.code == OK, r
    assert_shape(r.json(), "delete", dry_run=False)
    assert removed(r) == expected == planned(r)
    [entry] = outcome(r)["plan"]["remove_entries"]
    assert entry["tag"] == "v2" and entry["digest"] == v2["digest"]
    assert index_tags(lay) == ["base", "v1"]
    assert set(f["unreachable"]) <= present(lay)  # delete leaves older garbage to sweep
    assert_clean(lay)


def test_delete_dry_run_is_the_plan_and_changes_nothing(tmp_path: Path, mode: str) -> None:
    lay = fixture_copy("oras-artifact", tmp_path / "lay")
    before = snapshot(lay)
    dry = run(["delete", "-n", "--json", f"{lay}:v1"], mode)
    human = run(["delete", "--dry-run", f"{lay}:v1"])
    assert dry.code == OK and human.code == OK
    assert snapshot(lay) == before  # not a byte, not a lock file, not a timestamp
    assert not (lay / ".ocigc").exists()
    assert "[dry run: nothing changed]" in human.stdout
    real = run(["delete", "--yes", "--json", f"{lay}:v1"])
    strip = ("created", "executed", "index_fingerprint")
    assert ({k: v for k, v in outcome(dry)["plan"].items() if k not in strip}
            == {k: v for k, v in outcome(real)["plan"].items() if k not in strip})
    assert removed(real) == planned(dry)


def test_delete_cascades_to_referrers_unless_kept(tmp_path: Path) -> None:
    f = facts(LAYOUTS / "oras-artifact")
    [v1] = f["tags"]["v1"]
    a = fixture_copy("oras-artifact", tmp_path / "a")
    r = run(["delete", "--yes", "--json", f"{a}:v1"])
    assert r.code == OK
    assert removed(r) == set(f["reachable"])  # the image, the SBOM, the signature on the SBOM
    assert json.loads((a / "index.json").read_text())["manifests"] == []
    reasons = {e["digest"]: e["reason"] for e in outcome(r)["plan"]["remove_entries"]}
    assert all(ref in reasons and "referrer" in reasons[ref] for ref in f["referrers"])
    b = fixture_copy("oras-artifact", tmp_path / "b")
    r = run(["delete", "--yes", "--keep-referrers", "--json", f"{b}:v1"])
    assert r.code == OK
    assert index_tags(b) == [None, None]  # both referrers stay index.json entries
    assert v1["digest"] in removed(r)  # a referrer does not keep its subject alive
    assert set(f["referrers"]) <= present(b)
    assert closure(b, list(f["referrers"])) <= present(b)
    assert_clean(b)


def test_delete_several_refs_and_layouts_in_one_call(tmp_path: Path) -> None:
    a = fixture_copy("skopeo-copy", tmp_path / "a")
    b = fixture_copy("refnames", tmp_path / "b")
    fa = facts(LAYOUTS / "skopeo-copy")
    # latest and stable name one digest: deleting both removes its exclusive blobs; dup names two entries
    r = run(["delete", "--yes", "--json", f"{a}:latest", f"{a}:stable", f"{b}:dup"])
    assert r.code == OK, r
    assert [lay["location"] for lay in r.json()["layouts"]] == [str(a), str(b)]
    assert index_tags(a) == ["v2"]
    [latest] = fa["tags"]["latest"]
    assert removed(r) >= closure(a, [latest["digest"]]) - closure(a, [fa["tags"]["v2"][0]["digest"]]) - present(a)
    assert "dup" not in index_tags(b)
    fb = facts(LAYOUTS / "refnames")
    # the two manifests named dup: one is also registry.example.com:5000/team/app:v1, so it stays
    kept = {t["digest"] for t in fb["tags"]["registry.example.com:5000/team/app:v1"]}
    gone = {t["digest"] for t in fb["tags"]["dup"]} - kept
    assert gone <= removed(r) and kept <= present(b)
    assert_clean(a)
    assert_clean(b)


def test_delete_by_digest_and_platform_refusal(tmp_path: Path) -> None:
    f = facts(LAYOUTS / "multiarch")
    lay = fixture_copy("multiarch", tmp_path / "m")
    [multi] = f["tags"]["multi"]
    platforms = json.loads((lay / "blobs" / "sha256" / multi["digest"].split(":")[1]).read_text())["manifests"]
    arm64 = next(p["digest"] for p in platforms if p["platform"]["architecture"] == "arm64")
    amd64 = next(p["digest"] for p in platforms if p["platform"]["architecture"] == "amd64")
    before = snapshot(lay, control=False)
    # one platform of a live multi-arch index: refused, nothing changed
    r = run(["delete", "--yes", f"{lay}@{amd64}"])
    assert r.code == ERROR and len(r.error_lines) == 1
    assert "listed by index" in r.error_lines[0] and amd64.split(":")[1] in r.error_lines[0]
    assert snapshot(lay, control=False) == before
    # --force drops only arm64's own (untagged) entry; its blob stays while the index lists it
    r = run(["delete", "--yes", "--force", "--json", f"{lay}@{arm64}"])
    assert r.code == OK, r
    assert removed(r) == set() and index_tags(lay) == ["multi", "nested"]
    assert arm64 in present(lay)
    # deleting multi keeps it (nested lists it); deleting nested too removes the whole tree
    r = run(["delete", "--yes", "--json", f"{lay}:multi"])
    assert r.code == OK and removed(r) == set()
    assert any("still reachable" in n for n in outcome(r)["plan"]["notes"])
    r = run(["delete", "--yes", "--json", f"{lay}@{f['tags']['nested'][0]['digest']}"])
    assert r.code == OK and removed(r) == set(f["reachable"]) and present(lay) == set()


def test_delete_errors_change_nothing(tmp_path: Path, mode: str) -> None:
    lay = fixture_copy("skopeo-copy", tmp_path / "s")
    before = snapshot(lay, control=False)
    r = run(["delete", "--yes", f"{lay}:nope"], mode)
    assert r.code == ERROR and len(r.error_lines) == 1 and "'nope'" in r.error_lines[0]
    assert str(lay) in r.error_lines[0] and "in index.json" in r.error_lines[0]
    # one bad reference in a call: the whole layout's plan is refused
    r = run(["delete", "--yes", f"{lay}:latest", f"{lay}:nope"])
    assert r.code == ERROR and index_tags(lay) == ["latest", "stable", "v2"]
    absent = "sha256:" + "1" * 64
    assert run(["delete", "--yes", f"{lay}@{absent}"]).code == ERROR
    assert snapshot(lay, control=False) == before
    for args in ([str(lay)], [f"{lay}@sha256:xyz"], [f"{lay}:"], []):
        r = run(["delete", "--yes", *args])
        assert r.code == USAGE, (args, r)
    assert snapshot(lay, control=False) == before


# --- sweep -------------------------------------------------------------------------------------------
@WHERE
def test_sweep_removes_the_expect_unreachable_set(layout_dir: Path, mode: str) -> None:
    lay = fixture_copy("garbage", layout_dir)
    f = facts(LAYOUTS / "garbage")
    dry = run(["sweep", "--grace", "0", "--dry-run", "--json", lay], mode)
    assert dry.code == OK, dry
    assert_shape(dry.json(), "sweep", dry_run=True)
    assert planned(dry) == set(f["unreachable"])
    r = run(["sweep", "--grace", "0", "--yes", "--json", lay], mode)
    assert r.code == OK, r
    assert_shape(r.json(), "sweep", dry_run=False)
    res = outcome(r)["result"]
    assert removed(r) == set(f["unreachable"])
    assert sorted(res["removed_files"]) == sorted(f["leftovers"])
    # bytes removed add up to the plan's (blobs and the writers' leftovers alike; issue 18, item 21)
    blob_bytes = sum(f["blob_files"][d]["size"] for d in f["unreachable"])
    assert res["bytes_removed"] - res["bytes_removed_files"] == blob_bytes
    assert res["bytes_removed_files"] > 0 and res["bytes_removed"] == outcome(dry)["plan"]["bytes_reclaimed"]
    assert present(lay) == set(f["reachable"])
    for p in set(f["non_digest_files"]) - set(f["leftovers"]):  # reported, never deleted
        assert (lay / p).exists()
        assert any(p in line for line in outcome(r)["plan"]["reported"])
    assert not (lay / "ingest").exists() and not (lay / ".umoci-1234567890").exists()
    assert_clean(lay)
    again = run(["sweep", "--grace", "0", "--json", lay])
    assert again.code == OK and planned(again) == set() and outcome(again)["result"] is None


def test_sweep_grace_keeps_young_blobs(layout_dir: Path) -> None:
    lay = fixture_copy("umoci-tags", layout_dir, old=False)
    f = facts(LAYOUTS / "umoci-tags")
    now = time.time()
    for d in f["unreachable"]:
        alg, hexd = d.split(":")
        os.utime(lay / "blobs" / alg / hexd, (now, now))
    r = run(["sweep", "--json", lay])  # default grace: 1h
    assert r.code == OK and removed(r) == set()
    kept = outcome(r)["plan"]["kept"]
    assert {k["digest"] for k in kept} == set(f["unreachable"])
    assert all("grace" in k["reason"] for k in kept)
    assert run(["sweep", "--grace", "2h", "--json", lay]).json()["layouts"][0]["result"] is None
    r = run(["sweep", "--grace", "0s", "--json", lay])
    assert removed(r) == set(f["unreachable"])
    for bad in ("soon", "-1h", "1y"):
        r = run(["sweep", "--grace", bad, lay])
        assert r.code == USAGE and len(r.error_lines) == 1 and bad in r.error_lines[0]


def test_sweep_untagged(tmp_path: Path) -> None:
    lay = fixture_copy("refnames", tmp_path / "r")
    f = facts(LAYOUTS / "refnames")
    assert run(["sweep", "--grace", "0", "--json", lay]).json()["layouts"][0]["plan"]["remove_entries"] == []
    r = run(["sweep", "--grace", "0", "--untagged", "--json", lay])
    assert r.code == OK
    assert {e["digest"] for e in outcome(r)["plan"]["remove_entries"]} == set(f["untagged_sweep_removes"])
    gone = closure(LAYOUTS / "refnames", f["untagged_sweep_removes"]) - closure(
        LAYOUTS / "refnames", [t["digest"] for ts in f["tags"].values() for t in ts])
    assert removed(r) == gone
    assert [t for t in index_tags(lay) if t is None] == [None]  # the untagged entry of a tagged digest stays
    assert_clean(lay)
    # referrers of a live subject are never removed by --untagged
    art = fixture_copy("oras-artifact", tmp_path / "a")
    r = run(["sweep", "--grace", "0", "--untagged", "--json", art])
    assert r.code == OK and planned(r) == set() and index_tags(art) == ["v1", None, None]


@pytest.mark.parametrize("name", ["sha512", "umoci-emptied", "docker-types", "oci-artifact-manifest", "multiarch"])
def test_sweep_fixture_layouts(tmp_path: Path, name: str) -> None:
    lay = fixture_copy(name, tmp_path / name)
    f = facts(LAYOUTS / name)
    r = run(["sweep", "--grace", "0", "--jobs", "3", "--json", lay])
    assert r.code == OK, r
    assert removed(r) == set(f["unreachable"])
    assert present(lay) == set(f["reachable"])
    assert_clean(lay)


def test_sweep_jobs_do_not_change_the_result(tmp_path: Path) -> None:
    results = []
    for jobs in ("1", "16"):
        lay = tmp_path / f"j{jobs}"
        random_layout(lay, seed=7, n_layers=12, n_images=10)
        for i in range(30):
            LayoutBuilder(lay).blob(f"junk-{i}".encode(), "application/octet-stream")
        age(lay)
        r = run(["sweep", "--grace", "0", "--jobs", jobs, "--json", lay])
        assert r.code == OK
        results.append((removed(r), present(lay)))
    assert results[0] == results[1]
    assert run(["sweep", "--jobs", "0", str(tmp_path)]).code == USAGE


def test_sweep_root_goes_on_after_a_broken_layout(tmp_path: Path, mode: str) -> None:
    good = fixture_copy("umoci-tags", tmp_path / "team" / "good")
    fixture_copy("skopeo-copy", tmp_path / "broken")
    (tmp_path / "broken" / "index.json").write_bytes(b"")
    broken_before = snapshot(tmp_path / "broken", control=False)
    r = run(["sweep", "--grace", "0", "--json", tmp_path], mode)
    assert r.code == ERROR
    by = {lay["layout"]: lay for lay in r.json()["layouts"]}
    assert set(by) == {"broken", "team/good"}
    assert by["broken"]["exit_code"] == ERROR and "index.json" in by["broken"]["error"]
    assert {b["digest"] for b in by["team/good"]["result"]["removed"]} == set(facts(LAYOUTS / "umoci-tags")
                                                                                ["unreachable"])
    assert len(r.error_lines) == 1 and str(tmp_path / "broken" / "index.json") in r.error_lines[0]
    assert snapshot(tmp_path / "broken", control=False) == broken_before
    assert_clean(good)


def test_sweep_human_output_quiet_and_verbose(tmp_path: Path, mode: str) -> None:
    lay = tmp_path / "many"
    b = LayoutBuilder(lay)
    b.image("keep", [b"layer"])
    junk = [b.blob(f"junk-{i}".encode(), "application/octet-stream")["digest"] for i in range(25)]
    b.save()
    age(lay)
    short = run(["sweep", "--grace", "0", "--dry-run", lay], mode)
    assert short.code == OK and short.stderr == ""
    assert "... 5 more (-v shows all" in short.stdout
    assert "[dry run: nothing changed]" in short.stdout
    full = run(["sweep", "--grace", "0", "--dry-run", "-v", lay])
    assert all(d in full.stdout for d in junk) and "more (-v" not in full.stdout
    quiet = run(["sweep", "--grace", "0", "--quiet", lay], mode)
    assert quiet.code == OK and quiet.stdout == "" and quiet.stderr == ""
    assert present(lay).isdisjoint(junk)
    again = run(["-q", "sweep", "--grace", "0", lay])
    assert again.code == OK and again.stdout == ""
    r = run(["sweep", "--grace", "0", lay])
    assert "nothing to remove" in r.stdout


def test_delete_human_output(tmp_path: Path, mode: str) -> None:
    lay = fixture_copy("oras-artifact", tmp_path / "o")
    r = run(["delete", "--yes", f"{lay}:v1"], mode)
    assert r.code == OK and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith("delete ")
    assert sum(1 for line in lines if line.strip().startswith("drop ")) == 3
    assert sum(1 for line in lines if line.strip().startswith("remove ")) == 7
    assert any(line.strip().startswith("done: removed 3 entries, 7 blobs") for line in lines)
    lay2 = fixture_copy("oras-artifact", tmp_path / "q")
    r = run(["delete", "--yes", "-q", f"{lay2}:v1"], mode)
    assert r.code == OK and r.stdout == "" and r.stderr == ""


# --- a property, through the CLI's JSON ------------------------------------------------------------
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), untagged=st.booleans())
def test_cli_sweep_matches_an_independent_walk(tmp_path: Path, seed: int, untagged: bool) -> None:
    lay = tmp_path / f"r{seed}-{untagged}"
    if lay.exists():
        return
    random_layout(lay, seed)
    age(lay)
    before_reach = reachable(lay)
    present_before = present(lay)
    args = ["sweep", "--grace", "0", "--json", *(["--untagged"] if untagged else []), lay]
    r = run(args)
    assert r.code == OK, r
    after_reach = reachable(lay)
    if not untagged:
        assert after_reach == before_reach
    assert not (after_reach - present(lay)), "dangling reference after a sweep"
    assert present(lay) == after_reach  # and nothing unreachable is left
    assert removed(r) == present_before - present(lay)
