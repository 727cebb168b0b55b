"""The registry options every command that talks to a registry takes (migrate, cp): transport
(``--plain-http``/``--no-plain-http``, ``--insecure``) and credentials (``-u``, ``-p``,
``--password-stdin``, ``--registry-config``), turned into a ``RegistryOptions``; and the transfer
options of migrate and cp (``--jobs``, ``--retries``, ``--verify``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ocigc.errors import UsageError

if TYPE_CHECKING:
    from ocigc.transfer.registry_model import RegistryOptions

PlainHttpOpt = Annotated[bool | None, typer.Option(
    "--plain-http/--no-plain-http", show_default=False,
    help="Plain HTTP to the registries (--no-plain-http: HTTPS even to a local one). Default: plain HTTP to "
         "localhost, 127.0.0.1 and [::1] (any port), HTTPS elsewhere.")]
InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="HTTPS without verifying the registries' certificates (a local registry too).")]
UsernameOpt = Annotated[str | None, typer.Option(
    "--username", "-u", metavar="USER", help="Registry user name (with -p or --password-stdin).")]
PasswordOpt = Annotated[str | None, typer.Option(
    "--password", "-p", metavar="PASSWORD", show_default=False,
    help="Registry password or token (insecure: visible in the process list; prefer --password-stdin).")]
PasswordStdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the registry password or token from stdin.")]
#: Parallel transfers of migrate and cp.
DEFAULT_JOBS = 8
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", metavar="N", min=1, max=64, help="Parallel transfers.")]
RetriesOpt = Annotated[int, typer.Option(
    "--retries", metavar="N", min=0, max=20,
    help="Retries of a transient failure (back-off 0.5 s doubling, up to 10 s).")]
VerifyOpt = Annotated[bool, typer.Option(
    "--verify", help="Re-read what was written (tags, manifests, blobs) and compare digests.")]
RegistryConfigOpt = Annotated[str | None, typer.Option(
    "--registry-config", "--docker-config", metavar="PATH",
    help="Registry credentials file, Docker's and oras' config.json format (auths, credHelpers, credsStore; "
         "default $DOCKER_CONFIG/config.json, else ~/.docker/config.json).")]


def read_password(username: str | None, password: str | None, password_stdin: bool,
                  require: bool = False) -> str | None:
    """The password of ``-p`` or ``--password-stdin`` (a warning on stderr for ``-p``, as oras gives)."""
    if password is not None and password_stdin:
        raise UsageError("--password and --password-stdin exclude each other")
    if password is not None:
        typer.echo("warning: a password given with --password can be seen in the process list; "
                   "use --password-stdin", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: read an empty password from stdin")
    if password is not None and not username:
        raise UsageError("--password needs --username")
    if username and password is None and require:
        raise UsageError("--username needs --password-stdin (or --password)")
    return password


def registry_options(*, plain_http: bool | None, insecure: bool, retries: int, registry_config: str | None,
                     username: str | None, password: str | None, password_stdin: bool) -> RegistryOptions:
    from ocigc.transfer.registry_model import RegistryOptions

    secret = read_password(username, password, password_stdin, require=True)
    return RegistryOptions(plain_http=plain_http, insecure=insecure, retries=retries, docker_config=registry_config,
                           username=username if secret is not None else None, password=secret)


__all__ = ["InsecureOpt", "PasswordOpt", "PasswordStdinOpt", "PlainHttpOpt", "RegistryConfigOpt", "UsernameOpt",
           "read_password", "registry_options"]
