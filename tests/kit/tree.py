"""Independent views of a tree on disk: snapshots, the blobs present, what index.json reaches by a
naive walk of the files (independent of ocigc's graph), the tags, and ageing files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def snapshot(root: Path, control: bool = True) -> dict[str, tuple[str, str, int | None]]:
    """Every entry under ``root`` (not following links): kind, content hash or link target, mtime.

    Directory mtimes are included (a created-then-removed file changes them). With
    ``control=False`` ocigc's control directory ``.ocigc/`` (locks, journal) and the root's mtime
    are left out: bookkeeping a refused real run may write."""
    out: dict[str, tuple[str, str, int | None]] = {}
    for dirpath, dirs, files in os.walk(root):
        base = Path(dirpath)
        rel_dir = base.relative_to(root)
        if not control and rel_dir.parts[:1] == (".ocigc",):
            continue
        for name in [*dirs, *files]:
            p = base / name
            rel = str(p.relative_to(root))
            if not control and rel == ".ocigc":
                continue
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), None)
            elif p.is_dir():
                out[rel + "/"] = ("dir", "", st.st_mtime_ns)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns)
    if control:
        out["./"] = ("dir", "", root.stat().st_mtime_ns)
    return out


def present(root: Path) -> set[str]:
    """Digests of the regular files under blobs/<alg>/ (symlinks and odd names left out)."""
    out: set[str] = set()
    blobs = root / "blobs"
    if not blobs.is_dir():
        return out
    for alg in blobs.iterdir():
        if alg.is_symlink() or not alg.is_dir():
            continue
        for f in alg.iterdir():
            if f.is_file() and not f.is_symlink() and all(c in "0123456789abcdef" for c in f.name):
                out.add(f"{alg.name}:{f.name}")
    return out


def closure(root: Path, digests: list[str] | set[str]) -> set[str]:
    """Digests reachable from ``digests`` by a naive walk of the files (manifests[], config, layers[],
    blobs[]; not subject), independent of ocigc's graph."""
    stack, seen = list(digests), set()
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        alg, hexd = d.split(":")
        try:
            doc = json.loads((root / "blobs" / alg / hexd).read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or ("schemaVersion" not in doc and "blobs" not in doc):
            continue
        kids = [*(doc.get("manifests") or []), *(doc.get("layers") or []), *(doc.get("blobs") or [])]
        if isinstance(doc.get("config"), dict):
            kids.append(doc["config"])
        stack.extend(k["digest"] for k in kids if isinstance(k, dict) and isinstance(k.get("digest"), str))
    return seen


def index_tags(root: Path) -> list[str | None]:
    doc = json.loads((root / "index.json").read_text())
    return [(m.get("annotations") or {}).get("org.opencontainers.image.ref.name") for m in doc.get("manifests") or []]


def age(root: Path, seconds: float = 7200) -> None:
    """Age every file and link under ``root`` (the grace period then keeps nothing)."""
    import time

    t = time.time() - seconds
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            os.utime(Path(dirpath) / f, (t, t), follow_symlinks=False)


def reachable(root: Path) -> set[str]:
    """What the entries of ``root``'s index.json reach, by ``closure``."""
    doc = json.loads((root / "index.json").read_text())
    return closure(root, [m["digest"] for m in doc.get("manifests") or []])
