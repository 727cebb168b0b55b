"""Odd things where a layout's files should be (issue 14, item 9 and the layout-name part of 10),
through the real CLI: ``blobs`` a file, an unreadable ``blobs/sha256``, a layout the user cannot
write, ``.ocigc`` or ``.ocigc/journal`` a file, JSON nested 60,000 deep, FIFOs and devices where
``index.json``, ``oci-layout``, blobs or lock files should be, a control character in a layout name.

Each must give ONE ``error:`` line naming the path and the problem, the documented exit code, no
traceback and no hang, nothing deleted in that layout, and the next layout still processed (its
garbage removed by a real sweep; ``--json-report`` still written). ``docs/design.md``, "Bad input".

Local disk and the s3fs ``layout_dir`` where s3fs can express the input. Local only: FIFOs, device
symlinks (an object store holds bytes: s3fs cannot create a FIFO or a symlink to ``/dev/zero``),
permissions (the harness's s3fs mount is the mounting user's, mode bits are advisory metadata
there and root ignores them anyway: the permission cases run the CLI as ``nobody``), and newlines in
names (kept to local disk: an s3fs key with a newline is not something s3fs lists reliably).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.fixtures import S3FS_DIRS
from tests.kit.cli import ERROR, LOCK_BUSY, OK, Result, run
from tests.kit.layouts import OCI_LAYER, LayoutBuilder, blob_path
from tests.kit.tree import age, present
from tests.kit.unprivileged import nobody_runtime, run_as_nobody

WHERE = pytest.mark.parametrize("layout_dir", ["local", *S3FS_DIRS], indirect=True)
#: A hang is a failure, not a stuck test run.
HANG = 120
DEEP = 60_000


def build(root: Path, name: str) -> tuple[str, str]:
    """A tagged image plus one unreachable blob; every file 2 h old. Returns (manifest, garbage)."""
    b = LayoutBuilder(root / name)
    man = b.image("v1", [f"layer of {name}".encode()])
    garbage = b.blob(f"garbage of {name}".encode(), OCI_LAYER)
    b.save()
    age(root / name)
    return str(man["digest"]), str(garbage["digest"])


def files(root: Path) -> dict[str, int]:
    """Every entry under ``root`` with its size, never opening one (a FIFO would block a reader).
    ``.ocigc/`` is left out: a refused real run may take (and release) a lock there."""
    out: dict[str, int] = {}
    for dirpath, dirs, names in os.walk(root):
        for n in [*dirs, *names]:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if rel.split("/")[0] != ".ocigc":
                out[rel] = p.lstat().st_size if not p.is_dir() else -1
    return out


def one_error(r: Result, *needles: str) -> str:
    """Exactly one ``error:`` line on stderr, holding every needle; no traceback anywhere."""
    assert "Traceback" not in r.stderr + r.stdout, str(r)
    lines = r.error_lines
    assert len(lines) == 1, str(r)
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}\n{r}"
    return lines[0]


# --- blobs is a file --------------------------------------------------------------------------


@WHERE
@pytest.mark.parametrize("blobs", ["blobs", "blobs/sha256"])
@pytest.mark.parametrize("command", ["check", "ls", "sweep", "delete"])
def test_blobs_is_a_file_one_line_and_next_layout_processed(layout_dir: Path, command: str, blobs: str) -> None:
    build(layout_dir, "a")
    _, zg = build(layout_dir, "z")
    shutil.rmtree(layout_dir / "a" / blobs)
    (layout_dir / "a" / blobs).write_text("not a directory")
    before = files(layout_dir / "a")
    args: list[str | os.PathLike[str]] = {
        "check": ["check", layout_dir], "ls": ["ls", layout_dir], "sweep": ["sweep", layout_dir, "--dry-run"],
        "delete": ["delete", "--yes", f"{layout_dir / 'a'}:v1"]}[command]
    r = run(args)
    assert r.code == ERROR, str(r)
    one_error(r, f"{layout_dir / 'a' / blobs}: Not a directory")
    assert files(layout_dir / "a") == before
    if command == "check":
        assert "z: ok" in r.stdout, str(r)
    elif command == "ls":
        assert any(line.startswith("z ") for line in r.stdout.splitlines()), str(r)
    elif command == "sweep":
        assert "sweep z" in r.stdout and zg[:19] in r.stdout, str(r)
    assert zg in present(layout_dir / "z")


@WHERE
def test_blobs_is_a_file_real_sweep_sweeps_the_next_layout_and_writes_the_report(layout_dir: Path,
                                                                                   tmp_path: Path) -> None:
    build(layout_dir, "a")
    zm, zg = build(layout_dir, "z")
    shutil.rmtree(layout_dir / "a" / "blobs")
    (layout_dir / "a" / "blobs").write_text("not a directory")
    before = files(layout_dir / "a")
    report = tmp_path / "report.json"
    r = run(["sweep", layout_dir, "--grace", "0s", "--json-report", report])
    assert r.code == ERROR, str(r)
    one_error(r, "a/blobs", "Not a directory")
    assert files(layout_dir / "a") == before
    assert zg not in present(layout_dir / "z") and zm in present(layout_dir / "z")
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == ERROR
    assert "Not a directory" in json.dumps(doc)


# --- .ocigc or .ocigc/journal a file ----------------------------------------------------------


@WHERE
@pytest.mark.parametrize("control", [".ocigc", ".ocigc/journal", ".ocigc/trash"])
def test_control_path_is_a_file_nothing_removed_next_layout_swept(layout_dir: Path, control: str,
                                                                  tmp_path: Path) -> None:
    am, ag = build(layout_dir, "a")
    _, zg = build(layout_dir, "z")
    target = layout_dir / "a" / control
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("in the way")
    report = tmp_path / "report.json"
    trash = ["--trash"] if control.endswith("trash") else []
    r = run(["sweep", layout_dir, "--grace", "0s", "--json-report", report, *trash])
    assert r.code == ERROR, str(r)
    one_error(r, str(layout_dir / "a" / ".ocigc"), "Not a directory")
    assert ag in present(layout_dir / "a"), "a blob was removed although the run could not journal it"
    assert zg not in present(layout_dir / "z")
    assert json.loads(report.read_text())["exit_code"] == ERROR
    # a real delete stops before it changes anything too
    r = run(["delete", "--yes", f"{layout_dir / 'a'}:v1", *trash])
    assert r.code == ERROR, str(r)
    one_error(r, "a/.ocigc", "Not a directory")
    assert am in present(layout_dir / "a")
    assert "v1" in (layout_dir / "a" / "index.json").read_text()


# --- JSON bounded in depth and size -----------------------------------------------------------


@WHERE
def test_lock_file_of_60000_brackets(layout_dir: Path) -> None:
    _, ag = build(layout_dir, "a")
    locks = layout_dir / "a" / ".ocigc" / "locks"
    locks.mkdir(parents=True)
    (locks / "repo~S~deadbeef~00000001.json").write_text("[" * DEEP)
    (locks / "x.json").write_text("[" * DEEP)
    r = run(["locks", "list", layout_dir / "a"])
    assert r.code == OK and "Traceback" not in r.stderr, str(r)
    assert "nested deeper than" in r.stdout, str(r)
    r = run(["sweep", layout_dir / "a", "--grace", "0s"])
    assert r.code == LOCK_BUSY, str(r)  # an unreadable lock is held until it is stale (docs/locking.md)
    one_error(r, "lock busy")
    assert ag in present(layout_dir / "a")
    r = run(["delete", "--yes", f"{layout_dir / 'a'}:v1", "--dry-run"])
    assert r.code == OK and "Traceback" not in r.stderr, str(r)


def _deep_value(depth: int = DEEP) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("where", ["index.json", "oci-layout", "manifest"])
def test_deeply_nested_json_is_one_line_and_nothing_removed(tmp_path: Path, where: str) -> None:
    b = LayoutBuilder(tmp_path / "a")
    if where == "manifest":
        cfg = b.blob(b"{}", "application/vnd.oci.image.config.v1+json")
        raw = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":'
               + json.dumps(cfg).encode() + b',"layers":[],"annotations":{"x":' + _deep_value() + b"}}")
        man = b.blob(raw, "application/vnd.oci.image.manifest.v1+json")
        b.add(man, "v1")
    else:
        b.image("v1", [b"layer"])
    garbage = b.blob(b"garbage", OCI_LAYER)["digest"]
    b.save()
    lay = tmp_path / "a"
    if where == "index.json":
        (lay / "index.json").write_bytes(b'{"schemaVersion":2,"manifests":[],"annotations":{"x":' + _deep_value()
                                         + b"}}")
        path = lay / "index.json"
    elif where == "oci-layout":
        (lay / "oci-layout").write_bytes(b'{"imageLayoutVersion":' + _deep_value(30_000) + b"}")  # < 64 KiB
        path = lay / "oci-layout"
    else:
        path = blob_path(lay, man["digest"])
    age(lay)
    before = files(lay)
    r = run(["check", "--wide", lay])
    assert r.code == ERROR, str(r)
    assert "Traceback" not in r.stderr and "nested deeper than" in r.stdout + r.stderr, str(r)
    assert str(path) in r.stdout + r.stderr, str(r)
    r = run(["sweep", lay, "--grace", "0s"])
    assert r.code == ERROR, str(r)
    one_error(r, str(path), "nested deeper than")
    assert files(lay) == before and garbage in present(lay)


def test_index_json_over_the_size_cap_is_refused_unparsed(tmp_path: Path) -> None:
    from ocigc.layout.layout import MAX_INDEX_BYTES

    build(tmp_path, "a")
    idx = tmp_path / "a" / "index.json"
    body = idx.read_bytes()
    with idx.open("wb") as f:  # valid JSON padded past the cap: refused for its size, never parsed
        f.write(body[:-1] + b" " * (MAX_INDEX_BYTES + 1 - len(body)) + b"}")
    r = run(["check", tmp_path / "a"])
    assert r.code == ERROR, str(r)
    one_error(r, str(idx), "larger than 64 MiB")


def test_journal_and_trash_records_nested_deeply_are_skipped_or_reported(tmp_path: Path) -> None:
    from ocigc.layout.journal import read_records
    from ocigc.layout.layout import Layout
    from ocigc.storage.local import LocalStorage

    build(tmp_path, "a")
    lay = tmp_path / "a"
    (lay / ".ocigc" / "journal").mkdir(parents=True)
    (lay / ".ocigc" / "journal" / "20260101T000000.000000Z-h-1-x-sweep.json").write_bytes(_deep_value())
    (lay / ".ocigc" / "journal" / "20260101T000001.000000Z-h-1-y-sweep.json").write_text('{"kind": "sweep"}')
    assert [r["kind"] for r in read_records(Layout(LocalStorage(lay)))] == ["sweep"]
    run_dir = lay / ".ocigc" / "trash" / "20260101T000000.000000Z-h-1-abcdef12"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_bytes(_deep_value())
    (run_dir / "entries.json").write_bytes(_deep_value())
    r = run(["trash", "list", lay])
    assert "Traceback" not in r.stderr and "nested deeper than" in r.stdout + r.stderr, str(r)


# --- FIFOs and devices (local disk only: an object store holds bytes) ---------------------------


def test_index_json_fifo_sweep_root_neither_hangs_nor_stops_the_run(tmp_path: Path) -> None:
    root = tmp_path / "root"
    build(root, "a")
    zm, zg = build(root, "z")
    (root / "a" / "index.json").unlink()
    os.mkfifo(root / "a" / "index.json")
    before = files(root / "a")
    r = run(["sweep", root, "--dry-run"], mode="proc", timeout=HANG)
    assert r.code == ERROR, str(r)
    one_error(r, str(root / "a" / "index.json"), "FIFO")
    assert "sweep z" in r.stdout
    report = tmp_path / "report.json"
    r = run(["sweep", root, "--grace", "0s", "--json-report", report], mode="proc", timeout=HANG)
    assert r.code == ERROR, str(r)
    one_error(r, "index.json", "FIFO")
    assert files(root / "a") == before
    assert zg not in present(root / "z") and zm in present(root / "z")
    assert json.loads(report.read_text())["exit_code"] == ERROR


@pytest.mark.parametrize("name", ["index.json", "oci-layout"])
def test_symlink_to_dev_zero_is_refused_unread(tmp_path: Path, name: str) -> None:
    build(tmp_path, "a")
    (tmp_path / "a" / name).unlink()
    os.symlink("/dev/zero", tmp_path / "a" / name)
    for args in (["check", tmp_path / "a"], ["sweep", tmp_path / "a", "--dry-run"], ["ls", tmp_path / "a"]):
        r = run(args, mode="proc", timeout=HANG)
        assert r.code == ERROR, str(r)
        one_error(r, str(tmp_path / "a" / name), "character device")


def test_fifos_in_blobs_and_locks_never_block(tmp_path: Path) -> None:
    _, ag = build(tmp_path, "a")
    lay = tmp_path / "a"
    fifo_blob = lay / "blobs" / "sha256" / ("ab" * 32)
    os.mkfifo(fifo_blob)
    (lay / ".ocigc" / "locks").mkdir(parents=True)
    os.mkfifo(lay / ".ocigc" / "locks" / "repo~S~deadbeef~00000001.json")
    r = run(["check", "--wide", "--verify-digests", lay], mode="proc", timeout=HANG)
    assert r.code == ERROR, str(r)
    assert f"{fifo_blob}: cannot read: not a regular file (a FIFO" in r.stdout, str(r)
    r = run(["locks", "list", lay], mode="proc", timeout=HANG)
    assert r.code == OK and "FIFO" in r.stdout, str(r)
    r = run(["sweep", lay, "--grace", "0s"], mode="proc", timeout=HANG)
    assert r.code == LOCK_BUSY, str(r)
    assert ag in present(lay)


def test_reachable_manifest_that_is_a_fifo_stops_the_layout(tmp_path: Path) -> None:
    am, _ = build(tmp_path, "a")
    lay = tmp_path / "a"
    man = blob_path(lay, am)
    man.unlink()
    os.mkfifo(man)
    before = files(lay)
    r = run(["sweep", lay, "--grace", "0s"], mode="proc", timeout=HANG)
    assert r.code == ERROR, str(r)
    one_error(r, str(man), "FIFO")
    assert files(lay) == before


# --- permissions: run as an unprivileged user (root ignores mode bits) --------------------------


@pytest.fixture
def as_nobody() -> Iterator[tuple[Path, object]]:
    """A scratch directory ``nobody`` can reach, and ``call(args) -> Result`` running ``ocigc`` as
    ``nobody`` through setpriv (util-linux)."""
    nobody_runtime()
    base = Path(tempfile.mkdtemp(prefix="ocigc-nobody-", dir="/tmp"))
    base.chmod(0o755)

    def call(args: list[str | os.PathLike[str]]) -> Result:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
        p = run_as_nobody(args, env, timeout=HANG)
        return Result(p.returncode, p.stdout, p.stderr)

    try:
        yield base, call
    finally:
        for dirpath, dirs, _ in os.walk(base):
            for d in dirs:
                os.chmod(Path(dirpath) / d, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def _chown_tree(root: Path, uid: int) -> None:
    os.chown(root, uid, uid)
    for dirpath, dirs, names in os.walk(root):
        for n in [*dirs, *names]:
            os.chown(Path(dirpath) / n, uid, uid, follow_symlinks=False)


def test_unreadable_blob_dir_as_unprivileged_user(as_nobody: tuple[Path, object]) -> None:
    base, call = as_nobody
    assert callable(call)
    root = base / "root"
    build(root, "a")
    _, zg = build(root, "z")
    alg = root / "a" / "blobs" / "sha256"
    alg.chmod(0)
    r = call(["check", root])
    assert r.code == ERROR, str(r)
    one_error(r, str(alg), "Permission denied")
    assert "z: ok" in r.stdout
    r = call(["sweep", root, "--dry-run"])
    assert r.code == ERROR, str(r)
    one_error(r, str(alg), "Permission denied")
    assert "sweep z" in r.stdout and zg[:19] in r.stdout


def test_layout_the_user_cannot_write_does_not_stop_the_root(as_nobody: tuple[Path, object]) -> None:
    base, call = as_nobody
    assert callable(call)
    root = base / "root"
    _, ag = build(root, "a")  # root's: nobody can read it, not write it
    zm, zg = build(root, "z")
    _chown_tree(root / "z", 65534)
    report_dir = base / "reports"
    report_dir.mkdir()
    _chown_tree(report_dir, 65534)
    report = report_dir / "report.json"
    r = call(["sweep", root, "--grace", "0s", "--json-report", report])
    assert r.code == ERROR, str(r)
    one_error(r, str(root / "a" / ".ocigc"), "Permission denied")
    assert ag in present(root / "a")
    assert zg not in present(root / "z") and zm in present(root / "z")
    assert json.loads(report.read_text())["exit_code"] == ERROR


def test_read_only_layout_does_not_stop_the_root(tmp_path: Path) -> None:
    """EROFS, for real: layout ``a`` on a read-only bind mount."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to make a read-only bind mount")
    root = tmp_path / "root"
    am, ag = build(root, "a")
    zm, zg = build(root, "z")
    a = root / "a"
    if subprocess.run(["mount", "--bind", a, a], capture_output=True, check=False).returncode != 0:
        pytest.skip("bind mounts are not permitted here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", a], check=True, capture_output=True)
        before = files(a)
        report = tmp_path / "report.json"
        r = run(["sweep", root, "--grace", "0s", "--json-report", report])
        assert r.code == ERROR, str(r)
        one_error(r, str(a / ".ocigc"), "Read-only file system")
        assert zg not in present(root / "z") and zm in present(root / "z")
        assert json.loads(report.read_text())["exit_code"] == ERROR
        r = run(["delete", "--yes", f"{a}:v1"])
        assert r.code == ERROR, str(r)
        one_error(r, "Read-only file system")
        assert files(a) == before and ag in present(a) and am in present(a)
    finally:
        subprocess.run(["umount", a], check=False)


def test_a_removal_the_storage_refuses_is_an_error(as_nobody: tuple[Path, object]) -> None:
    """The layout is nobody's, ``blobs/sha256`` is root's: the lock and the journal can be written, the
    unlink of the garbage cannot (EACCES). The run must not exit 0 as if it had done its plan."""
    base, call = as_nobody
    assert callable(call)
    root = base / "root"
    _, ag = build(root, "a")
    _chown_tree(root / "a", 65534)
    os.chown(root / "a" / "blobs" / "sha256", 0, 0)
    r = call(["sweep", root / "a", "--grace", "0s"])
    assert r.code == ERROR, str(r)
    one_error(r, "1 removal(s) failed", ag.split(":")[1], "Permission denied")
    assert ag in present(root / "a")


# --- control characters in layout names ---------------------------------------------------------


def test_newline_in_layout_name_is_escaped_everywhere(tmp_path: Path) -> None:
    root = tmp_path / "root"
    am, _ = build(root, "bad\nname")
    blob_path(root / "bad\nname", am).unlink()  # a problem to report, so the path is printed too
    raw, escaped = "bad\nname", "bad\\nname"
    for args in (["check", root], ["ls", root], ["sweep", root, "--dry-run"], ["check", "--json", root],
                 ["sweep", root / raw, "--dry-run"], ["delete", "--yes", f"{root / raw}:v1", "--dry-run"]):
        r = run(args)
        out = r.stdout + r.stderr
        assert raw not in out, f"{args}: raw newline in the output\n{r}"
        assert escaped in out or "--json" in args, f"{args}\n{r}"
        assert "Traceback" not in out
    r = run(["delete", "--yes", f"{root / 'gone'}\n:v1"])
    assert r.code == ERROR
    one_error(r, "gone\\n: no such directory")
