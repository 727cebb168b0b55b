"""Odd values in ``index.json`` entries: a ref name that is not a string, a lone surrogate escape.

A non-string ``org.opencontainers.image.ref.name`` is damage to report (``check`` exit 1), never an
untagged entry to drop (``sweep --untagged``, a retention policy's ``untagged = "delete"``). A lone
surrogate (``"\\ud800"``, which Go's JSON decoder accepts) prints escaped and survives a rewrite of
``index.json`` as the same escape. Storage does not matter here: local disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kit.cli import MODES, run
from tests.kit.layouts import REF_NAME, LayoutBuilder, blob_path
from tests.kit.tree import age


def _layout_with_entries(root: Path, names: list[object]) -> tuple[LayoutBuilder, list[dict[str, object]]]:
    b = LayoutBuilder(root)
    descs = []
    for i, name in enumerate(names):
        m = b.manifest([f"layer {i}".encode()])
        entry = dict(m)
        entry["annotations"] = {REF_NAME: name}
        descs.append(entry)
    return b, descs


def _write_index(root: Path, entries: list[dict[str, object]], raw_entries: list[str] | None = None) -> None:
    parts = raw_entries if raw_entries is not None else [json.dumps(e) for e in entries]
    (root / "index.json").write_text('{"schemaVersion":2,"manifests":[' + ",".join(parts) + "]}")


@pytest.mark.parametrize("bad", [5, None, ["v1"], {"x": 1}], ids=["int", "null", "list", "object"])
def test_a_non_string_ref_name_is_reported_by_check(tmp_path: Path, bad: object) -> None:
    root = tmp_path / "l"
    _, descs = _layout_with_entries(root, [bad, "v1"])
    _write_index(root, descs)
    res = run(["check", root])
    assert res.code == 1, str(res)
    assert "ref.name that is not a string" in res.stdout + res.stderr
    res = run(["check", root, "--json"])
    codes = [p["code"] for layout in res.json()["layouts"] for p in layout["problems"]]
    assert "bad-ref-name" in codes


@pytest.mark.parametrize("bad", [5, None], ids=["int", "null"])
def test_sweep_untagged_never_drops_an_entry_whose_ref_name_is_not_a_string(tmp_path: Path, bad: object) -> None:
    root = tmp_path / "l"
    b, descs = _layout_with_entries(root, [bad, "v1"])
    plain_untagged = b.manifest([b"truly untagged"])  # an entry without the annotation: dropped
    _write_index(root, [*descs, plain_untagged])
    age(root)
    res = run(["sweep", root, "--grace", "0s", "--untagged"])
    assert res.code == 0, str(res)
    after = json.loads((root / "index.json").read_text())["manifests"]
    digests = [e["digest"] for e in after]
    assert descs[0]["digest"] in digests and descs[1]["digest"] in digests
    assert plain_untagged["digest"] not in digests
    doc = json.loads(blob_path(root, str(descs[0]["digest"])).read_bytes())
    for child in [doc["config"], *doc["layers"]]:
        assert blob_path(root, child["digest"]).exists()


def test_a_retention_policy_never_drops_an_entry_whose_ref_name_is_not_a_string(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _, descs = _layout_with_entries(root, [7, "v1"])
    _write_index(root, descs)
    age(root)
    policy = tmp_path / "p.toml"
    policy.write_text('[[rule]]\nrepositories = ["**"]\nkeep_last = 1\nuntagged = "delete"\n'
                      'untagged_older_than = "0s"\ngrace = "0s"\n')
    res = run(["sweep", root, "--policy", policy])
    assert res.code == 0, str(res)
    digests = [e["digest"] for e in json.loads((root / "index.json").read_text())["manifests"]]
    assert descs[0]["digest"] in digests


@pytest.mark.parametrize("mode", MODES)
def test_a_lone_surrogate_in_a_tag_prints_escaped_and_survives_a_rewrite(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "l"
    _, descs = _layout_with_entries(root, ["X", "gone"])
    odd = json.dumps(descs[0]).replace('"X"', '"a\\ud800b"')
    _write_index(root, descs, [odd, json.dumps(descs[1])])
    res = run(["tags", root], mode=mode)
    assert res.code == 0, str(res)
    assert "a\\ud800b" in res.stdout
    res = run(["tags", root, "--json"], mode=mode)
    assert res.code == 0, str(res)
    res = run(["delete", "--yes", f"{root}:gone"], mode=mode)
    assert res.code == 0, str(res)
    raw = (root / "index.json").read_bytes()
    assert b'"a\\ud800b"' in raw  # the same escape, byte for byte
    assert b"gone" not in raw
    kept = json.loads(raw)["manifests"]
    assert [e["digest"] for e in kept] == [descs[0]["digest"]]
    assert run(["check", root], mode=mode).code == 0
    # tag and push rewrite index.json through the same tag edit: the escape survives them too.
    res = run(["tag", f"{root}@{descs[0]['digest']}", "v2"], mode=mode)
    assert res.code == 0, str(res)
    raw = (root / "index.json").read_bytes()
    assert b'"a\\ud800b"' in raw and b'"v2"' in raw
