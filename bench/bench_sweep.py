"""Sweep benchmark on local disk: ocigc sweep vs umoci gc vs the I/O floor; op counts against the
minimum; scaling from 1,000 to 100,000 blobs. On object stores (s3fs and ``s3://``, moto and
SeaweedFS, with and without latency): ``bench/bench_s3.py``, which reuses ``SPEC_2000`` and ``io_floor``.

    python -m bench sweep            # full run (about 10-20 minutes on 2 cores)
    python -m bench sweep -- --quick # smaller sizes
    python -m bench sweep -- --only versus   # ocigc sweep vs umoci gc at 2,000 and 100,000 blobs (~8 min)

``--only versus`` is the comparison of issue 20's targets (2,000 blobs: at most 1.5x umoci gc;
100,000 blobs: no slower, peak memory under 300 MB): each round copies the layout for each tool,
``sync``s (so that no tool pays for writing back another's copy), and runs the two tools in
alternating order; the table gives the median and fastest of the rounds. Bytecode is cached as an
installed package has it (``bench/bench_startup.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OCIGC, load_1min, present, ratio, save, timed
from bench.gen import Generated, Spec, age_tree, generate, spec_for_blobs

JOBS = 16
#: The issue's headline case: about 2,000 blobs and 200 manifests.
SPEC_2000 = Spec(repos=1, tags=125, layers=4, unique=12, pool=100, strays=50, seed=42)
#: About 100,000 blobs (100,1xx) and 16,000 manifests, a quarter of them unreachable.
SPEC_100K = spec_for_blobs(112_000, seed=100)


def io_floor(layout: Path, manifests: list[str], garbage: list[str], jobs: int = JOBS) -> None:
    """The same listing, manifest reads, stats and unlinks as a sweep, in the simplest parallel loop."""
    os.listdir(layout / "blobs" / "sha256")
    (layout / "index.json").read_bytes()

    def path(d: str) -> Path:
        return layout / "blobs" / "sha256" / d.split(":", 1)[1]

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda d: path(d).read_bytes(), manifests))
        list(pool.map(lambda d: path(d).stat(), garbage))
        list(pool.map(lambda d: path(d).unlink(), garbage))


def floor_script(layout: Path, manifests: list[str], garbage: list[str], workdir: Path) -> list[str]:
    """A child process running io_floor, so it is timed like the tools."""
    spec = workdir / f"floor-{layout.name}.txt"
    spec.write_text("\n".join(["M " + m for m in manifests] + ["G " + g for g in garbage]))
    code = (
        "import sys; from pathlib import Path; from bench.bench_sweep import io_floor;"
        "lines=Path(sys.argv[2]).read_text().splitlines();"
        "io_floor(Path(sys.argv[1]), [l[2:] for l in lines if l[0]=='M'], [l[2:] for l in lines if l[0]=='G'])"
    )
    return [sys.executable, "-c", code, str(layout), str(spec)]


def compare_case(name: str, gen: Generated, where: str, make_copy: Any, workdir: Path) -> dict[str, Any]:
    repo = next(iter(gen.blobs))
    manifests = sorted(gen.manifests[repo] & gen.reachable[repo])
    garbage = sorted(gen.blobs[repo] - gen.reachable[repo])
    copies = {k: make_copy(k) / repo for k in ("ocigc", "umoci", "floor", "check", "ls")}
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    r_ocigc = timed([OCIGC, "sweep", str(copies["ocigc"]), "--grace", "0", "--yes", "--jobs", str(JOBS), "-q"])
    r_umoci = timed(["umoci", "gc", "--layout", str(copies["umoci"])])
    r_floor = timed(floor_script(copies["floor"], manifests, garbage, workdir), env=env)
    r_check = timed([OCIGC, "check", str(copies["check"]), "--jobs", str(JOBS)])
    r_ls = timed([OCIGC, "ls", str(copies["ls"]), "--jobs", str(JOBS)])
    for label, r in (("ocigc sweep", r_ocigc), ("umoci gc", r_umoci), ("floor", r_floor), ("ls", r_ls)):
        if r.rc != 0:
            raise SystemExit(f"{label} failed on {where}: rc={r.rc}\n{r.stderr[-2000:]}")
    left_ocigc, left_umoci = present(copies["ocigc"]), present(copies["umoci"])
    minimum = 1 + len(manifests) + 2 * len(garbage)
    ops = sum(r_ocigc.ops.values())
    return {
        "case": name, "where": where, "blobs": len(gen.blobs[repo]), "manifests": len(gen.manifests[repo]),
        "garbage": len(garbage),
        "ocigc_sweep_s": round(r_ocigc.wall, 3), "umoci_gc_s": round(r_umoci.wall, 3),
        "floor_s": round(r_floor.wall, 3), "check_s": round(r_check.wall, 3), "ls_s": round(r_ls.wall, 3),
        "speedup_vs_umoci": ratio(r_umoci.wall, r_ocigc.wall), "vs_floor": ratio(r_ocigc.wall, r_floor.wall),
        "ops": r_ocigc.ops, "ops_total": ops, "ops_minimum": minimum, "ops_ratio": ratio(ops, minimum),
        "same_blobs_as_umoci": left_ocigc == left_umoci, "left_equals_reachable": left_ocigc == gen.reachable[repo],
        "ocigc_peak_mb": round(r_ocigc.max_rss_mb, 1), "load": load_1min(),
    }


def run_compare(spec: Spec, workdir: Path) -> list[dict[str, Any]]:
    src = workdir / "src"
    gen = generate(src, spec)
    age_tree(src)

    def local_copy(kind: str) -> Path:
        dst = workdir / "local" / kind
        shutil.copytree(src, dst)
        return dst

    return [compare_case("sweep", gen, "local", local_copy, workdir)]


def startup_seconds(rounds: int = 5) -> float:
    """The fixed cost of starting the CLI (interpreter, imports): the best of a few ``ocigc --version``."""
    return min(timed([OCIGC, "--version"]).wall for _ in range(rounds))


def empty_run_seconds(workdir: Path, command: list[str], rounds: int = 5) -> float:
    """The fixed cost of one run of ``command`` (start-up, imports, argument parsing, opening the
    layout, lock and journal where the command takes them): the best of a few runs on an empty
    layout. What a run costs beyond it grows with the layout."""
    empty = workdir / "empty-layout"
    shutil.rmtree(empty, ignore_errors=True)
    (empty / "blobs" / "sha256").mkdir(parents=True)
    (empty / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (empty / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    return min(timed([OCIGC, *command, str(empty)]).wall for _ in range(rounds))


def run_scaling(sizes: list[int], workdir: Path) -> list[dict[str, Any]]:
    rows = []
    interpreter = startup_seconds()
    base_sweep = empty_run_seconds(workdir, ["sweep", "--grace", "0", "--yes", "-q"])
    base_check = empty_run_seconds(workdir, ["check"])
    for n in sizes:
        root = workdir / f"scale-{n}"
        gen = generate(root, spec_for_blobs(n, seed=n))
        age_tree(root)
        repo = next(iter(gen.blobs))
        layout = root / repo
        # the fastest of a few runs (each sweep on a fresh copy) where one run is short enough for
        # the machine's noise to matter
        rounds = 3 if n <= 10_000 else 1
        r_check = min((timed([OCIGC, "check", str(layout), "--jobs", str(JOBS)]) for _ in range(rounds)),
                      key=lambda r: r.wall)
        sweeps = []
        for k in range(rounds):
            target = layout if k == rounds - 1 else root / f"copy-{k}"
            if target != layout:
                shutil.copytree(layout, target, symlinks=True)
            sweeps.append(timed([OCIGC, "sweep", str(target), "--grace", "0", "--yes", "--jobs", str(JOBS), "-q"]))
        r_sweep = min(sweeps, key=lambda r: r.wall)
        if any(r.rc != 0 for r in sweeps):
            raise SystemExit(f"sweep failed at {n}: {next(r for r in sweeps if r.rc).stderr[-2000:]}")
        blobs = len(gen.blobs[repo])
        rows.append({
            "blobs": blobs, "manifests": len(gen.manifests[repo]),
            "garbage": len(gen.blobs[repo] - gen.reachable[repo]),
            "sweep_wall_s": round(r_sweep.wall, 3), "sweep_cpu_s": round(r_sweep.cpu, 3),
            "sweep_peak_mb": round(r_sweep.max_rss_mb, 1), "sweep_us_per_blob": round(r_sweep.wall / blobs * 1e6, 1),
            "check_wall_s": round(r_check.wall, 3), "check_cpu_s": round(r_check.cpu, 3),
            "check_peak_mb": round(r_check.max_rss_mb, 1), "check_us_per_blob": round(r_check.wall / blobs * 1e6, 1),
            "startup_s": round(interpreter, 3), "empty_sweep_s": round(base_sweep, 3),
            "empty_check_s": round(base_check, 3), "load": load_1min(),
            "sweep_us_per_blob_net": round(max(0.0, r_sweep.wall - base_sweep) / blobs * 1e6, 1),
            "check_us_per_blob_net": round(max(0.0, r_check.wall - base_check) / blobs * 1e6, 1),
        })
        shutil.rmtree(root)
    return rows


def run_versus(workdir: Path, rounds_small: int = 5, rounds_large: int = 2) -> list[dict[str, Any]]:
    """ocigc sweep against umoci gc on the same layout, each on its own synced copy, alternating."""
    env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(workdir / "pycache")}
    timed([OCIGC, "--version"], env=env)  # fill the bytecode cache
    rows = []
    for label, spec, rounds in (("2,000", SPEC_2000, rounds_small), ("100,000", SPEC_100K, rounds_large)):
        src = workdir / f"versus-{label.replace(',', '')}"
        gen = generate(src, spec)
        age_tree(src)
        repo = next(iter(gen.blobs))
        runs: dict[str, list[Any]] = {"ocigc": [], "umoci": []}
        left_ok = True
        for k in range(rounds):
            for tool in (("ocigc", "umoci") if k % 2 == 0 else ("umoci", "ocigc")):
                copy = workdir / f"copy-{tool}"
                shutil.rmtree(copy, ignore_errors=True)
                subprocess.run(["cp", "-a", str(src), str(copy)], check=True)
                subprocess.run(["sync"], check=True)
                argv = ([OCIGC, "sweep", str(copy / repo), "--grace", "0", "--yes", "--jobs", str(JOBS), "-q"]
                        if tool == "ocigc" else ["umoci", "gc", "--layout", str(copy / repo)])
                r = timed(argv, env=env)
                if r.rc != 0:
                    raise SystemExit(f"{tool} failed at {label} blobs: rc={r.rc}\n{r.stderr[-2000:]}")
                left_ok = left_ok and present(copy / repo) == gen.reachable[repo]
                runs[tool].append((r.wall, r.max_rss_mb, load_1min()))
                shutil.rmtree(copy)
        shutil.rmtree(src)
        o = sorted(w for w, _, _ in runs["ocigc"])
        u = sorted(w for w, _, _ in runs["umoci"])
        loads = [ld for tool in runs.values() for _, _, ld in tool]
        rows.append({
            "blobs": len(gen.blobs[repo]), "manifests": len(gen.manifests[repo]),
            "garbage": len(gen.blobs[repo] - gen.reachable[repo]), "rounds": rounds,
            "ocigc_median_s": round(statistics.median(o), 3), "ocigc_min_s": round(o[0], 3),
            "umoci_median_s": round(statistics.median(u), 3), "umoci_min_s": round(u[0], 3),
            "ocigc_vs_umoci": ratio(statistics.median(o), statistics.median(u)),
            "ocigc_vs_umoci_min": ratio(o[0], u[0]),
            "ocigc_peak_mb": round(max(m for _, m, _ in runs["ocigc"]), 1),
            "umoci_peak_mb": round(max(m for _, m, _ in runs["umoci"]), 1),
            "left_exactly_reachable": left_ok, "load_1min": f"{min(loads):.2f}-{max(loads):.2f}",
        })
    return rows


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller scaling sizes")
    ap.add_argument("--only", choices=["compare", "scaling", "versus"], default=None, help="run one part only")
    args = ap.parse_args()
    if args.only == "versus":
        with tempfile.TemporaryDirectory(prefix="ocigc-bench-") as tmp:
            versus = run_versus(Path(tmp))
        print(table(versus, ["blobs", "manifests", "garbage", "rounds", "ocigc_median_s", "ocigc_min_s",
                             "umoci_median_s", "umoci_min_s", "ocigc_vs_umoci", "ocigc_vs_umoci_min",
                             "ocigc_peak_mb", "umoci_peak_mb", "left_exactly_reachable", "load_1min"]))
        print(f"results: {save('sweep-versus', {'versus': versus})}")
        return
    sizes = [1000, 10000] if args.quick else [1000, 10000, 100000]
    compare: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-") as tmp:
        workdir = Path(tmp)
        if args.only != "scaling":
            compare = run_compare(SPEC_2000, workdir)
        print(table(compare, ["where", "blobs", "manifests", "garbage", "ocigc_sweep_s", "umoci_gc_s", "floor_s",
                              "speedup_vs_umoci", "vs_floor", "check_s", "ls_s", "ops_total", "ops_minimum",
                              "ops_ratio", "same_blobs_as_umoci", "left_equals_reachable", "load"]))
        if args.only != "compare":
            scaling = run_scaling(sizes, workdir)
        print(table(scaling, ["blobs", "manifests", "garbage", "sweep_wall_s", "sweep_cpu_s", "sweep_peak_mb",
                              "sweep_us_per_blob", "sweep_us_per_blob_net", "check_wall_s", "check_cpu_s",
                              "check_peak_mb", "check_us_per_blob", "check_us_per_blob_net", "startup_s",
                              "empty_sweep_s", "empty_check_s", "load"]))
    path = save("sweep", {"compare": compare, "scaling": scaling})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
