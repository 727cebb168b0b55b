"""Push and pull on local disk, and the cost of publishing blobs through a temp name on s3fs: the parts of
``bench/bench_push_pull.py`` that are not object-store matrices (see its docstring)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import load_1min
from bench.transfer import CASES, MiB, Timing, best, ocigc_driver, payload, rm, run_timed, sync


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
    load: float = field(default_factory=load_1min)

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


def run_local_case(target: str, base: Path, case: str, scratch: Path, repeat: int, jobs: int,
             ocigc: list[str], env: dict[str, str]) -> CaseResult:
    files, size = CASES[case]
    source = scratch / f"source-{case}"
    names = payload(source, files, size)
    total = files * size
    cp_dir = base / f"cp-{case}"
    lay = base / f"lay-{case}"
    out_cp = scratch / f"out-cp-{case}"
    out = scratch / f"out-{case}"
    notes: list[str] = []
    try:
        def reset_cp() -> None:
            rm(cp_dir)
            cp_dir.mkdir()
            sync()

        def reset_lay() -> None:
            rm(lay)
            sync()

        cp_push = best(repeat, run_timed, ["cp", *names, str(cp_dir)], None, source, reset=reset_cp)
        # the same durability as push, which fsyncs every blob before renaming it into place
        cp_sync = best(repeat, run_timed, ["sh", "-c", 'cp "$@" "$D" && cd "$D" && sync "$@"', "sh", *names],
                        {**os.environ, "D": str(cp_dir)}, source, reset=reset_cp)
        push_t = best(repeat, ocigc_driver, "push", {"layout": str(lay), "files": names, "cwd": str(source),
                                                 "jobs": jobs}, env, reset=reset_lay)
        push_nf = best(repeat, ocigc_driver, "push", {"layout": str(lay), "files": names, "cwd": str(source),
                                                  "jobs": jobs, "nofsync": True}, env, reset=reset_lay)
        reset_lay()
        push_cli = best(repeat, run_timed, [*ocigc, "push", "-q", f"{lay}:v1", *names,
                                              "--concurrency", str(jobs)], env, source, reset=reset_lay)

        def reset_out_cp() -> None:
            rm(out_cp)
            out_cp.mkdir()
            sync()

        def reset_out() -> None:
            rm(out)
            sync()

        cp_pull = best(repeat, run_timed, ["cp", *[str(cp_dir / n) for n in names], str(out_cp)], None,
                        reset=reset_out_cp)
        pull_t = best(repeat, ocigc_driver, "pull", {"layout": str(lay), "out": str(out), "jobs": jobs}, env,
                       reset=reset_out)
        pull_cli = best(repeat, run_timed, [*ocigc, "pull", "-q", f"{lay}:v1", "-o", str(out),
                                              "--concurrency", str(jobs)], env, reset=reset_out)
        for n in names:
            if (out / n).stat().st_size != size:
                raise RuntimeError(f"{out / n}: wrong size after pull")
        return CaseResult(target, case, total, cp_push.seconds, cp_sync.seconds, cp_pull.seconds,
                          push_cli.seconds, pull_cli.seconds, push_t.seconds, push_nf.seconds, pull_t.seconds,
                          push_t.maxrss_mib or 0, pull_t.maxrss_mib or 0,
                          max(push_cli.maxrss_mib or 0, pull_cli.maxrss_mib or 0), notes)
    finally:
        for p in (source, cp_dir, lay, out_cp, out):
            rm(p)


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
    source = scratch / f"source-{case}"
    names = payload(source, files, size)
    lay = base / f"pub-{case}"
    mv_dir = base / f"mv-{case}"
    params = {"layout": str(lay), "files": names, "cwd": str(source), "jobs": jobs}
    fastest: dict[bool, Timing] = {}
    try:
        def reset_lay() -> None:
            rm(lay)
            sync()

        for i in range(repeat):
            for direct in ((True, False) if i % 2 == 0 else (False, True)):
                reset_lay()
                t = ocigc_driver("push", {**params, "direct": direct}, env)
                if direct not in fastest or t.seconds < fastest[direct].seconds:
                    fastest[direct] = t

        def reset_mv() -> None:
            rm(mv_dir)
            mv_dir.mkdir()
            subprocess.run(["cp", str(source / names[0]), str(mv_dir / "a")], check=True)
            sync()

        mv = best(repeat, run_timed, ["mv", str(mv_dir / "a"), str(mv_dir / "b")], None, reset=reset_mv)
        return PublishResult(target, case, files * size, fastest[True].seconds, fastest[False].seconds, mv.seconds,
                             fastest[True].ops, fastest[False].ops, [round(x, 2) for x in os.getloadavg()])
    finally:
        for p in (source, lay, mv_dir):
            rm(p)


def publish_table(results: list[PublishResult]) -> str:
    rows = ["| target | case | push, direct to digest name s | push, temp + rename s | extra s | extra % "
            "| mv of the same size s | renames (direct / temp) | load (1/5/15 min) |", "|" + "---|" * 9]
    for r in results:
        rows.append(f"| {r.target} | {r.case} | {r.direct:.2f} | {r.temp_rename:.2f} | {r.extra:+.2f} | "
                    f"{100 * r.extra / r.direct:+.0f}% | {r.mv:.2f} | {r.direct_ops.get('rename', 0)} / "
                    f"{r.temp_rename_ops.get('rename', 0)} | {' '.join(map(str, r.load))} |")
    return "\n".join(rows)


def local_table(results: list[CaseResult]) -> str:
    head = ("| target | case | MiB | cp s | cp+sync s | ocigc push s | push / cp | push / cp+sync "
            "| push w/o fsync / cp | cp pull s | ocigc pull s | pull / cp | push / cp (CLI) | pull / cp (CLI) "
            "| peak RSS push / pull / CLI MiB | load (1 min) |")
    rows = [head, "|" + "---|" * 16]
    for r in results:
        rows.append(
            f"| {r.target} | {r.case} | {r.bytes // MiB} | {r.cp_push:.2f} | {r.cp_sync_push:.2f} | "
            f"{r.push_transfer:.2f} | {r.push_ratio:.2f} | {r.push_ratio_sync:.2f} | "
            f"{r.cp_push / r.push_nofsync:.2f} | {r.cp_pull:.2f} | "
            f"{r.pull_transfer:.2f} | {r.pull_ratio:.2f} | {r.push_ratio_cli:.2f} | {r.pull_ratio_cli:.2f} | "
            f"{r.push_rss_mib:.0f} / {r.pull_rss_mib:.0f} / {r.cli_rss_mib:.0f} | {r.load:.2f} |")
    return "\n".join(rows)
