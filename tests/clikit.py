"""Helpers for the CLI tests: run ``ocigc`` in-process (typer's CliRunner) or as the installed
script in a subprocess, read the fixtures' EXPECT.json, snapshot trees (symlinks included).

Used by test_cli_read, test_cli_gc, test_bad_layouts, test_interop and test_crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
LAYOUTS = FIXTURES / "layouts"
BAD = FIXTURES / "bad"
REAL = FIXTURES / "real"
#: The console script pip installed next to the interpreter running the tests.
OCIGC = str(Path(sys.executable).parent / "ocigc")
MODES = ["runner", "proc"]
SUBPROCESS_TIMEOUT = 300

#: Exit codes, from docs/cli.md (asserted literally: a test must fail if errors.py drifts).
OK, ERROR, USAGE, LOST_RACE, INTEGRITY, UNSAFE_MOUNT, LOCK_BUSY, INTERRUPTED = 0, 1, 2, 3, 4, 5, 75, 130


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    env.pop("OCIGC_STORAGE_STATS", None)
    return env


def run(args: list[str | os.PathLike[str]], mode: str = "runner", cwd: Path | None = None,
        timeout: float = SUBPROCESS_TIMEOUT) -> Result:
    """``ocigc ARGS`` in-process (``runner``) or as the installed script (``proc``)."""
    argv = [os.fspath(a) for a in args]
    if mode == "proc":
        p = subprocess.run([OCIGC, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           cwd=cwd, env=cli_env(), timeout=timeout, check=False)
        res = Result(p.returncode, p.stdout, p.stderr)
    else:
        from ocigc.cli import app

        old = Path.cwd()
        if cwd is not None:
            os.chdir(cwd)
        try:
            r = CliRunner().invoke(app, argv, catch_exceptions=True, env={"COLUMNS": "200", "NO_COLOR": "1"})
        finally:
            os.chdir(old)
        exc = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
        res = Result(r.exit_code, r.stdout, r.stderr, exc)
    assert res.exception is None, f"uncaught exception {res.exception!r}\n{res}"
    assert "Traceback (most recent call last)" not in res.stderr, str(res)
    return res


def expect(path: Path) -> dict[str, Any]:
    return json.loads((path / "EXPECT.json").read_text())  # type: ignore[no-any-return]


def facts(path: Path) -> dict[str, Any]:
    return expect(path)["facts"]  # type: ignore[no-any-return]


def copy_layout(src: Path, dst: Path) -> Path:
    """A writable copy (symlinks kept as links); fixtures are never changed in place."""
    if dst.exists():
        # a pre-made (possibly mounted) empty directory: copy the contents into it
        for item in src.iterdir():
            target = dst / item.name
            if item.is_symlink():
                os.symlink(os.readlink(item), target)
            elif item.is_dir():
                shutil.copytree(item, target, symlinks=True)
            else:
                shutil.copy2(item, target)
    else:
        shutil.copytree(src, dst, symlinks=True)
    return dst


def snapshot(root: Path, control: bool = True) -> dict[str, tuple[str, str, int | None]]:
    """Every entry under ``root`` (not following links): kind, content hash or link target, mtime.

    Directory mtimes are included (a created-then-removed file changes them). With
    ``control=False`` ocigc's control directory ``.ocigc/`` (locks, journal) and the root's mtime
    are left out: bookkeeping a refused real run may write."""
    out: dict[str, tuple[str, str, int | None]] = {}
    for dirpath, dirs, files in os.walk(root):
        base = Path(dirpath)
        rel_dir = base.relative_to(root)
        if not control and rel_dir.parts[:1] == (".ocigc",):
            continue
        for name in [*dirs, *files]:
            p = base / name
            rel = str(p.relative_to(root))
            if not control and rel == ".ocigc":
                continue
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), None)
            elif p.is_dir():
                out[rel + "/"] = ("dir", "", st.st_mtime_ns)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    if control:
        out["./"] = ("dir", "", root.stat().st_mtime_ns)
    return out


def present(root: Path) -> set[str]:
    """Digests of the regular files under blobs/<alg>/ (symlinks and odd names left out)."""
    out: set[str] = set()
    blobs = root / "blobs"
    if not blobs.is_dir():
        return out
    for alg in blobs.iterdir():
        if alg.is_symlink() or not alg.is_dir():
            continue
        for f in alg.iterdir():
            if f.is_file() and not f.is_symlink() and all(c in "0123456789abcdef" for c in f.name):
                out.add(f"{alg.name}:{f.name}")
    return out


def closure(root: Path, digests: list[str] | set[str]) -> set[str]:
    """Digests reachable from ``digests`` by a naive walk of the files (manifests[], config, layers[],
    blobs[]; not subject), independent of ocigc's graph."""
    stack, seen = list(digests), set()
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        alg, hexd = d.split(":")
        try:
            doc = json.loads((root / "blobs" / alg / hexd).read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or ("schemaVersion" not in doc and "blobs" not in doc):
            continue
        kids = [*(doc.get("manifests") or []), *(doc.get("layers") or []), *(doc.get("blobs") or [])]
        if isinstance(doc.get("config"), dict):
            kids.append(doc["config"])
        stack.extend(k["digest"] for k in kids if isinstance(k, dict) and isinstance(k.get("digest"), str))
    return seen


def index_tags(root: Path) -> list[str | None]:
    doc = json.loads((root / "index.json").read_text())
    return [(m.get("annotations") or {}).get("org.opencontainers.image.ref.name") for m in doc.get("manifests") or []]


def age(root: Path, seconds: float = 7200) -> None:
    """Age every file and link under ``root`` (the grace period then keeps nothing)."""
    import time

    t = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(Path(dirpath) / f, (t, t), follow_symlinks=False)
