"""Locks and index.json updates across two s3fs mounts of one bucket (two "hosts", A and B).

Every test here runs ocigc as separate processes, half of them through mount A and half through
mount B, each "host" with its own ``OCIGC_LOCK_HOST_ID`` (so the same-host dead-process shortcut
does not apply across them, as on real separate machines). Critical sections are recorded on local
disk with the local clock (both "hosts" share it), so overlaps are exact.

Counts are bounded so the module stays within a few minutes; ``bench/bench_lock.py --soak`` runs
the long version. Timings are printed, never asserted.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ocigc.gc.check import DANGLING, check_layout
from ocigc.layout.journal import read_records
from ocigc.layout.layout import Layout
from ocigc.lock.files import LOCK_DIR
from ocigc.storage.local import LocalStorage
from tests.harness.fixtures import S3fsPair
from tests.harness.objectstores import STORES
from tests.harness.tools import ocigc_command, run_ocigc
from tests.kit.layouts import LayoutBuilder

#: Short lease for tests (still long enough for a loaded 2-core machine). The settle delay must
#: exceed the cross-mount visibility delay measured below AND the mounts' stat cache expiry
#: (the harness mounts s3fs with stat_cache_expire=1): see docs/locking.md, assumption A3.
TTL = 20.0
BASE_ENV = {
    "OCIGC_LOCK_TTL": str(TTL), "OCIGC_LOCK_SETTLE": "1.2", "OCIGC_LOCK_BACKOFF_MIN": "0.1",
    "OCIGC_LOCK_BACKOFF_MAX": "0.4", "OCIGC_LOCK_BACKOFF_CAP": "1.5", "OCIGC_LOCK_POLL": "0.2",
    "OCIGC_LOCK_MAX_SKEW": "2", "OCIGC_LOCK_HOLD_WAIT": "120",
}


def host_env(host: str, **extra: str) -> dict[str, str]:
    return {**BASE_ENV, "OCIGC_LOCK_HOST_ID": f"test-{host}", **extra}


def make_layout(root: Path, tags: int = 2) -> LayoutBuilder:
    b = LayoutBuilder(root)
    for i in range(tags):
        b.image(f"base-{i}", [b"common layer", f"layer of base-{i}".encode()])
    b.save()
    return b


def both(pair: S3fsPair, name: str) -> tuple[Path, Path]:
    """The same layout seen through mount A and through mount B."""
    return pair.a / name, pair.b / name


def recorder_script(log_dir: Path, hold: float) -> list[str]:
    """A command that records its critical section (start, end) in a local file of its own."""
    code = textwrap.dedent(f"""
        import os, sys, time, uuid
        p = os.path.join({str(log_dir)!r}, uuid.uuid4().hex)
        start = time.time()
        time.sleep({hold})
        with open(p, "w") as f:
            f.write(f"{{start}} {{time.time()}} {{os.environ.get('OCIGC_LOCK_HOST_ID')}} {{sys.argv[1]}}")
    """)
    return [sys.executable, "-c", code]


def read_intervals(log_dir: Path) -> list[tuple[float, float, str, str]]:
    out = []
    for p in log_dir.iterdir():
        s, e, host, mode = p.read_text().split()
        out.append((float(s), float(e), host, mode))
    return sorted(out)


def overlaps(intervals: list[tuple[float, float, str, str]]) -> list[tuple[Any, Any]]:
    bad = []
    for i, a in enumerate(intervals):
        for b in intervals[i + 1:]:
            if b[0] < a[1] and a[0] < b[1]:
                bad.append((a, b))
    return bad


def run_many(jobs: list[Callable[[], Any]], workers: int) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda f: f(), jobs))


# ----------------------------------------------------------------------------------------- visibility


def test_cross_mount_visibility_delay(s3fs_mounts: S3fsPair) -> None:
    """The protocol's assumption A2: a file closed on A is listed on B (and a removal seen) at once.

    Measures the delay; the settle delay (2 s by default on FUSE, 0.5 s in these tests) must exceed it."""
    (s3fs_mounts.a / "vis").mkdir()
    seen_b = s3fs_mounts.b / "vis"
    created: list[float] = []
    removed: list[float] = []
    for i in range(15):
        name = f"lock-{i}-{random.getrandbits(32):08x}.json"
        with open(s3fs_mounts.a / "vis" / name, "w") as f:
            f.write("{}")
        t0 = time.monotonic()
        while name not in os.listdir(seen_b):
            assert time.monotonic() - t0 < 30, "a file closed on mount A never appeared in B's listing"
            time.sleep(0.005)
        created.append(time.monotonic() - t0)
        os.unlink(s3fs_mounts.a / "vis" / name)
        t0 = time.monotonic()
        while name in os.listdir(seen_b):
            assert time.monotonic() - t0 < 30, "a file removed on mount A stayed in B's listing"
            time.sleep(0.005)
        removed.append(time.monotonic() - t0)
    print(f"\ncross-mount visibility (s3fs 1.90, moto): create max {max(created) * 1000:.1f} ms, "
          f"median {sorted(created)[len(created) // 2] * 1000:.1f} ms; remove max {max(removed) * 1000:.1f} ms "
          f"(settle in tests {BASE_ENV['OCIGC_LOCK_SETTLE']} s, default 2 s)")


# ----------------------------------------------------------------------------------------- mutual exclusion


@pytest.mark.parametrize("latency", [0.0, 0.020], ids=["0ms", "20ms"])
@pytest.mark.parametrize("store", STORES)
def test_exclusive_exec_from_two_mounts_never_overlaps(store: str, latency: float,
                                                       s3fs_pair_on: Callable[..., S3fsPair], tmp_path: Path) -> None:
    """Also with 20 ms per request between the mounts and the store (the latency proxy)."""
    a, b = both(s3fs_pair_on(store, latency), "mx")
    make_layout(a)
    log = tmp_path / "sections"
    log.mkdir()
    n = 6

    def one(i: int) -> Callable[[], Any]:
        path, host = (a, "a") if i % 2 == 0 else (b, "b")
        return lambda: run_ocigc("exec", "--exclusive", "--lock-wait", "180s", path, "--",
                                 *recorder_script(log, 0.25), "exclusive", env=host_env(host), timeout=300)

    results = run_many([one(i) for i in range(n)], n)
    for r in results:
        assert r.returncode == 0, r.stderr
    intervals = read_intervals(log)
    assert len(intervals) == n
    assert overlaps(intervals) == [], "two exclusive critical sections overlapped"
    assert {h for _, _, h, _ in intervals} == {"test-a", "test-b"}
    gaps = [b_[0] - a_[1] for a_, b_ in itertools.pairwise(intervals)]
    print(f"\n{n} exclusive sections from two mounts, no overlap; span {intervals[-1][1] - intervals[0][0]:.1f}s, "
          f"smallest gap {min(gaps) * 1000:.0f} ms")
    assert not os.listdir(a / LOCK_DIR)


SHARED_HOLDER = textwrap.dedent("""
    import os, sys, time, uuid
    from ocigc.layout.layout import Layout
    from ocigc.lock.acquire import acquire
    from ocigc.storage.local import LocalStorage
    layout_path, log_dir, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with acquire(Layout(LocalStorage(layout_path)), "shared", wait=180, command="shared holder") as h:
        start = time.time()
        time.sleep(hold)
        h.ensure_held()
        end = time.time()
    with open(os.path.join(log_dir, uuid.uuid4().hex), "w") as f:
        f.write(f"{start} {end} {os.environ.get('OCIGC_LOCK_HOST_ID')} shared")
""")


def test_shared_holders_against_exclusive_holders(s3fs_mounts: S3fsPair, tmp_path: Path) -> None:
    a, b = both(s3fs_mounts, "sx")
    make_layout(a)
    log = tmp_path / "sections"
    log.mkdir()

    def shared(i: int) -> Callable[[], Any]:
        path, host = (a, "a") if i % 2 == 0 else (b, "b")
        env = {**os.environ, **host_env(host)}

        def go() -> int:
            time.sleep(random.uniform(0, 2))
            return subprocess.run([sys.executable, "-c", SHARED_HOLDER, str(path), str(log), "1.0"], env=env,
                                  timeout=300).returncode
        return go

    def exclusive(i: int) -> Callable[[], Any]:
        path, host = (b, "b") if i % 2 == 0 else (a, "a")

        def go() -> int:
            time.sleep(0.5 + i)
            r = run_ocigc("exec", "--exclusive", "--lock-wait", "180s", path, "--",
                          *recorder_script(log, 0.5), "exclusive", env=host_env(host), timeout=300)
            assert r.returncode == 0, r.stderr
            return r.returncode
        return go

    codes = run_many([shared(i) for i in range(6)] + [exclusive(i) for i in range(2)], 8)
    assert codes == [0] * 8
    intervals = read_intervals(log)
    assert len(intervals) == 8
    excl = [x for x in intervals if x[3] == "exclusive"]
    shar = [x for x in intervals if x[3] == "shared"]
    bad = [(x, s) for x in excl for s in [*shar, *excl] if s is not x and s[0] < x[1] and x[0] < s[1]]
    assert bad == [], "an exclusive section overlapped another holder"
    shared_overlaps = len(overlaps(shar))
    print(f"\n6 shared + 2 exclusive holders from two mounts: exclusive sections isolated; "
          f"{shared_overlaps} overlapping pairs among shared holders")


# ----------------------------------------------------------------------------------------- crashes


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*ocigc_command(), *args], env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _lock_names(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path / LOCK_DIR))
    except FileNotFoundError:
        return []


def test_sigkilled_holder_is_seen_stale_after_the_ttl_and_broken(s3fs_mounts: S3fsPair) -> None:
    a, b = both(s3fs_mounts, "crash")
    make_layout(a)
    holder = _spawn(["exec", "--exclusive", str(a), "--", "sleep", "300"], host_env("a"))
    try:
        _wait(lambda: any(n.startswith("repo~X~") for n in _lock_names(b)), what="the holder's lock on mount B")
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
        # Host B cannot use the pid: the lock is live to it until it is observed unchanged for the TTL.
        r = run_ocigc("locks", "list", b, "--json", env=host_env("b"))
        (seen,) = json.loads(r.stdout)["locks"]
        assert not seen["stale"]
        # Host A (same "host" as the dead holder) sees a dead process at once.
        r = run_ocigc("locks", "list", a, "--json", env=host_env("a"))
        (seen,) = json.loads(r.stdout)["locks"]
        assert seen["stale"] and "gone" in seen["stale_reason"]
        r = run_ocigc("exec", "--exclusive", "--lock-wait", "60s", b, "--", "true", env=host_env("b"))
        assert r.returncode == 0, r.stderr
        took = time.monotonic() - killed
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
    breaks = read_records(Layout(LocalStorage(b)), "lock-break")
    assert len(breaks) == 1 and breaks[0]["holder"]["host_id"] == "test-a"
    assert "observed" in breaks[0]["reason"] or "expired" in breaks[0]["reason"]
    assert _lock_names(a) == []
    print(f"\nSIGKILLed holder on A: broken by B {took:.1f}s after the kill (TTL {TTL:g}s): {breaks[0]['reason']}")


def test_killed_sweep_leaves_no_dangling_reference(s3fs_mounts: S3fsPair, s3_client: Any) -> None:
    a, b = both(s3fs_mounts, "ksweep")
    builder = make_layout(a, tags=3)
    gone = builder.manifest([b"layer of a deleted image", b"another one"])  # written, never tagged: garbage
    # Plenty of garbage, uploaded straight to the bucket (fast), so the kill lands mid-sweep.
    for i in range(120):
        data = f"garbage blob {i}".encode()
        s3_client.put_object(Bucket=s3fs_mounts.bucket, Key=f"ksweep/blobs/sha256/{hashlib.sha256(data).hexdigest()}",
                             Body=data)
    before = len(os.listdir(a / "blobs" / "sha256"))
    sweep = _spawn(["sweep", str(a), "--grace", "0", "--yes", "--jobs", "4"], host_env("a"))
    try:
        _wait(lambda: len(os.listdir(b / "blobs" / "sha256")) < before - 10, what="the sweep to start removing")
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    left = len(os.listdir(b / "blobs" / "sha256"))
    report = check_layout(Layout.open(LocalStorage(b)))
    assert [p for p in report.problems if p.severity == DANGLING] == []
    assert _lock_names(b), "the killed sweep's lock is left behind"
    # The next sweep (same host: dead process, broken at once) finishes the job.
    r = run_ocigc("sweep", b, "--grace", "0", "--yes", env=host_env("a"))
    assert r.returncode == 0, r.stderr
    assert check_layout(Layout.open(LocalStorage(a))).exit_code() == 0
    assert not (a / "blobs" / "sha256" / str(gone["digest"]).split(":")[1]).exists()
    print(f"\nkilled sweep: {before} blobs before, {left} when killed, no dangling reference; "
          f"the next sweep broke the dead lock and finished")


# ----------------------------------------------------------------------------------------- lost race


PLAIN_WRITER = textwrap.dedent("""
    import sys, time
    path, stop, snapshot = sys.argv[1], sys.argv[2], open(sys.argv[1], "rb").read()
    n = 0
    import os
    while not os.path.exists(stop):
        with open(path, "wb") as f:      # like oras-go: os.WriteFile (O_TRUNC) from its start-time snapshot
            f.write(snapshot)
        n += 1
        time.sleep(0.3)
    print(n)
""")


def test_plain_writer_rewriting_index_json_is_detected_and_reported(s3fs_mounts: S3fsPair, tmp_path: Path) -> None:
    a, b = both(s3fs_mounts, "race")
    make_layout(a)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", PLAIN_WRITER, str(b / "index.json"), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = run_ocigc("tag", f"{a}:base-0", "from-ocigc", env=host_env("a", OCIGC_LOCK_SETTLE="1.5"))
    finally:
        stop.touch()
        writes = int((writer.communicate(timeout=60)[0] or "0").strip() or 0)
    races = read_records(Layout(LocalStorage(a)), "race")
    assert races, f"no lost race journaled (rc={r.returncode}, {r.stderr})"
    assert all("overwrote" in x["problem"] or "unreadable" in x["problem"] for x in races)
    if r.returncode == 3:
        assert "lost the race" in r.stderr
    else:
        assert r.returncode == 0, r.stderr
    print(f"\nplain writer ({writes} rewrites from B) vs ocigc tag on A: {len(races)} lost race(s) journaled, "
          f"exit {r.returncode}")


# ----------------------------------------------------------------------------------------- soak


def test_soak_writers_and_sweeps_from_two_mounts(s3fs_mounts: S3fsPair, tmp_path: Path) -> None:
    """Concurrent tag, push and delete from both mounts while sweeps run with --grace 0."""
    from bench.bench_lock import Soak

    soak = Soak(s3fs_mounts.a, s3fs_mounts.b, tmp_path, env_a=host_env("a"), env_b=host_env("b"),
                writers_per_host=2, ops_per_writer=2, sweeps=2)
    result = soak.run()
    print("\n" + result.summary())
    assert result.lost == [], f"committed writes lost: {result.lost}"
    assert result.check_exit == 0, result.check_output
    assert result.unexpected == [], result.unexpected
    assert result.committed > 0 and result.sweeps_done > 0
