"""Registry credentials: the Docker/oras config file (``auths``, ``credHelpers``, ``credsStore``),
Docker credential helpers, and what ``login``/``logout`` write.

A credential helper is run as ``docker-credential-NAME get|store|erase`` with the server (or the
credentials as JSON) on its stdin, never in its argv: no secret reaches a process listing. Nothing
here logs a secret; a :class:`Credentials` never shows its password in ``repr``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ocigc.errors import UsageError
from ocigc.transfer.registry_model import RegistryAuthError, docker_config_path

HELPER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Credentials:
    """A user name and a password (or token); the password is kept out of ``repr``."""

    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def host_keys(host: str) -> list[str]:
    """The keys a config may file ``host`` under (docker writes ``https://host``, oras ``host``)."""
    names = [host]
    if host.startswith("localhost"):
        names.append(host.replace("localhost", "127.0.0.1", 1))
    elif host.startswith("127.0.0.1"):
        names.append(host.replace("127.0.0.1", "localhost", 1))
    keys: list[str] = []
    for name in names:
        keys += [name, f"https://{name}", f"http://{name}", f"https://{name}/v1/", f"http://{name}/v1/"]
    return keys


def read_config(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryAuthError(f"{path}: cannot read the registry config ({e})") from None
    if not isinstance(cfg, dict):
        raise RegistryAuthError(f"{path}: not a JSON object")
    return cfg


def _helper_binary(name: str) -> str:
    binary = f"docker-credential-{name}"
    found = shutil.which(binary)
    if found is None:
        raise RegistryAuthError(f"credential helper {binary} not found on PATH")
    return found


def run_helper(name: str, action: str, payload: str) -> str:
    """``docker-credential-NAME ACTION`` with ``payload`` on stdin; its stdout."""
    binary = _helper_binary(name)
    try:
        proc = subprocess.run([binary, action], input=payload.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RegistryAuthError(f"credential helper docker-credential-{name} {action}: {e}") from None
    if proc.returncode != 0:
        out = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        if action == "get" and "credentials not found" in out.lower():
            return ""
        raise RegistryAuthError(f"credential helper docker-credential-{name} {action} failed "
                                f"(exit {proc.returncode}): {out[:200]}")
    return proc.stdout.decode(errors="replace")


def helper_get(name: str, server: str) -> Credentials | None:
    out = run_helper(name, "get", server)
    if not out.strip():
        return None
    try:
        doc = json.loads(out)
        username, secret = str(doc.get("Username") or ""), str(doc["Secret"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RegistryAuthError(f"credential helper docker-credential-{name}: answer is not the expected JSON") \
            from None
    return Credentials(username, secret) if secret else None


@dataclass
class Found:
    """Basic credentials (base64 ``user:password``) and where they came from (for messages)."""

    basic: str | None
    source: str


def find_credentials(host: str, config: str | None = None, given: Credentials | None = None) -> Found:
    """Credentials for ``host``: given on the command line, else from the config file's ``auths``,
    ``credHelpers`` (per host) or ``credsStore``."""
    if given is not None:
        return Found(given.basic(), "--username/--password")
    path = docker_config_path(config)
    cfg = read_config(path)
    auths = cfg.get("auths") if isinstance(cfg.get("auths"), dict) else {}
    helpers = cfg.get("credHelpers") if isinstance(cfg.get("credHelpers"), dict) else {}
    assert isinstance(auths, dict) and isinstance(helpers, dict)
    for key in host_keys(host):
        helper = helpers.get(key)
        if helper:
            creds = helper_get(str(helper), key)
            if creds:
                return Found(creds.basic(), f"{path} (credHelpers: docker-credential-{helper})")
        entry = auths.get(key)
        if isinstance(entry, dict):
            if entry.get("auth"):
                return Found(str(entry["auth"]), path)
            if entry.get("username") and entry.get("password"):
                return Found(Credentials(str(entry["username"]), str(entry["password"])).basic(), path)
    store = cfg.get("credsStore")
    if store:
        for key in dict.fromkeys([host, f"https://{host}"]):
            creds = helper_get(str(store), key)
            if creds:
                return Found(creds.basic(), f"{path} (credsStore: docker-credential-{store})")
    return Found(None, path)


def _write_config(path: str, cfg: dict[str, Any]) -> None:
    """Write the config atomically, mode 0600 (it may hold credentials)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent="\t")
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _helper_for(cfg: dict[str, Any], host: str) -> str | None:
    helpers = cfg.get("credHelpers")
    if isinstance(helpers, dict) and helpers.get(host):
        return str(helpers[host])
    store = cfg.get("credsStore")
    return str(store) if store else None


def store_credentials(host: str, creds: Credentials, config: str | None = None) -> str:
    """Save ``creds`` for ``host`` as oras login does: in the credential helper the config names
    (``credHelpers`` for the host, else ``credsStore``), else base64 in ``auths``. Where it went."""
    if not host or "/" in host:
        raise UsageError(f"{host!r}: give a registry host (HOST[:PORT])")
    path = docker_config_path(config)
    cfg = read_config(path)
    helper = _helper_for(cfg, host)
    if helper:
        run_helper(helper, "store", json.dumps({"ServerURL": host, "Username": creds.username,
                                                "Secret": creds.password}))
        auths = cfg.get("auths")
        if isinstance(auths, dict) and host in auths:  # no stale copy beside the helper's
            del auths[host]
            _write_config(path, cfg)
        return f"docker-credential-{helper}"
    auths = cfg.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise RegistryAuthError(f"{path}: 'auths' is not an object")
    auths[host] = {"auth": creds.basic()}
    _write_config(path, cfg)
    return path


def remove_credentials(host: str, config: str | None = None) -> bool:
    """Forget ``host``'s credentials (helper ``erase`` and the ``auths`` entry); whether any were kept."""
    path = docker_config_path(config)
    cfg = read_config(path)
    removed = False
    helper = _helper_for(cfg, host)
    if helper:
        try:
            run_helper(helper, "erase", host)
            removed = True
        except RegistryAuthError as e:
            if "not found" not in str(e).lower():
                raise
    auths = cfg.get("auths")
    if isinstance(auths, dict):
        for key in [k for k in host_keys(host) if k in auths]:
            del auths[key]
            removed = True
        if removed:
            _write_config(path, cfg)
    return removed


__all__ = ["Credentials", "Found", "find_credentials", "host_keys", "remove_credentials", "store_credentials"]
