"""The rules of ``ocigc doctor``: a ``Finding`` per observation and, per adapter, which of its
settings make the mount unfit for ocigc's locks and deletions (a cache that can hide another
host's files for longer than the lock settle delay, uploads after close, no delete, a read-only
mount). What each adapter does and why the rules are what they are: ``docs/object-storage.md``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ocigc.doctor.mounts import (
    ADAPTER_BINARIES,
    FUSE_OTHER,
    GOOFYS,
    LOCAL,
    MOUNTPOINT,
    NETWORK,
    OTHER_FUSE_NAMES,
    RCLONE,
    S3FS,
)
from ocigc.doctor.options import Options
from ocigc.duration import format_duration
from ocigc.storage.mounts import MountEntry

OK, INFO, WARNING, UNSAFE = "ok", "info", "warning", "unsafe"
SEVERITIES = (OK, INFO, WARNING, UNSAFE)
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


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


def version_str(version: tuple[int, ...] | None) -> str:
    return ".".join(str(v) for v in version) if version else "unknown"


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


@dataclass(frozen=True)
class _S3fsStatCache:
    """s3fs's stat cache as configured: how long entries live, and by which option."""

    expire: float
    key: str | None
    source: str
    off: bool

    @property
    def effective(self) -> float:
        return 0.0 if self.off else self.expire

    @classmethod
    def of(cls, ctx: Context) -> _S3fsStatCache:
        opts = ctx.options
        key = opts.last_of("stat_cache_expire", "stat_cache_interval_expire")
        raw = opts.get(key) if key else None
        try:
            expire = float(raw) if raw is not None else 900.0
        except ValueError:
            expire = 900.0
        return cls(expire, key, ctx.source(key, "the s3fs default, 900 s"), opts.get("max_stat_cache_size") == "0")


def _s3fs_stat_cache_rule(ctx: Context, cache: _S3fsStatCache) -> Finding:
    """The stat (and, from s3fs 1.96, listing) cache against the settle delay."""
    v, settle, expire, src = ctx.version, ctx.settle, cache.expire, cache.source
    if cache.off:
        return Finding(
            OK, "s3fs.stat_cache", "stat cache disabled (max_stat_cache_size=0)", option="max_stat_cache_size",
            current="0", source=ctx.source("max_stat_cache_size", ""),
            why="safe, but every stat is a HEAD request: listing with stat is 10-100x slower; "
                "stat_cache_expire=1 is as safe and faster")
    if expire > settle:
        hides = ("a file that another host deleted keeps stat-ing as present, so `oras push` on this host "
                 "skips re-uploading a blob that a sweep just removed (a dangling reference), and an "
                 "overwritten file keeps its old size")
        if v is None or v >= (1, 96):
            hides += ("; s3fs >= 1.96 also caches directory listings for this long, so another host's "
                      "new lock files are missing from listings and two exclusive locks can both succeed")
        return Finding(
            UNSAFE, "s3fs.stat_cache",
            f"stat cache keeps entries for {format_duration(expire, 'exact')}, longer than the "
            f"{format_duration(settle, 'exact')} lock "
            "settle delay", option=cache.key or "stat_cache_expire", current=format_duration(expire, 'exact'),
            recommended="-o stat_cache_expire=1", source=src,
            why=f"for up to {format_duration(expire, 'exact')} another host's changes stay hidden from this host: "
                f"{hides}")
    if cache.key == "stat_cache_interval_expire":
        return Finding(
            WARNING, "s3fs.stat_cache",
            "stat_cache_interval_expire counts from the last access: an entry looked at more often than every "
            f"{format_duration(expire, 'exact')} never expires", option="stat_cache_interval_expire",
            current=format_duration(expire, 'exact'), recommended="-o stat_cache_expire=1", source=src,
            why="a lock file or blob polled often keeps its cached state forever")
    return Finding(
        OK, "s3fs.stat_cache", f"stat cache expires after {format_duration(expire, 'exact')} (within the settle delay)",
        option="stat_cache_expire", current=format_duration(expire, 'exact'), source=src)


def _s3fs_negative_cache_setting(ctx: Context) -> tuple[bool, str, str, str]:
    """Is the negative cache on, by which option, from where, and what turns it off (per s3fs version)."""
    opts, v = ctx.options, ctx.version
    if v is not None and v < (1, 92):
        option = "enable_noobj_cache"
        on = opts.last_of(option) is not None
        nsrc = (opts.source_of(option) or "the command line") if on else \
            ctx.source(None, f"off: the s3fs {version_str(v)} default")
        return on, option, nsrc, "remove -o enable_noobj_cache"
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
    return on, option, nsrc, fix


def _s3fs_negative_cache_rule(ctx: Context, cache: _S3fsStatCache) -> Finding:
    """The negative cache ("this file does not exist"), bounded by the stat cache expiry."""
    on, option, nsrc, fix = _s3fs_negative_cache_setting(ctx)
    if not on or cache.off:
        return Finding(OK, "s3fs.negative_cache", "negative cache off", option=option, current="off", source=nsrc)
    effective = cache.effective
    why = ("after this host looks up a name and misses, a file that another host then creates under that "
           "name (a lock file, a pushed manifest or blob) stays 'not found' here for up to "
           f"{format_duration(effective, 'exact')}")
    if effective > ctx.settle:
        return Finding(
            UNSAFE, "s3fs.negative_cache",
            f"negative cache on for {format_duration(effective, 'exact')}, longer than the settle delay",
            option=option, current="on", recommended=fix, source=nsrc, why=why)
    return Finding(
        WARNING, "s3fs.negative_cache",
        f"negative cache on, bounded by the {format_duration(effective, 'exact')} stat cache expiry",
        option=option, current="on", recommended=fix, source=nsrc,
        why=why + "; s3fs's man page calls it fit only for a bucket used by one s3fs")


def _s3fs_rules(ctx: Context) -> list[Finding]:
    cache = _S3fsStatCache.of(ctx)
    out = [_s3fs_stat_cache_rule(ctx, cache), _s3fs_negative_cache_rule(ctx, cache)]
    # kernel caches (libfuse options that s3fs passes through)
    out.extend(_fuse_kernel_rules(ctx))
    if ctx.options.has("use_cache"):
        out.append(Finding(
            INFO, "s3fs.use_cache", "local content cache on (use_cache); it is validated against the stat "
            "cache, so it is as fresh as stat_cache_expire allows", option="use_cache",
            source=ctx.options.source_of("use_cache")))
    if ctx.version is None:
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
                UNSAFE, f"fuse.{name}",
                f"the kernel caches {name.split('_')[0]}s for {format_duration(value, 'exact')}",
                option=name, current=format_duration(value, 'exact'),
                recommended=f"-o {name}={default:g} (or leave it out)",
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
                f"--{flag} {raw or default}: cached for longer than the {format_duration(settle, 'exact')} "
                "settle delay",
                option=f"--{flag}", current=raw or default, recommended=fix, source=fsrc,
                why=f"for up to {format_duration(seconds, 'exact')}: {what}"))
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
                UNSAFE, check, f"--{flag} {raw or '1m'}: cached for longer than the {format_duration(settle, 'exact')} "
                "settle delay", option=f"--{flag}", current=raw or "1m", recommended=f"--{flag} 0",
                source=fsrc, why=f"for up to {format_duration(seconds, 'exact')}: {what}"))
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
                why=f"for up to {value if seconds is None else format_duration(seconds, 'exact')}: {what}"))
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
