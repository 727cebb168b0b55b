"""Command-line interface: thin commands over the ocigc library.

Each command module registers its commands on ``ocigc.cli.app.app``; importing it here is
what adds it to the CLI.
"""

from __future__ import annotations

import os
import sys

import ocigc.cli.migrate  # registers migrate
import ocigc.cli.policy  # noqa: F401  (policy check)
from ocigc.cli import (  # noqa: F401  (command modules register their commands when imported)
    doctor,  # doctor
    locks,  # locks list|break, exec, trash list|restore|purge
    maintain,  # delete, sweep
    read,  # ls, tags, inspect, graph, check
    transfer,  # push, pull, tag
)
from ocigc.cli.app import app


def main() -> None:
    try:
        app(prog_name="ocigc")
    finally:
        stats_file = os.environ.get("OCIGC_STORAGE_STATS")
        if stats_file:
            _write_stats(stats_file)


def _write_stats(path: str) -> None:
    """Write the storage-operation counts of this process (for benchmarks and tests)."""
    import json

    from ocigc.storage import GLOBAL_COUNTER

    try:
        with open(path, "w") as f:
            json.dump(GLOBAL_COUNTER.snapshot(), f)
    except OSError as e:
        print(f"warning: cannot write storage stats to {path}: {e}", file=sys.stderr)


__all__ = ["app", "main"]
