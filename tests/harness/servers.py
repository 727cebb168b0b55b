"""Debian's docker-registry (distribution 2.8) on 127.0.0.1; the object stores are in ``objectstores.py``.

It runs as a child process (see ``common.spawn``): it dies with the test process even when that is
killed, and a busy test process cannot starve it.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from tests.harness.common import (
    ComponentUnavailable,
    free_port,
    log_tail,
    loopback_env,
    require_command,
    spawn,
    stop_process,
)

MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.artifact.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)

_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, timeout: float = 2.0, auth: tuple[str, str] | None = None) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    request = urllib.request.Request(url)
    if auth is not None:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError):
        return None


def _wait_http(
    proc: subprocess.Popen[bytes], url: str, ok: set[int], timeout: float
) -> tuple[bool, str]:
    """Wait until ``url`` answers with a status in ``ok``; (False, why) if the child died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, f"exited with status {proc.returncode}"
        if http_status(url) in ok:
            return True, ""
        time.sleep(0.05)
    return False, f"no answer from {url} within {timeout:.0f} s"


# ----------------------------------------------------------------------------------------- registry


def htpasswd_line(user: str, password: str) -> str:
    """A ``user:$2b$...`` bcrypt line for distribution's htpasswd auth.

    Uses the ``bcrypt`` package when installed, else the standard library's ``crypt`` (glibc's
    libxcrypt does bcrypt on Debian; the module exists up to Python 3.12), else apache2-utils'
    ``htpasswd``. Cost 4 keeps each authenticated request cheap.
    """
    try:
        import bcrypt  # type: ignore[import-not-found,unused-ignore]

        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        return f"{user}:{hashed}"
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # type: ignore[import-not-found,unused-ignore]

            hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        if hashed and hashed.startswith("$2"):
            return f"{user}:{hashed}"
    except (ImportError, AttributeError, OSError):
        pass
    try:
        htpasswd = require_command("htpasswd")
    except ComponentUnavailable as e:
        raise ComponentUnavailable(
            "no bcrypt implementation for the registry's htpasswd file: pip install bcrypt, "
            "or apt-get install apache2-utils"
        ) from e
    out = subprocess.run([htpasswd, "-Bbn", "-C", "4", user, password], check=True, capture_output=True, text=True)
    return out.stdout.strip()


class RegistryServer:
    """``docker-registry serve CONFIG``: filesystem storage in ``workdir/storage``, deletes enabled.

    The port is chosen at the first start and kept, so ``stop``/``kill`` then ``start`` bring the
    same registry back on the same storage (for "registry killed mid-migration" tests).
    """

    def __init__(self, workdir: Path, credentials: tuple[str, str] | None = None) -> None:
        self.workdir = workdir
        self.storage_dir = workdir / "storage"
        self.config_path = workdir / "config.yml"
        self.log_path = workdir / "registry.log"
        self.htpasswd_path = workdir / "htpasswd"
        self.credentials = credentials
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- addresses
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of a reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def username(self) -> str | None:
        return self.credentials[0] if self.credentials else None

    @property
    def password(self) -> str | None:
        return self.credentials[1] if self.credentials else None

    def ref(self, repo: str, tag: str | None = None) -> str:
        """``127.0.0.1:PORT/repo[:tag]``."""
        return f"{self.host}/{repo}" + (f":{tag}" if tag else "")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- life cycle
    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "fields": {"service": "registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }
        if self.credentials is not None:
            self.htpasswd_path.write_text(htpasswd_line(*self.credentials) + "\n")
            config["auth"] = {"htpasswd": {"realm": "ocigc-test", "path": str(self.htpasswd_path)}}
        # JSON is YAML: no YAML library needed.
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        binary = require_command("docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        ok_status = {200} if self.credentials is None else {401}
        keep_port = self.port != 0
        why = ""
        for _attempt in range(1 if keep_port else 3):
            if not keep_port:
                self.port = free_port()
            self._write_config()
            self.proc = spawn(
                [binary, "serve", str(self.config_path)], self.log_path, env=loopback_env(), cwd=self.workdir
            )
            ok, why = _wait_http(self.proc, self.url + "/v2/", ok_status, timeout)
            if ok:
                self.starts += 1
                return
            stop_process(self.proc, kill=True)
            self.proc = None
        raise ComponentUnavailable(f"docker-registry did not start on {self.host}: {why}\n{log_tail(self.log_path)}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM; distribution takes 1-3 s to exit)."""
        stop_process(self.proc, timeout=timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, with uploads possibly half done."""
        stop_process(self.proc, kill=True)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- helpers
    def garbage_collect(self, dry_run: bool = False, delete_untagged: bool = False) -> subprocess.CompletedProcess[str]:
        """``docker-registry garbage-collect``; stop the registry first for a real (non dry) run."""
        args = [require_command("docker-registry"), "garbage-collect"]
        if dry_run:
            args.append("--dry-run")
        if delete_untagged:
            args.append("--delete-untagged")
        args.append(str(self.config_path))
        return subprocess.run(args, capture_output=True, text=True, timeout=120, env=loopback_env())

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, data: bytes | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """An HTTP request to ``path`` (``/v2/...``) with the registry's credentials: (status, body, headers).

        Accepts every manifest media type unless ``headers`` says otherwise (without an Accept
        header distribution answers 404 for OCI manifests).
        """
        import requests

        sent = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        sent.update(headers or {})
        response = requests.request(
            method,
            self.url + path,
            headers=sent,
            data=data,
            auth=self.credentials,
            timeout=30,
            proxies={"http": "", "https": ""},
        )
        return response.status_code, response.content, dict(response.headers)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        return self.request("GET", path, headers)
