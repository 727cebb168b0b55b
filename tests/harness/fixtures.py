"""pytest plugin: fixtures that start and stop the real components (see docs/testing.md).

Registered by ``tests/conftest.py`` (``pytest_plugins = ["tests.harness.fixtures"]``).

Everything listens on 127.0.0.1, uses free ports and lives under one temp dir per session
(``/tmp/ocigc-harness-XXXX``; kept after a failed session, removed otherwise). Every fixture
cleans up in a finalizer, also when the test failed; at the end of the session the plugin checks
that no mount is left and fails the session if one was.

A component that cannot start skips the test, or fails it when ``CI=true``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.common import ComponentUnavailable, in_ci, unavailable
from tests.harness.mounts import (
    HARNESS_DIR_PREFIX,
    OWNER_FILE,
    RCLONE_OPTIONS,
    S3FS_DEFAULT_OPTIONS,
    S3FS_RECOMMENDED_OPTIONS,
    MountSet,
    RcloneMount,
    S3fsMount,
    cleanup_stale_harness,
    fuse_unmount,
    mounts_under,
)
from tests.harness.objectstores import STORES, LatencyProxy, MotoServer, S3Server, SeaweedServer
from tests.harness.servers import RegistryServer

#: The fixtures whose tests get the ``s3fs``, ``rclone`` and ``registry`` markers (``-m "not s3fs"``).
_MARKER_FIXTURES = {
    "s3fs": {"s3fs_mounts", "slow_s3fs_mounts", "s3fs_pair_on", "s3fs_any_store", "s3fs_default_mount",
             "s3fs_session_mount", "s3fs_factory", "rclone_mount"},
    "rclone": {"rclone_mount", "rclone_factory"},
    "registry": {"registry", "auth_registry", "registry_factory"},
}

AUTH_CREDENTIALS = ("ocigc", "ocigc-test-password")

_state: dict[str, Any] = {"root": None}


# -------------------------------------------------------------------------------------- hooks


def pytest_configure(config: pytest.Config) -> None:
    # The suite tests the file protocol through mounts as it always has; what ``--via auto`` and
    # ``--via api`` do on a mount is tested where a test asks for them (tests/test_via.py).
    os.environ.setdefault("OCIGC_VIA", "mount")
    config.addinivalue_line("markers", "s3fs: needs the s3fs mounts of the harness")
    config.addinivalue_line("markers", "rclone: needs the rclone mount of the harness")
    config.addinivalue_line("markers", "registry: needs the docker-registry of the harness")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in _MARKER_FIXTURES.items():
            if names & fixtures:
                item.add_marker(marker)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any("s3fs" in str(v) for v in callspec.params.values()):
            item.add_marker("s3fs")  # layout_dir's s3fs variants, and tests parametrised by hand


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture is torn down: no mount of this session may remain."""
    root = _state.get("root")
    if root is None:
        return
    left = mounts_under(root)
    if not left:
        return
    for entry in left:
        with contextlib.suppress(Exception):
            fuse_unmount(entry.mount_point, busy_timeout=1)
    names = ", ".join(f"{e.mount_point} ({e.fstype})" for e in left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"ocigc harness: mounts left after the session (now lazily unmounted): {names}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ------------------------------------------------------------------------------------- basics


def _start(what: Callable[[], None]) -> None:
    try:
        what()
    except ComponentUnavailable as e:
        unavailable(str(e))


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:limit].lower() or "x"


@pytest.fixture(scope="session")
def harness_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The session's temp dir: servers' logs and data, mount points (``/tmp/ocigc-harness-XXXX``)."""
    tmp = Path(os.environ.get("OCIGC_HARNESS_TMP") or tempfile.gettempdir())
    cleanup_stale_harness(tmp)
    root = Path(tempfile.mkdtemp(prefix=HARNESS_DIR_PREFIX, dir=tmp))
    (root / OWNER_FILE).write_text(f"{os.getpid()}\n")
    _state["root"] = root

    def last_resort() -> None:  # the interpreter exits without teardown (an internal error)
        for entry in mounts_under(root):
            with contextlib.suppress(Exception):
                fuse_unmount(entry.mount_point, busy_timeout=1)

    atexit.register(last_resort)
    yield root
    failed = request.session.testsfailed > 0
    if mounts_under(root):
        return  # never delete through a mount; pytest_sessionfinish reports it
    if failed or os.environ.get("OCIGC_HARNESS_KEEP"):
        print(f"\nocigc harness: logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


@pytest.fixture(scope="session")
def _harness_seq() -> _Counter:
    return _Counter()


def _workdir(harness_dir: Path, seq: _Counter, name: str) -> Path:
    path = harness_dir / f"{seq.next():03d}-{_slug(name)}"
    path.mkdir(parents=True)
    return path


# ----------------------------------------------------------------------------------------- S3


def selected_stores() -> tuple[str, ...]:
    """The stores of the matrix: every one of ``STORES``, or those ``OCIGC_TEST_STORES`` names
    (``OCIGC_TEST_STORES=moto`` for a quick local run; CI runs them all)."""
    chosen = [s.strip() for s in os.environ.get("OCIGC_TEST_STORES", "").split(",") if s.strip()]
    unknown = set(chosen) - set(STORES)
    if unknown:
        raise pytest.UsageError(f"OCIGC_TEST_STORES: unknown store(s) {sorted(unknown)} (have: {', '.join(STORES)})")
    return tuple(chosen) or STORES


#: Per-request delay of the ``slow_s3_server`` proxy: a cloud region's round trip.
BUCKET_LATENCY = 0.020


@pytest.fixture(scope="session")
def moto_server(harness_dir: Path) -> Iterator[MotoServer]:
    """moto's S3 server (``python -m moto.server``) on 127.0.0.1, for the tests that need moto itself
    (its request log). Tests of S3 semantics take ``s3_server`` and run on every store."""
    server = MotoServer(harness_dir / "moto")
    try:
        _start(server.start)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server(harness_dir: Path) -> Iterator[SeaweedServer]:
    """SeaweedFS (``weed server -s3``) on 127.0.0.1, its data in the session's temp dir."""
    server = SeaweedServer(harness_dir / "seaweedfs")
    try:
        _start(server.start)
        yield server
    finally:
        server.stop()
        if server.running:  # pragma: no cover - stop_process kills what does not stop
            pytest.fail("SeaweedFS still running after stop", pytrace=False)


def _store(request: pytest.FixtureRequest, name: str) -> S3Server:
    if name not in selected_stores():
        pytest.skip(f"store {name} not selected (OCIGC_TEST_STORES)")
    server: S3Server = request.getfixturevalue(f"{name}_server")
    return server


@pytest.fixture(scope="session", params=STORES)
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each object store in turn (``[moto]``, ``[seaweedfs]``): tests that take it run on both.

    ``.endpoint_url``, ``.access_key``, ``.secret_key``, ``.region``, ``.client()`` (a new boto3
    client), ``.create_bucket(prefix)``, ``.env()`` (AWS_* variables for a subprocess), ``.name``.
    """
    return _store(request, request.param)


@pytest.fixture(scope="session")
def slow_s3_server(s3_server: S3Server, harness_dir: Path, _harness_seq: _Counter) -> Iterator[LatencyProxy]:
    """``s3_server`` behind the latency proxy: every request waits ``BUCKET_LATENCY`` (20 ms)."""
    proxy = LatencyProxy(s3_server, _workdir(harness_dir, _harness_seq, f"proxy-{s3_server.name}"), BUCKET_LATENCY)
    try:
        _start(proxy.start)
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def proxy_factory(harness_dir: Path, _harness_seq: _Counter) -> Iterator[Callable[..., LatencyProxy]]:
    """Factory: ``proxy_factory(store, delay=0.0, strip_conditional=False) -> LatencyProxy`` (started,
    stopped when the test ends)."""
    made: list[LatencyProxy] = []

    def make(store: S3Server, delay: float = 0.0, strip_conditional: bool = False) -> LatencyProxy:
        proxy = LatencyProxy(store, _workdir(harness_dir, _harness_seq, f"proxy-{store.name}"), delay,
                             strip_conditional)
        made.append(proxy)
        _start(proxy.start)
        return proxy

    try:
        yield make
    finally:
        for proxy in made:
            proxy.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server: S3Server) -> Any:
    """A boto3 S3 client for ``s3_server``."""
    return s3_server.client()


@pytest.fixture(scope="session")
def make_bucket(s3_server: S3Server) -> Callable[..., str]:
    """Factory: ``make_bucket(prefix="t") -> name`` of a fresh, empty bucket of ``s3_server``."""
    return s3_server.create_bucket


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh bucket of ``s3_server`` per test module (call ``make_bucket()`` for one per test)."""
    return s3_server.create_bucket(_slug(request.module.__name__.rsplit(".", 1)[-1], 20))


# ------------------------------------------------------------------------------------- mounts


@dataclass
class S3fsPair:
    """Two independent s3fs mounts of one bucket: two "hosts" A and B."""

    bucket: str
    mount_a: S3fsMount
    mount_b: S3fsMount

    @property
    def a(self) -> Path:
        return self.mount_a.mount_point

    @property
    def b(self) -> Path:
        return self.mount_b.mount_point


def _mount(mounts: MountSet, mount: S3fsMount | RcloneMount) -> None:
    mounts.add(mount)
    _start(mount.mount)


@pytest.fixture(scope="session")
def _session_mounts() -> Iterator[MountSet]:
    mounts = MountSet()
    yield mounts
    failed = mounts.unmount_all()
    if failed:
        pytest.fail(f"could not unmount: {failed}", pytrace=False)


@pytest.fixture
def _test_mounts() -> Iterator[MountSet]:
    mounts = MountSet()
    yield mounts
    failed = mounts.unmount_all()
    if failed:
        pytest.fail(f"could not unmount: {failed}", pytrace=False)


@pytest.fixture
def s3fs_factory(s3_server: S3Server, s3fs_any_store: Callable[..., S3fsMount]) -> Callable[..., S3fsMount]:
    """Factory: ``s3fs_factory(bucket, options=S3FS_RECOMMENDED_OPTIONS, server=s3_server) -> S3fsMount``
    (live). ``server`` may be a ``LatencyProxy`` in front of the bucket's store.

    Mounts made in a test are unmounted when the test ends; ``mount.unmount()`` ends one earlier.
    """

    def make(bucket: str, options: Sequence[str] = S3FS_RECOMMENDED_OPTIONS,
             server: S3Server | None = None) -> S3fsMount:
        return s3fs_any_store(bucket, server or s3_server, options)

    return make


@pytest.fixture
def s3fs_mounts(make_bucket: Callable[..., str], s3fs_factory: Callable[..., S3fsMount]) -> S3fsPair:
    """Two s3fs mounts (A and B, two "hosts") of a fresh bucket, recommended options.

    ``.a``/``.b`` are the mount points, ``.mount_a``/``.mount_b`` the ``S3fsMount`` objects,
    ``.bucket`` the bucket (write to it with ``s3_client`` too).
    """
    name = make_bucket("pair")
    return S3fsPair(name, s3fs_factory(name), s3fs_factory(name))


@pytest.fixture
def s3fs_pair_on(
    request: pytest.FixtureRequest, s3fs_any_store: Callable[..., S3fsMount], proxy_factory: Callable[..., LatencyProxy]
) -> Callable[..., S3fsPair]:
    """Factory: ``s3fs_pair_on(store, latency=0.0) -> S3fsPair``, two mounts of a fresh bucket of the
    named store (``moto``, ``seaweedfs``), through a latency proxy when ``latency`` > 0. For tests
    parametrised by hand (with ``STORES``) rather than through ``s3_server``."""

    def make(store: str, latency: float = 0.0) -> S3fsPair:
        server = _store(request, store)
        target: S3Server = proxy_factory(server, delay=latency) if latency else server
        name = server.create_bucket("pair")
        return S3fsPair(name, s3fs_any_store(name, target), s3fs_any_store(name, target))

    return make


@pytest.fixture
def s3fs_any_store(harness_dir: Path, _harness_seq: _Counter, _test_mounts: MountSet) -> Callable[..., S3fsMount]:
    """Factory: ``s3fs_any_store(bucket, server, options=S3FS_RECOMMENDED_OPTIONS) -> S3fsMount`` (live,
    test-scoped) for a bucket of any store."""

    def make(bucket: str, server: S3Server, options: Sequence[str] = S3FS_RECOMMENDED_OPTIONS) -> S3fsMount:
        workdir = _workdir(harness_dir, _harness_seq, f"s3fs-{bucket}")
        mount = S3fsMount(server, bucket, workdir / "mnt", workdir, options)
        _mount(_test_mounts, mount)
        return mount

    return make


@pytest.fixture
def slow_s3fs_mounts(
    make_bucket: Callable[..., str], s3fs_factory: Callable[..., S3fsMount], slow_s3_server: LatencyProxy
) -> S3fsPair:
    """``s3fs_mounts`` whose requests go through the latency proxy (20 ms each): two hosts on a
    bucket with a cloud region's round trip."""
    name = make_bucket("slowpair")
    return S3fsPair(name, s3fs_factory(name, server=slow_s3_server), s3fs_factory(name, server=slow_s3_server))


@pytest.fixture
def s3fs_default_mount(make_bucket: Callable[..., str], s3fs_factory: Callable[..., S3fsMount]) -> S3fsMount:
    """One s3fs mount of a fresh bucket with s3fs's DEFAULT caching options (900 s stat cache)."""
    return s3fs_factory(make_bucket("default"), S3FS_DEFAULT_OPTIONS)


class SessionMounts:
    """One s3fs mount (recommended options) of a session-wide bucket per store, made when first asked."""

    def __init__(self, request: pytest.FixtureRequest, harness_dir: Path, seq: _Counter, mounts: MountSet) -> None:
        self._request = request
        self._harness_dir = harness_dir
        self._seq = seq
        self._mounts = mounts
        self._by_store: dict[str, S3fsMount] = {}

    def get(self, store: str) -> S3fsMount:
        if store not in self._by_store:
            server = _store(self._request, store)
            name = server.create_bucket("session")
            workdir = _workdir(self._harness_dir, self._seq, f"s3fs-session-{store}")
            mount = S3fsMount(server, name, workdir / "mnt", workdir, S3FS_RECOMMENDED_OPTIONS)
            _mount(self._mounts, mount)
            self._by_store[store] = mount
        return self._by_store[store]


@pytest.fixture(scope="session")
def _s3fs_session_mounts(
    request: pytest.FixtureRequest, harness_dir: Path, _harness_seq: _Counter, _session_mounts: MountSet
) -> SessionMounts:
    return SessionMounts(request, harness_dir, _harness_seq, _session_mounts)


@pytest.fixture(scope="session")
def s3fs_session_mount(s3_server: S3Server, _s3fs_session_mounts: SessionMounts) -> S3fsMount:
    """One s3fs mount (recommended options) of a session-wide bucket of ``s3_server``; tests use
    fresh sub-dirs."""
    return _s3fs_session_mounts.get(s3_server.name)


#: ``layout_dir`` params of an s3fs mount, one per store (for tests that pick params by hand:
#: ``parametrize("layout_dir", ["local", *S3FS_DIRS], indirect=True)``).
S3FS_DIRS = tuple(f"s3fs-{store}" for store in STORES)
#: ``layout_dir`` params: local disk, then an s3fs mount of each store.
LAYOUT_DIRS = ("local", *S3FS_DIRS)


@pytest.fixture(params=LAYOUT_DIRS)
def layout_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """An empty directory for a layout: on local disk, or a fresh sub-directory of an s3fs mount of
    moto or of SeaweedFS.

    Tests that take it run three times (``[local]``, ``[s3fs-moto]``, ``[s3fs-seaweedfs]``); the s3fs
    ones carry the ``s3fs`` marker.
    """
    if request.param not in LAYOUT_DIRS:
        pytest.fail(f"layout_dir: unknown param {request.param!r} (have: {', '.join(LAYOUT_DIRS)})", pytrace=False)
    if request.param == "local":
        path = tmp_path / "layout"
        path.mkdir()
        return path
    sessions: SessionMounts = request.getfixturevalue("_s3fs_session_mounts")
    mount = sessions.get(request.param.removeprefix("s3fs-"))
    path = mount.mount_point / f"{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


@pytest.fixture
def rclone_factory(
    s3_server: S3Server, harness_dir: Path, _harness_seq: _Counter, _test_mounts: MountSet
) -> Callable[..., RcloneMount]:
    """Factory: ``rclone_factory(bucket, options=RCLONE_OPTIONS) -> RcloneMount`` (live, test-scoped)."""

    def make(bucket: str, options: Sequence[str] = RCLONE_OPTIONS) -> RcloneMount:
        workdir = _workdir(harness_dir, _harness_seq, f"rclone-{bucket}")
        mount = RcloneMount(s3_server, bucket, workdir / "mnt", workdir, options)
        _mount(_test_mounts, mount)
        return mount

    return make


@pytest.fixture
def rclone_mount(s3fs_mounts: S3fsPair, rclone_factory: Callable[..., RcloneMount]) -> RcloneMount:
    """An rclone mount (no VFS cache, no dir cache) of the bucket of ``s3fs_mounts``."""
    return rclone_factory(s3fs_mounts.bucket)


# ----------------------------------------------------------------------------------- registry


@pytest.fixture(scope="session")
def registry(harness_dir: Path) -> Iterator[RegistryServer]:
    """docker-registry 2.8 on 127.0.0.1, no auth, deletes enabled; shared by the session.

    ``.host`` (``127.0.0.1:PORT``), ``.url``, ``.ref(repo, tag)``, ``.storage_dir``,
    ``.config_path``, ``.garbage_collect()``. Use unique repository names per test.
    """
    server = RegistryServer(harness_dir / "registry")
    try:
        _start(server.start)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def auth_registry(harness_dir: Path) -> Iterator[RegistryServer]:
    """docker-registry with htpasswd basic auth; ``.credentials`` is ``(user, password)``."""
    server = RegistryServer(harness_dir / "auth-registry", credentials=AUTH_CREDENTIALS)
    try:
        _start(server.start)
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry_factory(harness_dir: Path, _harness_seq: _Counter) -> Iterator[Callable[..., RegistryServer]]:
    """Factory: ``registry_factory(auth=False) -> RegistryServer``, started, private to the test.

    ``.kill()`` / ``.stop()`` then ``.start()`` bring it back on the same port and storage.
    Every registry made is stopped when the test ends.
    """
    made: list[RegistryServer] = []

    def make(auth: bool = False) -> RegistryServer:
        server = RegistryServer(
            _workdir(harness_dir, _harness_seq, "registry"), credentials=AUTH_CREDENTIALS if auth else None
        )
        made.append(server)
        _start(server.start)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.kill()


# ----------------------------------------------------------------------------------- counters


@pytest.fixture
def op_counter() -> Iterator[Any]:
    """``ocigc.storage.base.GLOBAL_COUNTER``, reset before and after the test."""
    from ocigc.storage.base import GLOBAL_COUNTER

    GLOBAL_COUNTER.reset()
    try:
        yield GLOBAL_COUNTER
    finally:
        GLOBAL_COUNTER.reset()


@pytest.fixture(scope="session")
def ci_mode() -> bool:
    """True when ``CI=true``: missing components fail instead of skipping."""
    return in_ci()
