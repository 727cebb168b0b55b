"""Images with timestamps for retention tests: ``Img`` describes one, ``build`` writes a layout of them."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kit.layouts import OCI_INDEX, LayoutBuilder, blob_path
from tests.kit.tree import age

CREATED = "org.opencontainers.image.created"


DAY = 86400.0


NOW = time.time()


def ago(days: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - days * DAY))


# --- a small layout DSL ---------------------------------------------------------------------------
@dataclass
class Img:
    key: str
    tags: tuple[str | None, ...] = ()  # None: an untagged entry
    created: float | None = None  # days ago, manifest annotation
    entry_created: float | None = None  # days ago, index.json entry annotation
    config_created: float | None = None  # days ago, config "created"
    children: tuple[str, ...] = ()  # an index of these images
    subject: str | None = None  # a referrer of this image
    young: bool = False  # manifest blob written just now (mtime)


def build(root: Path, imgs: list[Img]) -> dict[str, dict[str, Any]]:
    b = LayoutBuilder(root)
    descs: dict[str, dict[str, Any]] = {}
    for img in imgs:
        ann = {CREATED: ago(img.created)} if img.created is not None else None
        if img.children:
            doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                   "manifests": [_ref(descs[c]) for c in img.children]}
            if ann:
                doc["annotations"] = ann
            desc = b.blob(json.dumps(doc, separators=(",", ":")).encode(), OCI_INDEX)
        else:
            cfg: dict[str, Any] = {"architecture": "amd64", "os": "linux", "k": img.key}
            if img.config_created is not None:
                cfg["created"] = ago(img.config_created)
            desc = b.manifest([f"layer-{img.key}".encode()], json.dumps(cfg).encode(),
                              subject=_ref(descs[img.subject]) if img.subject else None,
                              artifact_type="application/vnd.example.sig" if img.subject else None,
                              annotations=ann)
        descs[img.key] = desc
        for tag in img.tags:
            extra: dict[str, Any] = {}
            if img.entry_created is not None:
                extra["annotations"] = {CREATED: ago(img.entry_created)}
            b.add(desc, tag, **extra)
    b.save()
    age(root)
    for img in imgs:
        if img.young:
            p = blob_path(root, descs[img.key]["digest"])
            os.utime(p, (time.time(), time.time()))
    return descs


def _ref(desc: dict[str, Any]) -> dict[str, Any]:
    return {k: desc[k] for k in ("mediaType", "digest", "size")}
