"""Safe ``index.json`` updates on last-write-wins storage.

Every update: read fresh (an empty or invalid file is retried, never taken as empty), apply the
change to what was read, back up the old bytes under ``.ocigc/backup/``, write a temp file and
rename it over (or write in place where the mount cannot rename), read back and compare, wait
the settle delay and read again. A mismatch is a lost race: journaled, re-applied on the fresh
index, retried; after ``retries`` the update fails with LostRace (exit 3).

The caller passes a *mutation* (old index -> new index), not new bytes, so a retry re-applies the
change on top of whatever the other writer committed. ``hold`` is the short exclusive hold the
locking layer wraps around each merge.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from ocigc.errors import LayoutError, LostRace
from ocigc.index import Index
from ocigc.journal import backup_index, write_record
from ocigc.layout import INDEX_FILE, Layout

Mutation = Callable[[Index], Index | None]

#: How often an empty or unparsable index.json is re-read before giving up (s3fs can expose an
#: empty object while another writer's upload is in flight).
READ_RETRIES = 5


@dataclass
class UpdateResult:
    before: Index
    after: Index
    changed: bool
    attempts: int = 1
    races: list[str] = field(default_factory=list)
    backup: str | None = None


def read_index_retrying(layout: Layout, retries: int = READ_RETRIES, delay: float = 0.2) -> Index:
    """Read ``index.json``; an empty or invalid file is retried, then reported (never treated as empty)."""
    last: LayoutError | None = None
    for attempt in range(retries):
        try:
            return layout.read_index()
        except LayoutError as e:
            if "missing" in str(e):
                raise
            last = e
            time.sleep(delay * (attempt + 1))
    assert last is not None
    raise last


def update_index(layout: Layout, mutate: Mutation, *, retries: int = 5, settle: float = 0.0,
                 hold: Callable[[], AbstractContextManager[object]] | None = None,
                 run: str | None = None) -> UpdateResult:
    races: list[str] = []
    first: Index | None = None
    for attempt in range(1, retries + 1):
        with (hold() if hold else nullcontext()):
            current = read_index_retrying(layout)
            first = first or current
            new = mutate(current)
            if new is None or new.dumps() == current.dumps():
                return UpdateResult(first, current, False, attempt, races)
            raw_new = new.dumps()
            backup = backup_index(layout, layout.read_index_bytes(), current.fingerprint)
            layout.storage.write_bytes(INDEX_FILE, raw_new)
            problem = _verify_written(layout, raw_new, settle)
        if problem is None:
            return UpdateResult(first, new, True, attempt, races, backup)
        races.append(problem)
        write_record(layout, "race", {"attempt": attempt, "problem": problem,
                                      "expected_fingerprint": new.fingerprint}, run)
        time.sleep(random.uniform(0.05, 0.3) * attempt)
    raise LostRace(f"{layout.where(INDEX_FILE)}: lost the race with another writer {retries} times "
                   f"({races[-1] if races else 'unknown'})")


def _verify_written(layout: Layout, expected: bytes, settle: float) -> str | None:
    """None when ``index.json`` still holds ``expected`` right after the write and after ``settle``."""
    got = layout.read_index_bytes()
    if got != expected:
        return "index.json changed right after our write (another writer overwrote it)"
    if settle > 0:
        time.sleep(settle)
        got = layout.read_index_bytes()
        if got != expected:
            return f"index.json changed within the settle delay of {settle:g}s (another writer overwrote it)"
    return None
