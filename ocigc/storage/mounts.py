"""Which file system holds a path: the one parser of ``/proc/self/mountinfo`` and the file-system
types ocigc tells apart (local disks, FUSE mounts of object stores).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: File systems where a listing reflects every completed write at once and a rename is atomic and
#: cheap (a short lock settle suffices; blobs are staged in place).
LOCAL_FSTYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "tmpfs", "ramfs", "overlay", "f2fs", "jfs",
    "reiserfs", "bcachefs", "apfs", "hfs", "hfsplus", "vfat", "exfat", "ntfs", "ntfs3", "9p",
    "virtiofs", "fuseblk", "squashfs", "nilfs2",
})
#: FUSE adapters of object stores (``fuse.NAME`` in mountinfo): an object appears when its file is
#: closed, and a rename is a server-side copy of every byte followed by a delete.
OBJECT_STORE_FUSE = frozenset({
    "s3fs", "rclone", "goofys", "mountpoint-s3", "mount-s3", "gcsfuse", "blobfuse", "blobfuse2",
    "geesefs", "ossfs", "cosfs",
})


#: Where the kernel lists this process's mounts (proc(5)).
MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    """A mountinfo field with every octal escape decoded (``\\040`` space, ``\\011`` tab, ``\\012``
    newline, ``\\134`` backslash)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mount_id: int
    parent_id: int
    device: str
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.mount_options or "ro" in self.super_options

    @property
    def subtype(self) -> str:
        """``s3fs`` for ``fuse.s3fs``; empty for plain ``fuse``."""
        base, _, sub = self.fstype.partition(".")
        return sub if base in ("fuse", "fuseblk") else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "mount_point": self.mount_point, "fstype": self.fstype, "source": self.source, "root": self.root,
            "device": self.device, "mount_options": list(self.mount_options),
            "super_options": list(self.super_options),
        }


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Every well-formed line of a mountinfo file (proc(5)); malformed lines are skipped."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields = head.split()
        rest = tail.split()
        if len(fields) < 6 or len(rest) < 2:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        entries.append(MountEntry(
            mount_id=mount_id, parent_id=parent_id, device=fields[2], root=_unescape(fields[3]),
            mount_point=_unescape(fields[4]), mount_options=tuple(fields[5].split(",")),
            fstype=rest[0], source=_unescape(rest[1]),
            super_options=tuple(rest[2].split(",")) if len(rest) > 2 else (),
        ))
    return entries


def find_mount(entries: Sequence[MountEntry], real_path: str) -> MountEntry | None:
    """The mount holding ``real_path`` (already resolved): longest prefix, topmost when stacked."""
    best: MountEntry | None = None
    for entry in entries:
        mp = entry.mount_point
        inside = real_path == mp or mp == "/" or real_path.startswith(mp.rstrip("/") + "/")
        if inside and (best is None or len(mp) >= len(best.mount_point)):
            best = entry
    return best


def fs_type(path: str) -> str | None:
    """The file-system type of the mount holding ``path`` (Linux /proc/self/mountinfo), or None."""
    try:
        with open(MOUNTINFO) as f:
            text = f.read()
    except OSError:
        return None
    mount = find_mount(parse_mountinfo(text), os.path.realpath(path))
    return mount.fstype if mount is not None else None


def is_object_store_fuse(kind: str | None) -> bool:
    """True for the mountinfo type of a FUSE mount of an object store (``fuse.s3fs``, ...)."""
    return kind is not None and kind.startswith("fuse.") and kind[5:] in OBJECT_STORE_FUSE
