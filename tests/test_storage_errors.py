"""Every OSError through the one error path (issue 18, items 1-4): a read-only layout (a read-only bind
mount), one the user cannot read (chmod 000, run as ``nobody``), a full file system (a full tmpfs; on
s3fs, a full staging directory), a store that went away (an s3fs mount whose endpoint stops: EIO), a
directory where a file should be. Each command gives ONE ``error:`` line naming the path and the
problem, the documented exit code, no traceback; with ``--json`` the error object on stdout; over a
root the next layout is still processed and ``--json-report`` is still written.

On local disk and on the s3fs mounts of moto and SeaweedFS (``layout_dir``); the bind mount of an
s3fs directory is the read-only bucket a second host may see.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.fixtures import S3FS_DIRS, selected_stores
from tests.harness.mounts import S3FS_RECOMMENDED_OPTIONS, S3fsMount
from tests.harness.objectstores import LatencyProxy, S3Server
from tests.kit.cli import ERROR, Result, run
from tests.kit.layouts import OCI_LAYER, LayoutBuilder
from tests.kit.tree import age, present
from tests.kit.unprivileged import nobody_runtime, run_as_nobody

WHERE = pytest.mark.parametrize("layout_dir", ["local", *S3FS_DIRS], indirect=True)
HANG = 180


def build(root: Path, name: str, tags: tuple[str, ...] = ("v1",)) -> tuple[str, str]:
    """A layout ``root/name``: an image per tag and an unreachable blob, every file 2 h old."""
    b = LayoutBuilder(root / name)
    first = ""
    for tag in tags:
        man = b.image(tag, [f"layer of {name} {tag}".encode()])
        first = first or str(man["digest"])
    garbage = b.blob(f"garbage of {name}".encode(), OCI_LAYER)
    b.save()
    age(root / name)
    return first, str(garbage["digest"])


def one_error(r: Result, *needles: str) -> str:
    """ONE ``error:`` line holding every needle, no traceback, and with ``--json`` the error object."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out, str(r)
    assert len(r.error_lines) == 1, str(r)
    line = r.error_lines[0]
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}\n{r}"
    return line


def json_error(r: Result, command: str) -> None:
    """With --json, the error is on stdout too: the error object of a command that failed as a whole,
    or (delete, sweep: a layout that failed) the layout's entry in the envelope."""
    message = r.error_lines[0].removeprefix("error: ")
    doc = r.json()
    assert doc["command"] == command and doc["exit_code"] == r.code, doc
    if "error" in doc:  # (and "via" when the layout is on a mounted bucket: how it was reached)
        assert {k: v for k, v in doc.items() if k != "via"} == {"command": command, "exit_code": r.code,
                                                                "error": message}
    else:
        assert [x["error"] for x in doc["layouts"] if x["error"]] == [message], doc


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` as a read-only bind mount of itself (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to make a read-only bind mount")
    if subprocess.run(["mount", "--bind", path, path], capture_output=True, check=False).returncode != 0:
        pytest.skip("bind mounts are not permitted here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", path], check=False, capture_output=True)


def trash_run(lay: Path) -> str:
    """Delete tag v2 with --trash: the run to restore or purge later."""
    r = run(["delete", "--yes", "--trash", f"{lay}:v2"])
    assert r.code == 0, r
    [name] = [p.name for p in (lay / ".ocigc" / "trash").iterdir()]
    return name


# --- item 1: a read-only layout -------------------------------------------------------------------------


@WHERE
def test_read_only_layout_every_writer_one_line(layout_dir: Path) -> None:
    root = layout_dir / "root"
    am, ag = build(root, "a", ("v1", "v2"))
    zm, zg = build(root, "z")
    a = root / "a"
    run_id = trash_run(a)
    (layout_dir / "f").write_text("f")
    report = layout_dir / "report.json"
    ro = "Read-only file system"
    with read_only(a):
        before = present(a)
        # a sweep of the root: a fails in one line, z is swept, the report is written
        r = run(["sweep", root, "--grace", "0", "--json-report", report])
        assert r.code == ERROR, r
        one_error(r, str(a), ro)
        assert zg not in present(root / "z") and zm in present(root / "z")
        doc = json.loads(report.read_text())
        assert doc["exit_code"] == ERROR and [e["layout"] for e in doc["errors"]] == ["a"]
        r = run(["sweep", root, "--grace", "0", "--json"])
        assert r.code == ERROR and [x["exit_code"] for x in r.json()["layouts"]] == [ERROR, 0], r
        # trash purge of the root: the same, layout by layout
        r = run(["trash", "purge", root])
        assert r.code == ERROR, r
        one_error(r, str(a), ro)
        # each writer on the layout itself: one line, and with --json the error object
        for command, args in (
            ("delete", ["delete", "--yes", f"{a}:v1"]),
            ("exec", ["exec", a, "--", "true"]),
            ("trash restore", ["trash", "restore", a, run_id]),
            ("push", ["push", f"{a}:v3", "f"]),
            ("tag", ["tag", f"{a}:v1", "v3"]),
        ):
            r = run(args, cwd=layout_dir)
            assert r.code == ERROR, (command, r)
            one_error(r, str(a), ro)
            j = run([*args[:len(command.split())], "--json", *args[len(command.split()):]], cwd=layout_dir)
            assert j.code == ERROR, (command, j)
            json_error(j, command)
        assert present(a) == before
    assert am in present(a) and ag in present(a)


# --- EACCES: chmod 000, as an unprivileged user ------------------------------------------------------------


@pytest.fixture
def as_nobody() -> Callable[[list[object], Path], Result]:
    """``call(args, cwd)``: ``ocigc ARGS`` as ``nobody`` through setpriv (root ignores mode bits)."""
    nobody_runtime()

    def call(args: list[object], cwd: Path) -> Result:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "COLUMNS": "200", "OCIGC_ALLOW_UNSAFE_MOUNT": "1"}
        p = run_as_nobody([os.fspath(a) for a in args], env, cwd=cwd, timeout=HANG)  # type: ignore[arg-type]
        return Result(p.returncode, p.stdout, p.stderr)

    return call


def _open_up(path: Path) -> None:
    """Every directory from ``path`` up to / searchable by others (pytest's tmp dirs are 0700)."""
    for p in [path, *path.parents]:
        if p == Path("/"):
            break
        with contextlib.suppress(OSError):
            os.chmod(p, os.stat(p).st_mode | 0o005)


# Local disk and s3fs on moto. Not SeaweedFS: s3fs answers a chown of a directory there with ENOENT (it cannot
# rewrite the directory object's metadata through SeaweedFS's filer), so the test could not set up "nobody may
# read this layout"; what ocigc does with EACCES does not depend on the store.
@pytest.mark.parametrize("where", ["local", pytest.param("s3fs-moto", marks=pytest.mark.s3fs)])
def test_permission_denied_one_line_per_layout(where: str, tmp_path: Path, as_nobody: Callable[..., Result],
                                               request: pytest.FixtureRequest) -> None:
    if where == "local":
        base = tmp_path / "base"
        base.mkdir()
    else:  # an s3fs mount others may use (allow_other): s3fs checks the mode bits it stores
        store = where.removeprefix("s3fs-")
        if store not in selected_stores():
            pytest.skip(f"store {store} not selected (OCIGC_TEST_STORES)")
        server: S3Server = request.getfixturevalue(f"{store}_server")
        mount: S3fsMount = request.getfixturevalue("s3fs_any_store")(
            server.create_bucket("eacces"), server, (*S3FS_RECOMMENDED_OPTIONS, "allow_other"))
        base = mount.mount_point / "base"
        base.mkdir()
    _open_up(base)
    root = base / "root"
    build(root, "a")
    zm, zg = build(root, "z")
    try:
        for dirpath, dirs, files in os.walk(root):
            for n in [*dirs, *files]:
                os.chown(Path(dirpath) / n, 65534, 65534, follow_symlinks=False)
            os.chown(dirpath, 65534, 65534)
    except FileNotFoundError as e:
        raise AssertionError(f"{where}: cannot change the owner of {e.filename}: the test cannot set up EACCES") from e
    (root / "a").chmod(0)  # chmod 000: nobody can read or write layout a
    try:
        r = as_nobody(["sweep", root, "--grace", "0"], base)
        assert r.code == ERROR, r
        assert "sweep z" in r.stdout and "done: removed 0 entries, 1 blobs" in r.stdout, r
        one_error(r, str(root / "a"), "Permission denied")
        assert zg not in present(root / "z") and zm in present(root / "z")
        for command, args in (("tags", ["tags", root / "a"]), ("delete", ["delete", "--yes", f"{root / 'a'}:v1"]),
                              ("exec", ["exec", root / "a", "--", "true"])):
            r = as_nobody(args, base)
            assert r.code == ERROR, (command, r)
            one_error(r, str(root / "a"), "Permission denied")
            json_error(as_nobody([args[0], "--json", *args[1:]], base), command)
    finally:
        (root / "a").chmod(0o755)


# --- ENOSPC: a full file system ------------------------------------------------------------------------------


@contextlib.contextmanager
def full_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    """A small tmpfs at ``path``, to be filled by the caller (root only)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("tmpfs mounts are not permitted here")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False, capture_output=True)


def fill(path: Path) -> None:
    """Write until the file system holding ``path`` is full."""
    with open(path / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)


def test_full_file_system_one_line_and_next_layout(tmp_path: Path) -> None:
    root = tmp_path / "root"
    zm, zg = build(root, "z")
    with full_tmpfs(root / "a"):
        am, ag = build(root, "a", ("v1", "v2"))
        fill(root / "a")
        (tmp_path / "f").write_bytes(b"x" * 65536)
        report = tmp_path / "report.json"
        r = run(["sweep", root, "--grace", "0", "--json-report", report])
        assert r.code == ERROR, r
        one_error(r, str(root / "a"), "No space left on device")
        assert zg not in present(root / "z") and zm in present(root / "z")
        assert json.loads(report.read_text())["exit_code"] == ERROR
        assert ag in present(root / "a")
        for command, args in (("push", ["push", f"{root / 'a'}:v3", "f"]),
                              ("delete", ["delete", "--yes", f"{root / 'a'}:v1"]),
                              ("tag", ["tag", f"{root / 'a'}:v1", "v3"])):
            r = run(args, cwd=tmp_path)
            assert r.code == ERROR, (command, r)
            one_error(r, str(root / "a"), "No space left on device")
            json_error(run([args[0], "--json", *args[1:]], cwd=tmp_path), command)
        assert am in present(root / "a")


@pytest.mark.s3fs
def test_full_staging_directory_of_s3fs(tmp_path: Path, s3fs_factory: Callable[..., S3fsMount],
                                        make_bucket: Callable[..., str]) -> None:
    """s3fs stages what is written in its ``tmpdir`` before the upload: a full one is ENOSPC (or the EIO
    s3fs makes of it), one line naming the file."""
    with full_tmpfs(tmp_path / "staging", "64m") as staging:  # s3fs wants room when it starts
        mount = s3fs_factory(make_bucket("enospc"), (*S3FS_RECOMMENDED_OPTIONS, f"tmpdir={staging}"))
        root = mount.mount_point / "root"
        build(root, "a")
        fill(staging)
        (tmp_path / "f").write_bytes(os.urandom(512 * 1024))
        r = run(["push", f"{root / 'a'}:v2", "f"], cwd=tmp_path)
        assert r.code == ERROR, r
        line = one_error(r, str(root / "a"))
        assert "No space left on device" in line or "Input/output error" in line, line
        json_error(run(["push", "--json", f"{root / 'a'}:v2", "f"], cwd=tmp_path), "push")


# --- EIO: the store behind an s3fs mount went away --------------------------------------------------------------


@pytest.mark.s3fs
@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)  # s3fs's EIO, whichever store went away: one store
def test_store_gone_behind_the_mount_is_one_line(s3_server: S3Server, proxy_factory: Callable[..., LatencyProxy],
                                                 s3fs_factory: Callable[..., S3fsMount],
                                                 make_bucket: Callable[..., str], tmp_path: Path) -> None:
    proxy = proxy_factory(s3_server)
    mount = s3fs_factory(make_bucket("eio"), (*S3FS_RECOMMENDED_OPTIONS, "retries=1", "connect_timeout=2",
                                              "readwrite_timeout=5"), server=proxy)
    root = mount.mount_point / "root"
    build(root, "a")
    (tmp_path / "f").write_text("f")
    proxy.stop()  # every request of s3fs now fails: EIO (or ENOENT for what it cannot list)
    for command, args in (("push", ["push", f"{root / 'a'}:v2", "f"]), ("sweep", ["sweep", root, "--grace", "0"]),
                          ("check", ["check", root]), ("tags", ["tags", root / "a"])):
        r = run(args, mode="proc", cwd=tmp_path, timeout=HANG)
        assert r.code == ERROR, (command, r)
        one_error(r, str(root))


# --- EISDIR and ENOTDIR: a directory where a file should be, and the reverse ----------------------------------------


@WHERE
def test_directory_where_index_json_should_be(layout_dir: Path) -> None:
    root = layout_dir / "root"
    build(root, "a")
    zm, zg = build(root, "z")
    index = root / "a" / "index.json"
    index.unlink()
    index.mkdir()
    for command, args in (("tags", ["tags", root / "a"]), ("delete", ["delete", "--yes", f"{root / 'a'}:v1"]),
                          ("exec", ["exec", root / "a", "--", "true"]), ("tag", ["tag", f"{root / 'a'}:v1", "v2"])):
        r = run(args)
        assert r.code == ERROR, (command, r)
        one_error(r, str(index), "is a directory")
    r = run(["sweep", root, "--grace", "0"])
    assert r.code == ERROR, r
    one_error(r, str(index), "is a directory")
    assert zg not in present(root / "z") and zm in present(root / "z")
