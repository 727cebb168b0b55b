"""Running unattended: ``sweep --policy --quiet --json-report --log-format``, exit codes, overlapping
runs, ``policy check``; on local disk and on the s3fs mount (the CLI in a subprocess, as cron runs it)."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ocigc.errors import EXIT_LOCK_BUSY
from ocigc.gc.plan import SweepOptions
from ocigc.gc.report import RunReport, write_atomic
from ocigc.gc.run import RunOptions, sweep_layout
from ocigc.gc.runlog import JsonLogFormatter
from ocigc.layout.layout import Layout
from ocigc.storage.local import LocalStorage
from tests.harness.objectstores import STORES
from tests.harness.tools import run_ocigc
from tests.kit.cli import cli, run
from tests.kit.layouts import LayoutBuilder, blob_path
from tests.kit.retention import Img, build
from tests.kit.tree import age, reachable, snapshot

LOCK_BUSY = 75
assert EXIT_LOCK_BUSY == LOCK_BUSY


def ocigc(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
    """``ocigc ARGS`` in-process (stdin is not a terminal): (exit code, stdout, stderr)."""
    return cli(*args)


POLICY = """\
# keep the 2 newest images and anything tagged stable; remove other tags
[defaults]
grace = "0"

[[rule]]
name = "apps"
repositories = ["app", "team/*"]
keep_last = 2
keep_tags = ["stable"]
delete_tags = [".*"]
untagged = "delete"

[[rule]]
name = "frozen"
repositories = "**"
keep_tags = ".*"
"""


def _series(prefix: str, n: int) -> list[Img]:
    return [Img(f"{prefix}{i}", (f"{prefix}{i}",), created=50 - i) for i in range(n)]


def make_root(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Three repositories: app (4 images, an untagged orphan), team/web (3 images + stable), frozen/db (2)."""
    return {
        "app": build(root / "app", [*_series("v", 4), Img("orphan", (None,), created=60)]),
        "team/web": build(root / "team" / "web", [Img("s", ("stable",), created=90), *_series("w", 3)]),
        "frozen/db": build(root / "frozen" / "db", _series("d", 2)),
    }


def tags_of(layout: Path) -> set[str]:
    doc = json.loads((layout / "index.json").read_text())
    return {m["annotations"]["org.opencontainers.image.ref.name"] for m in doc["manifests"]
            if "org.opencontainers.image.ref.name" in (m.get("annotations") or {})}


def write_policy(tmp_path: Path, text: str = POLICY) -> Path:
    p = tmp_path / "ocigc.toml"
    p.write_text(text)
    return p


# --- the cron run -----------------------------------------------------------------------------------
def test_cron_run_with_policy(layout_dir: Path, tmp_path: Path) -> None:
    """The crontab line of docs/cron.md, on local disk and on the s3fs mount."""
    descs = make_root(layout_dir)
    policy = write_policy(tmp_path)
    report = tmp_path / "log" / "ocigc.json"
    report.parent.mkdir()
    rc, out, err, _ = run_ocigc("sweep", layout_dir, "--policy", policy, "--quiet", "--json-report", report)
    assert (rc, out, err) == (0, "", "")
    assert tags_of(layout_dir / "app") == {"v2", "v3"}
    assert tags_of(layout_dir / "team" / "web") == {"stable", "w1", "w2"}
    assert tags_of(layout_dir / "frozen" / "db") == {"d0", "d1"}
    for repo in ("app", "team/web", "frozen/db"):
        for d in reachable(layout_dir / repo):
            assert blob_path(layout_dir / repo, d).exists()
    for k in ("v0", "v1", "orphan"):
        assert not blob_path(layout_dir / "app", descs["app"][k]["digest"]).exists()

    doc = json.loads(report.read_text())
    assert sorted(os.listdir(report.parent)) == ["ocigc.json"]  # no temp file left behind
    assert doc["version"] == 1 and doc["command"] == "sweep" and doc["exit_code"] == 0 and doc["status"] == "ok"
    assert doc["dry_run"] is False and doc["errors"] == []
    assert doc["policy"]["path"] == str(policy) and len(doc["policy"]["sha256"]) == 64
    t = doc["totals"]
    assert t["layouts"] == 3 and t["layouts_failed"] == 0
    assert t["tags_removed"] == 3 and t["tags_kept"] == 2 + 3 + 2
    assert t["entries_removed"] == 4  # 3 tags and the orphan untagged entry
    assert t["blobs_removed"] == 4 * 3 and t["bytes_removed"] > 0 and t["errors"] == 0
    assert doc["duration_seconds"] >= 0
    by_name = {x["layout"]: x for x in doc["layouts"]}
    app_ = by_name["app"]
    assert app_["seconds"] >= 0 and app_["result"]["removed_entries"] == 3
    decisions = {d["tag"]: d for d in app_["plan"]["decisions"]}
    assert decisions["v0"]["action"] == "remove" and decisions["v0"]["rule"] == "apps"
    assert decisions["v3"]["by"] == "keep_last" and decisions["v3"]["time_source"] == "manifest-annotation"
    assert any("no rule" not in n for n in app_["plan"]["notes"])
    frozen = by_name["frozen/db"]
    assert {d["by"] for d in frozen["plan"]["decisions"]} == {"keep_tags"}


def test_dry_run_shows_decisions_then_blobs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root)
    before = snapshot(root)
    rc, out, err = ocigc("sweep", root, "--policy", write_policy(tmp_path), "--dry-run")
    assert rc == 0, err
    assert snapshot(root) == before
    lines = out.splitlines()
    head = lines.index("sweep app")
    block = lines[head:lines.index("sweep frozen/db")]
    first_blob = next(i for i, x in enumerate(block) if x.lstrip().startswith("remove  manifest"))
    decided = [x for x in block[:first_blob] if " tag " in x and x.lstrip().startswith(("keep", "remove"))]
    assert [x.split()[2] for x in decided] == ["v0", "v1", "v2", "v3"]
    assert "[apps: keep_last]" in decided[-1] and "[apps: delete_tags]" in decided[0]
    assert "[dry run: nothing changed]" in out


def test_refusal_is_shown_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build(root / "app", [Img(f"i{i}", (f"t{i}",), created=3) for i in range(3)])  # timestamps reset (zot #4233)
    report = tmp_path / "r.json"
    rc, out, _ = ocigc("sweep", root, "--policy", write_policy(tmp_path), "--dry-run", "--json-report", report)
    assert rc == 0
    assert "refuse  rule 'apps': times ambiguous: 3 of 3 tagged manifests have timestamps within 1m" in out
    assert "all 3 tags kept" in out and 'ambiguous_times = "proceed"' in out
    doc = json.loads(report.read_text())
    assert doc["dry_run"] is True and doc["totals"]["tags_removed"] == 0
    assert {d["by"] for d in doc["layouts"][0]["plan"]["decisions"]} == {"refused"}


def test_json_logs_and_a_failing_layout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root)
    broken = LayoutBuilder(root / "broken")
    m = broken.image("x", [b"l"])
    broken.save()
    blob_path(root / "broken", m["digest"]).unlink()  # a tagged manifest is missing: exit 4
    report = tmp_path / "r.json"
    rc, out, err = ocigc("sweep", root, "--policy", write_policy(tmp_path), "--quiet", "--log-format", "json",
                                "--json-report", report)
    assert rc == 4
    assert out == ""
    events = [json.loads(line) for line in err.splitlines()]
    assert events and all({"time", "level", "message"} <= set(e) for e in events)
    failed = [e for e in events if e.get("event") == "layout-failed"]
    assert len(failed) == 1 and failed[0]["layout"] == "broken" and failed[0]["exit_code"] == 4
    assert all(e["level"] == "error" for e in events)  # --quiet: errors only
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 4 and doc["status"] == "integrity"
    assert [e["layout"] for e in doc["errors"]] == ["broken"]
    assert tags_of(root / "app") == {"v2", "v3"}  # the other layouts went on


def test_json_logs_without_quiet_report_every_layout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root)
    rc, out, err = ocigc("sweep", root, "--policy", write_policy(tmp_path), "--log-format", "json",
                                "--dry-run")
    assert rc == 0 and "sweep app" in out
    events = [json.loads(line) for line in err.splitlines()]
    layouts = {e["layout"]: e for e in events if e.get("event") == "layout"}
    assert set(layouts) == {"app", "team/web", "frozen/db"}
    assert layouts["app"]["tags_removed"] == 2 and layouts["app"]["dry_run"] is True
    assert events[-1]["event"] == "finished" and events[-1]["exit_code"] == 0


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_bad_policy_exits_2_and_still_writes_the_report(tmp_path: Path, log_format: str) -> None:
    root = tmp_path / "root"
    make_root(root)
    bad = write_policy(tmp_path, "[[rule]]\nrepositories = '**'\nkeep_lst = 3\n")
    report = tmp_path / "r.json"
    rc, out, err = ocigc("sweep", root, "--policy", bad, "--quiet", "--json-report", report,
                                "--log-format", log_format)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    msg = f"{bad}:3: rule 1: keep_lst: unknown key (did you mean keep_last?)"
    if log_format == "json":
        assert json.loads(err)["message"] == msg
    else:
        assert err.strip() == f"error: {msg}"
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 2 and doc["status"] == "usage" and doc["errors"][0]["message"] == msg
    assert tags_of(root / "app") == {f"v{i}" for i in range(4)}


def test_never_prompts_without_a_terminal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root)
    rc, out, err = ocigc("sweep", root, "--policy", write_policy(tmp_path))  # stdin: /dev/null, no --yes
    assert rc == 0, err
    assert "Proceed?" not in out + err
    assert tags_of(root / "app") == {"v2", "v3"}


def test_bad_log_format_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root)
    rc, _out, err = ocigc("sweep", root, "--log-format", "xml", "--dry-run")
    assert rc == 2 and "error: --log-format: must be text or json, got 'xml'" in err


# --- policy check -----------------------------------------------------------------------------------
def test_policy_check(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_root(root)
    p = write_policy(tmp_path)
    r = run(["policy", "check", p])
    assert r.code == 0, (r.stdout + r.stderr)
    assert "rule 1 'apps' (line 5): repositories app, team/*" in (r.stdout + r.stderr)
    assert "otherwise removes a tag when all of: its name matches ^.*$" in (r.stdout + r.stderr)
    assert "refuses to act on a repository" in (r.stdout + r.stderr)
    assert "warning: rule 2 (frozen): removes no tags" in (r.stdout + r.stderr)
    r = run(["policy", "check", str(p), str(root)])
    assert r.code == 0
    rows = {line.split()[0]: line.split()[1] for line in (r.stdout + r.stderr).splitlines()[-3:]}
    assert rows == {"app": "apps", "frozen/db": "frozen", "team/web": "apps"}
    r = run(["policy", "check", str(p), "--json"])
    doc = json.loads(r.stdout + r.stderr)
    assert doc["valid"] is True and [x["name"] for x in doc["rules"]] == ["apps", "frozen"]
    bad = write_policy(tmp_path, "[[rule]]\nrepositories = '**'\ndelete_tags = '('\n")
    r = run(["policy", "check", str(bad)])
    assert r.code == 2
    assert f"{bad}:3: rule 1: delete_tags: invalid regex '('" in (r.stdout + r.stderr)


# --- the report writer and the log formatter --------------------------------------------------------
def test_write_atomic_replaces_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.json"
    write_atomic(target, b'{"old": true}')
    assert target.read_bytes() == b'{"old": true}'

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, b'{"new": true}')
    assert target.read_bytes() == b'{"old": true}'
    assert os.listdir(tmp_path) == ["report.json"]


def test_report_of_an_empty_run(tmp_path: Path) -> None:
    rep = RunReport("sweep", "/nowhere", dry_run=True, argv=["ocigc", "sweep"])
    rep.fail("no OCI image layout found", 1)
    rep.write(tmp_path / "r.json", 1)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["status"] == "error" and doc["totals"]["layouts"] == 0 and doc["argv"] == ["ocigc", "sweep"]


def test_json_log_formatter() -> None:
    rec = logging.LogRecord("ocigc.run", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    rec.layout = "team/app"
    doc = json.loads(JsonLogFormatter().format(rec))
    assert doc["level"] == "warning" and doc["message"] == "hello world" and doc["layout"] == "team/app"
    assert doc["time"].endswith("Z")


# --- overlapping runs -------------------------------------------------------------------------------
@pytest.mark.parametrize("hosts", ["one-host-local", *(f"two-hosts-s3fs-{store}" for store in STORES)])
def test_overlapping_runs_one_sweeps_the_other_exits_75(hosts: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    """Run A holds the exclusive lock in the middle of its removals; run B (the CLI, as the next
    cron run) exits 75 at once without waiting; once A is done, B's next run succeeds."""
    from ocigc.lock.acquire import acquire

    if hosts == "one-host-local":
        a_root = b_root = tmp_path / "root"
        a_root.mkdir()
    else:
        pair = request.getfixturevalue("s3fs_pair_on")(hosts.removeprefix("two-hosts-s3fs-"))
        a_root, b_root = pair.a / "root", pair.b / "root"
        a_root.mkdir()
    descs = build(a_root / "app", _series("v", 3))
    stray = LayoutBuilder(a_root / "app").blob(b"stray", "application/octet-stream")
    age(a_root / "app")
    policy = write_policy(tmp_path)

    entered, release = threading.Event(), threading.Event()

    def slow_dispose(layout: Layout, rel: str) -> bool:
        entered.set()
        release.wait(120)
        return layout.storage.remove(rel)

    layout = Layout.open(LocalStorage(a_root / "app"), "app")
    run_a = RunOptions(jobs=2, dispose=slow_dispose,
                       locker=lambda lay, mode: acquire(lay, mode, command="test run A"))
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "out", sweep_layout(layout, SweepOptions(grace=0), run_a)))
    thread.start()
    try:
        assert entered.wait(120), "run A never reached its removals"
        report = tmp_path / "b.json"
        rc, out, err, _ = run_ocigc("sweep", b_root, "--policy", policy, "--quiet", "--json-report", report)
        assert rc == LOCK_BUSY, (out, err)
        doc = json.loads(report.read_text())
        assert doc["exit_code"] == LOCK_BUSY and doc["status"] == "lock-busy"
        assert tags_of(a_root / "app") == {"v0", "v1", "v2"}  # B removed nothing
    finally:
        release.set()
        thread.join(300)
    assert result["out"].error is None and not blob_path(a_root / "app", stray["digest"]).exists()
    if hosts != "one-host-local":
        return  # the next run is the same on both (and costs ~10 s of lock and index settling on s3fs)
    rc, out, err, _ = run_ocigc("sweep", b_root, "--policy", policy, "--quiet")
    assert rc == 0, err
    assert tags_of(a_root / "app") == {"v1", "v2"}
    assert not blob_path(a_root / "app", descs["v0"]["digest"]).exists()


# --- per-rule settings override the command line ----------------------------------------------------
def test_rule_trash_and_grace_override_the_command_line(tmp_path: Path) -> None:
    root = tmp_path / "root"
    descs = make_root(root)
    text = POLICY.replace('untagged = "delete"\n', 'untagged = "delete"\ntrash = true\ntrash_retention = "3d"\n')
    report = tmp_path / "r.json"
    rc, _, err = ocigc("sweep", root, "--policy", write_policy(tmp_path, text), "--grace", "5h", "--quiet",
                       "--json-report", report)
    assert rc == 0, err
    runs = os.listdir(root / "app" / ".ocigc" / "trash")
    assert len(runs) == 1
    trashed = root / "app" / ".ocigc" / "trash" / runs[0] / "blobs" / "sha256"
    assert descs["app"]["v0"]["digest"].split(":")[1] in os.listdir(trashed)
    assert not (root / "frozen" / "db" / ".ocigc" / "trash").exists()  # rule "frozen" sets no trash
    doc = json.loads(report.read_text())
    by_name = {x["layout"]: x for x in doc["layouts"]}
    assert by_name["app"]["trash_run"] == runs[0]
    assert by_name["app"]["lock"]["mode"] == "exclusive" and by_name["app"]["lock"]["acquired"] is True


def test_delete_writes_a_json_report_and_json_logs(tmp_path: Path) -> None:
    lay = tmp_path / "lay"
    b = LayoutBuilder(lay)
    b.image("keep", [b"kept layer"])
    old = b.image("old", [b"old layer"])
    b.save()
    report = tmp_path / "r.json"
    rc, out, err = ocigc("delete", f"{lay}:old", "--yes", "--quiet", "--log-format", "json", "--json-report", report)
    assert rc == 0 and out == ""
    doc = json.loads(report.read_text())
    assert doc["command"] == "delete" and doc["exit_code"] == 0 and doc["dry_run"] is False
    assert doc["totals"]["blobs_removed"] >= 2  # the manifest and its own layer
    assert not blob_path(lay, old["digest"]).exists()
    # a missing tag: exit 1 (reference not found), one JSON error line, the report says so
    rc, out, err = ocigc("delete", f"{lay}:nope", "--yes", "--quiet", "--log-format", "json", "--json-report", report)
    assert rc != 0 and out == ""
    events = [json.loads(line) for line in err.splitlines()]
    assert events and all(e["level"] == "error" for e in events)
    assert json.loads(report.read_text())["exit_code"] == rc
