"""Real FUSE mounts of the harness's buckets (moto or SeaweedFS): s3fs-fuse 1.90 and rclone 1.60.

Each mount runs in the foreground as a child of the test process (``s3fs -f``, ``rclone mount``
without ``--daemon``), so the harness knows its PID, it dies with the test process, and on that
SIGTERM libfuse/rclone unmount by themselves. Teardown is ``fusermount3 -u`` (retried while the
mount is busy), then ``fusermount3 -uz``, then the process is reaped.

s3fs options (measured on s3fs 1.90 against moto, two mounts A and B of one bucket):

* ``stat_cache_expire=1`` (recommended): B sees A's new file in a listing, a stat and a read at
  once (10-20 ms, as 1.90 lists afresh on every readdir and negative lookups are not cached);
  an overwrite or a delete made through A shows in B's ``stat`` after about 2 s (1 s s3fs stat
  cache + 1 s kernel attribute/entry cache), while ``open``+``read`` on B is fresh at once.
* default options: the same for new files, but B's ``stat`` keeps the old size of an
  overwritten file, and a deleted file keeps stat-ing as present, for the 900 s stat cache.
* ``max_stat_cache_size=0``: 0.7-0.9 s staleness (the kernel's 1 s cache remains) but every
  operation is 2-10x slower (create 129 ms, stat 18 ms, scandir+stat of 30 files 400 ms): rejected.
* ``disable_negative_cache`` (what newer s3fs wants) is rejected by 1.90: "fuse: unknown option".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.common import (
    ComponentUnavailable,
    log_tail,
    loopback_env,
    require_command,
    require_fuse,
    spawn,
    stop_process,
)
from tests.harness.objectstores import S3Server

#: Caching options of the harness's "recommended" s3fs mounts (s3fs 1.90 has no
#: ``disable_negative_cache``; its negative cache is off unless ``enable_noobj_cache`` is given).
S3FS_RECOMMENDED_OPTIONS: tuple[str, ...] = ("stat_cache_expire=1",)
#: s3fs with its defaults: 900 s stat cache, 100 000 entries.
S3FS_DEFAULT_OPTIONS: tuple[str, ...] = ()
#: rclone options that make a mount usable by several "hosts": no write cache, no directory cache.
RCLONE_OPTIONS: tuple[str, ...] = (
    "--vfs-cache-mode",
    "off",
    "--dir-cache-time",
    "0s",
    "--attr-timeout",
    "0s",
    "--poll-interval",
    "0",
)

HARNESS_DIR_PREFIX = "ocigc-harness-"
OWNER_FILE = "owner.pid"


# ------------------------------------------------------------------------------------ mountinfo


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    return (
        field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
    )


def read_mountinfo() -> list[MountEntry]:
    """The mounts of this process's mount namespace, from /proc/self/mountinfo."""
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            head, sep, tail = line.partition(" - ")
            if not sep:
                continue
            fields = head.split()
            rest = tail.split()
            if len(fields) < 5 or len(rest) < 2:
                continue
            entries.append(MountEntry(_unescape(fields[4]), rest[0], _unescape(rest[1])))
    return entries


def find_mount(path: Path | str) -> MountEntry | None:
    target = os.path.realpath(path)
    for entry in reversed(read_mountinfo()):
        if entry.mount_point == target:
            return entry
    return None


def mounts_under(root: Path | str) -> list[MountEntry]:
    prefix = os.path.realpath(root).rstrip("/") + "/"
    return [e for e in read_mountinfo() if e.mount_point.startswith(prefix)]


def _unmount(mount_point: Path | str, busy_timeout: float) -> tuple[bool, bool]:
    """(gone, lazily): ``fusermount3 -u``, retried while busy, then ``fusermount3 -uz``."""
    fusermount = require_command("fusermount3")
    deadline = time.monotonic() + busy_timeout
    lazily = False
    while find_mount(mount_point) is not None:
        result = subprocess.run([fusermount, "-u", str(mount_point)], capture_output=True, text=True)
        if result.returncode == 0 or find_mount(mount_point) is None:
            break
        if time.monotonic() > deadline:
            subprocess.run([fusermount, "-uz", str(mount_point)], capture_output=True, text=True)
            lazily = True
            break
        time.sleep(0.1)
    return find_mount(mount_point) is None, lazily


def fuse_unmount(mount_point: Path | str, busy_timeout: float = 3.0) -> bool:
    """Unmount a FUSE mount: ``fusermount3 -u`` while busy, then lazily (``-uz``). True when gone."""
    return _unmount(mount_point, busy_timeout)[0]


def _owner_alive(root: Path) -> bool:
    try:
        owner = int((root / OWNER_FILE).read_text().strip())
        os.kill(owner, 0)
    except (OSError, ValueError):
        return False
    return True


def cleanup_stale_harness(tmp_dir: Path, keep: int = 3) -> list[str]:
    """Clean up after test processes that died: their mounts, then their old directories.

    Each ``tmp_dir/ocigc-harness-*`` directory holds ``owner.pid``; a live owner's (a concurrent
    pytest's) directory is left alone. Dead owners' mounts are lazily unmounted; of their
    directories without mounts the ``keep`` newest stay (their logs), older ones are removed.
    Returns the mount points it unmounted.
    """
    removed = []
    prefix = os.path.realpath(tmp_dir).rstrip("/") + "/" + HARNESS_DIR_PREFIX
    for entry in read_mountinfo():
        if not entry.mount_point.startswith(prefix):
            continue
        root = Path(prefix + entry.mount_point[len(prefix) :].split("/", 1)[0])
        if _owner_alive(root):
            continue
        with contextlib.suppress(ComponentUnavailable):
            if fuse_unmount(entry.mount_point, busy_timeout=0):
                removed.append(entry.mount_point)
    dead = [
        d
        for d in Path(tmp_dir).glob(HARNESS_DIR_PREFIX + "*")
        if d.is_dir() and not _owner_alive(d) and not mounts_under(d)
    ]
    dead.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dead[keep:]:
        shutil.rmtree(d, ignore_errors=True)
    return removed


# ------------------------------------------------------------------------------------ mounts


class FuseMount:
    """A FUSE mount served by a child process."""

    fstype = "fuse"

    def __init__(self, mount_point: Path, log_path: Path) -> None:
        self.mount_point = mount_point
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def path(self) -> Path:
        return self.mount_point

    @property
    def mounted(self) -> bool:
        entry = find_mount(self.mount_point)
        return entry is not None and entry.fstype == self.fstype

    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def mount(self, timeout: float = 30.0) -> None:
        require_fuse()
        args, env = self._command()
        self.mount_point.mkdir(parents=True, exist_ok=True)
        if find_mount(self.mount_point) is not None:
            raise ComponentUnavailable(f"{self.mount_point} is already a mount point")
        self.proc = spawn(args, self.log_path, env=env, cwd=self.log_path.parent)
        deadline = time.monotonic() + timeout
        why = f"not mounted within {timeout:.0f} s"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                why = f"{args[0]} exited with status {self.proc.returncode}"
                break
            if self.mounted:
                try:
                    os.listdir(self.mount_point)  # a round trip to the bucket
                    return
                except OSError as e:
                    why = f"mounted but listing failed: {e}"
            time.sleep(0.05)
        self.unmount()
        raise ComponentUnavailable(
            f"{type(self).__name__} of {self.mount_point} failed: {why}\n"
            f"command: {' '.join(args)}\n{log_tail(self.log_path)}"
        )

    def unmount(self) -> bool:
        """Unmount and reap the process. True when the mount point is no longer mounted."""
        gone, lazily = True, True
        try:
            gone, lazily = _unmount(self.mount_point, busy_timeout=3.0)
        finally:
            if self.proc is not None:
                # After a clean unmount the daemon exits by itself; after a lazy one it would
                # serve the files still open until they are closed: kill it.
                try:
                    self.proc.wait(timeout=1 if lazily else 10)
                except subprocess.TimeoutExpired:
                    stop_process(self.proc, kill=lazily)
                self.proc = None
        return gone and find_mount(self.mount_point) is None


class S3fsMount(FuseMount):
    """``s3fs BUCKET MOUNTPOINT -f -o ...`` against one of the harness's object stores."""

    fstype = "fuse.s3fs"

    def __init__(
        self,
        server: S3Server,
        bucket: str,
        mount_point: Path,
        workdir: Path,
        options: Sequence[str] = S3FS_RECOMMENDED_OPTIONS,
        name: str = "s3fs",
    ) -> None:
        super().__init__(mount_point, workdir / f"{name}.log")
        self.server = server
        self.bucket = bucket
        self.options = tuple(options)
        self.passwd_file = workdir / f"{name}.passwd"

    @property
    def all_options(self) -> list[str]:
        """Every ``-o`` option: how to reach the store, then the caching options of this mount."""
        return [
            f"passwd_file={self.passwd_file}",
            f"url={self.server.endpoint_url}",
            "use_path_request_style",
            f"endpoint={self.server.region}",
            f"logfile={self.log_path}",
            *self.options,
        ]

    def _command(self) -> tuple[list[str], dict[str, str]]:
        binary = require_command("s3fs")
        self.passwd_file.write_text(f"{self.server.access_key}:{self.server.secret_key}\n")
        self.passwd_file.chmod(0o600)
        args = [binary, self.bucket, str(self.mount_point), "-f", "-o", ",".join(self.all_options)]
        return args, loopback_env()


class RcloneMount(FuseMount):
    """``rclone mount moto:BUCKET MOUNTPOINT`` configured through RCLONE_CONFIG_MOTO_* variables.

    ``AWS_CA_BUNDLE`` is removed from its environment: rclone 1.60 fails with it set
    ("LoadCustomCABundleError ... HTTPClient's transport unsupported type").
    """

    fstype = "fuse.rclone"

    def __init__(
        self,
        server: S3Server,
        bucket: str,
        mount_point: Path,
        workdir: Path,
        options: Sequence[str] = RCLONE_OPTIONS,
        name: str = "rclone",
    ) -> None:
        super().__init__(mount_point, workdir / f"{name}.log")
        self.server = server
        self.bucket = bucket
        self.options = tuple(options)
        self.workdir = workdir
        self.name = name

    def _command(self) -> tuple[list[str], dict[str, str]]:
        binary = require_command("rclone")
        config = self.workdir / f"{self.name}.conf"
        config.touch()
        env = loopback_env(drop=["AWS_CA_BUNDLE"])
        env.update(
            {
                "RCLONE_CONFIG_MOTO_TYPE": "s3",
                "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
                "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": self.server.access_key,
                "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": self.server.secret_key,
                "RCLONE_CONFIG_MOTO_ENDPOINT": self.server.endpoint_url,
                "RCLONE_CONFIG_MOTO_REGION": self.server.region,
                "RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE": "true",
            }
        )
        args = [
            binary,
            "mount",
            f"moto:{self.bucket}",
            str(self.mount_point),
            "--config",
            str(config),
            "--cache-dir",
            str(self.workdir / f"{self.name}.cache"),
            *self.options,
            "--log-file",
            str(self.log_path),
            "--log-level",
            "INFO",
        ]
        return args, env


class MountSet:
    """Every mount a scope made; ``unmount_all`` at its end, whatever happened."""

    def __init__(self) -> None:
        self.mounts: list[FuseMount] = []

    def add(self, mount: FuseMount) -> FuseMount:
        self.mounts.append(mount)
        return mount

    def unmount_all(self) -> list[str]:
        """Unmount in reverse order; the mount points that could not be unmounted."""
        failed = []
        while self.mounts:
            mount = self.mounts.pop()
            try:
                if not mount.unmount():
                    failed.append(str(mount.mount_point))
            except Exception as e:  # keep going: every mount must get its chance
                failed.append(f"{mount.mount_point}: {e}")
        return failed
