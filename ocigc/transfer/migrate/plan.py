"""Planning a migration: which repositories, the manifest graph of each walked from the source, and
what the destination already holds."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from graphlib import CycleError, TopologicalSorter
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import (
    InvalidOption,
    LayoutError,
    ManifestError,
    OcigcError,
    UsageError,
)
from ocigc.jsonload import load_json
from ocigc.layout.discover import find_layouts
from ocigc.layout.graph import wants_read
from ocigc.layout.layout import Layout
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import (
    ANNOTATION_REF_NAME,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
)
from ocigc.parallel import pmap
from ocigc.progress import NullProgress, Progress
from ocigc.storage.base import Storage
from ocigc.storage.open_storage import open_storage
from ocigc.transfer.migrate.model import (
    COPY,
    FOREIGN,
    MOUNT,
    PRESENT,
    REPO_RE,
    BlobItem,
    Endpoint,
    EntryPlan,
    FilterMatchesNothing,
    InvalidTags,
    MigrateOptions,
    MigratePlan,
    Node,
    OneRef,
    RepoPlan,
    Root,
    Source,
    join_repo,
    map_tag,
)
from ocigc.transfer.migrate.sources import LayoutDest, LayoutSource, RegistryDest, RegistrySource
from ocigc.transfer.registry import RegistryClient
from ocigc.transfer.registry_model import RegistryOptions, RegistryRejected, RegistryUnavailable


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------
def _layout_storage(path: str) -> Storage:
    return open_storage(path)


def build_plan(source: Endpoint, dest: Endpoint, options: MigrateOptions,
               progress: Progress | None = None) -> MigratePlan:
    """Everything to copy, and what the destination already holds. Reads only."""
    if options.single is None and source.kind == dest.kind and str(source).rstrip("/") == str(dest).rstrip("/"):
        raise UsageError(f"{source.text} -> {dest.text}: source and destination are the same")
    progress = progress or NullProgress()
    plan = MigratePlan(source, dest, options)
    clients: dict[str, RegistryClient] = {}

    def client_for(host: str) -> RegistryClient:
        if host not in clients:
            clients[host] = RegistryClient(host, _pool_options(options))
            clients[host].ping()
        return clients[host]

    pairs = _repositories(source, dest, options, plan, client_for)
    counter = progress.counter("planning repositories", total=len(pairs))
    outer = max(1, min(options.jobs, len(pairs)))
    inner = max(2, options.jobs // outer)
    plan.repos = pmap(lambda p: _plan_repo(p, options, inner), pairs, outer, on_done=counter.add)
    counter.close()
    _refuse_unmatched_filters(plan, options)
    _assign_mounts(plan)
    return plan


def _refuse_unmatched_filters(plan: MigratePlan, options: MigrateOptions) -> None:
    """A filter that matched nothing (a typo, or a name that is not what filters match) stops the run
    before anything is copied, naming the filter and the names it was matched against."""
    unmatched = options.filters.unmatched()
    if not unmatched:
        return
    option, pattern = unmatched[0]
    names = sorted({rp.src_repo for rp in plan.repos} | set(plan.repo_names))
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "") or "none"
    single = " (a source that is one layout is repository '': ':TAG' filters its tags)" if names == [""] else ""
    raise FilterMatchesNothing(option, f"{pattern!r} matches no repository and no tag of {plan.source.text}; "
                                       f"filters match the source's repository names ({shown}){single} and, "
                                       "as REPO:TAG, their tags")


def _pool_options(options: MigrateOptions) -> RegistryOptions:
    reg = options.registry
    return dataclasses.replace(reg, pool_size=max(reg.pool_size, options.jobs * 2 + 4))


def _repositories(source: Endpoint, dest: Endpoint, options: MigrateOptions, plan: MigratePlan,
                  client_for: Callable[[str], RegistryClient]) -> list[RepoPlan]:
    """The repository pairs: (source, destination) with their names; not yet planned."""
    filters = options.filters
    pairs: list[RepoPlan] = []
    if options.single is not None:
        pairs = [_one_pair(source, options, client_for)]
    elif source.is_registry:
        client = client_for(source.host)
        names = _registry_repos(client, source.prefix, options.repos, plan)
        for repo in names:
            rel = repo[len(source.prefix):].strip("/") if source.prefix else repo
            plan.repo_names.append(rel)
            if not filters.repo_selected(rel):
                continue
            rp = RepoPlan(rel, "", f"{client.host}/{repo}", "")
            rp.source = RegistrySource(client, repo, max(2, options.jobs))
            pairs.append(rp)
    else:
        root = _layout_storage(source.path)
        if options.repos:
            raise InvalidOption("repo", "selects repositories of a registry source; for layouts use {include}",
                                also=("include",))
        rels = find_layouts(root)
        if not rels:
            raise LayoutError(f"{source.path}: no OCI image layout found (no oci-layout file at any depth)")
        for rel in rels:
            plan.repo_names.append(rel)
            if not filters.repo_selected(rel):
                continue
            storage = root.child(rel) if rel else root
            rp = RepoPlan(rel, "", storage.url, "")
            try:
                rp.source = LayoutSource(Layout.open(storage, rel))
            except OcigcError as e:
                rp.errors.append(str(e))
            pairs.append(rp)
    for rp in pairs:
        _attach_dest(rp, source, dest, client_for)
    return pairs


def _one_pair(source: Endpoint, options: MigrateOptions,
              client_for: Callable[[str], RegistryClient]) -> RepoPlan:
    """``cp``: the source is one repository (``HOST/REPO``) or one layout (never a root of layouts)."""
    if source.is_registry:
        if not source.prefix:
            raise UsageError(f"{source.text}: give the repository (HOST[:PORT]/REPO:TAG)")
        client = client_for(source.host)
        rp = RepoPlan("", "", f"{client.host}/{source.prefix}", "")
        reg = RegistrySource(client, source.prefix, max(2, options.jobs))
        reg.fallback_tags = True
        rp.source = reg
        return rp
    storage = _layout_storage(source.path)
    rp = RepoPlan("", "", storage.url, "")
    rp.source = LayoutSource(Layout.open(storage, ""))
    return rp


def _registry_repos(client: RegistryClient, prefix: str, listed: tuple[str, ...], plan: MigratePlan) -> list[str]:
    if listed:
        return [join_repo(prefix, name) for name in listed]
    try:
        catalog = client.catalog()
    except RegistryRejected as e:
        if not prefix:
            raise
        plan.notes.append(f"{e}; copying {prefix} as one repository")
        return [prefix]
    names = [r for r in catalog if not prefix or r == prefix or r.startswith(prefix + "/")]
    if not names and prefix:
        return [prefix]
    return sorted(names)


def _attach_dest(rp: RepoPlan, source: Endpoint, dest: Endpoint,
                 client_for: Callable[[str], RegistryClient]) -> None:
    rel = rp.src_repo
    if dest.is_registry:
        name = join_repo(dest.prefix, rel)
        if not name and not source.is_registry:
            base = os.path.basename(os.path.normpath(source.path))
            name = base if REPO_RE.match(base) else ""
            if not name:
                rp.errors.append(f"{source.path}: give the repository in the destination ({dest.host}/NAME); "
                                 f"{base!r} is not a valid repository name")
        if name and not REPO_RE.match(name):
            rp.errors.append(f"{rp.source_label}: repository name {name!r} is not valid (lowercase letters, digits, "
                             "separators '.', '_', '__', '-', components joined by '/'); rename the layout's "
                             "directory or --exclude it")
        rp.dst_repo = name
        client = client_for(dest.host)
        rp.dest = RegistryDest(client, name)
        rp.dest_label = f"{dest.host}/{name}"
    else:
        root = _layout_storage(dest.path)
        if rel and any(part in ("", ".", "..") for part in rel.split("/")):
            rp.errors.append(f"{rel!r}: not a usable layout path")
            rel = ""
        storage = root.child(rel) if rel else root
        rp.dst_repo = rel
        rp.dest = LayoutDest(storage)
        rp.dest_label = storage.url


def _plan_repo(rp: RepoPlan, options: MigrateOptions, jobs: int) -> RepoPlan:
    if rp.errors or rp.source is None or rp.dest is None:
        return rp
    try:
        _walk_repo(rp, options, jobs)
        if rp.errors:
            return rp
        rp.dest.inspect(rp, jobs)
    except RegistryUnavailable:
        raise
    except OcigcError as e:
        rp.errors.append(str(e))
    except OSError as e:
        rp.errors.append(f"{rp.source_label}: {e.strerror or e}")
    return rp


def _walk_repo(rp: RepoPlan, options: MigrateOptions, jobs: int) -> None:
    assert rp.source is not None and rp.dest is not None
    src, filters, repo = rp.source, options.filters, rp.src_repo
    all_untagged = filters.untagged_selected(repo)

    def want(name: str | None) -> bool:
        return filters.tag_selected(repo, name) if name is not None else True

    if options.single is not None:
        _walk_one(rp, options, options.single, jobs)
        return
    roots = src.roots(want)
    chosen = [r for r in roots if (r.name is not None and filters.tag_selected(repo, r.name))
              or (r.name is None and all_untagged)]
    pending_untagged = [r for r in roots if r.name is None and not all_untagged]
    nodes: dict[Digest, Node] = {}
    blobs: dict[Digest, BlobItem] = {}
    expanded: set[Digest] = set()
    _walk(src, [_root_desc(r) for r in chosen], nodes, blobs, rp.errors, jobs, expanded)
    # Referrers of what is copied follow it: untagged layout entries whose subject is copied ...
    if pending_untagged:
        _walk(src, [_root_desc(r) for r in pending_untagged], nodes, {}, rp.errors, jobs, expanded, shallow=True)
    extra: list[Root] = []
    copied = set(_closure(nodes, [r.digest for r in chosen]))
    changed = True
    while changed and pending_untagged:
        changed = False
        for r in list(pending_untagged):
            node = nodes.get(r.digest)
            if node is not None and node.subject is not None and node.subject.digest in copied:
                pending_untagged.remove(r)
                chosen.append(r)
                _walk(src, [_root_desc(r)], nodes, blobs, rp.errors, jobs, expanded)
                copied |= set(_closure(nodes, [r.digest]))
                changed = True
    # ... and what the registry's referrers API lists for copied manifests.
    copied = _api_referrers(rp, src, nodes, blobs, copied, extra, expanded, jobs)
    _finish_walk(rp, options, jobs, chosen, extra, nodes, blobs, copied)


def _walk_one(rp: RepoPlan, options: MigrateOptions, one: OneRef, jobs: int) -> None:
    """``cp``: the graph of one reference, and with ``referrers`` what refers to it (untagged layout
    entries whose subject is copied, the source registry's referrers API or fallback tag)."""
    assert rp.source is not None
    src = rp.source
    chosen = src.resolve(one.src_ref)
    for r in chosen:
        r.name = one.dst_tag
    nodes: dict[Digest, Node] = {}
    blobs: dict[Digest, BlobItem] = {}
    expanded: set[Digest] = set()
    _walk(src, [_root_desc(r) for r in chosen], nodes, blobs, rp.errors, jobs, expanded)
    copied = set(_closure(nodes, [r.digest for r in chosen]))
    extra: list[Root] = []
    if one.referrers:
        pending = [r for r in src.roots(lambda name: name is None) if r.name is None and r.digest not in copied]
        if pending:
            _walk(src, [_root_desc(r) for r in pending], nodes, {}, rp.errors, jobs, expanded, shallow=True)
        changed = True
        while changed and pending:
            changed = False
            for r in list(pending):
                node = nodes.get(r.digest)
                if node is not None and node.subject is not None and node.subject.digest in copied:
                    pending.remove(r)
                    extra.append(r)
                    _walk(src, [_root_desc(r)], nodes, blobs, rp.errors, jobs, expanded)
                    copied |= set(_closure(nodes, [r.digest]))
                    changed = True
        copied = _api_referrers(rp, src, nodes, blobs, copied, extra, expanded, jobs)
    _finish_walk(rp, options, jobs, chosen, extra, nodes, blobs, copied)
    for e in rp.entries:
        if e.name is not None:
            e.src_name = one.src_ref


def _finish_walk(rp: RepoPlan, options: MigrateOptions, jobs: int, chosen: list[Root], extra: list[Root],
                 nodes: dict[Digest, Node], blobs: dict[Digest, BlobItem], copied: set[Digest]) -> None:
    """What the destination will carry of the walked graph: nodes, blobs, order, entries, names."""
    assert rp.source is not None and rp.dest is not None
    src, to_registry = rp.source, rp.dest.is_registry
    if rp.errors:
        return
    rp.nodes = {d: n for d, n in nodes.items() if d in copied}
    rp.blobs = blobs
    _foreign_layers(rp, src, jobs, to_registry)
    rp.order = _order(rp.nodes)
    if to_registry:  # a root that is no manifest cannot go to a registry (noted below)
        rp.nodes = {d: n for d, n in rp.nodes.items() if n.is_manifest}
        rp.order = [d for d in rp.order if d in rp.nodes]
    referrer_digests = {d for d, n in rp.nodes.items() if n.subject is not None and n.subject.digest in copied}
    for r in chosen + extra:
        node = rp.nodes.get(r.digest)
        entry = EntryPlan(r.digest, _send_type(node, r.media_type) if node else r.media_type,
                          node.size if node else r.size, r.name, r.name, r.entry,
                          referrer=r.name is None and r.digest in referrer_digests)
        if node is None and to_registry and r.digest in nodes:
            entry.note = f"{r.digest} is not a manifest ({r.media_type or 'no media type'}): skipped"
            rp.notes.append(entry.note)
            continue
        rp.entries.append(entry)
    if to_registry:
        _map_names(rp, options.invalid_tags)
    else:
        for e in rp.entries:
            if e.entry is None:
                e.entry = _entry_json(e, rp.nodes.get(e.digest))
    for d in rp.order:
        rp.manifest_state.setdefault(d, COPY)


def _api_referrers(rp: RepoPlan, src: Source, nodes: dict[Digest, Node], blobs: dict[Digest, BlobItem],
                   copied: set[Digest], extra: list[Root], expanded: set[Digest], jobs: int) -> set[Digest]:
    """What the source's referrers API lists for the copied manifests, walked and added to ``extra``,
    until nothing new appears; the copied set grown by them."""
    asked: set[Digest] = set()
    while True:
        ask = [d for d in sorted(copied) if d in nodes and nodes[d].is_manifest and d not in asked]
        if not ask:
            break
        asked.update(ask)
        found = pmap(src.referrers, ask, jobs)
        if all(f is None for f in found):
            break
        new: list[Root] = []
        for refs in found:
            for desc in refs or []:
                if desc.digest not in copied and all(r.digest != desc.digest for r in extra + new):
                    new.append(Root(desc.digest, desc.media_type, desc.size, None))
        if not new:
            continue
        _walk(src, [_root_desc(r) for r in new], nodes, blobs, rp.errors, jobs, expanded)
        extra.extend(new)
        copied |= set(_closure(nodes, [r.digest for r in new]))
    return copied


def _source_has(src: Source, digest: Digest) -> bool:
    if isinstance(src, LayoutSource):
        return src.layout.stat_blob(digest) is not None
    if isinstance(src, RegistrySource):
        return src.client.blob_exists(src.repo, digest)
    return True


def _foreign_layers(rp: RepoPlan, src: Source, jobs: int, to_registry: bool) -> None:
    """A foreign layer (descriptor with ``urls``) the source does not hold (skopeo leaves them out of
    layouts; registries rarely store them) is not copied: the manifests that list it are copied as
    they are, byte for byte, and the note says so. A foreign-typed layer the source holds is copied."""
    foreign = [b for b in rp.blobs.values() if b.urls]
    if not foreign:
        return
    for b, here in zip(foreign, pmap(lambda b: _source_has(src, b.digest), foreign, jobs), strict=True):
        if here:
            continue
        b.state = FOREIGN
        where = ("a registry may refuse a manifest whose layer it does not hold, or accept it when it "
                 "allows foreign URLs" if to_registry else "the destination layout lacks it as the source did")
        rp.notes.append(f"foreign layer {b.digest} is not in the source (fetched from {', '.join(b.urls)}): not "
                        f"copied; the manifest is copied as is ({where})")


def _root_desc(r: Root) -> Descriptor:
    return Descriptor(r.media_type, r.digest, r.size)


def _walk(src: Source, starts: list[Descriptor], nodes: dict[Digest, Node], blobs: dict[Digest, BlobItem],
          errors: list[str], jobs: int, expanded: set[Digest], shallow: bool = False) -> None:
    """Read manifests level by level from ``starts`` (index children recursively), collect blobs.

    ``nodes`` caches what was read, ``expanded`` what was walked below. ``shallow``: read only
    ``starts`` (to learn their subjects), nothing below them.
    """
    level = list({d.digest: d for d in starts if d.digest not in expanded}.values())
    scanned: set[Digest] = set()
    while level:
        todo = [d for d in level if d.digest not in nodes]  # a shallow read earlier: not read again
        for desc, res in zip(todo, pmap(lambda d: _read_node(src, d), todo, jobs), strict=True):
            if isinstance(res, str):
                errors.append(res)
            else:
                nodes[desc.digest] = res
        if shallow:
            return
        following: dict[Digest, Descriptor] = {}
        scan: dict[Digest, Descriptor] = {}
        for desc in level:
            node = nodes.get(desc.digest)
            if node is None:
                continue
            expanded.add(desc.digest)
            for kind, child in node.children:
                if kind == mf.CHILD:
                    if child.digest not in expanded and child.digest not in following:
                        following[child.digest] = child
                    continue
                blobs.setdefault(child.digest, BlobItem(child.digest, child.size, child.media_type, urls=child.urls))
                if wants_read(child) and child.digest not in scanned:
                    scan[child.digest] = child
        # Unknown JSON blobs may name more blobs (the graph follows them; so does a faithful copy).
        while scan:
            scanned.update(scan)
            found = pmap(lambda d: _scan_blob(src, d), list(scan.values()), jobs)
            scan = {}
            for children in found:
                for child in children:
                    blobs.setdefault(child.digest, BlobItem(child.digest, child.size, child.media_type,
                                                            urls=child.urls))
                    if wants_read(child) and child.digest not in scanned:
                        scan[child.digest] = child
        level = list(following.values())


def _read_node(src: Source, desc: Descriptor) -> Node | str:
    try:
        raw, served_type = src.manifest(desc)
    except OcigcError as e:
        return str(e)
    except OSError as e:
        return f"{desc.digest}: cannot read ({e.strerror or e})"
    got = Digest.from_bytes(raw, desc.digest.algorithm)
    if got != desc.digest:
        return f"{desc.digest}: content hashes to {got}"
    declared = served_type or desc.media_type or None
    try:
        parsed = mf.parse(raw, declared, str(desc.digest))
    except ManifestError as e:
        if desc.media_type in MANIFEST_TYPES or served_type:
            return str(e)
        return Node(desc.digest, desc.media_type, raw, "leaf")
    config = next((c for kind, c in parsed.children if kind == mf.CONFIG), None)
    node = Node(desc.digest, "", raw, parsed.kind, parsed.children, parsed.subject, parsed.artifact_type,
                parsed.annotations, config.media_type if config else None)
    node.media_type = served_type or _send_type(node, desc.media_type)
    return node


def _scan_blob(src: Source, desc: Descriptor) -> list[Descriptor]:
    try:
        raw = src.small_blob(desc)
    except (OcigcError, OSError):
        return []  # a missing blob shows when it is copied
    if raw.lstrip()[:1] != b"{":
        return []
    try:
        parsed = mf.parse(raw, desc.media_type or None, str(desc.digest))
    except ManifestError:
        return []
    return [c for _, c in parsed.children]


def _send_type(node: Node | None, declared: str) -> str:
    """The Content-Type a manifest goes out with: its own mediaType, else the descriptor's, else by shape."""
    if node is None:
        return declared
    if node.media_type:
        return node.media_type
    try:
        own = load_json(node.raw, limit=None).get("mediaType")
    except (ValueError, AttributeError):
        own = None
    if isinstance(own, str) and own:
        return own
    if declared:
        return declared
    if node.kind == mf.KIND_INDEX:
        return OCI_INDEX
    if node.kind == mf.KIND_MANIFEST:
        return OCI_MANIFEST
    return declared


def _closure(nodes: dict[Digest, Node], roots: list[Digest]) -> Iterator[Digest]:
    seen: set[Digest] = set()
    stack = list(roots)
    while stack:
        d = stack.pop()
        if d in seen or d not in nodes:
            continue
        seen.add(d)
        yield d
        stack.extend(c.digest for kind, c in nodes[d].children if kind == mf.CHILD)


def _order(nodes: dict[Digest, Node]) -> list[Digest]:
    """Children before parents, subjects before their referrers (graphlib: dependencies first)."""
    deps: dict[Digest, set[Digest]] = {}
    for d, n in sorted(nodes.items()):
        wanted = {c.digest for kind, c in n.children if kind == mf.CHILD and c.digest in nodes}
        if n.subject is not None and n.subject.digest in nodes:
            wanted.add(n.subject.digest)
        deps[d] = wanted - {d}
    try:
        return list(TopologicalSorter(deps).static_order())
    except CycleError:
        raise ManifestError("manifests reference each other in a cycle (refusing to order them)") from None


def _map_names(rp: RepoPlan, mode: InvalidTags) -> None:
    """Layout ref names -> registry tags; conflicts resolved (an exact name beats a mapped one,
    then the last index.json entry wins, as oras resolves duplicates); the others go untagged."""
    for e in rp.entries:
        if e.src_name is None:
            continue
        m = map_tag(e.src_name, mode)
        if m.error:
            rp.errors.append(f"{rp.source_label}: {m.error}")
            continue
        e.name = m.tag
        if m.note:
            e.note = m.note
            rp.notes.append(m.note)
    by_name: dict[str, list[EntryPlan]] = {}
    for e in rp.entries:
        if e.name is not None:
            by_name.setdefault(e.name, []).append(e)
    for name, group in by_name.items():
        digests = {e.digest for e in group}
        exact = [e for e in group if e.src_name == name]
        winner = (exact or group)[-1]
        for e in group:
            if e is winner:
                continue
            if e.digest != winner.digest:
                note = (f"tag {name!r}: {e.src_name!r} ({e.digest.short}) loses to {winner.src_name!r} "
                        f"({winner.digest.short}); pushed by digest only")
                rp.notes.append(note)
                e.note = note
            e.name = None
        if len(digests) > 1:
            winner.note = winner.note or f"tag {name!r} named {len(digests)} digests; this one won"
    seen: set[tuple[str | None, Digest]] = set()
    unique = []
    for e in rp.entries:
        key = (e.name, e.digest)
        if key in seen:
            continue
        seen.add(key)
        unique.append(e)
    rp.entries = unique


def _entry_json(e: EntryPlan, node: Node | None) -> dict[str, Any]:
    """An index.json entry for a manifest that came from a registry."""
    out: dict[str, Any] = {"mediaType": e.media_type, "digest": str(e.digest), "size": e.size}
    if node is not None and node.artifact_type:
        out["artifactType"] = node.artifact_type
    if e.name is not None:
        out["annotations"] = {ANNOTATION_REF_NAME: e.name}
    return out


def _assign_mounts(plan: MigratePlan) -> None:
    """Missing blobs that another repository of the same registry holds, or copies earlier in this
    run, are mounted from it instead of uploaded again."""
    where: dict[tuple[str, Digest], str] = {}
    for rp in plan.repos:
        if rp.ok and isinstance(rp.dest, RegistryDest):
            loc = rp.source.registry_location() if rp.source is not None else None
            if loc is not None and loc[0] == rp.dest.client.host:
                for d in rp.blobs:
                    where.setdefault((loc[0], d), loc[1])
            for b in rp.blobs.values():
                if b.state == PRESENT:
                    where.setdefault((rp.dest.client.host, b.digest), rp.dst_repo)
    for rp in plan.repos:
        if not rp.ok or not isinstance(rp.dest, RegistryDest):
            continue
        host = rp.dest.client.host
        for b in rp.blobs.values():
            if b.state != COPY:
                continue
            holder = where.get((host, b.digest))
            if holder is not None and holder != rp.dst_repo:
                b.state, b.mount_from = MOUNT, holder
            else:
                where.setdefault((host, b.digest), rp.dst_repo)
