"""Everyday use without surprises (issue 18): one reference grammar, prompts and exit codes, one error
path with a JSON error object, output that fits 80 columns and adds up, loud unattended runs.

Through the real CLI (in-process, or the installed script in a subprocess; a pseudo-terminal for the
prompt), on local disk and, where a mount is involved, on the s3fs mounts of the harness. The OSError
matrix (read-only, unreadable, full, I/O errors) is ``tests/test_storage_errors.py``.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness.fixtures import S3FS_DIRS
from tests.harness.mounts import S3fsMount
from tests.kit.cli import ERROR, INTEGRITY, INTERRUPTED, OCIGC, OK, UNSAFE_MOUNT, USAGE, Result, cli_env, run
from tests.kit.layouts import OCI_LAYER, REF_NAME, LayoutBuilder, blob_path
from tests.kit.retention import Img, build
from tests.kit.tree import age, present, snapshot

WHERE = pytest.mark.parametrize("layout_dir", ["local", *S3FS_DIRS], indirect=True)
HANG = 120


def layout_with_garbage(root: Path, tag: str = "v1", ref_name: str | None = None) -> tuple[str, str]:
    """A tagged image and an unreachable blob, every file 2 h old: (manifest, garbage)."""
    b = LayoutBuilder(root)
    man = b.manifest([f"layer of {root.name}".encode()])
    b.add(man, ref_name or tag)
    garbage = b.blob(f"garbage of {root.name}".encode(), OCI_LAYER)
    b.save()
    age(root)
    return str(man["digest"]), str(garbage["digest"])


def ref_names(lay: Path) -> list[str | None]:
    doc = json.loads((lay / "index.json").read_text())
    return [(m.get("annotations") or {}).get(REF_NAME) for m in doc["manifests"]]


def one_line(r: Result, *needles: str) -> str:
    assert "Traceback" not in r.stdout + r.stderr, str(r)
    assert len(r.error_lines) == 1, str(r)
    for n in needles:
        assert n in r.error_lines[0], f"{n!r} not in {r.error_lines[0]!r}"
    return r.error_lines[0]


# --- items 5-8: one reference and tag grammar -----------------------------------------------------------


@WHERE
def test_tag_second_argument_as_oras_takes_it(layout_dir: Path) -> None:
    lay = layout_dir / "L"
    layout_with_garbage(lay)
    r = run(["tag", f"{lay}:v1", f"{lay}:v9", "v10"])
    assert r.code == OK, r
    assert r.stdout.splitlines()[:2] == ["Tagged v9", "Tagged v10"]
    assert ref_names(lay) == ["v1", "v9", "v10"]  # never a tag literally named "L:v9"
    r = run(["delete", "--yes", f"{lay}:v9"])
    assert r.code == OK, r
    assert ref_names(lay) == ["v1", "v10"]
    # a second argument naming another layout is refused, nothing written
    before = (lay / "index.json").read_bytes()
    r = run(["tag", f"{lay}:v1", f"{layout_dir / 'other'}:v2"])
    assert r.code == USAGE
    one_line(r, "names another layout")
    assert (lay / "index.json").read_bytes() == before


@WHERE
@pytest.mark.parametrize("bad", ["1.0+build", "Bad/Tag", ".x", "a b", "t" * 129, "é"])
def test_invalid_tags_are_refused_before_anything_is_written(layout_dir: Path, bad: str) -> None:
    lay = layout_dir / "L"
    layout_with_garbage(lay)
    (layout_dir / "f").write_text("f")
    before = snapshot(lay)
    for args in (["tag", f"{lay}:v1", bad], ["push", f"{lay}:ok,{bad}", "f"]):
        r = run(args, cwd=layout_dir)
        assert r.code == USAGE, (args, r)
        one_line(r, f"{bad!r} is not a valid tag")
    assert snapshot(lay) == before


@WHERE
def test_push_to_a_tag_with_a_slash_creates_no_directory(layout_dir: Path) -> None:
    (layout_dir / "f").write_text("f")
    r = run(["push", "L:Bad/Tag", "f"], cwd=layout_dir)
    assert r.code == USAGE, r
    one_line(r, "'Bad/Tag'", "not a valid tag")
    assert sorted(p.name for p in layout_dir.iterdir()) == ["f"]  # no "L:Bad/" directory
    assert run(["push", "L:ok", "f"], cwd=layout_dir).code == OK
    # a directory L:Bad that exists: L:Bad/Tag is then a path, as the grammar reads it (last ':' after the last '/')
    (layout_dir / "L:Bad").mkdir()
    r = run(["push", "L:Bad/Tag", "f"], cwd=layout_dir)
    assert r.code == OK, r  # an existing directory whose name holds ':' is a layout path like any other
    assert (layout_dir / "L:Bad" / "Tag" / "oci-layout").exists()


def _podman_layout(lay: Path) -> dict[str, str]:
    """A layout as ``podman save --format oci-dir`` and ``skopeo copy ... oci:dir:localhost/app:v2`` write it:
    full references as ref names, next to a plain tag of the same digest."""
    b = LayoutBuilder(lay)
    v1 = b.manifest([b"app v1"])
    v2 = b.manifest([b"app v2"])
    b.add(v1, "localhost/app:v1")
    b.add(v2, "localhost/app:v2")
    b.add(v2, "v2")
    b.save()
    age(lay)
    return {"v1": str(v1["digest"]), "v2": str(v2["digest"])}


@WHERE
def test_full_reference_ref_names_are_addressable_alone(layout_dir: Path) -> None:
    lay = layout_dir / "L"
    d = _podman_layout(lay)
    full = f"{lay}::localhost/app:v2"
    # inspect, pull, tag, push --subject, delete: each names the one entry
    r = run(["inspect", "--json", full])
    assert r.code == OK, r
    assert [t["digest"] for t in r.json()["trees"]] == [d["v2"]]
    assert run(["pull", full, "-o", layout_dir / "out"]).code == OK
    r = run(["tag", full, "stable"])
    assert r.code == OK, r
    (layout_dir / "sig").write_text("sig")
    r = run(["push", "L", "sig", "--artifact-type", "application/x.sig", "--subject", "L:localhost/app:v2"],
            cwd=layout_dir)  # LAYOUT:NAME with this push's layout reads as skopeo's
    assert r.code == OK, r
    r = run(["delete", "--yes", "--keep-referrers", full])
    assert r.code == OK, r
    # only that entry went: the digest keeps its other names ("@sha256:..." would have removed them all)
    assert ref_names(lay)[:3] == ["localhost/app:v1", "v2", "stable"]
    assert d["v2"] in present(lay)


def test_unaddressable_spelling_says_how_to_address_it(tmp_path: Path) -> None:
    lay = tmp_path / "L"
    _podman_layout(lay)
    for args in (["delete", "--yes", f"{lay}:localhost/app:v2"], ["inspect", f"{lay}:localhost/app:v2"],
                 ["pull", f"{lay}:localhost/app:v2"], ["tag", f"{lay}:localhost/app:v2", "x"]):
        r = run(args)
        assert r.code == ERROR, (args, r)
        one_line(r, "no such directory", f"{lay}::localhost/app:v2")
    r = run(["delete", "--yes", f"{lay}:v1"])
    assert r.code == ERROR
    one_line(r, "no tag 'v1'", f"did you mean {lay}::localhost/app:v1")
    # tags lists every entry; each has a spelling that names it alone (docs/cli.md, "References")
    names = run(["tags", "--names", lay]).stdout.splitlines()
    assert names == ["localhost/app:v1", "localhost/app:v2", "v2"]


# --- items 9, 10: the prompt ------------------------------------------------------------------------------


def run_on_tty(args: list[str | os.PathLike[str]], answer: bytes) -> tuple[int, str]:
    """``ocigc ARGS`` on a pseudo-terminal: wait for the question, type ``answer``; (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a shell (a pytest-xdist worker ignores SIGINT)
        os.execve(OCIGC, [OCIGC, *map(os.fspath, args)], {**cli_env(), "COLUMNS": "80"})
    out = b""
    answered = False
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], HANG)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"no output for {HANG}s: {out.decode(errors='replace')}")
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if not answered and b"Proceed?" in out:
                os.write(fd, answer)
                answered = True
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace").replace("\r\n", "\n")


def test_plan_is_printed_once_and_yes_runs_it(tmp_path: Path) -> None:
    lay = tmp_path / "L"
    _, garbage = layout_with_garbage(lay)
    code, out = run_on_tty(["sweep", lay, "--grace", "0"], b"y\n")
    assert code == OK, out
    assert out.count(f"remove  blob      {garbage[:19]}") == 1, out
    assert out.count(f"sweep {lay}") == 1 and "done: removed 0 entries, 1 blobs" in out, out
    assert garbage not in present(lay)


@pytest.mark.parametrize(("key", "name"), [(b"\x03", "Ctrl-C"), (b"\x04", "Ctrl-D")])
@pytest.mark.parametrize("command", ["sweep", "delete"])
def test_interrupt_at_the_prompt_is_130_and_changes_nothing(tmp_path: Path, key: bytes, name: str,
                                                            command: str) -> None:
    lay = tmp_path / "L"
    layout_with_garbage(lay)
    report = tmp_path / "report.json"
    before = snapshot(lay, control=False)
    args: list[str | os.PathLike[str]] = (["sweep", lay, "--grace", "0"] if command == "sweep"
                                          else ["delete", f"{lay}:v1"])
    code, out = run_on_tty([*args, "--json-report", report], key)
    assert code == INTERRUPTED, f"{name}: {out}"
    assert "interrupted" in out and "Aborted" not in out and "Traceback" not in out, out
    assert snapshot(lay, control=False) == before
    assert json.loads(report.read_text())["exit_code"] == INTERRUPTED


# --- item 11: exec ------------------------------------------------------------------------------------------


@WHERE
def test_exec_options_after_the_layout_and_the_shells_exit_codes(layout_dir: Path) -> None:
    lay = layout_dir / "L"
    layout_with_garbage(lay)
    r = run(["exec", lay, "--json", "--", "true"], mode="proc")
    assert r.code == OK, r
    doc = r.json()
    assert doc["command"] == "exec" and doc["exit_code"] == OK and doc["argv"] == ["true"]
    r = run(["exec", lay, "--", "sh", "-c", "exit 3"], mode="proc")
    assert r.code == 3, r
    r = run(["exec", lay, "--", "no-such-command-ocigc"], mode="proc")
    assert r.code == 127, r
    one_line(r, "no-such-command-ocigc", "not found")
    script = layout_dir / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    r = run(["exec", lay, "--", script], mode="proc")
    assert r.code == 126, r
    one_line(r, "not executable")


# --- item 2: a file where a directory should be -------------------------------------------------------------


@WHERE
def test_a_file_where_the_layout_or_output_directory_should_be(layout_dir: Path) -> None:
    afile = layout_dir / "afile"
    afile.write_text("x")
    lay = layout_dir / "L"
    layout_with_garbage(lay)
    r = run(["exec", afile, "--", "true"])
    assert r.code == ERROR
    one_line(r, str(afile), "not a directory")
    r = run(["pull", f"{lay}:v1", "-o", afile])
    assert r.code == ERROR
    one_line(r, str(afile), "not a directory")
    r = run(["pull", f"{lay}:v1", "-o", afile / "sub", "--json"])
    assert r.code == ERROR and r.json()["error"] == r.error_lines[0].removeprefix("error: ")
    assert afile.read_text() == "x"


# --- item 13: exec backs index.json up ----------------------------------------------------------------------


@WHERE
def test_exec_backs_up_index_json_before_the_command(layout_dir: Path) -> None:
    lay = layout_dir / "L"
    layout_with_garbage(lay)
    old = (lay / "index.json").read_bytes()
    r = run(["exec", lay, "--", "sh", "-c", f"echo garbage > '{lay / 'index.json'}'"], mode="proc")
    assert r.code == ERROR, r
    backups = list((lay / ".ocigc" / "backup").iterdir())
    assert [b.read_bytes() for b in backups] == [old]
    [record] = [json.loads(p.read_text()) for p in (lay / ".ocigc" / "journal").glob("*-exec.json")]
    assert record["backup"] == f".ocigc/backup/{backups[0].name}"


# --- item 12: an interrupted run is journaled ----------------------------------------------------------------


@WHERE
def test_an_interrupted_sweep_records_what_it_removed(layout_dir: Path) -> None:
    from ocigc.gc.plan import SweepOptions
    from ocigc.gc.run import RunOptions, sweep_layout
    from ocigc.layout.layout import Layout
    from ocigc.storage.local import LocalStorage

    lay = layout_dir / "L"
    b = LayoutBuilder(lay)
    b.image("v1", [b"kept"])
    garbage = [str(b.blob(f"garbage {i}".encode(), OCI_LAYER)["digest"]) for i in range(40)]
    b.save()
    age(lay)
    gone: list[str] = []

    def dispose(layout: Layout, rel: str) -> bool:  # Ctrl-C after the fifth removal
        if len(gone) >= 5:
            raise KeyboardInterrupt
        gone.append(rel)
        return layout.storage.remove(rel)

    with pytest.raises(KeyboardInterrupt):
        sweep_layout(Layout.open(LocalStorage(str(lay))), SweepOptions(grace=0), RunOptions(dispose=dispose, jobs=1))
    removed = {g for g in garbage if g not in present(lay)}
    assert len(removed) == 5
    [record] = [json.loads(p.read_text()) for p in (lay / ".ocigc" / "journal").glob("*-sweep.json")]
    assert record["result"]["stopped"] == "interrupted"
    assert {b["digest"] for b in record["result"]["removed"]} == removed
    assert len(record["plan"]["remove_blobs"]) == 40


# --- item 14: the mount is checked before anything takes a lock ----------------------------------------------


@pytest.mark.s3fs
def test_unsafe_mount_writers_warn_delete_and_sweep_refuse(s3fs_default_mount: S3fsMount,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIGC_ALLOW_UNSAFE_MOUNT", raising=False)
    monkeypatch.delenv("OCIGC_LOCK_SETTLE", raising=False)
    lay = s3fs_default_mount.mount_point / "L"
    (s3fs_default_mount.mount_point / "f").write_text("f")
    r = run(["push", f"{lay}:v1", "f", "--quiet"], mode="proc", cwd=s3fs_default_mount.mount_point)
    assert r.code == OK, r
    [warning] = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert "unsafe mount" in warning and "stat_cache_expire" in warning and "ocigc doctor" in warning
    b = LayoutBuilder(lay)
    b.blob(b"garbage", OCI_LAYER)
    age(lay)
    before = present(lay)
    report = s3fs_default_mount.mount_point / "report.json"
    for args in (["delete", "--yes", f"{lay}:v1"], ["sweep", "--grace", "0", lay, "--json-report", report]):
        r = run(args, mode="proc")
        assert r.code == UNSAFE_MOUNT, (args, r)
        one_line(r, "unsafe mount", "stat_cache_expire", "--allow-unsafe-mount")
        assert present(lay) == before
        assert not (lay / ".ocigc" / "locks").exists() or not list((lay / ".ocigc" / "locks").iterdir())
    assert json.loads(report.read_text())["exit_code"] == UNSAFE_MOUNT
    assert run(["sweep", "--grace", "0", "--dry-run", lay], mode="proc").code == OK  # a dry run takes no lock
    r = run(["sweep", "--grace", "0", "--allow-unsafe-mount", lay], mode="proc")
    assert r.code == OK, r
    assert any(line.startswith("warning:") and "unsafe mount" in line for line in r.stderr.splitlines())
    assert present(lay) < before


def test_a_local_disk_gives_no_mount_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCIGC_ALLOW_UNSAFE_MOUNT", raising=False)
    (tmp_path / "f").write_text("f")
    r = run(["push", "L:v1", "f"], mode="proc", cwd=tmp_path)
    assert r.code == OK and "warning" not in r.stderr, r


# --- item 15: a refusal is a warning, even with --quiet ---------------------------------------------------------


POLICY = """\
[[rule]]
name = "apps"
repositories = "**"
keep_last = 1
delete_tags = [".*"]
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_policy_refusal_is_a_warning_with_quiet(tmp_path: Path, log_format: str) -> None:
    root = tmp_path / "root"
    build(root / "app", [Img(f"i{i}", (f"t{i}",), created=3) for i in range(3)])  # identical times: refused
    policy = tmp_path / "p.toml"
    policy.write_text(POLICY)
    r = run(["sweep", root, "--policy", policy, "--quiet", "--log-format", log_format], mode="proc")
    assert r.code == OK, r
    assert r.stdout == ""
    if log_format == "text":
        [line] = r.stderr.splitlines()
        assert line.startswith("warning: app: the policy refused to act: rule 'apps': times ambiguous"), line
    else:
        events = [json.loads(line) for line in r.stderr.splitlines()]
        [refused] = [e for e in events if e.get("refused")]
        assert refused["level"] == "warning" and refused["layout"] == "app"
        assert all(e["level"] in ("warning", "error") for e in events)


# --- item 16: migrate filters -------------------------------------------------------------------------------------


def test_a_migrate_filter_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "partial"
    layout_with_garbage(src, tag="listonly")
    dst = tmp_path / "dst"
    for flag, pattern in (("--include", "nomatch/*"), ("--exclude", "partial:listonly")):
        r = run(["migrate", src, dst, flag, pattern])
        assert r.code == ERROR, r
        one_line(r, flag, repr(pattern), "matches no repository", "''")
        assert not dst.exists()
    # what filters match is printed by a dry run: a single layout is repository ''
    r = run(["migrate", src, dst, "--dry-run"])
    assert r.code == OK and "[repository '']" in r.stdout, r
    r = run(["migrate", src, dst, "--exclude", ":listonly", "--dry-run"])
    assert r.code == OK and "tags: 0" in r.stdout, r


# --- items 19, 22: 80 columns, short digests, one name per layout -------------------------------------------------


def test_human_output_fits_80_columns_and_wide_gives_everything(tmp_path: Path) -> None:
    lay = tmp_path / "s3" / "team" / "app"
    b = LayoutBuilder(lay)
    img = b.image("v1.2.3-with-a-long-name", [b"layer one", b"layer two"])
    sig = b.referrer(img, b"signature")
    b.add(sig, f"sha256-{img['digest'].split(':')[1]}.sig")
    for i in range(5):
        b.blob(f"garbage {i}".encode(), OCI_LAYER)
    (lay / "blobs" / "sha256" / "not-a-digest").write_text("x")  # a check warning
    b.save()
    age(lay)
    env80 = {"COLUMNS": "80"}
    rel = "s3/team/app"
    for args in (["tags", rel], ["inspect", f"{rel}:v1.2.3-with-a-long-name"],
                 ["sweep", "s3", "--dry-run", "--grace", "0"], ["check", "s3"], ["ls", "s3"]):
        r = _run80(args, env80, cwd=tmp_path)
        assert r.code == OK, (args, r)
        long = [line for line in r.stdout.splitlines() if len(line) > 80]
        assert not long, (args, long)
        assert img["digest"] not in r.stdout and not re.search(r"[0-9a-f]{40}", r.stdout), (args, r.stdout)
        if args[0] != "ls":
            for flag in ("--wide", "-v"):  # full digests, one line per item
                wide = _run80([*args, flag], env80, cwd=tmp_path)
                assert img["digest"] in wide.stdout or args[0] in ("check", "sweep"), (args, flag)
                assert re.search(r"[0-9a-f]{64}", wide.stdout) or args[0] == "check", (args, flag)
    names = _run80(["tags", "--names", rel], env80, cwd=tmp_path).stdout.splitlines()
    assert names == ["v1.2.3-with-a-long-name", f"sha256-{img['digest'].split(':')[1]}.sig"]


def _run80(args: list[Any], env: dict[str, str], cwd: Path | None = None) -> Result:
    p = subprocess.run([OCIGC, *map(os.fspath, args)], capture_output=True, text=True, env={**cli_env(), **env},
                       timeout=HANG, check=False, stdin=subprocess.DEVNULL, cwd=cwd)
    return Result(p.returncode, p.stdout, p.stderr)


def test_one_name_per_layout_in_every_output(tmp_path: Path) -> None:
    lay = tmp_path / "L"
    layout_with_garbage(lay)
    for args in (["ls", lay], ["sweep", lay, "--dry-run"], ["check", lay]):
        r = run(args)
        assert str(lay) in r.stdout.splitlines()[1 if args[0] == "ls" else 0], (args, r)
        j = run([*args, "--json"]).json()
        assert [x["layout"] for x in j["layouts"]] == [str(lay)], args
    root = tmp_path
    assert [x["layout"] for x in run(["ls", "--json", root]).json()["layouts"]] == ["L"]
    assert run(["sweep", "--dry-run", root]).stdout.splitlines()[0] == "sweep L"


# --- item 20: every error once ------------------------------------------------------------------------------------


def test_errors_are_printed_once(tmp_path: Path) -> None:
    lay = tmp_path / "L"
    layout_with_garbage(lay)
    broken = tmp_path / "broken"
    layout_with_garbage(broken)
    (broken / "index.json").write_text("{")
    for args in (["delete", "--yes", f"{lay}:nosuch"], ["ls", tmp_path], ["check", tmp_path], ["sweep", tmp_path]):
        r = run(args)
        assert r.code == ERROR, (args, r)
        [line] = r.error_lines
        message = line.removeprefix("error: ")
        assert message not in r.stdout, (args, r)
        assert (r.stdout + r.stderr).count(message) == 1, (args, r)


# --- item 21: counts that add up ---------------------------------------------------------------------------------


@WHERE
def test_temp_files_count_in_bytes_removed_and_check_counts_missing_apart(layout_dir: Path) -> None:
    lay = layout_dir / "L"
    man, _ = layout_with_garbage(lay)
    temp = lay / "blobs" / "sha256" / "oci-put-blob12345"
    temp.write_bytes(b"t" * 5000)
    age(lay)
    r = run(["sweep", "--grace", "0", "--yes", "--json", lay])
    assert r.code == OK, r
    x = r.json()["layouts"][0]
    assert x["result"]["bytes_removed"] == x["plan"]["bytes_reclaimed"] >= 5000
    # check: a missing blob is counted as missing, not as reachable
    doc = json.loads(blob_path(lay, man).read_text())
    blob_path(lay, doc["layers"][0]["digest"]).unlink()
    r = run(["check", "--json", lay])
    assert r.code == INTEGRITY
    c = r.json()["layouts"][0]
    assert c["reachable"] <= c["blobs"] and c["missing"] == 1
    assert ", 1 missing" in run(["check", lay]).stdout


# --- item 23: --help at 80 columns, one-line usage errors --------------------------------------------------------


COMMANDS = [["ls"], ["tags"], ["inspect"], ["graph"], ["check"], ["doctor"], ["exec"], ["delete"], ["sweep"],
            ["push"], ["pull"], ["tag"], ["migrate"], ["policy", "check"], ["locks", "list"], ["locks", "break"],
            ["trash", "list"], ["trash", "restore"], ["trash", "purge"], []]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "ocigc")
def test_help_fits_80_columns(command: list[str]) -> None:
    r = _run80([*command, "--help"], {"COLUMNS": "80"})
    assert r.code == OK, r
    for line in r.stdout.splitlines():
        assert len(line) <= 80, line
        assert "…" not in line, line
        assert not re.search(r"<(str|int|bool|float|list\[|int range|float range)", line), line
    verbose = [line for line in r.stdout.splitlines() if "--verbose" in line]
    assert verbose and all("default" not in line for line in verbose)  # -v counts; it has no value to show
    usage = r.stdout.splitlines()[0]
    assert "{" not in usage, usage


@pytest.mark.parametrize("args", [["graph", ".", "-f", "svg"], ["ls"], ["nosuch"], ["sweep", ".", "--grace"],
                                  ["ls", ".", "--jsn"], ["check", "-v", "2", "."]])
def test_usage_errors_are_one_line(args: list[str]) -> None:
    r = _run80(args, {"COLUMNS": "80"})
    assert r.code == USAGE, r
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: "), r
    assert "Value error" not in r.stderr and "╭" not in r.stderr


def test_an_unknown_command_with_json_gives_the_error_object() -> None:
    r = _run80(["ls", ".", "--json", "--jsn"], {})
    assert r.code == USAGE and r.json()["exit_code"] == USAGE and "--jsn" in r.json()["error"]


# --- item 24: one JSON envelope -------------------------------------------------------------------------------------


CAMEL = re.compile(r'"[a-z]+[A-Z][A-Za-z]*":')


def test_every_json_output_has_the_envelope_and_snake_case_keys(tmp_path: Path) -> None:
    lay = tmp_path / "L"
    layout_with_garbage(lay)
    (tmp_path / "f").write_text("f")
    policy = tmp_path / "p.toml"
    policy.write_text(POLICY)
    cases: list[tuple[str, list[Any]]] = [
        ("ls", ["ls", tmp_path]), ("tags", ["tags", lay]), ("inspect", ["inspect", f"{lay}:v1"]),
        ("graph", ["graph", lay]), ("check", ["check", lay]), ("sweep", ["sweep", lay, "--dry-run"]),
        ("delete", ["delete", "--yes", f"{lay}:v1", "--dry-run"]), ("push", ["push", f"{lay}:v2", "f"]),
        ("pull", ["pull", f"{lay}:v2", "-o", tmp_path / "out"]), ("tag", ["tag", f"{lay}:v2", "v3"]),
        ("exec", ["exec", lay]), ("locks list", ["locks", "list", lay]),
        ("locks break", ["locks", "break", lay]), ("trash list", ["trash", "list", lay]),
        ("trash purge", ["trash", "purge", lay]), ("policy check", ["policy", "check", policy]),
        ("migrate", ["migrate", lay, tmp_path / "copy", "--dry-run"]),
        ("doctor", ["doctor", tmp_path, "--no-self-test"]),
    ]
    for command, args in cases:
        r = run([*args, "--json", *(["--", "true"] if command == "exec" else [])], cwd=tmp_path)
        assert r.code == OK, (command, r)
        doc = r.json()
        assert list(doc)[:2] == ["command", "exit_code"] and doc["command"] == command, (command, list(doc))
        assert "error" not in doc
        assert not CAMEL.search(_own_keys(doc)), (command, CAMEL.findall(_own_keys(doc)))
    # an error: the same envelope with "error", whatever the command
    for command, args in (("tags", ["tags", tmp_path / "none"]), ("sweep", ["sweep", tmp_path / "none"]),
                          ("tag", ["tag", f"{lay}:v1", "bad tag"]), ("exec", ["exec", lay])):
        r = run([*args, "--json", *(["--", "no-such-ocigc"] if command == "exec" else [])])
        assert r.code != OK
        doc = r.json()
        assert doc == {"command": command, "exit_code": r.code, "error": r.error_lines[0].removeprefix("error: ")}


def _own_keys(doc: Any) -> str:
    """The JSON text of ``doc`` without the OCI documents and descriptors it quotes verbatim."""
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("annotations", "descriptor", "platform")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return json.dumps(strip(doc))


# --- item 25: a corrupt index.json is not retried where no writer can be rewriting it ---------------------------


def test_static_corrupt_index_is_reported_at_once_a_fresh_one_is_retried(tmp_path: Path) -> None:
    lay = tmp_path / "L"
    layout_with_garbage(lay)
    (lay / "index.json").write_text("{\"schemaVersion\": 2, \"manif")
    os.utime(lay / "index.json", (0, 1_000_000_000))
    r = run(["sweep", "--dry-run", lay])
    assert r.code == ERROR
    line = one_line(r, "index.json", "not retried", "not on a shared mount")
    assert "another writer may be rewriting" not in line
    (lay / "index.json").write_text("{\"schemaVersion\": 2, \"manif")  # just written: a writer is plausible
    r = run(["sweep", "--dry-run", lay])
    assert r.code == ERROR
    one_line(r, "still after 5 reads", "modified", "another writer may be rewriting it in place")


# --- item 27: progress in binary units -------------------------------------------------------------------------------


def test_byte_progress_uses_binary_units(capsys: pytest.CaptureFixture[str]) -> None:
    from ocigc.progress import TqdmProgress

    counter = TqdmProgress().counter("push", total=150 * 1024 * 1024, unit="B")
    for _ in range(150):
        counter.add(1024 * 1024)
    counter.close()
    err = capsys.readouterr().err
    assert "150.0 MiB/150.0 MiB" in err and re.search(r"\d (KiB|MiB|GiB|TiB)/s", err), err
    assert not re.search(r"\d(k|M|G)B\b", err), err


# --- item 18: the plain-writer race is stated where people look ------------------------------------------------------


def test_sweep_help_states_the_plain_writer_reuse_race() -> None:
    text = " ".join(_run80(["sweep", "--help"], {"COLUMNS": "80"}).stdout.split())
    assert "reuses it can lose it to a sweep" in text and "ocigc exec" in text and "--trash" in text
    for doc in ("docs/locking.md", "docs/cron.md"):
        body = " ".join((Path(__file__).parents[1] / doc).read_text().split())
        assert "reuses" in body and "ocigc exec" in body and "--trash" in body, doc


# --- item 17: the README's cron line is silent when all is well -------------------------------------------------


def test_readme_and_cron_md_agree_on_a_silent_line(tmp_path: Path) -> None:
    repo = Path(__file__).parents[1]
    readme = (repo / "README.md").read_text()
    cron = (repo / "docs" / "cron.md").read_text()
    [line] = [x for x in readme.splitlines() if x.strip().startswith("*/30 ")]
    command = line.split(None, 5)[5].split("#")[0].strip()
    assert command in cron, command
    root = tmp_path / "mnt" / "s3"
    layout_with_garbage(root / "hello")
    policy = tmp_path / "ocigc.toml"
    policy.write_text("[[rule]]\nname = \"all\"\nrepositories = \"**\"\nkeep_tags = \".*\"\n")
    argv = command.split()
    assert argv[0].endswith("ocigc")
    argv = [a.replace("/mnt/s3/", f"{root}/").replace("/etc/ocigc.toml", str(policy))
            .replace("/var/lib/ocigc/", f"{tmp_path}/") for a in argv[1:] if not a.startswith("2>")]
    r = run(argv, mode="proc")
    assert r.code == OK, r
    assert r.stdout == "" and r.stderr == "", r


@WHERE
def test_an_empty_ingest_directory_is_a_leftover_too(layout_dir: Path) -> None:
    """A sweep killed after removing the files of oras' ``ingest/`` but before its rmdir leaves it empty:
    the next sweep removes it, as it does an empty umoci temp directory (found by tests/test_crash.py)."""
    lay = layout_dir / "L"
    layout_with_garbage(lay)
    (lay / "ingest").mkdir()
    age(lay)
    r = run(["sweep", "--grace", "0", "--json", lay])
    assert r.code == OK, r
    assert [f["path"] for f in r.json()["layouts"][0]["plan"]["remove_files"]] == ["ingest/"]
    assert not (lay / "ingest").exists()
