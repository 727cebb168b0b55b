"""An adapter's own options, read from the command line of the process serving the mount (doctor, part 2).

A FUSE daemon's options (s3fs ``-o stat_cache_expire=``, rclone ``--dir-cache-time``) are not in
mountinfo: they come from the daemon's command line, and for rclone also from its ``RCLONE_*``
environment variables (``--daemon-args`` supplies the command line by hand). ``Options`` remembers
where each value came from; secrets are never shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ocigc.doctor.mounts import GOOFYS, MOUNTPOINT, RCLONE, S3FS

#: Option names whose values are never shown (credentials, key files).
_SECRET = re.compile(r"secret|passw|token|credential|key|sse_c|load_sse", re.IGNORECASE)


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
        # the S3 backend's own settings (ocigc.storage.behind_rclone)
        "s3-provider", "s3-endpoint", "s3-region", "s3-access-key-id", "s3-secret-access-key", "s3-session-token",
        "s3-profile", "s3-shared-credentials-file", "s3-location-constraint",
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
