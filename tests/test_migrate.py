"""migrate against the real docker-registry (distribution 2.8) of the harness.

A root of layouts made by umoci, skopeo and ocigc push, plus multi-arch indexes, Docker media
types, oras artifacts with referrers and odd ref names, goes to the registry; tags and digests
are read back through the registry API and with skopeo; an artifact is pulled with oras-py; a
rerun uploads nothing; registry -> layouts -> another registry keeps every digest; basic auth
from a Docker config; a bearer-token front end that expires tokens mid-upload; a registry
killed mid-migration; a layout root on an s3fs mount as the source.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from ocigc.oci.referrers import referrers_tag
from ocigc.transfer.migrate.execute import migrate
from ocigc.transfer.migrate.model import MigrateOptions, MigratePlan
from ocigc.transfer.registry_model import MANIFEST_ACCEPT, RegistryOptions
from tests.harness.common import wait_until
from tests.harness.servers import RegistryServer
from tests.harness.tools import (
    ocigc_command,
    oras_registry,
    skopeo_copy,
    skopeo_inspect,
    umoci_image,
)
from tests.kit.cli import run
from tests.kit.layouts import LAYOUTS, LayoutBuilder, copy_layout

REF_NAME = "org.opencontainers.image.ref.name"
NO_PROXY = {"http": "", "https": ""}
PLAIN = RegistryOptions(plain_http=True, retries=2, backoff=0.1)


def options(**kw: Any) -> MigrateOptions:
    kw.setdefault("registry", PLAIN)
    return MigrateOptions(**kw)


# ------------------------------------------------------------------------------ the source root
@dataclass
class SourceRoot:
    path: Path
    #: repository (layout path) -> {registry tag: digest} as the layouts say (after the mapping rule)
    expected: dict[str, dict[str, str]]
    artifact_files: dict[str, bytes]
    referrers: dict[str, list[str]]  # repo -> referrer digests pushed with ocigc push --subject


def _index(layout: Path) -> list[dict[str, Any]]:
    return json.loads((layout / "index.json").read_text()).get("manifests") or []


def _tags_of(layout: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in _index(layout):
        name = (e.get("annotations") or {}).get(REF_NAME)
        if name is not None:
            out[name] = e["digest"]  # the last entry of a name wins (the mapping rule)
    return out


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> SourceRoot:
    root = tmp_path_factory.mktemp("migrate-root")
    # umoci: two images stacked on one base (shared layers), in one layout.
    app = root / "umoci" / "app"
    umoci_image(app, "base", {"etc/base.txt": b"base layer " * 4000})
    umoci_image(app, "v1", {"etc/app.txt": b"app v1"}, base="base", config_cmd=["/bin/sh"])
    # skopeo: copies of it, two tags on one digest.
    (root / "skopeo").mkdir()
    skopeo_copy(f"oci:{app}:v1", f"oci:{root / 'skopeo' / 'app'}:latest")
    skopeo_copy(f"oci:{app}:v1", f"oci:{root / 'skopeo' / 'app'}:stable")
    # ocigc push: an artifact and a referrer of it (an untagged entry, as oras writes it).
    work = tmp_path_factory.mktemp("push-files")
    files = {"hello.txt": b"hello from the bucket\n", "data.bin": os.urandom(300_000)}
    for name, data in files.items():
        (work / name).write_bytes(data)
    arts = root / "artifacts"
    r = run(["push", f"{arts}:v1", "hello.txt:text/plain", "data.bin"], cwd=work)
    assert r.code == 0, str(r)
    (work / "sbom.json").write_text('{"sbom": true}')
    r = run(["push", str(arts), "sbom.json:application/json", "--artifact-type", "application/vnd.example.sbom",
             "--subject", "v1", "--json"], cwd=work)
    assert r.code == 0, str(r)
    sbom = r.json()["digest"]
    # Real fixtures: multi-arch (nested index, untagged platform entry), Docker v2 types, an oras
    # layout with a chain of referrers, odd ref names (full references, a duplicated name).
    for name in ("multiarch", "docker-types", "oras-artifact", "refnames"):
        copy_layout(LAYOUTS / name, root / "fixtures" / name)
        (root / "fixtures" / name / "EXPECT.json").unlink()
    expected: dict[str, dict[str, str]] = {}
    for layout in sorted(p.parent for p in root.rglob("oci-layout")):
        rel = str(layout.relative_to(root))
        tags = _tags_of(layout)
        if rel.endswith("refnames"):
            tags = {"3.19": tags["3.19"], "v1": tags["registry.example.com:5000/team/app:v1"], "dup": tags["dup"]}
        expected[rel] = tags
    return SourceRoot(root, expected, files, {"artifacts": [sbom]})


@pytest.fixture(scope="module")
def migrated(source_root: SourceRoot, registry: RegistryServer) -> tuple[str, MigratePlan]:
    """The root migrated once to the session registry under the prefix ``m1``."""
    prefix = f"{registry.host}/m1"
    plan = migrate(str(source_root.path), prefix, options(jobs=4))
    assert not plan.failed and plan.aborted is None, [r.failed or r.errors for r in plan.failed]
    return prefix, plan


def _head_digest(registry: RegistryServer, repo: str, ref: str) -> str | None:
    r = requests.head(f"{registry.url}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT},
                      auth=registry.credentials, proxies=NO_PROXY, timeout=30)
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def _tags(registry: RegistryServer, repo: str) -> set[str]:
    status, body, _ = registry.get(f"/v2/{repo}/tags/list")
    assert status == 200, (repo, status, body)
    return set(json.loads(body)["tags"] or [])


def _log_lines(registry: RegistryServer, method: str, offset: int = 0) -> list[str]:
    """The registry's access-log lines of ``method`` requests written after ``offset``."""
    with open(registry.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines()
            if "response completed" in line and f"http.request.method={method} " in line]


def _log_count(registry: RegistryServer, method: str, offset: int = 0) -> int:
    return len(_log_lines(registry, method, offset))


# ------------------------------------------------------------------------------------ the tests
def test_root_of_layouts_to_registry_keeps_tags_and_digests(
        source_root: SourceRoot, registry: RegistryServer, migrated: tuple[str, MigratePlan],
        tmp_path: Path) -> None:
    _, plan = migrated
    repo_of = {rel: f"m1/{rel}" for rel in source_root.expected}
    for rel, tags in source_root.expected.items():
        repo = repo_of[rel]
        got = _tags(registry, repo)
        referrer_tags = {t for t in got if t.startswith("sha256-")}
        assert got - referrer_tags == set(tags), rel
        for tag, digest in tags.items():
            assert _head_digest(registry, repo, tag) == digest, (rel, tag)
            raw_bytes = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--retry-times", "0",
                                        f"docker://{registry.ref(repo, tag)}"], capture_output=True,
                                       check=True).stdout
            assert "sha256:" + hashlib.sha256(raw_bytes).hexdigest() == digest, (rel, tag)
    # skopeo reads the images as images (OCI from umoci/skopeo, Docker v2 lists).
    for rel, tag in (("umoci/app", "v1"), ("skopeo/app", "stable"), ("fixtures/docker-types", "amd64")):
        assert skopeo_inspect(f"docker://{registry.ref(repo_of[rel], tag)}")["Digest"] == \
            source_root.expected[rel][tag]
    # The untagged platform manifest of multiarch is there by digest.
    platform = next(e["digest"] for e in _index(source_root.path / "fixtures" / "multiarch")
                    if REF_NAME not in (e.get("annotations") or {}))
    assert _head_digest(registry, repo_of["fixtures/multiarch"], platform) == platform
    # Referrers: the registry has no referrers API, so the fallback tag lists them.
    sbom = source_root.referrers["artifacts"][0]
    tag = referrers_tag(source_root.expected["artifacts"]["v1"])
    status, body, _ = registry.get(f"/v2/m1/artifacts/manifests/{tag}")
    assert status == 200 and sbom in [m["digest"] for m in json.loads(body)["manifests"]]
    assert _head_digest(registry, "m1/artifacts", sbom) == sbom
    # oras-py pulls the artifact bit for bit.
    out = tmp_path / "pulled"
    oras_registry(registry).pull(target=registry.ref("m1/artifacts", "v1"), outdir=str(out))
    for name, data in source_root.artifact_files.items():
        assert (out / name).read_bytes() == data
    # Shared layers went up once and were mounted into the other repositories.
    stats = plan.stats()
    assert stats["blobs_mounted"] > 0 and stats["referrer_tags"] >= 1


def test_rerun_uploads_no_blob(source_root: SourceRoot, registry: RegistryServer,
                               migrated: tuple[str, MigratePlan]) -> None:
    prefix, _ = migrated
    offset = registry.log_path.stat().st_size
    r = run(["migrate", source_root.path, prefix, "--plain-http", "--json"])
    assert r.code == 0, str(r)
    stats = r.json()["stats"]
    assert stats["blobs_uploaded"] == 0 and stats["blobs_mounted"] == 0 and stats["manifests_written"] == 0
    assert stats["tags_written"] == 0 and stats["blobs_present"] > 0
    assert _log_count(registry, "POST", offset) == 0 and _log_count(registry, "PUT", offset) == 0


def test_dry_run_against_a_registry_reports_what_is_there(source_root: SourceRoot, registry: RegistryServer,
                                                          migrated: tuple[str, MigratePlan]) -> None:
    prefix, _ = migrated
    offset = registry.log_path.stat().st_size
    r = run(["migrate", source_root.path, f"{registry.host}/dry", "--plain-http", "--dry-run", "--json",
             "--include", "umoci/*", "--include", "skopeo/*"])
    assert r.code == 0, str(r)
    j = r.json()
    assert {x["repository"] for x in j["repositories"]} == {"umoci/app", "skopeo/app"}
    assert j["totals"]["blobs_copy"] > 0 and j["totals"]["blobs_mount"] > 0  # skopeo/app mounts umoci/app's
    assert _log_count(registry, "POST", offset) == 0 and _log_count(registry, "PUT", offset) == 0
    r = run(["migrate", source_root.path, prefix, "--plain-http", "--dry-run", "--include", "umoci/*"])
    assert r.code == 0 and "0 to copy" in r.stdout


def test_registry_to_layouts_to_registry_keeps_every_digest(
        source_root: SourceRoot, registry: RegistryServer, migrated: tuple[str, MigratePlan],
        registry_factory: Callable[..., RegistryServer], tmp_path: Path) -> None:
    prefix, _ = migrated
    layouts = tmp_path / "layouts"
    plan = migrate(prefix, str(layouts), options(verify=True))
    assert not plan.failed and not plan.verify_errors
    # Every repository under the prefix became a layout at its path; skopeo and ocigc read them.
    assert {str(p.parent.relative_to(layouts)) for p in layouts.rglob("oci-layout")} == set(source_root.expected)
    assert skopeo_inspect(f"oci:{layouts / 'umoci' / 'app'}:v1")["Digest"] == source_root.expected["umoci/app"]["v1"]
    assert run(["check", layouts]).code == 0
    fresh = registry_factory()
    plan = migrate(str(layouts), fresh.host, options())
    assert not plan.failed
    for rel in source_root.expected:
        a, b = _tags(registry, f"m1/{rel}"), _tags(fresh, rel)
        assert a == b, rel
        for tag in a:
            assert _head_digest(registry, f"m1/{rel}", tag) == _head_digest(fresh, rel, tag), (rel, tag)
    # Registry -> registry works too: between two registries (blobs stream from one into the
    # other), and within one (blobs are mounted, not copied).
    plan = migrate(prefix, f"{fresh.host}/direct", options(include=("umoci/*", "artifacts"), verify=True))
    assert not plan.failed and not plan.verify_errors and plan.stats()["blobs_uploaded"] > 0
    for rel in ("umoci/app", "artifacts"):
        for tag, digest in source_root.expected[rel].items():
            assert _head_digest(fresh, f"direct/{rel}", tag) == digest
    plan = migrate(fresh.host, f"{fresh.host}/again", options(include=("umoci/*",)))
    assert not plan.failed and plan.stats()["blobs_uploaded"] == 0 and plan.stats()["blobs_mounted"] > 0
    assert _head_digest(fresh, "again/umoci/app", "v1") == source_root.expected["umoci/app"]["v1"]


def test_unmappable_ref_names_are_refused_or_mapped(registry: RegistryServer, tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "src" / "odd")
    img = b.image("team/app", [b"x"])
    b.image("ok", [b"y"])
    b.save()
    copy_layout(LAYOUTS / "umoci-tags", tmp_path / "src" / "fine")
    (tmp_path / "src" / "fine" / "EXPECT.json").unlink()
    dest = f"{registry.host}/odd"
    r = run(["migrate", tmp_path / "src", dest, "--plain-http"])
    assert r.code == 1
    assert any("'team/app'" in line and "--invalid-tags" in line for line in r.error_lines), r.stderr
    status, _, _ = registry.get("/v2/odd/odd/tags/list")
    assert status == 404  # the repository with the problem was not copied at all
    assert _tags(registry, "odd/fine") == {"base", "v1", "v2"}  # the others were
    r = run(["migrate", tmp_path / "src", dest, "--plain-http", "--invalid-tags", "sanitize"])
    assert r.code == 0, str(r)
    assert _tags(registry, "odd/odd") == {"team-app", "ok"}
    assert _head_digest(registry, "odd/odd", "team-app") == img["digest"]


def test_basic_auth_registry_with_credentials_from_a_docker_config(
        auth_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    copy_layout(LAYOUTS / "multiarch", src / "multi")
    (src / "multi" / "EXPECT.json").unlink()
    empty = tmp_path / "no-config"
    empty.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(empty))
    r = run(["migrate", src, f"{auth_registry.host}/auth", "--plain-http"])
    assert r.code == 1
    assert r.error_lines == [f"error: {auth_registry.host}: authentication required (401) and no credentials for "
                             f"{auth_registry.host} in {empty / 'config.json'}; run `ocigc login "
                             f"{auth_registry.host}` (or docker login), pass --username with --password-stdin, "
                             "or point --registry-config (DOCKER_CONFIG) at a config that has them"], r.stderr
    config = tmp_path / "docker"
    config.mkdir()
    user, password = auth_registry.credentials or ("", "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    plan = migrate(str(src), f"{auth_registry.host}/auth", options(verify=True))
    assert not plan.failed and not plan.verify_errors
    want = _tags_of(src / "multi")
    assert {t: _head_digest(auth_registry, "auth/multi", t) for t in want} == want
    # Wrong credentials: a clear message too.
    bad = base64.b64encode(f"{user}:wrong".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": bad}}}))
    r = run(["migrate", src, f"{auth_registry.host}/auth", "--plain-http"])
    assert r.code == 1 and "were rejected (401)" in r.stderr, r.stderr


def test_layout_root_on_s3fs_as_the_source(registry: RegistryServer, s3fs_session_mount: Any, s3_client: Any,
                                           tmp_path: Path) -> None:
    """The layouts are put into the bucket with boto3 (writing through FUSE file by file is slow)
    and read by migrate through the s3fs mount."""
    prefix = f"migrate-src-{os.getpid()}-{tmp_path.name}"
    for name in ("multiarch", "docker-types"):
        for p in sorted((LAYOUTS / name).rglob("*")):
            if p.is_file() and p.name != "EXPECT.json":
                key = f"{prefix}/team/{name}/{p.relative_to(LAYOUTS / name)}"
                s3_client.put_object(Bucket=s3fs_session_mount.bucket, Key=key, Body=p.read_bytes())
    root = Path(s3fs_session_mount.mount_point) / prefix
    plan = migrate(str(root), f"{registry.host}/froms3", options())
    assert not plan.failed and len(plan.repos) == 2
    for name in ("multiarch", "docker-types"):
        tags = _tags_of(LAYOUTS / name)
        assert {t: _head_digest(registry, f"froms3/team/{name}", t) for t in tags} == tags


# --------------------------------------------------------------------------- a registry that dies
def _linked_blobs(server: RegistryServer, prefix: str) -> set[str]:
    """Blobs linked into the repositories under ``prefix`` (what a HEAD there finds)."""
    base = server.storage_dir / "docker" / "registry" / "v2" / "repositories" / prefix
    return {f"sha256:{p.parent.name}" for p in base.glob("*/_layers/sha256/*/link")} if base.exists() else set()


def test_registry_killed_mid_migration_then_rerun_completes_without_reuploading(
        registry_factory: Callable[..., RegistryServer], tmp_path: Path) -> None:
    src = tmp_path / "src"
    want: dict[str, dict[str, str]] = {}
    for i in range(2):
        b = LayoutBuilder(src / f"repo{i}")
        img = b.image("v1", [os.urandom(128 * 1024) for _ in range(16)])
        b.save()
        want[f"repo{i}"] = {"v1": img["digest"]}
    server = registry_factory()
    proc = subprocess.Popen([*ocigc_command(), "migrate", str(src), f"{server.host}/dies", "--plain-http",
                             "--jobs", "1", "--retries", "1", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        arrived = wait_until(lambda: len(_linked_blobs(server, "dies")) >= 6 or proc.poll() is not None, timeout=120)
        assert arrived is not None and proc.poll() is None, "the migration ended before the registry was killed"
        server.kill()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors and server.host in errors[0] and "connection refused" in errors[0], err
    assert "rerun" in errors[0]
    before = _linked_blobs(server, "dies")
    assert before
    server.start()
    offset = server.log_path.stat().st_size
    r = run(["migrate", src, f"{server.host}/dies", "--plain-http", "--json"])
    assert r.code == 0, str(r)
    uploaded = {urllib.parse.unquote(m.group(1)) for line in _log_lines(server, "PUT", offset)
                if (m := re.search(r"digest=(sha256%3A[0-9a-f]{64})", line))}
    assert uploaded, "the rerun uploaded nothing at all (the kill came too late?)"
    assert not (uploaded & before), "blobs that arrived before the kill were uploaded again"
    for repo, tags in want.items():
        assert _head_digest(server, f"dies/{repo}", "v1") == tags["v1"]


# ----------------------------------------------------------------------- bearer tokens (a proxy)
class TokenProxy:
    """A bearer-token front end for a registry: ``/token`` hands out tokens (Basic auth), every
    ``/v2/`` request needs a token for its repository, and a token expires after ``budget``
    uses, so a long migration meets 401s in the middle, also on blob PUTs."""

    def __init__(self, upstream: RegistryServer, credentials: tuple[str, str], budget: int) -> None:
        self.upstream = upstream
        self.credentials = credentials
        self.budget = budget
        self.tokens: dict[str, list[Any]] = {}  # token -> [scope, uses left]
        self.lock = threading.Lock()
        self.unauthorized_puts = 0
        self.token_requests = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def scope_of(path: str) -> str:
        if path.startswith("/v2/_catalog"):
            return "registry:catalog:*"
        m = re.match(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)/", path)
        return f"repository:{m.group(1)}:pull,push" if m else ""

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""  # drained even when refused, as servers do
        url = urllib.parse.urlsplit(h.path)
        if url.path == "/token":
            self.issue(h, urllib.parse.parse_qs(url.query))
            return
        scope = self.scope_of(url.path)
        auth = h.headers.get("Authorization", "")
        with self.lock:
            entry = self.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
            ok = entry is not None and entry[0] == scope and entry[1] > 0
            if ok and entry is not None:
                entry[1] -= 1
            if not ok and h.command == "PUT" and "/blobs/uploads/" in url.path:
                self.unauthorized_puts += 1
        if not ok:
            challenge = f'Bearer realm="http://{self.host}/token",service="ocigc-test"'
            if scope:
                challenge += f',scope="{scope}"'
            self.reply(h, 401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                       b'{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}')
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "authorization", "connection")}
        upstream = requests.request(h.command, f"{self.upstream.url}{h.path}", headers=headers, data=body,
                                    allow_redirects=False, proxies=NO_PROXY, timeout=60)
        out = {k: v for k, v in upstream.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
        if "Location" in out:
            out["Location"] = out["Location"].replace(self.upstream.url, f"http://{self.host}")
        self.reply(h, upstream.status_code, out, b"" if h.command == "HEAD" else upstream.content,
                   length=int(upstream.headers.get("Content-Length") or len(upstream.content)))

    def issue(self, h: http.server.BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        want = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        if h.headers.get("Authorization") != want:
            self.reply(h, 401, {}, b"")
            return
        scope = (query.get("scope") or [""])[0]
        with self.lock:
            self.token_requests += 1
            token = f"tok{self.token_requests}"
            self.tokens[token] = [scope, self.budget]
        self.reply(h, 200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode())

    @staticmethod
    def reply(h: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes,
              length: int | None = None) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)


@pytest.fixture
def token_proxy(registry_factory: Callable[..., RegistryServer]) -> Iterator[TokenProxy]:
    proxy = TokenProxy(registry_factory(), ("tokenuser", "tokenpass"), budget=5)
    try:
        yield proxy
    finally:
        proxy.close()


def test_bearer_token_auth_with_tokens_expiring_mid_upload(token_proxy: TokenProxy, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    token = base64.b64encode(b"tokenuser:tokenpass").decode()
    (config / "config.json").write_text(json.dumps({"auths": {token_proxy.host: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    src = tmp_path / "src"
    want = {}
    for repo in ("one", "two"):
        b = LayoutBuilder(src / repo)
        img = b.image("v1", [os.urandom(64 * 1024) for _ in range(6)] + [b"shared layer"])
        b.save()
        want[repo] = img["digest"]
    plan = migrate(str(src), f"{token_proxy.host}/tok", options(jobs=2, verify=True))
    assert not plan.failed and not plan.verify_errors, [r.failed for r in plan.failed]
    assert token_proxy.unauthorized_puts > 0  # uploads met an expired token mid-way and were restarted
    assert token_proxy.token_requests > 2  # one token per repository, renewed as they expired
    for repo, digest in want.items():
        assert _head_digest(token_proxy.upstream, f"tok/{repo}", "v1") == digest
