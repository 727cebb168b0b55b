"""The bucket behind an s3fs mount: ``s3fs BUCKET[:/PATH] MOUNTPOINT -o url=...,endpoint=...`` and
s3fs's credential sources, in s3fs's own order (docs/object-storage.md):

1. ``-o public_bucket=1`` (anonymous), ``-o ecs``, ``-o iam_role[=NAME]``;
2. ``-o passwd_file=FILE``;
3. ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or ``AWSACCESSKEYID``/``AWSSECRETACCESSKEY``) in the
   daemon's environment;
4. ``AWS_CREDENTIAL_FILE`` (a password file);
5. the profile (``-o profile=``, else ``default``) in ``~/.aws/credentials`` of the daemon's user;
6. ``$HOME/.passwd-s3fs``, then ``/etc/passwd-s3fs``.

A password file holds ``ACCESS:SECRET`` (any bucket), ``BUCKET:ACCESS:SECRET`` lines (the bucket's line
wins) or ``AWSAccessKeyId=``/``AWSSecretKey=`` lines.
"""

from __future__ import annotations

import os

from ocigc.doctor.options import Options
from ocigc.storage.behind_daemon import (
    ANONYMOUS,
    IAM_ROLE,
    KEYS,
    BucketCredentials,
    DaemonView,
    Remote,
    Unfound,
    env_key_pair,
    normalize_endpoint,
    profile_keys,
    truthy,
)

#: s3fs's default ``url``: AWS.
_AWS_URLS = frozenset({"https://s3.amazonaws.com", "http://s3.amazonaws.com"})
_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWSACCESSKEYID",
             "AWSSECRETACCESSKEY", "AWSSESSIONTOKEN", "AWS_CREDENTIAL_FILE", "HOME")


def passwd_keys(text: str, bucket: str) -> tuple[str, str, str] | None:
    """(access key, secret, which line) from a password file's text, as s3fs picks them; None when it
    has none for ``bucket``."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    pairs: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() and key.strip() not in pairs:
            pairs[key.strip()] = value.strip()
    if pairs.get("AWSAccessKeyId") and pairs.get("AWSSecretKey"):
        return pairs["AWSAccessKeyId"], pairs["AWSSecretKey"], "the AWSAccessKeyId/AWSSecretKey lines"
    by_bucket: dict[str, tuple[str, str]] = {}
    for line in lines:
        first, last = line.find(":"), line.rfind(":")
        if first < 0:
            continue
        if first != last:
            name, access, secret = line[:first].strip(), line[first + 1:last].strip(), line[last + 1:].strip()
        else:
            name, access, secret = "", line[:first].strip(), line[last + 1:].strip()
        by_bucket.setdefault(name, (access, secret))
    if bucket in by_bucket:
        access, secret = by_bucket[bucket]
        which = f"the line for bucket {bucket}"
    elif "" in by_bucket:
        access, secret = by_bucket[""]
        which = "the ACCESS:SECRET line"
    else:
        return None
    return (access, secret, which) if access and secret else None


def _passwd_file(view: DaemonView, path: str, bucket: str, label: str) -> BucketCredentials | None:
    text = view.read(path)
    if text is None:
        return None
    found = passwd_keys(text, bucket)
    if found is None:
        return None
    access, secret, which = found
    return BucketCredentials(KEYS, f"{label} {path} ({which})", access_key_id=access, secret_access_key=secret)


def s3fs_credentials(view: DaemonView, opts: Options, bucket: str) -> BucketCredentials:
    """Where s3fs gets its keys (see the module docstring for the order)."""
    if truthy(opts.get("public_bucket")):
        return BucketCredentials(ANONYMOUS, "-o public_bucket=1")
    if opts.has("credlib"):
        raise Unfound(f"s3fs takes its credentials from the library credlib={opts.get('credlib')}, "
                      "which ocigc cannot call")
    if opts.has("ibm_iam_auth"):
        raise Unfound("s3fs uses IBM IAM authentication (-o ibm_iam_auth), which ocigc does not support")
    if opts.has("ecs"):
        return BucketCredentials(IAM_ROLE, "the ECS task role, -o ecs")
    if opts.has("iam_role"):
        role = opts.get("iam_role")
        return BucketCredentials(IAM_ROLE, "-o iam_role", role=None if role in (None, "", "auto") else role)
    passwd = opts.get("passwd_file")
    if passwd:
        path = view.resolve(passwd)
        found = _passwd_file(view, path, bucket, "passwd_file")
        if found is None:
            raise Unfound(f"passwd_file {path} of s3fs is missing or has no keys for bucket {bucket}")
        return found
    env = view.env(_ENV_VARS)
    new_names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    old_names = ("AWSACCESSKEYID", "AWSSECRETACCESSKEY", "AWSSESSIONTOKEN")
    # s3fs takes each variable from AWS_* when set, else from the old name
    names = [new if new in env or old not in env else old for new, old in zip(new_names, old_names, strict=True)]
    from_env = env_key_pair(view, env, *names)
    if from_env is not None:
        return from_env
    if env.get("AWS_CREDENTIAL_FILE"):
        path = view.resolve(env["AWS_CREDENTIAL_FILE"])
        found = _passwd_file(view, path, bucket, "AWS_CREDENTIAL_FILE")
        if found is None:
            raise Unfound(f"AWS_CREDENTIAL_FILE {path} of s3fs is missing or has no keys for bucket {bucket}")
        return found
    profile = opts.get("profile") or "default"
    aws_file = os.path.join(view.user_home() or "~", ".aws", "credentials")
    in_profile = profile_keys(view, profile, aws_file)
    if in_profile is not None:
        return in_profile
    if profile != "default":
        raise Unfound(f"profile {profile} of s3fs is not in {aws_file}")
    defaults = [os.path.join(env["HOME"], ".passwd-s3fs")] if env.get("HOME") else []
    for path in [*defaults, "/etc/passwd-s3fs"]:
        found = _passwd_file(view, path, bucket, "the password file")
        if found is not None:
            return found
    raise Unfound(f"found no keys for bucket {bucket} where s3fs looks (passwd_file, the variables of "
                  f"{view.in_env}, {aws_file}, $HOME/.passwd-s3fs, /etc/passwd-s3fs)")


def s3fs_remote(view: DaemonView, opts: Options) -> Remote:
    """The bucket, prefix, endpoint, region, addressing style and credentials of an s3fs mount."""
    spec = opts.get("bucket")
    if not spec:
        before = view.source_arguments(opts.positional)
        if len(before) >= 2 and before[-1].startswith("/") and not before[-2].startswith("/"):
            # s3fs cuts its own BUCKET:/PATH argument in two (the colon becomes a NUL in its argv)
            spec = f"{before[-2]}:{before[-1]}"
        elif before:
            spec = before[-1]
        else:
            raise Unfound(f"no bucket on {view.daemon.where}")
    spec = spec.removeprefix("s3fs#")
    bucket, _, path = spec.partition(":")
    if not bucket:
        raise Unfound(f"no bucket in {spec!r} on {view.daemon.where}")
    url = normalize_endpoint(opts.get("url"))
    return Remote(
        bucket=bucket,
        prefix=path.strip("/"),
        endpoint_url=None if url is None or url in _AWS_URLS else url,
        region=opts.get("endpoint") or None,
        addressing_style="path" if opts.has("use_path_request_style") else "virtual",
        credentials=s3fs_credentials(view, opts, bucket),
    )
