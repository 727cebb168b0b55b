"""Interoperability with the real tools: layouts made by umoci and skopeo, changed by ``ocigc
delete``/``sweep``, must still open with ``umoci ls``/``umoci unpack --rootless`` and copy with
``skopeo copy``; and ``ocigc sweep`` is compared with ``umoci gc`` on identical copies: equal on
plain images, and every difference asserted (docs/umoci-gc-differences.md lists them)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.tools import skopeo_copy, skopeo_inspect, umoci_gc, umoci_image, umoci_tags
from tests.kit.cli import INTEGRITY, OK, run
from tests.kit.layouts import LAYOUTS, OCI_LAYER, LayoutBuilder, copy_layout
from tests.kit.tree import age, present

FILES = {"base": {"etc/base.txt": b"base\n"}, "v1": {"etc/v1.txt": b"one\n"}, "v2": {"etc/v2.txt": b"two\n"}}


def umoci(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["umoci", *args], capture_output=True, text=True, check=check, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``umoci``: base <- v1 <- v2 (shared layers) plus umoci's own garbage; ``skopeo``: the three
    tags copied by ``skopeo copy oci:A:t oci:B:t`` (shared layers stored once, no garbage)."""
    root = tmp_path_factory.mktemp("interop")
    a = root / "umoci"
    umoci_image(a, "base", FILES["base"])
    umoci_image(a, "v1", FILES["v1"], base="base")
    umoci_image(a, "v2", FILES["v2"], base="v1", config_cmd=["/bin/sh"])
    umoci("tag", "--image", f"{a}:v2", "latest")
    b = root / "skopeo"
    for tag in ("base", "v1", "v2"):
        skopeo_copy(f"oci:{a}:{tag}", f"oci:{b}:{tag}")
    return {"umoci": a, "skopeo": b}


def twin(src: Path, dst: Path) -> tuple[Path, Path]:
    """Two identical, aged copies: one for ``umoci gc``, one for ``ocigc sweep``."""
    u = copy_layout(src, dst / "umoci-gc")
    o = copy_layout(src, dst / "ocigc")
    age(u)
    age(o)
    return u, o


def unpack(layout: Path, tag: str, dst: Path) -> Path:
    umoci("unpack", "--rootless", "--image", f"{layout}:{tag}", str(dst))
    return dst / "rootfs"


# --- ocigc's changes keep the layout usable by the tools -------------------------------------------------
@pytest.mark.parametrize("maker", ["umoci", "skopeo"])
def test_delete_and_sweep_leave_remaining_tags_usable(made: dict[str, Path], tmp_path: Path, maker: str) -> None:
    lay = copy_layout(made[maker], tmp_path / "lay")
    age(lay)
    shared = present(lay)
    r = run(["delete", "--yes", f"{lay}:v1"], mode="proc")
    assert r.code == OK, r
    r = run(["sweep", "--grace", "0", "--yes", lay], mode="proc")
    assert r.code == OK, r
    expected_tags = ["base", "v2", "latest"] if maker == "umoci" else ["base", "v2"]
    assert umoci_tags(lay) == expected_tags
    rootfs = unpack(lay, "v2", tmp_path / "bundle")
    for files in FILES.values():  # v2 still has v1's layer (shared), though the v1 tag is gone
        for rel, data in files.items():
            assert (rootfs / rel).read_bytes() == data
    assert not (unpack(lay, "base", tmp_path / "bundle-base") / "etc" / "v1.txt").exists()
    skopeo_copy(f"oci:{lay}:v2", f"oci:{tmp_path / 'copy'}:v2")
    assert skopeo_inspect(f"oci:{lay}:base")["Layers"]
    assert umoci_tags(tmp_path / "copy") == ["v2"]
    r = run(["check", "--json", "--verify-digests", lay])
    assert r.code == OK and not any(p["code"] == "unreferenced" for p in r.json()["layouts"][0]["problems"])
    assert present(lay) < shared  # v1's own manifest and config went (and umoci's garbage)
    umoci("rm", "--image", f"{lay}:base")  # umoci can still change what ocigc rewrote
    assert run(["sweep", "--grace", "0", lay]).code == OK
    assert run(["check", lay]).code == OK


def test_ocigc_reads_what_umoci_rm_writes(made: dict[str, Path], tmp_path: Path) -> None:
    lay = copy_layout(made["umoci"], tmp_path / "lay")
    for tag in ("base", "v1", "v2", "latest"):
        umoci("rm", "--image", f"{lay}:{tag}")
    assert json.loads((lay / "index.json").read_text())["manifests"] is None
    age(lay)
    assert run(["tags", "--all", "--json", lay]).json()["tags"] == []
    r = run(["sweep", "--grace", "0", "--json", lay])
    assert r.code == OK and present(lay) == set()
    assert umoci_tags(lay) == []
    umoci_image(lay, "again", FILES["base"])  # umoci writes on after ocigc's index.json rewrite (if any)
    assert run(["check", lay]).code == OK


# --- ocigc sweep vs umoci gc: equal on plain images --------------------------------------------------------
@pytest.mark.parametrize("maker", ["umoci", "skopeo"])
def test_sweep_equals_umoci_gc_on_plain_images(made: dict[str, Path], tmp_path: Path, maker: str) -> None:
    u, o = twin(made[maker], tmp_path)
    assert umoci_gc(u).returncode == 0
    assert run(["sweep", "--grace", "0", o]).code == OK
    assert present(u) == present(o)
    if maker == "umoci":
        assert present(o) < present(made[maker])  # there was garbage, and both removed the same
    # then one tag less: `umoci rm` on both copies, each collector on its own copy
    for lay in (u, o):
        umoci("rm", "--image", f"{lay}:v1")
    assert umoci_gc(u).returncode == 0
    assert run(["sweep", "--grace", "0", o]).code == OK
    assert present(u) == present(o)
    # and `ocigc delete` removes what `umoci rm` + `umoci gc` remove
    for tag in ("v2", "latest") if maker == "umoci" else ("v2",):
        umoci("rm", "--image", f"{u}:{tag}")
    assert umoci_gc(u).returncode == 0
    refs = [f"{o}:v2", f"{o}:latest"] if maker == "umoci" else [f"{o}:v2"]
    assert run(["delete", "--yes", *refs]).code == OK
    assert present(u) == present(o) and umoci_tags(u) == umoci_tags(o) == ["base"]


def test_sweep_equals_umoci_gc_through_nested_indexes(tmp_path: Path) -> None:
    u, o = twin(LAYOUTS / "multiarch", tmp_path)
    for lay in (u, o):
        (lay / "EXPECT.json").unlink()
        LayoutBuilder(lay).blob(b"orphan", OCI_LAYER)
        age(lay)
    assert umoci_gc(u).returncode == 0
    assert run(["sweep", "--grace", "0", o]).code == OK
    assert present(u) == present(o) == present(LAYOUTS / "multiarch")


# --- the differences (docs/umoci-gc-differences.md) --------------------------------------------------------
Pair = tuple[Path, Path, set[str], subprocess.CompletedProcess[str]]


def _pair(tmp_path: Path, build: Callable[[Path], None]) -> Pair:
    """Build a layout, copy it, run ``umoci gc`` on one copy and ``ocigc sweep --grace 0`` on the other."""
    src = tmp_path / "src"
    build(src)
    u, o = twin(src, tmp_path)
    before = present(src)
    gc = umoci_gc(u, check=False)
    r = run(["sweep", "--grace", "0", "--json", o])
    assert r.code == OK, r
    return u, o, before, gc


def test_difference_sha512_blobs(tmp_path: Path) -> None:
    junk: dict[str, str] = {}

    def build(p: Path) -> None:
        b = LayoutBuilder(p)
        b.image("v1", [b"layer"])
        junk["512"] = b.blob(b"unreachable sha512", OCI_LAYER, algorithm="sha512")["digest"]
        junk["256"] = b.blob(b"unreachable sha256", OCI_LAYER)["digest"]
        b.save()

    u, o, before, gc = _pair(tmp_path, build)
    assert gc.returncode == 0
    assert before - present(u) == {junk["256"]}  # umoci never lists blobs/sha512
    assert before - present(o) == {junk["256"], junk["512"]}
    # a reachable sha512 blob: umoci gc refuses the whole layout; ocigc marks through it
    u2, o2, before2, gc2 = _pair(tmp_path / "reachable", lambda p: shutil.copytree(LAYOUTS / "sha512", p))
    assert gc2.returncode == 1 and 'unsupported algorithm: "sha512"' in gc2.stderr
    assert present(u2) == before2
    unreachable = set(json.loads((LAYOUTS / "sha512" / "EXPECT.json").read_text())["facts"]["unreachable"])
    assert before2 - present(o2) == unreachable and all(d.startswith("sha512:") for d in unreachable)


def test_difference_unknown_json_media_type_is_scanned(tmp_path: Path) -> None:
    payload: dict[str, str] = {}

    def build(p: Path) -> None:
        b = LayoutBuilder(p)
        ref = b.blob(b"payload only a descriptor inside unknown JSON points at", "application/octet-stream")
        payload["d"] = ref["digest"]
        thing = b.blob(json.dumps({"attached": ref}).encode(), "application/vnd.example.thing+json")
        b.add(b.manifest([b"layer", thing]), "v1")
        b.save()

    u, o, before, gc = _pair(tmp_path, build)
    assert gc.returncode == 0
    assert before - present(u) == {payload["d"]}  # umoci treats the unknown type as a leaf
    assert present(o) == before
    assert run(["check", o]).code == OK


def test_difference_unknown_media_type_on_an_index_entry(tmp_path: Path) -> None:
    kids: dict[str, set[str]] = {}

    def build(p: Path) -> None:
        b = LayoutBuilder(p)
        m = dict(b.manifest([b"layer-u"]))
        m["mediaType"] = "application/x-unknown-thing"
        b.add(m, "v1")
        b.save()
        kids["v1"] = present(p) - {m["digest"]}

    u, o, before, gc = _pair(tmp_path, build)
    assert gc.returncode == 0
    assert before - present(u) == kids["v1"]  # umoci deletes the entry's config and layer
    assert present(o) == before
    assert run(["check", o]).code == OK


@pytest.mark.parametrize("name", ["docker-types", "oci-artifact-manifest"])
def test_difference_media_types_umoci_does_not_know(tmp_path: Path, name: str) -> None:
    """Docker v2 manifests/lists and OCI artifact manifests: umoci gc treats them as leaves and
    deletes their configs, layers and blobs, leaving dangling references; ocigc marks through them."""
    u, o, before, gc = _pair(tmp_path, lambda p: shutil.copytree(LAYOUTS / name, p))
    f = json.loads((LAYOUTS / name / "EXPECT.json").read_text())["facts"]
    assert gc.returncode == 0
    lost = before - present(u)
    assert lost and lost <= set(f["reachable"])
    assert present(o) == before == set(f["reachable"])
    assert run(["check", u]).code == INTEGRITY  # what umoci left behind: dangling references
    assert run(["check", o]).code == OK


def test_difference_referrers(tmp_path: Path) -> None:
    """An untagged referrer entry: both keep it. After its subject's tag is removed, umoci gc keeps
    the subject (it follows ``subject`` from the referrer root); ocigc sweep does not (a referrer
    never keeps its subject alive). ``ocigc delete`` of the subject removes the referrer too."""
    digests: dict[str, str] = {}

    def build(p: Path) -> None:
        b = LayoutBuilder(p)
        v1 = b.image("v1", [b"subject layer"])
        b.image("v2", [b"other layer"], config=b'{"os":"linux","v":2}')
        sig = b.referrer(v1, b"signature bytes")
        b.add(sig, None)
        digests.update(v1=v1["digest"], sig=sig["digest"])
        b.save()

    u, o, before, gc = _pair(tmp_path, build)
    assert gc.returncode == 0 and present(u) == present(o) == before
    for lay in (u, o):
        umoci("rm", "--image", f"{lay}:v1")
    assert umoci_gc(u).returncode == 0
    assert present(u) == before  # the referrer root keeps v1 alive in umoci
    assert run(["sweep", "--grace", "0", o]).code == OK
    assert digests["v1"] not in present(o) and digests["sig"] in present(o)
    doc = run(["check", "--json", o]).json()
    assert doc["exit_code"] == OK
    assert any(p["code"] == "external-subject" for p in doc["layouts"][0]["problems"])
    # ocigc delete: the referrer goes with its subject, unless --keep-referrers
    d1 = copy_layout(tmp_path / "src", tmp_path / "delete")
    assert run(["delete", "--yes", f"{d1}:v1"]).code == OK
    assert digests["sig"] not in present(d1) and digests["v1"] not in present(d1)
    d2 = copy_layout(tmp_path / "src", tmp_path / "keep")
    assert run(["delete", "--yes", "--keep-referrers", f"{d2}:v1"]).code == OK
    assert digests["sig"] in present(d2) and digests["v1"] not in present(d2)


def test_difference_referrer_that_is_not_an_entry(tmp_path: Path) -> None:
    sig: dict[str, str] = {}

    def build(p: Path) -> None:
        b = LayoutBuilder(p)
        v1 = b.image("v1", [b"subject layer"])
        sig["d"] = b.referrer(v1, b"orphan signature")["digest"]  # in blobs/, not in index.json
        b.save()

    u, o, _, gc = _pair(tmp_path, build)
    assert gc.returncode == 0
    assert sig["d"] not in present(u) and sig["d"] not in present(o)
    assert present(u) == present(o)  # both: garbage


def test_difference_non_digest_files(tmp_path: Path) -> None:
    garbage: dict[str, set[str]] = {}

    def build(p: Path) -> None:
        b = LayoutBuilder(p)
        b.image("v1", [b"layer"])
        garbage["g"] = {b.blob(f"garbage {i}".encode(), OCI_LAYER)["digest"] for i in range(3)}
        b.save()
        (p / "blobs" / "sha256" / "not-a-digest.tmp").write_bytes(b"someone's file")

    u, o, before, gc = _pair(tmp_path, build)
    # umoci: deletes first, then dies on the name (a partial gc, exit 1)
    assert gc.returncode == 1 and "not-a-digest.tmp" in gc.stderr and "invalid checksum digest length" in gc.stderr
    assert before - present(u) == garbage["g"]
    # ocigc: reports the file, never deletes it, exit 0
    assert before - present(o) == garbage["g"]
    for lay in (u, o):
        assert (lay / "blobs" / "sha256" / "not-a-digest.tmp").read_bytes() == b"someone's file"
    r = run(["sweep", "--grace", "0", "--json", o])
    assert any("not-a-digest.tmp" in line for line in r.json()["layouts"][0]["plan"]["reported"])


def test_difference_writers_leftovers(tmp_path: Path) -> None:
    def build(p: Path) -> None:
        b = LayoutBuilder(p)
        b.image("v1", [b"layer"])
        b.save()
        (p / "ingest").mkdir()
        (p / "ingest" / ("ab" * 32 + "_1")).write_bytes(b"oras-go partial")
        (p / "oci-put-blob123").write_bytes(b"skopeo partial")
        (p / ".umoci-42").mkdir()
        (p / ".umoci-42" / "index-1").write_bytes(b"umoci partial")

    u, o, _, gc = _pair(tmp_path, build)
    assert gc.returncode == 0
    assert (u / "ingest").exists() and (u / "oci-put-blob123").exists()  # other writers' leftovers stay
    assert not (u / ".umoci-42").exists()  # umoci gc cleans its own temp directories
    assert not (o / "ingest").exists() and not (o / "oci-put-blob123").exists() and not (o / ".umoci-42").exists()
    # regclient's <hex>.<n>.tmp in blobs/: umoci dies on the name; ocigc removes it as a leftover
    for lay in (u, o):
        (lay / "blobs" / "sha256" / ("cd" * 32 + ".12345.tmp")).write_bytes(b"regclient partial")
        age(lay)
    gc = umoci_gc(u, check=False)
    assert gc.returncode == 1 and "invalid checksum digest length" in gc.stderr
    assert run(["sweep", "--grace", "0", o]).code == OK
    assert not (o / "blobs" / "sha256" / ("cd" * 32 + ".12345.tmp")).exists()


def test_difference_grace_period(tmp_path: Path) -> None:
    src = tmp_path / "src"
    b = LayoutBuilder(src)
    b.image("v1", [b"layer"])
    fresh = b.blob(b"just written by a concurrent push", OCI_LAYER)["digest"]
    b.save()
    u = copy_layout(src, tmp_path / "u")
    o = copy_layout(src, tmp_path / "o")
    assert umoci_gc(u).returncode == 0
    assert fresh not in present(u)  # umoci has no grace period
    assert run(["sweep", o]).code == OK  # default grace 1h
    assert fresh in present(o)
