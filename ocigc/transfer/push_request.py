"""What push is asked (``PushRequest``), the blobs it writes (``BlobSource``), what it answers
(``PushResult``), and the lock it takes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ocigc.digest import Digest
from ocigc.layout.layout import Layout
from ocigc.lock.acquire import acquire
from ocigc.lock.handle import LockHandle
from ocigc.oci.descriptor import (
    ANNOTATION_TITLE,
)
from ocigc.transfer.conventions import (
    DEFAULT_PUSH_CONCURRENCY,
)


# --- requests and results -----------------------------------------------------------------------
@dataclass
class PushRequest:
    layout_path: str
    tags: list[str]
    files: list[str] = field(default_factory=list)  # FILE[:MEDIATYPE] as given
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)  # --annotation (manifest)
    annotation_file: dict[str, dict[str, str]] | None = None
    config: str | None = None  # FILE[:MEDIATYPE]
    subject: str | None = None
    disable_path_validation: bool = False
    concurrency: int = DEFAULT_PUSH_CONCURRENCY
    lock_wait: float = 0.0
    #: Takes the shared lock (default: ``shared_locker(lock_wait, "push")``).
    locker: Locker | None = None
    #: Base directory for relative FILE paths (the working directory when None).
    cwd: str | None = None


@dataclass
class BlobSource:
    """One blob to push: where its bytes come from and what the manifest says about it."""

    descriptor: dict[str, Any]
    path: str | None = None  # local file (a packed directory's temp file too)
    data: bytes | None = None  # small inline blobs (the empty config, the manifest)
    label: str = ""
    uploaded: bool = False
    #: A temp file in the layout already holding these bytes (one-pass push on a local disk).
    staged: str | None = None

    @property
    def digest(self) -> Digest:
        return Digest(self.descriptor["digest"])

    @property
    def size(self) -> int:
        return int(self.descriptor["size"])


@dataclass
class PushResult:
    layout: str
    reference: str
    tags: list[str]
    descriptor: dict[str, Any]
    manifest: bytes
    blobs: list[BlobSource]
    warnings: list[str] = field(default_factory=list)
    index_changed: bool = True

    @property
    def digest(self) -> Digest:
        return Digest(self.descriptor["digest"])

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.layout, "reference": self.reference, "tags": self.tags,
            "media_type": self.descriptor["mediaType"], "digest": self.descriptor["digest"],
            "size": self.descriptor["size"], "artifact_type": self.descriptor.get("artifactType"),
            "blobs": [{"title": b.descriptor.get("annotations", {}).get(ANNOTATION_TITLE), "label": b.label,
                       "media_type": b.descriptor["mediaType"], "digest": b.descriptor["digest"],
                       "size": b.size, "uploaded": b.uploaded} for b in self.blobs],
            "warnings": self.warnings,
        }


@dataclass
class _FileItem:
    raw: str
    path: str  # as given (a key of the annotation file)
    abs_path: str
    media_type: str
    title: str
    is_dir: bool


# --- push -----------------------------------------------------------------------------------------
#: Takes the layout's lock for a writer's run (the shared lock) and returns the handle.
Locker = Callable[[Layout], contextlib.AbstractContextManager[LockHandle]]


def shared_locker(wait: float = 0.0, command: str = "") -> Locker:
    """The default locker: the layout's shared lock, waiting up to ``wait`` seconds (else LockBusy, 75)."""

    def locker(layout: Layout) -> contextlib.AbstractContextManager[LockHandle]:
        return acquire(layout, "shared", wait=wait, command=command)

    return locker
