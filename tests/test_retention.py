"""Retention policies: loading, times, and the decision semantics (table-driven), at library level."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ocigc.errors import EXIT_USAGE
from ocigc.gc.plan import SweepOptions
from ocigc.gc.run import Outcome, RunOptions, sweep_layout
from ocigc.layout.layout import Layout
from ocigc.retention.decide import ambiguity, tag_part
from ocigc.retention.load import load_policy, parse_policy
from ocigc.retention.model import PolicyError, glob_regex, parse_time, repository_name
from ocigc.storage.local import LocalStorage
from tests.kit.layouts import LayoutBuilder, blob_path
from tests.kit.retention import DAY, Img, build
from tests.kit.tree import reachable


def run_policy(root: Path, policy_text: str, dry_run: bool = True, name: str = "app") -> Outcome:
    policy = parse_policy(policy_text, "test.toml")
    layout = Layout.open(LocalStorage(root), name)
    opts = policy.sweep_options(layout, SweepOptions(grace=0))
    out = sweep_layout(layout, opts, RunOptions(jobs=4, dry_run=dry_run))
    if out.error:
        raise out.error
    return out


def removed_tags(out: Outcome) -> set[str]:
    assert out.plan is not None
    return {e.ref_name for e in out.plan.remove_entries if e.ref_name is not None}


def removed_untagged(out: Outcome, descs: dict[str, dict[str, Any]]) -> set[str]:
    assert out.plan is not None
    by_digest = {d["digest"]: k for k, d in descs.items()}
    return {by_digest.get(e.digest, e.digest) for e in out.plan.remove_entries if e.ref_name is None}


def decisions(out: Outcome) -> dict[str, dict[str, Any]]:
    assert out.plan is not None
    return {d["tag"]: d for d in out.plan.decisions}


def rule(body: str, defaults: str = 'grace = "0"') -> str:
    return f"[defaults]\n{defaults}\n\n[[rule]]\nname = \"r\"\nrepositories = \"**\"\n{body}\n"


# --- the semantics table -------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    policy: str
    imgs: list[Img]
    removed: set[str]  # tags removed; every other tag is kept
    untagged_removed: set[str] = field(default_factory=set)  # keys of images whose untagged entries go
    by: dict[str, str] = field(default_factory=dict)  # tag -> the criterion that decided it
    note: str | None = None  # a note of the plan contains this


def _series(n: int, prefix: str = "v", **kw: Any) -> list[Img]:
    """n images v0..v(n-1), v0 oldest (100 days), one day apart."""
    return [Img(f"{prefix}{i}", (f"{prefix}{i}",), created=100 - i, **kw) for i in range(n)]


CASES = [
    Case("keep_last-removes-the-older", rule('keep_last = 2\ndelete_tags = ".*"'), _series(5),
         removed={"v0", "v1", "v2"}, by={"v4": "keep_last", "v3": "keep_last", "v0": "delete_tags"}),
    Case("keep_last-alone-removes-nothing", rule("keep_last = 1"), _series(3), removed=set(),
         by={"v0": "no-delete-rule"}),
    Case("keep-wins-over-delete", rule('keep_tags = ["v1", "v3"]\ndelete_tags = "v.*"'), _series(4),
         removed={"v0", "v2"}, by={"v1": "keep_tags", "v3": "keep_tags"}),
    Case("keeps-are-ORed", rule('keep_last = 1\nkeep_within = "97d12h"\nkeep_tags = "v0"\ndelete_tags = ".*"'),
         _series(6), removed={"v1", "v2"}, by={"v5": "keep_last", "v3": "keep_within", "v0": "keep_tags"}),
    Case("deletes-are-ANDed",
         rule('delete_tags = "pr-.*"\ndelete_older_than = "30d"'),
         [Img("a", ("pr-1",), created=60), Img("b", ("pr-2",), created=5), Img("c", ("v1",), created=61)],
         removed={"pr-1"}, by={"pr-2": "no-delete-match", "v1": "no-delete-match",
                               "pr-1": "delete_tags+delete_older_than"}),
    Case("delete_older_than-alone",
         rule('delete_older_than = "30d"'),
         [Img("a", ("a",), created=60), Img("b", ("b",), created=5), Img("c", ("c",), created=45)],
         removed={"a", "c"}, by={"a": "delete_older_than"}),
    Case("regexes-are-anchored", rule('keep_tags = "v1"\ndelete_tags = "v"'),
         [Img("a", ("v",), created=9), Img("b", ("v1",), created=8), Img("c", ("v10",), created=7),
          Img("d", ("xv",), created=6)],
         removed={"v"}, by={"v10": "no-delete-match", "xv": "no-delete-match"}),
    Case("latest-is-always-kept", rule('delete_tags = ".*"'),
         [Img("a", ("latest",), created=300), Img("b", ("old",), created=300 - 1)],
         removed={"old"}, by={"latest": "keep_latest"}),
    Case("keep_latest-false", rule('keep_latest = false\ndelete_tags = ".*"'),
         [Img("a", ("latest",), created=300), Img("b", ("old",), created=299)],
         removed={"latest", "old"}),
    Case("full-reference-names-match-by-tag",
         rule('keep_tags = "1\\\\.0"\ndelete_tags = ".*"'),
         [Img("a", ("docker.io/library/x:1.0",), created=9), Img("b", ("docker.io/library/x:0.9",), created=10),
          Img("c", ("example.com:5000/x:latest",), created=11)],
         removed={"docker.io/library/x:0.9"}, by={"docker.io/library/x:1.0": "keep_tags",
                                                  "example.com:5000/x:latest": "keep_latest"}),
    # Harbor: decided per tag, acted on per manifest.
    Case("a-kept-tag-keeps-its-manifests-other-tags", rule('keep_tags = "stable"\ndelete_tags = ".*"'),
         [Img("a", ("v1", "stable", "v1.0"), created=50), Img("b", ("v0",), created=60)],
         removed={"v0"}, by={"v1": "same-manifest", "v1.0": "same-manifest", "stable": "keep_tags"}),
    # gitlab #351538: newer tags sharing one image must not go before older ones; tags of one
    # manifest count once in keep_last.
    Case("gitlab-351538-shared-manifest-counts-once", rule('keep_last = 2\ndelete_tags = ".*"'),
         [Img("old", ("1.0", "1"), created=30), Img("mid", ("1.1",), created=20),
          Img("new", ("1.2", "1.2.0", "stable-ish"), created=10)],
         removed={"1.0", "1"}, by={"1.2": "keep_last", "1.2.0": "keep_last", "stable-ish": "keep_last",
                                   "1.1": "keep_last"}),
    # zot #4233: every timestamp reset to one instant: refuse, nothing removed, say why.
    Case("zot-4233-identical-times-refuse", rule('keep_last = 1\ndelete_tags = ".*"'),
         [Img(f"i{i}", (f"t{i}",), created=3) for i in range(4)],
         removed=set(), by={"t0": "refused", "t3": "refused"}, note="refuses to act"),
    Case("identical-mtimes-refuse (copied repository, no annotations)", rule('keep_last = 1\ndelete_tags = ".*"'),
         [Img(f"i{i}", (f"t{i}",)) for i in range(4)], removed=set(), by={"t1": "refused"},
         note="within 1m of each other"),
    Case("missing-times-refuse", rule('time_source = "manifest-annotation"\nkeep_last = 1\ndelete_tags = ".*"'),
         [Img("a", ("a",), created=10), Img("b", ("b",)), Img("c", ("c",))], removed=set(),
         by={"a": "refused"}, note="2 of 3 tagged manifests have no manifest-annotation timestamp"),
    Case("ambiguous-proceed", rule('keep_last = 1\ndelete_tags = ".*"\nambiguous_times = "proceed"'),
         [Img(f"i{i}", (f"t{i}",), created=3) for i in range(4)],
         removed={"t0", "t1", "t2"}, by={"t3": "keep_last"}, note="proceeding"),
    Case("refusal-only-when-the-rule-needs-times", rule('delete_tags = "t[01]"'),
         [Img(f"i{i}", (f"t{i}",), created=3) for i in range(4)], removed={"t0", "t1"}),
    Case("a-tag-without-a-time-is-kept",
         rule('time_source = "manifest-annotation"\ndelete_older_than = "30d"'),
         [Img("a", ("a",), created=60), Img("b", ("b",), created=50), Img("c", ("c",), created=40),
          Img("d", ("d",))],
         removed={"a", "b", "c"}, by={"d": "no-time"}),
    # Ties: equal times ordered by index.json position, later entries first (deterministic).
    Case("ties-later-entry-wins", rule('keep_last = 3\ndelete_tags = ".*"'),
         [Img("a", ("a",), created=50), Img("b", ("b",), created=40), Img("c", ("c",), created=40),
          Img("d", ("d",), created=30), Img("e", ("e",), created=20)],
         removed={"a", "b"}, by={"c": "keep_last", "b": "delete_tags"}),
    # The time source chain: manifest annotation, then entry annotation, then config, then mtime.
    Case("time-manifest-annotation-first", rule('keep_within = "10d"\ndelete_tags = ".*"'),
         [Img("a", ("a",), created=20, entry_created=1, config_created=1), Img("b", ("b",), created=1),
          Img("c", ("c",), created=30)],
         removed={"a", "c"}, by={"b": "keep_within"}),
    Case("time-entry-annotation-second", rule('keep_within = "10d"\ndelete_tags = ".*"'),
         [Img("a", ("a",), entry_created=20, config_created=1), Img("b", ("b",), entry_created=1),
          Img("c", ("c",), entry_created=30)],
         removed={"a", "c"}, by={"b": "keep_within"}),
    Case("time-config-created-third", rule('keep_within = "10d"\ndelete_tags = ".*"'),
         [Img("a", ("a",), config_created=20), Img("b", ("b",), config_created=1),
          Img("c", ("c",), config_created=30)],
         removed={"a", "c"}, by={"b": "keep_within"}),
    Case("time-source-chosen", rule('time_source = "config-created"\nkeep_within = "10d"\ndelete_tags = ".*"'),
         [Img("a", ("a",), created=1, config_created=20), Img("b", ("b",), created=20, config_created=1),
          Img("c", ("c",), config_created=30)],
         removed={"a", "c"}, by={"b": "keep_within"}),
    Case("multi-arch-index-time-from-children", rule('keep_within = "10d"\ndelete_tags = ".*"'),
         [Img("amd", (None,), config_created=2), Img("arm", (None,), config_created=40),
          Img("idx", ("v2",), children=("amd", "arm")),
          Img("amd1", (None,), config_created=50), Img("idx1", ("v1",), children=("amd1",))],
         removed={"v1"}, untagged_removed={"amd1"}, by={"v2": "keep_within"}),
    # Multi-arch children: never removed while their index is kept (distribution #2914/#3178).
    Case("untagged-cleanup-keeps-platform-manifests-of-kept-index",
         rule('keep_tags = "v2"\ndelete_tags = ".*"\nuntagged = "delete"'),
         [Img("amd", (None,), created=40), Img("arm", (None,), created=40),
          Img("idx", ("v2",), children=("amd", "arm"), created=40),
          Img("orphan", (None,), created=40)],
         removed=set(), untagged_removed={"orphan"}),
    Case("a-tagged-platform-manifest-of-a-kept-index-stays",
         rule('keep_tags = "v2"\ndelete_tags = ".*"'),
         [Img("amd", ("v2-amd64",), created=40), Img("arm", (None,), created=40),
          Img("idx", ("v2",), children=("amd", "arm"), created=41), Img("z", ("z",), created=42)],
         removed={"z"}, by={"v2-amd64": "same-manifest"}),
    Case("a-removed-index-takes-its-own-untagged-children-along",
         rule('delete_tags = "v1"'),
         [Img("amd", (None,), created=40), Img("idx", ("v1",), children=("amd",), created=40),
          Img("keep", ("v2",), created=30)],
         removed={"v1"}, untagged_removed={"amd"}),
    Case("untagged-delete-respects-the-grace",
         rule('untagged = "delete"', defaults='grace = "1h"'),
         [Img("old", (None,), created=40), Img("new", (None,), created=40, young=True),
          Img("t", ("t",), created=40)],
         removed=set(), untagged_removed={"old"}, note="younger than 1h"),
    Case("untagged_older_than", rule('untagged = "delete"\nuntagged_older_than = "1d"'),
         [Img("old", (None,), created=40), Img("t", ("t",), created=40)], removed=set(),
         untagged_removed=set(), note="younger than 1d"),
    # Referrers follow their subject.
    Case("referrers-go-with-their-subject", rule('delete_tags = "v1"'),
         [Img("a", ("v1",), created=40), Img("sig", (None,), subject="a", created=40),
          Img("b", ("v2",), created=30), Img("sig2", (None,), subject="b", created=30)],
         removed={"v1"}, untagged_removed={"sig"}),
    Case("referrers-keep", rule('delete_tags = "v1"\nreferrers = "keep"'),
         [Img("a", ("v1",), created=40), Img("sig", (None,), subject="a", created=40),
          Img("b", ("v2",), created=30)],
         removed={"v1"}, untagged_removed=set()),
    Case("tagged-referrer-follows-its-subject (not ranked by keep_last)",
         rule('keep_last = 1\ndelete_tags = ".*"'),
         [Img("a", ("v1",), created=40), Img("sig", ("v1-signature",), subject="a", created=1),
          Img("b", ("v2",), created=30), Img("sigb", ("v2-signature",), subject="b", created=2)],
         removed={"v1", "v1-signature"}, by={"v1-signature": "referrer", "v2-signature": "referrer",
                                             "v2": "keep_last"}),
    Case("a-referrer-matched-by-keep_tags-stays", rule('keep_tags = ".*-signature"\ndelete_tags = "v1"'),
         [Img("a", ("v1",), created=40), Img("sig", ("v1-signature",), subject="a", created=40),
          Img("b", ("v2",), created=30)],
         removed={"v1"}, by={"v1-signature": "keep_tags"}),
    # The grace period protects a just-pushed manifest from any delete rule.
    Case("grace-keeps-a-young-manifest", rule('delete_tags = ".*"', defaults='grace = "1h"'),
         [Img("a", ("a",), created=40), Img("b", ("b",), created=40, young=True)],
         removed={"a"}, by={"b": "grace"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy_semantics(case: Case, tmp_path: Path) -> None:
    root = tmp_path / "app"
    descs = build(root, case.imgs)
    out = run_policy(root, case.policy)
    assert removed_tags(out) == case.removed
    assert removed_untagged(out, descs) == case.untagged_removed
    dec = decisions(out)
    all_tags = {t for i in case.imgs for t in i.tags if t is not None}
    assert set(dec) == all_tags
    for tag, d in dec.items():
        assert d["action"] == ("remove" if tag in case.removed else "keep"), (tag, d)
        assert d["rule"] == "r" and d["reason"]
    for tag, by in case.by.items():
        assert dec[tag]["by"] == by, (tag, dec[tag])
    if case.note:
        assert out.plan is not None
        assert any(case.note in n for n in out.plan.notes), out.plan.notes


def test_referrer_and_own_untagged_cascade_exactly(tmp_path: Path) -> None:
    root = tmp_path / "app"
    descs = build(root, [Img("a", ("v1", None), created=40), Img("sig", (None,), subject="a", created=40),
                         Img("b", ("v2",), created=30), Img("sig2", (None,), subject="b", created=30)])
    out = run_policy(root, rule('delete_tags = "v1"'))
    assert removed_untagged(out, descs) == {"a", "sig"}
    out = run_policy(root, rule('delete_tags = "v1"\nreferrers = "keep"'))
    assert removed_untagged(out, descs) == {"a"}


def test_refusal_removes_nothing_at_all(tmp_path: Path) -> None:
    root = tmp_path / "app"
    build(root, [Img(f"i{i}", (f"t{i}",), created=3) for i in range(3)] + [Img("u", (None,), created=3)])
    out = run_policy(root, rule('keep_last = 1\ndelete_tags = ".*"\nuntagged = "delete"'))
    assert out.plan is not None and not out.plan.remove_entries
    assert all(d["action"] == "keep" for d in out.plan.decisions)


def test_ties_do_not_depend_on_listing_order(tmp_path: Path) -> None:
    """Same images, entries in the opposite order: the later entry of the tie wins both times."""
    a = [Img("x", ("x",), created=40), Img("y", ("y",), created=40), Img("z", ("z",), created=10)]
    for n, imgs in enumerate((a, [a[1], a[0], a[2]])):
        root = tmp_path / f"app{n}"
        build(root, imgs)
        out = run_policy(root, rule('keep_last = 2\ndelete_tags = ".*"\nambiguous_times = "proceed"'))
        assert removed_tags(out) == {imgs[0].tags[0]}


def test_policy_sweep_really_removes_and_leaves_no_dangling(tmp_path: Path) -> None:
    root = tmp_path / "app"
    descs = build(root, [*_series(5), Img("sig", (None,), subject="v0", created=1)])
    out = run_policy(root, rule('keep_last = 2\ndelete_tags = ".*"'), dry_run=False)
    assert out.result is not None and out.result.removed_entries == 4
    index = json.loads((root / "index.json").read_text())
    left = {m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]}
    assert left == {"v3", "v4"}
    for d in reachable(root):
        assert blob_path(root, d).exists()
    for k in ("v0", "v1", "v2", "sig"):
        assert not blob_path(root, descs[k]["digest"]).exists()


def test_no_rule_matches_keeps_every_tag(tmp_path: Path) -> None:
    root = tmp_path / "app"
    build(root, _series(3))
    text = '[[rule]]\nrepositories = "other/*"\ndelete_tags = ".*"\ngrace = "0"\n'
    out = run_policy(root, text)
    assert out.plan is not None and not out.plan.remove_entries and not out.plan.decisions
    assert any("no rule matches" in n for n in out.plan.notes)


def test_first_matching_rule_applies_and_sets_the_grace(tmp_path: Path) -> None:
    text = """
[[rule]]
name = "team"
repositories = ["team/*"]
delete_tags = "x"
grace = "3h"

[[rule]]
name = "rest"
repositories = "**"
keep_tags = ".*"
"""
    policy = parse_policy(text, "p.toml")
    root = tmp_path / "root"
    for name in ("team/app", "team/app/sub", "solo"):
        LayoutBuilder(root / name).save()
    layouts = {n: Layout(LocalStorage(root / n), n) for n in ("team/app", "team/app/sub", "solo")}
    assert policy.rule_for("team/app").name == "team"  # type: ignore[union-attr]
    assert policy.rule_for("team/app/sub").name == "rest"  # type: ignore[union-attr]
    assert policy.rule_for("solo").name == "rest"  # type: ignore[union-attr]
    assert policy.sweep_options(layouts["team/app"], SweepOptions(grace=60)).grace == 3 * 3600
    assert policy.sweep_options(layouts["solo"], SweepOptions(grace=60)).grace == 60


def test_repository_name_of_a_root_layout(tmp_path: Path) -> None:
    assert repository_name(Layout(LocalStorage(tmp_path / "hello"), "")) == "hello"
    assert repository_name(Layout(LocalStorage(tmp_path / "a" / "b"), "a/b")) == "a/b"


@pytest.mark.parametrize(("glob", "yes", "no"), [
    ("*", ["app", "x"], ["team/app"]),
    ("**", ["app", "team/app", "a/b/c"], []),
    ("team/*", ["team/app"], ["team", "team/app/sub", "other/app"]),
    ("team/**", ["team/app", "team/app/sub"], ["team", "teamx/app"]),
    ("**/app", ["app", "team/app", "a/b/app"], ["team/app2"]),
    ("app-?", ["app-1"], ["app-10", "app-/"]),
    ("app-[0-9]", ["app-1"], ["app-x"]),
    ("app-[!0-9]", ["app-x"], ["app-1"]),
    ("/team/app/", ["team/app"], []),
])
def test_repository_globs(glob: str, yes: list[str], no: list[str]) -> None:
    rx = glob_regex(glob)
    for name in yes:
        assert rx.fullmatch(name), (glob, name)
    for name in no:
        assert not rx.fullmatch(name), (glob, name)


@pytest.mark.parametrize(("name", "tag"), [
    ("latest", "latest"), ("docker.io/library/x:1.0", "1.0"), ("localhost:5000/x", "localhost:5000/x"),
    ("localhost:5000/x:v1", "v1"), ("x:y", "y"),
])
def test_tag_part(name: str, tag: str) -> None:
    assert tag_part(name) == tag


# --- times ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expect"), [
    ("2024-01-02T03:04:05Z", 1704164645.0),
    ("2024-01-02T03:04:05.123456789Z", 1704164645.123457),
    ("2024-01-02T04:04:05+01:00", 1704164645.0),
    ("2024-01-02 03:04:05Z", 1704164645.0),
    ("2024-01-02T03:04:05", 1704164645.0),
    ("0001-01-01T00:00:00Z", None),
    ("1970-01-01T00:00:00Z", None),
    ("yesterday", None),
    ("", None),
    (12345, None),
])
def test_parse_time(text: Any, expect: float | None) -> None:
    got = parse_time(text)
    if expect is None:
        assert got is None
    else:
        assert got == pytest.approx(expect, abs=1e-5)


def test_ambiguity() -> None:
    d = [f"sha256:{i:064x}" for i in range(6)]
    assert ambiguity({}, 60, "auto") is None
    assert ambiguity({d[0]: 100.0}, 60, "auto") is None  # type: ignore[dict-item]
    assert "1 of 1" in (ambiguity({d[0]: None}, 60, "auto") or "")  # type: ignore[dict-item]
    assert ambiguity({d[0]: 0.0, d[1]: 10.0}, 60, "auto")  # type: ignore[dict-item]
    assert ambiguity({d[0]: 0.0, d[1]: 100.0}, 60, "auto") is None  # type: ignore[dict-item]
    spread = {d[i]: i * 1000.0 for i in range(6)}
    assert ambiguity(spread, 60, "auto") is None  # type: ignore[arg-type]
    three_same = {**spread, d[1]: 0.0, d[2]: 0.0}
    assert ambiguity(three_same, 60, "auto") is None  # type: ignore[arg-type]  # 3 of 6 is not most
    four_same = {**three_same, d[3]: 0.0}
    assert "4 of 6" in (ambiguity(four_same, 60, "auto") or "")  # type: ignore[arg-type]
    missing = {d[i]: (None if i < 4 else 5.0) for i in range(6)}
    assert "4 of 6 tagged manifests have no timestamp" in (ambiguity(missing, 60, "auto") or "")  # type: ignore[arg-type]


# --- loading -------------------------------------------------------------------------------------
GOOD = """\
version = 1

[defaults]
grace = "2h"
time_source = "auto"

[[rule]]
name = "releases"
repositories = ["prod/**", "team/app"]
keep_tags = ["latest", 'v\\d+\\.\\d+\\.\\d+']
keep_last = 10
keep_within = "30d"
delete_tags = [".*"]
delete_older_than = "90d"
untagged = "delete"
untagged_older_than = "1d"
referrers = "delete"
trash = true
trash_retention = "7d"

[[rule]]
name = "everything else"
repositories = "**"
keep_last = 5
"""


def test_load_a_full_policy(tmp_path: Path) -> None:
    p = tmp_path / "ocigc.toml"
    p.write_text(GOOD)
    pol = load_policy(p)
    r1, r2 = pol.rules
    assert r1.name == "releases" and r1.line == 7 and r1.keep_last == 10 and r1.keep_within == 30 * DAY
    assert r1.grace == 7200 and r1.untagged == "delete" and r1.untagged_older_than == DAY
    assert r1.keep_pattern("v1.2.3") == "v\\d+\\.\\d+\\.\\d+"
    assert r1.keep_pattern("v1.2") is None
    assert r2.grace == 7200 and not r2.removes_tags
    assert any("everything else" in w and "removes no tags" in w for w in pol.warnings)
    assert len(pol.sha256) == 64


@pytest.mark.parametrize(("text", "needle"), [
    ("[[rule]]\nrepositories = '**'\nkeep_lst = 3\n",
     "p.toml:3: rule 1: keep_lst: unknown key (did you mean keep_last?)"),
    ("[[rule]]\nrepositories = '**'\nkeep_last = -1\n", "p.toml:3: rule 1: keep_last: must be a non-negative integer"),
    ("[[rule]]\nrepositories = '**'\nkeep_last = '5'\n", "keep_last: must be a non-negative integer, got '5'"),
    ("[[rule]]\nrepositories = '**'\nkeep_last = true\n", "keep_last: must be a non-negative integer"),
    ("[[rule]]\nname = 'x'\nrepositories = '**'\ndelete_tags = ['(']\n",
     "p.toml:4: rule 1 (x): delete_tags: invalid regex '('"),
    ("[[rule]]\nrepositories = '**'\nkeep_within = '3 days'\n", "p.toml:3: rule 1: keep_within: invalid keep_within"),
    ("[[rule]]\nrepositories = '**'\ndelete_tags = []\n", "delete_tags: empty list"),
    ("[[rule]]\nkeep_last = 1\n", "p.toml:1: rule 1: missing 'repositories'"),
    ("[[rule]]\nrepositories = []\n", "repositories: must name at least one glob"),
    ("[[rule]]\nrepositories = 3\n", "repositories: must be a glob or a list of globs, got 3"),
    ("[[rule]]\nname = 'a'\nrepositories = '**'\n[[rule]]\nname = 'a'\nrepositories = '**'\n",
     "p.toml:5: rule 2: name: duplicate rule name 'a' (also rule 1)"),
    ("", "p.toml: policy: no [[rule]] table"),
    ("colour = 'red'\n[[rule]]\nrepositories = '**'\n", "p.toml:1: top level: colour: unknown key"),
    ("version = 2\n[[rule]]\nrepositories = '**'\n", "p.toml:1: top level: version: unsupported policy version 2"),
    ("[defaults]\nname = 'x'\n[[rule]]\nrepositories = '**'\n", "p.toml:2: [defaults]: name: only a [[rule]]"),
    ("[defaults]\ngrace = 'soon'\n[[rule]]\nrepositories = '**'\n", "p.toml:2: [defaults]: grace: invalid grace"),
    ("[[rule]]\nrepositories = '**'\nuntagged = 'yes'\n", "untagged: must be 'keep' or 'delete', got 'yes'"),
    ("[[rule]]\nrepositories = '**'\nuntagged_older_than = '1d'\n", "untagged_older_than: needs untagged = \"delete\""),
    ("[[rule]]\nrepositories = '**'\ntime_source = 'ctime'\n", "time_source: must be 'auto' or"),
    ("[[rule]]\nrepositories = '**'\ntrash = 'yes'\n", "trash: must be true or false"),
    ("[[rule]]\nrepositories = '**'\ntrash = false\ntrash_retention = '1d'\n", "trash_retention: needs trash = true"),
    ("[[rule]\nrepositories = '**'\n", "p.toml:1: invalid TOML"),
    ("[[rule]]\nrepositories = '**'\nkeep_last = \n", "p.toml:3: invalid TOML"),
])
def test_policy_errors_are_one_line_and_say_where(text: str, needle: str) -> None:
    with pytest.raises(PolicyError) as ei:
        parse_policy(text, "p.toml")
    msg = str(ei.value)
    assert "\n" not in msg
    assert needle in msg, msg
    assert ei.value.exit_code == EXIT_USAGE


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such file"):
        load_policy(tmp_path / "nope.toml")
    with pytest.raises(PolicyError, match="is a directory"):
        load_policy(tmp_path)
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(bad)
