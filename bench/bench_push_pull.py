"""Benchmark: ocigc push and pull against ``cp`` of the same bytes, on local disk and on s3fs.

    .venv/bin/python bench/bench_push_pull.py                      # every case, local and s3fs
    .venv/bin/python bench/bench_push_pull.py --targets local --cases 64M,1G

For each case (single blobs 8 MiB .. 1 GiB, and 16MiBx8 / 64MiBx8 multi-blob artifacts) and each
target (a local directory, an s3fs mount of a moto bucket started here), in one run, side by side:

- ``cp`` of the payload files into the target (the push baseline; also ``cp`` + ``sync FILE...``,
  the durability push has: it fsyncs every blob before the rename) and back out (the pull baseline);
- ``ocigc push`` / ``ocigc pull`` of the same files (push also once with ``os.fsync`` stubbed out,
  to show what the blobs' fsync costs), twice over: the CLI end to end (interpreter
  start-up included) and the library call alone in a fresh interpreter (``transfer``), whose peak
  RSS (``ru_maxrss``) is the peak memory reported.

Throughput ratio = cp time / ocigc time (1.0 = as fast as cp); the table's main ratios use the
library call (``transfer``), the ``(CLI)`` ones the whole command with its interpreter start-up.
Each measurement is repeated ``--repeat`` times and the fastest kept, for cp and ocigc alike.
Payloads and outputs are deleted after each case. Results are printed as a Markdown table and
written as JSON (``--json``).

On s3fs, before the cases above, ``--publish-cases`` (default 8M,64M,256M) measures what writing
blobs safely costs there: the same push with blobs written straight to their digest name (the old
path, patched in for the comparison only: a push killed half-way leaves a short blob) and through
a temp name renamed into place (what push does; s3fs turns the rename into CopyObject + DELETE),
alternating, in the same run, plus ``mv`` of a file of that size on the mount.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
CASES: dict[str, tuple[int, int]] = {  # name -> (files, bytes per file)
    "8M": (1, 8 * MiB), "64M": (1, 64 * MiB), "256M": (1, 256 * MiB), "1G": (1, 1024 * MiB),
    "16Mx8": (8, 16 * MiB), "64Mx8": (8, 64 * MiB),
}

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


@dataclass
class Timing:
    seconds: float
    maxrss_mib: float | None = None
    ops: dict[str, int] = field(default_factory=dict)


@dataclass
class CaseResult:
    target: str
    case: str
    bytes: int
    cp_push: float
    cp_sync_push: float
    cp_pull: float
    push_cli: float
    pull_cli: float
    push_transfer: float
    push_nofsync: float
    pull_transfer: float
    push_rss_mib: float
    pull_rss_mib: float
    cli_rss_mib: float
    notes: list[str] = field(default_factory=list)

    @property
    def push_ratio(self) -> float:
        return self.cp_push / self.push_transfer

    @property
    def pull_ratio(self) -> float:
        return self.cp_pull / self.pull_transfer

    @property
    def push_ratio_sync(self) -> float:
        return self.cp_sync_push / self.push_transfer

    @property
    def push_ratio_cli(self) -> float:
        return self.cp_push / self.push_cli

    @property
    def pull_ratio_cli(self) -> float:
        return self.cp_pull / self.pull_cli


def _run_timed(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Timing:
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
    return Timing(elapsed, usage.ru_maxrss / 1024)


def _driver(mode: str, params: dict[str, Any], env: dict[str, str]) -> Timing:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _DRIVER, mode, json.dumps(params)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"driver {mode} failed after {time.perf_counter() - start:.1f}s:\n{proc.stderr}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Timing(data["seconds"], data["maxrss_kib"] / 1024, data.get("ops") or {})


def _best(n: int, fn: Any, *args: Any, reset: Any = None) -> Timing:
    best: Timing | None = None
    for _ in range(n):
        if reset is not None:
            reset()
        t = fn(*args)
        if best is None or t.seconds < best.seconds:
            best = Timing(t.seconds, max(t.maxrss_mib or 0, (best.maxrss_mib or 0) if best else 0), t.ops)
    assert best is not None
    return best


def _payload(directory: Path, files: int, size: int) -> list[str]:
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


def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _sync() -> None:
    os.sync()


def run_case(target: str, base: Path, case: str, scratch: Path, repeat: int, jobs: int,
             ocigc: list[str], env: dict[str, str]) -> CaseResult:
    files, size = CASES[case]
    payload = scratch / f"payload-{case}"
    names = _payload(payload, files, size)
    total = files * size
    cp_dir = base / f"cp-{case}"
    lay = base / f"lay-{case}"
    out_cp = scratch / f"out-cp-{case}"
    out = scratch / f"out-{case}"
    notes: list[str] = []
    try:
        def reset_cp() -> None:
            _rm(cp_dir)
            cp_dir.mkdir()
            _sync()

        def reset_lay() -> None:
            _rm(lay)
            _sync()

        cp_push = _best(repeat, _run_timed, ["cp", *names, str(cp_dir)], None, payload, reset=reset_cp)
        # the same durability as push, which fsyncs every blob before renaming it into place
        cp_sync = _best(repeat, _run_timed, ["sh", "-c", 'cp "$@" "$D" && cd "$D" && sync "$@"', "sh", *names],
                        {**os.environ, "D": str(cp_dir)}, payload, reset=reset_cp)
        push_t = _best(repeat, _driver, "push", {"layout": str(lay), "files": names, "cwd": str(payload),
                                                 "jobs": jobs}, env, reset=reset_lay)
        push_nf = _best(repeat, _driver, "push", {"layout": str(lay), "files": names, "cwd": str(payload),
                                                  "jobs": jobs, "nofsync": True}, env, reset=reset_lay)
        reset_lay()
        push_cli = _best(repeat, _run_timed, [*ocigc, "push", "-q", f"{lay}:v1", *names,
                                              "--concurrency", str(jobs)], env, payload, reset=reset_lay)

        def reset_out_cp() -> None:
            _rm(out_cp)
            out_cp.mkdir()
            _sync()

        def reset_out() -> None:
            _rm(out)
            _sync()

        cp_pull = _best(repeat, _run_timed, ["cp", *[str(cp_dir / n) for n in names], str(out_cp)], None,
                        reset=reset_out_cp)
        pull_t = _best(repeat, _driver, "pull", {"layout": str(lay), "out": str(out), "jobs": jobs}, env,
                       reset=reset_out)
        pull_cli = _best(repeat, _run_timed, [*ocigc, "pull", "-q", f"{lay}:v1", "-o", str(out),
                                              "--concurrency", str(jobs)], env, reset=reset_out)
        for n in names:
            if (out / n).stat().st_size != size:
                raise RuntimeError(f"{out / n}: wrong size after pull")
        return CaseResult(target, case, total, cp_push.seconds, cp_sync.seconds, cp_pull.seconds,
                          push_cli.seconds, pull_cli.seconds, push_t.seconds, push_nf.seconds, pull_t.seconds,
                          push_t.maxrss_mib or 0, pull_t.maxrss_mib or 0,
                          max(push_cli.maxrss_mib or 0, pull_cli.maxrss_mib or 0), notes)
    finally:
        for p in (payload, cp_dir, lay, out_cp, out):
            _rm(p)


@dataclass
class PublishResult:
    """One blob pushed onto a mount twice in the same run: written straight to its digest name (the
    old path, unsafe: a kill leaves a short blob there) and to a temp name renamed into place (the
    current path), plus ``mv`` of a file of the same size on the mount (what the rename costs there)."""

    target: str
    case: str
    bytes: int
    direct: float
    temp_rename: float
    mv: float
    direct_ops: dict[str, int]
    temp_rename_ops: dict[str, int]
    load: list[float]

    @property
    def extra(self) -> float:
        return self.temp_rename - self.direct


def run_publish_case(target: str, base: Path, case: str, scratch: Path, repeat: int, jobs: int,
                     env: dict[str, str]) -> PublishResult:
    """Push of one case onto ``base`` with blobs written directly vs through a temp name and a rename;
    the two runs alternate (direct first in odd rounds) and the fastest of each is kept."""
    files, size = CASES[case]
    payload = scratch / f"payload-{case}"
    names = _payload(payload, files, size)
    lay = base / f"pub-{case}"
    mv_dir = base / f"mv-{case}"
    params = {"layout": str(lay), "files": names, "cwd": str(payload), "jobs": jobs}
    best: dict[bool, Timing] = {}
    try:
        def reset_lay() -> None:
            _rm(lay)
            _sync()

        for i in range(repeat):
            for direct in ((True, False) if i % 2 == 0 else (False, True)):
                reset_lay()
                t = _driver("push", {**params, "direct": direct}, env)
                if direct not in best or t.seconds < best[direct].seconds:
                    best[direct] = t

        def reset_mv() -> None:
            _rm(mv_dir)
            mv_dir.mkdir()
            subprocess.run(["cp", str(payload / names[0]), str(mv_dir / "a")], check=True)
            _sync()

        mv = _best(repeat, _run_timed, ["mv", str(mv_dir / "a"), str(mv_dir / "b")], None, reset=reset_mv)
        return PublishResult(target, case, files * size, best[True].seconds, best[False].seconds, mv.seconds,
                             best[True].ops, best[False].ops, [round(x, 2) for x in os.getloadavg()])
    finally:
        for p in (payload, lay, mv_dir):
            _rm(p)


def _publish_table(results: list[PublishResult]) -> str:
    rows = ["| target | case | push, direct to digest name s | push, temp + rename s | extra s | extra % "
            "| mv of the same size s | renames (direct / temp) | load (1/5/15 min) |", "|" + "---|" * 9]
    for r in results:
        rows.append(f"| {r.target} | {r.case} | {r.direct:.2f} | {r.temp_rename:.2f} | {r.extra:+.2f} | "
                    f"{100 * r.extra / r.direct:+.0f}% | {r.mv:.2f} | {r.direct_ops.get('rename', 0)} / "
                    f"{r.temp_rename_ops.get('rename', 0)} | {' '.join(map(str, r.load))} |")
    return "\n".join(rows)


def _table(results: list[CaseResult]) -> str:
    head = ("| target | case | MiB | cp s | cp+sync s | ocigc push s | push / cp | push / cp+sync "
            "| push w/o fsync / cp | cp pull s | ocigc pull s | pull / cp | push / cp (CLI) | pull / cp (CLI) "
            "| peak RSS push / pull / CLI MiB |")
    rows = [head, "|" + "---|" * 15]
    for r in results:
        rows.append(
            f"| {r.target} | {r.case} | {r.bytes // MiB} | {r.cp_push:.2f} | {r.cp_sync_push:.2f} | "
            f"{r.push_transfer:.2f} | {r.push_ratio:.2f} | {r.push_ratio_sync:.2f} | "
            f"{r.cp_push / r.push_nofsync:.2f} | {r.cp_pull:.2f} | "
            f"{r.pull_transfer:.2f} | {r.pull_ratio:.2f} | {r.push_ratio_cli:.2f} | {r.pull_ratio_cli:.2f} | "
            f"{r.push_rss_mib:.0f} / {r.pull_rss_mib:.0f} / {r.cli_rss_mib:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--targets", default="local,s3fs", help="local,s3fs")
    ap.add_argument("--cases", default=",".join(CASES), help=",".join(CASES))
    ap.add_argument("--repeat", type=int, default=2, help="runs per measurement; the fastest is kept")
    ap.add_argument("--concurrency", type=int, default=5, help="ocigc --concurrency (oras' push default)")
    ap.add_argument("--scratch", default=None, help="local directory for payloads and pulls (default: a temp dir)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    ap.add_argument("--publish-cases", default="8M,64M,256M",
                    help="on s3fs, also push these cases with blobs written straight to their digest name "
                         "(the old path) and through a temp name + rename (the current one); '' skips it")
    ap.add_argument("--settle", default=None,
                    help="OCIGC_LOCK_SETTLE for ocigc (default: the lock protocol's own, 2 s on FUSE, 0.1 s local)")
    opts = ap.parse_args(argv)
    cases = [c for c in opts.cases.split(",") if c]
    publish_cases = [c for c in opts.publish_cases.split(",") if c]
    unknown = [c for c in cases + publish_cases if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}")
    targets = [t for t in opts.targets.split(",") if t]
    ocigc = [str(Path(sys.executable).with_name("ocigc"))]
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if opts.settle is not None:
        env["OCIGC_LOCK_SETTLE"] = opts.settle
    else:
        env.pop("OCIGC_LOCK_SETTLE", None)
    results: list[CaseResult] = []
    publish: list[PublishResult] = []
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-", dir=opts.scratch) as tmp:
        scratch = Path(tmp)
        for target in targets:
            if target == "local":
                base = scratch / "local-target"
                base.mkdir()
                for case in cases:
                    results.append(run_case("local", base, case, scratch, opts.repeat, opts.concurrency, ocigc, env))
                    print(_table(results[-1:]).splitlines()[-1], flush=True)
            elif target == "s3fs":
                from tests.harness.mounts import S3fsMount
                from tests.harness.objectstores import MotoServer

                server = MotoServer(scratch / "moto")
                server.start()
                mount: S3fsMount | None = None
                try:
                    bucket = server.create_bucket("bench")
                    mount = S3fsMount(server, bucket, scratch / "mnt", scratch / "s3fs")
                    (scratch / "s3fs").mkdir(exist_ok=True)
                    mount.mount()
                    for case in publish_cases:
                        publish.append(run_publish_case("s3fs", mount.mount_point, case, scratch, opts.repeat,
                                                        opts.concurrency, env))
                        print(_publish_table(publish[-1:]).splitlines()[-1], flush=True)
                    for case in cases:
                        results.append(run_case("s3fs", mount.mount_point, case, scratch, opts.repeat,
                                                opts.concurrency, ocigc, env))
                        print(_table(results[-1:]).splitlines()[-1], flush=True)
                finally:
                    if mount is not None:
                        mount.unmount()
                    server.stop()
            else:
                ap.error(f"unknown target {target!r}")
    print()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{platform.node()} {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"repeat {opts.repeat}, concurrency {opts.concurrency}, lock settle {opts.settle or 'default'}, "
          f"load average at the end {load:.1f}")
    print(_table(results))
    if publish:
        print()
        print("Blob writes on s3fs: straight to the digest name (old) vs temp name + rename (current)")
        print(_publish_table(publish))
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps({
            "results": [{**asdict(r), "push_ratio": r.push_ratio, "push_ratio_sync": r.push_ratio_sync,
                         "pull_ratio": r.pull_ratio} for r in results],
            "publish": [{**asdict(r), "extra": r.extra} for r in publish]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
