"""Helpers for the CLI tests: run ``ocigc`` in-process (typer's CliRunner) or as the installed
script in a subprocess, read the fixtures' EXPECT.json, snapshot trees (symlinks included).

Used by test_cli_read, test_cli_gc, test_bad_layouts, test_interop and test_crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

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


def cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> tuple[int, str, str]:
    """``run`` in-process, as a tuple: (exit code, stdout, stderr)."""
    r = run(list(args), cwd=cwd)
    return r.code, r.stdout, r.stderr
