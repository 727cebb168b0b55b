"""Command-line interface: thin commands over the ocigc library.

Each command module registers its commands on ``ocigc.cli.app.app``; importing it here is
what adds it to the CLI.
"""

from __future__ import annotations

import gc
import os
import sys

import ocigc.cli.migrate  # registers migrate
import ocigc.cli.policy  # noqa: F401  (policy check)
from ocigc.cli import (  # noqa: F401  (command modules register their commands when imported)
    check,  # check (cli.policy imported read first: ls, tags, inspect, graph come before it in --help)
    doctor,  # doctor
    exec,  # exec
    locks,  # locks list|break
    maintain,  # delete, sweep
    pushpull,  # push, pull, tag
    read,  # ls, tags, inspect, graph
    trash,  # trash list|restore|purge
)
from ocigc.cli.app import app

#: The cyclic collector's first threshold for the command-line process. A sweep of a large layout
#: allocates millions of small containers (graph nodes, descriptors) that hold no cycles; at
#: Python's default of 700 the collector walks them over and over (about 20% of a 30,000-blob
#: plan). The library leaves the setting alone: its process is its caller's.
GC_THRESHOLD0 = 50_000


def main() -> None:
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])
    try:
        app(prog_name="ocigc")
    finally:
        stats_file = os.environ.get("OCIGC_STORAGE_STATS")
        if stats_file:
            _write_stats(stats_file)


def _write_stats(path: str) -> None:
    """Write the storage-operation counts of this process (for benchmarks and tests)."""
    import json

    from ocigc.storage.base import GLOBAL_COUNTER

    try:
        with open(path, "w") as f:
            json.dump(GLOBAL_COUNTER.snapshot(), f)
    except OSError as e:
        print(f"warning: cannot write storage stats to {path}: {e}", file=sys.stderr)


__all__ = ["app", "main"]
