"""Small pieces shared by the harness: CI policy, free ports, polling, child processes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

#: Environment variable that tells the harness it runs in CI.
CI_ENV = "CI"

#: What to install when a command is missing (command -> Debian package).
APT_PACKAGE = {
    "s3fs": "s3fs",
    "fusermount3": "fuse3",
    "rclone": "rclone",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "htpasswd": "apache2-utils",
}


class ComponentUnavailable(RuntimeError):
    """A real component could not be found or started. The message says what is missing."""


def in_ci() -> bool:
    return os.environ.get(CI_ENV, "").strip().lower() in ("true", "1", "yes")


def unavailable(message: str) -> NoReturn:
    """Fail the test in CI (CI must have every component); skip it elsewhere."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing component is a failure)", pytrace=False)
    pytest.skip(message)


def missing_command_message(command: str) -> str:
    package = APT_PACKAGE.get(command, command)
    return f"{command} not installed: apt-get install {package}"


def require_command(command: str) -> str:
    """The absolute path of ``command``; raises ComponentUnavailable naming the apt package."""
    from shutil import which

    path = which(command)
    if path is None:
        raise ComponentUnavailable(missing_command_message(command))
    return path


def require_fuse() -> None:
    """FUSE needs /dev/fuse and fusermount3 (and, in a container, CAP_SYS_ADMIN)."""
    if not os.path.exists("/dev/fuse"):
        raise ComponentUnavailable(
            "/dev/fuse missing: FUSE mounts need the fuse kernel module and, in a container, "
            "--device /dev/fuse --cap-add SYS_ADMIN"
        )
    require_command("fusermount3")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (servers retry when they lose the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """Poll ``predicate`` until it is true; the seconds it took, or None on timeout.

    An OSError raised by the predicate counts as "not yet" (a file not visible yet, say).
    """
    start = time.monotonic()
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)


_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """Runs in the child before exec: die (SIGTERM) with the test process, even if it is SIGKILLed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except Exception:  # pragma: no cover - non-Linux
        pass


def spawn(
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running child that logs to ``log_path`` and dies with this process.

    It gets its own session, so a Ctrl-C in the terminal reaches pytest (which tears the
    harness down in order) and not the servers directly.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup,
        )


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0, kill: bool = False) -> None:
    """Terminate (or kill) a child and reap it; never raises for an already dead child."""
    if proc is None or proc.poll() is not None:
        if proc is not None:
            proc.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        if kill:
            proc.kill()
        else:
            proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return f"last lines of {path}:\n" + "\n".join(f"    {line}" for line in tail)


def loopback_env(base: Mapping[str, str] | None = None, drop: Sequence[str] = ()) -> dict[str, str]:
    """The environment for a child that talks to 127.0.0.1: no proxies for loopback."""
    env = dict(os.environ if base is None else base)
    for key in drop:
        env.pop(key, None)
    no_proxy = "127.0.0.1,localhost"
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = f"{env[key]},{no_proxy}" if env.get(key) else no_proxy
    return env
