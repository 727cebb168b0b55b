"""Command-line interface: thin commands over the ocigc library.

Each command module registers its commands on ``ocigc.cli.app.app``; ``ocigc.cli.commands.COMMANDS``
names the module of each command, and the root group (``ocigc.cli.lazy.LazyGroup``) imports a
module when one of its commands runs. Importing this package imports neither typer nor a command:
``ocigc --version`` and ``ocigc --help`` are answered before typer is imported (docs/performance.md,
"Start-up"); ``app`` is imported on first use (``from ocigc.cli import app``).
"""

from __future__ import annotations

import gc
import os
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocigc.cli.app import app

#: The cyclic collector's first threshold for the command-line process. A sweep of a large layout
#: allocates millions of small containers (graph nodes, descriptors) that hold no cycles; at
#: Python's default of 700 the collector walks them over and over (about 20% of a 30,000-blob
#: plan). The library leaves the setting alone: its process is its caller's.
GC_THRESHOLD0 = 50_000


def main() -> None:
    try:
        _run(sys.argv[1:])
    finally:
        s3client = sys.modules.get("ocigc.storage.s3client")
        if s3client is not None:  # the probe's clean-up, in the background until now
            s3client.finish_background()
        stats_file = os.environ.get("OCIGC_STORAGE_STATS")
        if stats_file:
            _write_stats(stats_file)
        # The interpreter's exit ends with a full collection of every object still alive (botocore's
        # service model alone is hundreds of thousands): 0.1-0.15 s for nothing, since the process
        # ends. Frozen objects are left out of it; everything is still released as usual.
        gc.freeze()


def _run(args: list[str]) -> None:
    if args == ["--version"]:
        from ocigc import __version__

        print(f"ocigc {__version__}")
        return
    if args in (["--help"], ["-h"]):
        from ocigc.cli.commands import help_width, root_help

        sys.stdout.write(root_help(help_width()))
        return
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])
    from ocigc.cli.app import app

    app(prog_name="ocigc")


def _write_stats(path: str) -> None:
    """Write the storage-operation counts of this process (for benchmarks and tests)."""
    import json

    from ocigc.storage.base import GLOBAL_COUNTER

    try:
        with open(path, "w") as f:
            json.dump(GLOBAL_COUNTER.snapshot(), f)
    except OSError as e:
        print(f"warning: cannot write storage stats to {path}: {e}", file=sys.stderr)


class _Package(types.ModuleType):
    """``ocigc.cli.app`` is the typer application, imported on first use; also once the submodule of
    that name is loaded (the import system then sets the attribute to the submodule: ignored)."""

    @property
    def app(self) -> Any:
        from ocigc.cli.app import app

        return app

    @app.setter
    def app(self, value: Any) -> None:
        pass


sys.modules[__name__].__class__ = _Package


__all__ = ["app", "main"]
