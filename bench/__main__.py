"""Run benchmarks: ``python -m bench`` runs every ``bench/bench_*.py``; ``python -m bench sweep scaling``
runs the named ones. Extra arguments after ``--`` go to each script (e.g. ``-- --quick``); the
object-store flags ``--stores`` and ``--latency`` go only to the object-store benchmarks
(``python -m bench -- --quick --stores seaweedfs --latency 20``)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The benchmarks that take ``--stores`` and ``--latency`` (bench/stores.py).
OBJECT_STORE_BENCHES = {"lock", "push_pull", "s3", "small"}
STORE_FLAGS = ("--stores", "--latency")


def arguments_for(name: str, extra: list[str]) -> list[str]:
    """``extra`` without the object-store flags (and their values) for a benchmark that has none."""
    if name in OBJECT_STORE_BENCHES:
        return extra
    out: list[str] = []
    skip = False
    for arg in extra:
        if skip:
            skip = False
        elif arg in STORE_FLAGS:
            skip = True
        elif not arg.startswith(tuple(f + "=" for f in STORE_FLAGS)):
            out.append(arg)
    return out


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
        sys.argv = [f"bench_{name}.py", *arguments_for(name, extra)]
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
