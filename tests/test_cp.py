"""cp: one reference between layouts and the real registry of the harness (distribution), digests kept.

Layouts come from umoci and skopeo and the hand-made oras fixture with a referrer chain; the registry
side is read back by oras-py and skopeo, independent clients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness.servers import RegistryServer
from tests.harness.tools import oras_registry, skopeo_copy, skopeo_inspect, umoci_image
from tests.kit.cli import run
from tests.kit.layouts import LAYOUTS, copy_layout

REF_NAME = "org.opencontainers.image.ref.name"


def _index(layout: Path) -> list[dict[str, Any]]:
    return list(json.loads((layout / "index.json").read_text())["manifests"])


def _tags(layout: Path) -> dict[str, str]:
    return {e["annotations"][REF_NAME]: e["digest"] for e in _index(layout)
            if REF_NAME in (e.get("annotations") or {})}


def test_layout_registry_layout_round_trip_keeps_digests_and_renames_tags(
        registry: RegistryServer, tmp_path: Path) -> None:
    src = tmp_path / "umoci"
    digest = umoci_image(src, "v1", {"etc/hello.txt": b"hello cp\n"})
    r = run(["cp", f"{src}:v1", f"{registry.host}/cp/app:v2", "--plain-http", "--verify"])
    assert r.code == 0, r.stderr
    assert f"digest {digest}" in r.stdout
    inspected = skopeo_inspect(f"docker://{registry.ref('cp/app', 'v2')}")
    assert inspected["Digest"] == digest
    back = tmp_path / "back"
    r = run(["cp", f"{registry.host}/cp/app:v2", f"{back}:v3", "--plain-http", "--json"])
    assert r.code == 0, r.stderr
    assert r.json()["copied"]["digest"] == digest and r.json()["copied"]["tag"] == "v3"
    assert _tags(back) == {"v3": digest}
    # the manifest bytes are the source's
    hexd = digest.split(":", 1)[1]
    assert (back / "blobs" / "sha256" / hexd).read_bytes() == (src / "blobs" / "sha256" / hexd).read_bytes()
    # by digest, without a tag: untagged in a layout; the tag of the destination is optional
    by_digest = tmp_path / "bydigest"
    r = run(["cp", f"{src}@{digest}", str(by_digest)])
    assert r.code == 0, r.stderr
    assert [(e["digest"], REF_NAME in (e.get("annotations") or {})) for e in _index(by_digest)] == [(digest, False)]
    # a rename within one layout (oras cp L:v1 L:v9)
    r = run(["cp", f"{src}:v1", f"{src}:v9"])
    assert r.code == 0, r.stderr
    assert _tags(src) == {"v1": digest, "v9": digest}


def test_skopeo_layout_to_registry_and_no_tag_keeps_the_source_tag(registry: RegistryServer, tmp_path: Path) -> None:
    umoci = tmp_path / "u"
    umoci_image(umoci, "base", {"a.txt": b"a"})
    skopeo = tmp_path / "s"
    skopeo_copy(f"oci:{umoci}:base", f"oci:{skopeo}:latest")
    digest = _tags(skopeo)["latest"]
    r = run(["cp", f"{skopeo}:latest", f"{registry.host}/cp/skopeo", "--plain-http"])
    assert r.code == 0, r.stderr
    assert skopeo_inspect(f"docker://{registry.ref('cp/skopeo', 'latest')}")["Digest"] == digest


def _copy_fixture(tmp_path: Path) -> Path:
    lay = tmp_path / "oras"
    copy_layout(LAYOUTS / "oras-artifact", lay)
    (lay / "EXPECT.json").unlink()
    return lay


def test_cp_r_carries_the_signature_chain_and_plain_cp_does_not(registry: RegistryServer, tmp_path: Path) -> None:
    lay = _copy_fixture(tmp_path)
    entries = _index(lay)
    subject = _tags(lay)["v1"]
    referrers = {e["digest"] for e in entries if REF_NAME not in (e.get("annotations") or {})}
    assert len(referrers) == 2
    plain = tmp_path / "plain"
    r = run(["cp", f"{lay}:v1", f"{plain}:v1"])
    assert r.code == 0, r.stderr
    assert {e["digest"] for e in _index(plain)} == {subject}
    r = run(["cp", "-r", f"{lay}:v1", f"{registry.host}/cp/signed:v1", "--plain-http", "--json"])
    assert r.code == 0, r.stderr
    assert set(r.json()["copied"]["referrers"]) == referrers
    # the registry lists the SBOM as a referrer of v1 (API or fallback tag), read by oras-py
    client = oras_registry(registry)
    status, body, _ = registry.get(f"/v2/cp/signed/referrers/{subject}",
                                   headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    if status != 200:
        tag = "sha256-" + subject.split(":", 1)[1]
        listed = client.get_manifest(registry.ref("cp/signed", tag))
    else:
        listed = json.loads(body)
    assert len(listed["manifests"]) == 1
    # registry -> layout with -r: the whole chain comes back, digests kept
    back = tmp_path / "back"
    r = run(["cp", "-r", f"{registry.host}/cp/signed:v1", f"{back}:v1", "--plain-http"])
    assert r.code == 0, r.stderr
    got = {e["digest"] for e in _index(back)}
    assert got == {subject} | referrers, got
    r = run(["cp", f"{registry.host}/cp/signed:v1", f"{tmp_path / 'bare'}:v1", "--plain-http"])
    assert r.code == 0, r.stderr
    assert {e["digest"] for e in _index(tmp_path / "bare")} == {subject}


def test_cp_usage_errors(tmp_path: Path) -> None:
    lay = _copy_fixture(tmp_path)
    r = run(["cp", str(lay), str(tmp_path / "x")])
    assert r.code == 2 and "name the tag or digest" in r.stderr, r.stderr
    r = run(["cp", f"{lay}:nope", str(tmp_path / "x")])
    assert r.code == 1 and "no tag 'nope'" in r.stderr, r.stderr
