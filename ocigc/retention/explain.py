"""Explaining a retention policy in words, and which rule applies to which repository."""

from __future__ import annotations

from collections.abc import Iterable

from ocigc.duration import format_duration
from ocigc.retention.decide import Policy
from ocigc.retention.model import (
    SOURCE_WORDS,
    SOURCES,
    Rule,
)


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
