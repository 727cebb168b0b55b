"""The read-only commands (ls, tags, inspect, graph, check) end to end, in-process (typer's
CliRunner) and through the installed ``ocigc`` script, against the fixtures' EXPECT.json facts and
the real-world corpus (fixtures/real/catalog.json). The JSON shapes are those of docs/cli.md."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from tests.kit.cli import ERROR, INTEGRITY, MODES, OK, USAGE, run
from tests.kit.layouts import BAD, LAYOUTS, REAL, copy_layout, facts
from tests.kit.tree import closure, present, reachable, snapshot

LAYOUT_NAMES = sorted(p.name for p in LAYOUTS.iterdir() if (p / "EXPECT.json").exists())
CATALOG: dict[str, Any] = json.loads((REAL / "catalog.json").read_text())
MANIFEST_KINDS = {"oci-manifest", "oci-index", "docker-manifest", "docker-manifest-list", "oci-artifact-manifest"}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _walk(node: dict[str, Any], referrers: bool = True) -> list[dict[str, Any]]:
    """Every node of an ``inspect --json`` tree (optionally not descending into referrers)."""
    out = [node]
    for child in node["children"]:
        out.extend(_walk(child, referrers))
    if referrers:
        for r in node["referrers"]:
            out.extend(_walk(r, referrers))
    return out


# --- version, help, usage -------------------------------------------------------------------------
def test_version_and_help(mode: str) -> None:
    r = run(["--version"], mode)
    assert r.code == OK and r.stdout.strip() == f"ocigc {version('ocigc')}"
    r = run(["-h"], mode)
    assert r.code == OK
    for cmd in ("ls", "tags", "inspect", "graph", "check", "delete", "sweep"):
        assert f" {cmd} " in r.stdout, cmd
    assert "Exit codes" in r.stdout and "75 lock busy" in r.stdout.replace("\n", " ")


@pytest.mark.parametrize("cmd", ["ls", "tags", "inspect", "graph", "check", "delete", "sweep"])
def test_every_command_has_help_with_its_options(cmd: str) -> None:
    r = run([cmd, "-h"])
    assert r.code == OK
    for opt in ("--json", "--quiet", "--verbose", "--help"):
        assert opt in r.stdout, (cmd, opt)


@pytest.mark.parametrize("args", [[], ["bogus"], ["ls", "--jobs", "0", "."], ["graph", "--format", "png", "."],
                                  ["inspect", "x@sha256:xyz"], ["tags"], ["check", "--no-such-option", "."]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert run(args).code == USAGE


# --- ls ---------------------------------------------------------------------------------------------
LS_KEYS = {"layout": str, "location": str, "tags": int, "entries": int, "manifests": int, "blobs": int, "bytes": int,
           "unreachable_blobs": int, "unreachable_bytes": int}


def test_ls_root_of_every_fixture_layout(mode: str) -> None:
    r = run(["ls", "--json", LAYOUTS], mode)
    assert r.code == OK, r
    doc = r.json()
    assert doc["command"] == "ls" and doc["exit_code"] == OK and doc["path"] == str(LAYOUTS)
    by = {lay["layout"]: lay for lay in doc["layouts"]}
    assert sorted(by) == LAYOUT_NAMES
    for name, lay in by.items():
        for key, typ in LS_KEYS.items():
            assert isinstance(lay[key], typ), (name, key)
        assert lay["error"] is None
        f = facts(LAYOUTS / name)
        assert lay["tags"] == len(f["tags"]), name
        assert lay["entries"] == len(f["index"]["entries"]), name
        assert lay["blobs"] == f["blob_count"], name
        assert lay["bytes"] == f["blob_bytes"], name
        assert lay["unreachable_blobs"] == len(f["unreachable"]), name
        assert lay["unreachable_bytes"] == sum(f["blob_files"][d]["size"] for d in f["unreachable"]), name
        reachable_manifests = {d for d in f["reachable"] if set(f["blob_files"][d]["kind"].split("+")) & MANIFEST_KINDS}
        assert lay["manifests"] >= len(reachable_manifests), name
    # the human table: one row per layout, in name order, with its tag count
    r = run(["ls", LAYOUTS])
    assert r.code == OK and r.stderr == ""
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == LAYOUT_NAMES
    assert all(row[1] == str(by[row[0]]["tags"]) for row in rows)


def test_ls_finds_layouts_at_any_depth_but_not_inside_blobs(tmp_path: Path) -> None:
    copy_layout(LAYOUTS / "skopeo-copy", tmp_path / "hello")
    copy_layout(LAYOUTS / "umoci-tags", tmp_path / "team" / "deep" / "app")
    copy_layout(LAYOUTS / "garbage", tmp_path / "hello" / "sub")  # a layout below a layout
    copy_layout(LAYOUTS / "sha512", tmp_path / "hello" / "blobs" / "sha256" / "x")  # never looked at
    r = run(["ls", "--json", tmp_path])
    assert r.code == OK
    assert [lay["layout"] for lay in r.json()["layouts"]] == ["hello", "hello/sub", "team/deep/app"]


def test_ls_of_a_single_layout_and_of_nothing(tmp_path: Path) -> None:
    r = run(["ls", "--json", LAYOUTS / "umoci-emptied"])
    assert r.code == OK
    [lay] = r.json()["layouts"]
    # one name rule (docs/cli.md, "Layout names"): the layout PATH itself is named PATH, in text and JSON
    assert lay["layout"] == str(LAYOUTS / "umoci-emptied") and lay["tags"] == 0 and lay["unreachable_blobs"] == 5
    r = run(["ls", LAYOUTS / "umoci-emptied"])
    assert r.stdout.splitlines()[1].split()[0] == str(LAYOUTS / "umoci-emptied")
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "absent"):
        r = run(["ls", target])
        assert r.code == ERROR and len(r.error_lines) == 1 and str(target) in r.error_lines[0]


def test_ls_reports_a_broken_layout_and_goes_on(tmp_path: Path) -> None:
    copy_layout(LAYOUTS / "skopeo-copy", tmp_path / "good")
    copy_layout(BAD / "index-empty", tmp_path / "broken")
    r = run(["ls", "--json", tmp_path])
    assert r.code == ERROR
    by = {lay["layout"]: lay for lay in r.json()["layouts"]}
    assert set(by["broken"]) == {"layout", "location", "error"} and "index.json" in by["broken"]["error"]
    assert by["good"]["blobs"] == 7
    assert len(r.error_lines) == 1 and str(tmp_path / "broken" / "index.json") in r.error_lines[0]


# --- tags -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_tags_equal_expect(name: str) -> None:
    f = facts(LAYOUTS / name)
    entries = f["index"]["entries"]
    r = run(["tags", "--json", LAYOUTS / name])
    assert r.code == OK
    doc = r.json()
    assert doc["path"] == str(LAYOUTS / name)
    got = [(t["tag"], t["digest"]) for t in doc["tags"]]
    assert got == [(e["ref_name"], e["digest"]) for e in entries if e["ref_name"] is not None]
    assert Counter(t for t, _ in got) == Counter({k: len(v) for k, v in f["tags"].items()})
    for t in doc["tags"]:
        assert {"tag", "digest", "media_type", "size"} <= set(t)
        assert isinstance(t["size"], int) and isinstance(t["digest"], str)
    r = run(["tags", "--all", "--json", LAYOUTS / name])
    every = r.json()["tags"]
    assert [(t["tag"], t["digest"], t["size"]) for t in every] == [(e["ref_name"], e["digest"], e["size"])
                                                                  for e in entries]
    assert {t["digest"] for t in every if t["tag"] is None} == set(f["untagged_roots"])


def test_tags_human_output(mode: str) -> None:
    lay = LAYOUTS / "refnames"
    f = facts(lay)
    r = run(["tags", lay], mode)
    assert r.code == OK and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TAG", "DIGEST", "TYPE", "SIZE"]
    assert max(len(line) for line in lines) <= 80  # short digests: the table fits 80 columns
    assert [line.split()[0] for line in lines[1:]] == [e["ref_name"] for e in f["index"]["entries"] if e["ref_name"]]
    r = run(["tags", "-a", lay])
    assert sum(1 for line in r.stdout.splitlines() if line.startswith("<untagged>")) == len(f["untagged_roots"])
    # platform and artifactType are passed through in JSON
    tags = run(["tags", "--all", "--json", lay]).json()["tags"]
    assert any("platform" in t for t in tags)
    arts = run(["tags", "--json", LAYOUTS / "oci-artifact-manifest"]).json()["tags"]
    assert any(t.get("artifact_type") == "application/vnd.example.bundle" for t in arts)


# --- inspect ----------------------------------------------------------------------------------------
NODE_KEYS = {"digest": str, "kind": str, "media_type": str, "size": int, "tags": list, "children": list,
             "referrers": list}


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_inspect_every_tag(name: str) -> None:
    lay = LAYOUTS / name
    f = facts(lay)
    for tag, targets in f["tags"].items():
        # a full reference as ref name (the tag follows the last '/'): PATH::NAME names it alone
        ref = f"{lay}::{tag}" if "/" in tag or ":" in tag else f"{lay}:{tag}"
        r = run(["inspect", "--json", ref])
        assert r.code == OK, r
        doc = r.json()
        assert doc["reference"] == ref and doc["path"] == str(lay)
        assert [t["digest"] for t in doc["trees"]] == list(dict.fromkeys(t["digest"] for t in targets))
        for tree in doc["trees"]:
            nodes = _walk(tree, referrers=False)
            for node in nodes:
                for key, typ in NODE_KEYS.items():
                    assert isinstance(node[key], typ), key
                assert "edge" in node and "present" in node and "error" in node
            assert tag in tree["tags"]
            got = {n["digest"] for n in nodes}
            # every child of the tagged manifest (and theirs) is in the tree, and only reachable digests are
            assert closure(lay, [tree["digest"]]) <= got
            assert got <= set(f["reachable"])
            assert all(n["present"] for n in nodes)
            # referrers hang under their subject
            for ref, info in f["referrers"].items():
                for n in _walk(tree):
                    if n["digest"] == info["subject"]:
                        assert ref in {r["digest"] for r in n["referrers"]}, (tag, ref)


def test_inspect_referrer_chain_and_human_tree(mode: str) -> None:
    lay = LAYOUTS / "oras-artifact"
    f = facts(lay)
    [v1] = f["tags"]["v1"]
    [sbom] = [d for d, i in f["referrers"].items() if i["subject"] == v1["digest"]]
    [sig] = [d for d, i in f["referrers"].items() if i["subject"] == sbom]
    tree = run(["inspect", "--json", f"{lay}:v1"]).json()["trees"][0]
    assert [r["digest"] for r in tree["referrers"]] == [sbom]
    assert tree["referrers"][0]["edge"] == "referrer"
    assert [r["digest"] for r in tree["referrers"][0]["referrers"]] == [sig]
    r = run(["inspect", "--wide", f"{lay}:v1"], mode)
    assert r.code == OK and r.stderr == ""
    text = r.stdout
    assert text.splitlines()[0].startswith(v1["digest"]) and "[v1]" in text.splitlines()[0]
    for d in closure(lay, [v1["digest"]]) | {sbom, sig}:
        assert d in text
    assert "referrer " + sbom in text and ("└── " in text or "├── " in text)
    # without --wide: 12-hex digests (as oras and migrate print them), the same tree in 80 columns
    short = run(["inspect", f"{lay}:v1"], mode).stdout
    assert len(short.splitlines()) == len(text.splitlines()) and max(map(len, short.splitlines())) <= 80
    assert sbom not in short and sbom[:19] in short


def test_inspect_by_digest_whole_layout_and_errors(mode: str) -> None:
    lay = LAYOUTS / "multiarch"
    f = facts(lay)
    [multi] = f["tags"]["multi"]
    by_tag = run(["inspect", "--json", f"{lay}:multi"]).json()["trees"]
    by_digest = run(["inspect", "--json", f"{lay}@{multi['digest']}"], mode).json()["trees"]
    assert by_tag == by_digest
    assert by_tag[0]["kind"] == "index" and len(by_tag[0]["children"]) == 2
    # a digest that is not an entry but is in the graph: its own tree
    config = next(d for d, b in f["blob_files"].items() if b["kind"] == "config")
    [node] = run(["inspect", "--json", f"{lay}@{config}"]).json()["trees"]
    assert node["digest"] == config and node["kind"] == "config" and node["children"] == []
    # the whole layout: one tree per distinct index.json entry digest, in order
    whole = run(["inspect", "--json", lay]).json()["trees"]
    assert [t["digest"] for t in whole] == list(dict.fromkeys(e["digest"] for e in f["index"]["entries"]))
    # errors: a tag or digest that is not there, a malformed digest
    r = run(["inspect", f"{lay}:nope"])
    assert r.code == ERROR and len(r.error_lines) == 1 and "nope" in r.error_lines[0]
    absent = "sha256:" + "0" * 64
    r = run(["inspect", f"{lay}@{absent}"])
    assert r.code == ERROR and len(r.error_lines) == 1 and absent in r.error_lines[0]
    r = run(["inspect", f"{lay}@sha256:abc"])
    assert r.code == USAGE and len(r.error_lines) == 1


def test_inspect_marks_missing_blobs() -> None:
    lay = BAD / "layer-missing"
    [dangling] = facts(lay)["dangling"]
    r = run(["inspect", "--wide", f"{lay}:target"])
    assert r.code == OK
    line = next(line for line in r.stdout.splitlines() if dangling["digest"] in line)
    assert "MISSING" in line
    tree = run(["inspect", "--json", f"{lay}:target"]).json()["trees"][0]
    assert {n["digest"]: n["present"] for n in _walk(tree)}[dangling["digest"]] is False


# --- graph --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_graph_formats_agree(name: str) -> None:
    lay = LAYOUTS / name
    f = facts(lay)
    r = run(["graph", "--json", lay])
    assert r.code == OK
    doc = r.json()
    assert doc["path"] == str(lay) and doc["command"] == "graph"
    nodes = {n["digest"]: n for n in doc["nodes"]}
    for n in doc["nodes"]:
        assert {"digest", "kind", "media_types", "sizes", "tags", "root", "present", "error"} <= set(n)
        assert isinstance(n["media_types"], list) and isinstance(n["sizes"], list) and isinstance(n["root"], bool)
    subjects = {i["subject"] for i in f["referrers"].values()}
    assert set(nodes) == set(f["reachable"]) | subjects
    assert {d for d, n in nodes.items() if n["root"]} == {e["digest"] for e in f["index"]["entries"]}
    for tag, targets in f["tags"].items():
        for t in targets:
            assert tag in nodes[t["digest"]]["tags"]
    edges = {(e["from"], e["to"]): e["kinds"] for e in doc["edges"]}
    for ref, info in f["referrers"].items():
        assert edges[(ref, info["subject"])] == ["subject"]
    for parent, child in edges:
        assert parent in nodes and child in nodes
    # GraphML parses (networkx and plain XML) into the same graph
    graphml = run(["graph", "--format", "graphml", lay]).stdout
    g = nx.parse_graphml(graphml)
    assert set(g.nodes) == set(nodes) and set(g.edges) == set(edges)
    for d, data in g.nodes(data=True):
        assert data["kind"] == nodes[d]["kind"]
    ns = {"g": "http://graphml.graphdrawing.org/xmlns"}
    xml_root = ET.fromstring(graphml)
    assert len(xml_root.findall(".//g:node", ns)) == len(nodes)
    assert len(xml_root.findall(".//g:edge", ns)) == len(edges)
    # dot: every node and edge, subject edges dashed
    dot = run(["graph", "--format", "dot", lay]).stdout
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for d in nodes:
        assert f'"{d}" [' in dot
    for parent, child in edges:
        line = next(x for x in dot.splitlines() if f'"{parent}" -> "{child}"' in x)
        assert ("dashed" in line) == (edges[(parent, child)] == ["subject"])


def test_graph_through_the_script(mode: str) -> None:
    lay = LAYOUTS / "docker-types"
    out = {}
    for fmt in ("json", "dot", "graphml"):
        r = run(["graph", "-f", fmt, lay], mode if fmt == "graphml" else "runner")
        assert r.code == OK and r.stderr == ""
        out[fmt] = r.stdout
    assert len(json.loads(out["json"])["nodes"]) == 8
    assert out["dot"].count(" -> ") == len(json.loads(out["json"])["edges"])
    assert nx.parse_graphml(out["graphml"]).number_of_nodes() == 8


# --- check ---------------------------------------------------------------------------------------------
CHECK_LAYOUT_KEYS = {"layout": str, "location": str, "blobs": int, "reachable": int, "manifests": int,
                     "verified": int, "problems": list}


def _problems(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for lay in doc["layouts"] for p in lay["problems"]]


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_check_clean_fixtures(name: str) -> None:
    lay = LAYOUTS / name
    f = facts(lay)
    r = run(["check", "--json", "--verify-digests", lay])
    assert r.code == OK, r
    doc = r.json()
    assert doc["path"] == str(lay) and doc["exit_code"] == OK
    [rep] = doc["layouts"]
    for key, typ in CHECK_LAYOUT_KEYS.items():
        assert isinstance(rep[key], typ), key
    assert rep["blobs"] == f["blob_count"] and rep["verified"] == f["blob_count"]
    assert rep["reachable"] == len(f["reachable"])
    for p in rep["problems"]:
        assert {"severity", "code", "message"} <= set(p)
        assert p["severity"] in ("warning", "info"), p
    codes = Counter(p["code"] for p in rep["problems"])
    if f["unreachable"]:
        [note] = [p for p in rep["problems"] if p["code"] == "unreferenced"]
        assert note["message"].startswith(f"{len(f['unreachable'])} blob(s)")
    assert codes["foreign-file"] == len(set(f["non_digest_files"]) - set(f["leftovers"]))
    assert codes["temp-leftover"] == len(f["leftovers"])


def test_check_human_strict_verbose_quiet(mode: str) -> None:
    lay = LAYOUTS / "garbage"
    r = run(["check", lay], mode)
    assert r.code == OK and r.stderr == ""
    head = r.stdout.splitlines()[0]
    assert head.startswith(f"{lay}: ok") and "10 blobs, 6 reachable" in head
    assert "warning: " in r.stdout and "not-a-digest.tmp: not a valid digest name" in r.stdout
    assert "note(s); -v shows them)" in r.stdout
    assert "info:" not in r.stdout
    assert "info: 4 blob(s) not reachable" in run(["check", "-v", lay]).stdout
    assert "info: 4 blob(s) not reachable" in run(["-v", "check", lay]).stdout
    assert run(["check", "--strict", lay]).code == ERROR
    assert run(["check", "--strict", LAYOUTS / "skopeo-copy"]).code == OK
    quiet = run(["-q", "check", lay])
    assert quiet.code == OK and quiet.stdout == r.stdout and quiet.stderr == ""
    assert run(["check", "--quiet", lay]).stdout == r.stdout


def test_check_verify_digests_finds_bit_rot(mode: str) -> None:
    lay = BAD / "digest-mismatch"
    [bad] = [e["digest"] for e in facts(lay)["errors"]]
    assert run(["check", lay]).code == OK  # sizes match: only hashing notices
    r = run(["check", "--verify-digests", "--json", lay], mode)
    assert r.code == ERROR
    [p] = [p for p in _problems(r.json()) if p["severity"] == "error"]
    assert p["code"] == "digest-mismatch" and p["digest"] == bad
    assert str(lay / "blobs" / "sha256" / bad.split(":")[1]) in p["message"]


def test_check_of_a_root_takes_the_worst_exit_code(tmp_path: Path) -> None:
    copy_layout(LAYOUTS / "skopeo-copy", tmp_path / "a")
    copy_layout(BAD / "size-mismatch", tmp_path / "b")
    assert run(["check", tmp_path]).code == ERROR
    copy_layout(BAD / "layer-missing", tmp_path / "c")
    r = run(["check", "--json", tmp_path])
    assert r.code == INTEGRITY and r.json()["exit_code"] == INTEGRITY
    assert [lay["layout"] for lay in r.json()["layouts"]] == ["a", "b", "c"]


def test_read_commands_write_nothing(tmp_path: Path) -> None:
    lay = copy_layout(LAYOUTS / "garbage", tmp_path / "g")
    before = snapshot(lay)
    for args in (["ls"], ["tags", "--all"], ["inspect"], ["graph", "-f", "dot"], ["check", "--verify-digests"]):
        run([*args, lay])
    assert snapshot(lay) == before


# --- the real-world corpus -----------------------------------------------------------------------------
WITH_LAYOUT = sorted(n for n, i in CATALOG.items() if i["stats"]["has_oci_layout"])


@pytest.fixture(scope="module")
def real_root() -> dict[str, dict[str, Any]]:
    """``ls --json`` and ``check --json`` of fixtures/real as one root (every layout found, the worst
    exit code wins), by layout name."""
    ls = run(["ls", "--json", REAL])
    assert ls.code == OK
    assert [lay["layout"] for lay in ls.json()["layouts"]] == WITH_LAYOUT
    check = run(["check", "--json", REAL])
    assert check.code == INTEGRITY and check.json()["exit_code"] == INTEGRITY
    reports = check.json()["layouts"]
    assert [r["layout"] for r in reports] == WITH_LAYOUT
    return {"ls": {lay["layout"]: lay for lay in ls.json()["layouts"]}, "check": {r["layout"]: r for r in reports}}


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_real_fixture(name: str, real_root: dict[str, dict[str, Any]]) -> None:
    """Every layout other projects wrote: the read commands say what catalog.json says."""
    info = CATALOG[name]
    stats = info["stats"]
    lay = REAL / name
    if not stats["has_oci_layout"]:
        for args in (["ls"], ["check"]):
            r = run([*args, lay])
            assert r.code == ERROR and len(r.error_lines) == 1, r
            assert str(lay) in r.error_lines[0] and "oci-layout" in r.error_lines[0]
        for args in (["tags"], ["inspect"], ["graph"]):
            r = run([*args, lay])
            assert r.code == ERROR and r.error_lines == [f"error: {lay / 'oci-layout'}: missing (not an OCI image "
                                                         "layout)"], r
        return
    # tags
    tags = run(["tags", "--all", "--json", lay]).json()["tags"]
    assert len(tags) == stats["index_entries"]
    assert sum(1 for t in tags if t["tag"] is not None) == stats["tagged_entries"]
    assert sum(1 for t in tags if t["tag"] is None) == stats["untagged_entries"]
    assert sorted({t["tag"] for t in tags if t["tag"] is not None}) == sorted(set(stats["ref_names"]))
    # ls
    summary = real_root["ls"][name]
    assert summary["blobs"] == stats["blobs"] and summary["bytes"] == stats["blob_bytes"]
    assert summary["entries"] == stats["index_entries"]
    assert summary["unreachable_blobs"] == len(stats["unreferenced_blobs_from_index_walk"])
    # inspect (every entry) and graph
    r = run(["inspect", "--json", lay])
    assert r.code == OK
    entry_digests = list(dict.fromkeys(t["digest"] for t in tags))
    assert [t["digest"] for t in r.json()["trees"]] == entry_digests
    doc = run(["graph", "--json", lay]).json()
    assert set(entry_digests) <= {n["digest"] for n in doc["nodes"]}
    # check: content reachable but absent -> 4; wrong descriptor sizes reported; garbage counted
    problems = real_root["check"][name]["problems"]
    missing = reachable(lay) - present(lay)
    severities = {p["severity"] for p in problems}
    if missing:
        assert "dangling" in severities
        assert {p["digest"] for p in problems if p["severity"] == "dangling"} == missing
    elif stats["size_mismatch_descriptors"]:
        assert "dangling" not in severities and "error" in severities
    else:
        assert severities <= {"warning", "info"}, problems
    mismatched = {p["digest"] for p in problems if p["code"] == "size-mismatch"}
    assert mismatched == set(stats["size_mismatch_descriptors"])
    unref = len(stats["unreferenced_blobs_from_index_walk"])
    notes = [p for p in problems if p["code"] == "unreferenced"]
    assert [int(n["message"].split()[0]) for n in notes] == ([unref] if unref else [])
    if stats["referenced_but_missing"] and not missing:  # only a subject is absent (regclient/external)
        assert any(p["code"] == "external-subject" for p in problems)


@pytest.mark.parametrize("name", ["regclient/testrepo", "oras-cli-zot/artifacts", "olot/ocilayout1",
                                  "containers-image/delete_image_shared_blobs_dir", "regclient/external"])
def test_real_fixture_check_exit_codes_and_graphml(name: str) -> None:
    lay = REAL / name
    missing = reachable(lay) - present(lay)
    stats = CATALOG[name]["stats"]
    expected = INTEGRITY if missing else (ERROR if stats["size_mismatch_descriptors"] else OK)
    assert run(["check", lay]).code == expected
    doc = run(["graph", "--json", lay]).json()
    assert nx.parse_graphml(run(["graph", "-f", "graphml", lay]).stdout).number_of_nodes() == len(doc["nodes"])
