"""Loading a retention policy: the TOML file, checked key by key, with line numbers in errors."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Any

from ocigc.duration import parse_duration
from ocigc.errors import UsageError
from ocigc.retention.decide import Policy
from ocigc.retention.model import (
    POLICY_VERSION,
    RULE_KEYS,
    RULE_ONLY,
    TIME_SOURCES,
    TOP_KEYS,
    PolicyError,
    Rule,
)

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
