"""Benchmark: ocigc push and pull against ``cp`` and boto3 of the same bytes, on local disk and on object
stores (moto and SeaweedFS, 0 and 20 ms per request) through s3fs and through ``s3://``.

    python -m bench push_pull                                   # every case, local and every store/latency
    python -m bench push_pull -- --quick                        # 1 MiB and 1 MiB x 4, one run each
    python -m bench push_pull -- --targets s3fs,s3 --cases 64M,1G --stores seaweedfs --latency 20

Cases (``--cases``, alias ``--sizes``): single files of 8 MiB, 64 MiB, 256 MiB, 1 GiB and 2 GiB, and
artifacts of 16 MiB x 8, 64 MiB x 8 and 64 MiB x 16 files. Targets (``--targets``):

- ``local``: a local directory. ``cp`` of the payload files into it (also ``cp`` + ``sync FILE...``,
  the durability push has: it fsyncs every blob before the rename) and back out, against ``ocigc
  push``/``pull`` (push also once with ``os.fsync`` stubbed out); ``bench/push_pull_local.py``.
- ``s3fs``: for each store and latency (``--stores``, ``--latency``; ``bench/stores.py``), an s3fs
  mount of a fresh bucket (through the latency proxy when latency > 0): ``cp`` into the mount and
  back out against ``ocigc push MOUNT/...`` and ``ocigc pull``.
- ``s3``: the same bucket as ``s3://``: boto3's transfer manager with its defaults (what
  ``upload_file``/``download_file`` and ``aws s3 cp`` use: 8 MiB parts, 10 requests at a time; every
  file of an artifact in one manager) against ``ocigc push s3://...`` and ``ocigc pull``.

ocigc runs twice over: the library call alone in a fresh interpreter (``transfer``, the main ratio;
its peak RSS is the peak memory reported) and the CLI end to end (interpreter start-up included);
boto3 likewise (its transfer alone, and its process's wall time for the CLI ratio; ``cp`` has no
start-up to speak of). Ratio = peer time / ocigc time (1.0 = as fast as the peer; above 1, faster).
Each measurement is repeated ``--repeat`` times (the contenders alternate, each run on fresh names)
and the fastest kept; each row records the 1-minute load average (``uptime``) after it. Payloads,
outputs and uploads are deleted after each case. Results: Markdown tables, JSON under bench/results.

``--publish-cases`` (default none) also measures, on s3fs of each store and latency, what writing
blobs safely costs there: the same push with blobs written straight to their digest name (the old
path, patched in for the comparison only) and through a temp name renamed into place (what push
does; s3fs turns the rename into CopyObject + DELETE), plus ``mv`` of a file of that size.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Matrix, load_1min, save
from bench.push_pull_local import (
    CaseResult,
    PublishResult,
    local_table,
    publish_table,
    run_local_case,
    run_publish_case,
)
from bench.stores import BenchStore, add_store_arguments, open_store, store_matrix
from bench.transfer import CASES, DEFAULT_CASES, QUICK_CASES, Timing, boto_driver, ocigc_driver, payload, rm, run_timed

TARGETS = ("local", "s3fs", "s3")


@dataclass
class StoreRow:
    """One operation of one case on one store and latency: ocigc and its peer, fastest of the runs."""

    column: str
    case: str
    bytes: int
    path: str  # "s3fs" or "s3://"
    op: str  # "push" or "pull"
    peer: str  # "cp" or "boto3"
    peer_s: float  # the peer's transfer (cp: its wall time)
    peer_wall_s: float  # the peer's process, start-up included
    ocigc_s: float  # the library call alone
    ocigc_cli_s: float  # the CLI end to end
    ocigc_rss_mib: float
    ocigc_requests: int | None
    peer_requests: int | None
    load: float

    @property
    def ratio(self) -> float:
        return self.peer_s / self.ocigc_s

    @property
    def ratio_cli(self) -> float:
        return self.peer_wall_s / self.ocigc_cli_s


class Runner:
    """The measurements of one case on one store: fresh names per run, the fastest of ``repeat``."""

    def __init__(self, store: BenchStore, case: str, scratch: Path, opts: argparse.Namespace,
                 env: dict[str, str]) -> None:
        self.store, self.case, self.scratch, self.opts = store, case, scratch, opts
        self.env = {**env, **store.env()}
        self.ocigc = [str(Path(sys.executable).with_name("ocigc"))]
        files, self.size = CASES[case]
        self.source = scratch / f"payload-{case}"
        self.names = payload(self.source, files, self.size)
        self.prefixes: list[str] = []
        self.requests: dict[str, int] = {}

    def fresh(self, kind: str, i: int) -> str:
        """A new top-level name in the bucket (no s3fs cache or store folder carries over between runs)."""
        name = f"{kind}-{self.case}-{i}"
        self.prefixes.append(name)
        return name

    def measure(self, label: str, fn: Callable[..., Timing], *args: Any) -> Timing:
        """``fn(*args)``, and the requests it caused when the store counts them."""
        self.store.reset_counts()
        t = fn(*args)
        if self.store.counting:
            self.requests[label] = sum(self.store.counts().values())
        return t

    def out(self, kind: str, i: int) -> Path:
        d = self.scratch / f"out-{kind}-{self.case}-{i}"
        rm(d)
        d.mkdir()
        return d

    def pulled(self, label: str, fn: Callable[..., Timing], *args: Any) -> Timing:
        """A pull into ``args[-1]`` (a fresh directory), then a check of the files' sizes."""
        out = args[-1]
        t = self.measure(label, fn, *args)
        for n in self.names:
            if (out / n).stat().st_size != self.size:
                raise RuntimeError(f"{out / n}: wrong size after pull")
        rm(out)
        return t

    def push_args(self, lay: str) -> list[str]:
        return [*self.ocigc, "push", "-q", f"{lay}:v1", *self.names, "--concurrency", str(self.opts.concurrency)]

    def ocigc_push(self, lay: str) -> Timing:
        return ocigc_driver("push", {"layout": lay, "files": self.names, "cwd": str(self.source),
                                     "jobs": self.opts.concurrency}, self.env)

    def ocigc_pull(self, lay: str, out: Path) -> Timing:
        return ocigc_driver("pull", {"layout": lay, "out": str(out), "jobs": self.opts.concurrency}, self.env)

    def cli_pull(self, lay: str, out: Path) -> Timing:
        return run_timed([*self.ocigc, "pull", "-q", f"{lay}:v1", "-o", str(out), "--concurrency",
                          str(self.opts.concurrency)], self.env)

    def s3fs_round(self, i: int) -> tuple[dict[str, Timing], dict[str, Timing]]:
        """cp into the mount and out again, ocigc push and pull (library call, CLI) through it."""
        base = self.store.path
        cp_dir = base / self.fresh("cp", i)
        cp_dir.mkdir()
        lay, cli = str(base / self.fresh("lay", i)), str(base / self.fresh("cli", i))
        push = {"peer": self.measure("cp push", run_timed, ["cp", *self.names, str(cp_dir)], None, self.source),
                "ocigc": self.measure("ocigc push", self.ocigc_push, lay),
                "cli": self.measure("ocigc CLI push", run_timed, self.push_args(cli), self.env, self.source)}
        pull = {"peer": self.pulled("cp pull", lambda out: run_timed(["cp", *[str(cp_dir / n) for n in self.names],
                                                                          str(out)]), self.out("cp", i)),
                "ocigc": self.pulled("ocigc pull", self.ocigc_pull, lay, self.out("ocigc", i)),
                "cli": self.pulled("ocigc CLI pull", self.cli_pull, lay, self.out("cli", i))}
        return push, pull

    def s3_round(self, i: int) -> tuple[dict[str, Timing], dict[str, Timing]]:
        """boto3 up and down, ocigc push and pull (library call, CLI) on s3://."""
        up = self.fresh("up", i) + "/"
        lay, cli = self.store.url(self.fresh("lay3", i)), self.store.url(self.fresh("cli3", i))
        boto = {"bucket": self.store.bucket, "prefix": up, "files": self.names}
        push = {"peer": self.measure("boto3 push", boto_driver, "push", {**boto, "cwd": str(self.source)}, self.env),
                "ocigc": self.measure("ocigc push s3", self.ocigc_push, lay),
                "cli": self.measure("ocigc CLI push s3", run_timed, self.push_args(cli), self.env, self.source)}
        pull = {"peer": self.pulled("boto3 pull", lambda out: boto_driver("pull", {**boto, "out": str(out)}, self.env),
                                    self.out("boto3", i)),
                "ocigc": self.pulled("ocigc pull s3", self.ocigc_pull, lay, self.out("ocigc", i)),
                "cli": self.pulled("ocigc CLI pull s3", self.cli_pull, lay, self.out("cli", i))}
        return push, pull

    def rounds(self, one: Callable[[int], tuple[dict[str, Timing], dict[str, Timing]]]) -> tuple[
            dict[str, Timing], dict[str, Timing]]:
        """``repeat`` rounds; of each contender the fastest run."""
        results = []
        for i in range(self.opts.repeat):
            results.append(one(i))
            self.clean()

        def fastest(runs: list[dict[str, Timing]]) -> dict[str, Timing]:
            return {k: min((r[k] for r in runs), key=lambda t: t.seconds) for k in runs[0]}

        return fastest([r[0] for r in results]), fastest([r[1] for r in results])

    def row(self, path: str, op: str, t: dict[str, Timing]) -> StoreRow:
        peer = "cp" if path == "s3fs" else "boto3"
        suffix = "" if path == "s3fs" else " s3"
        return StoreRow(self.store.column, self.case, len(self.names) * self.size, path, op, peer,
                        t["peer"].seconds, t["peer"].wall or t["peer"].seconds, t["ocigc"].seconds,
                        t["cli"].seconds, t["ocigc"].maxrss_mib or 0, self.requests.get(f"ocigc {op}{suffix}"),
                        self.requests.get(f"{peer} {op}"), load_1min())

    def clean(self) -> None:
        """Remove what the rounds so far wrote to the bucket."""
        for prefix in self.prefixes:
            self.store.delete_prefix(prefix)
        self.prefixes.clear()

    def run(self, targets: list[str]) -> list[StoreRow]:
        rows = []
        try:
            for target, path in (("s3fs", "s3fs"), ("s3", "s3://")):
                if target in targets:
                    push, pull = self.rounds(self.s3fs_round if target == "s3fs" else self.s3_round)
                    rows += [self.row(path, "push", push), self.row(path, "pull", pull)]
        finally:
            rm(self.source)
            self.clean()
            self.store.vacuum()
        return rows


def store_tables(rows: list[StoreRow], note: str) -> list[Matrix]:
    tables = {op: Matrix(f"{op} on object stores: peer / ocigc (ocigc s vs peer s)", note) for op in ("push", "pull")}
    for r in rows:
        t = tables[r.op]
        t.put(f"{r.case} {r.path}: {r.peer} / ocigc", r.column,
              f"{r.ratio:.2f} ({r.ocigc_s:.2f} vs {r.peer_s:.2f})", r.load)
        t.put(f"{r.case} {r.path}: {r.peer} / ocigc CLI", r.column,
              f"{r.ratio_cli:.2f} ({r.ocigc_cli_s:.2f} vs {r.peer_wall_s:.2f})", r.load)
    return list(tables.values())


def run_stores(opts: argparse.Namespace, cases: list[str], publish_cases: list[str], targets: list[str],
               scratch: Path, env: dict[str, str]) -> tuple[list[StoreRow], list[PublishResult]]:
    rows: list[StoreRow] = []
    publish: list[PublishResult] = []
    for kind, ms in store_matrix(opts):
        with open_store(kind, ms, scratch / f"store-{kind}-{ms}") as store:
            for case in publish_cases:
                publish.append(run_publish_case(store.column, store.path, case, scratch, opts.repeat,
                                                opts.concurrency, {**env, **store.env()}))
                print(publish_table(publish[-1:]).splitlines()[-1], flush=True)
            for case in cases:
                for r in Runner(store, case, scratch, opts, env).run(targets):
                    rows.append(r)
                    print(f"{r.column} {r.case} {r.path} {r.op}: {r.peer} / ocigc {r.ratio:.2f} "
                          f"({r.ocigc_s:.2f} s vs {r.peer_s:.2f} s), CLI {r.ratio_cli:.2f}, load {r.load}", flush=True)
    return rows, publish


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--targets", default=",".join(TARGETS), help=",".join(TARGETS))
    ap.add_argument("--cases", "--sizes", dest="cases", default=None,
                    help=f"default {','.join(DEFAULT_CASES)}; any of {','.join(CASES)}")
    ap.add_argument("--quick", action="store_true", help=f"cases {','.join(QUICK_CASES)}, one run each")
    ap.add_argument("--repeat", type=int, default=None, help="runs per measurement; the fastest is kept (default 2)")
    ap.add_argument("--concurrency", type=int, default=5, help="ocigc --concurrency (oras' push default)")
    ap.add_argument("--scratch", default=None, help="local directory for payloads and pulls (default: a temp dir)")
    ap.add_argument("--publish-cases", default="",
                    help="on s3fs, also push these cases with blobs written straight to their digest name "
                         "(the old path) and through a temp name + rename (the current one)")
    ap.add_argument("--settle", default=None,
                    help="OCIGC_LOCK_SETTLE for ocigc (default: the lock protocol's own, 2 s on FUSE, 0.1 s local)")
    add_store_arguments(ap)
    opts = ap.parse_args(argv)
    opts.cases = opts.cases if opts.cases is not None else ",".join(QUICK_CASES if opts.quick else DEFAULT_CASES)
    opts.repeat = opts.repeat or (1 if opts.quick else 2)
    unknown = [c for c in opts.cases.split(",") + opts.publish_cases.split(",") if c and c not in CASES]
    unknown += [t for t in opts.targets.split(",") if t and t not in TARGETS]
    if unknown:
        ap.error(f"unknown cases or targets {unknown}")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    cases = [c for c in opts.cases.split(",") if c]
    publish_cases = [c for c in opts.publish_cases.split(",") if c]
    targets = [t for t in opts.targets.split(",") if t]
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if opts.settle is not None:
        env["OCIGC_LOCK_SETTLE"] = opts.settle
    else:
        env.pop("OCIGC_LOCK_SETTLE", None)
    local: list[CaseResult] = []
    rows: list[StoreRow] = []
    publish: list[PublishResult] = []
    ocigc = [str(Path(sys.executable).with_name("ocigc"))]
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-", dir=opts.scratch) as tmp:
        scratch = Path(tmp)
        if "local" in targets:
            base = scratch / "local-target"
            base.mkdir()
            for case in cases:
                local.append(run_local_case("local", base, case, scratch, opts.repeat, opts.concurrency, ocigc, env))
                print(local_table(local[-1:]).splitlines()[-1], flush=True)
        if {"s3fs", "s3"} & set(targets) or publish_cases:
            rows, publish = run_stores(opts, cases, publish_cases, targets, scratch, env)
    print(f"\n{platform.node()} {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"repeat {opts.repeat}, concurrency {opts.concurrency}, lock settle {opts.settle or 'default'}\n")
    if local:
        print(local_table(local) + "\n")
    note = ("Ratio = peer time / ocigc time (above 1: ocigc faster); in brackets ocigc's and the peer's seconds. "
            "Peers: cp through the s3fs mount, boto3's transfer manager for s3://. The CLI rows compare whole "
            "processes (start-up included); the others the transfer alone.")
    tables = store_tables(rows, note)
    for t in tables:
        if t.rows:
            print(t.markdown() + "\n")
    if publish:
        print("Blob writes on s3fs: straight to the digest name (old) vs temp name + rename (current)")
        print(publish_table(publish))
    path = save("push_pull", {
        "options": vars(opts),
        "local": [{**asdict(r), "push_ratio": r.push_ratio, "pull_ratio": r.pull_ratio} for r in local],
        "stores": [{**asdict(r), "ratio": r.ratio, "ratio_cli": r.ratio_cli} for r in rows],
        "publish": [{**asdict(r), "extra": r.extra} for r in publish],
        "tables": [t.to_json() for t in tables]})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
