"""Referrer tags follow their subject, by one rule everywhere (docs/design.md, "Referrers";
``ocigc.oci.referrers``, ``ocigc.gc.cascade``): the referrers tag schema ``<alg>-<hex>`` (hex cut
to 64 characters) and cosign's ``<alg>-<hex>.sig|.att|.sbom`` are removed with their subject by
``delete``, ``sweep --untagged`` and a retention policy alike; any other suffix is an ordinary tag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ocigc.digest import Digest
from ocigc.oci.referrers import is_referrer_tag, referrers_tag, tag_names_subject, tag_subject
from tests.kit.cli import OK, run
from tests.kit.layouts import OCI_INDEX, LayoutBuilder, blob_path
from tests.kit.tree import age

HOW = ["delete", "sweep-untagged", "retention", "retention-untagged"]


def _tags(root: Path) -> set[str | None]:
    doc = json.loads((root / "index.json").read_text())
    return {(m.get("annotations") or {}).get("org.opencontainers.image.ref.name") for m in doc["manifests"]}


def _build(root: Path, subject_tagged: bool) -> dict[str, Any]:
    b = LayoutBuilder(root)
    m1 = b.manifest([b"subject layer"], config=b'{"k":"m1"}')
    b.add(m1, "v1" if subject_tagged else None)
    m2 = b.image("v2", [b"other layer"], config=b'{"k":"m2"}')
    hex1, hex2 = m1["digest"].split(":")[1], m2["digest"].split(":")[1]
    sig = b.manifest([b"signature of m1"], config=b'{"k":"sig"}')
    b.add(sig, f"sha256-{hex1}.sig")
    att = b.manifest([b"attestation of m1"], config=b'{"k":"att"}')
    b.add(att, f"sha256-{hex1}.att")
    refs = b.blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {k: sig[k] for k in ("mediaType", "digest", "size")}]}).encode(), OCI_INDEX)
    b.add(refs, f"sha256-{hex1}")
    backup = b.manifest([b"a backup, not a referrer"], config=b'{"k":"backup"}')
    b.add(backup, f"sha256-{hex1}.backup")
    sig2 = b.manifest([b"signature of m2"], config=b'{"k":"sig2"}')
    b.add(sig2, f"sha256-{hex2}.sig")
    b.save()
    age(root)
    return {"m1": m1, "sig": sig, "att": att, "refs": refs, "backup": backup, "sig2": sig2, "hex1": hex1, "hex2": hex2}


@pytest.mark.parametrize("how", HOW)
def test_referrer_tags_go_with_their_subject_everywhere(tmp_path: Path, how: str) -> None:
    root = tmp_path / "repos"
    lay = root / "app"
    d = _build(lay, subject_tagged=how in ("delete", "retention"))
    if how == "delete":
        r = run(["delete", "--yes", f"{lay}:v1"])
    elif how == "sweep-untagged":
        r = run(["sweep", "--untagged", "--grace", "0s", "--yes", lay])
    else:
        policy = tmp_path / "policy.toml"
        what = 'delete_tags = "v1"' if how == "retention" else 'untagged = "delete"'
        policy.write_text(f'[[rule]]\nrepositories = "**"\n{what}\ngrace = "0s"\n')
        r = run(["sweep", "--policy", policy, "--grace", "0s", "--yes", root])
    assert r.code == OK, str(r)
    assert _tags(lay) == {"v2", f"sha256-{d['hex1']}.backup", f"sha256-{d['hex2']}.sig"}
    for gone in ("m1", "sig", "att", "refs"):
        assert not blob_path(lay, d[gone]["digest"]).exists(), gone
    for kept in ("backup", "sig2"):
        assert blob_path(lay, d[kept]["digest"]).exists(), kept
    assert run(["check", lay]).code == OK


def test_keep_referrers_keeps_referrer_tags(tmp_path: Path) -> None:
    lay = tmp_path / "app"
    d = _build(lay, subject_tagged=True)
    r = run(["delete", "--yes", "--keep-referrers", f"{lay}:v1"])
    assert r.code == OK, str(r)
    assert f"sha256-{d['hex1']}.sig" in _tags(lay) and f"sha256-{d['hex1']}" in _tags(lay)


def test_tag_rules() -> None:
    d256 = Digest("sha256:" + "ab" * 32)
    d512 = Digest("sha512:" + "cd" * 64)
    assert referrers_tag(d512) == "sha512-" + "cd" * 32
    for name in (referrers_tag(d256), referrers_tag(d256) + ".sig", referrers_tag(d256) + ".att",
                 referrers_tag(d256) + ".sbom"):
        assert is_referrer_tag(name) and tag_names_subject(name, d256) and tag_subject(name, {d256, d512}) == d256
    for name in (referrers_tag(d512), referrers_tag(d512) + ".sig", "sha512-" + "cd" * 64):
        assert tag_names_subject(name, d512) and tag_subject(name, {d256, d512}) == d512
    for name in (referrers_tag(d256) + ".backup", "sha256-" + "ab" * 31, "latest", None, "sha1-" + "ab" * 20,
                 "sha256-" + "AB" * 32):
        assert not tag_names_subject(name, d256) and tag_subject(name, {d256}) is None
    assert not tag_names_subject(referrers_tag(d256), Digest("sha256:" + "ef" * 32))
