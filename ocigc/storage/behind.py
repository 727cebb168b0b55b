"""The bucket behind a FUSE mount: for a path on an s3fs, rclone, goofys or mountpoint-s3 mount, the
``s3://bucket/prefix/...`` it stands for, with the endpoint, region, addressing style and credentials
the mount uses (docs/object-storage.md, "The bucket behind the mount").

The mount comes from ``/proc/self/mountinfo`` and the serving process from ``/proc`` (as for
``ocigc doctor``); the bucket, endpoint and credentials from that process's command line, the
variables of its environment and the files it reads (``ocigc.storage.behind_s3fs``,
``ocigc.storage.behind_rclone``; goofys and mount-s3 here). Nothing contacts the bucket.

``find_bucket_behind`` never raises for what it cannot find: it returns the reason as one line
(no daemon process readable, a credential source ocigc cannot use, a remote that is not S3, ...).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ocigc.doctor.mounts import (
    ADAPTER_BINARIES,
    FUSE_OTHER,
    GOOFYS,
    MOUNTPOINT,
    RCLONE,
    S3FS,
    Daemon,
    System,
    find_daemon,
    identify_adapter,
    mount_points_of,
)
from ocigc.doctor.options import Options, parse_daemon_options
from ocigc.storage.base import normalize_rel
from ocigc.storage.behind_daemon import (
    ANONYMOUS,
    PROFILE,
    BucketCredentials,
    DaemonView,
    Remote,
    Unfound,
    normalize_endpoint,
    sdk_credentials,
)
from ocigc.storage.behind_rclone import rclone_remote
from ocigc.storage.behind_s3fs import s3fs_remote
from ocigc.storage.mounts import MountEntry, find_mount, parse_mountinfo


@dataclass(frozen=True)
class BucketBehind:
    """The bucket (and key prefix) a path on a FUSE mount stands for, and how the mount reaches it."""

    adapter: str
    mount_point: str
    bucket: str
    #: The key prefix of the path inside the bucket ("" for the bucket's root; no slashes at the ends).
    key_prefix: str
    #: None: AWS S3 itself.
    endpoint_url: str | None
    region: str | None
    #: "path", "virtual" or None (the client's choice).
    addressing_style: str | None
    credentials: BucketCredentials
    #: Where it was read: the command line of the daemon (pid N), or --daemon-args.
    where: str = ""

    @property
    def url(self) -> str:
        return self.s3_url()

    def s3_url(self, rel: str = "") -> str:
        """``s3://bucket/key_prefix/rel``: the object or prefix ``rel`` (relative to the path) stands for."""
        key = "/".join(p for p in (self.key_prefix, normalize_rel(rel)) if p)
        return f"s3://{self.bucket}/{key}"

    def describe(self) -> str:
        """One line, no secret: ``s3://b/p (endpoint ..., region ..., credentials from ...)``."""
        parts = [f"endpoint {self.endpoint_url}" if self.endpoint_url else "AWS endpoint",
                 f"region {self.region}" if self.region else "no region set"]
        if self.addressing_style:
            parts.append(f"{self.addressing_style}-style addressing")
        parts.append(self.credentials.describe())
        return f"{self.url} ({', '.join(parts)})"

    def to_json(self) -> dict[str, Any]:
        return {
            "found": True, "url": self.url, "adapter": self.adapter, "mount_point": self.mount_point,
            "bucket": self.bucket, "key_prefix": self.key_prefix, "endpoint_url": self.endpoint_url,
            "region": self.region, "addressing_style": self.addressing_style,
            "credentials": self.credentials.to_json(), "where": self.where or None,
        }

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments of ``ocigc.storage.s3client.make_client`` for this bucket (they hold the
        secret: never print them)."""
        creds = self.credentials
        options: dict[str, Any] = {"endpoint_url": self.endpoint_url, "region": self.region,
                                   "addressing_style": self.addressing_style, "anonymous": creds.source == ANONYMOUS}
        if creds.has_keys:
            options.update(access_key_id=creds.access_key_id, secret_access_key=creds.secret_access_key,
                           session_token=creds.session_token)
        elif creds.source == PROFILE:
            options["profile"] = creds.profile
        return options

    def client(self) -> Any:
        """A new boto3 S3 client that reaches the bucket as the mount does (needs the s3 extra)."""
        from ocigc.storage.s3client import make_client

        return make_client(**self.client_options())


def not_found_json(reason: str) -> dict[str, Any]:
    """The ``--json`` form of a reason the bucket could not be found."""
    return {"found": False, "reason": reason}


# ------------------------------------------------------------------------------------ adapters


def goofys_remote(view: DaemonView, opts: Options) -> Remote:
    """``goofys [flags] BUCKET[:PREFIX] MOUNTPOINT``: ``--endpoint``, ``--region``, ``--subdomain``
    (virtual-host addressing; path style otherwise), ``--profile``, else the AWS SDK's chain."""
    spec = view.source_argument(opts.positional)
    if not spec:
        raise Unfound(f"no bucket on {view.daemon.where}")
    scheme, sep, rest = spec.partition("://")
    if sep:
        if scheme != "s3":
            raise Unfound(f"goofys mounts {spec}, not an S3 bucket")
        spec = rest
    bucket, _, prefix = spec.partition(":")
    return Remote(bucket, prefix.strip("/"), normalize_endpoint(opts.get("endpoint")), opts.get("region") or None,
                  "virtual" if opts.has("subdomain") else "path", sdk_credentials(view, opts.get("profile")))


def mountpoint_remote(view: DaemonView, opts: Options) -> Remote:
    """``mount-s3 BUCKET MOUNTPOINT``: ``--prefix``, ``--endpoint-url`` (else ``AWS_ENDPOINT_URL``),
    ``--region`` (else ``AWS_REGION``), ``--force-path-style``, ``--no-sign-request``, ``--profile``, else
    the AWS SDK's chain."""
    bucket = view.source_argument(opts.positional)
    if not bucket:
        raise Unfound(f"no bucket on {view.daemon.where}")
    endpoint = opts.get("endpoint-url")
    region = opts.get("region")
    if not endpoint or not region:
        env = view.env(["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"])
        endpoint = endpoint or env.get("AWS_ENDPOINT_URL")
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    creds = BucketCredentials(ANONYMOUS, "--no-sign-request") if opts.has("no-sign-request") else \
        sdk_credentials(view, opts.get("profile"))
    return Remote(bucket, (opts.get("prefix") or "").strip("/"), normalize_endpoint(endpoint), region or None,
                  "path" if opts.has("force-path-style") else "virtual", creds)


_REMOTES: dict[str, Callable[[DaemonView, Options], Remote]] = {
    S3FS: s3fs_remote, RCLONE: rclone_remote, GOOFYS: goofys_remote, MOUNTPOINT: mountpoint_remote,
}


# --------------------------------------------------------------------------------------- finding


def _locate(remote: Remote, mount: MountEntry, real_path: str) -> tuple[str, str]:
    """(bucket, key prefix) of ``real_path``: the remote's prefix, then the mount's root (a bind
    mount of a sub-directory), then the path under the mount point."""
    rel = os.path.relpath(real_path, mount.mount_point)
    inside = normalize_rel(f"{mount.root}/{'' if rel == '.' else rel}")
    bucket = remote.bucket
    if bucket is None:
        bucket, _, inside = inside.partition("/")
        if not bucket:
            raise Unfound(f"the mount at {mount.mount_point} shows every bucket of its remote: give a path "
                          "inside one of them")
    return bucket, normalize_rel(f"{remote.prefix}/{inside}")


def not_fuse_reason(real_path: str, mount: MountEntry) -> str:
    return f"{real_path} is on {mount.fstype} ({mount.mount_point}), not on a FUSE mount of a bucket"


def bucket_behind_mount(system: System, mount: MountEntry, entries: Sequence[MountEntry], adapter: str,
                        daemon: Daemon | None, real_path: str) -> BucketBehind | str:
    """The bucket behind ``real_path`` on ``mount`` served by ``daemon`` (what ``ocigc doctor`` found),
    or the reason it cannot be told."""
    if daemon is None:
        return (f"found no process serving the {adapter} mount at {mount.mount_point} in /proc (it may run in "
                "another container or PID namespace, or /proc hides other users' processes); pass its command "
                "line with --daemon-args")
    if adapter == FUSE_OTHER:
        adapter = identify_adapter(mount, daemon.name)
    if adapter not in _REMOTES:
        return (f"{mount.mount_point} is a {mount.fstype} mount served by {daemon.name or 'an unknown process'}; "
                "ocigc finds the bucket only behind s3fs, rclone, goofys and mountpoint-s3")
    view = DaemonView(system, daemon, adapter, mount_points_of(mount, entries))
    try:
        remote = _REMOTES[adapter](view, parse_daemon_options(adapter, daemon.argv))
        bucket, key_prefix = _locate(remote, mount, real_path)
    except Unfound as e:
        return str(e)
    return BucketBehind(adapter, mount.mount_point, bucket, key_prefix, remote.endpoint_url, remote.region,
                        remote.addressing_style, remote.credentials, daemon.where)


def find_bucket_behind(path: str, system: System | None = None, *,
                       daemon_args: Sequence[str] | str | None = None) -> BucketBehind | str:
    """The bucket behind ``path`` on a FUSE mount of a bucket, or the one-line reason it cannot be told.

    ``daemon_args`` is the daemon's command line when it cannot be read from /proc (its environment
    is then unknown, and its files are read as this process's user).
    """
    system = system or System()
    if path.startswith("s3://"):
        return f"{path} is an s3:// location already"
    real = os.path.realpath(path)
    try:
        entries = parse_mountinfo(system.mountinfo())
    except OSError as e:
        return f"cannot read /proc/self/mountinfo: {e.strerror or e}"
    mount = find_mount(entries, real)
    if mount is None:
        return f"no mount in /proc/self/mountinfo holds {real}"
    adapter = identify_adapter(mount)
    if adapter not in ADAPTER_BINARIES and adapter != FUSE_OTHER:
        return not_fuse_reason(real, mount)
    if daemon_args is not None:
        argv = tuple(shlex.split(daemon_args)) if isinstance(daemon_args, str) else tuple(daemon_args)
        daemon: Daemon | None = Daemon(None, argv, None)
    else:
        daemon = find_daemon(system, mount_points_of(mount, entries), adapter)
    return bucket_behind_mount(system, mount, entries, adapter, daemon, real)
