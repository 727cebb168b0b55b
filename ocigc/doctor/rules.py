"""``ocigc doctor``: is the file system that holds PATH fit for ocigc's locks and deletions?

Three parts, all without printing:

1. **Which mount, which adapter.** The mount that holds PATH comes from ``/proc/self/mountinfo``
   (longest mount point that is a prefix of the real path, the topmost of stacked mounts). The
   adapter is named from the file-system type (``fuse.s3fs``, ``fuse.rclone``, ``fuse.goofys``),
   the mount source (mountpoint-s3 mounts as plain ``fuse`` with source ``mountpoint-s3``) or the
   name of the process that serves the mount.
2. **Its options.** A FUSE daemon's own options (s3fs ``-o stat_cache_expire=``, rclone
   ``--dir-cache-time``) are not in mountinfo: they are read from the command line of the process
   that serves the mount (found by scanning ``/proc/*/cmdline`` for the mount point), and for
   rclone also from its ``RCLONE_*`` environment variables. Every finding says where its value came
   from; an option that is not given has the adapter's default, and when the process cannot be
   found the defaults are assumed and the report says so (``--daemon-args`` supplies the command
   line by hand, e.g. when the daemon runs in another container).
3. **A self-test** in ``PATH/.ocigc/doctor/``: create a uniquely named file, list it, stat it,
   read it back, rename it, overwrite it, remove it, list again; each step timed.

The verdict: a finding of severity ``unsafe`` (a cache that can hide another host's files for
longer than the lock settle delay, uploads after close, no delete, a read-only mount, a failed
self-test step) makes the mount unfit: ``DoctorReport.exit_code`` is 5. Warnings (no rename, no
overwrite, an unknown FUSE adapter, a short but non-zero negative cache) keep it fit.

What each adapter does and why the rules are what they are: ``docs/object-storage.md``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocigc.errors import OcigcError, UsageError
from ocigc.lock.params import DEFAULT_FUSE_SETTLE, LockParams
from ocigc.storage.mounts import LOCAL_FSTYPES, MountEntry, find_mount, parse_mountinfo

# ------------------------------------------------------------------------------------ constants

OK, INFO, WARNING, UNSAFE = "ok", "info", "warning", "unsafe"
SEVERITIES = (OK, INFO, WARNING, UNSAFE)
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

#: Where the self-test writes, relative to PATH.
DOCTOR_DIR = ".ocigc/doctor"

#: Seconds a self-test step may take before it counts as hung.
DEFAULT_STEP_TIMEOUT = 30.0

#: A just-written file whose mtime differs from this host's clock by more than this is reported.
MTIME_SKEW_WARN = 60.0

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

#: Option names whose values are never shown (credentials, key files).
_SECRET = re.compile(r"secret|passw|token|credential|key|sse_c|load_sse", re.IGNORECASE)


class DoctorError(OcigcError):
    """doctor cannot look at PATH at all (missing, not a directory)."""


# ------------------------------------------------------------------------------------ findings


@dataclass(frozen=True)
class Finding:
    """One observation. ``option``/``current``/``recommended`` name the exact setting to change."""

    severity: str
    check: str
    message: str
    option: str | None = None
    current: str | None = None
    recommended: str | None = None
    source: str | None = None
    why: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity, "check": self.check, "message": self.message, "option": self.option,
            "current": self.current, "recommended": self.recommended, "source": self.source, "why": self.why,
        }


# ------------------------------------------------------------------------------------ mountinfo


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


# ------------------------------------------------------------------------------------ processes


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
        """Only the named variables of a process's environment (never the rest: it holds secrets)."""
        wanted = set(names)
        try:
            with open(f"{self.proc}/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            return {}
        found: dict[str, str] = {}
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            name = key.decode("utf-8", "replace")
            if sep and name in wanted:
                found[name] = value.decode("utf-8", "replace")
        return found

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


# ------------------------------------------------------------------------------------ options


@dataclass
class Options:
    """Options in the order given (a later one wins), and where they came from."""

    items: list[tuple[str, str | None]] = field(default_factory=list)
    where: str | None = None
    #: Options that came from somewhere else (rclone's environment): name -> where.
    other_sources: dict[str, str] = field(default_factory=dict)
    #: Arguments that are not options (bucket or remote, mount point).
    positional: list[str] = field(default_factory=list)

    def add(self, name: str, value: str | None) -> None:
        self.items.append((name, value))

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.items)

    def get(self, name: str) -> str | None:
        value: str | None = None
        for n, v in self.items:
            if n == name:
                value = v
        return value

    def last_of(self, *names: str) -> str | None:
        """Which of ``names`` was given last (for options that override each other)."""
        last: str | None = None
        for n, _ in self.items:
            if n in names:
                last = n
        return last

    def source_of(self, name: str) -> str | None:
        return self.other_sources.get(name, self.where)

    def to_json(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for n, v in self.items:
            out[n] = "<hidden>" if v is not None and _SECRET.search(n) else v
        return out


def split_fuse_options(text: str) -> list[str]:
    """``a,b=c\\,d`` -> ``["a", "b=c,d"]`` (libfuse's escaping of commas and backslashes)."""
    items, cur, escape = [], [], False
    for ch in text:
        if escape:
            cur.append(ch)
            escape = False
        elif ch == "\\":
            escape = True
        elif ch == ",":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i for i in items if i]


def parse_s3fs_args(argv: Sequence[str]) -> Options:
    """s3fs: every ``-o opt[,opt]`` (also ``-oopt``); positional arguments and -f/-s/-d ignored."""
    opts = Options()
    i = 1
    while i < len(argv):
        arg = argv[i]
        text: str | None = None
        if arg == "-o" and i + 1 < len(argv):
            text = argv[i + 1]
            i += 1
        elif arg.startswith("-o") and len(arg) > 2:
            text = arg[2:]
        elif not arg.startswith("-"):
            opts.positional.append(arg)
        i += 1
        if text is None:
            continue
        for item in split_fuse_options(text):
            name, sep, value = item.partition("=")
            opts.add(name.strip(), value if sep else None)
    return opts


#: Flags that take a value as the next argument (``--flag value``), per adapter. Other flags
#: are read as booleans unless written ``--flag=value``.
_VALUE_FLAGS: dict[str, frozenset[str]] = {
    RCLONE: frozenset({
        "vfs-cache-mode", "dir-cache-time", "attr-timeout", "vfs-write-back", "poll-interval", "cache-dir",
        "config", "log-file", "log-level", "vfs-cache-max-age", "vfs-cache-max-size", "vfs-read-chunk-size",
        "vfs-read-chunk-size-limit", "buffer-size", "uid", "gid", "umask", "dir-perms", "file-perms",
        "volname", "fs-name", "max-read-ahead", "transfers", "checkers", "user-agent", "stats",
        "daemon-timeout", "vfs-read-wait", "vfs-write-wait", "rc-addr", "bwlimit", "tpslimit",
    }),
    GOOFYS: frozenset({
        "type-cache-ttl", "stat-cache-ttl", "cache", "dir-mode", "file-mode", "uid", "gid", "endpoint",
        "region", "profile", "storage-class", "sse", "sse-kms", "sse-c", "acl", "http-timeout", "o",
    }),
    MOUNTPOINT: frozenset({
        "metadata-ttl", "negative-metadata-ttl", "cache", "cache-xz", "bucket-type", "prefix", "region",
        "endpoint-url", "storage-class", "max-cache-size", "uid", "gid", "dir-mode", "file-mode",
        "log-directory", "l", "max-threads", "part-size", "read-part-size", "write-part-size",
        "maximum-throughput-gbps", "expected-bucket-owner", "profile", "sse", "sse-kms-key-id",
        "upload-checksums", "user-agent-prefix", "bind", "cache-block-size", "max-memory-target",
    }),
}


def parse_flag_args(argv: Sequence[str], adapter: str) -> Options:
    """rclone, goofys and mount-s3: ``--flag value``, ``--flag=value``, ``--flag`` and ``-o list``.

    In a ``-o`` list (fstab style): rclone's ``vfs_cache_mode=writes`` is ``--vfs-cache-mode``;
    goofys reads items that start with ``--`` as flags; mount-s3 reads every item as a flag.
    goofys (Go's flag package) also accepts a single dash: ``-type-cache-ttl 0``.
    """
    value_flags = _VALUE_FLAGS.get(adapter, frozenset())
    opts = Options()

    def add_o(item: str) -> None:
        name, sep, value = item.partition("=")
        if adapter == GOOFYS:
            if not name.startswith("--"):
                opts.add(f"o:{name}", value if sep else None)
                return
            name = name[2:]
        elif adapter == RCLONE:
            name = name.replace("_", "-")
        opts.add(name.lstrip("-"), value if sep else None)

    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if arg == "-o" and i < len(argv):
            for item in split_fuse_options(argv[i]):
                add_o(item)
            i += 1
            continue
        if arg.startswith("-o") and not arg.startswith("--") and len(arg) > 2 and adapter != GOOFYS:
            for item in split_fuse_options(arg[2:]):
                add_o(item)
            continue
        long_form = arg.startswith("--") or (adapter == GOOFYS and arg.startswith("-") and len(arg) > 2)
        if not long_form:
            if not arg.startswith("-"):
                opts.positional.append(arg)
            continue
        name, sep, value = arg.lstrip("-").partition("=")
        if sep:
            opts.add(name, value)
        elif name in value_flags and i < len(argv):
            if name == "o" and adapter == GOOFYS:
                for item in split_fuse_options(argv[i]):
                    add_o(item)
            else:
                opts.add(name, argv[i])
            i += 1
        else:
            opts.add(name, None)
    return opts


#: rclone reads every flag from RCLONE_<FLAG> too; these are the ones doctor checks.
RCLONE_ENV = {
    "RCLONE_VFS_CACHE_MODE": "vfs-cache-mode", "RCLONE_DIR_CACHE_TIME": "dir-cache-time",
    "RCLONE_ATTR_TIMEOUT": "attr-timeout", "RCLONE_VFS_WRITE_BACK": "vfs-write-back",
    "RCLONE_READ_ONLY": "read-only",
}


def parse_daemon_options(adapter: str, argv: Sequence[str]) -> Options:
    if adapter == S3FS:
        return parse_s3fs_args(argv)
    if adapter in (RCLONE, GOOFYS, MOUNTPOINT):
        return parse_flag_args(argv, adapter)
    return Options()


# ------------------------------------------------------------------------------------ values


_GO_UNITS = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("μs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0),
             ("h", 3600.0), ("d", 86400.0), ("w", 604800.0), ("M", 2592000.0), ("y", 31536000.0)]
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(" + "|".join(re.escape(u) for u, _ in _GO_UNITS) + ")")


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go/rclone duration (``5m0s``, ``1h30m``, ``500ms``, ``0``, rclone's ``1d``,
    a bare number as seconds, ``off`` as forever); None when unreadable."""
    t = text.strip()
    if not t:
        return None
    if t.lower() == "off":
        return math.inf
    try:
        return float(t)
    except ValueError:
        pass
    units = dict(_GO_UNITS)
    pos, total = 0, 0.0
    for m in _GO_PART.finditer(t):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(t) and pos > 0 else None


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """(1, 90) from ``Amazon Simple Storage Service File System V1.90 (commit:unknown)``,
    (1, 60, 1) from ``rclone v1.60.1-DEV``, (1, 7, 2) from ``mount-s3 1.7.2``."""
    if not text:
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def fmt_seconds(seconds: float) -> str:
    if math.isinf(seconds):
        return "forever"
    return f"{seconds:g}s"


def _version_str(version: tuple[int, ...] | None) -> str:
    return ".".join(str(v) for v in version) if version else "unknown"


# ------------------------------------------------------------------------------------ rules


@dataclass
class Context:
    """What the rules look at."""

    adapter: str
    mount: MountEntry
    options: Options
    version: tuple[int, ...] | None
    settle: float
    daemon_found: bool

    def source(self, name: str | None, default_what: str) -> str:
        """Where the value of option ``name`` came from (``default_what`` names the default)."""
        if name is not None and self.options.has(name):
            return self.options.source_of(name) or "the command line"
        if self.daemon_found:
            return f"{default_what} (not set on {self.options.where})"
        return f"{default_what} (assumed: the adapter's command line could not be read)"


def _s3fs_rules(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    opts, v, settle = ctx.options, ctx.version, ctx.settle
    new_listing_cache = v is None or v >= (1, 96)
    cache_off = opts.get("max_stat_cache_size") == "0"
    key = opts.last_of("stat_cache_expire", "stat_cache_interval_expire")
    raw = opts.get(key) if key else None
    try:
        expire = float(raw) if raw is not None else 900.0
    except ValueError:
        expire = 900.0
    src = ctx.source(key, "the s3fs default, 900 s")
    effective = 0.0 if cache_off else expire

    # --- stat (and, from 1.96, listing) cache
    if cache_off:
        out.append(Finding(
            OK, "s3fs.stat_cache", "stat cache disabled (max_stat_cache_size=0)", option="max_stat_cache_size",
            current="0", source=ctx.source("max_stat_cache_size", ""),
            why="safe, but every stat is a HEAD request: listing with stat is 10-100x slower; "
                "stat_cache_expire=1 is as safe and faster"))
    elif expire > settle:
        hides = ("a file that another host deleted keeps stat-ing as present, so `oras push` on this host "
                 "skips re-uploading a blob that a sweep just removed (a dangling reference), and an "
                 "overwritten file keeps its old size")
        if new_listing_cache:
            hides += ("; s3fs >= 1.96 also caches directory listings for this long, so another host's "
                      "new lock files are missing from listings and two exclusive locks can both succeed")
        out.append(Finding(
            UNSAFE, "s3fs.stat_cache",
            f"stat cache keeps entries for {fmt_seconds(expire)}, longer than the {fmt_seconds(settle)} lock "
            "settle delay", option=key or "stat_cache_expire", current=fmt_seconds(expire),
            recommended="-o stat_cache_expire=1", source=src,
            why=f"for up to {fmt_seconds(expire)} another host's changes stay hidden from this host: {hides}"))
    elif key == "stat_cache_interval_expire":
        out.append(Finding(
            WARNING, "s3fs.stat_cache",
            "stat_cache_interval_expire counts from the last access: an entry looked at more often than every "
            f"{fmt_seconds(expire)} never expires", option="stat_cache_interval_expire",
            current=fmt_seconds(expire), recommended="-o stat_cache_expire=1", source=src,
            why="a lock file or blob polled often keeps its cached state forever"))
    else:
        out.append(Finding(
            OK, "s3fs.stat_cache", f"stat cache expires after {fmt_seconds(expire)} (within the settle delay)",
            option="stat_cache_expire", current=fmt_seconds(expire), source=src))

    # --- negative cache ("this file does not exist")
    if v is not None and v < (1, 92):
        last = opts.last_of("enable_noobj_cache")
        on = last is not None
        option = "enable_noobj_cache"
        nsrc = (opts.source_of(option) or "the command line") if on else \
            ctx.source(None, f"off: the s3fs {_version_str(v)} default")
        fix = "remove -o enable_noobj_cache"
    else:
        last = opts.last_of("disable_noobj_cache", "disable_negative_cache", "enable_noobj_cache",
                            "enable_negative_cache")
        on = last is None or last.startswith("enable")
        option = last or ("disable_negative_cache" if v is not None and v >= (1, 96) else "disable_noobj_cache")
        if last is not None:
            nsrc = opts.source_of(last) or "the command line"
        else:
            nsrc = ctx.source(None, "on: the default since s3fs 1.92" if v is not None
                              else "on: the default since s3fs 1.92 (s3fs version unknown)")
        if v is None:
            fix = "-o disable_noobj_cache (s3fs 1.92-1.95) or -o disable_negative_cache (s3fs >= 1.96)"
        elif v >= (1, 96):
            fix = "-o disable_negative_cache"
        else:
            fix = "-o disable_noobj_cache"
    if on and not cache_off:
        why = ("after this host looks up a name and misses, a file that another host then creates under that "
               "name (a lock file, a pushed manifest or blob) stays 'not found' here for up to "
               f"{fmt_seconds(effective)}")
        if effective > settle:
            out.append(Finding(
                UNSAFE, "s3fs.negative_cache",
                f"negative cache on for {fmt_seconds(effective)}, longer than the settle delay",
                option=option, current="on", recommended=fix, source=nsrc, why=why))
        else:
            out.append(Finding(
                WARNING, "s3fs.negative_cache",
                f"negative cache on, bounded by the {fmt_seconds(effective)} stat cache expiry",
                option=option, current="on", recommended=fix, source=nsrc,
                why=why + "; s3fs's man page calls it fit only for a bucket used by one s3fs"))
    else:
        out.append(Finding(OK, "s3fs.negative_cache", "negative cache off", option=option,
                           current="off", source=nsrc))

    # --- kernel caches (libfuse options that s3fs passes through)
    out.extend(_fuse_kernel_rules(ctx))
    if opts.has("use_cache"):
        out.append(Finding(
            INFO, "s3fs.use_cache", "local content cache on (use_cache); it is validated against the stat "
            "cache, so it is as fresh as stat_cache_expire allows", option="use_cache",
            source=opts.source_of("use_cache")))
    if v is None:
        out.append(Finding(
            INFO, "s3fs.version", "s3fs version unknown: judged by the defaults of the newest s3fs "
            "(negative cache on, listings cached from 1.96)"))
    return out


def _fuse_kernel_rules(ctx: Context) -> list[Finding]:
    """libfuse's kernel cache options (high-level API): attr_timeout, entry_timeout,
    negative_timeout (defaults 1, 1, 0 s) and kernel_cache."""
    out: list[Finding] = []
    opts = ctx.options
    for name, default in (("attr_timeout", 1.0), ("entry_timeout", 1.0), ("negative_timeout", 0.0)):
        raw = opts.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if value > ctx.settle:
            out.append(Finding(
                UNSAFE, f"fuse.{name}", f"the kernel caches {name.split('_')[0]}s for {fmt_seconds(value)}",
                option=name, current=fmt_seconds(value), recommended=f"-o {name}={default:g} (or leave it out)",
                source=opts.source_of(name),
                why="the kernel answers from its cache without asking the adapter, hiding other hosts' "
                    "new, changed and deleted files for that long"))
    if opts.has("kernel_cache"):
        out.append(Finding(
            UNSAFE, "fuse.kernel_cache", "kernel_cache keeps file contents across opens",
            option="kernel_cache", current="on", recommended="remove -o kernel_cache",
            source=opts.source_of("kernel_cache"),
            why="an index.json that another host rewrote can be read stale from the page cache; an update "
                "based on it loses the other host's tags"))
    return out


def _rclone_rules(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    opts, settle = ctx.options, ctx.settle
    mode = (opts.get("vfs-cache-mode") or "off").lower()
    src = ctx.source("vfs-cache-mode", "off: the rclone default")
    if mode in ("writes", "full"):
        wb = opts.get("vfs-write-back") or "5s"
        out.append(Finding(
            UNSAFE, "rclone.vfs_cache_mode", f"--vfs-cache-mode {mode}: files are uploaded after close, in "
            "the background", option="--vfs-cache-mode", current=mode, recommended="--vfs-cache-mode off",
            source=src,
            why=f"close() returns before the upload (after --vfs-write-back, {wb}, of no access): a lock file "
                "or an index.json this host considers written is invisible to other hosts for seconds, lost if "
                "rclone dies, and fsync does not upload it"))
    else:
        out.append(Finding(OK, "rclone.vfs_cache_mode", f"--vfs-cache-mode {mode}: writes reach the bucket "
                           "before close returns", option="--vfs-cache-mode", current=mode, source=src))

    for flag, default, fix, what in (
        ("dir-cache-time", "5m", "--dir-cache-time 1s",
         "directory listings and lookups are served from rclone's cache: another host's new lock files are "
         "invisible and files it deleted still appear (S3 offers rclone no change polling)"),
        ("attr-timeout", "1s", "--attr-timeout 1s",
         "the kernel caches attributes: another host's changes and deletions stay hidden"),
    ):
        raw = opts.get(flag)
        seconds = parse_go_duration(raw) if raw is not None else parse_go_duration(default)
        fsrc = ctx.source(flag, f"{default}: the rclone default")
        if seconds is None:
            out.append(Finding(WARNING, f"rclone.{flag.replace('-', '_')}", f"--{flag} {raw!r} not understood",
                               option=f"--{flag}", current=raw, recommended=fix, source=fsrc))
        elif seconds > settle:
            out.append(Finding(
                UNSAFE, f"rclone.{flag.replace('-', '_')}",
                f"--{flag} {raw or default}: cached for longer than the {fmt_seconds(settle)} settle delay",
                option=f"--{flag}", current=raw or default, recommended=fix, source=fsrc,
                why=f"for up to {fmt_seconds(seconds)}: {what}"))
        else:
            out.append(Finding(OK, f"rclone.{flag.replace('-', '_')}", f"--{flag} {raw or default}",
                               option=f"--{flag}", current=raw or default, source=fsrc))
    if opts.has("read-only") and opts.get("read-only") not in ("false", "0"):
        out.append(_read_only_finding("--read-only", opts.source_of("read-only")))
    return out


def _goofys_rules(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    opts, settle = ctx.options, ctx.settle
    for flag, what in (
        ("type-cache-ttl", "directory listings are served from goofys's cache: another host's new lock files "
                           "are missing from them"),
        ("stat-cache-ttl", "file attributes are cached: a file that another host deleted still appears "
                           "(oras skips re-uploading a swept blob) and its new files may be missed"),
    ):
        raw = opts.get(flag)
        seconds = parse_go_duration(raw) if raw is not None else 60.0
        fsrc = ctx.source(flag, "1m: the goofys default")
        check = f"goofys.{flag.replace('-', '_')}"
        if seconds is None:
            out.append(Finding(WARNING, check, f"--{flag} {raw!r} not understood", option=f"--{flag}",
                               current=raw, recommended=f"--{flag} 0", source=fsrc))
        elif seconds > settle:
            out.append(Finding(
                UNSAFE, check, f"--{flag} {raw or '1m'}: cached for longer than the {fmt_seconds(settle)} "
                "settle delay", option=f"--{flag}", current=raw or "1m", recommended=f"--{flag} 0",
                source=fsrc, why=f"for up to {fmt_seconds(seconds)}: {what}"))
        else:
            out.append(Finding(OK, check, f"--{flag} {raw}", option=f"--{flag}", current=raw, source=fsrc))
    out.append(Finding(
        INFO, "goofys.semantics", "goofys ignores fsync (files upload on close), reports success when removing "
        "a file that is already gone, and renames by copy + delete; mtimes are the server's upload times"))
    return out


def _mountpoint_rules(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    opts, settle = ctx.options, ctx.settle
    if opts.has("read-only"):
        out.append(_read_only_finding("--read-only", opts.source_of("read-only")))
    if opts.has("allow-delete"):
        out.append(Finding(OK, "mountpoint.allow_delete", "--allow-delete: files can be removed",
                           option="--allow-delete", current="set", source=opts.source_of("allow-delete")))
    else:
        out.append(Finding(
            UNSAFE, "mountpoint.allow_delete", "deletion is impossible without --allow-delete",
            option="--allow-delete", current="not set", recommended="--allow-delete",
            source=ctx.source(None, "the mountpoint-s3 default: no deletes"),
            why="ocigc can neither delete blobs and manifests nor release its own lock files (every lock "
                "would stay until it is stale)"))
    if opts.has("allow-overwrite"):
        out.append(Finding(OK, "mountpoint.allow_overwrite", "--allow-overwrite: index.json can be replaced",
                           option="--allow-overwrite", current="set", source=opts.source_of("allow-overwrite")))
    else:
        out.append(Finding(
            WARNING, "mountpoint.allow_overwrite", "index.json cannot be replaced without --allow-overwrite",
            option="--allow-overwrite", current="not set", recommended="--allow-overwrite",
            source=ctx.source(None, "the mountpoint-s3 default: no overwrites"),
            why="without rename ocigc rewrites index.json in place, which mountpoint-s3 refuses: `delete`, "
                "`sweep --untagged` and tagging fail before they change anything"))
    bucket_type = opts.get("bucket-type")
    bucket = opts.positional[0] if opts.positional else ""
    directory_bucket = bucket_type == "directory" or bucket.rstrip("/").endswith("--x-s3")
    if directory_bucket:
        out.append(Finding(INFO, "mountpoint.rename", "S3 Express One Zone directory bucket: rename is supported"))
    else:
        out.append(Finding(
            WARNING, "mountpoint.rename", "no rename on general purpose buckets",
            option=None, current="unsupported",
            why="ocigc falls back to writing index.json in place (mountpoint-s3 uploads a file atomically at "
                "close, so readers see the old or the new one); `oras push --oci-layout` cannot write through "
                "this mount (ingest, chmod, rename)"))
    cached = opts.has("cache") or opts.has("cache-xz")
    for flag, default in (("metadata-ttl", "60" if cached else "minimal"), ("negative-metadata-ttl", None)):
        raw = opts.get(flag)
        value = raw if raw is not None else (default if default is not None else
                                             (opts.get("metadata-ttl") or ("60" if cached else "minimal")))
        fsrc = ctx.source(flag, "60 s: the default with --cache" if cached and flag == "metadata-ttl" else
                          ("the metadata TTL" if flag == "negative-metadata-ttl" else
                           "minimal: the mountpoint-s3 default"))
        check = f"mountpoint.{flag.replace('-', '_')}"
        if value == "minimal":
            out.append(Finding(OK, check, f"--{flag} minimal", option=f"--{flag}", current="minimal", source=fsrc))
            continue
        seconds = math.inf if value == "indefinite" else parse_go_duration(value)
        if seconds is None or seconds > settle:
            what = ("a file that another host deleted still appears" if flag == "metadata-ttl" else
                    "a file that another host created after this host missed it stays 'not found'")
            out.append(Finding(
                UNSAFE, check, f"--{flag} {value}: metadata cached for longer than the settle delay",
                option=f"--{flag}", current=value, recommended=f"--{flag} minimal", source=fsrc,
                why=f"for up to {value if seconds is None else fmt_seconds(seconds)}: {what}"))
        else:
            out.append(Finding(OK, check, f"--{flag} {value}", option=f"--{flag}", current=value, source=fsrc))
    return out


def _read_only_finding(option: str, source: str | None) -> Finding:
    return Finding(UNSAFE, "mount.read_only", "the mount is read-only", option=option, current="ro",
                   recommended="mount read-write", source=source,
                   why="ocigc cannot write lock files, rewrite index.json or delete anything")


def assess(ctx: Context) -> list[Finding]:
    """The configuration findings for one mount (no I/O)."""
    out: list[Finding] = []
    if ctx.mount.read_only:
        out.append(_read_only_finding("ro", "mount options (/proc/self/mountinfo)"))
    if ctx.adapter == LOCAL:
        out.append(Finding(OK, "mount.local", f"local file system ({ctx.mount.fstype}): listings and stats "
                           "reflect every completed write at once"))
    elif ctx.adapter == NETWORK:
        out.append(Finding(
            WARNING, "mount.network", f"network file system ({ctx.mount.fstype}): doctor does not check its "
            "attribute caches", option="actimeo" if ctx.mount.fstype.startswith("nfs") else None,
            recommended="actimeo=0 or lookupcache=none (NFS)" if ctx.mount.fstype.startswith("nfs") else None,
            why="attribute and lookup caches on other hosts can hide new and deleted files for seconds"))
    elif ctx.adapter == S3FS:
        out.extend(_s3fs_rules(ctx))
    elif ctx.adapter == RCLONE:
        out.extend(_rclone_rules(ctx))
    elif ctx.adapter == GOOFYS:
        out.extend(_goofys_rules(ctx))
    elif ctx.adapter == MOUNTPOINT:
        out.extend(_mountpoint_rules(ctx))
    elif ctx.adapter == FUSE_OTHER:
        name = ctx.mount.subtype or ctx.mount.source
        label = OTHER_FUSE_NAMES.get(name.lower(), name or "unknown")
        out.append(Finding(
            WARNING, "mount.fuse_unknown", f"FUSE file system {label}: doctor knows no rules for it",
            why="its caches may hide other hosts' files for longer than the lock settle delay; check its "
                "documentation for stat, listing and negative caches and for uploads after close. The "
                "self-test sees only this host's view"))
        out.extend(_fuse_kernel_rules(ctx))
    else:
        out.append(Finding(INFO, "mount.other", f"file system type {ctx.mount.fstype}: treated as a local "
                           "file system"))
    if ctx.adapter in ADAPTER_BINARIES and not ctx.daemon_found:
        out.append(Finding(
            WARNING, "daemon.not_found", f"could not find the {ctx.adapter} process serving "
            f"{ctx.mount.mount_point}: its options are assumed to be the defaults",
            recommended="--daemon-args 'THE ADAPTER COMMAND LINE'",
            why="the process may run in another PID namespace (a container) or under a mount point path "
                "this host does not see"))
    return out


# ------------------------------------------------------------------------------------ self-test


@dataclass
class Step:
    name: str
    status: str  # ok, failed, unsupported, skipped, timeout
    latency_ms: float | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"step": self.name, "status": self.status,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2), "detail": self.detail}


@dataclass
class SelfTest:
    directory: str
    steps: list[Step] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    mtime_skew: float | None = None

    @property
    def ok(self) -> bool:
        return all(s.status in ("ok", "unsupported", "skipped") for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "ok": self.ok, "steps": [s.to_json() for s in self.steps],
                "leftovers": self.leftovers,
                "mtime_skew_s": None if self.mtime_skew is None else round(self.mtime_skew, 3)}


#: errno values meaning "this file system does not do that" rather than "it broke".
_UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EXDEV, errno.EACCES})


class _Unsupported(Exception):
    pass


class _Failed(Exception):
    pass


def _run_with_timeout(fn: Callable[[], str], timeout: float) -> tuple[str, str, float]:
    """(status, detail, seconds) of ``fn`` run in a daemon thread (a hung FUSE call cannot block us)."""
    result: dict[str, Any] = {}

    def target() -> None:
        start = time.perf_counter()
        result["status"], result["detail"] = "failed", "no result"
        try:
            result["detail"] = fn()
            result["status"] = "ok"
        except _Unsupported as e:
            result["status"], result["detail"] = "unsupported", str(e)
        except _Failed as e:
            result["status"], result["detail"] = "failed", str(e)
        except OSError as e:
            result["status"], result["detail"] = "failed", f"{type(e).__name__}: {e.strerror or e}"
        except Exception as e:  # a step must never take doctor down
            result["status"], result["detail"] = "failed", f"{type(e).__name__}: {e}"
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=target, name="ocigc-doctor-step", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "timeout", f"no answer within {timeout:g}s (the mount may hang)", timeout
    return result["status"], result.get("detail", ""), result["seconds"]


def run_self_test(path: str, timeout: float = DEFAULT_STEP_TIMEOUT) -> SelfTest:
    """Create, list, stat, read, rename, overwrite, remove, list again in ``PATH/.ocigc/doctor/``.

    Each step is timed (the operation itself, not its verification). A step that fails skips
    the rest; a hung step stops the test and leaves its file behind (listed in ``leftovers``).
    Files are removed and directories doctor created are removed when empty.
    """
    base = Path(path)
    control = base / ".ocigc"
    directory = base / DOCTOR_DIR
    created_dirs = [d for d in (control, directory) if not d.exists()]
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"
    token = uuid.uuid4().hex
    first = directory / f"doctor-{host}-{os.getpid()}-{token[:12]}.tmp"
    second = first.with_name(first.name[:-4] + "-renamed.tmp")
    data1 = f"ocigc doctor self-test {token} one\n".encode()
    data2 = f"ocigc doctor self-test {token} two: overwritten\n".encode()
    test = SelfTest(str(directory))
    state: dict[str, Any] = {"current": first, "content": data1}
    clock: dict[str, float] = {}

    def timed(fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            clock["op"] = time.perf_counter() - start

    def mkdir() -> str:
        timed(lambda: os.makedirs(directory, exist_ok=True))
        return "" if not created_dirs else f"created {', '.join(str(d) for d in created_dirs)}"

    def create() -> str:
        def op() -> None:
            fd = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data1)
                os.fsync(fd)
            finally:
                os.close(fd)
        state["written_at"] = time.time()
        timed(op)
        return f"{len(data1)} bytes, O_CREAT|O_EXCL, fsync, close"

    def listing() -> str:
        names = timed(lambda: os.listdir(directory))
        if first.name not in names:
            raise _Failed("the file this host just wrote is missing from the directory listing: listings are "
                          "cached, so lock files would be invisible")
        return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} listed"

    def stat() -> str:
        st = timed(lambda: os.stat(first))
        if st.st_size != len(data1):
            raise _Failed(f"stat says {st.st_size} bytes, {len(data1)} were written")
        test.mtime_skew = st.st_mtime - state["written_at"]
        return f"mtime differs from this host's clock by {test.mtime_skew:+.1f}s"

    def read() -> str:
        def op() -> bytes:
            with open(first, "rb") as f:
                return f.read()
        got = timed(op)
        if got != data1:
            raise _Failed(f"read back {len(got)} bytes that differ from the {len(data1)} written")
        return "content matches"

    def rename() -> str:
        try:
            timed(lambda: os.replace(first, second))
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                raise _Unsupported(f"rename refused ({errno.errorcode.get(e.errno or 0, e.errno)}): ocigc writes "
                                   "in place instead of temp file + rename") from e
            raise
        state["current"] = second
        names = os.listdir(directory)
        if second.name not in names or first.name in names:
            raise _Failed("after the rename the listing does not show the new name only")
        return "new name listed, old name gone"

    def overwrite() -> str:
        target: Path = state["current"]

        def op() -> None:
            with open(target, "wb") as f:
                f.write(data2)
        try:
            timed(op)
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                raise _Unsupported(f"overwrite refused ({errno.errorcode.get(e.errno or 0, e.errno)}): index.json "
                                   "cannot be replaced in place") from e
            raise
        state["content"] = data2
        with open(target, "rb") as f:
            if f.read() != data2:
                raise _Failed("the overwritten file does not read back as written")
        return "O_TRUNC write, read back"

    def remove() -> str:
        target: Path = state["current"]
        try:
            timed(lambda: os.unlink(target))
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                raise _Failed(f"remove refused ({errno.errorcode.get(e.errno or 0, e.errno)}): ocigc cannot "
                              "delete blobs nor release its lock files") from e
            raise
        state["removed"] = True
        return ""

    def list_again() -> str:
        names = timed(lambda: os.listdir(directory))
        if first.name in names or second.name in names:
            raise _Failed("the removed file still shows in the directory listing")
        return "gone"

    steps: list[tuple[str, Callable[[], str]]] = [
        ("mkdir", mkdir), ("create", create), ("list", listing), ("stat", stat), ("read", read),
        ("rename", rename), ("overwrite", overwrite), ("remove", remove), ("list-again", list_again),
    ]
    hung = False
    stopped = False
    for name, fn in steps:
        if stopped:
            test.steps.append(Step(name, "skipped", None, "an earlier step failed"))
            continue
        clock.pop("op", None)
        status, detail, seconds = _run_with_timeout(fn, timeout)
        latency = clock.get("op", seconds) * 1000.0 if status != "timeout" else None
        test.steps.append(Step(name, status, latency, detail))
        if status == "timeout":
            hung = stopped = True
        elif status == "failed":
            stopped = True
    if hung:
        test.leftovers = [str(p) for p in (first, second)]
        return test
    for p in (first, second):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
        except OSError:
            if p.exists():
                test.leftovers.append(str(p))
    for d in reversed(created_dirs):
        with contextlib.suppress(OSError):
            os.rmdir(d)
    return test


def self_test_findings(test: SelfTest) -> list[Finding]:
    out: list[Finding] = []
    for step in test.steps:
        if step.status in ("failed", "timeout"):
            out.append(Finding(UNSAFE, f"selftest.{step.name}", f"self-test step {step.name} {step.status}: "
                               f"{step.detail}", why="ocigc's locks and deletions rely on this operation"))
        elif step.status == "unsupported" and step.name == "rename":
            out.append(Finding(WARNING, "selftest.rename", step.detail,
                               why="ocigc falls back to in-place writes; `oras push --oci-layout` cannot write "
                                   "through this mount"))
        elif step.status == "unsupported":
            out.append(Finding(WARNING, f"selftest.{step.name}", step.detail))
    if test.leftovers:
        out.append(Finding(WARNING, "selftest.leftovers", "self-test files could not be removed: "
                           + ", ".join(test.leftovers)))
    if test.mtime_skew is not None and abs(test.mtime_skew) > MTIME_SKEW_WARN:
        out.append(Finding(
            WARNING, "selftest.mtime", f"a new file's mtime differs from this host's clock by "
            f"{test.mtime_skew:+.0f}s", why="grace periods compare mtimes with this host's clock: fix the clock "
            "of this host or of the storage"))
    return out


# ------------------------------------------------------------------------------------ report


@dataclass
class DoctorReport:
    path: str
    real_path: str
    mount: MountEntry | None
    adapter: str
    version: str | None
    version_source: str | None
    daemon: Daemon | None
    options: Options
    settle: float
    findings: list[Finding]
    self_test: SelfTest | None

    @property
    def unsafe(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == UNSAFE]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def fit(self) -> bool:
        return not self.unsafe

    @property
    def exit_code(self) -> int:
        from ocigc.errors import EXIT_OK, EXIT_UNSAFE_MOUNT

        return EXIT_OK if self.fit else EXIT_UNSAFE_MOUNT

    @property
    def adapter_label(self) -> str:
        if self.adapter == LOCAL and self.mount is not None:
            return f"local file system ({self.mount.fstype})"
        if self.adapter == NETWORK and self.mount is not None:
            return f"network file system ({self.mount.fstype})"
        if self.adapter == FUSE_OTHER and self.mount is not None:
            name = self.mount.subtype or self.mount.source
            return f"other FUSE ({OTHER_FUSE_NAMES.get(name.lower(), name)})"
        if self.adapter == OTHER and self.mount is not None:
            return f"{self.mount.fstype}"
        return f"{self.adapter} {self.version}" if self.version else self.adapter

    def summary(self) -> str:
        """One line: the verdict and, when unfit, the settings to change."""
        if self.fit:
            extra = f" ({len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''})" if self.warnings else ""
            return f"{self.path}: fit for ocigc on {self.adapter_label}{extra}"
        fixes = [f.recommended or f.message for f in self.unsafe]
        return f"{self.path}: unsafe mount for ocigc ({self.adapter_label}): " + "; ".join(dict.fromkeys(fixes))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "real_path": self.real_path,
            "fit": self.fit,
            "exit_code": self.exit_code,
            "adapter": self.adapter,
            "adapter_label": self.adapter_label,
            "version": self.version,
            "version_source": self.version_source,
            "mount": self.mount.to_json() if self.mount else None,
            "daemon": None if self.daemon is None else {"pid": self.daemon.pid, "name": self.daemon.name,
                                                        "exe": self.daemon.exe},
            "options": self.options.to_json(),
            "options_source": self.options.where,
            "settle_s": self.settle,
            "findings": [f.to_json() for f in sorted(self.findings, key=lambda f: -_RANK[f.severity])],
            "self_test": self.self_test.to_json() if self.self_test else None,
        }


def settle_delay(explicit: float | None = None) -> float:
    """The lock settle delay caches are compared with: explicit, else OCIGC_LOCK_SETTLE, else 2 s."""
    if explicit is not None:
        return explicit
    env = LockParams.from_env().settle
    return env if env is not None else DEFAULT_FUSE_SETTLE


def _version_of(system: System, adapter: str, daemon: Daemon | None) -> tuple[str | None, str | None]:
    names = ADAPTER_BINARIES.get(adapter)
    if not names:
        return None, None
    exe = daemon.exe if daemon is not None else None
    where = f"{exe} --version (the running daemon's binary)" if exe else None
    if exe is None:
        found = next((p for p in (system.which(n) for n in names) if p), None)
        if found is None:
            return None, None
        exe = found
        where = f"{exe} --version (on PATH; the daemon's own binary is unknown)"
    line = system.version(exe)
    version = parse_version(line)
    if version is None:
        return None, None
    return _version_str(version), where


def diagnose(
    path: str,
    *,
    settle: float | None = None,
    self_test: bool = True,
    timeout: float = DEFAULT_STEP_TIMEOUT,
    daemon_args: Sequence[str] | str | None = None,
    system: System | None = None,
) -> DoctorReport:
    """Look at the mount holding ``path``, its adapter and options, and run the self-test."""
    system = system or System()
    if path.startswith("s3://"):
        raise UsageError(f"{path}: doctor checks a mounted bucket (a directory); the native s3:// backend "
                          "has no mount options or caches to check, and probes conditional writes at first use "
                          "(OCIGC_S3_CONDITIONAL, docs/object-storage.md)")
    if not os.path.isdir(path):
        what = "not a directory" if os.path.exists(path) else "no such directory"
        raise DoctorError(f"{path}: {what}")
    real = os.path.realpath(path)
    settle_s = settle_delay(settle)
    findings: list[Finding] = []
    try:
        entries = parse_mountinfo(system.mountinfo())
    except OSError as e:
        entries = []
        findings.append(Finding(WARNING, "mount.mountinfo", f"cannot read /proc/self/mountinfo: {e.strerror or e}",
                                why="the adapter and its options cannot be checked; only the self-test ran"))
    mount = find_mount(entries, real)

    daemon: Daemon | None = None
    adapter = OTHER
    options = Options()
    version: str | None = None
    version_source: str | None = None
    if mount is not None:
        adapter = identify_adapter(mount)
        is_fuse = adapter in ADAPTER_BINARIES or adapter == FUSE_OTHER
        if daemon_args is not None and is_fuse:
            argv = tuple(shlex.split(daemon_args)) if isinstance(daemon_args, str) else tuple(daemon_args)
            daemon = Daemon(None, argv, None)
        elif is_fuse:
            # A bind mount shows the bind target; the daemon names the original mount point.
            points = [mount.mount_point] + [e.mount_point for e in entries
                                            if e.device == mount.device and e is not mount]
            daemon = find_daemon(system, points, adapter)
        if daemon is not None and adapter == FUSE_OTHER:
            adapter = identify_adapter(mount, daemon.name)
        if daemon is not None:
            options = parse_daemon_options(adapter, daemon.argv)
            options.where = daemon.where
            if adapter == RCLONE and daemon.pid is not None:
                env = system.environ(daemon.pid, RCLONE_ENV)
                for var, flag in RCLONE_ENV.items():
                    if var in env and not options.has(flag):
                        options.items.insert(0, (flag, env[var]))
                        options.other_sources[flag] = f"{var} in the environment of rclone (pid {daemon.pid})"
        if adapter in ADAPTER_BINARIES:
            version, version_source = _version_of(system, adapter, daemon)
        ctx = Context(adapter, mount, options, parse_version(version), settle_s, daemon is not None)
        findings.extend(assess(ctx))
    elif entries:
        findings.append(Finding(WARNING, "mount.not_found", f"no mount in /proc/self/mountinfo holds {real}"))

    test: SelfTest | None = None
    if self_test:
        test = run_self_test(real, timeout)
        findings.extend(self_test_findings(test))
    return DoctorReport(path, real, mount, adapter, version, version_source, daemon, options, settle_s,
                        findings, test)


def iter_lines(report: DoctorReport, verbose: bool = True) -> Iterator[str]:
    """The human report (the CLI prints it; kept here so tests and other callers share it)."""
    m = report.mount
    yield f"ocigc doctor {report.path}"
    if m is not None:
        yield f"  mount     {m.mount_point}  type {m.fstype}  source {m.source}  ({','.join(m.mount_options)})"
    yield f"  adapter   {report.adapter_label}" + (f"  (version from {report.version_source})"
                                                   if report.version_source else "")
    if report.options.where:
        shown = ", ".join(f"{k}={v}" if v is not None else k for k, v in report.options.to_json().items())
        yield f"  options   from {report.options.where}: {shown or '(none)'}"
    yield f"  settle    {fmt_seconds(report.settle)} (the lock settle delay caches are compared with)"
    yield ""
    for f in sorted(report.findings, key=lambda f: -_RANK[f.severity]):
        if not verbose and f.severity in (OK, INFO):
            continue
        yield f"  {f.severity.upper():<8} {f.message}"
        if f.option is not None and f.current is not None:
            yield f"           {f.option} = {f.current}" + (f"  [{f.source}]" if f.source else "")
        if f.recommended:
            yield f"           fix: {f.recommended}"
        if f.why and (verbose or f.severity in (WARNING, UNSAFE)):
            yield f"           why: {f.why}"
    if report.self_test is not None:
        t = report.self_test
        yield ""
        yield f"  self-test in {t.directory}"
        for s in t.steps:
            lat = f"{s.latency_ms:9.1f} ms" if s.latency_ms is not None else "        -   "
            yield f"    {s.name:<11} {s.status:<11} {lat}  {s.detail}".rstrip()
    yield ""
    yield f"  verdict   {'FIT' if report.fit else 'UNSAFE'}: {report.summary()} (exit {report.exit_code})"
