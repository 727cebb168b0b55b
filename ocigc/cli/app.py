"""The typer application. Command modules import ``app`` and register with ``@app.command()``."""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Annotated, Any

import typer

from ocigc import __version__
from ocigc.cli._common import Settings, handle_errors, settings

EPILOG = (
    "Exit codes: 0 ok; 1 error or problems found; 2 usage; 3 lost race after retries; "
    "4 integrity failure (dangling reference); 5 unsafe mount configuration; 75 lock busy; 130 interrupted."
)

app = typer.Typer(
    name="ocigc",
    help="Registry upkeep for OCI image layouts on object storage: delete, sweep, check, locks, push, pull, migrate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
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
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr.")] = 0,
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
    via_module.reset()
    with handle_errors():
        via_module.set_via(via)
    via_module.on_route(None)
    settings(ctx)  # --verbose: routes as they are taken
