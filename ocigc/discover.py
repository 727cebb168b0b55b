"""Finding layouts: a path is one layout or a root holding layouts at any depth.

A directory holding an ``oci-layout`` file is a layout. The walk goes on below a layout (a
repository ``team`` may hold ``team/app``) but never into a layout's ``blobs/``, its control
directory ``.ocigc/`` or writers' temp directories. Directory listings run level by level in a
pool: on a mounted bucket each listing is a round trip.
"""

from __future__ import annotations

from ocigc.errors import LayoutError
from ocigc.layout import BLOBS_DIR, CONTROL_DIR, OCI_LAYOUT_FILE, Layout
from ocigc.parallel import DEFAULT_JOBS, pmap
from ocigc.storage import DirEntry, Storage

#: Directories of a layout that never hold other layouts.
SKIP_IN_LAYOUT = frozenset({BLOBS_DIR, CONTROL_DIR, "ingest"})
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
                if is_layout and (e.name in SKIP_IN_LAYOUT or e.name.startswith(".umoci-")):
                    continue
                next_dirs.append(f"{rel}/{e.name}" if rel else e.name)
        listed = pmap(lambda d: (d, _list_or_empty(root, d)), next_dirs, jobs)
        level = listed
        depth += 1
    return sorted(found)


def _list_or_empty(root: Storage, rel: str) -> list[DirEntry]:
    try:
        return root.list_dir(rel)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def open_layouts(root: Storage, jobs: int = DEFAULT_JOBS) -> list[Layout]:
    """Every layout under ``root`` (not validated: callers open each and report per layout)."""
    return [Layout(root.child(rel) if rel else root, rel) for rel in find_layouts(root, jobs)]


def open_single(storage: Storage) -> Layout:
    """``storage`` must itself be a layout."""
    return Layout.open(storage)
