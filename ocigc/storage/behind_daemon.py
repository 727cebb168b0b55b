"""What the process serving a FUSE mount of a bucket tells about that bucket: its command line, the
variables of its environment, the files it reads (password files, rclone.conf, AWS credentials),
and the credentials they amount to. Used by ``ocigc.storage.behind``; see docs/object-storage.md.

Nothing here contacts the bucket, and no secret is ever put in a message.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ocigc.doctor.mounts import Daemon, System

#: Where a mount's credentials come from (``BucketCredentials.source``).
KEYS = "keys"  # an access key and secret from a file or configuration the daemon reads
ENVIRONMENT = "environment"  # an access key and secret in the daemon's environment variables
PROFILE = "profile"  # a named profile of the AWS shared configuration
IAM_ROLE = "iam_role"  # the instance's (or ECS task's) IAM role
DEFAULT_CHAIN = "default chain"  # nothing explicit: the AWS SDK's default chain
ANONYMOUS = "anonymous"  # unsigned requests (a public bucket)

#: The AWS SDKs' variables for static keys (goofys, mount-s3, rclone with env_auth).
AWS_KEY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class Unfound(Exception):
    """The bucket behind a mount cannot be told; the message is the one-line reason."""


@dataclass(frozen=True)
class BucketCredentials:
    """Where the mount's daemon gets its credentials, and the keys when they could be read.

    The secret and the session token are never shown: not in ``repr``, ``describe`` or ``to_json``.
    """

    source: str
    #: Where they were found: a file, variables of the daemon's environment, an rclone remote.
    where: str = ""
    profile: str | None = None
    role: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    def describe(self) -> str:
        """``credentials from ...`` (no secret)."""
        if self.source == ANONYMOUS:
            return "no credentials (anonymous requests)"
        if self.source == PROFILE:
            where = f" ({self.where})" if self.where else ""
            unresolved = "" if self.has_keys else "; resolved in ocigc's own AWS configuration"
            return f"credentials from profile {self.profile}{where}{unresolved}"
        if self.source == IAM_ROLE:
            return f"credentials from the IAM role {self.role}" if self.role else \
                f"credentials from the instance's IAM role{f' ({self.where})' if self.where else ''}"
        if self.source == DEFAULT_CHAIN:
            return "credentials from the AWS default chain (ocigc's own environment, profile or instance role)"
        return f"credentials from {self.where}"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "where": self.where or None, "profile": self.profile, "role": self.role,
                "keys_found": self.has_keys}


@dataclass(frozen=True)
class Remote:
    """What an adapter's configuration says: the bucket (None: the mount shows every bucket, the first
    directory under it is one) and the key prefix its root stands for, and how to reach it."""

    bucket: str | None
    prefix: str
    endpoint_url: str | None
    region: str | None
    addressing_style: str | None
    credentials: BucketCredentials


def normalize_endpoint(url: str | None) -> str | None:
    """An endpoint with a scheme (``https://`` when none) and no trailing slash; None when empty."""
    url = (url or "").strip()
    if not url:
        return None
    if "://" not in url:
        url = "https://" + url
    return url.rstrip("/")


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "y", "t")


class DaemonView:
    """The daemon as ocigc can read it: its options, environment, home and files.

    For a command line given by hand (``--daemon-args``, no pid) the environment is unknown (empty)
    and files are read as ocigc's own user.
    """

    def __init__(self, system: System, daemon: Daemon, adapter: str, mount_points: Sequence[str]) -> None:
        self.system = system
        self.daemon = daemon
        self.adapter = adapter
        self.mount_points = [mp.rstrip("/") or "/" for mp in mount_points]

    @property
    def name(self) -> str:
        return self.daemon.name or self.adapter

    @property
    def in_env(self) -> str:
        return f"the environment of {self.name} (pid {self.daemon.pid})"

    def env(self, names: Iterable[str] = (), prefixes: Iterable[str] = ()) -> dict[str, str]:
        """The named variables of the daemon's environment; Unfound when it cannot be read."""
        if self.daemon.pid is None:
            return {}
        try:
            return self.system.process_environ(self.daemon.pid, names, prefixes)
        except OSError as e:
            raise Unfound(f"cannot read {self.in_env}: {e.strerror or e} (its credentials or settings may come "
                          "from there; run ocigc as the daemon's user or as root)") from None

    def home(self) -> str | None:
        """``$HOME`` of the daemon, else its user's home directory."""
        if self.daemon.pid is None:
            return os.path.expanduser("~")
        return self.env(["HOME"]).get("HOME") or self.system.user_home(self.daemon.pid)

    def user_home(self) -> str | None:
        """The home directory of the daemon's user (the passwd database, not ``$HOME``)."""
        if self.daemon.pid is None:
            return os.path.expanduser("~")
        return self.system.user_home(self.daemon.pid)

    def resolve(self, path: str) -> str:
        """A path as the daemon sees it: ``~`` is its home, a relative path is under its cwd."""
        if path.startswith("~/") or path == "~":
            path = (self.home() or "~") + path[1:]
        if os.path.isabs(path):
            return os.path.normpath(path)
        cwd = self.system.cwd(self.daemon.pid) if self.daemon.pid is not None else os.getcwd()
        return os.path.normpath(os.path.join(cwd or "/", path))

    def read(self, path: str) -> str | None:
        """A file the daemon reads; None when it does not exist, Unfound when it cannot be read."""
        try:
            return self.system.read_text(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise Unfound(f"cannot read {path}, which {self.name} reads: {e.strerror or e}") from None

    def source_arguments(self, positional: Sequence[str]) -> list[str]:
        """The arguments before the mount point (``s3fs BUCKET MOUNTPOINT``: ``[BUCKET]``); when no
        argument names the mount point (``--daemon-args``), all but the last."""
        for i, arg in enumerate(positional):
            if i > 0 and self._names_mount(arg):
                return list(positional[:i])
        return list(positional[:-1]) if len(positional) > 1 else list(positional)

    def source_argument(self, positional: Sequence[str]) -> str | None:
        """The argument naming what is mounted: the one just before the mount point."""
        before = self.source_arguments(positional)
        return before[-1] if before else None

    def _names_mount(self, arg: str) -> bool:
        if not arg:
            return False
        if os.path.isabs(arg):
            return os.path.normpath(arg) in self.mount_points
        cwd = self.system.cwd(self.daemon.pid) if self.daemon.pid is not None else None
        return cwd is not None and os.path.normpath(os.path.join(cwd, arg)) in self.mount_points


def read_ini(text: str, path: str) -> configparser.RawConfigParser:
    """An INI file (rclone.conf, AWS credentials); Unfound when it does not parse."""
    parser = configparser.RawConfigParser(strict=False, default_section="\0no default section")
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=path)
    except configparser.Error as e:
        raise Unfound(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    return parser


def profile_keys(view: DaemonView, profile: str, file: str | None = None) -> BucketCredentials | None:
    """The static keys of ``profile`` in the daemon's AWS credentials file (``AWS_SHARED_CREDENTIALS_FILE``
    or ``~/.aws/credentials``); None when the file or the profile has none."""
    if file is None:
        try:
            env = view.env(["AWS_SHARED_CREDENTIALS_FILE", "HOME"])
        except Unfound:  # an explicit profile: its file is the user's usual one then
            env = {}
        home = env.get("HOME") or view.user_home() or "~"
        file = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    file = view.resolve(file)
    text = view.read(file)
    if text is None:
        return None
    ini = read_ini(text, file)
    if not ini.has_section(profile):
        return None
    section = ini[profile]
    key, secret = section.get("aws_access_key_id", "").strip(), section.get("aws_secret_access_key", "").strip()
    if not key or not secret:
        return None
    return BucketCredentials(PROFILE, f"[{profile}] in {file}", profile=profile, access_key_id=key,
                             secret_access_key=secret, session_token=section.get("aws_session_token") or None)


def env_key_pair(view: DaemonView, env: Mapping[str, str], key_var: str, secret_var: str,
                 token_var: str) -> BucketCredentials | None:
    """Keys from two (three) variables of the daemon's environment; None when neither is set."""
    key, secret = env.get(key_var), env.get(secret_var)
    if not key and not secret:
        return None
    if not key or not secret:
        raise Unfound(f"{key_var if key else secret_var} is set in {view.in_env} without "
                      f"{secret_var if key else key_var}")
    return BucketCredentials(ENVIRONMENT, f"{key_var}/{secret_var} in {view.in_env}", access_key_id=key,
                             secret_access_key=secret, session_token=env.get(token_var) or None)


def sdk_credentials(view: DaemonView, profile: str | None) -> BucketCredentials:
    """The AWS SDK's choice (goofys, mount-s3, rclone's ``env_auth``): an explicit profile, then keys in
    the environment, then ``AWS_PROFILE``, then the ``default`` profile's keys, then the rest of the
    default chain (container or instance role)."""
    if profile:
        return profile_keys(view, profile) or BucketCredentials(PROFILE, "", profile=profile)
    env = view.env([*AWS_KEY_VARS, "AWS_PROFILE"])
    keys = env_key_pair(view, env, *AWS_KEY_VARS)
    if keys is not None:
        return keys
    if env.get("AWS_PROFILE"):
        name = env["AWS_PROFILE"]
        return profile_keys(view, name) or BucketCredentials(PROFILE, f"AWS_PROFILE in {view.in_env}", profile=name)
    return profile_keys(view, "default") or BucketCredentials(DEFAULT_CHAIN)
