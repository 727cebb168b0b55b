"""migrate without a registry: the ref-name rule, endpoints, filters, credentials lookup, and
layout -> layout copies of the real fixtures (local disk and an s3fs mount)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ocigc.oci.referrers import referrers_tag
from ocigc.transfer.migrate.execute import migrate
from ocigc.transfer.migrate.model import PRESENT, Filters, InvalidTags, MigrateOptions, map_tag, parse_endpoint
from ocigc.transfer.registry import RegistryClient
from ocigc.transfer.registry_model import RegistryOptions
from tests.kit.cli import run
from tests.kit.layouts import LAYOUTS, LayoutBuilder, copy_layout
from tests.kit.tree import snapshot

REF_NAME = "org.opencontainers.image.ref.name"
#: Fixtures copied into the test roots (every valid layout kind but garbage).
ROOT_FIXTURES = ["multiarch", "docker-types", "oras-artifact", "oci-artifact-manifest", "refnames", "sha512",
                 "skopeo-copy", "umoci-tags", "umoci-emptied"]


# ------------------------------------------------------------------------------------ ref names
@pytest.mark.parametrize(("name", "tag"), [
    ("latest", "latest"),
    ("v1.2.3-rc_1", "v1.2.3-rc_1"),
    ("_x", "_x"),
    ("a" * 128, "a" * 128),
    ("docker.io/library/alpine:3.19", "3.19"),
    ("registry.example.com:5000/team/app:v1", "v1"),
    ("app:latest", "latest"),
    ("docker.io/library/alpine:3.19@sha256:" + "a" * 64, "3.19"),
])
def test_map_tag_keeps_valid_tags_and_takes_the_tag_of_full_references(name: str, tag: str) -> None:
    m = map_tag(name)
    assert (m.tag, m.error) == (tag, None)
    assert (m.note is None) == (name == tag)


@pytest.mark.parametrize("name", ["team/app", "localhost:5000/app", "a" * 129, "-lead", ".dot", "with space",
                                  "x:bad tag"])
def test_map_tag_refuses_by_default_and_says_what_to_do(name: str) -> None:
    m = map_tag(name)
    assert m.tag is None and m.error is not None
    assert repr(name) in m.error and "--invalid-tags" in m.error and "--exclude" in m.error


def test_map_tag_digest_and_sanitize_modes() -> None:
    assert map_tag("team/app", InvalidTags.digest).tag is None
    assert "by digest" in (map_tag("team/app", InvalidTags.digest).note or "")
    assert map_tag("team/app", InvalidTags.sanitize).tag == "team-app"
    assert map_tag("localhost:5000/app", InvalidTags.sanitize).tag == "localhost-5000-app"
    assert map_tag("-lead", InvalidTags.sanitize).tag == "_-lead"
    assert map_tag("x:bad tag", InvalidTags.sanitize).tag == "bad-tag"
    long = map_tag("b/" * 100, InvalidTags.sanitize).tag
    assert long is not None and len(long) == 128 and long.startswith("b-b-")
    assert long != map_tag("b/" * 99 + "c/", InvalidTags.sanitize).tag  # the hash suffix tells them apart
    # A reference by digest names no tag: never refused, pushed by digest.
    m = map_tag("docker.io/library/alpine@sha256:" + "a" * 64)
    assert m.tag is None and m.error is None and "digest" in (m.note or "")


def test_referrers_tag_follows_the_distribution_spec() -> None:
    assert referrers_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    assert referrers_tag("sha512:" + "b" * 128) == "sha512-" + "b" * 64


# ------------------------------------------------------------------------------------ endpoints
@pytest.mark.parametrize(("text", "kind", "host", "prefix"), [
    ("127.0.0.1:5000/mirror", "registry", "127.0.0.1:5000", "mirror"),
    ("127.0.0.1:5000", "registry", "127.0.0.1:5000", ""),
    ("registry.example.com/team/app", "registry", "registry.example.com", "team/app"),
    ("localhost/x", "registry", "localhost", "x"),
    ("docker://somehost/x", "registry", "somehost", "x"),
    ("s3/", "layout", "", ""),
    ("./out.d", "layout", "", ""),
    ("/mnt/bucket", "layout", "", ""),
    ("oci:weird.name:5/x", "layout", "", ""),
])
def test_parse_endpoint(text: str, kind: str, host: str, prefix: str) -> None:
    ep = parse_endpoint(text)
    assert (ep.kind, ep.host, ep.prefix) == (kind, host, prefix)


def test_an_existing_directory_is_a_layout_even_when_it_looks_like_a_host(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "example.com").mkdir()
    assert parse_endpoint("example.com").kind == "layout"
    assert parse_endpoint("example.org/x").kind == "registry"


@pytest.mark.parametrize("text", ["127.0.0.1:5000/app:v1", "127.0.0.1:5000/App", "127.0.0.1:5000/a@sha256:00"])
def test_registry_endpoint_needs_a_repository_prefix_without_tag(text: str) -> None:
    from ocigc.errors import UsageError

    with pytest.raises(UsageError):
        parse_endpoint(text)


# -------------------------------------------------------------------------------------- filters
def test_filters_on_repositories_and_tags() -> None:
    f = Filters(include=("team/*",), exclude=("team/old",))
    assert f.repo_selected("team/app") and not f.repo_selected("team/old") and not f.repo_selected("other")
    assert f.tag_selected("team/app", "anything") and f.untagged_selected("team/app")
    t = Filters(include=("app:v*",), exclude=("app:v1-rc*",))
    assert t.repo_selected("app") and not t.repo_selected("web")
    assert t.tag_selected("app", "v2") and not t.tag_selected("app", "latest") and not t.tag_selected("app", "v1-rc1")
    assert not t.untagged_selected("app")  # only some tags: untagged entries follow only as referrers
    none = Filters()
    assert none.repo_selected("x") and none.tag_selected("x", "y") and none.untagged_selected("x")
    x = Filters(exclude=("*:sha256-*",))
    assert x.tag_selected("a", "v1") and not x.tag_selected("a", "sha256-" + "0" * 64)


# ---------------------------------------------------------------------------------- credentials
def _config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    d = tmp_path / "docker"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(doc))
    return d


def test_credentials_from_docker_config_auths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(b"u:p").decode()
    d = _config(tmp_path, {"auths": {"https://reg.example.com:5000": {"auth": auth}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    assert RegistryClient("reg.example.com:5000")._load_creds() == auth
    assert RegistryClient("other.example.com")._load_creds() is None
    # --docker-config wins over DOCKER_CONFIG, and takes a file or a directory.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"auths": {"other.example.com": {"username": "a", "password": "b"}}}))
    client = RegistryClient("other.example.com", RegistryOptions(docker_config=str(other)))
    assert client._load_creds() == base64.b64encode(b"a:b").decode()


def test_credentials_from_a_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-ocigctest"
    helper.write_text("#!/bin/sh\nread server\nprintf "
                      "'{\"ServerURL\":\"%s\",\"Username\":\"helper-user\",\"Secret\":\"s3cret\"}' \"$server\"\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    want = base64.b64encode(b"helper-user:s3cret").decode()
    d = _config(tmp_path, {"credHelpers": {"reg.example.com": "ocigctest"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    assert RegistryClient("reg.example.com")._load_creds() == want
    assert RegistryClient("elsewhere.example.com")._load_creds() is None
    d = _config(tmp_path, {"credsStore": "ocigctest"})
    assert RegistryClient("elsewhere.example.com")._load_creds() == want


# ------------------------------------------------------------------------------ layout -> layout
def _root(tmp_path: Path, names: list[str] = ROOT_FIXTURES, nested: bool = True) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    for name in names:
        copy_layout(LAYOUTS / name, root / name)
        (root / name / "EXPECT.json").unlink()
    if nested:
        (root / "team").mkdir()
        copy_layout(LAYOUTS / "multiarch", root / "team" / "app")
        (root / "team" / "app" / "EXPECT.json").unlink()
    return root


def _entries(layout: Path) -> list[dict[str, Any]]:
    return json.loads((layout / "index.json").read_text()).get("manifests") or []


def _layouts(root: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("oci-layout") if "blobs" not in p.parts)


def test_layout_root_to_layout_root_keeps_every_entry_and_digest(tmp_path: Path) -> None:
    src = _root(tmp_path)
    dst = tmp_path / "dst"
    plan = migrate(str(src), str(dst), MigrateOptions(verify=True))
    assert not plan.failed and not plan.verify_errors and plan.aborted is None
    assert _layouts(dst) == _layouts(src)
    for rel in _layouts(src):
        assert _entries(dst / rel) == _entries(src / rel), rel  # same entries, same order, every field
    r = run(["check", dst])
    assert r.code == 0, str(r)
    # A rerun writes nothing.
    again = migrate(str(src), str(dst), MigrateOptions())
    stats = again.stats()
    assert stats["blobs_uploaded"] == 0 and stats["manifests_written"] == 0 and stats["tags_written"] == 0
    assert stats["blobs_present"] == plan.stats()["blobs_uploaded"]


def test_dry_run_changes_nothing_and_prints_the_plan(tmp_path: Path) -> None:
    src = _root(tmp_path, ["multiarch", "umoci-tags"])
    dst = tmp_path / "dst"
    copy_layout(LAYOUTS / "umoci-tags", dst / "umoci-tags")
    before = snapshot(dst)
    r = run(["migrate", src, dst, "--dry-run"])
    assert r.code == 0, str(r)
    assert snapshot(dst) == before
    assert "dry run" in r.stdout and "multiarch" in r.stdout
    j = run(["migrate", src, dst, "--dry-run", "--json"]).json()
    by_repo = {x["repository"]: x for x in j["repositories"]}
    assert by_repo["umoci-tags"]["blobs"]["copy"] == 0 and by_repo["umoci-tags"]["blobs"]["present"] > 0
    assert {t["state"] for t in by_repo["umoci-tags"]["tags"]} == {PRESENT}
    assert by_repo["multiarch"]["blobs"]["present"] == 0 and by_repo["multiarch"]["manifests"]["copy"] == 4
    assert j["dry_run"] is True and j["command"] == "migrate"


def test_tag_filters_copy_the_closure_and_referrers_of_what_is_selected(tmp_path: Path) -> None:
    b = LayoutBuilder(tmp_path / "src" / "app")
    img = b.image("v1", [b"layer-one"])
    b.image("v2", [b"layer-two"])
    sig = b.referrer(img, b"signature of v1")
    b.add(sig)
    b.add(b.referrer(b.manifest([b"other"]), b"signature of something not copied"))
    b.save()
    plan = migrate(str(tmp_path / "src"), str(tmp_path / "dst"), MigrateOptions(include=("app:v1",)))
    assert not plan.failed
    got = _entries(tmp_path / "dst" / "app")
    assert [(e.get("annotations") or {}).get(REF_NAME) for e in got] == ["v1", None]
    assert [e["digest"] for e in got] == [img["digest"], sig["digest"]]
    assert not (tmp_path / "dst" / "app" / "blobs" / "sha256" /
                b.blob(b"layer-two", "x", write=False)["digest"].split(":")[1]).exists()
    r = run(["check", tmp_path / "dst"])  # the referrer came with its blobs
    assert r.code == 0, str(r)


def test_merge_into_an_existing_layout_moves_tags_and_keeps_the_rest(tmp_path: Path) -> None:
    src = LayoutBuilder(tmp_path / "src")
    new_v1 = src.image("v1", [b"new"])
    src.save()
    dst = LayoutBuilder(tmp_path / "dst")
    dst.image("v1", [b"old"])
    keep = dst.image("keep", [b"kept"])
    dst.save()
    r = run(["migrate", tmp_path / "src", tmp_path / "dst", "--json"])
    assert r.code == 0, str(r)
    got = {(e.get("annotations") or {}).get(REF_NAME): e["digest"] for e in _entries(tmp_path / "dst")}
    assert got == {"v1": new_v1["digest"], "keep": keep["digest"]}
    assert r.json()["repositories"][0]["tags"][0]["state"] == "move"


def test_layout_destination_on_s3fs(layout_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """layout_dir runs twice: local disk and a fresh directory of an s3fs mount.

    One host: the lock protocol's cross-host settle delay (2 s on FUSE) is not what this tests."""
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.2")
    src = _root(tmp_path, ["oras-artifact"], nested=False)
    plan = migrate(str(src), str(layout_dir), MigrateOptions(verify=True))
    assert not plan.failed and not plan.verify_errors
    for rel in _layouts(src):
        assert _entries(layout_dir / rel) == _entries(src / rel)
    # The destination holds the shared lock during the run and nothing after it.
    assert not list((layout_dir / "oras-artifact" / ".ocigc" / "locks").glob("*"))


def test_a_short_blob_in_the_destination_is_copied_again(layout_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob cut short under its digest name in the destination layout (a writer killed half-way)
    is not taken as present by its name: migrate copies it again, and the result verifies."""
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.2")
    b = LayoutBuilder(tmp_path / "src" / "app")
    layer = os.urandom(3 * 1024 * 1024)
    b.image("v1", [layer])
    b.save()
    assert migrate(str(tmp_path / "src"), str(layout_dir), MigrateOptions()).stats()["blobs_uploaded"] > 0
    blob = layout_dir / "app" / "blobs" / "sha256" / b.blob(layer, "x", write=False)["digest"].split(":")[1]
    blob.write_bytes(layer[:1_179_648])
    assert run(["check", layout_dir]).code == 1
    plan = migrate(str(tmp_path / "src"), str(layout_dir), MigrateOptions(verify=True))
    assert not plan.failed and not plan.verify_errors
    assert plan.stats()["blobs_uploaded"] == 1
    assert any("1179648 bytes" in n for n in plan.repos[0].notes), plan.repos[0].notes
    assert blob.read_bytes() == layer
    r = run(["check", "--verify-digests", layout_dir])
    assert r.code == 0, str(r)


def test_a_source_that_is_no_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = run(["migrate", tmp_path / "empty", tmp_path / "dst"])
    assert r.code == 1 and "no OCI image layout found" in r.stderr
    r = run(["migrate", tmp_path / "empty", tmp_path / "empty"])
    assert r.code == 2 and "same" in r.stderr


# ------------------------------------------------- a registry source with the referrers API (a stub)
class _StubRegistry:
    """Just enough of RegistryClient for a registry source: a registry *with* the referrers API
    (the harness's distribution 2.8 has none), serving a LayoutBuilder's blobs."""

    host = "stub.example:5000"

    def __init__(self, root: Path, tags: dict[str, str]) -> None:
        self.root = root
        self.tag_map = tags
        self.referrers_api = True

    def _raw(self, digest: str) -> bytes:
        alg, hexd = digest.split(":")
        return (self.root / "blobs" / alg / hexd).read_bytes()

    def tags(self, repo: str) -> list[str]:
        return list(self.tag_map)

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, Any]:
        from ocigc.digest import Digest

        digest = self.tag_map.get(ref, ref)
        raw = self._raw(digest)
        return raw, json.loads(raw)["mediaType"], Digest(digest)

    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]]:
        out = []
        for p in (self.root / "blobs" / "sha256").iterdir():
            try:
                doc = json.loads(p.read_bytes())
            except ValueError:
                continue
            if isinstance(doc, dict) and (doc.get("subject") or {}).get("digest") == digest:
                out.append({"mediaType": doc["mediaType"], "digest": f"sha256:{p.name}", "size": p.stat().st_size,
                            "artifactType": doc.get("artifactType")})
        return out

    def read_blob(self, repo: str, digest: str) -> bytes:
        return self._raw(digest)

    def open_blob(self, repo: str, digest: str) -> Any:
        import io

        data = self._raw(digest)
        stream = io.BytesIO(data)
        stream.size = len(data)  # type: ignore[attr-defined]
        return stream


def test_registry_source_with_a_referrers_api_brings_referrers_as_untagged_entries(tmp_path: Path) -> None:
    from ocigc.storage.local import LocalStorage
    from ocigc.transfer.migrate.execute import execute
    from ocigc.transfer.migrate.model import MigratePlan, RepoPlan
    from ocigc.transfer.migrate.plan import _plan_repo
    from ocigc.transfer.migrate.sources import LayoutDest, RegistrySource

    b = LayoutBuilder(tmp_path / "reg")
    img = b.image("v1", [b"layer"])
    sig = b.referrer(img, b"a signature")
    sig_of_sig = b.referrer(sig, b"a countersignature")
    b.save()
    stub = _StubRegistry(tmp_path / "reg", {"v1": img["digest"]})
    rp = RepoPlan("app", "app", f"{stub.host}/app", str(tmp_path / "out"))
    rp.source = RegistrySource(stub, "app", 2)  # type: ignore[arg-type]
    rp.dest = LayoutDest(LocalStorage(tmp_path / "out"))
    plan = MigratePlan(parse_endpoint(f"{stub.host}/app"), parse_endpoint(str(tmp_path / "out")), MigrateOptions(),
                       repos=[_plan_repo(rp, MigrateOptions(), 2)])
    assert rp.ok, rp.errors
    assert [(e.name, e.digest, e.referrer) for e in rp.entries] == [
        ("v1", img["digest"], False), (None, sig["digest"], True), (None, sig_of_sig["digest"], True)]
    assert rp.order.index(img["digest"]) < rp.order.index(sig["digest"]) < rp.order.index(sig_of_sig["digest"])
    execute(plan)
    assert not plan.failed
    got = _entries(tmp_path / "out")
    assert [e["digest"] for e in got] == [img["digest"], sig["digest"], sig_of_sig["digest"]]
    assert got[1]["artifactType"] == "application/vnd.example.sig" and "annotations" not in got[1]
    assert run(["check", tmp_path / "out"]).code == 0


# ---------------------------------------------------------------------------- TLS: --insecure
@pytest.fixture
def self_signed_https(tmp_path: Path) -> Any:
    """An HTTPS server with a self-signed certificate that answers GET /v2/ with {} (a registry ping)."""
    import datetime
    import http.server
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_insecure_skips_certificate_verification_and_the_default_does_not(
        self_signed_https: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ocigc.transfer.registry_model import RegistryUnavailable

    with pytest.raises(RegistryUnavailable, match=r"certificate verify failed.*--insecure"):
        RegistryClient(self_signed_https, RegistryOptions(plain_http=False, retries=0)).ping()
    # Even with REQUESTS_CA_BUNDLE set (it overrides a session-wide verify=False in requests).
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    RegistryClient(self_signed_https, RegistryOptions(insecure=True, retries=0)).ping()
