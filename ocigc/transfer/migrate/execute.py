"""migrate: copy repositories between layouts and registries, every digest intact.

A source or destination is a layout, a root of layouts (every layout at any depth is one
repository, named by its path under the root), or a registry reference ``HOST[:PORT][/PREFIX]``.

Plan, then execute (``--dry-run`` prints the plan; a real run executes that plan):

1. **Plan.** For each repository: the roots (``index.json`` entries of a layout, tagged or not;
   the tags of a registry repository), filtered by ``--include``/``--exclude``; the closure of
   manifests (nested indexes, all platforms) and blobs (configs, layers, artifact blobs, blobs
   named inside unknown JSON); referrers of copied content (a layout's untagged entries whose
   ``subject`` is copied; a registry's referrers API); the destination names (``map_tag``).
   Then what the destination already holds (HEAD requests, or one blob listing of a layout), and
   which missing blobs can be mounted from another repository of the same registry.
2. **Blobs** before manifests, in a pool of ``jobs`` transfers: streamed in constant memory,
   each blob uploaded once per destination registry and mounted into the other repositories.
3. **Manifests** per repository, children before parents and subjects before referrers, as
   their raw bytes with their own media type (digests cannot change); tags after their manifest.
   Referrers on a registry without the referrers API get the spec's fallback tag
   (``sha256-<hex>``: an index listing them, merged with what the tag already lists).
   A layout destination takes the shared lock for the run, writes blobs through the storage
   seam (temp + rename, hashed as written) and merges ``index.json`` once per repository with
   ``update_index`` under the lock's exclusive hold.
4. ``--verify`` re-reads what was written and compares digests.

A rerun finds what arrived (HEAD 200, present blobs) and copies only the rest. A repository
whose plan has errors (unmappable tag names in ``refuse`` mode, an invalid repository name,
unreadable manifests) is not copied at all; the others are. An unreachable registry stops the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures import wait as wait_futures

from ocigc.digest import Digest
from ocigc.errors import (
    IntegrityError,
    LockBusy,
    OcigcError,
    UsageError,
)
from ocigc.layout.indexio import read_index_retrying, update_index
from ocigc.oci.descriptor import (
    ANNOTATION_REF_NAME,
)
from ocigc.oci.index import Index
from ocigc.parallel import pmap
from ocigc.progress import Counter, NullProgress, Progress
from ocigc.transfer.migrate.model import (
    COPY,
    FOREIGN,
    MOUNT,
    PRESENT,
    BlobItem,
    EntryPlan,
    MigrateOptions,
    MigratePlan,
    Node,
    OneRef,
    RepoPlan,
    Source,
    _Abort,
    _Run,
    parse_endpoint,
    parse_reference,
)
from ocigc.transfer.migrate.plan import build_plan
from ocigc.transfer.migrate.sources import LayoutDest, RegistryDest
from ocigc.transfer.migrate.verify import _verify
from ocigc.transfer.registry import add_to_referrers_tag
from ocigc.transfer.registry_model import RegistryUnavailable, StreamInterrupted, backoff_delay


def execute(plan: MigratePlan, progress: Progress | None = None) -> MigratePlan:
    """Carry out ``plan``: blobs, then manifests and tags, then (``--verify``) re-read."""
    run = _Run(plan, progress or NullProgress())
    todo = [rp for rp in plan.repos if rp.ok]
    with contextlib.ExitStack() as stack:
        try:
            _prepare_dests(run, todo, stack)
            _copy_blobs(run, [rp for rp in todo if rp.ok])
            _copy_manifests(run, [rp for rp in todo if rp.ok])
            if plan.options.verify and not run.abort.is_set():
                _verify(run, [rp for rp in todo if rp.ok])
        except RegistryUnavailable as e:
            plan.aborted = plan.aborted or str(e)
        except _Abort:
            pass
        finally:
            plan.elapsed = time.monotonic() - plan.started
    return plan


def _prepare_dests(run: _Run, repos: list[RepoPlan], stack: contextlib.ExitStack) -> None:
    layouts = [rp for rp in repos if isinstance(rp.dest, LayoutDest)]
    if not layouts:
        return

    def prepare(rp: RepoPlan) -> None:
        assert isinstance(rp.dest, LayoutDest)
        try:
            rp.dest.prepare(run.plan.options.lock_wait, "cp" if run.plan.options.single else "migrate")
            rp.dest.recheck(rp)
        except LockBusy as e:
            rp.fail(str(e))
        except OcigcError as e:
            rp.fail(str(e))
        except OSError as e:
            rp.fail(f"{rp.dest_label}: {e.strerror or e}")

    for rp in layouts:
        stack.callback(rp.dest.release)  # type: ignore[union-attr]
    pmap(prepare, layouts, max(1, min(run.plan.options.jobs, len(layouts))))


def _copy_blobs(run: _Run, repos: list[RepoPlan]) -> None:
    copies: list[tuple[RepoPlan, BlobItem]] = []
    mounts: list[tuple[RepoPlan, BlobItem]] = []
    total = 0
    for rp in repos:
        for b in rp.blobs.values():
            if b.state == PRESENT:
                rp.add(blobs_present=1, bytes_present=b.size)
            elif b.state == FOREIGN:
                continue
            elif b.state == MOUNT:
                mounts.append((rp, b))
            else:
                copies.append((rp, b))
                total += b.size
                if isinstance(rp.dest, RegistryDest):
                    key = (rp.dest.client.host, b.digest)
                    run.uploads.setdefault(key, Future())
    if not copies and not mounts:
        return
    copies.sort(key=lambda t: -t[1].size)  # big blobs first: the pool ends together
    bar = run.progress.counter("blobs", total=total, unit="B")
    run.bytes_bar = bar
    jobs = max(1, run.plan.options.jobs)
    try:
        _run_pool([functools.partial(_copy_blob, run, rp, b) for rp, b in copies + mounts], jobs, run)
    finally:
        bar.close()
        for fut in run.uploads.values():  # never leave a waiter behind
            if not fut.done():
                fut.set_result(None)


def _run_pool(tasks: list[Callable[[], None]], jobs: int, run: _Run) -> None:
    if not tasks:
        return
    pool = ThreadPoolExecutor(max_workers=min(jobs, len(tasks)), thread_name_prefix="ocigc-migrate")
    futures = [pool.submit(t) for t in tasks]
    try:
        pending = set(futures)
        while pending:
            done, pending = wait_futures(pending, timeout=0.5)
            for f in done:
                exc = f.exception()
                if exc is not None and not isinstance(exc, _Abort):
                    run.abort.set()
                    raise exc
    except BaseException:
        run.abort.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _copy_blob(run: _Run, rp: RepoPlan, b: BlobItem) -> None:
    dest, src = rp.dest, rp.source
    assert dest is not None and src is not None
    designated: Future[str | None] | None = None
    if isinstance(dest, RegistryDest) and b.state == COPY:
        designated = run.claim((dest.client.host, b.digest))
    holder: str | None = None
    try:  # from the claim on: whatever happens, the waiters of ``designated`` get an answer
        if run.abort.is_set():
            raise _Abort()
        if rp.failed is not None:
            return
        if isinstance(dest, RegistryDest):
            mount_from = b.mount_from
            if b.state == MOUNT:
                fut = run.uploads.get((dest.client.host, b.digest))
                if fut is not None:  # the repository that uploads it in this run (None: that failed)
                    mount_from = _wait(run, fut)
            how = dest.client.upload_blob(dest.repo, b.digest, b.size, lambda: src.open_blob(b.digest, b.size),
                                          on_bytes=_bytes_cb(run), mount_from=mount_from)
            if how == "mounted":
                rp.add(blobs_mounted=1, bytes_mounted=b.size)
            else:
                rp.add(blobs_uploaded=1, bytes_uploaded=b.size)
            holder = dest.repo
        else:
            assert isinstance(dest, LayoutDest)
            _with_retries(run, lambda: _write_layout_blob(run, src, dest, b))
            rp.add(blobs_uploaded=1, bytes_uploaded=b.size)
    except RegistryUnavailable as e:
        run.plan.aborted = str(e)
        rp.fail(str(e))
        raise
    except OcigcError as e:
        rp.fail(f"blob {b.digest}: {e}")
    except OSError as e:
        rp.fail(f"blob {b.digest}: {e.strerror or e}")
    finally:
        if designated is not None:
            designated.set_result(holder)


def _wait(run: _Run, fut: Future[str | None]) -> str | None:
    while True:
        try:
            return fut.result(timeout=0.5)
        except FuturesTimeout:
            if run.abort.is_set():
                raise _Abort() from None


def _bytes_cb(run: _Run) -> Callable[[int], None]:
    """Progress of a transfer; also where a running transfer notices that the run stopped
    (an interrupt or a fatal error): it raises, so an upload in flight ends at the next chunk."""
    bar = run.bytes_bar

    def on_bytes(n: int) -> None:
        if run.abort.is_set():
            raise _Abort()
        if bar is not None:
            bar.add(n)

    return on_bytes


def _write_layout_blob(run: _Run, src: Source, dest: LayoutDest, b: BlobItem) -> None:
    stream, actual = src.open_blob(b.digest, b.size)
    with contextlib.closing(stream):
        if actual >= 0 and actual != b.size:
            raise IntegrityError(f"blob {b.digest}: the source holds {actual} bytes, its descriptor says {b.size}")
        counted = [0]
        cb = _bytes_cb(run)

        def on_bytes(n: int) -> None:
            counted[0] += n
            cb(n)

        try:
            dest.write_blob(b.digest, b.size, stream, on_bytes)
        except StreamInterrupted:
            if counted[0] and run.bytes_bar is not None:
                run.bytes_bar.add(-counted[0])
            raise


def _with_retries(run: _Run, fn: Callable[[], None]) -> None:
    options = run.plan.options.registry
    attempt = 0
    while True:
        try:
            fn()
            return
        except StreamInterrupted as e:
            if attempt >= options.retries:
                raise RegistryUnavailable(f"{e} (after {attempt + 1} attempt(s))") from None
            time.sleep(backoff_delay(attempt, options))
            attempt += 1


def _copy_manifests(run: _Run, repos: list[RepoPlan]) -> None:
    todo = [rp for rp in repos if rp.ok]
    if not todo or run.abort.is_set():
        return
    counter = run.progress.counter("manifests", total=sum(len(rp.order) for rp in todo))

    def one(rp: RepoPlan) -> None:
        if run.abort.is_set():
            raise _Abort()
        try:
            if isinstance(rp.dest, RegistryDest):
                _manifests_to_registry(rp, rp.dest, counter)
            else:
                assert isinstance(rp.dest, LayoutDest)
                _manifests_to_layout(rp, rp.dest, counter)
        except RegistryUnavailable as e:
            run.plan.aborted = str(e)
            rp.fail(str(e))
            raise
        except OcigcError as e:
            rp.fail(str(e))
        except OSError as e:
            rp.fail(f"{rp.dest_label}: {e.strerror or e}")

    try:
        _run_pool([functools.partial(one, rp) for rp in todo], max(1, min(run.plan.options.jobs, len(todo))), run)
    finally:
        counter.close()


def _manifests_to_registry(rp: RepoPlan, dest: RegistryDest, counter: Counter) -> None:
    if rp.failed is not None:
        return
    client, repo = dest.client, dest.repo
    api_seen = False
    for d in rp.order:
        node = rp.nodes[d]
        pending = [e for e in rp.entries if e.digest == d and e.name is not None and e.state != PRESENT]
        if rp.manifest_state.get(d) != PRESENT:
            first = pending.pop(0).name if pending else str(d)
            assert first is not None
            answer = client.put_manifest(repo, first, node.raw, node.media_type)
            _check_stored(rp, node, answer.get("digest", ""), first)
            api_seen = api_seen or bool(answer.get("subject"))
            rp.add(manifests_written=1, tags_written=0 if first == str(d) else 1)
        else:
            rp.add(manifests_present=1)
        for e in pending:
            assert e.name is not None
            answer = client.put_manifest(repo, e.name, node.raw, node.media_type)
            _check_stored(rp, node, answer.get("digest", ""), e.name)
            rp.add(tags_written=1)
        counter.add()
    rp.add(tags_present=sum(1 for e in rp.entries if e.name is not None and e.state == PRESENT))
    _referrers_fallback(rp, dest, api_seen)


def _check_stored(rp: RepoPlan, node: Node, reported: str, ref: str) -> None:
    if reported and reported not in node.registry_digests():
        raise IntegrityError(f"{rp.dest_label}: the registry stored {ref} as {reported}, not {node.digest} "
                             "(it changed the manifest)")


def _referrers_fallback(rp: RepoPlan, dest: RegistryDest, api_seen: bool) -> None:
    """Registries without the referrers API: keep the index tagged ``<alg>-<hex>`` of each subject
    listing its referrers (distribution spec, "Referrers Tag Schema"), merged with what it lists."""
    by_subject: dict[Digest, list[Node]] = {}
    for d in rp.order:
        node = rp.nodes[d]
        if node.subject is not None:
            by_subject.setdefault(node.subject.digest, []).append(node)
    if not by_subject or api_seen:
        return
    client, repo = dest.client, dest.repo
    first = next(iter(by_subject))
    if client.referrers(repo, first) is not None:
        return  # the registry lists referrers itself
    for subject, referrers in by_subject.items():
        if add_to_referrers_tag(client, repo, subject, [n.referrer_descriptor() for n in referrers]):
            rp.add(referrer_tags=1)


def _manifests_to_layout(rp: RepoPlan, dest: LayoutDest, counter: Counter) -> None:
    if rp.failed is not None:
        return
    assert dest.layout is not None
    if dest.handle is not None:
        dest.handle.ensure_held()
    for d in rp.order:
        if rp.manifest_state.get(d) != PRESENT:
            dest.write_manifest(rp.nodes[d])
            rp.add(manifests_written=1)
        else:
            rp.add(manifests_present=1)
        counter.add()
    entries = [e for e in rp.entries if e.entry is not None]
    changed = {"tags": 0}

    def mutate(index: Index) -> Index | None:
        return _merge_entries(index, entries, changed)

    if dest.handle is not None:
        dest.handle.ensure_held()
    if mutate(read_index_retrying(dest.layout)) is not None:  # the exclusive hold only when there is a change
        hold = dest.handle.exclusive_hold if dest.handle is not None else None
        update_index(dest.layout, mutate, hold=hold)
    rp.add(tags_written=changed["tags"],
           tags_present=sum(1 for e in entries if e.name is not None) - changed["tags"])


def _merge_entries(index: Index, entries: list[EntryPlan], changed: dict[str, int]) -> Index | None:
    """Add the copied entries to ``index``: a name is made to list exactly the source's digests for
    it (in the source's order); an untagged entry is added unless an untagged one has its digest."""
    new = index
    handled: dict[str, bool] = {}  # name -> already matches
    desired: dict[str, list[Digest]] = {}
    for e in entries:
        if e.name is not None:
            desired.setdefault(e.name, []).append(e.digest)
    changed["tags"] = 0
    for e in entries:
        assert e.entry is not None
        if e.name is None:
            if any(x.ref_name is None and x.digest == e.digest for x in new.entries):
                continue
            new = new.with_entries([e.entry])
            continue
        name = e.name
        if name not in handled:
            have = [x.digest for x in new.entries if x.ref_name == name]
            handled[name] = have == desired[name]
            if not handled[name]:
                new = new.without(lambda _i, x, n=name: x.ref_name == n)  # type: ignore[misc]
        if handled[name]:
            continue
        entry = dict(e.entry)
        annotations = dict(entry.get("annotations") or {})
        annotations[ANNOTATION_REF_NAME] = name
        entry["annotations"] = annotations
        new = new.with_entries([entry])
        changed["tags"] += 1
    return new if new.dumps() != index.dumps() else None


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def migrate(source: str, dest: str, options: MigrateOptions, *, dry_run: bool = False,
            progress: Progress | None = None, on_plan: Callable[[MigratePlan], None] | None = None) -> MigratePlan:
    """Plan (and unless ``dry_run``, execute) a migration. Errors of single repositories are kept
    in the plan (``plan.failed``); an unreachable registry raises RegistryUnavailable."""
    src, dst = parse_endpoint(source), parse_endpoint(dest)
    plan = build_plan(src, dst, options, progress)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return plan
    return execute(plan, progress)




def copy_reference(source: str, dest: str, options: MigrateOptions, *, referrers: bool = False,
                   progress: Progress | None = None) -> MigratePlan:
    """``cp``: copy the one reference ``source`` names to ``dest`` through migrate's engine (the same
    planning, locks, verified blob writes and referrers handling). ``dest`` without a tag takes the
    source's tag (a source by digest: by digest, untagged in a layout)."""
    src, src_ref = parse_reference(source)
    dst, dst_ref = parse_reference(dest)
    if src_ref is None:
        raise UsageError(f"{source}: name the tag or digest to copy (SRC:TAG or SRC@DIGEST)")
    if dst_ref is not None and dst_ref.partition(":")[0] in ("sha256", "sha384", "sha512") and ":" in dst_ref:
        if "@" not in source or dst_ref != src_ref:
            raise UsageError(f"{dest}: a destination by digest must be the source's digest (or give a tag)")
        dst_ref = None
    if dst.is_registry and not dst.prefix:
        raise UsageError(f"{dest}: give the repository (HOST[:PORT]/REPO[:TAG])")
    if dst_ref is None and "@" not in source:
        dst_ref = src_ref
    single = OneRef(src_ref, dst_ref, referrers)
    options = dataclasses.replace(options, single=single)
    plan = build_plan(src, dst, options, progress)
    return execute(plan, progress)


__all__ = ["copy_reference", "execute", "migrate"]
