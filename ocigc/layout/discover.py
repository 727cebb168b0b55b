"""Finding layouts: a path is one layout or a root holding layouts at any depth.

A directory holding an ``oci-layout`` file is a layout. The walk goes on below a layout (a
repository ``team`` may hold ``team/app``) but never into a layout's ``blobs/``, its control
directory ``.ocigc/``. Writers' temp directories (``ingest/``, ``.umoci-*``) are walked:
a layout found there is a layout (never a leftover of its parent). Directory listings run level by level in a
pool: on a mounted bucket each listing is a round trip.
"""

from __future__ import annotations

import os
from pathlib import Path

from ocigc.digest import ALGORITHMS, Digest
from ocigc.errors import LayoutError
from ocigc.layout.layout import BLOBS_DIR, CONTROL_DIR, OCI_LAYOUT_FILE, Layout
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.storage.base import DirEntry, Storage

#: Directories of a layout that never hold other layouts.
#: ``ingest/`` and ``.umoci-*`` are walked: a directory holding ``oci-layout`` is a layout wherever it is,
#: even one named like a writer's temp directory (its sweep never treats it as a leftover).
SKIP_IN_LAYOUT = frozenset({BLOBS_DIR, CONTROL_DIR})
#: Never descend into these anywhere (VCS and our own control directories).
SKIP_ALWAYS = frozenset({".git", CONTROL_DIR, "lost+found"})
MAX_WALK_DEPTH = 64


def find_layouts(root: Storage, jobs: int = DEFAULT_JOBS) -> list[str]:
    """Relative paths ('' for the root itself) of every layout under ``root``, sorted."""
    try:
        top = root.list_dir("")
    except FileNotFoundError:
        raise LayoutError(f"{root.url}: no such directory") from None
    except NotADirectoryError:
        raise LayoutError(f"{root.url}: not a directory") from None
    found: list[str] = []
    level: list[tuple[str, list[DirEntry]]] = [("", top)]
    depth = 0
    while level and depth <= MAX_WALK_DEPTH:
        next_dirs: list[str] = []
        for rel, entries in level:
            names = {e.name for e in entries if not e.is_dir}
            is_layout = OCI_LAYOUT_FILE in names
            if is_layout:
                found.append(rel)
            for e in entries:
                if not e.is_dir or e.is_symlink or e.name in SKIP_ALWAYS:
                    continue
                if is_layout and e.name in SKIP_IN_LAYOUT:
                    continue
                next_dirs.append(f"{rel}/{e.name}" if rel else e.name)
        listed = pmap(lambda d: (d, _list_or_none(root, d)), next_dirs, jobs)
        # A directory we may not list could hold layouts: it is reported as one (opening it fails
        # with one line naming it, per layout), never skipped without a word.
        found.extend(d for d, entries in listed if entries is None)
        level = [(d, entries) for d, entries in listed if entries is not None]
        depth += 1
    return sorted(found)


def _list_or_none(root: Storage, rel: str) -> list[DirEntry] | None:
    """The entries of ``rel``; [] when it vanished or is no directory; None when we may not list it."""
    try:
        return root.list_dir(rel)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError:
        return None


def open_layouts(root: Storage, jobs: int = DEFAULT_JOBS) -> list[Layout]:
    """Every layout under ``root`` (not validated: callers open each and report per layout)."""
    out = []
    for rel in find_layouts(root, jobs):
        layout = Layout(root.child(rel) if rel else root, rel)
        # Links between layouts under the root are read through (verified); the root is planned as a
        # whole for them (``map_links`` below).
        layout.link_root = root.local_path("")
        out.append(layout)
    return out


def map_links(root: Storage, layouts: list[Layout]) -> None:
    """Plan a root as a whole where its layouts share storage through symlinks.

    Every symlink in a layout's ``blobs/`` (a digest-named link, or a linked ``blobs/<alg>/`` or
    ``blobs/`` directory) is resolved; one landing in another layout's ``blobs/`` under ``root`` makes
    its target referenced there (``Layout.linked_from`` / ``linked_dirs``: kept, "linked from <link>",
    never removed while the link exists). One leading outside ``root`` is recorded in ``links_out`` of
    the layout holding it (its target is not ours to protect: the plan says so). Only a file system
    has symlinks (local disk, a FUSE mount); on ``s3://`` this does nothing."""
    base = root.local_path("")
    if base is None:
        return
    real_root = Path(os.path.realpath(base))
    blobs_of: list[tuple[Path, Layout]] = []
    for lay in layouts:
        local = lay.storage.local_path(BLOBS_DIR)
        try:
            if local is not None and not local.is_symlink():
                blobs_of.append((Path(os.path.realpath(local)), lay))
        except OSError:  # unreadable (EACCES): that layout's own run reports it, the others go on
            continue
    for lay in layouts:
        for link in _links_in_blobs(lay):
            local = lay.storage.local_path(link)
            if local is None:
                continue
            target = Path(os.path.realpath(local))
            shown = lay.storage.join(link)
            if not target.is_relative_to(real_root):
                lay.links_out.append(f"{shown} -> {target}")
                continue
            for blobs, owner in blobs_of:
                if owner is lay or not target.is_relative_to(blobs):
                    continue
                parts = target.relative_to(blobs).parts
                if len(parts) == 2:
                    digest = Digest.from_blob_name(parts[0], parts[1])
                    if digest is not None:
                        owner.linked_from.setdefault(digest, shown)
                elif len(parts) == 1:
                    owner.linked_dirs.setdefault(parts[0], shown)
                else:  # blobs/ itself: every algorithm
                    for alg in ALGORITHMS:
                        owner.linked_dirs.setdefault(alg, shown)


def _links_in_blobs(layout: Layout) -> list[str]:
    """Relative paths of the symlinks in ``blobs/`` and ``blobs/<alg>/`` (not followed)."""
    local = layout.storage.local_path(BLOBS_DIR)
    if local is None:
        return []
    try:
        if local.is_symlink():
            return [BLOBS_DIR]
    except OSError:  # as an unlistable blobs/<alg>/ below: that layout's own run reports it
        return []
    out: list[str] = []
    try:
        with os.scandir(local) as algs:
            alg_dirs = sorted((a.name, a.is_symlink(), a.is_dir(follow_symlinks=False)) for a in algs)
    except OSError:
        return out
    for name, is_link, is_dir in alg_dirs:
        rel = f"{BLOBS_DIR}/{name}"
        if is_link:
            out.append(rel)
        elif is_dir:
            try:
                with os.scandir(local / name) as entries:
                    out.extend(f"{rel}/{e.name}" for e in entries if e.is_symlink())
            except OSError:
                continue
    return sorted(out)


