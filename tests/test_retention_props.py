"""Properties of policy sweeps on random layouts and random policies (real runs, grace 0):

* no tag matched by a keep rule is ever removed;
* no manifest reachable from a kept tag loses a blob (and no reference dangles at all);
* a manifest is kept or removed as a whole: while any of its tags remains, all of them remain.

The keep rules are evaluated here independently of ``ocigc.retention`` from what the generator
wrote (times, names, which images are referrers).
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ocigc.gc.plan import SweepOptions
from ocigc.gc.run import RunOptions, sweep_layout
from ocigc.layout.layout import Layout
from ocigc.retention.load import parse_policy
from ocigc.storage.local import LocalStorage
from tests.kit.layouts import OCI_INDEX, LayoutBuilder, blob_path
from tests.kit.tree import age, reachable

CREATED = "org.opencontainers.image.created"
REF = "org.opencontainers.image.ref.name"
DAY = 86400.0
NAMES = ["latest", "v1", "v1.0", "v2", "v2.1", "stable", "pr-1", "pr-2", "dev", "nightly", "x"]
KEEP_PATTERNS = ["v1.*", "stable", "v\\d+", "pr-2", "nightly|dev"]
DELETE_PATTERNS = [".*", "pr-.*", "v.*", "dev|x"]


@dataclass
class Tagged:
    position: int
    name: str
    digest: str
    time: float | None  # what the generator says the time source will find (None: mtime)
    referrer_of: str | None  # subject digest when the image is a referrer


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def make_layout(root: Path, rng: random.Random, now: float) -> tuple[list[Tagged], float]:
    b = LayoutBuilder(root)
    images: list[tuple[dict[str, Any], float | None, str | None]] = []  # (desc, manifest time, subject)
    derived: dict[str, float] = {}  # an index without times: the newest time of its manifests
    days = [1, 5, 5, 12, 30, 30, 45, 90]  # repeats: ties happen
    for i in range(rng.randint(2, 7)):
        t = now - rng.choice(days) * DAY - i if rng.random() < 0.8 else None
        desc = b.manifest([f"layer-{i}-{rng.random()}".encode()], json.dumps({"i": i}).encode(),
                          annotations={CREATED: _iso(t)} if t is not None else None)
        images.append((desc, t, None))
    for _ in range(rng.randint(0, 2)):  # multi-arch indexes
        kids = rng.sample([d for d, _, s in images if s is None], rng.randint(1, min(2, len(images))))
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX,
               "manifests": [{k: d[k] for k in ("mediaType", "digest", "size")} for d in kids]}
        t = now - rng.choice(days) * DAY if rng.random() < 0.7 else None
        if t is not None:
            doc["annotations"] = {CREATED: _iso(t)}
        desc = b.blob(json.dumps(doc).encode(), OCI_INDEX)
        times = [mt for d, mt, _ in images if d in kids and mt is not None]
        if times:
            derived[desc["digest"]] = max(times)
        images.append((desc, t, None))
    for n in range(rng.randint(0, 3)):  # referrers (signatures)
        subject = rng.choice(images)[0]
        desc = b.manifest([f"sig-{n}-{rng.random()}".encode()], b"{}",
                          subject={k: subject[k] for k in ("mediaType", "digest", "size")},
                          artifact_type="application/vnd.example.sig")
        images.append((desc, None, subject["digest"]))
    tagged: list[Tagged] = []
    pos = 0
    for desc, t, subject in images:
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            name = rng.choice(NAMES) if subject is None else rng.choice([f"sig-{rng.randint(0, 3)}", "latest",
                                                                          "stable"])
            extra: dict[str, Any] = {}
            et = t
            if t is None and rng.random() < 0.5 and subject is None:
                et = now - rng.choice(days) * DAY
                extra["annotations"] = {CREATED: _iso(et)}
            b.add(desc, name, **extra)
            if et is None:
                et = derived.get(desc["digest"])
            tagged.append(Tagged(pos, name, desc["digest"], et, subject))
            pos += 1
        if rng.random() < 0.3:
            b.add(desc, None)
            pos += 1
    b.save()
    age(root, 3 * 3600)
    mtime = (root / "index.json").stat().st_mtime
    return tagged, mtime


def make_policy(rng: random.Random) -> tuple[str, dict[str, Any]]:
    p: dict[str, Any] = {}
    if rng.random() < 0.6:
        p["keep_last"] = rng.randint(0, 3)
    if rng.random() < 0.4:
        p["keep_within"] = rng.choice([("10d", 10), ("40d", 40)])
    if rng.random() < 0.6:
        p["keep_tags"] = rng.sample(KEEP_PATTERNS, rng.randint(1, 2))
    if rng.random() < 0.85:
        p["delete_tags"] = rng.choice(DELETE_PATTERNS)
    if rng.random() < 0.4:
        p["delete_older_than"] = rng.choice([("3d", 3), ("20d", 20)])
    p["keep_latest"] = rng.random() < 0.7
    p["untagged"] = rng.choice(["keep", "delete"])
    p["referrers"] = rng.choice(["delete", "keep"])
    p["ambiguous_times"] = rng.choice(["refuse", "proceed", "proceed"])
    lines = ['[[rule]]', 'name = "r"', 'repositories = "**"', 'grace = "0"']
    for k, v in p.items():
        if isinstance(v, tuple):
            lines.append(f'{k} = "{v[0]}"')
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{k} = {v}")
        elif isinstance(v, list):
            lines.append(f"{k} = [{', '.join(json.dumps(x) for x in v)}]")
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n", p


def keep_matched(tagged: list[Tagged], p: dict[str, Any], now: float, mtime: float,
                 live_subjects: set[str]) -> set[tuple[str, str]]:
    """(name, digest) of every tag a keep criterion matches, computed from the generator's facts."""
    out: set[tuple[str, str]] = set()
    ranked = [t for t in tagged if t.referrer_of is None or t.referrer_of not in live_subjects]

    def when(t: Tagged) -> float:
        return t.time if t.time is not None else mtime

    best: dict[str, tuple[float, int]] = {}
    for t in ranked:
        cur = best.get(t.digest)
        best[t.digest] = (when(t), t.position) if cur is None else (max(cur[0], when(t)), max(cur[1], t.position))
    order = sorted(best, key=lambda d: (-best[d][0], -best[d][1], d))
    newest = set(order[: p["keep_last"]]) if "keep_last" in p else set()
    for t in tagged:
        if p["keep_latest"] and t.name == "latest":
            out.add((t.name, t.digest))
        if any(re.fullmatch(pat, t.name) for pat in p.get("keep_tags", [])):
            out.add((t.name, t.digest))
        if t in ranked:
            if t.digest in newest:
                out.add((t.name, t.digest))
            if "keep_within" in p and now - when(t) < p["keep_within"][1] * DAY:
                out.add((t.name, t.digest))
    return out


def entries(root: Path) -> list[tuple[str | None, str]]:
    doc = json.loads((root / "index.json").read_text())
    return [((m.get("annotations") or {}).get(REF), m["digest"]) for m in doc["manifests"]]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_keep_rules_always_win_and_kept_images_stay_whole(seed: int) -> None:
    rng = random.Random(seed)
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "app"
        tagged, mtime = make_layout(root, rng, now)
        text, p = make_policy(rng)
        live_subjects = reachable(root)
        must_keep = keep_matched(tagged, p, now, mtime, live_subjects)
        before = entries(root)
        policy = parse_policy(text, "prop.toml")
        layout = Layout.open(LocalStorage(root), "app")
        out = sweep_layout(layout, policy.sweep_options(layout, SweepOptions(grace=0)), RunOptions(jobs=2))
        assert out.error is None, out.error
        after = entries(root)
        left = {(n, d) for n, d in after if n is not None}
        # 1. no tag matched by a keep rule is removed
        assert must_keep <= left, (text, must_keep - left)
        # 2. nothing reachable from a kept tag lost a blob; nothing dangles
        for d in reachable(root):
            assert blob_path(root, d).exists(), (text, d)
        # 3. a manifest keeps all its tags while it keeps any
        names: dict[str, set[str]] = {}
        for n, d in before:
            if n is not None:
                names.setdefault(d, set()).add(n)
        for d in {d for _, d in left}:
            assert names[d] <= {n for n, dd in left if dd == d}, (text, d)
        # the decisions describe exactly what went
        assert out.plan is not None
        removed = {(d["tag"], d["digest"]) for d in out.plan.decisions if d["action"] == "remove"}
        gone = {(n, d) for n, d in before if n is not None} - left
        assert removed == gone, text
