"""login, logout: registry credentials in the file oras and docker read (or their credential helper)."""

from __future__ import annotations

from typing import Annotated

import typer

from ocigc.cli._common import JsonOpt, QuietOpt, VerboseOpt, echo_json, handle_errors, settings
from ocigc.cli._registry import (
    InsecureOpt,
    PasswordOpt,
    PasswordStdinOpt,
    PlainHttpOpt,
    RegistryConfigOpt,
    UsernameOpt,
    read_password,
)
from ocigc.cli.app import app

HostArg = Annotated[str, typer.Argument(metavar="HOST", help="The registry, HOST[:PORT].")]


@app.command("login")
def login_cmd(
    ctx: typer.Context,
    host: HostArg,
    username: UsernameOpt = None,
    password: PasswordOpt = None,
    password_stdin: PasswordStdinOpt = False,
    registry_config: RegistryConfigOpt = None,
    plain_http: PlainHttpOpt = None,
    insecure: InsecureOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Log in to a registry: check the credentials against it, then save them as oras login does.

    They go to the credential helper the config names (credHelpers for HOST, else credsStore), else
    into its auths (base64). Without -u, the user name is asked on a terminal; without -p or
    --password-stdin, the password (not echoed). Exit 0 ok; 1 rejected or unreachable; 2 usage."""
    s = settings(ctx, quiet, verbose)
    with handle_errors("login", json_out):
        if username is None and not password_stdin and password is None:
            username = typer.prompt("Username")
        secret = read_password(username, password, password_stdin)
        if secret is None:
            secret = typer.prompt("Password", hide_input=True)
        from ocigc.transfer.login import login

        where = login(host, username or "", secret, config=registry_config, plain_http=plain_http,
                      insecure=insecure)
        if json_out:
            echo_json("login", {"host": host, "username": username, "stored_in": where})
        elif not s.quiet:
            typer.echo(f"Login Succeeded ({host}; credentials in {where})")


@app.command("logout")
def logout_cmd(
    ctx: typer.Context,
    host: HostArg,
    registry_config: RegistryConfigOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Forget a registry's credentials (the config's auths entry and the credential helper's).

    Exit 0 ok (also when none were kept); 1 the config or helper failed; 2 usage."""
    s = settings(ctx, quiet, verbose)
    with handle_errors("logout", json_out):
        from ocigc.transfer.credentials import remove_credentials

        removed = remove_credentials(host, registry_config)
        if json_out:
            echo_json("logout", {"host": host, "removed": removed})
        elif not s.quiet:
            typer.echo(f"Removed the credentials of {host}" if removed else f"No credentials kept for {host}")


__all__ = ["login_cmd", "logout_cmd"]
