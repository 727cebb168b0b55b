"""Safe ``index.json`` updates on last-write-wins storage.

Every update: read fresh (an empty or invalid file is retried, never taken as empty), apply the
change to what was read, back up the old bytes under ``.ocigc/backup/``, write a temp file and
rename it over (or write in place where the mount cannot rename), read back and compare, wait
the settle delay and read again. A mismatch is a lost race: journaled, re-applied on the fresh
index, retried; after ``retries`` the update fails with LostRace (exit 3).

The caller passes a *mutation* (old index -> new index), not new bytes, so a retry re-applies the
change on top of whatever the other writer committed. ``hold`` is the short exclusive hold the
locking layer wraps around each merge.

On a store with conditional writes (``ocigc.storage.base.conditional``: the native S3 backend when its
probe passed) the update is a compare-and-swap instead: read ``index.json`` with its ETag, apply
the change, back up, ``PUT If-Match: <etag>``; no temp file, no rename, no settle. A 412 (or a
409 that kept conflicting) is a lost race: re-read, re-apply, retry.
"""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field

from ocigc import status
from ocigc.duration import format_duration
from ocigc.errors import LayoutError, LostRace
from ocigc.layout.journal import BACKUP_DIR, backup_index, write_record
from ocigc.layout.layout import INDEX_FILE, MAX_INDEX_BYTES, Layout, check_index_size
from ocigc.oci.index import Index
from ocigc.storage.base import ConditionalStorage, HasSettleHint, PreconditionFailed, conditional

Mutation = Callable[[Index], Index | None]

#: How often an empty or unparsable index.json is re-read before giving up (s3fs can expose an
#: empty object while another writer's upload is in flight).
READ_RETRIES = 5
#: Compare-and-swap attempts at least (each lost attempt means another writer's update landed).
CAS_MIN_RETRIES = 16


@dataclass
class UpdateResult:
    before: Index
    after: Index
    changed: bool
    attempts: int = 1
    races: list[str] = field(default_factory=list)
    backup: str | None = None


class UnreadableIndex(LayoutError):
    """``index.json`` stayed empty or invalid on every re-read (a writer rewriting it in place, or a corrupt file)."""


#: An ``index.json`` modified this recently (seconds) may be in the middle of another writer's rewrite.
RECENT_WRITE = 30.0


def _retry_reason(layout: Layout) -> tuple[str | None, str]:
    """Whether a concurrent writer is plausible for an unreadable ``index.json``: (why it is, so the
    read is retried | None, what was seen). Plausible on a mount another host writes through, or when
    the file changed moments ago; a corrupt file that has sat on a local disk is reported at once."""
    try:
        st = layout.storage.stat(INDEX_FILE)
    except OSError:
        st = None
    age = time.time() - st.mtime if st is not None else None
    seen = f"modified {format_duration(max(age, 0.0), 'age')} ago" if age is not None else "its age unknown"
    if age is not None and age < RECENT_WRITE:
        return f"{seen}: another writer may be rewriting it in place", seen
    from ocigc.lock.params import LOCAL_DISK_SETTLE, default_settle

    if not isinstance(layout.storage, HasSettleHint) and default_settle(layout) > LOCAL_DISK_SETTLE:
        return f"{seen}, on a shared mount: another host may be rewriting it in place", seen
    return None, seen


def _read_raw_retrying(layout: Layout, retries: int = READ_RETRIES, delay: float = 0.2) -> tuple[bytes, Index]:
    """The exact bytes of ``index.json`` and their parse; an empty or invalid file is retried where a
    concurrent writer is plausible (``_retry_reason``), then reported; never taken as empty."""
    last: LayoutError | None = None
    why: str | None = None
    for attempt in range(retries):
        try:
            raw = layout.read_index_bytes()  # LayoutError when missing: not retried
        except OSError as e:
            if e.errno not in (errno.EIO, errno.ESTALE, errno.EAGAIN):
                raise
            # s3fs answers EIO while another host replaces the object: a transient read failure.
            last = LayoutError(f"{layout.where(INDEX_FILE)}: read failed ({e.strerror or e})")
        else:
            try:
                return raw, Index.parse(raw, layout.where(INDEX_FILE))
            except LayoutError as e:
                last = e
        if attempt == 0:
            why, seen = _retry_reason(layout)
            if why is None:
                raise UnreadableIndex(f"{last} (not retried: {seen} and not on a shared mount, so no "
                                      "writer is rewriting it)")
        if attempt + 1 < retries:
            time.sleep(delay * (attempt + 1))
    assert last is not None
    raise UnreadableIndex(f"{last} (still after {retries} reads; {why})")


def read_raw_retrying(layout: Layout, retries: int = READ_RETRIES, delay: float = 0.2) -> tuple[bytes, Index]:
    """``read_index_retrying`` with the exact bytes read (for a backup)."""
    return _read_raw_retrying(layout, retries, delay)


def read_index_retrying(layout: Layout, retries: int = READ_RETRIES, delay: float = 0.2) -> Index:
    """Read ``index.json``; an empty or invalid file is retried, then reported (never treated as empty)."""
    return _read_raw_retrying(layout, retries, delay)[1]


def default_settle(layout: Layout) -> float:
    """The lock protocol's settle delay for this layout (``OCIGC_LOCK_SETTLE``, else by file system)."""
    from ocigc.lock.params import LockParams

    return LockParams.from_env().resolve(layout).settle or 0.0


def update_index(layout: Layout, mutate: Mutation, *, retries: int = 5, settle: float | None = None,
                 hold: Callable[[], AbstractContextManager[object]] | None = None,
                 run: str | None = None) -> UpdateResult:
    """Apply ``mutate`` to a fresh read of ``index.json`` under the update protocol (module docstring).

    ``settle`` defaults to the lock protocol's settle delay (2 s on a FUSE mount, 0.02 s on a local
    disk; ``OCIGC_LOCK_SETTLE`` overrides). ``hold`` wraps every attempt (read, write, verify).
    """
    store = conditional(layout.storage)
    if store is not None:
        return _update_cas(layout, store, mutate, max(retries, CAS_MIN_RETRIES), hold, run)
    if settle is None:
        settle = default_settle(layout)
    races: list[str] = []
    first: Index | None = None
    for attempt in range(1, retries + 1):
        with (hold() if hold else nullcontext()):
            try:
                raw_current, current = _read_raw_retrying(layout)
            except UnreadableIndex as e:
                # Under our hold only a writer that is not ocigc can keep it empty or torn: a lost race.
                races.append(str(e))
                write_record(layout, "race", {"attempt": attempt, "problem": f"unreadable: {e}",
                                              "index": layout.where(INDEX_FILE), "run": run})
                time.sleep(_jitter(0.2, 0.6) * attempt)
                continue
            first = first or current
            new = mutate(current)
            if new is None or new.dumps() == current.dumps():
                return UpdateResult(first, current, False, attempt, races)
            raw_new = new.dumps()
            backup = backup_index(layout, raw_current, current.fingerprint)
            layout.storage.write_bytes(INDEX_FILE, raw_new)
            problem = _verify_written(layout, raw_new, settle)
        if problem is None:
            return UpdateResult(first, new, True, attempt, races, backup)
        races.append(problem)
        write_record(layout, "race", {"attempt": attempt, "problem": problem, "index": layout.where(INDEX_FILE),
                                      "read_fingerprint": current.fingerprint,
                                      "expected_fingerprint": new.fingerprint, "backup": backup, "run": run})
        time.sleep(_jitter(0.05, 0.3) * attempt)
    raise LostRace(f"{layout.where(INDEX_FILE)}: lost the race with another writer {retries} times "
                   f"({races[-1] if races else 'unknown'}); backups in {layout.where(BACKUP_DIR)}")


def _update_cas(layout: Layout, store: ConditionalStorage, mutate: Mutation, retries: int,
                hold: Callable[[], AbstractContextManager[object]] | None, run: str | None) -> UpdateResult:
    """``update_index`` by compare-and-swap on the ETag of ``index.json`` (module docstring)."""
    races: list[str] = []
    first: Index | None = None
    for attempt in range(1, retries + 1):
        # The read and the backup of what was read need no hold (the compare-and-swap replaces only
        # what we read): they go out while the hold is being taken (a lease and a listing), so that
        # under the hold only the mutation and the write remain. An unchanged index drops its backup.
        with ThreadPoolExecutor(1, thread_name_prefix="ocigc-index") as side:
            prepared = side.submit(_read_and_back_up, layout, store)
            with (hold() if hold else nullcontext()):
                _raw, etag, current, backup = prepared.result()
                first = first or current
                new = mutate(current)
                if new is None or new.dumps() == current.dumps():
                    with suppress(OSError):
                        layout.storage.remove(backup)
                    return UpdateResult(first, current, False, attempt, races)
                raw_new = new.dumps()
                try:
                    store.put_if_match(INDEX_FILE, raw_new, etag)
                    return UpdateResult(first, new, True, attempt, races, backup)
                except (PreconditionFailed, FileNotFoundError):
                    problem = (f"index.json changed between our read and our compare-and-swap write (ETag {etag} "
                               "no longer current)")
        races.append(problem)
        write_record(layout, "race", {"attempt": attempt, "problem": problem, "index": layout.where(INDEX_FILE),
                                      "read_fingerprint": current.fingerprint,
                                      "expected_fingerprint": new.fingerprint, "backup": backup, "run": run})
        time.sleep(_jitter(0.0, 0.05) * attempt)
    raise LostRace(f"{layout.where(INDEX_FILE)}: lost the compare-and-swap race with other writers {retries} times; "
                   f"backups in {layout.where(BACKUP_DIR)}")


def _read_and_back_up(layout: Layout, store: ConditionalStorage) -> tuple[bytes, str, Index, str]:
    raw, etag, index = _read_etag_retrying(layout, store)
    return raw, etag, index, backup_index(layout, raw, index.fingerprint)


def _read_etag_retrying(layout: Layout, store: ConditionalStorage, retries: int = READ_RETRIES,
                        delay: float = 0.2) -> tuple[bytes, str, Index]:
    """``index.json``'s bytes, ETag and parse; an empty or invalid object is retried, then reported."""
    last: LayoutError | None = None
    for attempt in range(retries):
        try:
            raw, etag = store.read_with_etag(INDEX_FILE, limit=MAX_INDEX_BYTES)
        except FileNotFoundError:
            raise LayoutError(f"{layout.where(INDEX_FILE)}: missing") from None
        except IsADirectoryError:
            raise LayoutError(f"{layout.where(INDEX_FILE)}: is a directory") from None
        check_index_size(raw, layout.where(INDEX_FILE))
        try:
            return raw, etag, Index.parse(raw, layout.where(INDEX_FILE))
        except LayoutError as e:
            last = e
        if attempt + 1 < retries:
            time.sleep(delay * (attempt + 1))
    assert last is not None
    raise UnreadableIndex(f"{last} (still after {retries} reads; another writer may be rewriting it)")


def _verify_written(layout: Layout, expected: bytes, settle: float) -> str | None:
    """None when ``index.json`` still holds ``expected`` right after the write and after ``settle``."""
    got = _read_or_problem(layout)
    if got != expected:
        return f"index.json changed right after our write (another writer overwrote it: {_what(got)})"
    if settle > 0:
        status.waiting(settle, f"{layout.display}: index.json written, checking that no other writer replaced it")
        time.sleep(settle)
        got = _read_or_problem(layout)
        if got != expected:
            return (f"index.json changed within the settle delay of {settle:g}s (another writer overwrote it: "
                    f"{_what(got)})")
    return None


def _read_or_problem(layout: Layout) -> bytes | str:
    try:
        return layout.read_index_bytes()
    except (LayoutError, OSError) as e:
        return f"unreadable: {e}"


def _what(got: bytes | str) -> str:
    if isinstance(got, str):
        return got
    if not got.strip():
        return "now empty"
    return f"now {len(got)} bytes, sha256:{hashlib.sha256(got).hexdigest()[:12]}"


def _jitter(low: float, high: float) -> float:
    """``random.uniform`` (imported by a retry, not by every run)."""
    import random

    return random.uniform(low, high)
