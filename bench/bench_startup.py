"""Start-up benchmark: the fixed cost of a run, side by side with ``python -c pass`` (the same
interpreter) and ``umoci gc`` of the same empty layout, in one run.

    python -m bench startup                  # 20 rounds
    python -m bench startup -- --rounds 50

Each round runs every contender once, in a shuffled order, as its own process; the table gives
the median and the fastest of the rounds, and each median as a multiple of ``python -c pass``'s
(targets, issue 20: ``--version`` and ``--help`` at most 3x, ``tags``, ``ls``, ``check`` and
``sweep --dry-run`` of an empty layout at most 5x). Bytecode is cached as an installed package has
it: the children get ``PYTHONDONTWRITEBYTECODE`` unset and a ``PYTHONPYCACHEPREFIX`` of their own,
filled by a warm-up round that is not counted. ``python -X importtime`` of a command shows what it
imports (docs/performance.md, "Start-up").
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OCIGC, load_1min, save, timed

#: name -> (argv with {layout} for the empty layout, the target multiple of ``python -c pass``).
CONTENDERS: dict[str, tuple[list[str], float | None]] = {
    "python -c pass": ([sys.executable, "-c", "pass"], None),
    "ocigc --version": ([OCIGC, "--version"], 3.0),
    "ocigc --help": ([OCIGC, "--help"], 3.0),
    "ocigc tags": ([OCIGC, "tags", "{layout}"], 5.0),
    "ocigc ls": ([OCIGC, "ls", "{layout}"], 5.0),
    "ocigc check": ([OCIGC, "check", "{layout}"], 5.0),
    "ocigc sweep --dry-run": ([OCIGC, "sweep", "--dry-run", "{layout}"], 5.0),
    "umoci gc": (["umoci", "gc", "--layout", "{layout}"], None),
}


def empty_layout(path: Path) -> Path:
    (path / "blobs" / "sha256").mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    return path


def measure(rounds: int, workdir: Path) -> list[dict[str, Any]]:
    layout = empty_layout(workdir / "empty")
    env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(workdir / "pycache"),
           "COLUMNS": "80"}
    argvs = {name: [a.replace("{layout}", str(layout)) for a in argv] for name, (argv, _) in CONTENDERS.items()}
    for name, argv in argvs.items():  # warm-up: bytecode caches, page cache
        r = timed(argv, env=env)
        if r.rc != 0:
            raise SystemExit(f"{name} failed (exit {r.rc}): {r.stderr[-2000:]}")
    walls: dict[str, list[float]] = {name: [] for name in argvs}
    rss: dict[str, float] = {}
    loads = [load_1min()]
    rng = random.Random(20)
    for _ in range(rounds):
        order = list(argvs)
        rng.shuffle(order)
        for name in order:
            r = timed(argvs[name], env=env)
            if r.rc != 0:
                raise SystemExit(f"{name} failed (exit {r.rc}): {r.stderr[-2000:]}")
            walls[name].append(r.wall)
            rss[name] = max(rss.get(name, 0.0), r.max_rss_mb)
        loads.append(load_1min())
    base = statistics.median(walls["python -c pass"])
    base_min = min(walls["python -c pass"])
    rows = []
    for name, (_, target) in CONTENDERS.items():
        median = statistics.median(walls[name])
        rows.append({
            "contender": name, "median_ms": round(median * 1000, 1), "min_ms": round(min(walls[name]) * 1000, 1),
            "x_python": round(median / base, 2), "x_python_min": round(min(walls[name]) / base_min, 2),
            "target": f"<= {target:g}x" if target else "", "met": (median / base <= target) if target else None,
            "peak_rss_mb": round(rss[name], 1), "rounds": rounds,
            "load_1min": f"{min(loads):.2f}-{max(loads):.2f}",
        })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["contender", "median_ms", "min_ms", "x_python", "x_python_min", "target", "met", "peak_rss_mb",
            "load_1min"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append("| " + " | ".join(met if c == "met" else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-startup-") as tmp:
        rows = measure(args.rounds, Path(tmp))
    print(table(rows))
    path = save("startup", {"rows": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
