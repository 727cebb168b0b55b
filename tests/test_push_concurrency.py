"""Concurrent pushes of different tags from two s3fs mounts of one bucket (two "hosts") while
``ocigc sweep --grace 0`` runs over and over: afterwards every tag is there and every blob it
references too. Each push and sweep is its own process, with its own lock host id per mount. The
mounts reach the store (moto, SeaweedFS) through the latency proxy: 20 ms per request, a cloud
region's round trip."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from ocigc.gc.check import DANGLING, check_layout
from ocigc.layout.layout import Layout
from ocigc.storage.local import LocalStorage
from tests.harness.fixtures import S3fsPair
from tests.harness.tools import run_ocigc

REF_NAME = "org.opencontainers.image.ref.name"
#: Settle well above the cross-mount visibility delay (10-20 ms on moto, a few round trips at 20 ms per
#: request); a hold may wait for a sweep.
BASE_ENV = {"OCIGC_LOCK_SETTLE": "0.5", "OCIGC_LOCK_BACKOFF_MIN": "0.1", "OCIGC_LOCK_BACKOFF_MAX": "0.5",
            "OCIGC_LOCK_BACKOFF_CAP": "2", "OCIGC_LOCK_POLL": "0.2", "OCIGC_LOCK_HOLD_WAIT": "300"}
PUSHES_PER_MOUNT = 2


def host_env(host: str) -> dict[str, str]:
    return {**BASE_ENV, "OCIGC_LOCK_HOST_ID": f"push-test-{host}"}


def test_pushes_from_two_mounts_while_sweeping_lose_nothing(slow_s3fs_mounts: S3fsPair, tmp_path: Path) -> None:
    lay_a, lay_b = slow_s3fs_mounts.a / "repo", slow_s3fs_mounts.b / "repo"
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.bin").write_bytes(os.urandom(2 * 1024 * 1024))  # a blob every push shares
    rc, _, err, _ = run_ocigc("push", f"{lay_a}:base", "shared.bin", cwd=src, env=host_env("a"))
    assert rc == 0, err
    # something for the sweep to remove: an unreferenced blob
    garbage = os.urandom(1000)
    garbage_path = lay_a / "blobs" / "sha256" / hashlib.sha256(garbage).hexdigest()
    garbage_path.write_bytes(garbage)

    results: dict[str, tuple[int, str]] = {}
    sweeps: list[tuple[int, str]] = []
    spans: list[tuple[float, float, str]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def push(host: str, lay: Path, i: int) -> None:
        name = f"{host}{i}"
        (src / f"{name}.txt").write_text(f"own file of {name}")
        (src / f"{name}.bin").write_bytes(os.urandom(300_000))
        start = time.monotonic() - t0
        rc, out, err, _ = run_ocigc("push", f"{lay}:{name}", "shared.bin", f"{name}.txt", f"{name}.bin",
                                    "--lock-wait", "5m", cwd=src, env=host_env(host))
        results[name] = (rc, out + err)
        spans.append((start, time.monotonic() - t0, f"push {name}"))

    def sweeper() -> None:
        while True:
            start = time.monotonic() - t0
            rc, out, err, _ = run_ocigc("sweep", lay_b, "--grace", "0", "--yes", "--lock-wait", "5m", "--json",
                                        env=host_env("b-sweeper"))
            sweeps.append((rc, out if rc == 0 else err))
            spans.append((start, time.monotonic() - t0, "sweep"))
            if done.is_set():
                return
            time.sleep(0.2)

    threads = [threading.Thread(target=push, args=(host, lay, i))
               for i in range(PUSHES_PER_MOUNT) for host, lay in (("a", lay_a), ("b", lay_b))]
    sweep_thread = threading.Thread(target=sweeper)
    sweep_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    sweep_thread.join()

    assert all(rc == 0 for rc, _ in results.values()), results
    assert sweeps and all(rc == 0 for rc, _ in sweeps), sweeps
    planned = [b["digest"] for _, text in sweeps for lay in json.loads(text)["layouts"]
               for b in lay["plan"]["remove_blobs"]]
    removed = [b["digest"] for _, text in sweeps for lay in json.loads(text)["layouts"]
               for b in (lay["result"] or {}).get("removed", [])]
    for start, end, what in sorted(spans):
        print(f"{start:6.1f}s - {end:6.1f}s  {what}")
    print(f"{len(sweeps)} sweep(s) alongside {len(results)} pushes: planned to remove {len(planned)} blob(s) "
          f"(marked without the lock, in-flight pushes included), removed {len(removed)} after re-marking "
          f"under the exclusive lock")
    assert removed == [f"sha256:{hashlib.sha256(garbage).hexdigest()}"]  # the garbage, and nothing else
    assert not garbage_path.exists()  # the sweeps did remove garbage, only garbage

    expected = {"base", *results}
    for lay in (lay_a, lay_b):  # what both "hosts" see (open+read is fresh on s3fs)
        tags = {e["annotations"][REF_NAME] for e in json.loads((lay / "index.json").read_text())["manifests"]
                if REF_NAME in e.get("annotations", {})}
        assert tags == expected
    report = check_layout(Layout.open(LocalStorage(lay_a)))
    dangling = [p.message for p in report.problems if p.severity == DANGLING]
    assert dangling == [], dangling
    # every tag pulls back intact (every blob present with its digest)
    for name in results:
        rc, _, err, _ = run_ocigc("pull", f"{lay_b}:{name}", "-o", tmp_path / "out" / name)
        assert rc == 0, err
        assert (tmp_path / "out" / name / f"{name}.bin").read_bytes() == (src / f"{name}.bin").read_bytes()
        assert (tmp_path / "out" / name / "shared.bin").stat().st_size == 2 * 1024 * 1024
