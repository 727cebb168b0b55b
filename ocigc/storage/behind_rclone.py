"""The bucket behind an rclone mount: ``rclone mount REMOTE:BUCKET/PATH MOUNTPOINT``.

The remote's settings come, highest first, from a connection string (``REMOTE,endpoint=...:``), the
daemon's ``RCLONE_CONFIG_<REMOTE>_<KEY>`` variables, the remote's section of the config file
(``--config``, else ``RCLONE_CONFIG``, else the first existing of ``rclone.conf`` beside the binary,
``$XDG_CONFIG_HOME/rclone/rclone.conf``, ``~/.config/rclone/rclone.conf``, ``~/.rclone.conf``), then the
backend's own ``--s3-<key>`` flags and ``RCLONE_S3_<KEY>`` variables. An ``alias`` remote is followed;
only ``type = s3`` remotes name a bucket (docs/object-storage.md).
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping

from ocigc.doctor.options import Options
from ocigc.storage.behind_daemon import (
    ANONYMOUS,
    KEYS,
    BucketCredentials,
    DaemonView,
    Remote,
    Unfound,
    normalize_endpoint,
    read_ini,
    sdk_credentials,
    truthy,
)

#: rclone's sub-commands that serve a FUSE mount.
MOUNT_COMMANDS = frozenset({"mount", "cmount", "mount2"})
#: Providers rclone always addresses virtual-host style, whatever ``force_path_style`` says (rclone's
#: provider quirks); every other provider follows ``force_path_style`` (default true: path style).
VIRTUAL_HOST_PROVIDERS = frozenset({
    "AWS", "Alibaba", "HuaweiOBS", "DigitalOcean", "Dreamhost", "LyveCloud", "Netease", "RackCorp", "Scaleway",
    "Storj", "TencentCOS", "Wasabi",
})
_ENCRYPTED = "RCLONE_ENCRYPT_V0:"
_ALIAS_DEPTH = 8


def split_remote(spec: str) -> tuple[str, dict[str, str], str]:
    """``name,k=v:path`` -> (name, {k: v}, path); an on-the-fly backend keeps its colon (``:s3``).
    Values may be quoted (``endpoint="http://h:9000"``, a doubled quote is a quote)."""
    start = 1 if spec.startswith(":") else 0
    quote: str | None = None
    parts: list[str] = []
    cur: list[str] = []
    i = start
    while i < len(spec):
        ch = spec[i]
        if quote is not None:
            if ch == quote and spec[i + 1:i + 2] == quote:
                cur.append(ch)
                i += 1
            elif ch == quote:
                quote = None
            else:
                cur.append(ch)
        elif ch in "\"'" and cur and cur[-1] == "=":
            quote = ch
        elif ch == ",":
            parts.append("".join(cur))
            cur = []
        elif ch == ":":
            parts.append("".join(cur))
            name = (":" if start else "") + parts[0]
            params = {}
            for item in parts[1:]:
                key, _, value = item.partition("=")
                params[key.strip().replace("-", "_")] = value
            return name, params, spec[i + 1:]
        else:
            cur.append(ch)
        i += 1
    raise Unfound(f"rclone mounts {spec!r}, a local path, not a remote")


def env_name(remote: str, key: str) -> str:
    """``RCLONE_CONFIG_<REMOTE>_<KEY>`` as rclone spells it (upper case, ``-`` as ``_``)."""
    return "RCLONE_CONFIG_" + f"{remote}_{key}".upper().replace("-", "_")


class RcloneConfig:
    """The remotes' settings as the daemon sees them."""

    def __init__(self, view: DaemonView, opts: Options) -> None:
        self.view = view
        self.opts = opts
        self.env = view.env(["RCLONE_CONFIG", "HOME", "XDG_CONFIG_HOME", "AWS_PROFILE"],
                            prefixes=["RCLONE_CONFIG_", "RCLONE_S3_"])
        self.path = self._config_path()
        self.ini: configparser.RawConfigParser | None = None
        if self.path is not None:
            text = view.read(self.path)
            if text is not None:
                if _ENCRYPTED in text:
                    raise Unfound(f"the rclone config {self.path} is encrypted; ocigc cannot read it")
                self.ini = read_ini(text, self.path)

    def _config_path(self) -> str | None:
        given = self.opts.get("config") or self.env.get("RCLONE_CONFIG")
        if given:
            return None if given == "/notfound" else self.view.resolve(given)
        home = self.env.get("HOME") or self.view.home()
        candidates = []
        if self.view.daemon.exe:
            candidates.append(os.path.join(os.path.dirname(self.view.daemon.exe), "rclone.conf"))
        if self.env.get("XDG_CONFIG_HOME"):
            candidates.append(os.path.join(self.env["XDG_CONFIG_HOME"], "rclone", "rclone.conf"))
        if home:
            candidates += [os.path.join(home, ".config", "rclone", "rclone.conf"), os.path.join(home, ".rclone.conf")]
        for path in candidates:
            if self.view.read(path) is not None:
                return path
        return None

    def get(self, remote: str, params: Mapping[str, str], key: str) -> tuple[str | None, str]:
        """(value, where it came from) of ``key`` for ``remote`` (None: not set anywhere)."""
        if key in params:
            return params[key], f"the connection string {remote},...:"
        on_the_fly = remote.startswith(":")
        if not on_the_fly:
            var = env_name(remote, key)
            if var in self.env:
                return self.env[var], f"{var} in {self.view.in_env}"
            if self.ini is not None and self.ini.has_option(remote, key):
                return self.ini.get(remote, key).strip(), f"remote {remote} in {self.path}"
        flag = "s3-" + key.replace("_", "-")
        if self.opts.has(flag):
            return self.opts.get(flag) or "true", f"--{flag} on {self.view.daemon.where}"
        var = "RCLONE_S3_" + key.upper()
        if var in self.env:
            return self.env[var], f"{var} in {self.view.in_env}"
        return None, ""

    def remote_type(self, remote: str, params: Mapping[str, str]) -> str:
        if remote.startswith(":"):
            return remote[1:]
        if "type" in params:
            return params["type"]
        var = env_name(remote, "type")
        if var in self.env:
            return self.env[var]
        if self.ini is not None and self.ini.has_option(remote, "type"):
            return self.ini.get(remote, "type").strip()
        where = f"in neither {self.path} nor" if self.path else "in no config file nor in"
        raise Unfound(f"rclone remote {remote} is configured {where} the {env_name(remote, '*')} variables "
                      f"of {self.view.in_env}")


def _both(first: str, second: str) -> str:
    """``A in X`` and ``B in X`` -> ``A/B in X``."""
    if first == second:
        return first
    head1, sep1, tail1 = first.partition(" in ")
    head2, sep2, tail2 = second.partition(" in ")
    if sep1 and sep2 and tail1 == tail2:
        return f"{head1}/{head2} in {tail1}"
    return f"{first} and {second}"


def _credentials(cfg: RcloneConfig, remote: str, params: Mapping[str, str]) -> BucketCredentials:
    key, key_where = cfg.get(remote, params, "access_key_id")
    secret, secret_where = cfg.get(remote, params, "secret_access_key")
    if key and secret:
        token, _ = cfg.get(remote, params, "session_token")
        where = _both(key_where, secret_where)
        return BucketCredentials(KEYS, where, access_key_id=key, secret_access_key=secret, session_token=token or None)
    env_auth, _ = cfg.get(remote, params, "env_auth")
    if truthy(env_auth):
        profile, _ = cfg.get(remote, params, "profile")
        return sdk_credentials(cfg.view, profile)
    if key or secret:
        raise Unfound(f"rclone remote {remote} has {'access_key_id' if key else 'secret_access_key'} "
                      f"without {'secret_access_key' if key else 'access_key_id'}")
    return BucketCredentials(ANONYMOUS, f"remote {remote} has no keys and env_auth is off")


def rclone_remote(view: DaemonView, opts: Options) -> Remote:
    """The bucket (None when the mount shows every bucket), prefix, endpoint, region, addressing style
    and credentials of an rclone mount of an S3 remote."""
    positional = list(opts.positional)
    if positional and positional[0] in MOUNT_COMMANDS:
        positional = positional[1:]
    spec = view.source_argument(positional)
    if not spec:
        raise Unfound(f"no remote on {view.daemon.where}")
    cfg = RcloneConfig(view, opts)
    remote, params, path = split_remote(spec)
    kind = cfg.remote_type(remote, params)
    for _ in range(_ALIAS_DEPTH):
        if kind != "alias":
            break
        target, _where = cfg.get(remote, params, "remote")
        if not target:
            raise Unfound(f"rclone alias {remote} has no remote")
        remote, params, inner = split_remote(target)
        path = f"{inner.rstrip('/')}/{path}" if path else inner
        kind = cfg.remote_type(remote, params)
    if kind != "s3":
        raise Unfound(f"rclone remote {remote.lstrip(':')} is of type {kind}, not s3; ocigc finds only S3 buckets")
    bucket, _, prefix = path.strip("/").partition("/")
    provider, _ = cfg.get(remote, params, "provider")
    path_style, _ = cfg.get(remote, params, "force_path_style")
    region, _ = cfg.get(remote, params, "region")
    endpoint, _ = cfg.get(remote, params, "endpoint")
    virtual = (provider or "") in VIRTUAL_HOST_PROVIDERS or (path_style is not None and not truthy(path_style))
    return Remote(
        bucket=bucket or None,
        prefix=prefix.strip("/"),
        endpoint_url=normalize_endpoint(endpoint),
        region=region if region and region != "other-v2-signature" else None,
        addressing_style="virtual" if virtual else "path",
        credentials=_credentials(cfg, remote, params),
    )
