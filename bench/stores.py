"""The object stores of the benchmarks: moto or SeaweedFS, each at 0 ms or N ms per request.

``open_store(kind, latency_ms, workdir)`` starts the store (the test harness's ``MotoServer`` or
``SeaweedServer``), creates a bucket, and, when ``latency_ms > 0``, a ``LatencyProxy`` in front of
it that waits that long before forwarding each request (a cloud region's round trip). What the
benchmark measures goes through the proxy: the s3fs mount of the bucket and the ``AWS_*``
variables of ``env()`` (for ``ocigc ... s3://`` child processes and boto3 peers). Setup, uploads
and checks use ``client``, straight to the store: they never pay the latency and are not counted.

The proxy counts the requests it forwards, by kind (``tests/harness/proxy.py``: GET, HEAD, PUT,
POST, DELETE, LIST, DELETE-MANY). With ``count=True`` a proxy with no delay sits in the path at
0 ms too, so counts come from the proxy on every store and latency (and 0 ms then includes one
local hop through it).

Flags shared by every object-store benchmark (``add_store_arguments``): ``--stores moto,seaweedfs``
and ``--latency 0,20`` (milliseconds per request); the default is all four combinations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STORES = ("moto", "seaweedfs")
LATENCIES_MS = (0, 20)
#: Keys per DeleteObjects request and per listing page (the S3 maximum).
S3_PAGE = 1000
#: SeaweedFS volumes for the benchmarks: the harness's 100 x 64 MiB hold 6 GiB, less than one
#: push/pull case of 2 GiB files writes (deleted objects' space comes back only with a vacuum).
SEAWEED_VOLUME_ARGS = {"-volume.max": "-volume.max=48", "-master.volumeSizeLimitMB": "-master.volumeSizeLimitMB=1024"}


def add_store_arguments(ap: argparse.ArgumentParser) -> None:
    """``--stores`` and ``--latency``, shared by every object-store benchmark."""
    ap.add_argument("--stores", default=",".join(STORES), help=f"object stores, from {','.join(STORES)}")
    ap.add_argument("--latency", default=",".join(map(str, LATENCIES_MS)),
                    help="milliseconds per request, through the latency proxy (0: straight to the store)")


def store_matrix(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The (store, latency ms) combinations the flags ask for, stores outermost."""
    kinds = [k.strip() for k in args.stores.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in STORES]
    if unknown:
        raise SystemExit(f"error: unknown stores {unknown} (have: {', '.join(STORES)})")
    latencies = [int(x) for x in args.latency.split(",") if x.strip()]
    if any(ms < 0 for ms in latencies):
        raise SystemExit("error: --latency takes milliseconds >= 0")
    return [(k, ms) for k in kinds for ms in latencies]


def column(kind: str, latency_ms: int) -> str:
    """A table column's name: ``moto 0 ms``."""
    return f"{kind} {latency_ms} ms"


def proxy_request(endpoint_url: str, path: str, method: str = "GET") -> dict[str, int]:
    """One of the latency proxy's own requests (``/-/proxy-stats``), not counted, not delayed."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(endpoint_url + path, method=method, data=b"" if method == "POST" else None)
    with opener.open(req, timeout=30) as resp:
        return dict(json.loads(resp.read() or b"{}"))


@dataclass
class BenchStore:
    """A started object store, a bucket, and the ways a benchmark reaches it."""

    kind: str
    latency_ms: int
    workdir: Path
    #: The store itself (``tests.harness.objectstores.S3Server``).
    server: Any
    #: The latency proxy in front of it, or None (0 ms without counting).
    proxy: Any
    bucket: str
    #: boto3 client straight to the store: setup, uploads, checks (no latency, not counted).
    client: Any
    #: The s3fs mount of the bucket (through the proxy when there is one), or None.
    mount: Any = None
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def column(self) -> str:
        return column(self.kind, self.latency_ms)

    @property
    def endpoint(self) -> Any:
        """What the measured clients talk to: the proxy when there is one, else the store."""
        return self.proxy if self.proxy is not None else self.server

    @property
    def path(self) -> Path:
        """The s3fs mount point of the bucket."""
        if self.mount is None:
            raise RuntimeError("this store was opened without an s3fs mount")
        return Path(self.mount.mount_point)

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def env(self) -> dict[str, str]:
        """``AWS_*`` variables (and no HTTP proxy for 127.0.0.1) for ocigc and boto3 child processes."""
        from tests.harness.common import loopback_env

        return {**loopback_env({}), **self.endpoint.env()}

    # ---------------------------------------------------------------- request counts
    @property
    def counting(self) -> bool:
        return self.proxy is not None

    def counts(self, reset: bool = False) -> dict[str, int]:
        """Requests through the proxy since the last reset, by kind; with ``reset`` zero them after."""
        if self.proxy is None:
            raise RuntimeError("requests are counted by the proxy: open the store with count=True")
        if reset:
            return proxy_request(self.proxy.endpoint_url, "/-/proxy-stats/reset", "POST")
        return proxy_request(self.proxy.endpoint_url, "/-/proxy-stats")

    def reset_counts(self) -> None:
        if self.proxy is not None:
            self.counts(reset=True)

    # ---------------------------------------------------------------- setup and checks (direct)
    def upload_tree(self, local: Path, prefix: str, jobs: int = 16) -> int:
        """Every file under ``local`` to ``prefix/`` with boto3 straight to the store; the file count."""
        files = [p for p in local.rglob("*") if p.is_file()]

        def put(p: Path) -> None:
            key = f"{prefix}/{p.relative_to(local).as_posix()}"
            self.client.put_object(Bucket=self.bucket, Key=key, Body=p.read_bytes())

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(put, files))
        return len(files)

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix/`` (relative to it), straight from the store."""
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{prefix}/"):
            out += [obj["Key"][len(prefix) + 1:] for obj in page.get("Contents") or []]
        return out

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under ``prefix/`` (keeps the bucket small: moto scans it on every listing)."""
        keys = [f"{prefix}/{k}" for k in self.keys(prefix)]
        for i in range(0, len(keys), S3_PAGE):
            batch = [{"Key": k} for k in keys[i:i + S3_PAGE]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def vacuum(self) -> None:
        """Give the space of deleted objects back (SeaweedFS; nothing to do on moto)."""
        if hasattr(self.server, "vacuum"):
            self.server.vacuum()

    def mount_another(self, name: str) -> Path:
        """One more s3fs mount of the bucket (another "host"), unmounted when the store closes."""
        from tests.harness.mounts import S3fsMount

        (self.workdir / name).mkdir(parents=True, exist_ok=True)
        mount = S3fsMount(self.endpoint, self.bucket, self.workdir / name / "mnt", self.workdir / name, name=name)
        self._stack.callback(mount.unmount)
        mount.mount()
        return Path(mount.mount_point)


def _disk_usage(root: Path) -> int:
    total = 0
    for f in root.rglob("*"):
        with contextlib.suppress(OSError):  # a volume file compacted away meanwhile
            total += f.stat().st_size if f.is_file() else 0
    return total


def _seaweed_server(workdir: Path) -> Any:
    """The harness's SeaweedServer with 48 volumes of 1 GiB and ``vacuum()``."""
    from tests.harness.objectstores import SeaweedServer

    class BenchSeaweedServer(SeaweedServer):
        master_port = 0

        def _command(self, binary: str, ports: list[int]) -> list[str]:
            self.master_port = ports[1]
            args = super()._command(binary, ports)
            return [SEAWEED_VOLUME_ARGS.get(a.split("=", 1)[0], a) for a in args]

        def vacuum(self, timeout: float = 600.0) -> None:
            """Reclaim the space of deleted objects now (the master does it every 14 minutes), so no
            compaction runs under a measurement: ask until three requests in a row free nothing (the
            first request after a delete often finds no garbage yet; a later one compacts, blocking)."""
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            url = f"http://127.0.0.1:{self.master_port}/vol/vacuum?garbageThreshold=0.0001"
            deadline = time.monotonic() + timeout
            smallest, unchanged = _disk_usage(self.workdir / "data"), 0
            while unchanged < 3 and time.monotonic() < deadline:
                with opener.open(url, timeout=timeout) as resp:
                    resp.read()
                time.sleep(1.0)
                size = _disk_usage(self.workdir / "data")
                unchanged = unchanged + 1 if size >= smallest else 0
                smallest = min(smallest, size)

    return BenchSeaweedServer(workdir)


def _start(server: Any, stack: ExitStack) -> Any:
    stack.callback(server.stop)
    server.start()
    return server


@contextmanager
def open_store(kind: str, latency_ms: int, workdir: Path, *, count: bool = False,
               mount: bool = True) -> Iterator[BenchStore]:
    """A started store of ``kind`` with a fresh bucket, its proxy and s3fs mount; all stopped on exit.

    A proxy sits in front when ``latency_ms > 0`` or ``count``; ``mount=False`` skips the s3fs mount.
    """
    from tests.harness.mounts import S3fsMount
    from tests.harness.objectstores import LatencyProxy, MotoServer

    if kind not in STORES:
        raise ValueError(f"unknown store {kind!r} (have: {', '.join(STORES)})")
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        server = _start(MotoServer(workdir / kind) if kind == "moto" else _seaweed_server(workdir / kind), stack)
        proxy = None
        if latency_ms > 0 or count:
            proxy = _start(LatencyProxy(server, workdir / "proxy", latency_ms / 1000), stack)
        bucket = server.create_bucket("bench")
        # the first write to a bucket of SeaweedFS allocates its volumes (seconds): not in a measurement
        server.client().put_object(Bucket=bucket, Key="warm-up", Body=b"x")
        server.client().delete_object(Bucket=bucket, Key="warm-up")
        store = BenchStore(kind, latency_ms, workdir, server, proxy, bucket, server.client())
        stack.enter_context(store._stack)
        if mount:
            store.mount = S3fsMount(store.endpoint, bucket, workdir / "mnt", workdir)
            stack.callback(store.mount.unmount)
            store.mount.mount()
        store.reset_counts()
        yield store
