"""Journal records and backups under ``<layout>/.ocigc/``.

Object stores have no append: every record is a new, uniquely named file written once
(``.ocigc/journal/<UTC time>-<host>-<pid>-<id>.json``). Backups of ``index.json`` go to
``.ocigc/backup/``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from ocigc.jsonload import MAX_SMALL_JSON_BYTES, load_json
from ocigc.layout.layout import CONTROL_DIR, Layout

JOURNAL_DIR = f"{CONTROL_DIR}/journal"
BACKUP_DIR = f"{CONTROL_DIR}/backup"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def run_id() -> str:
    """A unique, sortable id for one run of a command."""
    return f"{_stamp()}-{_hostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_record(layout: Layout, kind: str, record: dict[str, Any], run: str | None = None) -> str:
    """Write one journal record; returns its path relative to the layout."""
    # a run can write several records of one kind (a retried race, two lock breaks): the suffix
    # keeps each file written once, the object-store rule
    rel = f"{JOURNAL_DIR}/{run}-{uuid.uuid4().hex[:6]}-{kind}.json" if run else f"{JOURNAL_DIR}/{run_id()}-{kind}.json"
    body = {"kind": kind, "time": datetime.now(UTC).isoformat(), "host": _hostname(), "pid": os.getpid(),
            **record}
    layout.storage.makedirs(JOURNAL_DIR)
    # One line: ``indent`` would take json's pure-Python encoder, about 10 µs per removed blob of a
    # sweep's record (the plan and the result list each blob); ``jq .`` shows it indented.
    layout.storage.write_bytes(rel, json.dumps(body, default=str).encode())
    return rel


def prepare(layout: Layout, *more: str) -> None:
    """Make sure ``.ocigc/journal/`` (and ``more`` control directories, such as the trash) is a
    directory before a run changes anything: its record is written after the removals, and a
    journal that cannot be written (``.ocigc/journal`` a file) must stop the run before a blob
    goes, not after."""
    for rel in (JOURNAL_DIR, *more):
        layout.storage.makedirs(rel)


def read_records(layout: Layout, kind: str | None = None) -> list[dict[str, Any]]:
    try:
        names = sorted(e.name for e in layout.storage.list_dir(JOURNAL_DIR) if e.name.endswith(".json"))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if kind and not name.endswith(f"-{kind}.json"):
            continue
        try:
            body = load_json(layout.storage.read_bytes(f"{JOURNAL_DIR}/{name}", limit=MAX_SMALL_JSON_BYTES))
        except (OSError, ValueError):
            continue
        if isinstance(body, dict):
            out.append({"file": name, **body})
    return out


def backup_index(layout: Layout, raw: bytes, fingerprint: str) -> str:
    rel = f"{BACKUP_DIR}/index-{_stamp()}-{fingerprint[:12]}-{uuid.uuid4().hex[:6]}.json"
    layout.storage.makedirs(BACKUP_DIR)
    layout.storage.write_bytes(rel, raw)
    return rel


def now() -> float:
    return time.time()


def _hostname() -> str:
    """``socket.gethostname()`` (socket is imported when a record is written, not by every run)."""
    import socket

    return socket.gethostname()
