"""Running ``ocigc`` as the unprivileged user ``nobody``: root ignores mode bits, so the permission
tests need another user.

``nobody`` must reach an interpreter, this checkout's ``ocigc`` and the virtualenv's packages. A
checkout under a directory only root may enter (``mktemp -d`` makes its directory 0700, and so is
``/root``) hides both. Then :func:`nobody_runtime` mirrors the package and the site-packages into a
world-readable temporary directory, with hard links where the file system allows (the same bytes,
nothing copied) and copies elsewhere, and runs from there. Nothing outside that directory changes
mode. When nobody can still not import ``ocigc`` the test fails (in CI) saying what was tried.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from tests.harness.common import unavailable
from tests.kit.layouts import REPO

NOBODY = 65534
SETPRIV = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
#: What a run of the CLI imports first (enough to tell whether the runtime is whole), and where
#: ``ocigc`` came from: an editable install's finder could otherwise supply another checkout.
PROBE = "import ocigc, ocigc.cli, typer, networkx, botocore; print(ocigc.__file__)"


def _as_nobody(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SETPRIV, *argv], capture_output=True, text=True, env=env, check=False,
                          stdin=subprocess.DEVNULL, timeout=60)


def _interpreter() -> str | None:
    """An interpreter of this Python's version ``nobody`` can execute (the venv's, or the system's)."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"):
        if os.path.exists(exe) and _as_nobody([exe, "-c", "1"]).returncode == 0:
            return exe
    return None


def _imports_ocigc_from(exe: str, pythonpath: str, package: Path) -> str | None:
    """None when ``nobody`` imports the CLI's modules, ``ocigc`` from ``package``; else why not."""
    p = _as_nobody([exe, "-c", PROBE], env={"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath})
    if p.returncode != 0:
        return (p.stderr.strip().splitlines() or ["(no output)"])[-1]
    found = Path(p.stdout.strip()).parent
    return None if found.resolve() == package.resolve() else f"ocigc was imported from {found}, not {package}"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _mirror(tree: Path, dest: Path) -> None:
    shutil.copytree(tree, dest, symlinks=True, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, _, _ in os.walk(dest):
        os.chmod(dirpath, 0o755)


@functools.cache
def nobody_runtime() -> tuple[str, str]:
    """``(interpreter, PYTHONPATH)`` with which ``nobody`` runs this checkout's ``ocigc``. Skips
    where the tests cannot switch users (not root, no setpriv); fails in CI where they can but
    nobody cannot import the package."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        unavailable("the permission tests need root and setpriv (util-linux) to run the CLI as nobody")
    exe = _interpreter()
    if exe is None:
        unavailable(f"no Python {sys.version_info.major}.{sys.version_info.minor} interpreter the user nobody "
                    f"can execute ({sys.executable} is in a directory nobody cannot enter; "
                    f"install python{sys.version_info.major}.{sys.version_info.minor})")
    sites = list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
    pythonpath = os.pathsep.join([str(REPO), *sites])
    if _imports_ocigc_from(exe, pythonpath, REPO / "ocigc") is None:
        return exe, pythonpath
    base = Path(tempfile.mkdtemp(prefix="ocigc-nobody-runtime-"))
    atexit.register(shutil.rmtree, base, True)
    base.chmod(0o755)
    (base / "src").mkdir(mode=0o755)
    _mirror(REPO / "ocigc", base / "src" / "ocigc")
    mirrored = [base / "src"]
    for i, site in enumerate(sites):
        _mirror(Path(site), base / f"site{i}")
        mirrored.append(base / f"site{i}")
    pythonpath = os.pathsep.join(map(str, mirrored))
    why = _imports_ocigc_from(exe, pythonpath, base / "src" / "ocigc")
    if why is not None:
        unavailable(f"the user nobody cannot import ocigc from {REPO} nor from a mirror in {base}: {why}")
    return exe, pythonpath


def run_as_nobody(args: list[str | os.PathLike[str]], env: dict[str, str], cwd: Path | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``ocigc ARGS`` as ``nobody`` with ``env`` (PYTHONPATH is set here)."""
    exe, pythonpath = nobody_runtime()
    return subprocess.run([*SETPRIV, exe, "-m", "ocigc", *map(os.fspath, args)], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": pythonpath}, timeout=timeout, stdin=subprocess.DEVNULL,
                          check=False, cwd=cwd)
