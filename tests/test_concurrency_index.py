"""The index.json update protocol against a writer that is not ocigc (local disk, in-process)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ocigc.errors import EXIT_LOST_RACE, LayoutError, LostRace
from ocigc.layout.indexio import read_index_retrying, update_index
from ocigc.layout.journal import read_records
from ocigc.layout.layout import Layout
from ocigc.oci.index import Index, set_tag
from ocigc.storage.local import LocalStorage
from tests.kit.layouts import LayoutBuilder


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    b = LayoutBuilder(tmp_path / "lay")
    b.image("v1", [b"a"])
    b.save()
    return Layout.open(LocalStorage(tmp_path / "lay"))


def add_tag(name: str):  # type: ignore[no-untyped-def]
    def mutate(index: Index) -> Index:
        return set_tag(index, index.entries[0].to_json(), name)
    return mutate


def test_update_backs_up_the_bytes_it_read_and_verifies(layout: Layout) -> None:
    before = (Path(layout.location) / "index.json").read_bytes()
    result = update_index(layout, add_tag("v2"), settle=0.01)
    assert result.changed and result.attempts == 1 and result.backup
    assert (Path(layout.location) / result.backup).read_bytes() == before
    assert set(read_index_retrying(layout).tags()) == {"v1", "v2"}


def test_overwrite_within_the_settle_delay_is_a_lost_race_then_retried(layout: Layout) -> None:
    path = Path(layout.location) / "index.json"
    snapshot = path.read_bytes()
    clobbered = threading.Event()

    def plain_writer() -> None:  # like oras-go: rewrite from a snapshot taken earlier
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"v2" not in path.read_bytes():
            time.sleep(0.005)
        path.write_bytes(snapshot)
        clobbered.set()

    t = threading.Thread(target=plain_writer)
    t.start()
    result = update_index(layout, add_tag("v2"), settle=0.3)
    t.join()
    assert clobbered.is_set()
    assert result.attempts == 2 and len(result.races) == 1 and "overwrote" in result.races[0]
    assert "v2" in read_index_retrying(layout).tags()  # re-applied on top of what the other writer left
    (rec,) = read_records(layout, "race")
    assert rec["expected_fingerprint"] and rec["read_fingerprint"]


def test_empty_index_is_retried_never_taken_as_empty(layout: Layout) -> None:
    path = Path(layout.location) / "index.json"
    good = path.read_bytes()
    path.write_bytes(b"")
    threading.Timer(0.3, lambda: path.write_bytes(good)).start()  # the other writer's upload lands
    result = update_index(layout, add_tag("v2"), settle=0.01)
    assert set(read_index_retrying(layout).tags()) == {"v1", "v2"} and result.changed


def test_index_that_stays_empty_is_a_lost_race_exit_3(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    import ocigc.layout.indexio as indexio

    monkeypatch.setattr(indexio.time, "sleep", lambda _s: None)
    (Path(layout.location) / "index.json").write_bytes(b"")
    with pytest.raises(LostRace, match="never treated as an empty index") as e:
        update_index(layout, add_tag("v2"), settle=0.0, retries=3)
    assert e.value.exit_code == EXIT_LOST_RACE == 3
    assert len(read_records(layout, "race")) == 3
    assert (Path(layout.location) / "index.json").read_bytes() == b""  # nothing written


def test_missing_index_is_an_error_at_once(layout: Layout) -> None:
    (Path(layout.location) / "index.json").unlink()
    with pytest.raises(LayoutError, match="missing"):
        update_index(layout, add_tag("v2"), settle=0.0)


def test_mutation_that_changes_nothing_writes_nothing(layout: Layout) -> None:
    path = Path(layout.location) / "index.json"
    mtime = path.stat().st_mtime_ns
    result = update_index(layout, lambda index: index, settle=0.0)
    assert not result.changed and path.stat().st_mtime_ns == mtime
    assert json.loads(path.read_bytes())["manifests"]
