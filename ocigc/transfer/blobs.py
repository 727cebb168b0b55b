"""Blobs in a layout for push: the layout created when missing, blobs written whole under their
digest name or staged and published."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from ocigc.digest import Digest
from ocigc.errors import (
    IntegrityError,
    LayoutError,
    naming,
)
from ocigc.layout.layout import INDEX_FILE, OCI_LAYOUT_FILE, Layout
from ocigc.progress import Counter
from ocigc.storage.base import SizesObjects, StagesTemp, Storage, open_write_content, stager
from ocigc.transfer.conventions import (
    NEW_INDEX_CONTENT,
    OCI_LAYOUT_CONTENT,
)
from ocigc.transfer.hashing import CHUNK, copy_hashing
from ocigc.transfer.push_request import BlobSource


# --- layout creation and blobs --------------------------------------------------------------------
def ensure_layout(storage: Storage) -> Layout:
    """Open the layout, creating ``oci-layout``, ``index.json`` and ``blobs/sha256`` when missing
    (the files oras-go writes). An existing but invalid ``oci-layout`` is an error."""
    if isinstance(storage, SizesObjects):  # a bucket: the three requests at once, one round trip
        with ThreadPoolExecutor(3, thread_name_prefix="ocigc-layout") as pool:
            marker = pool.submit(storage.object_size, OCI_LAYOUT_FILE)
            index = pool.submit(storage.object_size, INDEX_FILE)
            opened = pool.submit(Layout.open, storage)
            if marker.result() is not None:
                layout = opened.result()
                if index.result() is None:
                    with contextlib.suppress(FileExistsError):
                        storage.write_new(INDEX_FILE, NEW_INDEX_CONTENT)
                return layout
            with contextlib.suppress(Exception):
                opened.result()  # a layout not made yet: made below
    elif storage.stat(OCI_LAYOUT_FILE) is not None:  # the common case: one stat
        layout = Layout.open(storage)
        if storage.stat(INDEX_FILE) is None:
            with contextlib.suppress(FileExistsError):
                storage.write_new(INDEX_FILE, NEW_INDEX_CONTENT)
        storage.makedirs("blobs/sha256")  # idempotent; nothing on an object store (a stat there is 2 requests)
        return layout
    st = storage.stat("")
    if st is None:
        storage.makedirs("")
    elif not st.is_dir:
        raise LayoutError(f"{storage.url}: not a directory")
    with contextlib.suppress(FileExistsError):
        storage.write_new(OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT)
    layout = Layout.open(storage)
    if storage.stat(INDEX_FILE) is None:
        with contextlib.suppress(FileExistsError):
            storage.write_new(INDEX_FILE, NEW_INDEX_CONTENT)
    storage.makedirs("blobs/sha256")
    return layout


def blob_size_if_present(layout: Layout, digest: Digest) -> int | None:
    """The size of a blob, found by opening it (not by stat: s3fs's stat cache can claim a blob that
    another host deleted); on an object store by one HEAD. None when it is absent."""
    if isinstance(layout.storage, SizesObjects):
        return layout.storage.object_size(digest.blob_path())
    try:
        f = layout.open_blob(digest)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with f:
        try:
            return os.fstat(f.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            st = layout.stat_blob(digest)
            return st.size if st else None


def write_blob(layout: Layout, blob: BlobSource, counter: Counter | None = None) -> bool:
    """Store one blob unless it is present with the right size; returns True when it wrote.

    A staged blob's temp file is published under the digest; any other streams from its source
    (``open_write_content``) while digest and size of what is written are checked."""
    digest, size = blob.digest, blob.size
    present = blob_size_if_present(layout, digest)
    if present == size:
        if counter is not None:
            counter.add(size)
        return False  # a staged temp file stays until the push ends (``discard_staged``)
    rel = digest.blob_path()
    if blob.staged is not None:  # a failed publish leaves it for ``discard_staged``
        stager(layout.storage).publish_temp(blob.staged, rel)
        blob.staged = None
        return True
    where = blob.path or blob.label or str(digest)
    with open_write_content(layout.storage, rel) as out:
        if blob.data is not None:
            got_digest, got_size = Digest.from_bytes(blob.data, digest.algorithm), len(blob.data)
            out.write(blob.data)
            if counter is not None:
                counter.add(got_size)
        else:
            if blob.path is None:  # a packed directory, stored earlier and removed since
                raise IntegrityError(f"{blob.label or digest}: {digest} was removed while pushing; push again")
            try:
                src = open(blob.path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise IntegrityError(f"{where}: vanished while pushing; nothing stored") from None
            with src:
                got_digest, got_size = copy_hashing(src, out.write, digest.algorithm, max_bytes=size,
                                                    on_bytes=counter.add if counter else None, where=where)
        if got_digest != digest or got_size != size:
            raise IntegrityError(f"{where}: changed while pushing (hashed {digest} ({size} bytes), "
                                 f"then read {got_digest} ({got_size} bytes)); nothing stored")
    return True


#: While a blob streams into a temp file on a local disk, a helper thread flushes its dirty pages
#: every this many bytes, so the disk writes overlap the hashing and the fsync before the rename
#: finds little left to do.
WRITEBACK_BYTES = 32 * CHUNK


class _Writeback:
    """``write`` to a file whose dirty pages a helper thread flushes (fdatasync) as they pile up."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.fd = out.fileno()
        self.pending = 0
        self.wake = threading.Event()
        self.done = False
        self.thread = threading.Thread(target=self._run, name="ocigc-writeback", daemon=True)
        self.thread.start()

    def write(self, data: memoryview) -> None:
        self.out.write(data)
        self.pending += len(data)
        if self.pending >= WRITEBACK_BYTES:
            self.pending = 0
            self.out.flush()
            self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.done:
                return
            try:
                os.fdatasync(self.fd)
            except OSError:  # the fsync before the rename reports it
                return

    def close(self) -> None:
        self.done = True
        self.wake.set()
        self.thread.join()


def staged_blobs_here(storage: Storage) -> bool:
    """Whether push stages blobs in one pass (a local disk, where writing a temp copy is cheap)."""
    return isinstance(storage, StagesTemp) and storage.is_local_disk


def stage_file(layout: Layout, path: str, where: str, counter: Counter | None = None,
               algorithm: str = "sha256") -> tuple[Digest, int, str]:
    """Stream a local file into a temp file in ``blobs/<alg>/`` while hashing it (one pass).

    Returns the digest, the size and the temp file's name, for ``write_blob`` to publish under
    the digest (or for ``discard_staged``); the temp file is removed when this raises."""
    storage = layout.storage
    tmp_rel, tmp_path = stager(storage).new_temp(f"blobs/{algorithm}/staged")
    try:
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise IntegrityError(f"{where}: vanished while pushing; nothing stored") from None
        with src, naming(tmp_path), open(tmp_path, "wb") as out:
            wb = _Writeback(out)
            try:
                digest, size = copy_hashing(src, wb.write, algorithm,
                                            on_bytes=counter.add if counter else None, where=where)
            finally:
                wb.close()
    except BaseException:
        stager(storage).discard_temp(tmp_rel)
        raise
    return digest, size, tmp_rel


def discard_staged(layout: Layout, blobs: Sequence[BlobSource]) -> None:
    """Remove the temp files of staged blobs that were not published (present already, or failed)."""
    for b in blobs:
        if b.staged is not None:
            stager(layout.storage).discard_temp(b.staged)
            b.staged = None
