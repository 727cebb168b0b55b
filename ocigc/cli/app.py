"""The typer application. Command modules import ``app`` and register with ``@app.command()``."""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand

from ocigc import __version__
from ocigc.cli._common import Settings, handle_errors, settings, usage_error
from ocigc.cli.commands import EPILOG, SUMMARY, format_alias
from ocigc.cli.lazy import LazyGroup


def _plain_argument_name(param: TyperArgument) -> str:
    if param.metavar:
        return param.metavar
    return param.name.upper() if param.name else "ARG"


class Command(TyperCommand):
    """A command whose help fits 80 columns: arguments by their metavar alone (no ``<str>``), and
    the usage line without typer's braces."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _plain_argument_name(param)
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                args.append((_plain_argument_name(param), re.sub(r"\s*\[required\]$", "", record[1])))
            else:
                opts.append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        if opts:
            with formatter.section("Options"):
                formatter.write_dl(opts)


class Group(LazyGroup):
    """The application: its commands built lazily (``LazyGroup``: a run imports the module of its own
    command only), and a usage error (a bad option, a missing argument, an unknown command) is one
    line, ``error: <problem> (ocigc CMD -h for help)``, exit 2, as docs/cli.md promises; with
    ``--json`` the error object too."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        argv = format_alias(list(sys.argv[1:] if args is None else args))
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False,
                              windows_expand_args=windows_expand_args, **extra)
        except typer.Abort:  # EOF or Ctrl-C where typer asks: an interrupt (docs: 130)
            typer.echo("interrupted", err=True)
            rv = 130
        except Exception as e:
            from typer._click.exceptions import ClickException

            if not isinstance(e, ClickException):
                raise
            rv = usage_error(e, argv)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


class OcigcTyper(typer.Typer):
    """``typer.Typer`` whose commands are ``Command``s and whose help is plain text (typer's rich
    panels cut option names and defaults at 80 columns)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(*args, **kwargs)

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any  # type: ignore[override]
                ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(*args, cls=cls or Command, **kwargs)


app = OcigcTyper(
    cls=Group,
    name="ocigc",
    help=SUMMARY,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    # Plain help: typer's rich help imports rich (about 0.1 s, more than the rest of a run) and cuts
    # option names and defaults at 80 columns.
    rich_markup_mode=None,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ocigc {__version__}")
        raise typer.Exit()


def show_warnings(quiet: bool) -> None:
    """Warnings of the library (e.g. a store that ignores conditional writes) as one ``warning:`` line each."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if not quiet:
            print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def show_status(quiet: bool, verbose: int) -> None:
    """The library's status of a long wait (a lock settling on a mount) as a line on stderr, when
    stderr is a terminal or with --verbose; never with --quiet."""
    from ocigc import status

    def show(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    status.on_status(show if not quiet and (verbose or sys.stderr.isatty()) else None)


def _escape_unencodable_output() -> None:
    """What a layout holds is printed as it is, and may not be encodable (a lone surrogate in a tag,
    which Go's JSON decoder accepts): such characters print as ``\\udXXX`` escapes, never a traceback."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


@app.callback()
def root(
    ctx: typer.Context,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors on stderr; no progress bars.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, show_default=False,
                                         help="More detail (repeatable: -vv); also full digests, as --wide.")] = 0,
    endpoint_url: Annotated[str | None, typer.Option(
        "--endpoint-url", metavar="URL", envvar="OCIGC_ENDPOINT_URL",
        help="S3 endpoint for s3:// locations (S3-compatible stores; default: AWS_ENDPOINT_URL or AWS).")] = None,
    via: Annotated[str | None, typer.Option(
        "--via", metavar="auto|mount|api", envvar="OCIGC_VIA",
        help="A layout on a mounted bucket: through the bucket's API when it is found and answers conditional "
             "writes (auto, the default), always through the mount, or always through the API.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Registry upkeep for OCI image layouts on object storage."""
    from ocigc.storage import via as via_module
    from ocigc.storage.open_storage import set_s3_endpoint

    ctx.obj = Settings(quiet=quiet, verbose=verbose)
    _escape_unencodable_output()
    set_s3_endpoint(endpoint_url)
    show_warnings(quiet)
    show_status(quiet, verbose)
    via_module.reset()
    with handle_errors():
        via_module.set_via(via)
    via_module.on_route(None)
    settings(ctx)  # --verbose: routes as they are taken
