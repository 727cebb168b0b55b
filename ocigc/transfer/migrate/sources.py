"""Where migrate reads and writes: layout and registry sources, layout and registry destinations."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from ocigc.digest import Digest
from ocigc.errors import (
    IntegrityError,
    InvalidDigest,
    ReferenceNotFound,
)
from ocigc.layout.indexio import read_index_retrying
from ocigc.layout.layout import OCI_LAYOUT_FILE, Layout
from ocigc.layout.state import stat_blobs
from ocigc.lock import acquire as locking
from ocigc.oci import manifest as mf
from ocigc.oci.descriptor import (
    Descriptor,
)
from ocigc.oci.index import Index
from ocigc.oci.referrers import referrers_tag
from ocigc.parallel import pmap
from ocigc.storage.base import Storage, open_write_content
from ocigc.transfer.blobs import ensure_layout
from ocigc.transfer.hashing import copy_hashing
from ocigc.transfer.migrate.model import (
    COPY,
    FOREIGN,
    MOVE,
    PRESENT,
    Node,
    RepoPlan,
    Root,
)
from ocigc.transfer.registry import RegistryClient
from ocigc.transfer.registry_model import BlobNotFound


def _is_digest(ref: str) -> bool:
    alg, colon, _ = ref.partition(":")
    return bool(colon) and alg in ("sha256", "sha384", "sha512")


def _own_media_type(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return ""
    mt = doc.get("mediaType") if isinstance(doc, dict) else None
    return mt if isinstance(mt, str) else ""


class LayoutSource:
    """A layout read through the storage seam (no lock: reading takes none)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.label = layout.location

    def roots(self, want: Callable[[str | None], bool]) -> list[Root]:
        index = read_index_retrying(self.layout)
        raw_list = index.doc.get("manifests") or []
        return [Root(e.digest, e.media_type, e.size, e.ref_name, dict(raw_list[i]))
                for i, e in enumerate(index.entries)]

    def resolve(self, ref: str) -> list[Root]:
        """The roots ``ref`` (a ref name, or a digest) names; a digest no entry lists is read from
        its blob (a manifest below an index, say)."""
        index = read_index_retrying(self.layout)
        raw_list = index.doc.get("manifests") or []
        if _is_digest(ref):
            digest = Digest(ref)
            for i, e in enumerate(index.entries):
                if e.digest == digest:
                    entry = dict(raw_list[i])
                    entry.pop("annotations", None)
                    return [Root(e.digest, e.media_type, e.size, None, entry)]
            raw = self._read(Descriptor("", digest, -1))
            return [Root(digest, _own_media_type(raw), len(raw), None)]
        found = [Root(e.digest, e.media_type, e.size, e.ref_name, dict(raw_list[i]))
                 for i, e in enumerate(index.entries) if e.ref_name == ref]
        if not found:
            raise ReferenceNotFound(f"{self.label}: no tag {ref!r}")
        return found

    def _read(self, desc: Descriptor) -> bytes:
        try:
            return self.layout.read_blob(desc.digest)
        except FileNotFoundError:
            raise BlobNotFound(f"{self.layout.where(desc.digest.blob_path())}: missing") from None

    def manifest(self, desc: Descriptor) -> tuple[bytes, str]:
        return self._read(desc), ""

    def small_blob(self, desc: Descriptor) -> bytes:
        return self._read(desc)

    def open_blob(self, digest: Digest, size: int) -> tuple[BinaryIO, int]:
        try:
            f = self.layout.open_blob(digest)
        except FileNotFoundError:
            raise BlobNotFound(f"{self.layout.where(digest.blob_path())}: missing") from None
        try:
            actual = os.fstat(f.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            st = self.layout.stat_blob(digest)
            actual = st.size if st else -1
        return f, actual

    def referrers(self, digest: Digest) -> list[Descriptor] | None:
        return None  # a layout's referrers are its own (untagged) index.json entries

    def registry_location(self) -> tuple[str, str] | None:
        return None


class RegistrySource:
    """A registry repository: its tags are the roots; referrers come from the referrers API."""

    def __init__(self, client: RegistryClient, repo: str, jobs: int) -> None:
        self.client = client
        self.repo = repo
        self.jobs = jobs
        self.label = f"{client.host}/{repo}"
        self._cache: dict[Digest, tuple[bytes, str]] = {}
        self._lock = threading.Lock()
        #: Without the referrers API, read the fallback tag ``<alg>-<hex>`` (``cp -r``; migrate copies
        #: every tag, the fallback tags among them).
        self.fallback_tags = False

    def _fallback(self, digest: Digest) -> list[dict[str, Any]] | None:
        try:
            raw, _, _ = self.client.get_manifest(self.repo, referrers_tag(str(digest)))
        except BlobNotFound:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        return [m for m in manifests if isinstance(m, dict)] if isinstance(manifests, list) else None

    def roots(self, want: Callable[[str | None], bool]) -> list[Root]:
        tags = [t for t in self.client.tags(self.repo) if want(t)]

        def fetch(tag: str) -> Root:
            raw, media_type, digest = self.client.get_manifest(self.repo, tag)
            with self._lock:
                self._cache[digest] = (raw, media_type)
            return Root(digest, media_type, len(raw), tag)

        return pmap(fetch, tags, self.jobs)

    def resolve(self, ref: str) -> list[Root]:
        """The manifest ``ref`` (a tag or a digest) names, as one root."""
        try:
            raw, media_type, digest = self.client.get_manifest(self.repo, ref)
        except BlobNotFound:
            raise ReferenceNotFound(f"{self.label}: no manifest {ref!r}") from None
        with self._lock:
            self._cache[digest] = (raw, media_type)
        return [Root(digest, media_type, len(raw), None if _is_digest(ref) else ref)]

    def manifest(self, desc: Descriptor) -> tuple[bytes, str]:
        with self._lock:
            hit = self._cache.get(desc.digest)
        if hit is not None:
            return hit
        raw, media_type, _ = self.client.get_manifest(self.repo, desc.digest)
        return raw, media_type

    def small_blob(self, desc: Descriptor) -> bytes:
        return self.client.read_blob(self.repo, desc.digest)

    def open_blob(self, digest: Digest, size: int) -> tuple[BinaryIO, int]:
        stream = self.client.open_blob(self.repo, digest)
        return stream, stream.size  # type: ignore[return-value]

    def referrers(self, digest: Digest) -> list[Descriptor] | None:
        found = self.client.referrers(self.repo, digest)
        if found is None and self.fallback_tags:
            found = self._fallback(digest)
        if found is None:
            return None
        out = []
        for obj in found:
            with contextlib.suppress(ValueError, InvalidDigest):
                out.append(Descriptor.from_json(obj, "referrer"))
        return out

    def registry_location(self) -> tuple[str, str] | None:
        return self.client.host, self.repo


class LayoutDest:
    is_registry = False

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.label = storage.url
        self.layout: Layout | None = None
        self.handle: Any = None
        self.listing: set[Digest] = set()
        self.index: Index | None = None
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def inspect(self, plan: RepoPlan, jobs: int) -> None:
        if self.storage.stat(OCI_LAYOUT_FILE) is None:
            return  # a new layout: everything is to copy
        layout = Layout.open(self.storage)
        self.index = read_index_retrying(layout)
        self.listing = self._intact(layout, plan, jobs)
        for d in plan.order:
            plan.manifest_state[d] = PRESENT if d in self.listing else COPY
        for b in plan.blobs.values():
            if b.digest in self.listing:
                b.state = PRESENT
        current = self.index.tags()
        untagged = {e.digest for e in self.index.entries if e.ref_name is None}
        for e in plan.entries:
            if e.name is None:
                e.state = PRESENT if e.digest in untagged else COPY
                continue
            have = [x.digest for x in current.get(e.name, [])]
            e.state = PRESENT if e.digest in have else (MOVE if have else COPY)

    @staticmethod
    def _intact(layout: Layout, plan: RepoPlan, jobs: int) -> set[Digest]:
        """The listed blobs, less those the plan needs whose size is not the one it expects: a blob
        truncated under its digest name (a writer killed half-way) is copied again, never trusted
        by name. Sizes come from the listing where it carries them (``s3://``), else a stat each."""
        listing = layout.list_blobs()
        present = set(listing.digests)
        expected: dict[Digest, int] = {d: plan.nodes[d].size for d in plan.order if d in present and d in plan.nodes}
        expected.update({d: b.size for d, b in plan.blobs.items() if d in present})
        stats = stat_blobs(layout, expected, jobs, known=listing.stats)
        for d, size in expected.items():
            st = stats.get(d)
            if st is None or st.size != size:
                present.discard(d)
                if st is not None:
                    plan.notes.append(f"{layout.where(d.blob_path())}: has {st.size} bytes, expected {size}; "
                                      "copied again")
        return present

    def prepare(self, lock_wait: float, command: str = "migrate") -> None:
        self.layout = ensure_layout(self.storage)
        self.handle = locking.acquire(self.layout, "shared", wait=lock_wait, command=command)

    def recheck(self, plan: RepoPlan) -> None:
        """Under the lock: what the plan found present may have been swept since; list again."""
        assert self.layout is not None
        if not self.listing:
            return
        now = set(self.layout.list_blobs().digests)
        for b in plan.blobs.values():
            if b.state == PRESENT and b.digest not in now:
                b.state = COPY
        for d in plan.order:
            if plan.manifest_state.get(d) == PRESENT and d not in now:
                plan.manifest_state[d] = COPY

    def release(self) -> None:
        if self.handle is not None:
            self.handle.release()
            self.handle = None

    def _blob_dir(self, digest: Digest) -> None:
        rel = f"blobs/{digest.algorithm}"
        # makedirs under the lock: a thread that finds ``rel`` in the set must find it made, too
        # (marking it before making it let a second copy write into a directory not yet there).
        with self._dirs_lock:
            if rel in self._dirs:
                return
            self.storage.makedirs(rel)
            self._dirs.add(rel)

    def write_blob(self, digest: Digest, size: int, src: BinaryIO, on_bytes: Callable[[int], None] | None) -> None:
        assert self.layout is not None
        self._blob_dir(digest)
        where = self.layout.where(digest.blob_path())
        with open_write_content(self.storage, digest.blob_path()) as out:
            got, n = copy_hashing(src, out.write, digest.algorithm, max_bytes=size, on_bytes=on_bytes, where=where)
            if got != digest or n != size:
                raise IntegrityError(f"{where}: the source gave {n} bytes hashing to {got}, not {digest} "
                                     f"({size} bytes); nothing stored")

    def write_manifest(self, node: Node) -> None:
        self._blob_dir(node.digest)
        self.storage.write_bytes(node.digest.blob_path(), node.raw)


class RegistryDest:
    is_registry = True

    def __init__(self, client: RegistryClient, repo: str) -> None:
        self.client = client
        self.repo = repo
        self.label = f"{client.host}/{repo}"

    def inspect(self, plan: RepoPlan, jobs: int) -> None:
        client, repo = self.client, self.repo
        head_jobs = max(4, jobs * 2)
        # Every check, even in a repository without tags: an interrupted run leaves blobs behind.
        tags = client.tags(repo)

        def head_manifest(d: Digest) -> bool:
            node = plan.nodes[d]
            info = client.head_manifest(repo, Digest.from_bytes(node.raw, "sha256") if d.algorithm != "sha256"
                                        else d)
            return info is not None

        present = pmap(head_manifest, plan.order, head_jobs)
        covered: set[Digest] = set()
        for d, here in zip(plan.order, present, strict=True):
            plan.manifest_state[d] = PRESENT if here else COPY
            node = plan.nodes[d]
            if here and node.kind == mf.KIND_MANIFEST:  # a registry holds every blob of a stored manifest
                covered.update(c.digest for kind, c in node.children if kind in (mf.CONFIG, mf.LAYER))
        todo = [b for b in plan.blobs.values() if b.digest not in covered and b.state != FOREIGN]
        for b in plan.blobs.values():
            if b.digest in covered:
                b.state = PRESENT
        for b, here in zip(todo, pmap(lambda b: client.blob_exists(repo, b.digest), todo, head_jobs), strict=True):
            b.state = PRESENT if here else COPY
        names = sorted({e.name for e in plan.entries if e.name is not None and e.name in set(tags)})
        infos = dict(zip(names, pmap(lambda t: client.head_manifest(repo, t), names, head_jobs), strict=True))
        for e in plan.entries:
            if e.name is None:
                e.state = plan.manifest_state.get(e.digest, COPY)
                continue
            info = infos.get(e.name)
            target = plan.nodes.get(e.digest)
            if info is None:
                e.state = COPY
            elif info.digest is not None and target is not None and info.digest in target.registry_digests():
                e.state = PRESENT
            else:
                e.state = MOVE
