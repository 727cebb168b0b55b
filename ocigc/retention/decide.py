"""Retention policies: a TOML file of rules, and the decision that turns one into an ``EntrySelection``.

A policy is a list of rules. The first rule whose ``repositories`` globs match a layout's path
under the sweep root applies to that layout; a layout no rule matches keeps every tag. Within a
rule, per tag (an ``index.json`` entry with a name):

* keep criteria are OR'ed and always win: the tag ``latest`` (unless ``keep_latest = false``),
  ``keep_tags`` (anchored regexes), the ``keep_last`` newest tags, tags newer than
  ``keep_within``;
* delete criteria are AND'ed: a tag goes only when it matches every one the rule sets
  (``delete_tags``, ``delete_older_than``); a rule that sets none removes no tag;
* a tag whose manifest blob is younger than the grace period (or cannot be stat-ed) is kept;
* decisions are per tag, acted on per manifest: a manifest with any kept tag, or reachable from
  a kept tag (a platform manifest of a kept index), keeps all its tags;
* referrers (a manifest with a ``subject``, or a referrers-schema tag ``sha256-<hex>[.sig]``) are
  not ranked by the rules: they follow their subject and go with it unless ``referrers = "keep"``
  (a referrer tag matched by ``keep_tags`` stays regardless);
* ``untagged = "delete"`` also drops untagged entries no kept tag reaches that are not referrers
  of a live subject, older (by blob mtime) than ``untagged_older_than`` (default: the grace);
* times come from an explicit source (``time_source``): ``auto`` is the manifest's
  ``org.opencontainers.image.created`` annotation, then the ``index.json`` entry's, then the
  image config's ``created``, then the manifest blob's mtime. When a rule needs times and most
  tagged manifests of a repository have none, or the same one (within ``same_time_window``), the
  rule refuses to act on that repository (``ambiguous_times = "proceed"`` overrides).

``decide`` is pure (the index, the graph and the facts in, an ``EntrySelection`` out);
``gather`` reads what it needs through the layout (config blobs only when the chain gets there).
See ``docs/retention.md``.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ocigc.digest import Digest
from ocigc.duration import format_duration, parse_duration
from ocigc.errors import ManifestError, UsageError
from ocigc.gc.cascade import cascade
from ocigc.gc.plan import EntryRemoval, EntrySelection, EntrySelector, SweepOptions, untagged_removals
from ocigc.gc.run import RunOptions
from ocigc.jsonload import load_json
from ocigc.layout.graph import RefGraph
from ocigc.layout.layout import Layout
from ocigc.layout.state import LayoutState
from ocigc.oci.descriptor import ANNOTATION_CREATED, Descriptor
from ocigc.oci.index import Index
from ocigc.oci.referrers import tag_subject
from ocigc.parallel import DEFAULT_JOBS, pmap

# --- the model ----------------------------------------------------------------------------------
SOURCE_MANIFEST = "manifest-annotation"
SOURCE_ENTRY = "entry-annotation"
SOURCE_CONFIG = "config-created"
SOURCE_MTIME = "mtime"
SOURCES = (SOURCE_MANIFEST, SOURCE_ENTRY, SOURCE_CONFIG, SOURCE_MTIME)
TIME_SOURCES = ("auto", *SOURCES)
SOURCE_WORDS = {
    SOURCE_MANIFEST: "the manifest's org.opencontainers.image.created annotation",
    SOURCE_ENTRY: "the index.json entry's org.opencontainers.image.created annotation",
    SOURCE_CONFIG: "the image config's created field",
    SOURCE_MTIME: "the manifest blob's modification time",
}

DEFAULT_SAME_TIME_WINDOW = 60.0
POLICY_VERSION = 1

UntaggedMode = Literal["keep", "delete"]
ReferrerMode = Literal["delete", "keep"]
AmbiguousMode = Literal["refuse", "proceed"]

#: Keys a rule (or ``[defaults]``) may set, and what each must be (for messages).
RULE_KEYS: dict[str, str] = {
    "name": "a string",
    "repositories": "a glob or a list of globs",
    "keep_last": "a non-negative integer",
    "keep_within": "a duration such as \"30d\"",
    "keep_tags": "a regex or a list of regexes",
    "keep_latest": "true or false",
    "delete_tags": "a regex or a list of regexes",
    "delete_older_than": "a duration such as \"90d\"",
    "untagged": "\"keep\" or \"delete\"",
    "untagged_older_than": "a duration",
    "referrers": "\"delete\" or \"keep\"",
    "grace": "a duration (0 allowed)",
    "trash": "true or false",
    "trash_retention": "a duration",
    "time_source": " or ".join(f'"{s}"' for s in TIME_SOURCES),
    "ambiguous_times": "\"refuse\" or \"proceed\"",
    "same_time_window": "a duration",
}
#: Keys only a rule may set (not ``[defaults]``).
RULE_ONLY = frozenset({"name", "repositories"})
TOP_KEYS = frozenset({"version", "defaults", "rule"})


class PolicyError(UsageError):
    """A policy file that cannot be used: one line naming the file, the line or key, the problem."""


@dataclass(frozen=True)
class Rule:
    name: str
    number: int  # 1-based position in the file
    repositories: tuple[str, ...]
    keep_last: int | None = None
    keep_within: float | None = None
    keep_tags: tuple[str, ...] = ()
    keep_latest: bool = True
    delete_tags: tuple[str, ...] | None = None
    delete_older_than: float | None = None
    untagged: UntaggedMode = "keep"
    untagged_older_than: float | None = None
    referrers: ReferrerMode = "delete"
    grace: float | None = None
    trash: bool | None = None
    trash_retention: float | None = None
    time_source: str = "auto"
    ambiguous_times: AmbiguousMode = "refuse"
    same_time_window: float = DEFAULT_SAME_TIME_WINDOW
    line: int | None = None
    _repo_res: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _keep_res: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _delete_res: tuple[re.Pattern[str], ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_repo_res", tuple(glob_regex(g) for g in self.repositories))
        object.__setattr__(self, "_keep_res", tuple(re.compile(p) for p in self.keep_tags))
        if self.delete_tags is not None:
            object.__setattr__(self, "_delete_res", tuple(re.compile(p) for p in self.delete_tags))

    @property
    def label(self) -> str:
        return self.name

    @property
    def uses_time(self) -> bool:
        """Whether a decision of this rule depends on when a tag was made."""
        return self.keep_last is not None or self.keep_within is not None or self.delete_older_than is not None

    @property
    def removes_tags(self) -> bool:
        return self.delete_tags is not None or self.delete_older_than is not None

    def matches(self, repository: str) -> bool:
        repo = repository.strip("/")
        return any(r.fullmatch(repo) for r in self._repo_res)

    def keep_pattern(self, tag: str) -> str | None:
        for text, rx in zip(self.keep_tags, self._keep_res, strict=True):
            if rx.fullmatch(tag):
                return text
        return None

    def delete_pattern(self, tag: str) -> str | None:
        if self.delete_tags is None or self._delete_res is None:
            return None
        for text, rx in zip(self.delete_tags, self._delete_res, strict=True):
            if rx.fullmatch(tag):
                return text
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "number": self.number, "line": self.line, "repositories": list(self.repositories),
            "keep_last": self.keep_last, "keep_within": self.keep_within, "keep_tags": list(self.keep_tags),
            "keep_latest": self.keep_latest,
            "delete_tags": list(self.delete_tags) if self.delete_tags is not None else None,
            "delete_older_than": self.delete_older_than, "untagged": self.untagged,
            "untagged_older_than": self.untagged_older_than, "referrers": self.referrers, "grace": self.grace,
            "trash": self.trash, "trash_retention": self.trash_retention, "time_source": self.time_source,
            "ambiguous_times": self.ambiguous_times, "same_time_window": self.same_time_window,
        }


@dataclass(frozen=True)
class Policy:
    path: str
    rules: tuple[Rule, ...]
    sha256: str = ""
    warnings: tuple[str, ...] = ()

    def rule_for(self, repository: str) -> Rule | None:
        """The first rule whose ``repositories`` match (None: the repository keeps every tag)."""
        for rule in self.rules:
            if rule.matches(repository):
                return rule
        return None

    def selector(self, layout: Layout, grace: float, jobs: int = DEFAULT_JOBS) -> EntrySelector:
        """The ``SweepOptions.select_entries`` hook for one layout."""
        repo = repository_name(layout)
        rule = self.rule_for(repo)

        def select(lay: Layout, state: LayoutState, now: float) -> EntrySelection:
            if rule is None:
                return EntrySelection(notes=[f"policy {self.path}: no rule matches {repo!r}: every tag kept"])
            facts = gather(rule, lay, state, jobs)
            return decide(rule, repo, state.index, state.graph, facts, now, grace)

        return select

    def sweep_options(self, layout: Layout, base: SweepOptions) -> SweepOptions:
        """``base`` with this policy's selector, and the matching rule's grace (else the command's)."""
        rule = self.rule_for(repository_name(layout))
        grace = rule.grace if rule is not None and rule.grace is not None else base.grace
        return replace(base, grace=grace, select_entries=self.selector(layout, grace, base.jobs))

    def run_options(self, layout: Layout, base: RunOptions) -> RunOptions:
        """``base`` with the matching rule's trash settings (else the command's)."""
        rule = self.rule_for(repository_name(layout))
        if rule is None:
            return base
        if rule.trash is not None:
            base = replace(base, trash=rule.trash)
        if rule.trash_retention is not None:
            base = replace(base, trash_retention=rule.trash_retention)
        return base

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "rules": [r.to_json() for r in self.rules],
                "warnings": list(self.warnings)}


def repository_name(layout: Layout) -> str:
    """The name rules match: the layout's path under the sweep root (its directory name for a root)."""
    if layout.name:
        return layout.name.strip("/")
    return Path(layout.location.rstrip("/")).name


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A repository glob: ``*`` and ``?`` stay within one path segment, ``**`` crosses ``/``."""
    pat = pattern.strip().strip("/")
    out: list[str] = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pat.find("]", i + 2 if pat[i + 1:i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pat[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


# --- loading -----------------------------------------------------------------------------------
_SECTION = re.compile(r"^\s*\[\[\s*rule\s*\]\]|^\s*\[\s*(defaults)\s*\]")
_KEY = re.compile(r"^\s*(?:\"([^\"]+)\"|'([^']+)'|([A-Za-z0-9_-]+))\s*=")


def _key_lines(text: str) -> dict[tuple[str, str], int]:
    """Best-effort (section, key) -> line number; section is "" (top), "defaults" or "rule N"."""
    out: dict[tuple[str, str], int] = {}
    section = ""
    rules = 0
    for n, line in enumerate(text.splitlines(), 1):
        m = _SECTION.match(line)
        if m:
            if m.group(1):
                section = "defaults"
            else:
                rules += 1
                section = f"rule {rules}"
            out.setdefault((section, ""), n)
            continue
        if line.lstrip().startswith("["):
            section = line.strip()
            continue
        k = _KEY.match(line)
        if k:
            out.setdefault((section, k.group(1) or k.group(2) or k.group(3)), n)
    return out


class _Loader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = _key_lines(text)
        self.warnings: list[str] = []

    def fail(self, section: str, key: str, problem: str, label: str | None = None) -> PolicyError:
        line = self.lines.get((section, key)) or self.lines.get((section, ""))
        where = f"{self.path}:{line}" if line else self.path
        what = label or section or "top level"
        if key:
            what = f"{what}: {key}" if what else key
        return PolicyError(f"{where}: {what}: {problem}")

    def load(self, doc: dict[str, Any]) -> tuple[Rule, ...]:
        for key in doc:
            if key not in TOP_KEYS:
                raise self.fail("", key, f"unknown key (expected {', '.join(sorted(TOP_KEYS))})",
                                label="top level")
        version = doc.get("version", POLICY_VERSION)
        if version != POLICY_VERSION:
            raise self.fail("", "version", f"unsupported policy version {version!r} (this ocigc reads 1)")
        defaults = doc.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self.fail("", "defaults", "must be a table ([defaults])")
        for key in defaults:
            if key in RULE_ONLY:
                raise self.fail("defaults", key, "only a [[rule]] may set this", label="[defaults]")
            if key not in RULE_KEYS:
                raise self.fail("defaults", key, _unknown(key), label="[defaults]")
        raw_rules = doc.get("rule")
        if raw_rules is None:
            raise self.fail("", "", "no [[rule]] table: a policy needs at least one rule", label="policy")
        if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
            raise self.fail("", "rule", "must be an array of tables ([[rule]])")
        rules = []
        names: dict[str, int] = {}
        for n, raw in enumerate(raw_rules, 1):
            rule = self.rule(n, {**defaults, **raw}, set(raw))
            if rule.name in names:
                raise self.fail(f"rule {n}", "name", f"duplicate rule name {rule.name!r} (also rule "
                                f"{names[rule.name]})", label=f"rule {n}")
            names[rule.name] = n
            rules.append(rule)
        return tuple(rules)

    def rule(self, n: int, raw: dict[str, Any], own: set[str]) -> Rule:
        section = f"rule {n}"
        name = raw.get("name", f"rule-{n}")
        label = f"rule {n}" + (f" ({name})" if isinstance(name, str) and "name" in raw else "")

        def err(key: str, problem: str) -> PolicyError:
            return self.fail(section if key in own or not key else "defaults", key, problem,
                             label=label if key in own or not key else "[defaults]")

        for key in raw:
            if key not in RULE_KEYS:
                raise err(key, _unknown(key))
        if not isinstance(name, str) or not name.strip():
            raise err("name", "must be a non-empty string")
        if "repositories" not in raw:
            raise err("", "missing 'repositories' (a glob or a list of globs; \"**\" matches every repository)")
        repos = self._strings(raw["repositories"], "repositories", err)
        if not repos:
            raise err("repositories", "must name at least one glob")
        for g in repos:
            if not g.strip():
                raise err("repositories", "empty glob")
        kw: dict[str, Any] = {"name": name.strip(), "number": n, "repositories": tuple(repos),
                              "line": self.lines.get((section, ""))}
        if "keep_last" in raw:
            v = raw["keep_last"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise err("keep_last", f"must be a non-negative integer, got {v!r}")
            kw["keep_last"] = v
        for key in ("keep_within", "delete_older_than", "untagged_older_than", "grace", "trash_retention",
                    "same_time_window"):
            if key in raw:
                kw[key] = self._duration(raw[key], key, err)
        for key in ("keep_tags", "delete_tags"):
            if key in raw:
                pats = self._strings(raw[key], key, err)
                for p in pats:
                    try:
                        re.compile(p)
                    except re.error as e:
                        raise err(key, f"invalid regex {p!r}: {e}") from None
                if key == "delete_tags" and not pats:
                    raise err(key, "empty list: leave delete_tags out, or name the tags to remove")
                kw[key] = tuple(pats)
        for key in ("keep_latest", "trash"):
            if key in raw:
                if not isinstance(raw[key], bool):
                    raise err(key, f"must be true or false, got {raw[key]!r}")
                kw[key] = raw[key]
        choices = {"untagged": ("keep", "delete"), "referrers": ("delete", "keep"),
                   "time_source": TIME_SOURCES, "ambiguous_times": ("refuse", "proceed")}
        for key, allowed in choices.items():
            if key in raw:
                if raw[key] not in allowed:
                    raise err(key, f"must be {' or '.join(repr(a) for a in allowed)}, got {raw[key]!r}")
                kw[key] = raw[key]
        if "untagged_older_than" in kw and kw.get("untagged", "keep") != "delete":
            raise err("untagged_older_than", "needs untagged = \"delete\"")
        if "trash_retention" in kw and kw.get("trash") is False:
            raise err("trash_retention", "needs trash = true")
        rule = Rule(**kw)
        if not rule.removes_tags:
            self.warnings.append(f"{label}: removes no tags (no delete_tags or delete_older_than); "
                                 "add delete_tags = [\".*\"] to remove the tags its keep rules do not keep")
        return rule

    def _strings(self, value: Any, key: str, err: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise err(key, f"must be {RULE_KEYS[key]}, got {value!r}")

    def _duration(self, value: Any, key: str, err: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise err(key, f"must be {RULE_KEYS[key]}, got {value!r}")
        try:
            return parse_duration(str(value), key)
        except UsageError as e:
            raise err(key, str(e)) from None


def _unknown(key: str) -> str:
    close = [k for k in RULE_KEYS if _similar(k, key)]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown key{hint}"


def _similar(a: str, b: str) -> bool:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.8


def parse_policy(text: str, path: str = "<policy>") -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        if m:
            raise PolicyError(f"{path}:{m.group(1)}: invalid TOML: {msg[:m.start()].strip()}") from None
        raise PolicyError(f"{path}: invalid TOML: {msg}") from None
    loader = _Loader(path, text)
    rules = loader.load(doc)
    return Policy(path, rules, hashlib.sha256(text.encode()).hexdigest(), tuple(loader.warnings))


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; PolicyError (exit 2) with a one-line message otherwise."""
    p = str(path)
    try:
        raw = Path(p).read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise PolicyError(f"{p}: is a directory") from None
    except OSError as e:
        raise PolicyError(f"{p}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{p}: not UTF-8 text") from None
    return parse_policy(text, p)


# --- times ---------------------------------------------------------------------------------------
_FRACTION = re.compile(r"(\.\d+)")


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (as OCI annotations and config ``created`` use) as POSIX seconds."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: m.group(1)[:7], text, count=1)  # Go writes nanoseconds
    text = text.replace(" ", "T", 1) if "T" not in text and "t" not in text else text
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if dt.year < 1971:  # "0001-01-01T00:00:00Z" and epoch zero: reproducible builds mean "unknown"
        return None
    return dt.timestamp()


def format_time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Stamp:
    time: float | None
    source: str | None
    detail: str | None = None  # why there is no time (or what was skipped)


@dataclass
class Facts:
    """What ``decide`` needs beyond the index and the graph; gathered through the layout."""

    #: index.json position -> the time of that tagged entry (only when the rule uses times).
    stamps: dict[int, Stamp] = field(default_factory=dict)
    #: manifest digest -> blob mtime; None when the stat failed or the blob is missing.
    mtimes: dict[Digest, float | None] = field(default_factory=dict)


class _TimeReader:
    def __init__(self, layout: Layout, graph: RefGraph, mtimes: Mapping[Digest, float | None]) -> None:
        self.layout = layout
        self.graph = graph
        self.mtimes = mtimes
        self._config: dict[Digest, Stamp] = {}

    def stamp(self, entry: Descriptor, source: str) -> Stamp:
        order = SOURCES if source == "auto" else (source,)
        skipped: list[str] = []
        for src in order:
            st = self._one(entry, src)
            if st.time is not None:
                return st
            if st.detail:
                skipped.append(st.detail)
        return Stamp(None, None, "; ".join(skipped) or f"no {('timestamp' if source == 'auto' else source)}")

    def _one(self, entry: Descriptor, src: str) -> Stamp:
        d = entry.digest
        if src == SOURCE_MANIFEST:
            return self._annotation(self._manifest_annotations(d), src)
        if src == SOURCE_ENTRY:
            return self._annotation(entry.annotations, src)
        if src == SOURCE_CONFIG:
            return self._config_time(d, 0, frozenset())
        mt = self.mtimes.get(d)
        return Stamp(mt, SOURCE_MTIME) if mt is not None else Stamp(None, None, "mtime unknown (stat failed)")

    def _manifest_annotations(self, d: Digest) -> Mapping[str, Any]:
        if d not in self.graph:
            return {}
        ann = self.graph.node(d).get("annotations")
        return ann if isinstance(ann, dict) else {}

    @staticmethod
    def _annotation(annotations: Mapping[str, Any], src: str) -> Stamp:
        value = annotations.get(ANNOTATION_CREATED)
        if value is None:
            return Stamp(None, None)
        t = parse_time(value)
        if t is None:
            return Stamp(None, None, f"{src} {str(value)[:40]!r} is not a usable RFC 3339 time")
        return Stamp(t, src)

    def _config_time(self, d: Digest, depth: int, seen: frozenset[Digest]) -> Stamp:
        """The config's ``created``; for an index the newest of its children's (manifest annotation or config)."""
        if d in self._config:
            return self._config[d]
        if d not in self.graph or d in seen or depth > 4:
            return Stamp(None, None)
        node = self.graph.node(d)
        kids = self.graph.children(d)
        configs = [c for c, kinds in kids if "config" in kinds]
        out = Stamp(None, None)
        if configs:
            out = self._read_config(configs[0])
        elif node.get("kind") == "index":
            best: float | None = None
            for child, kinds in kids:
                if "child" not in kinds:
                    continue
                st = self._annotation(self._manifest_annotations(child), SOURCE_MANIFEST)
                if st.time is None:
                    st = self._config_time(child, depth + 1, seen | {d})
                if st.time is not None and (best is None or st.time > best):
                    best = st.time
            if best is not None:
                out = Stamp(best, SOURCE_CONFIG)
        self._config[d] = out
        return out

    def _read_config(self, config: Digest) -> Stamp:
        try:
            raw = self.layout.read_blob(config, limit=4 * 1024 * 1024)
            doc = load_json(raw, limit=None)
        except (OSError, ManifestError, ValueError):
            return Stamp(None, None, f"config {config.short} unreadable")
        value = doc.get("created") if isinstance(doc, dict) else None
        if value is None:
            return Stamp(None, None)
        t = parse_time(value)
        if t is None:
            return Stamp(None, None, f"config created {str(value)[:40]!r} is not a usable time")
        return Stamp(t, SOURCE_CONFIG)


# --- classification ------------------------------------------------------------------------------
def tag_part(ref_name: str) -> str:
    """What the patterns see: the tag after the last ``:`` that follows the last ``/``."""
    slash = ref_name.rfind("/")
    colon = ref_name.rfind(":")
    return ref_name[colon + 1:] if colon > slash else ref_name


def referrer_subject(entry: Descriptor, graph: RefGraph, present: set[Digest]) -> Digest | None:
    """The subject a tagged entry refers to, when it is a referrer of something in the layout."""
    if entry.digest in graph:
        for s, kinds in graph.children(entry.digest, include_subject=True):
            if "subject" in kinds and s in present:
                return Digest(s)
    return tag_subject(entry.ref_name, present)


def gather(rule: Rule, layout: Layout, state: LayoutState, jobs: int = DEFAULT_JOBS) -> Facts:
    """Read what the rule needs: blob mtimes of tagged (and, for untagged cleanup, untagged)
    manifests, and the times of ranked tags (config blobs only when the chain gets there)."""
    index, graph = state.index, state.graph
    present = graph.reachable(index.root_digests())
    facts = Facts()
    ranked = [(i, e) for i, e in enumerate(index.entries)
              if e.ref_name is not None and referrer_subject(e, graph, present) is None]
    want: set[Digest] = set()
    if rule.removes_tags or rule.time_source in ("auto", SOURCE_MTIME):
        want |= {e.digest for _, e in ranked}
    if rule.untagged == "delete":
        want |= {e.digest for e in index.entries if not e.has_ref_name}
    if not rule.uses_time and not rule.removes_tags:
        want -= {e.digest for _, e in ranked}
    seq = sorted(want)

    def mtime(d: Digest) -> float | None:
        try:
            st = layout.stat_blob(d)
        except OSError:
            return None
        return st.mtime if st is not None else None

    facts.mtimes = dict(zip(seq, pmap(mtime, seq, jobs), strict=True))
    if rule.uses_time and ranked:
        reader = _TimeReader(layout, graph, facts.mtimes)
        stamps = pmap(lambda ie: reader.stamp(ie[1], rule.time_source), ranked, jobs)
        facts.stamps = {i: s for (i, _), s in zip(ranked, stamps, strict=True)}
    return facts


def ambiguity(times: Mapping[Digest, float | None], window: float, source: str) -> str | None:
    """Why the times of a repository's tagged manifests cannot be trusted for ordering, or None."""
    n = len(times)
    if n == 0:
        return None
    missing = sum(1 for t in times.values() if t is None)
    if missing * 2 > n:
        what = "timestamp" if source == "auto" else f"{source} timestamp"
        return f"{missing} of {n} tagged manifests have no {what}"
    known = sorted(t for t in times.values() if t is not None)
    best, lo, at = 0, 0, 0.0
    for hi, t in enumerate(known):
        while t - known[lo] > window:
            lo += 1
        if hi - lo + 1 > best:
            best, at = hi - lo + 1, known[lo]
    if n >= 2 and best >= 2 and best * 2 > n:
        same = "the same timestamp" if window == 0 else f"timestamps within {format_duration(window)} of each other"
        return f"{best} of {n} tagged manifests have {same} ({format_time(at)})"
    return None


# --- the decision --------------------------------------------------------------------------------
@dataclass
class _Tag:
    pos: int
    entry: Descriptor
    name: str  # the full ref.name
    short: str  # what patterns see
    subject: Digest | None
    stamp: Stamp | None = None
    action: str = "keep"
    by: str = "no-delete-match"
    reason: str = ""
    protected: bool = False  # matched a keep criterion (never removed, not even by a cascade)


def decide(rule: Rule, repository: str, index: Index, graph: RefGraph, facts: Facts, now: float,
           grace: float) -> EntrySelection:
    """Per-tag decisions of ``rule`` for one repository, acted on per manifest. Pure."""
    sel = EntrySelection()
    present = graph.reachable(index.root_digests())
    tags = [_Tag(i, e, e.ref_name or "", tag_part(e.ref_name or ""), referrer_subject(e, graph, present))
            for i, e in enumerate(index.entries) if e.ref_name is not None]
    ranked = [t for t in tags if t.subject is None]
    attached = [t for t in tags if t.subject is not None]
    sel.notes.append(f"policy rule {rule.name!r} applies to {repository!r}")

    refused: str | None = None
    if rule.uses_time and ranked:
        for t in ranked:
            t.stamp = facts.stamps.get(t.pos, Stamp(None, None, "not read"))
        by_digest: dict[Digest, float | None] = {}
        for t in ranked:
            assert t.stamp is not None
            by_digest.setdefault(t.entry.digest, t.stamp.time)
        refused = ambiguity(by_digest, rule.same_time_window, rule.time_source)
    if refused is not None and rule.ambiguous_times == "refuse":
        msg = (f"rule {rule.name!r} refuses to act on {repository!r}: {refused}; times are ambiguous, "
               "so no tag or untagged entry is removed here (set ambiguous_times = \"proceed\" or choose "
               "time_source to override)")
        sel.notes.append(msg)
        for t in tags:
            _set(t, "keep", "refused", f"times ambiguous: {refused}")
        sel.decisions.extend(_decision(rule, repository, t) for t in tags)
        return sel
    if refused is not None:
        sel.notes.append(f"rule {rule.name!r}: {refused}; proceeding (ambiguous_times = \"proceed\")")

    _classify(rule, ranked, now)
    for t in attached:  # referrers are not ranked, but an explicit keep still wins
        if rule.keep_latest and t.short == "latest":
            _set(t, "keep", "keep_latest", "\"latest\" is always kept (keep_latest)", protected=True)
        elif (pat := rule.keep_pattern(t.short)) is not None:
            _set(t, "keep", "keep_tags", f"keep_tags \"{pat}\" matches", protected=True)
    _protect_young(rule, ranked, facts, now, grace)
    _per_manifest(index, graph, tags)

    drop: dict[int, str] = {t.pos: f"policy {rule.name}: {t.reason}" for t in ranked if t.action == "remove"}
    targets = {index.entries[p].digest for p in drop}
    protected = {t.pos for t in ranked} | {t.pos for t in attached if t.protected}
    cascade(index, graph, drop, targets, keep_referrers=rule.referrers == "keep", protected=protected,
            verb="removed")

    if rule.untagged == "delete":
        age = rule.untagged_older_than if rule.untagged_older_than is not None else grace
        for r in untagged_removals(index, graph, set(drop)):
            if r.position in drop:
                continue
            mt = facts.mtimes.get(r.digest)
            if mt is None:
                sel.notes.append(f"untagged entry {r.digest.short} kept: its age is unknown (stat failed)")
            elif now - mt < age:
                sel.notes.append(f"untagged entry {r.digest.short} kept: younger than {format_duration(age)}")
            else:
                drop[r.position] = f"policy {rule.name}: untagged, no kept tag reaches it, older than " \
                                   f"{format_duration(age)}"
        # What the untagged removals take along: their referrers (the one cascade, as for tags).
        new = {p for p in drop if p not in protected}
        targets |= {index.entries[p].digest for p in new}
        cascade(index, graph, drop, targets, keep_referrers=rule.referrers == "keep", protected=protected,
                verb="removed")

    for t in attached:
        if t.protected:
            continue
        if t.pos in drop:
            _set(t, "remove", "referrer", drop[t.pos].removeprefix(f"policy {rule.name}: "))
        elif rule.referrers == "keep":
            _set(t, "keep", "referrer", f"referrer of {t.subject.short if t.subject else '?'}; the rule keeps "
                 "referrers")
        else:
            _set(t, "keep", "referrer", f"referrer of {t.subject.short if t.subject else '?'}, which stays")

    by_pos = {t.pos: t for t in tags}
    for pos in sorted(drop):
        e = index.entries[pos]
        hit = by_pos.get(pos)
        if hit is not None and hit.action != "remove":  # a cascade reached a tag: record it
            _set(hit, "remove", "cascade", drop[pos].removeprefix(f"policy {rule.name}: "))
        sel.remove.append(EntryRemoval(pos, e.digest, e.ref_name, drop[pos]))
    sel.decisions.extend(_decision(rule, repository, t) for t in tags)
    return sel


def _set(t: _Tag, action: str, by: str, reason: str, protected: bool = False) -> None:
    t.action, t.by, t.reason = action, by, reason
    t.protected = t.protected or protected


def _when(t: _Tag) -> str:
    """``2024-05-01T12:00:00Z from manifest-annotation``."""
    if t.stamp is None or t.stamp.time is None:
        return "no time"
    return f"{format_time(t.stamp.time)} from {t.stamp.source}"


def manifest_ranks(ranked: list[_Tag]) -> dict[Digest, int]:
    """keep_last order: tagged manifests newest first (1 = newest); the tags of one manifest count once.

    A manifest's time is the newest of its tags' times; equal times are ordered by the latest
    index.json position among its tags (later entries were written later), then by digest."""
    best: dict[Digest, tuple[float, int]] = {}
    for t in ranked:
        if t.stamp is None or t.stamp.time is None:
            continue
        d = t.entry.digest
        cur = best.get(d)
        key = (t.stamp.time, t.pos)
        best[d] = key if cur is None else (max(cur[0], key[0]), max(cur[1], key[1]))
    order = sorted(best, key=lambda d: (-best[d][0], -best[d][1], d))
    return {d: n for n, d in enumerate(order, 1)}


def _classify(rule: Rule, ranked: list[_Tag], now: float) -> None:
    rank = manifest_ranks(ranked) if rule.keep_last is not None else {}
    for t in ranked:
        time_ = t.stamp.time if t.stamp is not None else None
        keeps: list[tuple[str, str]] = []
        if rule.keep_latest and t.short == "latest":
            keeps.append(("keep_latest", "\"latest\" is always kept (keep_latest)"))
        pat = rule.keep_pattern(t.short)
        if pat is not None:
            keeps.append(("keep_tags", f"keep_tags \"{pat}\" matches"))
        n = rank.get(t.entry.digest)
        if rule.keep_last is not None and n is not None and n <= rule.keep_last:
            keeps.append(("keep_last", f"keep_last {rule.keep_last}: manifest #{n} newest ({_when(t)})"))
        if rule.keep_within is not None and time_ is not None and now - time_ < rule.keep_within:
            keeps.append(("keep_within", f"keep_within {format_duration(rule.keep_within)}: "
                                         f"{format_duration(now - time_)} old, {_when(t)}"))
        if keeps:
            _set(t, "keep", keeps[0][0], "; ".join(k[1] for k in keeps), protected=True)
            continue
        if not rule.removes_tags:
            _set(t, "keep", "no-delete-rule", "the rule has no delete criterion")
            continue
        if rule.uses_time and time_ is None:
            why = t.stamp.detail if t.stamp is not None and t.stamp.detail else "no timestamp"
            _set(t, "keep", "no-time", f"no timestamp ({why}): kept", protected=True)
            continue
        met: list[str] = []
        if rule.delete_tags is not None:
            dpat = rule.delete_pattern(t.short)
            if dpat is None:
                _set(t, "keep", "no-delete-match", "matches no delete_tags pattern")
                continue
            met.append(f"delete_tags \"{dpat}\" matches")
        if rule.delete_older_than is not None:
            assert time_ is not None
            age = now - time_
            if age < rule.delete_older_than:
                _set(t, "keep", "no-delete-match", f"not older than {format_duration(rule.delete_older_than)} "
                     f"({format_duration(age)} old, {_when(t)})")
                continue
            met.append(f"older than {format_duration(rule.delete_older_than)} ({format_duration(age)} old, "
                       f"{_when(t)})")
        _set(t, "remove", "delete_tags" if rule.delete_tags is not None and rule.delete_older_than is None
             else ("delete_older_than" if rule.delete_tags is None else "delete_tags+delete_older_than"),
             " and ".join(met))


def _protect_young(rule: Rule, ranked: list[_Tag], facts: Facts, now: float, grace: float) -> None:
    for t in ranked:
        if t.action != "remove":
            continue
        if t.entry.digest not in facts.mtimes or facts.mtimes[t.entry.digest] is None:
            _set(t, "keep", "grace", "would be removed, but the manifest's age is unknown (stat failed): kept",
                 protected=True)
            continue
        mt = facts.mtimes[t.entry.digest]
        assert mt is not None
        if now - mt < grace:
            _set(t, "keep", "grace", f"would be removed, but the manifest blob is younger than the grace period "
                 f"({format_duration(now - mt)} < {format_duration(grace)})", protected=True)


def _per_manifest(index: Index, graph: RefGraph, tags: list[_Tag]) -> None:
    """A manifest kept (or reached) by any remaining tag keeps all its tags; to a fixpoint."""
    while True:
        kept_roots = [t for t in tags if t.action != "remove"]
        reach_from: dict[Digest, str] = {}
        for t in kept_roots:
            if t.entry.digest in reach_from:
                reach_from.setdefault(t.entry.digest, t.name)
                continue
            for d in graph.reachable([t.entry.digest]):
                reach_from.setdefault(d, t.name)
        changed = False
        for t in tags:
            if t.action == "remove" and t.entry.digest in reach_from:
                other = reach_from[t.entry.digest]
                same = any(k.entry.digest == t.entry.digest and k.name == other for k in kept_roots)
                why = (f"same manifest as kept tag {other!r}" if same
                       else f"reachable from kept tag {other!r} (e.g. a platform manifest of a kept index)")
                _set(t, "keep", "same-manifest", f"{why}; was: {t.reason}", protected=True)
                changed = True
        if not changed:
            return


def _decision(rule: Rule, repository: str, t: _Tag) -> dict[str, Any]:
    return {
        "repository": repository, "rule": rule.name, "tag": t.name, "digest": str(t.entry.digest),
        "position": t.pos, "action": t.action, "by": t.by, "reason": t.reason,
        "time": format_time(t.stamp.time) if t.stamp is not None else None,
        "time_source": t.stamp.source if t.stamp is not None else None,
        "referrer_of": str(t.subject) if t.subject is not None else None,
    }


# --- explaining ----------------------------------------------------------------------------------
def explain(policy: Policy) -> list[str]:
    """The policy in words (``ocigc policy check``)."""
    n = len(policy.rules)
    lines = [f"policy {policy.path}: {n} rule{'s' if n != 1 else ''}. For each repository (a layout's path "
             "under the sweep root) the first rule whose repositories match applies; a repository no rule "
             "matches keeps every tag."]
    for rule in policy.rules:
        lines.append("")
        lines.extend(explain_rule(rule))
    for w in policy.warnings:
        lines.append("")
        lines.append(f"warning: {w}")
    return lines


def explain_rule(rule: Rule) -> list[str]:
    at = f" (line {rule.line})" if rule.line else ""
    out = [f"rule {rule.number} {rule.name!r}{at}: repositories {', '.join(rule.repositories)}"]
    keeps: list[str] = []
    if rule.keep_latest:
        keeps.append("it is \"latest\"")
    if rule.keep_tags:
        keeps.append("its name matches " + " or ".join(f"^{p}$" for p in rule.keep_tags))
    if rule.keep_last is not None:
        keeps.append(f"its manifest is one of the {rule.keep_last} newest tagged manifests (tags of one "
                     "manifest count once)")
    if rule.keep_within is not None:
        keeps.append(f"it is newer than {format_duration(rule.keep_within)}")
    out.append("  keeps a tag when any of: " + ("; ".join(keeps) if keeps else "(nothing: no keep criterion)"))
    dels: list[str] = []
    if rule.delete_tags is not None:
        dels.append("its name matches " + " or ".join(f"^{p}$" for p in rule.delete_tags))
    if rule.delete_older_than is not None:
        dels.append(f"it is older than {format_duration(rule.delete_older_than)}")
    if dels:
        out.append("  otherwise removes a tag when all of: " + "; ".join(dels))
    else:
        out.append("  removes no tag (no delete_tags or delete_older_than)")
    out.append("  a manifest with any kept tag (or reachable from one) keeps all its tags; tags whose manifest "
               "is younger than the grace period stay")
    if rule.uses_time:
        if rule.time_source == "auto":
            src = ", then ".join(SOURCE_WORDS[s] for s in SOURCES)
        else:
            src = SOURCE_WORDS[rule.time_source] + " only"
        out.append(f"  time of a tag: {src}; a tag without one is kept")
        if rule.keep_last is not None:
            out.append("  newest first; equal times ordered by index.json position (later entries first), "
                       "then digest")
        if rule.ambiguous_times == "refuse":
            out.append("  refuses to act on a repository where most tagged manifests have no time, or times "
                       f"within {format_duration(rule.same_time_window)} of each other")
        else:
            out.append("  acts even when most times are missing or identical (ambiguous_times = \"proceed\")")
    if rule.untagged == "delete":
        age = (format_duration(rule.untagged_older_than) if rule.untagged_older_than is not None
               else "the grace period")
        out.append(f"  untagged entries: removed when no kept tag reaches them, they are not referrers of a "
                   f"live subject, and older than {age} (blob mtime)")
    else:
        out.append("  untagged entries: kept (except those of a manifest the rule removes)")
    if rule.referrers == "delete":
        out.append("  referrers (signatures, SBOMs, sha256-<hex> tags) follow their subject: removed with it")
    else:
        out.append("  referrers are kept even when their subject is removed")
    out.append("  grace period: " + (format_duration(rule.grace) if rule.grace is not None
                                     else "the command's --grace (default 1h)"))
    if rule.trash is not None:
        out.append("  trash: " + ("on" if rule.trash else "off")
                   + (f", kept {format_duration(rule.trash_retention)}" if rule.trash_retention is not None else ""))
    return out


def matching(policy: Policy, repositories: Iterable[str]) -> list[tuple[str, Rule | None]]:
    return [(r, policy.rule_for(r)) for r in repositories]
