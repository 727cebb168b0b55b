"""Lock files: modes, waiting, draining, leases, staleness and breaking (in-process, local disk).

Cross-host behaviour on real s3fs mounts is in ``test_concurrency.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ocigc.errors import EXIT_LOCK_BUSY, LockBusy, LockLost
from ocigc.layout.journal import read_records
from ocigc.layout.layout import Layout
from ocigc.lock.acquire import acquire
from ocigc.lock.files import LOCK_DIR, LockDir, LockInfo, break_locks, list_locks, lock_name
from ocigc.lock.handle import INHERIT_ENV, LockHandle
from ocigc.lock.params import LockError, LockParams, default_settle
from ocigc.storage.local import LocalStorage
from tests.harness.tools import run_ocigc
from tests.kit.layouts import LayoutBuilder

FAST = LockParams(ttl=3.0, settle=0.05, backoff_min=0.02, backoff_max=0.05, backoff_cap=0.1, poll=0.05,
                  max_skew=1.0, hold_wait=5.0)
FAST_ENV = {"OCIGC_LOCK_TTL": "9", "OCIGC_LOCK_SETTLE": "0.05", "OCIGC_LOCK_BACKOFF_MIN": "0.02",
            "OCIGC_LOCK_BACKOFF_MAX": "0.05", "OCIGC_LOCK_BACKOFF_CAP": "0.1", "OCIGC_LOCK_POLL": "0.05",
            "OCIGC_LOCK_MAX_SKEW": "1"}


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    b = LayoutBuilder(tmp_path / "lay")
    b.image("v1", [b"layer"])
    b.save()
    return Layout.open(LocalStorage(tmp_path / "lay"))


def lock_files(layout: Layout) -> list[str]:
    d = Path(layout.location) / LOCK_DIR
    return sorted(os.listdir(d)) if d.exists() else []


def write_foreign_lock(layout: Layout, name: str, body: dict[str, object] | None) -> None:
    d = Path(layout.location) / LOCK_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(b"" if body is None else json.dumps(body).encode())


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------ modes


def test_shared_holders_coexist_and_exclusive_is_refused_naming_them(layout: Layout) -> None:
    with acquire(layout, "shared", params=FAST, command="push a") as a, \
            acquire(layout, "shared", params=FAST, command="push b"):
        assert a.held and len(lock_files(layout)) == 2
        with pytest.raises(LockBusy) as e:
            acquire(layout, "exclusive", params=FAST, command="sweep")
        msg = str(e.value)
        assert e.value.exit_code == EXIT_LOCK_BUSY == 75
        assert "push a" in msg and "push b" in msg and f"pid={os.getpid()}" in msg and "age=" in msg
        assert "host=" in msg and LOCK_DIR in msg
    assert lock_files(layout) == []


def test_exclusive_refuses_shared_and_exclusive(layout: Layout) -> None:
    with acquire(layout, "exclusive", params=FAST, command="sweep"):
        for mode in ("shared", "exclusive"):
            with pytest.raises(LockBusy, match="sweep"):
                acquire(layout, mode, params=FAST)  # type: ignore[arg-type]
    with acquire(layout, "exclusive", params=FAST):
        pass


def test_lock_files_are_unique_names_written_once(layout: Layout) -> None:
    with acquire(layout, "shared", params=FAST, command="c") as h:
        (name,) = lock_files(layout)
        info = LockInfo.from_name(name)
        assert (info.scope, info.mode, info.owner, info.gen) == ("repo", "S", h.owner, 1)
        body = json.loads((Path(layout.location) / LOCK_DIR / name).read_text())
        for key in ("host", "host_id", "boot_id", "pid", "pid_starttime", "command", "created_unix", "expires_unix",
                    "ttl_s", "owner_id", "gen"):
            assert key in body
        assert body["expires_unix"] - body["created_unix"] == pytest.approx(FAST.ttl)


def test_wait_then_acquire_when_holder_releases(layout: Layout) -> None:
    holder = acquire(layout, "exclusive", params=FAST, command="first")
    threading.Timer(0.4, holder.release).start()
    seen: list[list[LockInfo]] = []
    started = time.monotonic()
    with acquire(layout, "shared", params=FAST, wait=10, on_wait=seen.append) as h:
        assert h.held
    assert time.monotonic() - started >= 0.3
    assert seen and seen[0][0].command == "first"


def test_exclusive_drains_shared_holders_and_blocks_new_ones(layout: Layout) -> None:
    """Writer preference: once the exclusive acquirer's file is up, new shared acquirers back off."""
    reader = acquire(layout, "shared", params=FAST, command="long push")
    got: list[LockHandle] = []
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            got.append(acquire(layout, "exclusive", params=FAST, wait=10, command="sweep"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=sweeper)
    t.start()
    # Wait until the sweep's barrier file is visible, then a new shared acquirer must back off.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(n.startswith("repo~X~") for n in lock_files(layout)):
        time.sleep(0.02)
    assert any(n.startswith("repo~X~") for n in lock_files(layout))
    with pytest.raises(LockBusy, match="sweep"):
        acquire(layout, "shared", params=FAST, command="new push")
    assert not got  # still draining
    reader.release()
    t.join(10)
    assert not errors and got
    got[0].release()


def test_exclusive_gives_up_draining_at_its_deadline(layout: Layout) -> None:
    with acquire(layout, "shared", params=FAST, command="long push"):
        with pytest.raises(LockBusy, match="long push"):
            acquire(layout, "exclusive", params=FAST, wait=0.3)
        # its barrier is gone: shared acquirers are not blocked any more
        with acquire(layout, "shared", params=FAST):
            pass
        assert not any(n.startswith("repo~X~") for n in lock_files(layout))


def test_exclusive_hold_serialises_shared_holders(layout: Layout) -> None:
    intervals: list[tuple[float, float]] = []
    mu = threading.Lock()

    def writer() -> None:
        with acquire(layout, "shared", params=FAST) as h:
            for _ in range(3):
                with h.exclusive_hold():
                    start = time.monotonic()
                    time.sleep(0.03)
                    end = time.monotonic()
                with mu:
                    intervals.append((start, end))

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(intervals) == 9
    intervals.sort()
    for (_s1, e1), (s2, _e2) in itertools.pairwise(intervals):
        assert s2 >= e1, "two index.json holds overlapped"


def test_exclusive_hold_is_a_no_op_under_the_exclusive_lock(layout: Layout) -> None:
    with acquire(layout, "exclusive", params=FAST) as h, h.exclusive_hold():
        assert not any(n.startswith("index~") for n in lock_files(layout))


def test_inherited_owner_does_not_conflict(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    with acquire(layout, "exclusive", params=FAST) as parent:
        monkeypatch.setenv(INHERIT_ENV, parent.owner)
        with acquire(layout, "shared", params=FAST) as child, child.exclusive_hold():
            assert child.held


# ------------------------------------------------------------------------------------ leases


def test_refresh_writes_new_generations_and_removes_old(layout: Layout) -> None:
    params = LockParams(ttl=0.9, refresh=0.15, settle=0.02, fence_margin=0.3, poll=0.05)
    with acquire(layout, "shared", params=params) as h:
        time.sleep(0.8)
        h.ensure_held()
        (name,) = lock_files(layout)
        assert LockInfo.from_name(name).gen >= 3
        body = json.loads((Path(layout.location) / LOCK_DIR / name).read_text())
        assert body["prev"] and body["prev"] != name
    assert lock_files(layout) == []


def test_broken_lock_is_noticed_and_holder_stops(layout: Layout) -> None:
    params = LockParams(ttl=0.9, refresh=0.1, settle=0.02, fence_margin=0.3, poll=0.05)
    with acquire(layout, "shared", params=params) as h:
        for name in lock_files(layout):
            os.unlink(Path(layout.location) / LOCK_DIR / name)
        time.sleep(0.4)
        with pytest.raises(LockLost, match="gone"):
            h.ensure_held()


def test_holder_fences_itself_when_refresh_keeps_failing(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    params = LockParams(ttl=0.6, refresh=0.1, settle=0.02, fence_margin=0.2, poll=0.05)
    with acquire(layout, "shared", params=params) as h:
        def failing(_inst: object) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(h, "_refresh", failing)
        h.ensure_held()
        time.sleep(0.6)
        with pytest.raises(LockLost, match="not refreshed"):
            h.ensure_held()


# ------------------------------------------------------------------------------------ staleness


def _body(pid: int, *, created: float | None = None, ttl: float = 900, host_id: str | None = None,
          layout: Layout) -> dict[str, object]:
    me = LockDir(layout, FAST.resolve(layout)).identity
    created = time.time() if created is None else created
    return {"v": 1, "scope": "repo", "mode": "X", "command": "ocigc sweep", "host": me.host,
            "host_id": host_id or me.host_id, "boot_id": me.boot_id, "pidns": me.pidns, "pid": pid,
            "pid_starttime": 1, "created_unix": created, "acquired_unix": created, "ttl_s": ttl,
            "expires_unix": created + ttl}


def test_dead_process_on_this_host_is_stale_and_broken_with_a_journal_record(layout: Layout) -> None:
    name = lock_name("repo", "X", "deadowner", 1)
    write_foreign_lock(layout, name, _body(dead_pid(), layout=layout))
    with acquire(layout, "exclusive", params=FAST, command="sweep") as h:
        assert h.stats.broken == [name]
    (rec,) = read_records(layout, "lock-break")
    assert rec["lock"] == name and "gone" in rec["reason"] and rec["holder"]["command"] == "ocigc sweep"


def test_other_host_is_never_judged_by_pid(layout: Layout) -> None:
    name = lock_name("repo", "X", "otherhost", 1)
    write_foreign_lock(layout, name, _body(dead_pid(), host_id="another-host", layout=layout))
    with pytest.raises(LockBusy, match="ocigc sweep"):
        acquire(layout, "shared", params=FAST)
    assert lock_files(layout) == [name]


def test_clearly_expired_lock_is_stale(layout: Layout) -> None:
    name = lock_name("repo", "X", "ancient", 7)
    write_foreign_lock(layout, name, _body(1, created=time.time() - 3600, ttl=60, host_id="elsewhere",
                                           layout=layout))
    with acquire(layout, "shared", params=FAST) as h:
        assert h.stats.broken == [name]
    (rec,) = read_records(layout, "lock-break")
    assert "expired" in rec["reason"]


def test_live_lock_of_another_host_becomes_stale_only_by_observed_age(layout: Layout) -> None:
    """A holder that stopped refreshing (killed elsewhere): broken after TTL + settle + poll of watching."""
    name = lock_name("repo", "X", "frozen", 1)
    write_foreign_lock(layout, name, _body(1, ttl=3600, host_id="elsewhere", layout=layout))
    params = LockParams(ttl=0.5, settle=0.02, backoff_min=0.02, backoff_max=0.05, backoff_cap=0.1, poll=0.05)
    with pytest.raises(LockBusy):
        acquire(layout, "shared", params=params, wait=0.2)
    started = time.monotonic()
    with acquire(layout, "shared", params=params, wait=5) as h:
        assert h.stats.broken == [name]
    assert time.monotonic() - started >= params.ttl
    (rec,) = read_records(layout, "lock-break")
    assert "observed" in rec["reason"]


@pytest.mark.parametrize("name,content", [
    (lock_name("repo", "X", "emptyowner", 1), None),
    (lock_name("repo", "S", "badjson", 1), b"{not json"),
    ("something-else.txt", b"hello"),
])
def test_empty_unreadable_or_unknown_lock_file_is_held_until_stale(layout: Layout, name: str,
                                                                  content: bytes | None) -> None:
    d = Path(layout.location) / LOCK_DIR
    d.mkdir(parents=True)
    (d / name).write_bytes(content or b"")
    mode = "exclusive" if ".S." in name.replace("~", ".") else "shared"
    params = LockParams(ttl=0.5, settle=0.02, backoff_min=0.02, backoff_max=0.05, backoff_cap=0.1, poll=0.05)
    with pytest.raises(LockBusy):
        acquire(layout, mode, params=params)  # type: ignore[arg-type]
    with acquire(layout, mode, params=params, wait=5) as h:  # type: ignore[arg-type]
        assert h.stats.broken == [name]


# ------------------------------------------------------------------------------------ parameters


def test_params_from_environment(monkeypatch: pytest.MonkeyPatch, layout: Layout) -> None:
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OCIGC_LOCK_HOST_ID", "host-a")
    p = LockParams.from_env().resolve(layout)
    assert (p.ttl, p.settle, p.refresh, p.host_id) == (9.0, 0.05, 3.0, "host-a")
    assert p.fence_margin == pytest.approx(2.25)
    monkeypatch.setenv("OCIGC_LOCK_TTL", "soon")
    with pytest.raises(LockError, match="OCIGC_LOCK_TTL"):
        LockParams.from_env()


def test_defaults_and_settle_by_file_system(layout: Layout) -> None:
    p = LockParams().resolve(None)
    assert (p.ttl, p.refresh, p.settle, p.fence_margin, p.max_skew) == (900, 300, 2.0, 225, 600)
    # tmp_path is on a disk of this kernel (or tmpfs): a short settle suffices
    from ocigc.lock.params import HOST_SHARED_FSTYPES
    from ocigc.storage.mounts import LOCAL_FSTYPES, fs_type

    kind = fs_type(str(layout.storage.local_path("")))
    assert kind in LOCAL_FSTYPES
    assert default_settle(layout) == (0.1 if kind in HOST_SHARED_FSTYPES else 0.02)
    with pytest.raises(LockError, match="refresh"):
        LockParams(ttl=10, refresh=9).resolve(layout)


def test_list_and_break_helpers(layout: Layout) -> None:
    stale = lock_name("repo", "S", "deadbeef", 1)  # shared: the shared acquirer below leaves it alone
    write_foreign_lock(layout, stale, _body(dead_pid(), layout=layout))
    with acquire(layout, "shared", params=FAST, command="live one") as h:
        verdicts = {info.name: v for info, v in list_locks(layout, FAST)}
        assert verdicts[stale].stale and not verdicts[h.lock_files()[0]].stale
        broken, refused = break_locks(layout, params=FAST)
        assert [b.name for b, _ in broken] == [stale] and [r.owner for r in refused] == [h.owner]
        broken, refused = break_locks(layout, owner=h.owner[:10], force=True, params=FAST)
        assert [b.owner for b, _ in broken] == [h.owner] and not refused
        time.sleep(1.5)
        with pytest.raises(LockLost):
            h.ensure_held()
    recs = read_records(layout, "lock-break")
    assert len(recs) == 2 and any(r["forced"] for r in recs)


# ------------------------------------------------------------------------------------ CLI


def test_cli_locks_list_break_and_exec(layout: Layout) -> None:
    path = layout.location
    env = {**FAST_ENV}
    holder = subprocess.Popen([*_ocigc(), "exec", path, "--", sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, **env})
    try:
        _wait_for(lambda: len(lock_files(layout)) == 2)
        rc, out, err, _ = run_ocigc("locks", "list", path, "--json", env=env)
        assert rc == 0, err
        locks = json.loads(out)["locks"]
        assert {(x["scope"], x["mode"]) for x in locks} == {("repo", "shared"), ("index", "exclusive")}
        assert all(x["pid"] == holder.pid and not x["stale"] and "exec" in x["command"] for x in locks)
        rc, out, err, _ = run_ocigc("exec", "--exclusive", path, "--", "true", env=env)
        assert rc == 75 and "lock busy" in err and f"pid={holder.pid}" in err and "exec: " in err
        rc, out, err, _ = run_ocigc("locks", "break", path, env=env)
        assert rc == 1 and "refused" in err and "live" in err
        owner = locks[0]["owner"]
        rc, out, err, _ = run_ocigc("locks", "break", path, "--owner", owner, "--force", env=env)
        assert rc == 0, err
        assert holder.wait(30) != 0  # the holder noticed and stopped its command
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert lock_files(layout) == []
    assert len(read_records(layout, "lock-break")) == 2


def test_cli_exec_journals_and_reports_tags(layout: Layout) -> None:
    path = layout.location
    rc, _out, err, _ = run_ocigc("exec", path, "--", *_ocigc(), "tag", f"{path}:v1", "v2", env=FAST_ENV)
    assert rc == 0, err
    assert "v2" in err
    (rec,) = read_records(layout, "exec")
    assert rec["tags_added"] == ["v2"] and rec["exit_code"] == 0
    rc, _out, err, _ = run_ocigc("exec", path, "--", "sh", "-c", "exit 7", env=FAST_ENV)
    assert rc == 7
    rc, _out, err, _ = run_ocigc("exec", path, "--", "sh", "-c", f"rm {path}/blobs/sha256/*", env=FAST_ENV)
    assert rc == 4 and "error:" in err


def _ocigc() -> list[str]:
    from tests.harness.tools import ocigc_command

    return ocigc_command()


def _wait_for(cond: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
