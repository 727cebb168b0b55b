"""Run benchmarks: ``python -m bench`` runs every ``bench/bench_*.py``; ``python -m bench sweep scaling``
runs the named ones. Extra arguments after ``--`` go to each script (e.g. ``-- --quick``)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    chosen = names or available
    for name in chosen:
        if name not in available:
            print(f"error: no benchmark {name!r} (have: {', '.join(available)})", file=sys.stderr)
            return 2
    for name in chosen:
        print(f"\n=== bench {name} ===", flush=True)
        sys.argv = [f"bench_{name}.py", *extra]
        try:
            runpy.run_path(str(HERE / f"bench_{name}.py"), run_name="__main__")
        except SystemExit as e:
            if e.code not in (0, None):
                if not isinstance(e.code, int):
                    print(e.code, file=sys.stderr)
                return e.code if isinstance(e.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
