"""Shared CLI plumbing: settings, the one place errors become exit codes, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer

from ocigc.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    AlreadyExists,
    InvalidOption,
    OcigcError,
    UsageHint,
    describe_oserror,
)
from ocigc.progress import NullProgress, Progress, TqdmProgress


@dataclass
class Settings:
    """Global options, kept in ``ctx.obj``."""

    quiet: bool = False
    verbose: int = 0

    def progress(self, json_out: bool = False) -> Progress:
        if self.quiet or json_out or not sys.stderr.isatty():
            return NullProgress()
        return TqdmProgress()


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr; no progress bars.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout (see docs/cli.md).")]


def settings(ctx: typer.Context, quiet: bool = False, verbose: int = 0) -> Settings:
    """The global settings, with a command's own --quiet/--verbose folded in."""
    obj = ctx.find_root().obj
    base = obj if isinstance(obj, Settings) else Settings()
    merged = Settings(quiet=base.quiet or quiet, verbose=base.verbose + verbose)
    if merged.verbose and not merged.quiet:  # --verbose says how each mounted bucket is reached
        from ocigc.storage.via import on_route

        on_route(lambda route: typer.echo(route.describe(), err=True))
    return merged


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


#: The flag of a core option where it is not ``--`` + the option's name with ``-`` for ``_``.
OPTION_FLAGS: dict[str, str] = {}


def flag_of(option: str) -> str:
    return OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


@contextmanager
def handle_errors() -> Iterator[None]:
    """Turn ocigc errors into a one-line message and the documented exit code (the one place)."""
    try:
        yield
    except (InvalidOption, UsageHint) as e:
        fail(e.render(flag_of), e.exit_code)
    except AlreadyExists as e:
        fail(f"{e} (use {flag_of('overwrite')} to replace it)", e.exit_code)
    except OcigcError as e:
        fail(str(e), e.exit_code)
    except BrokenPipeError:
        raise typer.Exit(1) from None
    except OSError as e:  # EROFS, EACCES, ENOTDIR, EISDIR, ENOSPC, EIO: one line naming the path, exit 1
        fail(describe_oserror(e), EXIT_ERROR)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def echo_json(data: Any) -> None:
    """JSON on stdout; a document about layouts on a mounted bucket says how each mount was reached (``"via"``)."""
    from ocigc.storage.via import routes

    taken = routes()
    if taken and isinstance(data, dict) and "via" not in data:
        data = {**data, "via": [r.to_json() for r in taken]}
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def info(ctx: typer.Context, message: str) -> None:
    """A human message on stderr, hidden by --quiet."""
    if not settings(ctx).quiet:
        typer.echo(message, err=True)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain left-aligned table (no colours: output goes to pipes and logs as often as to a tty)."""
    cols = [headers, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(headers))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
