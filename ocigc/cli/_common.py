"""Shared CLI plumbing: settings, the one place errors become exit codes, output helpers."""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer

from ocigc.errors import (
    EXIT_ERROR,
    EXIT_INTEGRITY,
    EXIT_INTERRUPTED,
    EXIT_LOCK_BUSY,
    EXIT_LOST_RACE,
    EXIT_OK,
    EXIT_UNSAFE_MOUNT,
    EXIT_USAGE,
    AlreadyExists,
    InvalidOption,
    OcigcError,
    UsageHint,
    describe_oserror,
    printable,
)
from ocigc.progress import NullProgress, Progress, TqdmProgress, binary_bytes


@dataclass
class Settings:
    """Global options, kept in ``ctx.obj``."""

    quiet: bool = False
    verbose: int = 0
    #: ``--wide`` (or ``-v``): full digests and media types, one line per item, however long.
    wide: bool = False

    def progress(self, json_out: bool = False) -> Progress:
        if self.quiet or json_out or not sys.stderr.isatty():
            return NullProgress()
        return TqdmProgress()

    def short(self, text: str) -> str:
        """``text`` for human output: digests cut to 12 hex (``sha256:977c6cf8e8ae``, as ``migrate`` and
        oras print them), blob paths and referrer tags to 12 hex and ``…``; as it is with ``--wide``."""
        if self.wide:
            return text
        return _PATH_HEX.sub(r"\1\2…", _DIGEST_HEX.sub(r"\1:\2", text))

    def fit(self, line: str, hang: int = 4) -> list[str]:
        """One line of human output, shortened, and wrapped at the terminal's width (80 columns when
        it is unknown) with continuation lines indented by ``hang`` more; as it is with ``--wide``."""
        line = self.short(line)
        if self.wide or len(line) <= self.width:
            return [line]
        indent = len(line) - len(line.lstrip(" "))
        return textwrap.wrap(line, self.width, initial_indent="", subsequent_indent=" " * (indent + hang),
                             break_long_words=False, break_on_hyphens=False, drop_whitespace=True) or [line]

    @property
    def width(self) -> int:
        return max(40, shutil.get_terminal_size((80, 24)).columns)


#: ``ALG:HEX`` digests, and hex in blob paths and referrer tags (``blobs/sha256/HEX``, ``sha256-HEX.sig``).
_DIGEST_HEX = re.compile(r"\b(sha256|sha384|sha512):([0-9a-f]{12})[0-9a-f]{20,}\b")
_PATH_HEX = re.compile(r"((?:\bblobs/(?:sha256|sha384|sha512)/)|(?:\b(?:sha256|sha384|sha512)-))([0-9a-f]{12})"
                       r"[0-9a-f]{20,}")


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr; no progress bars.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, show_default=False,
                                         help="More detail (repeatable: -vv); also full digests, as --wide.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout (see docs/cli.md).")]
WideOpt = Annotated[bool, typer.Option("--wide", "-w", help="Full digests and media types, one line per item "
                                       "(human output is cut to the terminal's width otherwise).")]


def settings(ctx: typer.Context, quiet: bool = False, verbose: int = 0, wide: bool = False) -> Settings:
    """The global settings, with a command's own --quiet/--verbose/--wide folded in."""
    obj = ctx.find_root().obj
    base = obj if isinstance(obj, Settings) else Settings()
    v = base.verbose + verbose
    merged = Settings(quiet=base.quiet or quiet, verbose=v, wide=base.wide or wide or v > 0)
    if merged.verbose and not merged.quiet:  # --verbose says how each mounted bucket is reached
        from ocigc.storage.via import on_route

        on_route(lambda route: typer.echo(route.describe(), err=True))
        from ocigc import status  # and the long waits (a lock settling on a mount), as on a terminal

        status.on_status(lambda message: typer.echo(message, err=True))
    return merged


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


#: The flag of a core option where it is not ``--`` + the option's name with ``-`` for ``_``.
OPTION_FLAGS: dict[str, str] = {}


def flag_of(option: str) -> str:
    return OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


def most_serious(codes: Iterable[int]) -> int:
    """The exit code of a run over several layouts: the most serious one seen (4, 3, 1, then 75;
    docs/cli.md "Exit codes"), 0 when none failed."""
    seen = set(codes) - {EXIT_OK}
    for code in (EXIT_INTEGRITY, EXIT_LOST_RACE, EXIT_UNSAFE_MOUNT, EXIT_ERROR, EXIT_USAGE, EXIT_LOCK_BUSY):
        if code in seen:
            return code
    return min(seen, default=EXIT_OK)


def error_message(e: BaseException) -> tuple[str, int]:
    """The one line and the exit code of an error (the one mapping, docs/cli.md "Exit codes")."""
    if isinstance(e, (InvalidOption, UsageHint)):
        return e.render(flag_of), e.exit_code
    if isinstance(e, AlreadyExists):
        return f"{e} (use {flag_of('overwrite')} to replace it)", e.exit_code
    if isinstance(e, OcigcError):
        return str(e), e.exit_code
    if isinstance(e, OSError):  # EROFS, EACCES, ENOTDIR, EISDIR, ENOSPC, EIO: one line naming the path
        return describe_oserror(e), EXIT_ERROR
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    raise TypeError(f"not an error ocigc maps: {e!r}")


@contextmanager
def handle_errors(command: str = "", json_out: bool = False) -> Iterator[None]:
    """Turn ocigc errors into a one-line message and the documented exit code (the one place).

    With ``json_out`` (the command's ``--json``) the error is also an object on stdout:
    ``{"command", "exit_code", "error"}`` (docs/cli.md, "JSON output")."""
    try:
        yield
    except BrokenPipeError:
        raise typer.Exit(1) from None
    except (OcigcError, OSError, KeyboardInterrupt) as e:
        message, code = error_message(e)
        typer.echo(f"error: {message}" if code != EXIT_INTERRUPTED else message, err=True)
        if json_out:
            echo_json(command, {}, exit_code=code, error=message)
        raise typer.Exit(code) from None


def usage_error(e: Exception, argv: list[str]) -> int:
    """A usage error of the command line (typer/click's) as one line on stderr, and with ``--json``
    before ``--`` the error object on stdout. Returns the exit code (2)."""
    from typer._click.exceptions import BadParameter, MissingParameter, NoArgsIsHelpError

    code = int(getattr(e, "exit_code", EXIT_USAGE))
    if isinstance(e, NoArgsIsHelpError):  # `ocigc` or `ocigc trash` alone: the help
        e.show()
        return code
    ctx = getattr(e, "ctx", None)
    command_path = ctx.command_path if ctx is not None else "ocigc"
    message = getattr(e, "message", str(e)) or str(e)
    message = re.sub(r"^Value error, ", "", message)
    param = getattr(e, "param", None)
    if isinstance(e, BadParameter) and not isinstance(e, MissingParameter) and param is not None:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")] or list(getattr(param, "opts", []))
        name = opts[0] if getattr(param, "param_type_name", "") == "option" and opts else (
            getattr(param, "metavar", None) or str(getattr(param, "name", "")).upper())
        message = f"{name}: {message}"
    else:
        message = e.format_message() if hasattr(e, "format_message") else str(e)
    message = printable(message)
    typer.echo(f"error: {message} ({command_path} -h for help)", err=True)
    options = argv[: argv.index("--")] if "--" in argv else argv
    if "--json" in options:
        command = command_path.split(" ", 1)[1] if " " in command_path else ""
        echo_json(command, {}, exit_code=code, error=message)
    return code


def echo_json(command: str, data: dict[str, Any], *, exit_code: int = 0, error: str | None = None) -> None:
    """A command's ``--json`` output: one envelope for every command, ``{"command", "exit_code",
    "error"?, ...}`` (docs/cli.md, "JSON output"); keys in snake_case."""
    clash = {"command", "exit_code", "error"} & data.keys()
    assert not clash, f"JSON data may not carry the envelope's keys: {clash}"
    doc: dict[str, Any] = {"command": command, "exit_code": exit_code}
    if error is not None:
        doc["error"] = error
    doc.update(data)
    from ocigc.storage.via import routes

    taken = routes()  # a document about layouts on a mounted bucket says how each mount was reached
    if taken and "via" not in doc:
        doc["via"] = [r.to_json() for r in taken]
    typer.echo(json.dumps(doc, indent=2, sort_keys=False, default=str))


def info(ctx: typer.Context, message: str) -> None:
    """A human message on stderr, hidden by --quiet."""
    if not settings(ctx).quiet:
        typer.echo(message, err=True)


def human_bytes(n: int) -> str:
    return binary_bytes(n)


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain left-aligned table (no colours: output goes to pipes and logs as often as to a tty)."""
    cols = [headers, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(headers))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)
