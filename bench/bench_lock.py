"""Lock benchmark and soak on two real s3fs mounts of one bucket (two "hosts", A and B), on moto and
SeaweedFS, at 0 and 20 ms per request (``--stores``, ``--latency``; ``bench/stores.py``).

``python -m bench lock``                     acquisition latency (settle included) + a short soak
``python -m bench lock -- --soak-writers 4 --soak-ops 25 --soak-sweeps 20``   the long soak
``python -m bench lock -- --quick``          fewer samples

Latency: ``ocigc.lock.acquire.acquire`` in-process through mount A (uncontended shared and exclusive, the
index.json hold), with the default settle delay of a FUSE mount (2 s) and with 1.2 s, plus the
cost in storage operations. Soak: ``Soak`` (also used by ``tests/test_concurrency.py``) runs
concurrent ``ocigc`` writers (push, tag, delete) from both mounts while sweeps run with
``--grace 0``, then checks that nothing a writer committed is lost and ``ocigc check`` is clean.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import Matrix, load_1min, save  # noqa: E402
from bench.stores import BenchStore, add_store_arguments, open_store, store_matrix  # noqa: E402
from tests.harness.tools import run_ocigc  # noqa: E402

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
RETRY_CODES = {3, 75}  # lost race after retries, lock busy: the caller tries again later
WRITE_ENV = {"OCIGC_LOCK_HOLD_WAIT": "300"}


# ------------------------------------------------------------------------------------------ soak
@dataclass
class SoakResult:
    ops: Counter[str] = field(default_factory=Counter)
    committed: int = 0
    deleted: int = 0
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    retries: int = 0
    busy: int = 0
    lost_race_exits: int = 0
    index_races: int = 0
    lock_breaks: int = 0
    resurrected: int = 0
    sweeps_done: int = 0
    storage_ops: int = 0
    seconds: float = 0.0
    check_exit: int = -1
    check_output: str = ""
    details: list[str] = field(default_factory=list)
    breaks: list[str] = field(default_factory=list)

    @property
    def operations(self) -> int:
        return sum(self.ops.values())

    def to_json(self) -> dict[str, Any]:
        return {"operations": self.operations, "by_kind": dict(self.ops), "committed": self.committed,
                "deleted": self.deleted, "lost": self.lost, "unexpected": self.unexpected, "retries": self.retries,
                "lock_busy_exits": self.busy, "lost_race_exits": self.lost_race_exits,
                "index_races_journaled": self.index_races, "lock_breaks": self.lock_breaks,
                "resurrected": self.resurrected, "sweeps_done": self.sweeps_done, "storage_ops": self.storage_ops,
                "seconds": round(self.seconds, 1), "check_exit": self.check_exit, "lock_break_reasons": self.breaks}

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items()))
        return (f"soak: {self.operations} ocigc operations ({kinds}) in {self.seconds:.0f}s; "
                f"{self.committed} writes committed, {len(self.lost)} lost; {self.deleted} deletes; "
                f"{self.sweeps_done} sweeps; races detected: {self.index_races} index.json lost races journaled, "
                f"{self.lost_race_exits} exit-3; retries: {self.retries} ({self.busy} lock-busy exits); "
                f"{self.lock_breaks} lock breaks, {self.resurrected} resurrections; "
                f"{self.storage_ops} storage operations; check exit {self.check_exit}")


class Soak:
    """Writers on both mounts plus sweeps; afterwards every committed tag must still be there."""

    def __init__(self, mount_a: Path, mount_b: Path, workdir: Path, *, env_a: dict[str, str],
                 env_b: dict[str, str], writers_per_host: int = 2, ops_per_writer: int = 5, sweeps: int = 4,
                 name: str = "soak", seed: int = 0) -> None:
        self.paths = {"a": mount_a / name, "b": mount_b / name}
        self.envs = {"a": {**env_a, **WRITE_ENV}, "b": {**env_b, **WRITE_ENV}}
        self.workdir = workdir
        self.writers_per_host = writers_per_host
        self.ops_per_writer = ops_per_writer
        self.sweeps = sweeps
        self.rng = random.Random(seed)
        self.result = SoakResult()
        self.expected: dict[str, str] = {}  # tag -> digest, committed and never deleted
        self.gone: set[str] = set()  # tags deleted (exit 0): must be absent
        self.mu = threading.Lock()
        self.done = threading.Event()

    # --- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        from tests.kit.layouts import LayoutBuilder

        b = LayoutBuilder(self.paths["a"])
        for i in range(3):
            b.image(f"base-{i}", [b"soak common layer", f"base layer {i}".encode()])
        b.save()
        self.files = self.workdir / "files"
        self.files.mkdir(parents=True, exist_ok=True)
        (self.files / "shared.txt").write_text("a payload several pushes share (and deletes remove)\n")

    def _ocigc(self, host: str, kind: str, *args: str) -> tuple[int, str, str]:
        """Run one ocigc command (in the files dir), retrying lock-busy and lost-race exits; counts everything."""
        for attempt in range(8):
            r = run_ocigc(*args, env=self.envs[host], timeout=600, cwd=self.files)
            with self.mu:
                self.result.ops[kind] += 1
                self.result.storage_ops += sum((r.op_counts or {}).values())
                if r.returncode == 75:
                    self.result.busy += 1
                if r.returncode == 3:
                    self.result.lost_race_exits += 1
            if r.returncode not in RETRY_CODES:
                return r.returncode, r.stdout, r.stderr
            with self.mu:
                self.result.retries += 1
            time.sleep(self.rng.uniform(0.2, 1.0) * (attempt + 1))
        return r.returncode, r.stdout, r.stderr

    def _unexpected(self, what: str, rc: int, err: str) -> None:
        lines = err.strip().splitlines()
        with self.mu:
            self.result.unexpected.append(f"{what}: exit {rc}: {lines[-1] if lines else ''}")
            self.result.details.append(f"--- {what}: exit {rc}\n" + "\n".join(lines[-40:]))

    # --- actors ------------------------------------------------------------------------------
    def writer(self, host: str, w: int) -> None:
        path = str(self.paths[host])
        for i in range(self.ops_per_writer):
            name = f"{host}{w}-{i}"
            kind = ("push-shared", "tag", "push-unique", "delete")[(i + w) % 4]
            if kind in ("push-shared", "push-unique"):
                f = "shared.txt"
                if kind == "push-unique":
                    f = f"{name}.txt"
                    (self.files / f).write_text(f"unique payload {name} {time.time()}\n")
                tag = f"p-{name}"
                rc, out, err = self._ocigc(host, "push", "push", f"{path}:{tag}", f"{f}:text/plain",
                                           "--lock-wait", "120s")
                if rc == 0:
                    self._commit(tag, out)
                else:
                    self._unexpected(f"push {tag}", rc, err)
            elif kind == "tag":
                tag = f"t-{name}"
                rc, out, err = self._ocigc(host, "tag", "tag", f"{path}:base-{i % 3}", tag, "--lock-wait", "120s")
                if rc == 0:
                    self._commit(tag, out)
                else:
                    self._unexpected(f"tag {tag}", rc, err)
            else:
                # push an artifact that shares its layer with other pushes, then delete it again
                tag = f"d-{name}"
                rc, out, err = self._ocigc(host, "push", "push", f"{path}:{tag}", "shared.txt:text/plain",
                                           "--lock-wait", "120s")
                if rc != 0:
                    self._unexpected(f"push {tag}", rc, err)
                    continue
                rc, out, err = self._ocigc(host, "delete", "delete", f"{path}:{tag}", "--yes", "--lock-wait", "120s")
                if rc == 0:
                    with self.mu:
                        self.gone.add(tag)
                        self.result.deleted += 1
                else:
                    self._unexpected(f"delete {tag}", rc, err)

    def _commit(self, tag: str, out: str) -> None:
        m = DIGEST_RE.search(out)
        with self.mu:
            self.expected[tag] = m.group(0) if m else ""
            self.result.committed += 1

    def sweeper(self) -> None:
        hosts = ["a", "b"]
        for i in range(self.sweeps):
            if self.done.is_set() and i > 0:
                break
            host = hosts[i % 2]
            time.sleep(self.rng.uniform(0.5, 3.0))
            args = ["sweep", str(self.paths[host]), "--grace", "0", "--yes", "--lock-wait", "120s", "--json"]
            if i % 2:
                args.append("--trash")
            rc, out, err = self._ocigc(host, "sweep", *args)
            if rc != 0:
                self._unexpected("sweep", rc, err)
                continue
            with self.mu:
                self.result.sweeps_done += 1
                try:
                    for lay in json.loads(out).get("layouts", []):
                        self.result.resurrected += len(lay.get("resurrected") or [])
                except ValueError:
                    pass

    # --- run and verify ----------------------------------------------------------------------
    def run(self) -> SoakResult:
        self.setup()
        started = time.monotonic()
        threads = [threading.Thread(target=self.writer, args=(h, w)) for h in ("a", "b")
                   for w in range(self.writers_per_host)]
        sweeper = threading.Thread(target=self.sweeper)
        for t in [*threads, sweeper]:
            t.start()
        for t in threads:
            t.join()
        self.done.set()
        sweeper.join()
        # a final sweep after the writers (from B) with trash purge
        rc, _, err = self._ocigc("b", "sweep", "sweep", str(self.paths["b"]), "--grace", "0", "--yes",
                                 "--lock-wait", "120s", "--trash-retention", "0")
        if rc != 0:
            self._unexpected("final sweep", rc, err)
        else:
            self.result.sweeps_done += 1
        self.result.seconds = time.monotonic() - started
        self.verify()
        return self.result

    def verify(self) -> None:
        from ocigc.layout.journal import read_records
        from ocigc.layout.layout import Layout
        from ocigc.storage.local import LocalStorage

        doc = json.loads((self.paths["a"] / "index.json").read_text())
        tags: dict[str, set[str]] = {}
        for e in doc.get("manifests") or []:
            name = (e.get("annotations") or {}).get("org.opencontainers.image.ref.name")
            if name:
                tags.setdefault(name, set()).add(e["digest"])
        for tag, digest in sorted(self.expected.items()):
            if tag not in tags:
                self.result.lost.append(f"{tag}: missing from index.json")
            elif digest and digest not in tags[tag]:
                self.result.lost.append(f"{tag}: now names {sorted(tags[tag])}, committed {digest}")
        for tag in sorted(self.gone):
            if tag in tags:
                self.result.lost.append(f"{tag}: deleted (exit 0) but back in index.json")
        r = run_ocigc("check", str(self.paths["b"]), env=self.envs["b"])
        self.result.check_exit, self.result.check_output = r.returncode, r.stdout + r.stderr
        layout = Layout(LocalStorage(self.paths["a"]))
        self.result.index_races = len(read_records(layout, "race"))
        breaks = read_records(layout, "lock-break")
        self.result.lock_breaks = len(breaks)
        self.result.breaks = [f"{b.get('lock')}: {b.get('reason')} (holder {(b.get('holder') or {}).get('command')!r}, "
                              f"by {b.get('breaker')})" for b in breaks]


# ------------------------------------------------------------------------------------------ latency
#: Settle delays each acquisition waits by the protocol (``ocigc/lock/handle.py``, ``docs/locking.md``): a
#: repository's shared lock none, its exclusive lock two, the ``index.json`` hold one.
PROTOCOL_WAITS = {"shared": 0, "exclusive": 2, "hold": 1}


def latency(mount: Path, settle: float, samples: int) -> dict[str, Any]:
    from ocigc.layout.layout import Layout
    from ocigc.lock.acquire import acquire
    from ocigc.lock.params import LockParams
    from ocigc.storage.base import OpCounter
    from tests.kit.layouts import LayoutBuilder

    root = mount / f"lat-{settle:g}"
    LayoutBuilder(root).save()
    counter = OpCounter()
    from ocigc.storage.local import LocalStorage

    layout = Layout(LocalStorage(root, counter))
    params = LockParams(settle=settle)
    out: dict[str, Any] = {"settle_s": settle}
    for mode in ("shared", "exclusive", "hold"):
        times: list[float] = []
        ops: list[int] = []
        for _ in range(samples):
            counter.reset()
            t0 = time.perf_counter()
            if mode == "hold":
                with acquire(layout, "shared", params=params) as h:
                    counter.reset()
                    t0 = time.perf_counter()
                    with h.exclusive_hold():
                        times.append(time.perf_counter() - t0)
                        ops.append(counter.total())
                continue
            h = acquire(layout, mode, params=params)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t0)
            ops.append(counter.total())
            h.release()
        out[mode] = {"median_s": round(statistics.median(times), 3), "p90_s": round(sorted(times)[int(0.9 * (len(times)
                     - 1))], 3), "max_s": round(max(times), 3), "over_waits_ms": round(
                     (statistics.median(times) - PROTOCOL_WAITS[mode] * settle) * 1000, 1),
                     "storage_ops": round(statistics.median(ops))}
    return out


def run_store(store: BenchStore, args: argparse.Namespace, samples: int) -> dict[str, Any]:
    """Latency through mount A, then the soak on mounts A and B, on one store and latency."""
    a, b = store.path, store.mount_another("b")
    out: dict[str, Any] = {"latency": [] if args.no_latency else [latency(a, s, samples) for s in (2.0, 1.2)]}
    for row in out["latency"]:
        print(f"{store.column}, settle {row['settle_s']:g}s: " + "; ".join(
            f"{k} median {v['median_s']}s (p90 {v['p90_s']}s, +{v['over_waits_ms']} ms over the protocol's waits, "
            f"{v['storage_ops']} storage ops)" for k, v in row.items() if isinstance(v, dict)), flush=True)
    if not args.no_soak:
        # settle must exceed the mount's stat cache expiry (s3fs stat_cache_expire=1): see docs/locking.md
        env = {"OCIGC_LOCK_TTL": "30", "OCIGC_LOCK_SETTLE": "1.2", "OCIGC_LOCK_BACKOFF_MIN": "0.1",
               "OCIGC_LOCK_BACKOFF_MAX": "0.5", "OCIGC_LOCK_BACKOFF_CAP": "2", "OCIGC_LOCK_POLL": "0.2"}
        env_a = {**env, "OCIGC_LOCK_HOST_ID": "bench-a", "OCIGC_VIA": args.via_a}
        env_b = {**env, "OCIGC_LOCK_HOST_ID": "bench-b", "OCIGC_VIA": args.via_b}
        soak = Soak(a, b, store.workdir / "soak", env_a=env_a, env_b=env_b, writers_per_host=args.soak_writers,
                    ops_per_writer=args.soak_ops, sweeps=args.soak_sweeps)
        res = soak.run()
        print(f"{store.column}: {res.summary()}")
        for line in res.breaks:
            print(f"lock break: {line}")
        if res.lost or res.unexpected or res.check_exit:
            print("FAILED:", json.dumps({"lost": res.lost, "unexpected": res.unexpected,
                                         "check": res.check_output[-2000:]}, indent=1))
            print("\n".join(res.details))
        out["soak"] = res.to_json()
    out["load"] = load_1min()
    return out


def fill(lat: Matrix, soak: Matrix, col: str, res: dict[str, Any]) -> None:
    for row in res["latency"]:
        for mode in ("shared", "exclusive", "hold"):
            v = row[mode]
            lat.put(f"settle {row['settle_s']:g} s: {mode}, median s", col, v["median_s"], res["load"])
            lat.put(f"settle {row['settle_s']:g} s: {mode}, ms over its waits", col, v["over_waits_ms"], res["load"])
            lat.put(f"settle {row['settle_s']:g} s: {mode}, storage ops", col, v["storage_ops"], res["load"])
    if "soak" in res:
        s = res["soak"]
        for key in ("operations", "seconds", "retries", "lock_busy_exits", "lost_race_exits", "index_races_journaled",
                    "lock_breaks", "resurrected", "sweeps_done", "storage_ops", "check_exit"):
            soak.put(key.replace("_", " "), col, s[key], res["load"])
        soak.put("lost (committed tags missing)", col, len(s["lost"]), res["load"])
        soak.put("unexpected exits", col, len(s["unexpected"]), res["load"])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 samples, a soak of 1 writer per host x 2 operations")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--soak-writers", type=int, default=None, help="writers per host (default 2)")
    ap.add_argument("--soak-ops", type=int, default=None, help="operations per writer (default 6)")
    ap.add_argument("--soak-sweeps", type=int, default=None, help="sweeps (default 4)")
    ap.add_argument("--via-a", default="mount", choices=("auto", "mount"),
                    help="how the soak's ocigc runs on mount A reach the layout (default mount: the lock-file "
                         "protocol)")
    ap.add_argument("--via-b", default="auto", choices=("auto", "mount"),
                    help="the same on mount B (default auto: the bucket behind the mount, lease locks)")
    ap.add_argument("--no-soak", action="store_true")
    ap.add_argument("--no-latency", action="store_true")
    add_store_arguments(ap)
    args = ap.parse_args(argv)
    samples = args.samples or (3 if args.quick else 10)
    args.soak_writers = args.soak_writers or (1 if args.quick else 2)
    args.soak_ops = args.soak_ops or (2 if args.quick else 6)
    args.soak_sweeps = args.soak_sweeps or (1 if args.quick else 4)
    lat = Matrix("lock acquisition through s3fs mount A (in-process acquire)")
    soak = Matrix(f"soak: {args.soak_writers} writers per host x {args.soak_ops} operations, "
                  f"{args.soak_sweeps} sweeps, two s3fs mounts (A --via {args.via_a}, B --via {args.via_b})")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-lock-") as tmp:
        for kind, ms in store_matrix(args):
            with open_store(kind, ms, Path(tmp) / f"{kind}-{ms}") as store:
                results[store.column] = run_store(store, args, samples)
                fill(lat, soak, store.column, results[store.column])
    for table in (lat, soak):
        if table.rows:
            print("\n" + table.markdown())
    path = save("lock", {"stores": results, "tables": [lat.to_json(), soak.to_json()]})
    print(f"results: {path}", flush=True)
    soak_ok = all(not (r["soak"]["lost"] or r["soak"]["unexpected"] or r["soak"]["check_exit"])
                  for r in results.values() if "soak" in r)
    return 0 if soak_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
