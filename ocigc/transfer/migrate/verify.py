"""After a migration: every copied manifest and blob read back from the destination and checked
against its digest."""

from __future__ import annotations

import threading
from typing import Any

from ocigc.digest import Digest, DigestingReader
from ocigc.errors import (
    OcigcError,
)
from ocigc.layout.indexio import read_index_retrying
from ocigc.layout.layout import INDEX_FILE, MAX_MANIFEST_BYTES
from ocigc.oci.index import Index
from ocigc.parallel import pmap
from ocigc.transfer.migrate.model import (
    FOREIGN,
    BlobItem,
    EntryPlan,
    RepoPlan,
    _Run,
)
from ocigc.transfer.migrate.sources import LayoutDest, RegistryDest


# --------------------------------------------------------------------------------------------------
# Verify
# --------------------------------------------------------------------------------------------------
def _verify(run: _Run, repos: list[RepoPlan]) -> None:
    items: list[tuple[RepoPlan, str, Any]] = []
    for rp in repos:
        if not rp.ok:
            continue
        items.extend((rp, "entry", e) for e in rp.entries)
        items.extend((rp, "manifest", d) for d in rp.order)
        items.extend((rp, "blob", b) for b in rp.blobs.values() if b.state != FOREIGN)
    counter = run.progress.counter("verify", total=len(items))
    lock = threading.Lock()
    indexes: dict[int, Index] = {}

    def check(item: tuple[RepoPlan, str, Any]) -> None:
        rp, kind, obj = item
        try:
            problem = _verify_one(rp, kind, obj, indexes, lock)
        except OcigcError as e:
            problem = str(e)
        except OSError as e:
            problem = f"{rp.dest_label}: {e.strerror or e}"
        if problem:
            with lock:
                run.plan.verify_errors.append(problem)
        else:
            rp.add(verified=1)

    pmap(check, items, max(1, run.plan.options.jobs), on_done=counter.add)
    counter.close()


def _verify_one(rp: RepoPlan, kind: str, obj: Any, indexes: dict[int, Index], lock: threading.Lock) -> str | None:
    dest = rp.dest
    if isinstance(dest, RegistryDest):
        client, repo = dest.client, dest.repo
        if kind == "entry":
            e: EntryPlan = obj
            if e.name is None:
                return None
            info = client.head_manifest(repo, e.name)
            node = rp.nodes[e.digest]
            if info is None or info.digest not in node.registry_digests():
                return f"{rp.dest_label}:{e.name}: is {info.digest if info else 'missing'}, expected {e.digest}"
            return None
        if kind == "manifest":
            node = rp.nodes[obj]
            ref = obj if obj.algorithm == "sha256" else Digest.from_bytes(node.raw, "sha256")
            raw, _, _ = client.get_manifest(repo, ref)
            return None if raw == node.raw else f"{rp.dest_label}@{obj}: bytes differ from the source"
        b: BlobItem = obj
        with client.open_blob(repo, b.digest) as stream:
            return _hash_check(stream, b, f"{rp.dest_label}@{b.digest}")
    assert isinstance(dest, LayoutDest) and dest.layout is not None
    if kind == "entry":
        e = obj
        with lock:
            index = indexes.get(id(rp))
            if index is None:
                index = indexes[id(rp)] = read_index_retrying(dest.layout)
        if e.name is not None and e.digest not in [x.digest for x in index.tags().get(e.name, [])]:
            return f"{dest.layout.where(INDEX_FILE)}: {e.name!r} does not name {e.digest}"
        if e.name is None and e.digest not in index.root_digests():
            return f"{dest.layout.where(INDEX_FILE)}: no entry for {e.digest}"
        return None
    if kind == "manifest":
        raw = dest.layout.read_blob(obj, limit=MAX_MANIFEST_BYTES)
        return None if raw == rp.nodes[obj].raw else f"{dest.layout.where(obj.blob_path())}: differs from the source"
    b = obj
    with dest.layout.open_blob(b.digest) as f:
        return _hash_check(f, b, dest.layout.where(b.digest.blob_path()))


def _hash_check(stream: Any, b: BlobItem, where: str) -> str | None:
    reader = DigestingReader(stream, b.digest.algorithm)
    while reader.read(1024 * 1024):
        pass
    if reader.digest() != b.digest or reader.size != b.size:
        return f"{where}: reads back as {reader.digest()} ({reader.size} bytes), expected {b.digest} ({b.size} bytes)"
    return None
