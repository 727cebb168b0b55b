"""``--via``: a layout on an s3fs mount reached through the bucket behind the mount (``api``) or through
the mount (``mount``), and both at once from two "hosts" (two s3fs mounts of one bucket), on moto
and on SeaweedFS.

Host A and host B each run ocigc as separate processes with their own ``OCIGC_LOCK_HOST_ID``; which
one talks to the bucket's API and which one goes through its mount alternates. What both rely on
(docs/locking.md, "Two ways to one bucket"): a lease object and lock files see each other, so that
two writers never both hold a conflicting lock whichever way each reaches the bucket.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocigc.gc.check import DANGLING, check_layout
from ocigc.layout.journal import read_records
from ocigc.layout.layout import Layout
from ocigc.lock.files import LOCK_DIR
from ocigc.lock.handle import LockHandle
from ocigc.lock.params import LockParams
from ocigc.storage.local import LocalStorage
from tests.harness.fixtures import S3fsPair
from tests.harness.mounts import S3fsMount
from tests.harness.objectstores import STORES, LatencyProxy, S3Server
from tests.harness.tools import ocigc_command, run_ocigc
from tests.test_concurrency import make_layout, read_intervals, recorder_script

REF_NAME = "org.opencontainers.image.ref.name"
TTL = 20.0
#: The file protocol's settle well above the cross-mount visibility delay (tests/test_concurrency.py).
BASE_ENV = {
    "OCIGC_LOCK_TTL": str(TTL), "OCIGC_LOCK_SETTLE": "1.2", "OCIGC_LOCK_BACKOFF_MIN": "0.1",
    "OCIGC_LOCK_BACKOFF_MAX": "0.4", "OCIGC_LOCK_BACKOFF_CAP": "1.5", "OCIGC_LOCK_POLL": "0.2",
    "OCIGC_LOCK_MAX_SKEW": "2", "OCIGC_LOCK_HOLD_WAIT": "300",
}


def host(name: str, via: str, **extra: str) -> dict[str, str]:
    return {**BASE_ENV, "OCIGC_LOCK_HOST_ID": f"via-{name}", "OCIGC_VIA": via, **extra}


def via_of(stdout: str) -> list[dict[str, Any]]:
    via: list[dict[str, Any]] = json.loads(stdout)["via"]
    return via


def tags_of(layout: Path) -> set[str]:
    index = json.loads((layout / "index.json").read_text())
    return {e["annotations"][REF_NAME] for e in index["manifests"] if REF_NAME in e.get("annotations", {})}


def no_dangling(layout: Path) -> None:
    report = check_layout(Layout.open(LocalStorage(layout)))
    assert [p.message for p in report.problems if p.severity == DANGLING] == []


# ----------------------------------------------------------------------------------------- one host


@pytest.mark.parametrize("store", STORES)
def test_auto_uses_the_bucket_behind_the_mount_and_mount_readers_see_it(
        store: str, s3fs_pair_on: Callable[..., S3fsPair], tmp_path: Path) -> None:
    pair = s3fs_pair_on(store)
    (tmp_path / "hello.txt").write_text("hello\n")
    rc, out, err, _ = run_ocigc("push", f"{pair.a / 'hello'}:v1", "hello.txt:text/plain", "--json",
                                cwd=tmp_path, env=host("a", "auto"))
    assert rc == 0, err
    (route,) = via_of(out)
    assert route["used"] == "api" and route["requested"] == "auto"
    assert route["bucket"] == f"s3://{pair.bucket}/hello"
    # Through the other mount (another host, the file protocol): the tag, the blobs, readable modes.
    assert tags_of(pair.b / "hello") == {"v1"}
    blobs = list((pair.b / "hello" / "blobs" / "sha256").iterdir())
    assert blobs and all(p.stat().st_mode & 0o777 == 0o644 for p in blobs)
    rc, _, err, _ = run_ocigc("pull", f"{pair.b / 'hello'}:v1", "-o", tmp_path / "out", env=host("b", "mount"))
    assert rc == 0, err
    assert (tmp_path / "out" / "hello.txt").read_text() == "hello\n"
    # Written through mount B, seen at once through the API from A.
    rc, _, err, _ = run_ocigc("tag", f"{pair.b / 'hello'}:v1", "v2", env=host("b", "mount"))
    assert rc == 0, err
    rc, out, err, _ = run_ocigc("-v", "tags", pair.a / "hello", "--json", env=host("a", "auto"))
    assert rc == 0, err
    assert {t["tag"] for t in json.loads(out)["tags"]} == {"v1", "v2"}
    assert "via api (auto)" in err  # --verbose names the route
    # --via mount goes through the mount; doctor tells the route auto takes.
    rc, out, err, _ = run_ocigc("--via", "mount", "check", pair.a / "hello", "--json", env=host("a", "auto"))
    assert rc == 0, err
    assert via_of(out)[0]["used"] == "mount"
    rc, out, err, _ = run_ocigc("doctor", pair.a, "--json", env={"OCIGC_VIA": "auto"})
    assert json.loads(out)["via"]["used"] == "api", out


@pytest.mark.parametrize("store", STORES)
def test_a_store_ignoring_conditional_requests_falls_back_with_one_warning(
        store: str, request: pytest.FixtureRequest, proxy_factory: Callable[..., LatencyProxy],
        s3fs_any_store: Callable[..., S3fsMount], tmp_path: Path) -> None:
    server: S3Server = request.getfixturevalue(f"{store}_server")
    stripping = proxy_factory(server, strip_conditional=True)
    mount = s3fs_any_store(server.create_bucket("strip"), stripping)
    (tmp_path / "f.txt").write_text("x")
    rc, out, err, _ = run_ocigc("push", f"{mount.mount_point / 'repo'}:v1", "f.txt", "--json", cwd=tmp_path,
                                env=host("a", "auto", OCIGC_LOCK_SETTLE="0.3"))
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "conditional" in warnings[0], err
    assert via_of(out)[0]["used"] == "mount"
    assert tags_of(mount.mount_point / "repo") == {"v1"}
    assert stripping.stripped(), "the proxy saw no conditional header to strip"
    # --via api is the user's choice: the API with the lock-file protocol (its own warning).
    rc, out, err, _ = run_ocigc("--via", "api", "tag", f"{mount.mount_point / 'repo'}:v1", "v2", cwd=tmp_path,
                                env=host("a", "auto", OCIGC_LOCK_SETTLE="0.3"))
    assert rc == 0, err
    assert tags_of(mount.mount_point / "repo") == {"v1", "v2"}


def test_a_mount_whose_bucket_cannot_be_found_works_as_today(
        s3fs_pair_on: Callable[..., S3fsPair], tmp_path: Path) -> None:
    pair = s3fs_pair_on("moto")
    pair.mount_a.passwd_file.unlink()  # s3fs read it at start; ocigc cannot: no credentials to use
    (tmp_path / "f.txt").write_text("x")
    rc, out, err, _ = run_ocigc("push", f"{pair.a / 'repo'}:v1", "f.txt", "--json", cwd=tmp_path,
                                env=host("a", "auto", OCIGC_LOCK_SETTLE="0.3"))
    assert rc == 0, err
    assert "warning:" not in err
    (route,) = via_of(out)
    assert route["used"] == "mount" and "not found" in route["reason"] and "passwd" in route["reason"]
    assert tags_of(pair.b / "repo") == {"v1"}
    rc, _, err, _ = run_ocigc("--via", "api", "tags", pair.a / "repo", env=host("a", "auto"))
    assert rc == 2 and err.count("\n") == 1 and "--via api" in err, err


# ----------------------------------------------------------------------------------------- two hosts, two ways


def _modes(i: int) -> tuple[str, str]:
    return ("api", "mount") if i % 2 == 0 else ("mount", "api")


@pytest.mark.parametrize("store", STORES)
def test_lock_race_between_the_two_ways_has_exactly_one_winner(
        store: str, s3fs_pair_on: Callable[..., S3fsPair], tmp_path: Path) -> None:
    pair = s3fs_pair_on(store)
    a, b = pair.a / "race", pair.b / "race"
    make_layout(a)
    rounds = 8  # each pairing of modes (A api and B mount, and the reverse) four times
    for i in range(rounds):
        log = tmp_path / f"round-{i}"
        log.mkdir()
        mode_a, mode_b = _modes(i)
        codes: dict[str, int] = {}
        start = threading.Barrier(2)

        def contend(name: str, path: Path, mode: str, log: Path = log, codes: dict[str, int] = codes,
                    start: threading.Barrier = start) -> None:
            start.wait()
            r = run_ocigc("exec", "--exclusive", "--lock-wait", "0", path, "--",
                          *recorder_script(log, 4.0), name, env=host(name, mode))
            codes[name] = r.returncode
            assert r.returncode in (0, 75), r.stderr

        threads = [threading.Thread(target=contend, args=("a", a, mode_a)),
                   threading.Thread(target=contend, args=("b", b, mode_b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [n for n, c in codes.items() if c == 0]
        assert len(winners) == 1, f"round {i} (A {mode_a}, B {mode_b}): winners {winners}"
        assert len(read_intervals(log)) == 1
    assert not (a / LOCK_DIR).exists() or not os.listdir(a / LOCK_DIR)


@pytest.mark.parametrize("store", STORES)
def test_shared_holders_on_the_mount_never_overlap_an_exclusive_holder_through_the_api(
        store: str, s3fs_pair_on: Callable[..., S3fsPair], tmp_path: Path) -> None:
    """A shared lock through the mount is taken without a settle delay; an exclusive one through the
    API waits the mount hosts' settle before its listing (docs/locking.md, "Why a shared lock needs
    no wait"): no exclusive section overlaps any other section, in whichever order they come."""
    import random

    pair = s3fs_pair_on(store)
    a, b = pair.a / "sx", pair.b / "sx"
    make_layout(a)
    log = tmp_path / "sections"
    log.mkdir()
    errors: list[str] = []

    def run(i: int, path: Path, name: str, via: str, args: list[str], hold: float, delay: float) -> None:
        time.sleep(delay)
        r = run_ocigc("exec", *args, "--lock-wait", "180s", path, "--", *recorder_script(log, hold), name,
                      env=host(f"{name}-{i}", via))
        if r.returncode != 0:
            errors.append(r.stderr)

    threads = [threading.Thread(target=run, args=(i, b, "shared", "mount", [], 1.0, random.uniform(0, 3)))
               for i in range(5)]
    threads += [threading.Thread(target=run, args=(i, a, "exclusive", "api", ["--exclusive"], 0.5, 0.3 + 1.5 * i))
                for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    intervals = read_intervals(log)
    assert len(intervals) == 7
    excl = [x for x in intervals if x[3] == "exclusive"]
    bad = [(x, y) for x in excl for y in intervals if y is not x and y[0] < x[1] and x[0] < y[1]]
    assert bad == [], "an exclusive section through the API overlapped another holder"


@pytest.mark.parametrize("store", STORES)
def test_a_mount_writer_locks_when_the_lock_directory_vanishes_under_it(
        store: str, s3fs_pair_on: Callable[..., S3fsPair], monkeypatch: pytest.MonkeyPatch) -> None:
    """A host locking through the API writes no directory marker: ``.ocigc/locks/`` is then only the
    prefix of its lock object, and vanishes when that host releases. Released between a mount
    writer's ``makedirs`` (answered from the mount's cache) and its create, the create got ENOENT
    and the push failed (seen in the eight-pushes test): the release is put in that window here."""
    pair = s3fs_pair_on(store)
    a = pair.a / "repo"
    make_layout(a)
    client = pair.mount_a.server.client()
    other = f"repo/{LOCK_DIR}/repo~S~{'0' * 32}~00000001.json"
    client.put_object(Bucket=pair.bucket, Key=other, Body=b"{}")
    assert (a / LOCK_DIR).is_dir()  # through the mount: the prefix of one object, no marker
    released: list[str] = []
    makedirs = LocalStorage.makedirs

    def makedirs_then_the_other_host_releases(self: LocalStorage, rel: str) -> None:
        makedirs(self, rel)
        if rel == LOCK_DIR and not released:
            client.delete_object(Bucket=pair.bucket, Key=other)
            released.append(other)
            time.sleep(2.5)  # past the mount's caches (stat_cache_expire=1, the kernel's 1 s)

    monkeypatch.setattr(LocalStorage, "makedirs", makedirs_then_the_other_host_releases)
    layout = Layout.open(LocalStorage(a))
    with LockHandle(layout, command="test", params=LockParams(ttl=TTL, settle=1.2, poll=0.2)) as handle:
        handle.acquire("shared")
        assert released and handle.held
        (name,) = handle.lock_files()
        assert (a / LOCK_DIR / name).is_file()
        assert name in [o["Key"].rsplit("/", 1)[1] for o in
                        client.list_objects_v2(Bucket=pair.bucket, Prefix=f"repo/{LOCK_DIR}/").get("Contents", [])]
    assert not [n for n in os.listdir(a / LOCK_DIR) if n.endswith(".json")]


@pytest.mark.parametrize("store", STORES)
def test_eight_pushes_both_ways_and_a_sweep_lose_nothing(
        store: str, s3fs_pair_on: Callable[..., S3fsPair], tmp_path: Path) -> None:
    pair = s3fs_pair_on(store, 0.020)
    a, b = pair.a / "repo", pair.b / "repo"
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.bin").write_bytes(os.urandom(1024 * 1024))
    rc, _, err, _ = run_ocigc("push", f"{a}:base", "shared.bin", cwd=src, env=host("a", "api"))
    assert rc == 0, err
    garbage = os.urandom(1000)
    garbage_digest = hashlib.sha256(garbage).hexdigest()
    (b / "blobs" / "sha256" / garbage_digest).write_bytes(garbage)
    results: dict[str, tuple[int, str]] = {}
    sweeps: list[tuple[int, str]] = []
    done = threading.Event()

    def push(i: int) -> None:
        name = f"t{i}"
        (src / f"{name}.bin").write_bytes(os.urandom(200_000))
        lay, who = (a, "a") if i % 2 == 0 else (b, "b")
        mode = _modes(i // 2)[0]
        rc, out, err, _ = run_ocigc("push", f"{lay}:{name}", "shared.bin", f"{name}.bin", "--lock-wait", "5m",
                                    cwd=src, env=host(f"{who}{i}", mode))
        results[name] = (rc, out + err)

    def sweeper() -> None:
        n = 0
        while True:
            mode = "api" if n % 2 == 0 else "mount"
            rc, out, err, _ = run_ocigc("sweep", b if mode == "mount" else a, "--grace", "0", "--yes",
                                        "--lock-wait", "5m", "--json", env=host(f"sweeper{n}", mode))
            sweeps.append((rc, out if rc == 0 else err))
            n += 1
            if done.is_set():
                return

    threads = [threading.Thread(target=push, args=(i,)) for i in range(8)]
    sweep_thread = threading.Thread(target=sweeper)
    sweep_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    sweep_thread.join()
    failed = {name: out for name, (rc, out) in results.items() if rc != 0}
    assert not failed, "\n".join(f"{name}: {out}" for name, out in failed.items())
    assert sweeps and all(rc == 0 for rc, _ in sweeps), "\n".join(text for rc, text in sweeps if rc != 0)
    removed = [x["digest"] for _, text in sweeps for lay in json.loads(text)["layouts"]
               for x in (lay["result"] or {}).get("removed", [])]
    assert removed == [f"sha256:{garbage_digest}"], removed
    for lay in (a, b):
        assert tags_of(lay) == {"base", *results}
    no_dangling(a)
    for name in results:
        rc, _, err, _ = run_ocigc("pull", f"{a}:{name}", "-o", tmp_path / "out" / name, env=host("r", "api"))
        assert rc == 0, err
        assert (tmp_path / "out" / name / f"{name}.bin").read_bytes() == (src / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("store", STORES)
def test_a_killed_holders_lease_is_taken_over_once_it_expires(
        store: str, s3fs_pair_on: Callable[..., S3fsPair]) -> None:
    pair = s3fs_pair_on(store)
    a, b = pair.a / "crash", pair.b / "crash"
    make_layout(a)
    env_a = host("a", "api", OCIGC_LOCK_TTL="8")
    holder = subprocess.Popen([*ocigc_command(), "exec", "--exclusive", str(a), "--", "sleep", "300"],
                              env={**os.environ, **env_a}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (b / LOCK_DIR).is_dir() or not any(n.endswith(".lease") for n in os.listdir(b / LOCK_DIR)):
            assert time.monotonic() < deadline, "the holder's lease never showed through mount B"
            time.sleep(0.05)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        # Through the mount, the lease is a live exclusive lock: a writer there does not get in.
        r = run_ocigc("exec", "--exclusive", "--lock-wait", "0", b, "--", "true", env=host("b", "mount"))
        assert r.returncode == 75, r.stderr
        # Through the API from host B: taken over once unchanged for its TTL.
        r = run_ocigc("exec", "--exclusive", "--lock-wait", "60s", b, "--", "true",
                      env=host("b", "api", OCIGC_LOCK_TTL="8"))
        assert r.returncode == 0, r.stderr
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
    breaks = read_records(Layout(LocalStorage(b)), "lock-break")
    assert len(breaks) == 1 and breaks[0]["takeover"] and breaks[0]["epoch"] == 2
    assert breaks[0]["holder"]["host_id"] == "via-a"
    assert not (b / LOCK_DIR).exists() or not [n for n in os.listdir(b / LOCK_DIR) if n.endswith(".lease")]
