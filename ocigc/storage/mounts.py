"""Which file system holds a path: the one parser of ``/proc/self/mountinfo`` and the file-system
types ocigc tells apart (local disks, FUSE mounts of object stores).
"""

from __future__ import annotations

import os

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


def fs_type(path: str) -> str | None:
    """The file-system type of the mount holding ``path`` (Linux /proc/self/mountinfo), or None."""
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, best_type = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mnt = fields[4].replace("\\040", " ")
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, best_type = mnt, right.split()[0]
    return best_type


def is_object_store_fuse(kind: str | None) -> bool:
    """True for the mountinfo type of a FUSE mount of an object store (``fuse.s3fs``, ...)."""
    return kind is not None and kind.startswith("fuse.") and kind[5:] in OBJECT_STORE_FUSE
