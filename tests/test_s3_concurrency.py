"""Native mode under contention (moto honours the conditional headers): processes racing for the
exclusive lease (exactly one winner per round), a stale lease taken over by exactly one of two
breakers, renewal refused after a takeover, and ``index.json`` updated by compare-and-swap with no
lost update under concurrent writers.

The racing parties are separate processes (``multiprocessing``, forked), each with its own
boto3 client, lined up by a barrier every round. No assertion depends on timing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigc.errors import LockBusy, LockLost
from ocigc.layout.indexio import update_index
from ocigc.layout.layout import Layout
from ocigc.lock import acquire as lock
from ocigc.lock.lease import LeaseHandle
from ocigc.lock.params import LockParams
from ocigc.oci.index import Index
from ocigc.storage.base import conditional
from ocigc.storage.s3 import S3Storage
from ocigc.storage.s3client import reset_clients
from tests.kit.layouts import REF_NAME, LayoutBuilder
from tests.kit.s3 import S3Env, fresh, s3_env

ROUNDS = 16
#: Process start method: fork (each child builds its own boto3 client after the fork: ``_layout``).
MP = "fork"
WRITERS = 3
UPDATES = 8
#: Lock timings for the takeover tests: an expired lease is stale at once (no skew allowance).
FAST = {"ttl": 3.0, "refresh": 1.0, "fence_margin": 0.5, "poll": 0.1, "max_skew": 0.0, "settle": 0.05,
        "backoff_min": 0.05, "backoff_max": 0.1}


@pytest.fixture(scope="module")
def s3_bucket(s3_server: Any) -> str:
    return str(s3_server.create_bucket("s3race"))


@pytest.fixture
def s3(s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    yield from s3_env(s3_server, s3_bucket, monkeypatch)


def _layout(url: str, env: dict[str, str]) -> Layout:
    os.environ.update(env)
    reset_clients()
    return Layout(S3Storage.from_url(url))


def _race_worker(url: str, env: dict[str, str], modes: list[str], barrier: Any, out: Any) -> None:
    """Every round: line up, try the lock once (no wait), report, hold until everyone reported."""
    layout = _layout(url, env)
    for r, mode in enumerate(modes):
        barrier.wait()
        handle = None
        try:
            handle = lock.acquire(layout, mode, wait=0, command=f"race {r}")  # type: ignore[arg-type]
            out.put((r, os.getpid(), "won", type(handle).__name__))
        except LockBusy:
            out.put((r, os.getpid(), "busy", ""))
        except Exception as e:  # reported, so the test fails with the reason
            out.put((r, os.getpid(), f"error: {e!r}", ""))
        barrier.wait()  # every party has tried; the winner still holds
        if handle is not None:
            handle.release()
        barrier.wait()  # released before the next round


def _takeover_worker(url: str, env: dict[str, str], rounds: int, plant: bool, barrier: Any, out: Any) -> None:
    """Every round: (one party plants a stale lease,) line up, both try to take it over, report."""
    layout = _layout(url, env)
    for r in range(rounds):
        if plant:
            _plant_stale_lease(layout)
        barrier.wait()
        handle = None
        try:
            handle = lock.acquire(layout, "exclusive", wait=0, params=LockParams(**FAST))  # type: ignore[arg-type]
            out.put((r, "won", next(iter(handle._held.values())).epoch))
        except LockBusy:
            out.put((r, "busy", 0))
        except Exception as e:
            out.put((r, f"error: {e!r}", 0))
        barrier.wait()
        if handle is not None:
            handle.release()
        barrier.wait()


def _plant_stale_lease(layout: Layout) -> None:
    """The lease of a holder on another host that stopped renewing an hour ago."""
    body = {"v": 1, "scope": "repo", "mode": "X", "owner_id": "d" * 32, "gen": 7, "host": "gone-host", "pid": 1,
            "host_id": "elsewhere", "command": "ocigc sweep", "created_unix": time.time() - 3600,
            "acquired_unix": time.time() - 3600, "expires_unix": time.time() - 60, "epoch": 1, "lease": True}
    layout.storage.write_bytes(".ocigc/locks/repo.X.lease", json.dumps(body).encode())


def _index_writer(url: str, env: dict[str, str], name: str, n: int, barrier: Any, out: Any) -> None:
    """Add ``n`` tags, one update_index each, with no lock: only the compare-and-swap protects them."""
    layout = _layout(url, env)
    barrier.wait()
    races = 0
    for i in range(n):
        tag = f"{name}-{i}"

        def add(index: Index, tag: str = tag) -> Index:
            doc = json.loads(index.dumps())
            first = doc["manifests"][0]
            doc["manifests"].append({**first, "annotations": {REF_NAME: tag}})
            return Index.parse(json.dumps(doc).encode(), "index.json")

        result = update_index(layout, add)
        races += len(result.races)
    out.put((name, races))


def _run(target: Any, args_list: list[tuple[Any, ...]], timeout: float = 240) -> None:
    ctx = multiprocessing.get_context(MP)
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def _drain(q: Any, n: int) -> list[Any]:
    return [q.get(timeout=60) for _ in range(n)]


def _child_env(s3_server: Any) -> dict[str, str]:
    return {**s3_server.env(), "OCIGC_LOCK_SETTLE": "0.05", "OCIGC_S3_CONDITIONAL": "auto"}


@pytest.fixture
def layout_prefix(s3: S3Env, tmp_path: Path) -> str:
    b = LayoutBuilder(tmp_path / "l")
    b.image("base", [b"layer"])
    b.save()
    return s3.upload(b.root, fresh("race"))


@pytest.mark.parametrize("latency", ["0ms", "20ms"])
def test_two_processes_race_for_the_exclusive_lock_exactly_one_wins(s3: S3Env, s3_server: Any, latency: str,
                                                                       request: pytest.FixtureRequest,
                                                                       layout_prefix: str) -> None:
    """Also with 20 ms per request between the racers and the store (the latency proxy)."""
    server = s3_server if latency == "0ms" else request.getfixturevalue("slow_s3_server")
    ctx = multiprocessing.get_context(MP)
    barrier, out = ctx.Barrier(2), ctx.Queue()
    args = (s3.url(layout_prefix), _child_env(server), ["exclusive"] * ROUNDS, barrier, out)
    _run(_race_worker, [args, args])
    results = _drain(out, 2 * ROUNDS)
    by_round: dict[int, list[str]] = {}
    for r, _pid, what, kind in results:
        assert not what.startswith("error"), what
        by_round.setdefault(r, []).append(what)
        if what == "won":
            assert kind == "LeaseHandle"
    assert len(by_round) == ROUNDS
    assert all(sorted(v) == ["busy", "won"] for v in by_round.values()), by_round
    assert not any(k.startswith(".ocigc/locks/") for k in s3.keys(layout_prefix)), "every lease released"


def test_shared_and_exclusive_never_both_win(s3: S3Env, s3_server: Any, layout_prefix: str) -> None:
    ctx = multiprocessing.get_context(MP)
    barrier, out = ctx.Barrier(2), ctx.Queue()
    url, env = s3.url(layout_prefix), _child_env(s3_server)
    rounds = 12
    _run(_race_worker, [(url, env, ["exclusive"] * rounds, barrier, out),
                        (url, env, ["shared"] * rounds, barrier, out)])
    results = _drain(out, 2 * rounds)
    by_round: dict[int, list[str]] = {}
    for r, _pid, what, _kind in results:
        assert not what.startswith("error"), what
        by_round.setdefault(r, []).append(what)
    assert all(v.count("won") <= 1 for v in by_round.values()), by_round


def test_stale_lease_is_taken_over_by_exactly_one_breaker(s3: S3Env, s3_server: Any, layout_prefix: str) -> None:
    ctx = multiprocessing.get_context(MP)
    barrier, out = ctx.Barrier(2), ctx.Queue()
    url, env, rounds = s3.url(layout_prefix), _child_env(s3_server), 8
    _run(_takeover_worker, [(url, env, rounds, True, barrier, out), (url, env, rounds, False, barrier, out)])
    by_round: dict[int, list[tuple[str, int]]] = {}
    for r, what, epoch in _drain(out, 2 * rounds):
        by_round.setdefault(r, []).append((what, epoch))
    assert all(sorted(v) == [("busy", 0), ("won", 2)] for v in by_round.values()), by_round
    breaks = [k for k in s3.keys(layout_prefix) if k.endswith("-lock-break.json")]
    assert len(breaks) == rounds, "one journal record per takeover"


def test_renewal_fails_after_a_takeover_and_release_spares_the_successor(s3: S3Env, layout_prefix: str) -> None:
    layout = s3.layout(layout_prefix)
    holder = lock.acquire(layout, "exclusive", params=LockParams(ttl=600))
    assert isinstance(holder, LeaseHandle)
    inst = next(iter(holder._held.values()))
    store = conditional(layout.storage)
    assert store is not None and inst.etag is not None
    rel = ".ocigc/locks/repo.X.lease"
    store.put_if_match(rel, json.dumps({"owner_id": "e" * 32, "epoch": inst.epoch + 1}).encode(), inst.etag)
    with pytest.raises(LockLost, match="taken over"):
        holder._refresh(inst)
    with pytest.raises(LockLost):
        holder.ensure_held()
    holder.release()
    assert s3.exists(f"{layout_prefix}/{rel}"), "a conditional delete never removes the successor's lease"


def test_lost_compare_and_swap_is_retried(s3: S3Env, layout_prefix: str, op_counter: Any) -> None:
    """Another writer changes index.json between our read and our write: our CAS gets 412, we re-read,
    re-apply and win; both changes are there."""
    layout = s3.layout(layout_prefix)
    key = f"{layout_prefix}/index.json"
    calls = []

    def add(index: Index) -> Index:
        calls.append(index.fingerprint)
        if len(calls) == 1:  # the intruder commits after our read
            doc = json.loads(s3.read(key))
            doc["manifests"].append({**doc["manifests"][0], "annotations": {REF_NAME: "intruder"}})
            s3.put(key, json.dumps(doc).encode())
        doc = json.loads(index.dumps())
        doc["manifests"].append({**doc["manifests"][0], "annotations": {REF_NAME: "ours"}})
        return Index.parse(json.dumps(doc).encode(), "index.json")

    op_counter.reset()
    result = update_index(layout, add)
    assert result.changed and result.attempts == 2 and len(result.races) == 1
    assert "compare-and-swap" in result.races[0]
    assert s3.tags(layout_prefix) == ["base", "intruder", "ours"]
    assert op_counter.snapshot().get("rename", 0) == 0, "no temp file, no rename"
    assert any(k.endswith("-race.json") for k in s3.keys(layout_prefix)), "the lost race is journaled"


def test_concurrent_index_writers_lose_no_update(s3: S3Env, s3_server: Any, layout_prefix: str) -> None:
    ctx = multiprocessing.get_context(MP)
    barrier, out = ctx.Barrier(WRITERS), ctx.Queue()
    url, env = s3.url(layout_prefix), _child_env(s3_server)
    _run(_index_writer, [(url, env, f"w{i}", UPDATES, barrier, out) for i in range(WRITERS)])
    _drain(out, WRITERS)
    tags = s3.tags(layout_prefix)
    expected = {f"w{i}-{j}" for i in range(WRITERS) for j in range(UPDATES)}
    assert expected <= set(tags), sorted(expected - set(tags))
    assert len(tags) == 1 + WRITERS * UPDATES


def test_a_create_whose_answer_was_lost_is_still_ours(s3_server: Any, s3_bucket: str, proxy_factory: Any,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A create-only PUT is done by the store but its answer is lost on the way back: boto3 retries,
    the retry gets 412 on the object the first attempt stored. That object holds our bytes: the
    lock file or lease is ours (no 'File exists', no lock left behind); someone else's is not."""
    proxy = proxy_factory(s3_server)
    env = next(s3_env(proxy, s3_bucket, monkeypatch))
    b = LayoutBuilder(tmp_path / "l")
    b.image("base", [b"layer"])
    b.save()
    prefix = env.upload(b.root, fresh("lost"))
    st = env.storage(prefix)
    assert st.conditional_writes()
    proxy.lose_next_answer("PUT", "/mine.json")
    assert st.put_if_absent("x/mine.json", b"my bytes")
    assert env.read(f"{prefix}/x/mine.json") == b"my bytes"
    env.put(f"{prefix}/x/theirs.json", b"their bytes")
    with pytest.raises(FileExistsError):
        st.put_if_absent("x/theirs.json", b"my bytes")
    proxy.lose_next_answer("PUT", ".X.lease")
    with lock.acquire(env.layout(prefix), "exclusive", command="lost answer") as handle:
        assert type(handle).__name__ == "LeaseHandle"
    assert not any(k.startswith(".ocigc/locks/") for k in env.keys(prefix)), "the lease was released"
