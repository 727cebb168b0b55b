"""Every broken layout in fixtures/bad/ and a set of hostile ones, through every read command and
through sweep/delete on a copy: a one-line ``error:`` naming the file and the problem, the
documented exit code, no traceback, and NOTHING deleted or changed.

Exit codes follow docs/cli.md: 4 only for a dangling reference (a referenced blob is
missing), 1 for everything else. EXPECT.json's ``suggested_error.exit_code`` says 4 for
``size-mismatch`` and ``digest-mismatch``; the fixture README calls those suggestions, and
docs/cli.md's "4 integrity failure (dangling reference)" wins: both are ``check`` errors (exit 1).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.kit.cli import ERROR, INTEGRITY, OK, Result, run
from tests.kit.layouts import BAD, LAYOUTS, OCI_LAYER, LayoutBuilder, copy_layout, facts
from tests.kit.tree import age, present, snapshot


@dataclass(frozen=True)
class Case:
    """What each command must do on one bad fixture. ``where``: the offending path, relative."""

    where: str
    check: int  # exit code of `ocigc check`
    readable: bool  # ls/tags/inspect/graph can show the layout (a content problem, not a layout one)
    sweep: int  # exit code of `ocigc sweep --grace 0` (nothing may change either way)
    delete: str | None  # a tag whose deletion must be refused (None: deleting is legitimate there)
    delete_code: int = ERROR


def _blob(name: str) -> str:
    """The offending blob of a fixture (EXPECT.json's first error with a digest)."""
    f = facts(BAD / name)
    for e in [*f["errors"], *f["dangling"]]:
        if e.get("digest"):
            alg, hexd = e["digest"].split(":")
            return f"blobs/{alg}/{hexd}"
        if e.get("path"):
            return str(e["path"])
    raise AssertionError(name)


CASES: dict[str, Case] = {
    "no-oci-layout": Case("oci-layout", ERROR, False, ERROR, "ok"),
    "oci-layout-not-json": Case("oci-layout", ERROR, False, ERROR, "ok"),
    "wrong-version": Case("oci-layout", ERROR, False, ERROR, "ok"),
    "index-missing": Case("index.json", ERROR, False, ERROR, "ok"),
    "index-empty": Case("index.json", ERROR, False, ERROR, "ok"),
    "index-invalid-json": Case("index.json", ERROR, False, ERROR, "ok"),
    "index-bad-digest": Case("index.json", ERROR, False, ERROR, "ok"),
    "manifest-missing": Case(_blob("manifest-missing"), INTEGRITY, True, INTEGRITY, "ok", INTEGRITY),
    "manifest-truncated": Case(_blob("manifest-truncated"), ERROR, True, ERROR, "ok"),
    "layer-missing": Case(_blob("layer-missing"), INTEGRITY, True, INTEGRITY, "ok", INTEGRITY),
    "deep-nesting": Case("blobs/sha256/", ERROR, True, ERROR, None),
    "size-mismatch": Case(_blob("size-mismatch"), ERROR, True, OK, None),
    "digest-mismatch": Case(_blob("digest-mismatch"), OK, True, OK, None),
    "symlink-escape": Case(_blob("symlink-escape"), ERROR, True, OK, None),
    "symlink-escape-dir": Case("blobs/sha256", ERROR, True, ERROR, "ok"),
}
READ_COMMANDS = [["ls"], ["tags", "--all"], ["inspect"], ["graph"], ["graph", "-f", "graphml"], ["check"]]


def assert_one_error(r: Result, *fragments: str) -> None:
    """Exactly one ``error:`` line on stderr, naming every fragment (the file; the problem)."""
    assert len(r.error_lines) == 1, r
    for frag in fragments:
        assert frag in r.error_lines[0], (frag, r)


def assert_untouched(lay: Path, before: dict[str, tuple[str, str, int | None]]) -> None:
    assert snapshot(lay, control=False) == before
    control = lay / ".ocigc"
    if control.exists():  # at most the (empty) lock directory a released lock leaves
        assert [p for p in control.rglob("*") if not p.is_dir()] == []


def work_copy(name: str, tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str, int | None]]]:
    lay = copy_layout(BAD / name, tmp_path / name)
    age(lay)
    return lay, snapshot(lay, control=False)


def test_every_bad_fixture_has_a_case() -> None:
    assert sorted(CASES) == sorted(p.name for p in BAD.iterdir() if p.is_dir())
    for name, case in CASES.items():
        suggested = json.loads((BAD / name / "EXPECT.json").read_text())["suggested_error"]["exit_code"]
        if name not in ("size-mismatch", "digest-mismatch"):  # see the module docstring
            assert case.check == suggested, name


# --- read commands --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_read_commands_on_bad_fixture(name: str) -> None:
    case = CASES[name]
    lay = BAD / name
    before = snapshot(lay)
    for args in READ_COMMANDS:
        r = run([*args, lay])
        if args[0] == "check":
            continue
        if case.readable:
            assert r.code == OK and r.error_lines == [], (args, r)
        else:
            assert r.code == ERROR, (args, r)
            where = str(lay) if name == "no-oci-layout" and args[0] == "ls" else str(lay / case.where)
            assert_one_error(r, where)
    assert snapshot(lay) == before  # read-only commands write nothing, not even a lock


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_on_bad_fixture(name: str) -> None:
    case = CASES[name]
    lay = BAD / name
    verify = ["--verify-digests"] if name == "digest-mismatch" else []
    r = run(["check", "--wide", *verify, lay])
    expected = ERROR if verify else case.check
    assert r.code == expected, r
    if case.readable:
        assert r.error_lines == []  # the findings are the report, on stdout
        finding = [line for line in r.stdout.splitlines() if line.startswith(("  error:", "  dangling:"))]
        assert any(str(lay / case.where) in line for line in finding), r
        assert all(len(line) < 1000 for line in r.stdout.splitlines())
    else:
        where = str(lay) if name == "no-oci-layout" else str(lay / case.where)
        assert_one_error(r, where)
    r = run(["check", "--json", *verify, lay])
    assert r.code == expected
    if name == "no-oci-layout":  # nothing to report on: the error line, and the JSON error object
        assert len(r.error_lines) == 1
        assert r.json() == {"command": "check", "exit_code": ERROR, "error": r.error_lines[0][len("error: "):]}
        return
    doc = r.json()
    assert doc["exit_code"] == expected
    if not case.readable and name != "no-oci-layout":
        [rep] = doc["layouts"]
        assert [p["code"] for p in rep["problems"]] == ["layout"]


def test_check_codes_name_the_problem() -> None:
    def codes(name: str, *extra: str) -> set[str]:
        doc = run(["check", "--json", *extra, BAD / name]).json()
        return {p["code"] for lay in doc["layouts"] for p in lay["problems"] if p["severity"] in ("error",
                                                                                                 "dangling")}

    assert codes("manifest-missing") == {"missing-manifest"}
    assert codes("layer-missing") == {"missing-blob"}
    assert codes("manifest-truncated") == {"unparsable", "size-mismatch"}
    assert codes("size-mismatch") == {"size-mismatch"}
    assert codes("digest-mismatch", "--verify-digests") == {"digest-mismatch"}
    assert codes("symlink-escape") == {"symlink"}
    assert "symlink" in codes("symlink-escape-dir") and "missing-blob" not in codes("symlink-escape-dir")
    assert codes("deep-nesting") == {"unparsable"}


def test_inspect_shows_what_is_wrong() -> None:
    r = run(["inspect", f"{BAD / 'manifest-missing'}:target"])
    assert r.code == OK and "MISSING" in r.stdout.splitlines()[0]
    r = run(["inspect", f"{BAD / 'manifest-truncated'}:target"])
    assert r.code == OK and "ERROR: " in r.stdout and "invalid JSON" in r.stdout
    r = run(["inspect", "--json", f"{BAD / 'deep-nesting'}:deep"])
    assert r.code == OK
    node, depth = r.json()["trees"][0], 1
    while node["children"]:
        node, depth = node["children"][0], depth + 1
    assert depth <= 40  # the walk stopped at the depth guard instead of recursing 200 levels


# --- sweep and delete on a copy ------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep_bad_fixture_exit_code(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    lay, before = work_copy(name, tmp_path)
    r = run(["sweep", "--grace", "0", "--yes", lay])
    assert r.code == case.sweep, r
    if case.sweep != OK:
        where = str(lay) if name == "no-oci-layout" else str(lay / case.where)
        assert_one_error(r, where)
    assert_untouched(lay, before)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sweep_bad_fixture_changes_nothing(name: str, tmp_path: Path) -> None:
    lay, before = work_copy(name, tmp_path)
    for args in (["--dry-run"], ["--untagged"]):  # the plain run: test_sweep_bad_fixture_exit_code
        r = run(["sweep", "--grace", "0", "--json", *args, lay])
        assert r.code in (OK, ERROR, INTEGRITY), r
        assert_untouched(lay, before)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.delete))
def test_delete_on_bad_fixture_is_refused(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    assert case.delete
    lay, before = work_copy(name, tmp_path)
    r = run(["delete", "--yes", f"{lay}:{case.delete}"])
    assert r.code == case.delete_code, r
    where = str(lay / "oci-layout") if name == "no-oci-layout" else str(lay / case.where)
    assert_one_error(r, where)
    assert_untouched(lay, before)
    r = run(["delete", "--dry-run", "--json", f"{lay}:{case.delete}"])
    assert r.code == case.delete_code
    assert_untouched(lay, before)


@pytest.mark.parametrize("name", ["size-mismatch", "digest-mismatch", "deep-nesting"])
def test_legitimate_delete_on_a_content_problem_leaves_no_dangling_reference(name: str, tmp_path: Path) -> None:
    lay, _ = work_copy(name, tmp_path)
    tag = next(iter(facts(BAD / name)["tags"]))
    r = run(["delete", "--yes", "--json", f"{lay}:{tag}"])
    assert r.code == OK, r
    assert run(["check", lay]).code != INTEGRITY
    r = run(["sweep", "--grace", "0", lay])
    assert r.code == OK, r
    assert run(["check", lay]).code != INTEGRITY


def test_symlink_escape_fixture_never_touches_the_target(tmp_path: Path) -> None:
    lay, _ = work_copy("symlink-escape", tmp_path)
    [link] = facts(BAD / "symlink-escape")["symlinks"]
    target = Path(link["target"])
    st_before = target.stat() if target.exists() else None
    for args in (["sweep", "--grace", "0", lay], ["delete", "--yes", f"{lay}:ok"], ["check", "--verify-digests", lay],
                 ["delete", "--yes", f"{lay}:target"], ["sweep", "--grace", "0", lay]):
        run(args)
    if st_before is not None:
        st_after = target.stat()
        assert (st_after.st_size, st_after.st_mtime_ns, st_after.st_ino) == (
            st_before.st_size, st_before.st_mtime_ns, st_before.st_ino)


# --- hostile layouts ----------------------------------------------------------------------------------
HOSTILE_NAMES = ["bad\nname", "tab\there", "ünïcødé-blob", "x" * 255, " leading-space", "-rf", "a.b.c"]


def test_hostile_file_names_in_blobs(tmp_path: Path) -> None:
    lay = copy_layout(LAYOUTS / "skopeo-copy", tmp_path / "h")
    (lay / "EXPECT.json").unlink()
    for name in HOSTILE_NAMES:
        (lay / "blobs" / "sha256" / name).write_bytes(b"hostile")
    (lay / "blobs" / "sha256" / ("\N{SNOWMAN}" * 60)).write_bytes(b"long utf-8 name, 180 bytes")
    age(lay)
    hostile = {f"blobs/sha256/{n}" for n in [*HOSTILE_NAMES, "\N{SNOWMAN}" * 60]}
    r = run(["check", lay])
    assert r.code == OK, r  # warnings only
    warnings = [line for line in r.stdout.splitlines() if line.startswith("  warning:")]
    assert len(warnings) == len(hostile)  # one line each: the newline and the tab are escaped
    assert any("bad\\nname" in w for w in warnings) and any("tab\\there" in w for w in warnings)
    assert run(["check", "--strict", lay]).code == ERROR
    doc = run(["check", "--json", lay]).json()
    assert {p["path"] for p in doc["layouts"][0]["problems"] if p["code"] == "foreign-file"} == hostile
    for args in (["ls"], ["tags"], ["inspect"], ["graph"]):
        assert run([*args, lay]).code == OK
    before = snapshot(lay, control=False)
    r = run(["sweep", "--grace", "0", "--json", lay])
    assert r.code == OK, r
    reported = r.json()["layouts"][0]["plan"]["reported"]
    assert len(reported) == len(hostile)
    assert snapshot(lay, control=False) == before
    r = run(["sweep", "--grace", "0", lay], mode="proc")
    assert r.code == OK
    report_lines = [line for line in r.stdout.splitlines() if line.strip().startswith("report")]
    assert len(report_lines) == len(hostile)


def _outside_fifo(tmp_path: Path) -> Path:
    """A FIFO outside the layout: anything that opens it for reading hangs (the subprocess times out)."""
    fifo = tmp_path / "outside" / "fifo"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    return fifo


def test_symlinked_blob_leading_outside_is_never_read_or_deleted_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside-file"
    outside.write_bytes(b"precious data outside the layout")
    fifo = _outside_fifo(tmp_path)
    lay = tmp_path / "lay"
    b = LayoutBuilder(lay)
    link_digest = b.blob(b"what the link claims", OCI_LAYER, write=False)
    fifo_digest = b.blob(b"what the fifo link claims", OCI_LAYER, write=False)
    b.image("uses-link", [link_digest])  # a reachable layer that is a symlink to a FIFO
    b.save()
    for d, target in ((link_digest, fifo), (fifo_digest, outside)):
        os.symlink(target, lay / "blobs" / "sha256" / d["digest"].split(":")[1])
    unreachable = b.blob(b"x", OCI_LAYER, write=False)
    os.symlink(outside, lay / "blobs" / "sha256" / unreachable["digest"].split(":")[1])
    age(lay)
    os.utime(outside, (1_000_000_000, 1_000_000_000))
    before = (outside.read_bytes(), outside.stat().st_mtime_ns)
    for args in (["check", "--verify-digests", "--json"], ["inspect"], ["sweep", "--grace", "0", "--yes"]):
        r = run([*args, lay], mode="proc", timeout=120)  # a read through the FIFO link would hang: timeout
        assert r.code in (OK, ERROR), r
    assert (outside.read_bytes(), outside.stat().st_mtime_ns) == before
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    doc = run(["check", "--json", lay]).json()
    symlinked = {p["path"] for p in doc["layouts"][0]["problems"] if p["code"] == "symlink"}
    assert f"blobs/sha256/{link_digest['digest'].split(':')[1]}" in symlinked
    assert doc["exit_code"] == ERROR


def test_symlinked_blob_is_reported_and_kept(tmp_path: Path) -> None:
    outside = tmp_path / "outside-file"
    outside.write_bytes(b"precious")
    lay = tmp_path / "lay"
    b = LayoutBuilder(lay)
    b.image("a", [b"layer"])
    b.save()
    d = b.blob(b"x", OCI_LAYER, write=False)["digest"]
    link = lay / "blobs" / "sha256" / d.split(":")[1]
    os.symlink(outside, link)
    age(lay)
    r = run(["sweep", "--grace", "0", "--json", lay])
    assert any("symlink" in line for line in r.json()["layouts"][0]["plan"]["reported"])
    assert link.is_symlink(), "the sweep removed a symlink its own plan reported as never deleted"


@pytest.mark.parametrize("inside", [False, True], ids=["outside-layout", "inside-layout"])
def test_blobs_dir_symlinked(tmp_path: Path, inside: bool) -> None:
    lay = copy_layout(LAYOUTS / "umoci-tags", tmp_path / "lay")  # has garbage a sweep would remove
    (lay / "EXPECT.json").unlink()
    real = (lay / "elsewhere" if inside else tmp_path / "outside") / "sha256"
    real.parent.mkdir()
    os.rename(lay / "blobs" / "sha256", real)
    os.symlink(real, lay / "blobs" / "sha256")
    age(lay)
    age(real)
    before = snapshot(real.parent)
    lay_before = snapshot(lay, control=False)
    r = run(["check", lay])
    assert r.code == ERROR, r  # not 4: the blobs are not missing, they are behind a refused link
    assert "dangling:" not in r.stdout and str(lay / "blobs" / "sha256") in r.stdout
    for args in (["sweep", "--grace", "0", lay], ["delete", "--yes", f"{lay}:v2"],
                 ["sweep", "--grace", "0", "--untagged", lay]):
        r = run(args)
        assert r.code == ERROR, r
        assert_one_error(r, str(lay / "blobs" / "sha256"))
    assert snapshot(real.parent) == before
    assert_untouched(lay, lay_before)


@pytest.mark.parametrize("media_type", ["application/x-unknown-thing", "application/vnd.example.thing+json", ""])
def test_unknown_media_type_on_an_index_entry_keeps_its_content(tmp_path: Path, media_type: str) -> None:
    lay = copy_layout(LAYOUTS / "skopeo-copy", tmp_path / "u")
    (lay / "EXPECT.json").unlink()
    doc = json.loads((lay / "index.json").read_text())
    v2 = next(m for m in doc["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "v2")
    if media_type:
        v2["mediaType"] = media_type
    else:
        del v2["mediaType"]
    (lay / "index.json").write_text(json.dumps(doc))
    age(lay)
    before = present(lay)
    r = run(["check", "--json", lay])
    assert r.code == OK, r
    codes = {p["code"] for p in r.json()["layouts"][0]["problems"]}
    assert codes & {"unknown-media-type", "missing-media-type"} or media_type.endswith("+json")
    assert r.json()["layouts"][0]["reachable"] == len(before)
    r = run(["sweep", "--grace", "0", "--json", lay])
    assert r.code == OK, r
    assert present(lay) == before, "a sweep deleted content of an index.json entry with an unknown media type"
    r = run(["tags", "--json", lay])
    assert {t["media_type"] for t in r.json()["tags"] if t["tag"] == "v2"} == {media_type}


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=600))
def test_random_bytes_index_json(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    lay = copy_layout(LAYOUTS / "skopeo-copy", tmp_path_factory.mktemp("rnd") / "lay")
    (lay / "index.json").write_bytes(data)
    age(lay)
    before = snapshot(lay, control=False)
    # (sweep and delete re-read an unparsable index.json for 2 s before giving up (s3fs can show a
    # half-written one): delete is left to the fixtures' test_delete_on_bad_fixture_is_refused)
    for args in (["ls", lay], ["tags", lay], ["inspect", lay], ["graph", lay], ["check", lay],
                 ["sweep", "--grace", "0", lay]):
        r = run(args)
        assert r.code == ERROR, (args, r)
        assert_one_error(r, str(lay / "index.json"))
    assert_untouched(lay, before)


def test_sweep_that_removes_something_keeps_and_never_follows_a_reachable_digest_symlink(tmp_path: Path) -> None:
    """The plan counts a digest-named symlink as present and never removes it; the verification after
    the run agrees (it does not stat through the link, here one whose target is gone)."""
    lay = tmp_path / "lay"
    b = LayoutBuilder(lay)
    linked = b.blob(b"what the link claims", OCI_LAYER, write=False)
    b.image("uses-link", [linked])
    stray = b.blob(b"garbage", OCI_LAYER)
    b.save()
    link = lay / "blobs" / "sha256" / linked["digest"].split(":")[1]
    os.symlink(tmp_path / "gone", link)
    age(lay)
    r = run(["sweep", "--grace", "0", "--yes", "--json", lay])
    assert r.code == OK, r
    assert not (lay / "blobs" / "sha256" / stray["digest"].split(":")[1]).exists()
    assert link.is_symlink()
