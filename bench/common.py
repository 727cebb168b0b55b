"""Shared benchmark plumbing: timed child processes, object-store setup, result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OCIGC = str(Path(sys.executable).parent / "ocigc")


@dataclass
class Timed:
    wall: float
    cpu: float
    max_rss_mb: float
    rc: int
    stdout: str
    stderr: str
    ops: dict[str, int]


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timed:
    """Run a command; wall time, CPU time and peak RSS of that child alone (os.wait4)."""
    fd, stats_name = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    full_env = {**os.environ, **(env or {}), "OCIGC_STORAGE_STATS": stats_name}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    try:
        ops = json.loads(Path(stats_name).read_text() or "{}")
    except (OSError, ValueError):
        ops = {}
    os.unlink(stats_name)
    return Timed(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, stdout, stderr, ops)


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1))
    return path


@dataclass
class ObjectStore:
    """A moto server and an s3fs mount of one bucket (the test harness's components)."""

    server: Any
    bucket: str
    mount: Any
    client: Any

    @property
    def path(self) -> Path:
        return Path(self.mount.path)

    def upload_tree(self, local: Path, prefix: str, jobs: int = 16) -> None:
        """Copy a local tree into the bucket with boto3 (much faster than through the mount)."""
        files = [p for p in local.rglob("*") if p.is_file()]

        def put(p: Path) -> None:
            key = f"{prefix}/{p.relative_to(local).as_posix()}"
            self.client.put_object(Bucket=self.bucket, Key=key, Body=p.read_bytes())

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(put, files))


@contextmanager
def object_store(workdir: Path) -> Iterator[ObjectStore]:
    sys.path.insert(0, str(ROOT))
    from tests.harness.mounts import S3fsMount
    from tests.harness.objectstores import MotoServer

    server = MotoServer(workdir / "moto")
    server.start()
    mount = None
    try:
        bucket = server.create_bucket("bench")
        mount = S3fsMount(server, bucket, workdir / "mnt", workdir)
        mount.mount()
        yield ObjectStore(server, bucket, mount, server.client())
    finally:
        if mount is not None:
            mount.unmount()
        server.stop()


def present(layout: Path) -> set[str]:
    out = set()
    blobs = layout / "blobs"
    for alg in os.listdir(blobs):
        for name in os.listdir(blobs / alg):
            out.add(f"{alg}:{name}")
    return out


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("inf")
