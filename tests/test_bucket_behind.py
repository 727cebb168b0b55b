"""``find_bucket_behind``: the s3:// bucket, endpoint, region, addressing style and credentials behind
a FUSE mount, from the serving process's command line, environment and files.

Unit tests run over a described /proc (``FakeProc``): command lines of s3fs, rclone, goofys and
mount-s3, password files in both formats, rclone config files and ``RCLONE_CONFIG_*`` variables.
The s3fs and rclone command lines follow those the harness runs (tests/harness/mounts.py); goofys
and mount-s3 do not run here, their command lines follow their documented usage. The real tests
take the harness's s3fs and rclone mounts of moto and SeaweedFS and read, with a boto3 client made
from what was found, the object a file on the mount is.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ocigc.doctor.mounts import System
from ocigc.doctor.report import diagnose, iter_lines
from ocigc.storage.behind import BucketBehind, find_bucket_behind
from ocigc.storage.behind_daemon import ANONYMOUS, DEFAULT_CHAIN, ENVIRONMENT, IAM_ROLE, KEYS, PROFILE
from ocigc.storage.behind_rclone import split_remote
from ocigc.storage.behind_s3fs import passwd_keys
from tests.harness.mounts import RcloneMount, S3fsMount
from tests.harness.objectstores import S3Server
from tests.harness.tools import run_ocigc

MP = "/mnt/bucket"
PID = 4242
ACCESS, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ROOT_LINE = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw"
FUSE_LINES = {
    "s3fs": "42 22 0:39 {root} {mp} rw,nosuid,nodev,relatime - fuse.s3fs s3fs rw,user_id=0,group_id=0",
    "rclone": "44 22 0:41 {root} {mp} rw,nosuid,nodev,relatime - fuse.rclone remote:b rw,user_id=0,group_id=0",
    "goofys": "50 22 0:45 {root} {mp} rw,nosuid,nodev,relatime - fuse.goofys mybucket rw,user_id=0,group_id=0",
    "mountpoint-s3": "52 22 0:47 {root} {mp} rw,nosuid,nodev,noatime - fuse mountpoint-s3 rw,user_id=0,group_id=0",
    "sshfs": "61 22 0:51 {root} {mp} rw,nosuid,nodev,relatime - fuse.sshfs me@host:/data rw,user_id=0,group_id=0",
}


class FakeProc(System):
    """A /proc the test describes: one mount, one daemon, its environment and the files it reads."""

    def __init__(self, kind: str, argv: Iterable[str] | None, *, env: Mapping[str, str] | None = None,
                 files: Mapping[str, str] | None = None, unreadable: Iterable[str] = (), env_readable: bool = True,
                 cwd: str = "/", user_home: str = "/root", root: str = "/") -> None:
        super().__init__("/nonexistent-proc")
        self.text = ROOT_LINE + "\n" + FUSE_LINES[kind].format(mp=MP, root=root) + "\n"
        self.argv = tuple(argv) if argv is not None else None
        self.env = dict(env or {})
        self.files = dict(files or {})
        self.unreadable = set(unreadable)
        self.env_readable = env_readable
        self._cwd = cwd
        self._home = user_home

    def mountinfo(self) -> str:
        return self.text

    def pids(self) -> list[int]:
        return [PID] if self.argv is not None else []

    def cmdline(self, pid: int) -> tuple[str, ...]:
        return self.argv or ()

    def cwd(self, pid: int) -> str | None:
        return self._cwd

    def exe(self, pid: int) -> str | None:
        return self.argv[0] if self.argv else None

    def holds_fuse(self, pid: int) -> bool:
        return True

    def start_time(self, pid: int) -> int:
        return 0

    def self_and_ancestors(self) -> set[int]:
        return {1}

    def process_environ(self, pid: int, names: Iterable[str], prefixes: Iterable[str] = ()) -> dict[str, str]:
        if not self.env_readable:
            raise PermissionError(13, "Permission denied")
        wanted, starts = set(names), tuple(prefixes)
        return {k: v for k, v in self.env.items() if k in wanted or (starts and k.startswith(starts))}

    def user_home(self, pid: int) -> str | None:
        return self._home

    def read_text(self, path: str, limit: int = 1 << 20) -> str:
        if path in self.unreadable:
            raise PermissionError(13, "Permission denied", path)
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self.files[path]

    def version(self, executable: str) -> str | None:
        return None

    def which(self, name: str) -> str | None:
        return None


def find(kind: str, argv: Iterable[str] | None, sub: str = "repo/layout", **kw: Any) -> BucketBehind | str:
    return find_bucket_behind(f"{MP}/{sub}" if sub else MP, FakeProc(kind, argv, **kw))


def found(kind: str, argv: Iterable[str] | None, sub: str = "repo/layout", **kw: Any) -> BucketBehind:
    behind = find(kind, argv, sub, **kw)
    assert isinstance(behind, BucketBehind), behind
    return behind


def reason(kind: str, argv: Iterable[str] | None, sub: str = "repo/layout", **kw: Any) -> str:
    behind = find(kind, argv, sub, **kw)
    assert isinstance(behind, str), behind
    assert "\n" not in behind and SECRET not in behind
    return behind


def s3fs_argv(bucket: str = "ocigc-b", options: str = "") -> tuple[str, ...]:
    """The harness's s3fs command line (tests/harness/mounts.py), with more ``-o`` options."""
    base = "passwd_file=/w/s3fs.passwd,url=http://127.0.0.1:38919,use_path_request_style,endpoint=us-east-1"
    return ("/usr/bin/s3fs", bucket, MP, "-f", "-o", ",".join(o for o in (base, options) if o))


PASSWD = {"/w/s3fs.passwd": f"{ACCESS}:{SECRET}\n"}


# --------------------------------------------------------------------------------------- s3fs


def test_s3fs_harness_command_line() -> None:
    behind = found("s3fs", s3fs_argv(), files=PASSWD)
    assert (behind.adapter, behind.mount_point, behind.bucket, behind.key_prefix) == (
        "s3fs", MP, "ocigc-b", "repo/layout")
    assert (behind.endpoint_url, behind.region, behind.addressing_style) == ("http://127.0.0.1:38919", "us-east-1",
                                                                             "path")
    creds = behind.credentials
    assert creds.source == KEYS and (creds.access_key_id, creds.secret_access_key) == (ACCESS, SECRET)
    assert creds.where == "passwd_file /w/s3fs.passwd (the ACCESS:SECRET line)"
    assert behind.url == "s3://ocigc-b/repo/layout" and behind.s3_url("index.json") == "s3://ocigc-b/repo/layout/index.json"
    assert behind.where == f"the command line of s3fs (pid {PID})"
    shown = behind.describe() + repr(behind) + json.dumps(behind.to_json())
    assert SECRET not in shown and ACCESS not in shown
    assert behind.describe() == ("s3://ocigc-b/repo/layout (endpoint http://127.0.0.1:38919, region us-east-1, "
                                 "path-style addressing, credentials from passwd_file /w/s3fs.passwd "
                                 "(the ACCESS:SECRET line))")
    assert found("s3fs", s3fs_argv(), sub="", files=PASSWD).url == "s3://ocigc-b/"


def test_s3fs_passwd_file_per_bucket_lines() -> None:
    text = f"# comment\nother:AKOTHER:othersecret\n\nocigc-b:{ACCESS}:{SECRET}\nAKDEFAULT:defaultsecret\n"
    creds = found("s3fs", s3fs_argv(), files={"/w/s3fs.passwd": text}).credentials
    assert (creds.access_key_id, creds.secret_access_key) == (ACCESS, SECRET)
    assert "the line for bucket ocigc-b" in creds.where
    creds = found("s3fs", s3fs_argv("third"), files={"/w/s3fs.passwd": text}).credentials
    assert creds.access_key_id == "AKDEFAULT" and "ACCESS:SECRET line" in creds.where
    why = reason("s3fs", s3fs_argv("third"), files={"/w/s3fs.passwd": "other:AK:SK\n"})
    assert why == "passwd_file /w/s3fs.passwd of s3fs is missing or has no keys for bucket third"
    assert passwd_keys(f"AWSAccessKeyId={ACCESS}\nAWSSecretKey={SECRET}\n", "b") == (
        ACCESS, SECRET, "the AWSAccessKeyId/AWSSecretKey lines")


def test_s3fs_bucket_forms_and_aws_defaults() -> None:
    bare = ("s3fs", "ocigc-b:/pre/fix/", MP, "-o", "passwd_file=/w/s3fs.passwd")
    behind = found("s3fs", bare, files=PASSWD)
    assert (behind.bucket, behind.key_prefix) == ("ocigc-b", "pre/fix/repo/layout")
    assert (behind.endpoint_url, behind.region, behind.addressing_style) == (None, None, "virtual")
    assert "AWS endpoint, no region set, virtual-style" in behind.describe()
    # how /proc shows it: s3fs cuts its BUCKET:/PATH argument at the colon
    cut = ("s3fs", "ocigc-b", "/pre/fix", MP, "-o", "passwd_file=/w/s3fs.passwd")
    assert found("s3fs", cut, files=PASSWD).url == "s3://ocigc-b/pre/fix/repo/layout"
    fstab = ("s3fs", "s3fs#ocigc-b", MP, "-o", "rw,passwd_file=/w/s3fs.passwd,url=https://s3.amazonaws.com/")
    assert found("s3fs", fstab, files=PASSWD).url == "s3://ocigc-b/repo/layout"
    option = ("s3fs", MP, "-o", "bucket=ocigc-b:/p,passwd_file=/w/s3fs.passwd,url=minio.local:9000")
    behind = found("s3fs", option, files=PASSWD)
    assert (behind.url, behind.endpoint_url) == ("s3://ocigc-b/p/repo/layout", "https://minio.local:9000")


def test_s3fs_relative_passwd_file_is_under_the_daemon_cwd() -> None:
    argv = ("s3fs", "ocigc-b", MP, "-o", "passwd_file=conf/pw")
    creds = found("s3fs", argv, cwd="/srv", files={"/srv/conf/pw": f"{ACCESS}:{SECRET}\n"}).credentials
    assert creds.where.startswith("passwd_file /srv/conf/pw")


def test_s3fs_credentials_from_the_environment_and_default_files() -> None:
    argv = ("s3fs", "ocigc-b", MP)
    env = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "HOME": "/home/u"}
    creds = found("s3fs", argv, env=env).credentials
    assert creds.source == ENVIRONMENT and creds.secret_access_key == SECRET
    assert creds.where == f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment of s3fs (pid {PID})"
    creds = found("s3fs", argv, env={"AWSACCESSKEYID": ACCESS, "AWSSECRETACCESSKEY": SECRET}).credentials
    assert creds.source == ENVIRONMENT and creds.where.startswith("AWSACCESSKEYID/AWSSECRETACCESSKEY")
    assert "without AWS_SECRET_ACCESS_KEY" in reason("s3fs", argv, env={"AWS_ACCESS_KEY_ID": ACCESS})
    creds = found("s3fs", argv, env={"AWS_CREDENTIAL_FILE": "/etc/s3.cred"},
                  files={"/etc/s3.cred": f"{ACCESS}:{SECRET}"}).credentials
    assert creds.where.startswith("AWS_CREDENTIAL_FILE /etc/s3.cred")
    home = {"/home/u/.passwd-s3fs": f"ocigc-b:{ACCESS}:{SECRET}\n", "/etc/passwd-s3fs": "AKETC:etcsecret\n"}
    creds = found("s3fs", argv, env={"HOME": "/home/u"}, files=home).credentials
    assert creds.source == KEYS and creds.where.startswith("the password file /home/u/.passwd-s3fs")
    creds = found("s3fs", argv, env={"HOME": "/home/nobody"}, files=home).credentials
    assert creds.access_key_id == "AKETC" and creds.where.startswith("the password file /etc/passwd-s3fs")
    aws = {"/root/.aws/credentials": f"[default]\naws_access_key_id = {ACCESS}\naws_secret_access_key = {SECRET}\n"}
    creds = found("s3fs", argv, env={"HOME": "/home/u"}, files={**home, **aws}).credentials
    assert creds.source == PROFILE and creds.profile == "default" and creds.has_keys
    assert "found no keys for bucket ocigc-b where s3fs looks" in reason("s3fs", argv, env={"HOME": "/h"})


def test_s3fs_profile_iam_role_public_and_unsupported() -> None:
    aws = {"/root/.aws/credentials": f"[prod]\naws_access_key_id={ACCESS}\naws_secret_access_key={SECRET}\n"}
    creds = found("s3fs", ("s3fs", "b", MP, "-o", "profile=prod"), files=aws).credentials
    assert (creds.source, creds.profile, creds.access_key_id) == (PROFILE, "prod", ACCESS)
    assert creds.describe() == "credentials from profile prod ([prod] in /root/.aws/credentials)"
    assert reason("s3fs", ("s3fs", "b", MP, "-o", "profile=dev"), files=aws) == \
        "profile dev of s3fs is not in /root/.aws/credentials"
    creds = found("s3fs", ("s3fs", "b", MP, "-o", "iam_role=web")).credentials
    assert (creds.source, creds.role) == (IAM_ROLE, "web")
    assert creds.describe() == "credentials from the IAM role web"
    creds = found("s3fs", ("s3fs", "b", MP, "-o", "iam_role")).credentials
    assert (creds.source, creds.role) == (IAM_ROLE, None)
    assert found("s3fs", ("s3fs", "b", MP, "-o", "public_bucket=1")).credentials.source == ANONYMOUS
    assert "credlib=libx.so" in reason("s3fs", ("s3fs", "b", MP, "-o", "credlib=libx.so"))


def test_s3fs_unreadable_environment_or_password_file_is_a_reason() -> None:
    why = reason("s3fs", ("s3fs", "ocigc-b", MP), env_readable=False)
    assert why.startswith(f"cannot read the environment of s3fs (pid {PID}): Permission denied")
    # passwd_file comes before the environment: an unreadable environment does not matter then
    assert found("s3fs", s3fs_argv(), files=PASSWD, env_readable=False).credentials.source == KEYS
    why = reason("s3fs", s3fs_argv(), unreadable=["/w/s3fs.passwd"])
    assert why == "cannot read /w/s3fs.passwd, which s3fs reads: Permission denied"


# -------------------------------------------------------------------------------------- rclone

RCLONE_ENV = {
    "RCLONE_CONFIG_MOTO_TYPE": "s3", "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
    "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": ACCESS, "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": SECRET,
    "RCLONE_CONFIG_MOTO_ENDPOINT": "http://127.0.0.1:38919", "RCLONE_CONFIG_MOTO_REGION": "us-east-1",
    "RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE": "true",
}


def rclone_argv(remote: str = "moto:ocigc-b", *extra: str) -> tuple[str, ...]:
    """The harness's rclone command line (tests/harness/mounts.py)."""
    return ("/usr/bin/rclone", "mount", remote, MP, "--config", "/w/rclone.conf", "--cache-dir", "/w/cache",
            "--vfs-cache-mode", "off", "--dir-cache-time", "0s", *extra, "--log-level", "INFO")


def test_rclone_remote_from_the_environment() -> None:
    behind = found("rclone", rclone_argv(), env=RCLONE_ENV, files={"/w/rclone.conf": ""})
    assert (behind.adapter, behind.bucket, behind.key_prefix) == ("rclone", "ocigc-b", "repo/layout")
    assert (behind.endpoint_url, behind.region, behind.addressing_style) == ("http://127.0.0.1:38919", "us-east-1",
                                                                             "path")
    creds = behind.credentials
    assert creds.source == KEYS and (creds.access_key_id, creds.secret_access_key) == (ACCESS, SECRET)
    assert creds.where == ("RCLONE_CONFIG_MOTO_ACCESS_KEY_ID/RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY in the "
                           f"environment of rclone (pid {PID})")
    env = {**RCLONE_ENV, "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": ""}
    conf = {"/w/rclone.conf": f"[moto]\nsecret_access_key = {SECRET}\n"}
    assert found("rclone", rclone_argv(), env={k: v for k, v in env.items() if v}, files=conf).credentials.where == (
        f"RCLONE_CONFIG_MOTO_ACCESS_KEY_ID in the environment of rclone (pid {PID}) and remote moto in /w/rclone.conf")
    assert found("rclone", rclone_argv("moto:ocigc-b/a/b/"), env=RCLONE_ENV).key_prefix == "a/b/repo/layout"


CONF = f"""[store]
type = s3
provider = Minio
access_key_id = {ACCESS}
secret_access_key = {SECRET}
endpoint = http://minio:9000
region = eu-west-1

[aws]
type = s3
provider = AWS
env_auth = true
region = eu-central-1

[gdrive]
type = drive
scope = drive

[short]
type = alias
remote = store:ocigc-b/base
"""


def test_rclone_remote_from_a_config_file() -> None:
    behind = found("rclone", rclone_argv("store:ocigc-b/pre"), files={"/w/rclone.conf": CONF})
    assert (behind.url, behind.endpoint_url, behind.region, behind.addressing_style) == (
        "s3://ocigc-b/pre/repo/layout", "http://minio:9000", "eu-west-1", "path")
    assert behind.credentials.where == "remote store in /w/rclone.conf"
    # the environment overrides the file
    env = {"RCLONE_CONFIG_STORE_ENDPOINT": "http://other:9000"}
    assert found("rclone", rclone_argv("store:ocigc-b"), env=env, files={"/w/rclone.conf": CONF}).endpoint_url == \
        "http://other:9000"
    # the default config file of the daemon's user, and AWS: virtual-host style, the SDK's chain
    argv = ("rclone", "mount", "aws:bucket-1/x", MP)
    env = {"HOME": "/home/u", "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    behind = found("rclone", argv, env=env, files={"/home/u/.config/rclone/rclone.conf": CONF})
    assert (behind.bucket, behind.endpoint_url, behind.region, behind.addressing_style) == (
        "bucket-1", None, "eu-central-1", "virtual")
    assert behind.credentials.source == ENVIRONMENT
    assert found("rclone", argv, env={"HOME": "/home/u"},
                 files={"/home/u/.config/rclone/rclone.conf": CONF}).credentials.source == DEFAULT_CHAIN
    # an alias is followed
    assert found("rclone", rclone_argv("short:sub"), files={"/w/rclone.conf": CONF}).url == \
        "s3://ocigc-b/base/sub/repo/layout"


def test_rclone_reasons() -> None:
    files = {"/w/rclone.conf": CONF}
    assert reason("rclone", rclone_argv("gdrive:folder"), files=files) == \
        "rclone remote gdrive is of type drive, not s3; ocigc finds only S3 buckets"
    assert reason("rclone", rclone_argv("nowhere:b"), files=files) == (
        "rclone remote nowhere is configured in neither /w/rclone.conf nor the RCLONE_CONFIG_NOWHERE_* variables "
        f"of the environment of rclone (pid {PID})")
    assert "a local path" in reason("rclone", rclone_argv("/srv/data"), files=files)
    encrypted = {"/w/rclone.conf": "# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabc\n"}
    assert reason("rclone", rclone_argv(), files=encrypted) == \
        "the rclone config /w/rclone.conf is encrypted; ocigc cannot read it"
    assert reason("rclone", rclone_argv(), env_readable=False).startswith("cannot read the environment of rclone")


def test_rclone_whole_remote_mounted_first_directory_is_the_bucket() -> None:
    behind = found("rclone", rclone_argv("store:"), sub="ocigc-b/repo", files={"/w/rclone.conf": CONF})
    assert (behind.bucket, behind.key_prefix) == ("ocigc-b", "repo")
    why = reason("rclone", rclone_argv("store:"), sub="", files={"/w/rclone.conf": CONF})
    assert why == f"the mount at {MP} shows every bucket of its remote: give a path inside one of them"


def test_rclone_connection_strings_and_backend_flags() -> None:
    assert split_remote('moto,endpoint="http://h:9000",region=r:b/p') == (
        "moto", {"endpoint": "http://h:9000", "region": "r"}, "b/p")
    assert split_remote(":s3,provider=Minio:b") == (":s3", {"provider": "Minio"}, "b")
    spec = f':s3,provider=Other,endpoint="http://h:9000",access_key_id={ACCESS},secret_access_key={SECRET}:b/p'
    behind = found("rclone", ("rclone", "mount", spec, MP))
    assert (behind.url, behind.endpoint_url, behind.credentials.source) == (
        "s3://b/p/repo/layout", "http://h:9000", KEYS)
    argv = ("rclone", "mount", "--s3-endpoint", "http://flag:9000", "--s3-force-path-style=false", "store:b", MP)
    behind = found("rclone", argv, env={"HOME": "/h"}, files={"/h/.config/rclone/rclone.conf": CONF})
    assert behind.endpoint_url == "http://minio:9000"  # the remote's own setting beats the backend flag
    argv = ("rclone", "mount", "--s3-endpoint", "http://flag:9000", "--s3-force-path-style=false", ":s3:b", MP)
    behind = found("rclone", argv)
    assert (behind.endpoint_url, behind.addressing_style, behind.credentials.source) == (
        "http://flag:9000", "virtual", ANONYMOUS)


# ---------------------------------------------------------------------------- goofys, mount-s3


def test_goofys() -> None:
    argv = ("goofys", "-f", "--endpoint", "http://127.0.0.1:9000", "--region", "us-east-2", "--stat-cache-ttl", "0",
            "ocigc-b:pre/fix", MP)
    env = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    behind = found("goofys", argv, env=env)
    assert (behind.adapter, behind.url, behind.endpoint_url, behind.region, behind.addressing_style) == (
        "goofys", "s3://ocigc-b/pre/fix/repo/layout", "http://127.0.0.1:9000", "us-east-2", "path")
    assert behind.credentials.source == ENVIRONMENT and behind.credentials.access_key_id == ACCESS
    profile = found("goofys", ("goofys", "--profile", "prod", "--subdomain", "b", MP), env=env)
    assert (profile.credentials.source, profile.credentials.profile, profile.credentials.has_keys) == (
        PROFILE, "prod", False)
    assert profile.addressing_style == "virtual" and profile.endpoint_url is None
    assert profile.credentials.describe().endswith("resolved in ocigc's own AWS configuration")
    assert found("goofys", ("goofys", "b", MP)).credentials.source == DEFAULT_CHAIN
    aws = {"/root/.aws/credentials": f"[prod]\naws_access_key_id={ACCESS}\naws_secret_access_key={SECRET}\n"}
    creds = found("goofys", ("goofys", "--profile", "prod", "b", MP), files=aws, env_readable=False).credentials
    assert (creds.source, creds.access_key_id) == (PROFILE, ACCESS)
    assert reason("goofys", ("goofys", "b", MP), env_readable=False).startswith("cannot read the environment")
    assert reason("goofys", ("goofys", "gs://b", MP)) == "goofys mounts gs://b, not an S3 bucket"


def test_mountpoint_s3() -> None:
    argv = ("mount-s3", "ocigc-b", MP, "--prefix", "pre/", "--endpoint-url", "http://127.0.0.1:9000", "--region",
            "us-east-1", "--force-path-style", "--allow-delete", "--profile", "prod")
    aws = {"/home/u/.aws/credentials": f"[prod]\naws_access_key_id={ACCESS}\naws_secret_access_key={SECRET}\n"}
    behind = found("mountpoint-s3", argv, env={"HOME": "/home/u"}, files=aws)
    assert (behind.adapter, behind.url, behind.endpoint_url, behind.addressing_style) == (
        "mountpoint-s3", "s3://ocigc-b/pre/repo/layout", "http://127.0.0.1:9000", "path")
    assert behind.credentials.source == PROFILE and behind.credentials.access_key_id == ACCESS
    env = {"AWS_ENDPOINT_URL": "http://env:9000", "AWS_REGION": "eu-west-3"}
    behind = found("mountpoint-s3", ("mount-s3", "--no-sign-request", "b", MP), env=env)
    assert (behind.endpoint_url, behind.region, behind.addressing_style, behind.credentials.source) == (
        "http://env:9000", "eu-west-3", "virtual", ANONYMOUS)


# -------------------------------------------------------------------------------------- general


def test_reasons_outside_a_bucket_mount(tmp_path: Path) -> None:
    assert find_bucket_behind("s3://b/p") == "s3://b/p is an s3:// location already"
    sshfs = reason("sshfs", ("sshfs", "me@host:/data", MP))
    assert sshfs == (f"{MP} is a fuse.sshfs mount served by sshfs; ocigc finds the bucket only behind s3fs, "
                     "rclone, goofys and mountpoint-s3")
    nobody = reason("s3fs", None)
    assert nobody.startswith(f"found no process serving the s3fs mount at {MP} in /proc")
    assert "--daemon-args" in nobody
    local = FakeProc("s3fs", None)
    local.text = ROOT_LINE + "\n"
    assert find_bucket_behind("/srv/x", local) == "/srv/x is on ext4 (/), not on a FUSE mount of a bucket"


def test_daemon_args_and_bind_mounts() -> None:
    system = FakeProc("s3fs", None, files=PASSWD)
    behind = find_bucket_behind(f"{MP}/x", system, daemon_args="s3fs ocigc-b /elsewhere -o passwd_file=/w/s3fs.passwd")
    assert isinstance(behind, BucketBehind) and behind.url == "s3://ocigc-b/x"
    assert behind.where == "--daemon-args" and behind.endpoint_url is None
    # a bind mount of a sub-directory of the bucket's mount: mountinfo's root is that sub-directory
    assert found("s3fs", s3fs_argv(), files=PASSWD, root="/shared/team").key_prefix == "shared/team/repo/layout"


def test_doctor_shows_the_bucket_and_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "isdir", lambda p: True)
    report = diagnose(f"{MP}/repo", self_test=False, system=FakeProc("s3fs", s3fs_argv(), files=PASSWD))
    text = "\n".join(iter_lines(report))
    assert ("  bucket    behind the mount: s3://ocigc-b/repo (endpoint http://127.0.0.1:38919, region us-east-1, "
            "path-style addressing, credentials from passwd_file /w/s3fs.passwd (the ACCESS:SECRET line))") in text
    data = report.to_json()["bucket_behind"]
    assert data["url"] == "s3://ocigc-b/repo" and data["credentials"]["keys_found"] is True
    assert SECRET not in text + json.dumps(report.to_json()) and ACCESS not in text + json.dumps(report.to_json())
    report = diagnose(f"{MP}/repo", self_test=False, system=FakeProc("s3fs", None))
    assert report.to_json()["bucket_behind"]["found"] is False
    assert "  bucket    behind the mount: not found: found no process serving" in "\n".join(iter_lines(report))
    local = FakeProc("s3fs", None)
    local.text = ROOT_LINE + "\n"
    report = diagnose("/srv", self_test=False, system=local)
    assert "bucket" not in "\n".join(iter_lines(report))
    assert report.to_json()["bucket_behind"]["reason"].endswith("not on a FUSE mount of a bucket")


# ---------------------------------------------------------------------------------- real mounts


def _read_through(behind: BucketBehind, key: str) -> bytes:
    body: bytes = behind.client().get_object(Bucket=behind.bucket, Key=key)["Body"].read()
    return body


def _check_found(behind: BucketBehind | str, server: S3Server, bucket: str, key_prefix: str) -> BucketBehind:
    assert isinstance(behind, BucketBehind), behind
    assert (behind.bucket, behind.key_prefix, behind.endpoint_url) == (bucket, key_prefix, server.endpoint_url)
    assert behind.region == server.region and behind.addressing_style == "path"
    assert behind.credentials.source == KEYS
    assert (behind.credentials.access_key_id, behind.credentials.secret_access_key) == (
        server.access_key, server.secret_key)
    return behind


def _fresh(mount: S3fsMount, name: str) -> Path:
    """A fresh directory on the session's s3fs mount (the real tests share its bucket: SeaweedFS
    keeps a few volumes for every bucket, and the harness's store has room for a limited number)."""
    path = mount.mount_point / f"{name}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def test_real_s3fs_mount(s3fs_session_mount: S3fsMount, s3_server: S3Server) -> None:
    top = _fresh(s3fs_session_mount, "behind")
    layout = top / "team" / "layout"
    layout.mkdir(parents=True)
    (layout / "index.json").write_bytes(b'{"schemaVersion": 2}\n')
    key = f"{top.name}/team/layout"
    behind = _check_found(find_bucket_behind(str(layout)), s3_server, s3fs_session_mount.bucket, key)
    assert behind.adapter == "s3fs" and behind.mount_point == str(s3fs_session_mount.mount_point.resolve())
    assert behind.s3_url("index.json") == f"s3://{s3fs_session_mount.bucket}/{key}/index.json"
    assert _read_through(behind, f"{key}/index.json") == b'{"schemaVersion": 2}\n'


def test_real_s3fs_mount_of_a_bucket_prefix(
    s3fs_session_mount: S3fsMount, s3fs_factory: Callable[..., S3fsMount], s3_server: S3Server
) -> None:
    """``s3fs BUCKET:/PREFIX``: the mount's root is a prefix of the bucket."""
    base = _fresh(s3fs_session_mount, "base").name
    mount = s3fs_factory(f"{s3fs_session_mount.bucket}:/{base}")
    (mount.mount_point / "layout").mkdir()
    (mount.mount_point / "layout" / "oci-layout").write_bytes(b'{"imageLayoutVersion": "1.0.0"}')
    behind = _check_found(find_bucket_behind(str(mount.mount_point / "layout")), s3_server,
                          s3fs_session_mount.bucket, f"{base}/layout")
    assert _read_through(behind, f"{base}/layout/oci-layout") == b'{"imageLayoutVersion": "1.0.0"}'


def test_real_rclone_mount(
    s3fs_session_mount: S3fsMount, rclone_factory: Callable[..., RcloneMount], s3_server: S3Server
) -> None:
    mount = rclone_factory(s3fs_session_mount.bucket)
    top = mount.mount_point / f"r-{uuid.uuid4().hex[:8]}"
    sub = top / "layout"
    sub.mkdir(parents=True)
    (sub / "blob").write_bytes(b"through rclone")
    behind = _check_found(find_bucket_behind(str(sub)), s3_server, s3fs_session_mount.bucket, f"{top.name}/layout")
    assert behind.adapter == "rclone"
    assert _read_through(behind, f"{top.name}/layout/blob") == b"through rclone"


def test_real_doctor_shows_the_bucket_without_secrets(s3fs_session_mount: S3fsMount, s3_server: S3Server) -> None:
    path = _fresh(s3fs_session_mount, "d")
    url = f"s3://{s3fs_session_mount.bucket}/{path.name}"
    rc, out, err, _ = run_ocigc("doctor", "--json", "--no-self-test", path)
    assert rc == 0, out + err
    data = json.loads(out)["bucket_behind"]
    assert data["url"] == url and data["endpoint_url"] == s3_server.endpoint_url
    rc, out, err, _ = run_ocigc("doctor", "--no-self-test", path)
    assert f"  bucket    behind the mount: {url} (endpoint {s3_server.endpoint_url}" in out
    assert s3_server.secret_key not in out + err and s3_server.access_key not in out + err
