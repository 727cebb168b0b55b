"""Registry credentials and transport, against the harness registry with and without htpasswd:
login/logout writing the config oras writes, -u/--password-stdin, --registry-config, a Docker
credential helper script on PATH (credHelpers and credsStore), no password in any process's argv,
journal or output, and plain HTTP by default to 127.0.0.1/localhost."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.servers import RegistryServer
from tests.harness.tools import ocigc_command, skopeo_inspect, umoci_image
from tests.kit.cli import cli_env, run


def _ocigc(args: list[str], stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ocigc_command(), *args], input=stdin, capture_output=True, text=True, timeout=300,
                          env=env or cli_env(), check=False)


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, str]:
    lay = tmp_path / "img"
    return lay, umoci_image(lay, "v1", {"etc/auth.txt": os.urandom(64)})


def _helper(tmp_path: Path, name: str) -> tuple[dict[str, str], Path]:
    """A docker-credential-NAME script on PATH keeping one JSON file per server; the env, the store dir."""
    bindir, store = tmp_path / "bin", tmp_path / f"store-{name}"
    bindir.mkdir(exist_ok=True)
    store.mkdir()
    script = bindir / f"docker-credential-{name}"
    script.write_text(f"""#!/bin/sh
set -e
case "$1" in
  get) server=$(cat); f="{store}/$(printf %s "$server" | tr '/:' '__')";
       if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi;;
  store) doc=$(cat);
       server=$(printf %s "$doc" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ServerURL"])');
       printf %s "$doc" > "{store}/$(printf %s "$server" | tr '/:' '__')";;
  erase) server=$(cat); rm -f "{store}/$(printf %s "$server" | tr '/:' '__')";;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = cli_env()
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    return env, store


def test_login_cp_logout_with_the_config_file(auth_registry: RegistryServer, image: tuple[Path, str],
                                              tmp_path: Path) -> None:
    lay, digest = image
    user, password = auth_registry.credentials or ("", "")
    config = tmp_path / "config.json"
    p = _ocigc(["login", auth_registry.host, "-u", user, "--password-stdin", "--registry-config", str(config)],
               stdin="wrong\n")
    assert p.returncode == 1 and "rejected" in p.stderr, p.stderr
    assert not config.exists()
    p = _ocigc(["login", auth_registry.host, "-u", user, "--password-stdin", "--registry-config", str(config)],
               stdin=password + "\n")
    assert p.returncode == 0, p.stderr
    doc = json.loads(config.read_text())
    assert doc == {"auths": {auth_registry.host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    r = run(["cp", f"{lay}:v1", f"{auth_registry.host}/auth/app:v1", "--registry-config", str(config)])
    assert r.code == 0, r.stderr
    assert skopeo_inspect(f"docker://{auth_registry.ref('auth/app', 'v1')}", creds=(user, password))["Digest"] == digest
    p = _ocigc(["logout", auth_registry.host, "--registry-config", str(config)])
    assert p.returncode == 0, p.stderr
    assert json.loads(config.read_text()) == {"auths": {}}
    r = run(["cp", f"{auth_registry.host}/auth/app:v1", f"{tmp_path / 'x'}:v1", "--registry-config", str(config)])
    assert r.code == 1 and "authentication required" in r.stderr, r.stderr


def _parent(pid: str) -> str | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rpartition(")")[2].split()[1]


def _ours(pid: str) -> bool:
    """A descendant of this test process (another xdist worker's skopeo --creds is not ours)."""
    me = str(os.getpid())
    seen = 0
    while pid not in ("0", "1") and seen < 64:
        if pid == me:
            return True
        parent = _parent(pid)
        if parent is None:
            return False
        pid, seen = parent, seen + 1
    return False


def _watch_cmdlines(secret: bytes, stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == str(os.getpid()):
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if secret in cmdline and _ours(pid):
                seen.append(f"{pid}: {cmdline!r}")


@pytest.fixture
def watcher(auth_registry: RegistryServer) -> Iterator[list[str]]:
    seen: list[str] = []
    stop = threading.Event()
    _, password = auth_registry.credentials or ("", "")
    t = threading.Thread(target=_watch_cmdlines, args=(password.encode(), stop, seen), daemon=True)
    t.start()
    yield seen
    stop.set()
    t.join()


def test_password_stdin_reaches_no_argv_no_journal_no_output(auth_registry: RegistryServer, image: tuple[Path, str],
                                                             tmp_path: Path, watcher: list[str]) -> None:
    lay, digest = image
    user, password = auth_registry.credentials or ("", "")
    empty = tmp_path / "empty.json"
    for args in (["cp", f"{lay}:v1", f"{auth_registry.host}/secret/app:v1"],
                 ["cp", "-v", f"{auth_registry.host}/secret/app:v1", f"{tmp_path / 'back'}:v2", "--json"],
                 ["migrate", str(lay), f"{auth_registry.host}/secret/m", "--json"]):
        p = _ocigc([*args, "-u", user, "--password-stdin", "--registry-config", str(empty)], stdin=password + "\n")
        assert p.returncode == 0, p.stderr
        assert password not in p.stdout and password not in p.stderr
        assert base64.b64encode(f"{user}:{password}".encode()).decode() not in p.stdout + p.stderr
    assert watcher == [], f"the password appeared in a process's command line: {watcher}"
    for f in (tmp_path / "back").rglob("*"):  # index.json, blobs, the journal and locks under .ocigc/
        if f.is_file():
            assert password.encode() not in f.read_bytes(), f
    assert not empty.exists()
    assert json.loads((tmp_path / "back" / "index.json").read_text())["manifests"][0]["digest"] == digest
    # -p works, with a warning as oras gives
    p = _ocigc(["cp", f"{lay}:v1", f"{auth_registry.host}/secret/app:v3", "-u", user, "-p", password,
                "--registry-config", str(empty)])
    assert p.returncode == 0, p.stderr
    assert "warning: a password given with --password can be seen in the process list" in p.stderr
    # ... and the watcher does see a password in an argv (it can fail)
    assert watcher, "the watcher missed the -p run"


def test_credential_helper_and_creds_store(auth_registry: RegistryServer, image: tuple[Path, str],
                                           tmp_path: Path) -> None:
    lay, digest = image
    user, password = auth_registry.credentials or ("", "")
    env, store = _helper(tmp_path, "ocigctest")
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"credsStore": "ocigctest"}))
    env["DOCKER_CONFIG"] = str(config.parent)
    # login stores through the helper (the secret on its stdin), the config gets no auths entry
    p = _ocigc(["login", auth_registry.host, "-u", user, "--password-stdin"], stdin=password, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(config.read_text()) == {"credsStore": "ocigctest"}
    assert len(list(store.iterdir())) == 1
    p = _ocigc(["cp", f"{lay}:v1", f"{auth_registry.host}/helper/app:v1"], env=env)
    assert p.returncode == 0, p.stderr
    assert skopeo_inspect(f"docker://{auth_registry.ref('helper/app', 'v1')}", creds=(user, password))["Digest"] \
        == digest
    # credHelpers for the host wins over credsStore
    config.write_text(json.dumps({"credsStore": "missing-helper", "credHelpers": {auth_registry.host: "ocigctest"}}))
    p = _ocigc(["cp", f"{auth_registry.host}/helper/app:v1", f"{tmp_path / 'back'}:v1"], env=env)
    assert p.returncode == 0, p.stderr
    p = _ocigc(["logout", auth_registry.host], env=env)
    assert p.returncode == 0, p.stderr
    assert list(store.iterdir()) == []


def test_local_registries_default_to_plain_http(registry: RegistryServer, image: tuple[Path, str],
                                                tmp_path: Path) -> None:
    lay, _ = image
    r = run(["cp", f"{lay}:v1", f"{registry.host}/local/app:v1"])
    assert r.code == 0, r.stderr
    r = run(["cp", f"localhost:{registry.port}/local/app:v1", f"{tmp_path / 'back'}:v1"])
    assert r.code == 0, r.stderr
    r = run(["cp", f"{lay}:v1", f"{registry.host}/local/app:v2", "--no-plain-http", "--retries", "0"])
    assert r.code == 1 and "TLS error" in r.stderr, r.stderr


def test_the_oras_verbs_take_the_same_credentials_and_plain_http_default(
        auth_registry: RegistryServer, image: tuple[Path, str], tmp_path: Path) -> None:
    """manifest fetch, discover, blob fetch and attach on a registry REF: -u/--password-stdin and
    --registry-config as migrate and cp take them, plain HTTP to 127.0.0.1 without a flag."""
    lay, digest = image
    user, password = auth_registry.credentials or ("", "")
    ref = f"{auth_registry.host}/auth/verbs:v1"
    config = tmp_path / "config.json"
    p = _ocigc(["login", auth_registry.host, "-u", user, "--password-stdin", "--registry-config", str(config)],
               stdin=password + "\n")
    assert p.returncode == 0, p.stderr
    assert run(["cp", f"{lay}:v1", ref, "--registry-config", str(config)]).code == 0
    r = run(["manifest", "fetch", ref, "--descriptor", "--json"])  # no credentials: refused
    assert r.code == 1 and "authentication required" in r.stderr, r.stderr
    p = _ocigc(["manifest", "fetch", ref, "--descriptor", "--json", "-u", user, "--password-stdin"],
               stdin=password + "\n")
    assert p.returncode == 0, p.stderr
    assert digest in p.stdout
    assert password not in p.stdout + p.stderr
    r = run(["manifest", "fetch", ref, "-o", str(tmp_path / "m.json"), "--registry-config", str(config)])
    assert r.code == 0, r.stderr
    config_digest = json.loads((tmp_path / "m.json").read_text())["config"]["digest"]
    r = run(["blob", "fetch", f"{auth_registry.host}/auth/verbs@{config_digest}", "-o", str(tmp_path / "c.json"),
             "--registry-config", str(config)])
    assert r.code == 0, r.stderr
    (tmp_path / "sig.txt").write_text("signed\n")
    r = run(["attach", ref, "sig.txt", "--artifact-type", "application/vnd.example.sig", "--registry-config",
             str(config)], cwd=tmp_path)
    assert r.code == 0, r.stderr
    r = run(["discover", ref, "--format", "json", "--registry-config", str(config)])
    assert r.code == 0, r.stderr
    assert "application/vnd.example.sig" in r.stdout
