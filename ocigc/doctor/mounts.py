"""Which mount holds PATH, which adapter serves it, and the process serving it (doctor, part 1).

The mount comes from ``/proc/self/mountinfo`` (``ocigc.storage.mounts``: longest mount point that is
a prefix of the real path, the topmost of stacked mounts). The adapter is named from the file-system
type (``fuse.s3fs``, ``fuse.rclone``, ``fuse.goofys``), the mount source (mountpoint-s3 mounts as
plain ``fuse`` with source ``mountpoint-s3``) or the name of the process that serves the mount.
``System`` is what doctor reads from the running system; tests substitute a fake.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ocigc.storage.mounts import LOCAL_FSTYPES, MountEntry

S3FS, RCLONE, GOOFYS, MOUNTPOINT = "s3fs", "rclone", "goofys", "mountpoint-s3"
LOCAL, NETWORK, FUSE_OTHER, OTHER = "local", "network", "fuse", "other"

#: Adapter -> the names of its binary.
ADAPTER_BINARIES: dict[str, tuple[str, ...]] = {
    S3FS: ("s3fs",),
    RCLONE: ("rclone",),
    GOOFYS: ("goofys",),
    MOUNTPOINT: ("mount-s3",),
}
_ALIASES = {"s3fs": S3FS, "rclone": RCLONE, "goofys": GOOFYS, "mountpoint-s3": MOUNTPOINT, "mount-s3": MOUNTPOINT}

NETWORK_FSTYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "afs", "ocfs2", "gfs2",
})
#: Known FUSE file systems that doctor names but has no rules for.
OTHER_FUSE_NAMES = {
    "gcsfuse": "gcsfuse (Google Cloud Storage)", "blobfuse": "blobfuse (Azure)",
    "blobfuse2": "blobfuse2 (Azure)", "juicefs": "JuiceFS", "sshfs": "sshfs", "s3backer": "s3backer",
    "geesefs": "GeeseFS", "ossfs": "ossfs (Alibaba OSS)", "cosfs": "cosfs (Tencent COS)",
}

#: Process names that hold /dev/fuse for a moment without serving a mount.
_NOT_DAEMONS = frozenset({"fusermount", "fusermount3", "mount", "umount", "mount.fuse", "mount.fuse3"})


def identify_adapter(entry: MountEntry, daemon_name: str | None = None) -> str:
    """s3fs, rclone, goofys, mountpoint-s3, local, network, fuse (another FUSE) or other."""
    fstype = entry.fstype
    if fstype in LOCAL_FSTYPES:
        return LOCAL
    if fstype in NETWORK_FSTYPES or fstype.startswith("nfs"):
        return NETWORK
    if fstype == "fuse" or fstype.startswith(("fuse.", "fuseblk.")):
        for name in (entry.subtype, entry.source, daemon_name or ""):
            adapter = _ALIASES.get(os.path.basename(name).lower())
            if adapter is not None:
                return adapter
        return FUSE_OTHER
    return OTHER


@dataclass(frozen=True)
class Daemon:
    """The process serving a mount, as found in /proc (or given with --daemon-args: pid None)."""

    pid: int | None
    argv: tuple[str, ...]
    exe: str | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else ""

    @property
    def where(self) -> str:
        return f"the command line of {self.name} (pid {self.pid})" if self.pid is not None else "--daemon-args"


class System:
    """What doctor reads from the running system. Tests substitute a fake."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc

    def mountinfo(self) -> str:
        with open(f"{self.proc}/self/mountinfo") as f:
            return f.read()

    def pids(self) -> list[int]:
        try:
            return [int(n) for n in os.listdir(self.proc) if n.isdigit()]
        except OSError:
            return []

    def cmdline(self, pid: int) -> tuple[str, ...]:
        try:
            with open(f"{self.proc}/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            return ()
        parts = raw.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        return tuple(p.decode("utf-8", "surrogateescape") for p in parts)

    def cwd(self, pid: int) -> str | None:
        try:
            return os.readlink(f"{self.proc}/{pid}/cwd")
        except OSError:
            return None

    def exe(self, pid: int) -> str | None:
        try:
            target = os.readlink(f"{self.proc}/{pid}/exe")
        except OSError:
            return None
        # A binary replaced since the daemon started (an upgrade): run the daemon's own image.
        return f"{self.proc}/{pid}/exe" if target.endswith(" (deleted)") else target

    def holds_fuse(self, pid: int) -> bool:
        try:
            fds = os.listdir(f"{self.proc}/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"{self.proc}/{pid}/fd/{fd}") == "/dev/fuse":
                    return True
        return False

    def start_time(self, pid: int) -> int:
        try:
            with open(f"{self.proc}/{pid}/stat") as f:
                stat = f.read()
            return int(stat.rpartition(")")[2].split()[19])
        except (OSError, ValueError, IndexError):
            return 0

    def parent(self, pid: int) -> int | None:
        try:
            with open(f"{self.proc}/{pid}/stat") as f:
                stat = f.read()
            return int(stat.rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def self_and_ancestors(self) -> set[int]:
        """This process and its ancestors (``sudo ocigc doctor /mnt`` names the mount too)."""
        seen: set[int] = set()
        pid: int | None = os.getpid()
        while pid and pid not in seen:
            seen.add(pid)
            pid = self.parent(pid)
        return seen

    def environ(self, pid: int, names: Iterable[str]) -> dict[str, str]:
        """Only the named variables of a process's environment (never the rest: it holds secrets);
        empty when it cannot be read."""
        try:
            return self.process_environ(pid, names)
        except OSError:
            return {}

    def process_environ(self, pid: int, names: Iterable[str], prefixes: Iterable[str] = ()) -> dict[str, str]:
        """The variables of a process's environment that are named or start with one of ``prefixes``;
        OSError when it cannot be read (another user's process)."""
        wanted = set(names)
        starts = tuple(prefixes)
        with open(f"{self.proc}/{pid}/environ", "rb") as f:
            raw = f.read()
        found: dict[str, str] = {}
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            name = key.decode("utf-8", "replace")
            if sep and (name in wanted or (starts and name.startswith(starts))):
                found[name] = value.decode("utf-8", "replace")
        return found

    def user_home(self, pid: int) -> str | None:
        """The home directory (passwd database) of the user a process runs as."""
        try:
            with open(f"{self.proc}/{pid}/status") as f:
                uid_line = next((line for line in f if line.startswith("Uid:")), "")
            return pwd.getpwuid(int(uid_line.split()[1])).pw_dir
        except (OSError, ValueError, IndexError, KeyError):
            return None

    def read_text(self, path: str, limit: int = 1 << 20) -> str:
        """A small configuration file (a password file, rclone.conf); OSError when it cannot be read."""
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")

    def version(self, executable: str) -> str | None:
        """The first line of ``EXECUTABLE --version`` (None when it cannot run)."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
        env["LC_ALL"] = "C"
        try:
            out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL, env=env, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        for line in (out.stdout + "\n" + out.stderr).splitlines():
            if line.strip():
                return line.strip()
        return None

    def which(self, name: str) -> str | None:
        return shutil.which(name)


def _arg_names_mount(system: System, pid: int, arg: str, mount_points: set[str]) -> bool:
    if not arg or arg.startswith("-"):
        return False
    if arg.rstrip("/") in mount_points or arg in mount_points:
        return True
    if arg.startswith("/"):
        return False
    base = os.path.basename(arg.rstrip("/"))
    if not any(os.path.basename(mp) == base for mp in mount_points):
        return False
    cwd = system.cwd(pid)
    return cwd is not None and os.path.normpath(os.path.join(cwd, arg)) in mount_points


def find_daemon(system: System, mount_points: Iterable[str], adapter: str) -> Daemon | None:
    """The process whose command line names one of ``mount_points`` and that serves FUSE.

    A candidate must be the adapter's binary or hold ``/dev/fuse``; this process and its
    ancestors never count. Among several, the adapter's binary, then the newest, wins.
    """
    targets = {mp.rstrip("/") or "/" for mp in mount_points}
    expected = set(ADAPTER_BINARIES.get(adapter, ()))
    excluded = system.self_and_ancestors()
    best: tuple[tuple[int, int], Daemon] | None = None
    for pid in system.pids():
        if pid in excluded:
            continue
        argv = system.cmdline(pid)
        if len(argv) < 2:
            continue
        name = os.path.basename(argv[0])
        if name in _NOT_DAEMONS:
            continue
        if not any(_arg_names_mount(system, pid, a, targets) for a in argv[1:]):
            continue
        score = 2 if name in expected else (1 if name in _ALIASES else 0)
        if score < 2 and system.holds_fuse(pid):
            score = max(score, 1)
        if score == 0:
            continue
        key = (score, system.start_time(pid))
        if best is None or key > best[0]:
            best = (key, Daemon(pid, argv, system.exe(pid)))
    return best[1] if best else None


def mount_points_of(mount: MountEntry, entries: Sequence[MountEntry]) -> list[str]:
    """The mount point and, for a bind mount, the other mount points of its device (a daemon names
    the original mount point)."""
    return [mount.mount_point] + [e.mount_point for e in entries if e.device == mount.device and e is not mount]
