"""Timed transfers for bench_push_pull: payload files, ocigc's push/pull library call in a fresh
interpreter (``ocigc_driver``), boto3's transfer manager (what ``upload_file``/``download_file`` and
``aws s3 cp`` use) in a fresh interpreter (``boto_driver``), any command (``run_timed``), best of N.

Each driver prints the seconds of the transfer alone (imports and client set-up excluded), its
storage operations and the peak RSS of its process; ``run_timed`` gives a command's wall time and
peak RSS (``os.wait4``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
CASES: dict[str, tuple[int, int]] = {  # name -> (files, bytes per file)
    "8M": (1, 8 * MiB), "64M": (1, 64 * MiB), "256M": (1, 256 * MiB), "1G": (1, 1024 * MiB), "2G": (1, 2048 * MiB),
    "16Mx8": (8, 16 * MiB), "64Mx8": (8, 64 * MiB), "64Mx16": (16, 64 * MiB),
    # smoke tests (--quick)
    "1M": (1, MiB), "1Mx4": (4, MiB),
}
#: What a full run pushes and pulls; QUICK_CASES for smoke tests.
DEFAULT_CASES = ("8M", "64M", "256M", "1G", "2G", "16Mx8", "64Mx8", "64Mx16")
QUICK_CASES = ("1M", "1Mx4")

_DRIVER = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
mode, args = sys.argv[1], json.loads(sys.argv[2])
from ocigc.layout.layout import Layout
from ocigc.transfer.pull import pull
from ocigc.transfer.push import PushRequest, push
from ocigc.oci.refs import parse_reference
from ocigc.storage.open_storage import open_storage
if args.get("nofsync"):  # diagnostic only: what the blobs' fsync costs
    os.fsync = os.fdatasync = lambda fd: None
if args.get("direct"):  # comparison only: the old, unsafe path (blobs straight to their digest name)
    import contextlib
    from ocigc.storage.local import LocalStorage

    @contextlib.contextmanager
    def _direct(self, rel):
        target = self._p(rel)
        self.counter.add("write")
        try:
            with open(target, "wb") as f:
                yield f
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            raise

    LocalStorage.open_write_content = _direct
from ocigc.storage.base import GLOBAL_COUNTER
t1 = time.perf_counter()
if mode == "push":
    push(PushRequest(args["layout"], ["v1"], args["files"], cwd=args["cwd"], concurrency=args["jobs"]))
else:
    ref = parse_reference(args["layout"] + ":v1")
    pull(Layout.open(open_storage(ref.path)), ref, args["out"], concurrency=args["jobs"])
t2 = time.perf_counter()
print(json.dumps({"seconds": t2 - t1, "import": t1 - t0, "ops": GLOBAL_COUNTER.snapshot(),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

_BOTO_DRIVER = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
mode, args = sys.argv[1], json.loads(sys.argv[2])
import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
t1 = time.perf_counter()
with create_transfer_manager(client, TransferConfig()) as manager:
    if mode == "push":
        futures = [manager.upload(os.path.join(args["cwd"], n), args["bucket"], args["prefix"] + n)
                   for n in args["files"]]
    else:
        futures = [manager.download(args["bucket"], args["prefix"] + n, os.path.join(args["out"], n))
                   for n in args["files"]]
    for future in futures:
        future.result()
t2 = time.perf_counter()
print(json.dumps({"seconds": t2 - t1, "import": t1 - t0, "ops": {},
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@dataclass
class Timing:
    seconds: float
    maxrss_mib: float | None = None
    ops: dict[str, int] = field(default_factory=dict)
    #: The child's wall time, interpreter start-up and imports included (drivers).
    wall: float = 0.0


def run_timed(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timing:
    """Wall time and peak RSS of one child (``wait4`` gives that child's own rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} -> {proc.returncode}\n{out}\n{err}")
    return Timing(elapsed, usage.ru_maxrss / 1024, wall=elapsed)


def _child(code: str, mode: str, params: dict[str, Any], env: dict[str, str]) -> Timing:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, mode, json.dumps(params)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"driver {mode} failed after {time.perf_counter() - start:.1f}s:\n{proc.stderr}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Timing(data["seconds"], data["maxrss_kib"] / 1024, data.get("ops") or {},
                  wall=time.perf_counter() - start)


def ocigc_driver(mode: str, params: dict[str, Any], env: dict[str, str]) -> Timing:
    """``push`` (params: layout, files, cwd, jobs[, nofsync, direct]) or ``pull`` (layout, out, jobs)
    of tag v1 through ocigc's library call, in a fresh interpreter."""
    return _child(_DRIVER, mode, params, env)


def boto_driver(mode: str, params: dict[str, Any], env: dict[str, str]) -> Timing:
    """``push`` (params: bucket, prefix, files, cwd) or ``pull`` (bucket, prefix, files, out) through one
    boto3 transfer manager with its defaults (8 MiB parts, 10 at a time), in a fresh interpreter."""
    return _child(_BOTO_DRIVER, mode, params, env)


def best(n: int, fn: Any, *args: Any, reset: Any = None) -> Timing:
    """The fastest of ``n`` runs of ``fn(*args)`` (``reset()`` before each); the highest peak RSS."""
    fastest: Timing | None = None
    for _ in range(n):
        if reset is not None:
            reset()
        t = fn(*args)
        if fastest is None or t.seconds < fastest.seconds:
            peak = max(t.maxrss_mib or 0, (fastest.maxrss_mib or 0) if fastest else 0)
            fastest = Timing(t.seconds, peak, t.ops, t.wall)
    assert fastest is not None
    return fastest


def payload(directory: Path, files: int, size: int) -> list[str]:
    """``files`` files of ``size`` bytes (incompressible, each different) in ``directory``; their names."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    block = os.urandom(MiB)
    for i in range(files):
        name = f"blob{i}.bin"
        with open(directory / name, "wb") as f:
            for j in range(size // MiB):
                f.write(i.to_bytes(4, "big") + j.to_bytes(4, "big") + block[8:])
        names.append(name)
    return names


def rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def sync() -> None:
    os.sync()
