"""The waits of the lock-file protocol are said, not sat through in silence: one line per settle
delay on stderr when it is a terminal or with --verbose; nothing in a pipe (cron) or with --quiet."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness.fixtures import S3FS_DIRS
from tests.harness.tools import loopback_env, ocigc_command, run_ocigc

SETTLE_LINES = (
    re.compile(r": shared lock written, waiting for it to settle \([\d.]+s\)"),
    re.compile(r": exclusive lock written, waiting for it to settle \([\d.]+s\)"),
    re.compile(r": index\.json written, checking that no other writer replaced it \([\d.]+s\)"),
)


def _said(stderr: str) -> list[bool]:
    return [bool(p.search(stderr)) for p in SETTLE_LINES]


@pytest.mark.parametrize("layout_dir", S3FS_DIRS[:1], indirect=True)
def test_a_tag_on_a_mount_says_each_settle_wait_with_verbose_and_nothing_in_a_pipe(layout_dir: Path,
                                                                                  tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hello\n")
    r = run_ocigc("push", f"{layout_dir}:v1", "f.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _said(r.stderr) == [False, False, False], r.stderr  # a pipe, no --verbose: cron logs stay quiet
    r = run_ocigc("tag", "-v", f"{layout_dir}:v1", "v2")
    assert r.returncode == 0, r.stderr
    # two waits: the index hold's and the write's re-read; a shared lock is taken without one
    assert _said(r.stderr) == [False, True, True], r.stderr
    r = run_ocigc("--verbose", "--quiet", "tag", f"{layout_dir}:v1", "v3")
    assert r.returncode == 0, r.stderr
    assert _said(r.stderr) == [False, False, False], r.stderr


def _on_a_terminal(*args: str, cwd: Path, env: dict[str, str]) -> str:
    """Run ocigc with stderr on a pseudo-terminal; what it wrote there."""
    leader, follower = os.openpty()
    try:
        proc = subprocess.run([*ocigc_command(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=follower, cwd=cwd, env=env, timeout=120, check=False)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert proc.returncode == 0, b"".join(chunks)
    return b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_each_settle_wait_is_said_unless_quiet(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hello\n")
    env = {**loopback_env(), "NO_COLOR": "1", "OCIGC_LOCK_SETTLE": "0.6"}
    said = _on_a_terminal("push", "L:v1", "f.txt", cwd=tmp_path, env=env)
    assert _said(said) == [False, True, True], said
    assert said.count("waiting for it to settle (0.6s)") == 1, said  # the index hold's, once
    said = _on_a_terminal("-q", "tag", "L:v1", "v2", cwd=tmp_path, env=env)
    assert _said(said) == [False, False, False], said
    # a local disk's own settle (0.02 s) is not worth a line
    env.pop("OCIGC_LOCK_SETTLE")
    said = _on_a_terminal("tag", "L:v1", "v3", cwd=tmp_path, env=env)
    assert _said(said) == [False, False, False], said


def test_a_sweep_waits_twice_the_settle_delay_for_its_exclusive_lock(tmp_path: Path) -> None:
    """The repository's exclusive lock (a sweep) settles 2 x settle: what lets every shared lock (a
    push, a tag, a delete) be taken without a wait (docs/locking.md, "Acquiring")."""
    import hashlib

    (tmp_path / "f.txt").write_text("hello\n")
    env = {**loopback_env(), "NO_COLOR": "1", "OCIGC_LOCK_SETTLE": "0.6"}
    _on_a_terminal("push", "L:v1", "f.txt", cwd=tmp_path, env=env)
    garbage = b"nothing references this\n"
    (tmp_path / "L" / "blobs" / "sha256" / hashlib.sha256(garbage).hexdigest()).write_bytes(garbage)
    said = _on_a_terminal("sweep", "L", "--grace", "0", "--yes", cwd=tmp_path, env=env)
    assert "exclusive lock written, waiting for it to settle (1.2s)" in said, said
    assert "shared lock written" not in said, said
