"""Push files to a layout as an oras artifact, and tag existing manifests.

The layout written is the one ``oras push --oci-layout`` writes (oras CLI ``cmd/oras/root/push.go``,
``file.go``, ``internal/option/packer.go``; oras-go ``pack.go``, ``content/file``, ``content/oci``):

- an OCI image manifest with ``artifactType`` (default ``application/vnd.unknown.artifact.v1``) and
  the empty config ``{}`` (``application/vnd.oci.empty.v1+json``, with its ``data``); with
  ``--config`` and no ``--artifact-type`` an image-spec v1.0 manifest (no ``artifactType``, config
  type default ``application/vnd.unknown.config.v1+json``); no files gives the empty descriptor as
  the single layer;
- ``org.opencontainers.image.title`` on each layer (the cleaned path as given), default layer type
  ``application/vnd.oci.image.layer.v1.tar``; a directory is packed as tar+gzip
  (``...tar+gzip``) with ``io.deis.oras.content.digest`` (sha256 of the tar) and
  ``io.deis.oras.content.unpack: "true"``;
- ``org.opencontainers.image.created`` (RFC 3339, UTC, seconds) on the manifest unless given;
- manifests serialised as Go's ``encoding/json`` does (struct field order, sorted annotation keys,
  ``<``/``>``/``&`` escaped), so a manifest ocigc packs is the one oras would pack;
- ``index.json``: one entry per tag with ``org.opencontainers.image.ref.name``; an untagged entry
  when pushed without a tag (the way oras records referrers); a tag that moves leaves its old
  manifest as an untagged entry when nothing else lists it (oras-go and containers/image do the same).

How blobs are stored depends on where the layout is (memory stays constant whatever the size):

- on a local disk, in one pass: each file streams into a temp file in ``blobs/<alg>/`` while it is
  hashed (dirty pages are flushed in the background as it goes); once the digest is known the temp
  file is fsynced and renamed to it, or dropped when a blob of that digest and size is there
  already. The bytes hashed are the bytes stored, whatever the source file does meanwhile;
- on a mounted bucket or ``s3://``, where writing is the expensive part, in two passes: files are
  hashed first, blobs already present with the right size are not written again, and the others
  are hashed again as they stream out, so that a file that changed in between is caught and never
  stored under a wrong digest.

Whatever the storage, a blob becomes visible under its digest name only when it is whole
(``LocalStorage.open_write_content``, ``S3Storage.open_write``): a temp file renamed into place on a
file system, FUSE mounts of buckets included (where the rename is a server-side copy); on ``s3://``
an object created by one PUT or by CompleteMultipartUpload after the last part. A push killed at
any point leaves at most a temp file (``sweep`` removes it after the grace period), never a short
blob under its digest. A blob already under the digest is trusted only with the declared size;
one of another size (written by an older or foreign writer) is replaced.
"""

from __future__ import annotations

import contextlib
import copy
import os
import stat as stat_mod
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ocigc.digest import Digest
from ocigc.errors import (
    IntegrityError,
    InvalidDigest,
    InvalidOption,
    LostRace,
    ManifestError,
    ReferenceNotFound,
    UsageError,
    UsageHint,
    naming,
    printable,
)
from ocigc.jsonload import load_json
from ocigc.layout.closure import require_closure
from ocigc.layout.indexio import read_index_retrying, update_index
from ocigc.layout.layout import MAX_MANIFEST_BYTES, OCI_LAYOUT_FILE, Layout
from ocigc.lock.handle import hold_for
from ocigc.oci.descriptor import (
    ANNOTATION_CREATED,
    ANNOTATION_TITLE,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
)
from ocigc.oci.index import Index, _without_ref_name, add_untagged, set_tag
from ocigc.oci.refs import TAG_RE, TAG_RULE, Reference, ambiguous_tag, check_tag, no_such_tag, reference_in
from ocigc.parallel import pmap
from ocigc.progress import NullCounter, NullProgress, Progress
from ocigc.storage.base import stager
from ocigc.storage.open_storage import open_storage
from ocigc.transfer.arguments import clean_path, parse_file_ref, title_problem
from ocigc.transfer.blobs import (
    blob_size_if_present,
    discard_staged,
    ensure_layout,
    stage_file,
    staged_blobs_here,
    write_blob,
)
from ocigc.transfer.conventions import (
    ANNOTATION_CONTENT_DIGEST,
    ANNOTATION_FILE_CONFIG,
    ANNOTATION_FILE_MANIFEST,
    ANNOTATION_UNPACK,
    DEFAULT_PUSH_CONCURRENCY,
    EMPTY_JSON,
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_UNKNOWN_ARTIFACT,
    MEDIA_TYPE_UNKNOWN_CONFIG,
    check_rfc3339,
    descriptor_json,
    empty_descriptor,
    go_json,
    utc_now_rfc3339,
)
from ocigc.transfer.hashing import hash_file
from ocigc.transfer.pack import pack_directory
from ocigc.transfer.push_request import BlobSource, Locker, PushRequest, PushResult, _FileItem, shared_locker


def _prepare_files(req: PushRequest, annotation_file: Mapping[str, Mapping[str, str]]) -> list[_FileItem]:
    items: list[_FileItem] = []
    seen: dict[str, str] = {}
    base = req.cwd or os.getcwd()
    for raw in req.files:
        path, media_type = parse_file_ref(raw)
        title = clean_path(path)
        if not req.disable_path_validation:
            if os.path.isabs(path):
                raise UsageHint(f"{path}: absolute file path detected. If it's intentional, "
                                "use {disable_path_validation} to skip this check", ("disable_path_validation",))
            if ".." in title.split("/"):
                raise UsageHint(f"{path}: path leaves the working directory ('..'); a pull would refuse "
                                "its title. If it's intentional, use {disable_path_validation}",
                                ("disable_path_validation",))
        abs_path = path if os.path.isabs(path) else os.path.join(base, path)
        try:
            st = os.stat(abs_path)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file or directory") from None
        except OSError as e:
            raise UsageError(f"{path}: cannot read: {e.strerror or e}") from None
        is_dir = stat_mod.S_ISDIR(st.st_mode)
        if not is_dir and not stat_mod.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: not a regular file or directory")
        if title in seen:
            raise UsageError(f"{path}: duplicate file name {title!r} (also given as {seen[title]!r})")
        seen[title] = path
        final_title = annotation_file.get(path, {}).get(ANNOTATION_TITLE, title)
        if not req.disable_path_validation and (problem := title_problem(final_title)):
            raise UsageError(f"{path}: title {final_title!r} is unsafe to pull ({problem})")
        if title == "." and not is_dir:
            raise UsageError(f"{path}: a file needs a name")
        items.append(_FileItem(raw, path, abs_path, media_type, title, is_dir))
    return items


def _resolve_subject(layout: Layout, index: Index, text: str) -> dict[str, Any]:
    """``--subject``: a tag or digest of the same layout (``TAG``, ``sha256:...``, ``@sha256:...``,
    ``::NAME``, ``PATH:TAG``, ``PATH@DIGEST``, ``PATH::NAME``), as a plain descriptor (mediaType, digest,
    size)."""
    ref = reference_in(text, layout.location)
    if ref is None:
        raise InvalidOption("subject", f"{text!r}: the subject must be in the layout pushed to ({layout.location})")
    if ref.tag is None and ref.digest is None:
        raise InvalidOption("subject", f"{text!r}: needs a tag or a digest")
    desc = resolve_manifest(layout, index, ref)
    # A referrer of a manifest whose closure is incomplete would hang off a broken image: refuse.
    require_closure(layout, _as_descriptor(layout, desc), "attach a referrer to")
    return descriptor_json(desc["mediaType"], desc["digest"], desc["size"])


def _as_descriptor(layout: Layout, entry: Mapping[str, Any]) -> Descriptor:
    try:
        return Descriptor.from_json(dict(entry), layout.where("index.json"))
    except (ValueError, InvalidDigest) as e:
        raise ManifestError(str(e)) from None


def resolve_manifest(layout: Layout, index: Index, ref: Reference) -> dict[str, Any]:
    """The raw ``index.json`` entry (a copy) a tag or digest names; for a digest with no entry, a
    plain descriptor read from the blob. ReferenceNotFound when there is none."""
    if ref.tag is None and ref.digest is None:
        raise UsageError(f"{ref}: needs a tag or a digest")
    raw_list = index.doc.get("manifests") or []
    if ref.tag is not None:
        found = [i for i, e in enumerate(index.entries) if e.ref_name == ref.tag]
        if not found:
            raise no_such_tag(ref, (e.ref_name for e in index.entries if e.ref_name is not None))
        digests = {index.entries[i].digest for i in found}
        if len(digests) > 1:
            raise ManifestError(f"{ref.path}: tag {ref.tag!r} names {len(digests)} different manifests in "
                                f"index.json ({', '.join(sorted(d.short for d in digests))})")
        entry = copy.deepcopy(raw_list[found[-1]])
    else:
        assert ref.digest is not None
        found = [i for i, e in enumerate(index.entries) if e.digest == ref.digest]
        entry = copy.deepcopy(raw_list[found[0]]) if found else _plain_from_blob(layout, ref.digest, str(ref))
    if not entry.get("mediaType"):
        entry["mediaType"] = _plain_from_blob(layout, Digest(entry["digest"]), str(ref))["mediaType"]
    if blob_size_if_present(layout, Digest(entry["digest"])) is None:
        raise IntegrityError(f"{layout.where(Digest(entry['digest']).blob_path())}: manifest of {ref} is missing")
    return dict(entry)


def _plain_from_blob(layout: Layout, digest: Digest, what: str) -> dict[str, Any]:
    try:
        raw = layout.read_blob(digest, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise ReferenceNotFound(f"{what}: no such manifest in the layout") from None
    try:
        doc = load_json(raw, limit=None)
    except ValueError as e:
        raise ManifestError(f"{layout.where(digest.blob_path())}: {what} is not a manifest ({e})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{layout.where(digest.blob_path())}: {what} is not a manifest")
    mt = doc.get("mediaType")
    if not isinstance(mt, str) or not mt:
        if isinstance(doc.get("manifests"), list):
            mt = OCI_INDEX
        elif isinstance(doc.get("config"), dict):
            mt = OCI_MANIFEST
        else:
            raise ManifestError(f"{layout.where(digest.blob_path())}: {what} is not a manifest")
    return descriptor_json(mt, digest, len(raw))


@dataclass
class _Prepared:
    """A push request checked, with what it implies (annotations, the kind of manifest, the config)."""

    items: list[_FileItem]
    afile: Mapping[str, Mapping[str, str]]
    manifest_annotations: dict[str, str]
    config_annotations: dict[str, str]
    warnings: list[str]
    spec_v1_0: bool
    artifact_type: str | None
    config_item: tuple[str, str, str] | None


def _prepare(req: PushRequest, layout_path: bool = True) -> _Prepared:
    """The request checked; ``layout_path``: ``req.layout_path`` is a layout's (not a registry's)."""
    if req.concurrency < 1:
        raise InvalidOption("concurrency", "must be at least 1")
    for tag in req.tags:
        check_tag(tag, printable(req.layout_path))
    if layout_path:
        _refuse_colon_path(req.layout_path)
    afile = req.annotation_file or {}
    if req.annotation_file is not None and req.annotations:
        raise InvalidOption("annotation", "cannot be given with {annotation_file}", also=("annotation_file",))
    manifest_annotations = (dict(afile.get(ANNOTATION_FILE_MANIFEST, {})) if req.annotation_file is not None
                            else dict(req.annotations))
    config_annotations = dict(afile.get(ANNOTATION_FILE_CONFIG, {}))
    created = manifest_annotations.get(ANNOTATION_CREATED)
    if created is not None:
        check_rfc3339(created, "annotations")
    items = _prepare_files(req, afile)
    warnings = [f"--annotation-file: {key!r} matches no file pushed (ignored)" for key in afile
                if key not in (ANNOTATION_FILE_MANIFEST, ANNOTATION_FILE_CONFIG) and key not in {i.path for i in items}]

    # oras: --config without --artifact-type packs an image-spec v1.0 manifest
    spec_v1_0 = req.config is not None and not req.artifact_type
    artifact_type = req.artifact_type or (None if req.config else MEDIA_TYPE_UNKNOWN_ARTIFACT)
    if spec_v1_0 and req.subject:
        raise InvalidOption("subject", "needs {artifact_type} when {config} is given (image-spec v1.0 has no subject)",
                            also=("artifact_type", "config"))
    config_item: tuple[str, str, str] | None = None
    if req.config is not None:
        cpath, cmt = parse_file_ref(req.config, MEDIA_TYPE_UNKNOWN_CONFIG)
        cabs = cpath if os.path.isabs(cpath) else os.path.join(req.cwd or os.getcwd(), cpath)
        if not os.path.isfile(cabs):
            raise InvalidOption("config", f"{cpath}: no such file")
        config_item = (cpath, cabs, cmt)
    return _Prepared(items, afile, manifest_annotations, config_annotations, warnings, spec_v1_0, artifact_type,
                     config_item)


@dataclass
class PackedManifest:
    """The manifest oras would pack for a request and its blobs: config, layers, the manifest itself
    (``manifest.descriptor`` is oras-go's descriptor of it, the ``index.json`` entry less the ref name)."""

    config: BlobSource
    layers: list[BlobSource]
    manifest: BlobSource

    @property
    def raw(self) -> bytes:
        assert self.manifest.data is not None
        return self.manifest.data


def pack_manifest(prep: _Prepared, blobs: list[BlobSource], subject: dict[str, Any] | None) -> PackedManifest:
    """The manifest of ``push``/``attach`` (module docstring) over hashed ``blobs``."""
    manifest_annotations = dict(prep.manifest_annotations)
    spec_v1_0, artifact_type = prep.spec_v1_0, prep.artifact_type
    layers = [b for b in blobs if b.label != "$config"]
    config_blob = next((b for b in blobs if b.label == "$config"), None)
    if config_blob is None:
        config_blob = BlobSource(empty_descriptor(prep.config_annotations or None), data=EMPTY_JSON, label="$config")
    if not layers and not spec_v1_0:
        layers = [BlobSource(empty_descriptor(), data=EMPTY_JSON, label="(empty)")]
    if ANNOTATION_CREATED not in manifest_annotations:
        manifest_annotations[ANNOTATION_CREATED] = utc_now_rfc3339()
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type and not spec_v1_0:
        manifest["artifactType"] = artifact_type
    manifest["config"] = config_blob.descriptor
    manifest["layers"] = [b.descriptor for b in layers]
    if subject is not None:
        manifest["subject"] = subject
    manifest["annotations"] = dict(sorted(manifest_annotations.items()))
    manifest_bytes = go_json(manifest)
    # oras-go pushManifest: the descriptor carries artifactType (the config type in v1.0) and
    # the manifest annotations; oras-go's index.json entry is that descriptor plus the ref name.
    entry = descriptor_json(OCI_MANIFEST, Digest.from_bytes(manifest_bytes), len(manifest_bytes),
                            manifest["annotations"],
                            artifact_type=config_blob.descriptor["mediaType"] if spec_v1_0 else artifact_type)
    return PackedManifest(config_blob, layers, BlobSource(entry, data=manifest_bytes, label="manifest"))


def push(req: PushRequest, progress: Progress | None = None) -> PushResult:
    """Pack, upload and record an artifact; see the module docstring for the layout written."""
    progress = progress or NullProgress()
    prep = _prepare(req)
    items, afile = prep.items, prep.afile
    config_annotations, config_item, warnings = prep.config_annotations, prep.config_item, prep.warnings

    storage = open_storage(req.layout_path)
    if req.subject and storage.stat(OCI_LAYOUT_FILE) is None:
        raise ReferenceNotFound(f"{req.layout_path}: no layout there, so no subject {req.subject!r}")
    one_pass = staged_blobs_here(storage)
    blobs: list[BlobSource] = []
    with tempfile.TemporaryDirectory(prefix="ocigc-push-") as tmp:
        if not one_pass:  # hash first, so that blobs already in the bucket are not uploaded
            blobs = _hash_sources(items, afile, config_item, config_annotations, tmp, req.concurrency, progress)
        layout = ensure_layout(storage)
        locker = req.locker or shared_locker(req.lock_wait, "push")
        # the check after the merge runs while the lock is being released (on a bucket: one round trip
        # for both); it reads only what index.json now references, which no ocigc process removes
        side = ThreadPoolExecutor(1, thread_name_prefix="ocigc-verify")
        checking = None
        with side, locker(layout) as handle, contextlib.ExitStack() as cleanup:
            if one_pass:  # stream every file into the layout while hashing it
                cleanup.callback(lambda: discard_staged(layout, blobs))
                blobs = _hash_sources(items, afile, config_item, config_annotations, tmp, req.concurrency,
                                      progress, stage_in=layout)
            subject = _resolve_subject(layout, read_index_retrying(layout), req.subject) if req.subject else None
            packed = pack_manifest(prep, blobs, subject)
            config_blob, layers, manifest_blob = packed.config, packed.layers, packed.manifest
            manifest_bytes, entry = packed.raw, packed.manifest.descriptor
            manifest_digest = packed.manifest.digest
            all_blobs = _unique([config_blob, *layers])
            # the manifest with its blobs, at once: nothing names it before index.json does
            _upload(layout, [*all_blobs, manifest_blob], req.concurrency, progress)

            def mutate(index: Index) -> Index:
                # Inside the short exclusive hold: a delete or sweep (which remove blobs only under an
                # exclusive hold) may have removed a blob we skipped as present; store it again before
                # index.json names it, so the merge never commits a dangling reference.
                pmap(lambda b: write_blob(layout, b), [*all_blobs, manifest_blob], req.concurrency, eager=not one_pass)
                for tag in req.tags:
                    index = set_tag(index, entry, tag)
                if not req.tags:
                    index = add_untagged(index, entry)
                return index

            handle.ensure_held()
            result = update_index(layout, mutate, hold=hold_for(handle))
            checking = side.submit(verify_present, layout, [*all_blobs, manifest_blob], req.concurrency,
                                   eager=not one_pass)
    if checking is not None:
        checking.result()
    ref = f"{req.layout_path}:{','.join(req.tags)}" if req.tags else f"{req.layout_path}@{manifest_digest}"
    return PushResult(layout.location, ref, list(req.tags), entry, manifest_bytes,
                      [config_blob, *layers, manifest_blob], warnings, result.changed)


def _refuse_colon_path(path: str) -> None:
    """``push L:Bad/Tag``: the grammar reads a path ``L:Bad/Tag`` (the last ':' is before the last '/'),
    oras a tag ``Bad/Tag``. Unless a directory ``L:Bad`` exists already (a path that really holds ':'),
    push refuses rather than create it: the tag is invalid, and the mistake would go unseen."""
    oras_tags = ambiguous_tag(path)
    if oras_tags is None or open_storage(path).stat(OCI_LAYOUT_FILE) is not None:
        return
    colon = len(path) - len(oras_tags) - 1
    end = path.find("/", colon)
    holder = path if end == -1 else path[:end]
    if open_storage(holder).stat("") is not None:
        return
    bad = next((t for t in oras_tags.split(",") if not TAG_RE.match(t)), oras_tags)
    raise UsageError(f"{printable(path)}: no such layout, and oras reads what follows its ':' as tags: {bad!r} "
                     f"is not a valid tag ({TAG_RULE}); to make a layout whose path holds ':', create "
                     f"{printable(holder)} first")


def _unique(blobs: list[BlobSource]) -> list[BlobSource]:
    seen: set[str] = set()
    out = []
    for b in blobs:
        if b.descriptor["digest"] not in seen:
            seen.add(b.descriptor["digest"])
            out.append(b)
    return out


def _hash_sources(items: list[_FileItem], afile: Mapping[str, Mapping[str, str]], config: tuple[str, str, str] | None,
                  config_annotations: Mapping[str, str], tmp: str, jobs: int, progress: Progress,
                  stage_in: Layout | None = None) -> list[BlobSource]:
    """Hash every file and pack every directory (in a pool); the descriptors oras would write.

    With ``stage_in`` (a layout on a local disk, under its lock) files are streamed into temp files
    of the layout as they are hashed and directories packed straight into one: ``BlobSource.staged``.
    """
    total = sum(os.path.getsize(i.abs_path) for i in items if not i.is_dir)
    counter = progress.counter("push" if stage_in is not None else "hash", total=total or None, unit="B")
    staged: list[BlobSource] = []  # removed again if another item fails
    staged_lock = threading.Lock()

    def one(item: _FileItem) -> BlobSource:
        if item.is_dir:
            tmp_rel = None
            if stage_in is not None:
                tmp_rel, out_path = stager(stage_in.storage).new_temp("blobs/sha256/staged")
                out = str(out_path)
            else:
                out = os.path.join(tmp, f"{uuid.uuid4().hex}.tar.gz")
            try:
                with naming(out):
                    packed = pack_directory(item.abs_path, item.title, out)
            except BaseException:
                if stage_in is not None and tmp_rel is not None:
                    stager(stage_in.storage).discard_temp(tmp_rel)
                raise
            annotations = {ANNOTATION_CONTENT_DIGEST: str(packed.tar_digest), ANNOTATION_UNPACK: "true",
                           ANNOTATION_TITLE: item.title}
            annotations.update(afile.get(item.path, {}))
            desc = descriptor_json(item.media_type or MEDIA_TYPE_LAYER_GZIP, packed.digest, packed.size, annotations)
            blob = BlobSource(desc, path=None if tmp_rel else packed.path, label=item.path, staged=tmp_rel)
        elif stage_in is not None:
            digest, size, tmp_rel = stage_file(stage_in, item.abs_path, item.path, counter)
            annotations = {ANNOTATION_TITLE: item.title, **afile.get(item.path, {})}
            desc = descriptor_json(item.media_type or MEDIA_TYPE_LAYER, digest, size, annotations)
            blob = BlobSource(desc, path=item.abs_path, label=item.path, staged=tmp_rel)
        else:
            digest, size = hash_file(item.abs_path, counter=counter)
            annotations = {ANNOTATION_TITLE: item.title, **afile.get(item.path, {})}
            desc = descriptor_json(item.media_type or MEDIA_TYPE_LAYER, digest, size, annotations)
            return BlobSource(desc, path=item.abs_path, label=item.path)
        with staged_lock:
            staged.append(blob)
        return blob

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items) or 1))) as pool:
            blobs = list(pool.map(one, items))
    except BaseException:
        if stage_in is not None:
            discard_staged(stage_in, staged)
        raise
    counter.close()
    if config is not None:
        _cpath, cabs, cmt = config
        digest, size = hash_file(cabs)
        blobs.append(BlobSource(descriptor_json(cmt, digest, size, config_annotations or None), path=cabs,
                                label="$config"))
    return blobs


def _upload(layout: Layout, blobs: list[BlobSource], jobs: int, progress: Progress) -> None:
    streamed = [b for b in blobs if b.staged is None]  # staged ones were counted as they streamed
    counter = (progress.counter("push", total=sum(b.size for b in streamed) or None, unit="B") if streamed
               else NullCounter())

    def one(b: BlobSource) -> None:
        b.uploaded = write_blob(layout, b, None if b.staged is not None else counter)

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(blobs)))) as pool:
        for _ in pool.map(one, blobs):
            pass
    counter.close()


def verify_present(layout: Layout, blobs: Sequence[BlobSource], jobs: int = DEFAULT_PUSH_CONCURRENCY, *,
                   eager: bool = False) -> None:
    """After the merge: every blob the manifest references opens with the right size (``eager``:
    all at once, as on a bucket)."""
    problems = []
    descs = [b.descriptor for b in blobs]
    sizes = pmap(lambda desc: blob_size_if_present(layout, Digest(desc["digest"])), descs, jobs, eager=eager)
    for desc, got in zip(descs, sizes, strict=True):
        d = Digest(desc["digest"])
        if got is None:
            problems.append(f"{d} missing")
        elif got != desc["size"]:
            problems.append(f"{d} has {got} bytes, expected {desc['size']}")
    if problems:
        raise IntegrityError(f"{layout.where('blobs')}: after the index.json merge: {'; '.join(problems)} "
                             f"(a concurrent sweep or writer removed it; push again)")


# --- tag --------------------------------------------------------------------------------------------
@dataclass
class TagResult:
    layout: str
    source: str
    digest: Digest
    tags: list[str]
    changed: bool


def tag(layout_path: str, source: Reference, new_tags: Sequence[str], *, lock_wait: float = 0.0,
        locker: Locker | None = None) -> TagResult:
    """Add tags to an existing manifest (``oras tag --oci-layout``), under the index.json protocol.
    Each new entry copies the source entry (annotations, artifactType, ...) with the new ref name."""
    if not new_tags:
        raise UsageError("give at least one new tag")
    for t in new_tags:
        check_tag(t)
    storage = open_storage(layout_path)
    layout = Layout.open(storage)
    with (locker or shared_locker(lock_wait, "tag"))(layout) as handle:
        entry = resolve_manifest(layout, read_index_retrying(layout), source)
        base = _without_ref_name(entry)
        # Tagging makes the manifest reachable (again): its whole closure must be there first. Under
        # the shared lock no sweep or delete removes blobs, so checking once here holds for the update.
        require_closure(layout, _as_descriptor(layout, base), "tag")

        def mutate(index: Index) -> Index:
            # re-resolve on the fresh index: the source tag may have moved since
            fresh = resolve_manifest(layout, index, source)
            if fresh["digest"] != base["digest"]:
                raise LostRace(f"{source}: moved to {fresh['digest']} while tagging; run again")
            for t in new_tags:
                index = set_tag(index, base, t)
            return index

        handle.ensure_held()
        result = update_index(layout, mutate, hold=hold_for(handle))
        if blob_size_if_present(layout, Digest(base["digest"])) is None:
            raise IntegrityError(f"{layout.where(Digest(base['digest']).blob_path())}: tagged manifest vanished")
    return TagResult(layout.location, str(source), Digest(base["digest"]), list(new_tags), result.changed)

