"""``ocigc doctor``: mountinfo and command-line parsing, the rules per adapter, the self-test,
and the command on real s3fs and rclone mounts of moto.

Samples: the s3fs, rclone, ext4 and tmpfs mountinfo lines and the s3fs/rclone command lines were
captured on this project's machine (s3fs 1.90, rclone 1.60.1, Debian 12). goofys and mountpoint-s3
do not run here: their lines are rebuilt from their sources (goofys mounts through jacobsa/fuse
with ``FSName`` = the bucket and ``Subtype: "goofys"``; mountpoint-s3 through fuser with
``FSName("mountpoint-s3")`` and no subtype), the overlay line is Docker's usual root.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ocigc.doctor.mounts import (
    FUSE_OTHER,
    GOOFYS,
    LOCAL,
    MOUNTPOINT,
    NETWORK,
    RCLONE,
    S3FS,
    System,
    find_daemon,
    identify_adapter,
)
from ocigc.doctor.options import parse_flag_args, parse_s3fs_args, split_fuse_options
from ocigc.doctor.report import DoctorError, DoctorReport, diagnose, iter_lines
from ocigc.doctor.rules import (
    UNSAFE,
    WARNING,
    Finding,
    parse_go_duration,
    parse_version,
)
from ocigc.doctor.selftest import SelfTest, run_self_test, self_test_findings
from ocigc.storage import mounts as storage_mounts
from ocigc.storage.mounts import find_mount, fs_type, parse_mountinfo
from tests.harness.mounts import RcloneMount, S3fsMount
from tests.harness.tools import run_ocigc

# ------------------------------------------------------------------------------------ samples

MOUNTINFO = {
    "s3fs": "42 27 0:39 / {mp} rw,nosuid,nodev,relatime - fuse.s3fs s3fs rw,user_id=0,group_id=0",
    "rclone": "44 27 0:41 / {mp} rw,nosuid,nodev,relatime - fuse.rclone moto{{ICP_o}}:ocigc-cap-1-9819781b "
              "rw,user_id=0,group_id=0",
    "goofys": "50 27 0:45 / {mp} rw,nosuid,nodev,relatime - fuse.goofys mybucket rw,user_id=1000,group_id=1000",
    "goofys-plain": "51 27 0:46 / {mp} rw,nosuid,nodev,relatime - fuse goofys rw,user_id=1000,group_id=1000",
    "mountpoint-s3": "52 27 0:47 / {mp} rw,nosuid,nodev,noatime - fuse mountpoint-s3 "
                     "rw,user_id=1000,group_id=1000,default_permissions",
    "ext4": "27 1 254:0 / {mp} rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534",
    "ext4-ro": "28 1 254:1 / {mp} ro,relatime - ext4 /dev/vdb ro",
    "tmpfs": "25 24 0:23 / {mp} rw,relatime - tmpfs tmpfs rw,size=24683656k",
    "overlay": "573 489 0:52 / {mp} rw,relatime master:226 - overlay overlay rw,lowerdir=/var/lib/docker/"
               "overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/x/diff,"
               "workdir=/var/lib/docker/overlay2/x/work",
    "nfs": "60 27 0:50 / {mp} rw,relatime shared:40 - nfs4 fileserver:/export rw,vers=4.2,rsize=1048576",
    "sshfs": "61 27 0:51 / {mp} rw,nosuid,nodev,relatime - fuse.sshfs me@host:/data rw,user_id=0,group_id=0",
}
ROOT_LINE = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw"

S3FS_HARNESS_ARGV = (
    "/usr/bin/s3fs", "ocigc-cap-1-9819781b", "{mp}", "-f", "-o",
    "passwd_file=/tmp/w/s3def.passwd,url=http://127.0.0.1:38919,use_path_request_style,endpoint=us-east-1,"
    "logfile=/tmp/w/s3def.log",
)
RCLONE_HARNESS_ARGV = (
    "/usr/bin/rclone", "mount", "moto:ocigc-cap-1-9819781b", "{mp}", "--config", "/tmp/w/rcdef.conf",
    "--cache-dir", "/tmp/w/rcdef.cache", "--vfs-cache-mode", "writes", "--log-file", "/tmp/w/rcdef.log",
    "--log-level", "INFO",
)

S3FS_190 = "Amazon Simple Storage Service File System V1.90 (commit:unknown) with GnuTLS(gcrypt)"
S3FS_193 = "Amazon Simple Storage Service File System V1.93 (commit:unknown) with OpenSSL"
S3FS_197 = "Amazon Simple Storage Service File System V1.97 (commit:46017f2) with OpenSSL"


class FakeSystem(System):
    """A /proc that tests describe: mountinfo, processes, versions."""

    def __init__(self, mountinfo: str, processes: Mapping[int, tuple[str, ...]] | None = None, *,
                 versions: dict[str, str] | None = None, fuse: Iterable[int] = (), cwd: dict[int, str] | None = None,
                 env: dict[int, dict[str, str]] | None = None, start: dict[int, int] | None = None,
                 me: Iterable[int] = (1,)) -> None:
        super().__init__("/nonexistent-proc")
        self._mountinfo = mountinfo
        self.procs = dict(processes or {})
        self.versions = versions or {}
        self.fuse = set(fuse)
        self.cwds = cwd or {}
        self.envs = env or {}
        self.starts = start or {}
        self.me = set(me)

    def mountinfo(self) -> str:
        return self._mountinfo

    def pids(self) -> list[int]:
        return sorted(self.procs)

    def cmdline(self, pid: int) -> tuple[str, ...]:
        return self.procs.get(pid, ())

    def cwd(self, pid: int) -> str | None:
        return self.cwds.get(pid)

    def exe(self, pid: int) -> str | None:
        argv = self.procs.get(pid)
        return argv[0] if argv else None

    def holds_fuse(self, pid: int) -> bool:
        return pid in self.fuse

    def start_time(self, pid: int) -> int:
        return self.starts.get(pid, 0)

    def self_and_ancestors(self) -> set[int]:
        return self.me

    def environ(self, pid: int, names: Iterable[str]) -> dict[str, str]:
        wanted = set(names)
        return {k: v for k, v in self.envs.get(pid, {}).items() if k in wanted}

    def version(self, executable: str) -> str | None:
        return self.versions.get(os.path.basename(executable))

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.versions else None


def _line(kind: str, mp: str) -> str:
    return MOUNTINFO[kind].format(mp=mp.replace(" ", "\\040"))


def _argv(template: Iterable[str], mp: str) -> tuple[str, ...]:
    return tuple(a.format(mp=mp) for a in template)


def _diag(path: Path, kind: str, argv: Iterable[str] | None = None, *, version: str | None = None,
          settle: float | None = 2.0, **kw: Any) -> DoctorReport:
    mp = str(path.resolve())
    procs = {4242: _argv(argv, mp)} if argv is not None else {}
    versions = {}
    if version is not None and argv is not None:
        versions[os.path.basename(next(iter(_argv(argv, mp))))] = version
    system = FakeSystem(ROOT_LINE + "\n" + _line(kind, mp) + "\n", procs, versions=versions, fuse=procs, **kw)
    return diagnose(str(path), settle=settle, self_test=False, system=system)


def _by_check(report: DoctorReport) -> dict[str, Finding]:
    return {f.check: f for f in report.findings}


# ------------------------------------------------------------------------------------ parsing


def test_parse_mountinfo_fields_escapes_and_optional_fields() -> None:
    text = "\n".join([
        ROOT_LINE,
        _line("overlay", "/var/lib/x"),
        _line("s3fs", "/mnt/with space"),
        "garbage line without separator",
        _line("ext4-ro", "/ro"),
    ])
    entries = parse_mountinfo(text)
    assert [e.mount_point for e in entries] == ["/", "/var/lib/x", "/mnt/with space", "/ro"]
    overlay = entries[1]
    assert overlay.fstype == "overlay" and overlay.source == "overlay" and overlay.device == "0:52"
    assert overlay.super_options[0] == "rw" and overlay.mount_options == ("rw", "relatime")
    s3 = entries[2]
    assert (s3.fstype, s3.source, s3.subtype) == ("fuse.s3fs", "s3fs", "s3fs")
    assert not s3.read_only and entries[3].read_only


def test_fs_type_reads_mountinfo_with_the_one_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fs_type`` (storage) decodes every octal escape of a mount point, as doctor does: a tab
    (``\\011``) and a backslash (``\\134``) as well as a space (``\\040``)."""
    info = tmp_path / "mountinfo"
    info.write_text("\n".join([
        "1 0 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "42 1 0:39 / /ocigc-no-such-dir/a\\011b\\134c\\040d rw,nosuid - fuse.s3fs s3fs rw,user_id=0",
    ]) + "\n")
    monkeypatch.setattr(storage_mounts, "MOUNTINFO", str(info))
    assert fs_type("/ocigc-no-such-dir/a\tb\\c d/repo") == "fuse.s3fs"
    assert fs_type("/ocigc-no-such-dir/a") == "ext4"


def test_find_mount_longest_prefix_and_topmost() -> None:
    entries = parse_mountinfo("\n".join([
        ROOT_LINE,
        _line("ext4", "/mnt"),
        _line("s3fs", "/mnt/s3"),
        _line("rclone", "/mnt/s3"),  # mounted over the s3fs mount: the later line is on top
        _line("tmpfs", "/mnt/s3x"),
    ]))
    assert find_mount(entries, "/mnt/s3/repo/blobs").fstype == "fuse.rclone"  # type: ignore[union-attr]
    assert find_mount(entries, "/mnt/s3").fstype == "fuse.rclone"  # type: ignore[union-attr]
    assert find_mount(entries, "/mnt/s3x/a").fstype == "tmpfs"  # type: ignore[union-attr]
    assert find_mount(entries, "/mnt/other").fstype == "ext4"  # type: ignore[union-attr]
    assert find_mount(entries, "/srv").mount_point == "/"  # type: ignore[union-attr]


@pytest.mark.parametrize(("kind", "adapter"), [
    ("s3fs", S3FS), ("rclone", RCLONE), ("goofys", GOOFYS), ("goofys-plain", GOOFYS),
    ("mountpoint-s3", MOUNTPOINT), ("ext4", LOCAL), ("tmpfs", LOCAL), ("overlay", LOCAL), ("nfs", NETWORK),
    ("sshfs", FUSE_OTHER),
])
def test_identify_adapter(kind: str, adapter: str) -> None:
    entry = parse_mountinfo(_line(kind, "/m"))[0]
    assert identify_adapter(entry) == adapter


def test_identify_plain_fuse_by_daemon_name() -> None:
    entry = parse_mountinfo("70 27 0:60 / /m rw - fuse mybucket rw,user_id=0")[0]
    assert identify_adapter(entry) == FUSE_OTHER
    assert identify_adapter(entry, "/usr/local/bin/goofys") == GOOFYS
    assert identify_adapter(entry, "mount-s3") == MOUNTPOINT


def test_split_fuse_options_escapes() -> None:
    assert split_fuse_options(r"a,b=c\,d,,e\\f") == ["a", "b=c,d", "e\\f"]


def test_parse_s3fs_args_harness_fstab_and_attached_forms() -> None:
    opts = parse_s3fs_args(_argv(S3FS_HARNESS_ARGV, "/mnt/s3"))
    assert opts.get("url") == "http://127.0.0.1:38919" and opts.has("use_path_request_style")
    assert not opts.has("stat_cache_expire")
    assert opts.positional == ["ocigc-cap-1-9819781b", "/mnt/s3"]
    fstab = parse_s3fs_args(("s3fs", "bucket", "/mnt/s3", "-o", "rw,_netdev,allow_other,stat_cache_expire=1"))
    assert fstab.get("stat_cache_expire") == "1"
    attached = parse_s3fs_args(("s3fs", "b", "/m", "-ostat_cache_expire=5", "-o", "stat_cache_expire=1",
                                "-o", "disable_negative_cache"))
    assert attached.get("stat_cache_expire") == "1" and attached.has("disable_negative_cache")
    assert attached.get("disable_negative_cache") is None
    assert attached.to_json()["stat_cache_expire"] == "1"


def test_options_json_hides_secrets() -> None:
    opts = parse_s3fs_args(("s3fs", "b", "/m", "-o", "passwd_file=/etc/p,url=http://x"))
    assert opts.to_json() == {"passwd_file": "<hidden>", "url": "http://x"}
    rc = parse_flag_args(("rclone", "mount", "r:b", "/m", "--s3-secret-access-key", "SK",
                          "--s3-access-key-id=AK"), RCLONE)
    assert "SK" not in json.dumps(rc.to_json()) and "AK" not in json.dumps(rc.to_json())


def test_parse_rclone_args_all_forms() -> None:
    opts = parse_flag_args(_argv(RCLONE_HARNESS_ARGV, "/mnt/rc"), RCLONE)
    assert opts.get("vfs-cache-mode") == "writes" and opts.get("config") == "/tmp/w/rcdef.conf"
    assert opts.positional == ["mount", "moto:ocigc-cap-1-9819781b", "/mnt/rc"]
    eq = parse_flag_args(("rclone", "mount", "r:", "/m", "--dir-cache-time=1s", "--read-only", "--daemon"), RCLONE)
    assert eq.get("dir-cache-time") == "1s" and eq.has("read-only") and eq.has("daemon")
    helper = parse_flag_args(("rclone", "mount", "r:", "/m", "-o", "vfs_cache_mode=full,dir_cache_time=10m"), RCLONE)
    assert helper.get("vfs-cache-mode") == "full" and helper.get("dir-cache-time") == "10m"


def test_parse_goofys_and_mountpoint_args() -> None:
    g = parse_flag_args(("goofys", "-type-cache-ttl", "0", "--stat-cache-ttl=1s", "-o", "allow_other,--uid=5",
                         "bucket", "/mnt/g"), GOOFYS)
    assert g.get("type-cache-ttl") == "0" and g.get("stat-cache-ttl") == "1s" and g.get("uid") == "5"
    assert g.has("o:allow_other") and g.positional == ["bucket", "/mnt/g"]
    m = parse_flag_args(("mount-s3", "bucket", "/mnt/mp", "--allow-delete", "--metadata-ttl", "indefinite",
                         "-o", "allow-overwrite,negative-metadata-ttl=5"), MOUNTPOINT)
    assert m.has("allow-delete") and m.has("allow-overwrite") and m.get("metadata-ttl") == "indefinite"
    assert m.get("negative-metadata-ttl") == "5" and m.positional == ["bucket", "/mnt/mp"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("5m0s", 300.0), ("1s", 1.0), ("0", 0.0), ("0s", 0.0), ("1h30m", 5400.0), ("500ms", 0.5), ("10", 10.0),
    ("1d", 86400.0), ("2.5s", 2.5), ("off", float("inf")), ("5 minutes", None), ("", None), ("1x", None),
])
def test_parse_go_duration(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == seconds


def test_parse_version() -> None:
    assert parse_version(S3FS_190) == (1, 90)
    assert parse_version("rclone v1.60.1-DEV") == (1, 60, 1)
    assert parse_version("mount-s3 1.7.2") == (1, 7, 2)
    assert parse_version("goofys version 0.24.0-45b8d78375af1b24604439d2e60c567654bcdf88") == (0, 24, 0)
    assert parse_version("no digits") is None and parse_version(None) is None


# ------------------------------------------------------------------------------------ daemons


def test_find_daemon_skips_ancestors_tools_and_non_fuse_processes() -> None:
    mp = "/mnt/s3"
    system = FakeSystem(_line("s3fs", mp), {
        10: ("sudo", "ocigc", "doctor", mp),            # our ancestor: names the mount too
        11: ("ls", "-l", mp),                            # not a FUSE server
        12: ("fusermount3", "-u", mp),                   # holds /dev/fuse only for a moment
        13: ("/usr/bin/s3fs", "bucket", mp, "-o", "stat_cache_expire=1"),
        14: ("/usr/bin/s3fs", "other", "/mnt/s3-other"),
    }, fuse={10, 12, 13, 14}, me={10})
    daemon = find_daemon(system, [mp], S3FS)
    assert daemon is not None and daemon.pid == 13 and daemon.name == "s3fs"
    assert "pid 13" in daemon.where


def test_find_daemon_relative_mount_point_and_newest() -> None:
    mp = "/home/me/mnt"
    system = FakeSystem(_line("s3fs", mp), {
        20: ("s3fs", "bucket", "mnt/"),
        21: ("s3fs", "bucket", "mnt"),
    }, cwd={20: "/home/me", 21: "/home/me"}, start={20: 100, 21: 200})
    daemon = find_daemon(system, [mp], S3FS)
    assert daemon is not None and daemon.pid == 21
    assert find_daemon(FakeSystem("", {22: ("s3fs", "b", "mnt")}, cwd={22: "/elsewhere"}), [mp], S3FS) is None


def test_unknown_fuse_daemon_needs_dev_fuse() -> None:
    mp = "/mnt/x"
    procs = {30: ("/opt/bin/myfs", "serve", mp)}
    assert find_daemon(FakeSystem("", procs), [mp], FUSE_OTHER) is None
    daemon = find_daemon(FakeSystem("", procs, fuse={30}), [mp], FUSE_OTHER)
    assert daemon is not None and daemon.pid == 30


def test_bind_mount_finds_the_daemon_by_device(tmp_path: Path) -> None:
    bind = str(tmp_path.resolve())
    mountinfo = "\n".join([
        ROOT_LINE,
        "42 27 0:39 / /mnt/s3 rw,nosuid,nodev,relatime - fuse.s3fs s3fs rw,user_id=0,group_id=0",
        f"43 27 0:39 /team {bind} rw,nosuid,nodev,relatime - fuse.s3fs s3fs rw,user_id=0,group_id=0",
    ])
    system = FakeSystem(mountinfo, {50: ("/usr/bin/s3fs", "b", "/mnt/s3", "-o", "stat_cache_expire=1")},
                        versions={"s3fs": S3FS_190})
    report = diagnose(str(tmp_path), settle=2.0, self_test=False, system=system)
    assert report.daemon is not None and report.daemon.pid == 50
    assert report.fit, report.findings


# ------------------------------------------------------------------------------------ s3fs rules


def test_s3fs_190_default_options_unsafe_naming_stat_cache_expire(tmp_path: Path) -> None:
    report = _diag(tmp_path, "s3fs", S3FS_HARNESS_ARGV, version=S3FS_190)
    assert report.adapter == S3FS and report.version == "1.90" and report.exit_code == 5
    f = _by_check(report)["s3fs.stat_cache"]
    assert f.severity == UNSAFE and f.option == "stat_cache_expire" and f.current == "900s"
    assert f.recommended == "-o stat_cache_expire=1"
    assert "default" in (f.source or "") and "pid 4242" in (f.source or "")
    assert "dangling" in (f.why or "") and "1.96" not in (f.why or "")
    neg = _by_check(report)["s3fs.negative_cache"]
    assert neg.severity == "ok" and neg.option == "enable_noobj_cache"
    assert "stat_cache_expire=1" in report.summary()


def test_s3fs_190_recommended_options_fit(tmp_path: Path) -> None:
    argv = (*S3FS_HARNESS_ARGV[:-1], S3FS_HARNESS_ARGV[-1] + ",stat_cache_expire=1")
    report = _diag(tmp_path, "s3fs", argv, version=S3FS_190)
    assert report.fit and report.exit_code == 0
    f = _by_check(report)["s3fs.stat_cache"]
    assert f.severity == "ok" and f.current == "1s" and "pid 4242" in (f.source or "")


def test_s3fs_190_enable_noobj_cache_with_long_expiry_unsafe(tmp_path: Path) -> None:
    report = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}", "-o", "enable_noobj_cache,stat_cache_expire=60"),
                   version=S3FS_190)
    neg = _by_check(report)["s3fs.negative_cache"]
    assert neg.severity == UNSAFE and neg.recommended == "remove -o enable_noobj_cache"


def test_s3fs_193_default_negative_cache_names_disable_noobj_cache(tmp_path: Path) -> None:
    report = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}"), version=S3FS_193)
    checks = _by_check(report)
    assert checks["s3fs.stat_cache"].severity == UNSAFE
    neg = checks["s3fs.negative_cache"]
    assert neg.severity == UNSAFE and neg.recommended == "-o disable_noobj_cache"
    assert "since s3fs 1.92" in (neg.source or "")
    fixed = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}", "-o", "stat_cache_expire=1,disable_noobj_cache"),
                  version=S3FS_193)
    assert fixed.fit and _by_check(fixed)["s3fs.negative_cache"].severity == "ok"


def test_s3fs_197_listing_cache_and_negative_cache_warning(tmp_path: Path) -> None:
    report = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}"), version=S3FS_197)
    assert "readdir" not in (_by_check(report)["s3fs.stat_cache"].why or "")
    assert "listings" in (_by_check(report)["s3fs.stat_cache"].why or "")
    short = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}", "-o", "stat_cache_expire=1"), version=S3FS_197)
    neg = _by_check(short)["s3fs.negative_cache"]
    assert short.fit and neg.severity == WARNING and neg.recommended == "-o disable_negative_cache"
    best = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}", "-o", "stat_cache_expire=1", "-o", "disable_negative_cache"),
                 version=S3FS_197)
    assert best.fit and not best.warnings
    # enable_* after disable_* turns it back on (the later option wins)
    again = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}", "-o", "stat_cache_expire=1,disable_negative_cache,"
                                     "enable_negative_cache"), version=S3FS_197)
    assert _by_check(again)["s3fs.negative_cache"].severity == WARNING


def test_s3fs_unknown_version_assumes_newest_defaults(tmp_path: Path) -> None:
    report = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}", "-o", "stat_cache_expire=1"), version=None)
    checks = _by_check(report)
    assert report.version is None and "s3fs.version" in checks
    assert "disable_negative_cache" in (checks["s3fs.negative_cache"].recommended or "")
    assert "disable_noobj_cache" in (checks["s3fs.negative_cache"].recommended or "")


@pytest.mark.parametrize(("options", "check", "severity"), [
    ("max_stat_cache_size=0", "s3fs.stat_cache", "ok"),
    ("stat_cache_interval_expire=1", "s3fs.stat_cache", WARNING),
    ("stat_cache_interval_expire=600", "s3fs.stat_cache", UNSAFE),
    ("stat_cache_expire=1,kernel_cache", "fuse.kernel_cache", UNSAFE),
    ("stat_cache_expire=1,attr_timeout=30", "fuse.attr_timeout", UNSAFE),
    ("stat_cache_expire=1,attr_timeout=1", "s3fs.stat_cache", "ok"),
    ("stat_cache_expire=1,use_cache=/var/cache/s3fs", "s3fs.use_cache", "info"),
])
def test_s3fs_other_options(tmp_path: Path, options: str, check: str, severity: str) -> None:
    report = _diag(tmp_path, "s3fs", ("s3fs", "b", "{mp}", "-o", options), version=S3FS_190)
    assert _by_check(report)[check].severity == severity


def test_settle_delay_is_the_yardstick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ("s3fs", "b", "{mp}", "-o", "stat_cache_expire=5")
    assert not _diag(tmp_path, "s3fs", argv, version=S3FS_190).fit
    assert _diag(tmp_path, "s3fs", argv, version=S3FS_190, settle=10).fit
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "6")
    report = _diag(tmp_path, "s3fs", argv, version=S3FS_190, settle=None)
    assert report.settle == 6 and report.fit


def test_daemon_not_found_assumes_defaults_and_says_so(tmp_path: Path) -> None:
    report = _diag(tmp_path, "s3fs", None)
    checks = _by_check(report)
    assert report.exit_code == 5 and "daemon.not_found" in checks
    assert "assumed" in (checks["s3fs.stat_cache"].source or "")
    mp = str(tmp_path.resolve())
    given = diagnose(str(tmp_path), settle=2.0, self_test=False,
                     daemon_args=f"s3fs bucket {mp} -o stat_cache_expire=1",
                     system=FakeSystem(ROOT_LINE + "\n" + _line("s3fs", mp)))
    assert given.fit and _by_check(given)["s3fs.stat_cache"].source == "--daemon-args"


# ------------------------------------------------------------------------------------ rclone, goofys, mountpoint


def test_rclone_writes_mode_and_default_dir_cache_unsafe(tmp_path: Path) -> None:
    report = _diag(tmp_path, "rclone", RCLONE_HARNESS_ARGV, version="rclone v1.60.1-DEV")
    checks = _by_check(report)
    assert report.adapter == RCLONE and report.version == "1.60.1" and not report.fit
    assert checks["rclone.vfs_cache_mode"].severity == UNSAFE
    assert checks["rclone.vfs_cache_mode"].recommended == "--vfs-cache-mode off"
    dct = checks["rclone.dir_cache_time"]
    assert dct.severity == UNSAFE and dct.current == "5m" and "default" in (dct.source or "")


def test_rclone_defaults_unsafe_by_dir_cache_only(tmp_path: Path) -> None:
    report = _diag(tmp_path, "rclone", ("rclone", "mount", "r:b", "{mp}"))
    assert [f.check for f in report.unsafe] == ["rclone.dir_cache_time"]


def test_rclone_recommended_fit(tmp_path: Path) -> None:
    report = _diag(tmp_path, "rclone", ("rclone", "mount", "r:b", "{mp}", "--vfs-cache-mode", "off",
                                        "--dir-cache-time", "0s", "--attr-timeout", "0s"))
    assert report.fit and not report.warnings


def test_rclone_options_from_environment(tmp_path: Path) -> None:
    report = _diag(tmp_path, "rclone", ("rclone", "mount", "r:b", "{mp}", "--dir-cache-time", "1s"),
                   env={4242: {"RCLONE_VFS_CACHE_MODE": "full", "RCLONE_DIR_CACHE_TIME": "1h", "SECRET": "x"}})
    checks = _by_check(report)
    assert checks["rclone.vfs_cache_mode"].severity == UNSAFE
    assert "RCLONE_VFS_CACHE_MODE" in (checks["rclone.vfs_cache_mode"].source or "")
    assert checks["rclone.dir_cache_time"].severity == "ok"  # the command line wins over the environment
    assert "SECRET" not in json.dumps(report.to_json())


def test_goofys_defaults_unsafe_and_zero_ttls_fit(tmp_path: Path) -> None:
    report = _diag(tmp_path, "goofys", ("goofys", "bucket", "{mp}"), version="goofys version 0.24.0-45b8d78")
    checks = _by_check(report)
    assert report.version == "0.24.0"
    assert checks["goofys.type_cache_ttl"].severity == UNSAFE
    assert checks["goofys.type_cache_ttl"].recommended == "--type-cache-ttl 0"
    assert checks["goofys.stat_cache_ttl"].severity == UNSAFE
    ok = _diag(tmp_path, "goofys-plain", ("goofys", "--type-cache-ttl", "0", "--stat-cache-ttl=0s", "bucket", "{mp}"))
    assert ok.adapter == GOOFYS and ok.fit and "goofys.semantics" in _by_check(ok)


def test_mountpoint_defaults_cannot_delete(tmp_path: Path) -> None:
    report = _diag(tmp_path, "mountpoint-s3", ("mount-s3", "bucket", "{mp}"), version="mount-s3 1.7.2")
    checks = _by_check(report)
    assert report.adapter == MOUNTPOINT and report.exit_code == 5
    assert checks["mountpoint.allow_delete"].severity == UNSAFE
    assert checks["mountpoint.allow_delete"].recommended == "--allow-delete"
    assert checks["mountpoint.allow_overwrite"].severity == WARNING
    assert checks["mountpoint.rename"].severity == WARNING
    assert checks["mountpoint.metadata_ttl"].severity == "ok"


def test_mountpoint_flags_cache_and_directory_buckets(tmp_path: Path) -> None:
    fit = _diag(tmp_path, "mountpoint-s3", ("mount-s3", "bucket", "{mp}", "--allow-delete", "--allow-overwrite"))
    assert fit.fit and [f.check for f in fit.warnings] == ["mountpoint.rename"]
    cached = _diag(tmp_path, "mountpoint-s3", ("mount-s3", "bucket", "{mp}", "--allow-delete", "--cache", "/c"))
    assert _by_check(cached)["mountpoint.metadata_ttl"].severity == UNSAFE
    assert _by_check(cached)["mountpoint.metadata_ttl"].current == "60"
    fstab = _diag(tmp_path, "mountpoint-s3", ("mount-s3", "b--use1-az4--x-s3", "{mp}", "-o",
                                              "allow-delete,allow-overwrite,metadata-ttl=minimal"))
    assert fstab.fit and _by_check(fstab)["mountpoint.rename"].severity == "info"


@pytest.mark.parametrize("kind", ["ext4", "tmpfs", "overlay"])
def test_local_file_systems_fit(tmp_path: Path, kind: str) -> None:
    report = _diag(tmp_path, kind)
    assert report.adapter == LOCAL and report.fit and not report.warnings


def test_read_only_nfs_and_unknown_fuse(tmp_path: Path) -> None:
    assert not _diag(tmp_path, "ext4-ro").fit
    nfs = _diag(tmp_path, "nfs")
    assert nfs.fit and [f.check for f in nfs.warnings] == ["mount.network"]
    sshfs = _diag(tmp_path, "sshfs")
    assert sshfs.adapter == FUSE_OTHER and sshfs.fit and "mount.fuse_unknown" in _by_check(sshfs)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DoctorError, match="no such directory"):
        diagnose(str(tmp_path / "nope"), self_test=False)
    (tmp_path / "f").write_text("x")
    with pytest.raises(DoctorError, match="not a directory"):
        diagnose(str(tmp_path / "f"), self_test=False)


def test_report_json_shape(tmp_path: Path) -> None:
    report = _diag(tmp_path, "s3fs", S3FS_HARNESS_ARGV, version=S3FS_190)
    data = json.loads(json.dumps(report.to_json()))
    assert data["fit"] is False and data["exit_code"] == 5 and data["adapter"] == "s3fs"
    assert data["findings"][0]["severity"] == "unsafe"  # most severe first
    assert {"severity", "check", "option", "current", "recommended", "source", "why"} <= set(data["findings"][0])
    assert data["options"]["passwd_file"] == "<hidden>" and data["daemon"]["pid"] == 4242
    assert "\n".join(iter_lines(report))  # renders


# ------------------------------------------------------------------------------------ self-test


def _statuses(test: SelfTest) -> dict[str, str]:
    return {s.name: s.status for s in test.steps}


def test_self_test_on_local_disk_cleans_up(tmp_path: Path) -> None:
    test = run_self_test(str(tmp_path))
    assert test.ok and set(_statuses(test).values()) == {"ok"}
    assert [s.name for s in test.steps] == ["mkdir", "create", "list", "stat", "read", "rename", "overwrite",
                                            "remove", "list-again"]
    assert all(s.latency_ms is not None and s.latency_ms >= 0 for s in test.steps)
    assert not (tmp_path / ".ocigc").exists()  # doctor created it, so doctor removed it
    (tmp_path / ".ocigc" / "locks").mkdir(parents=True)
    assert run_self_test(str(tmp_path)).ok
    assert sorted(os.listdir(tmp_path / ".ocigc")) == ["locks"]  # an existing control dir stays


def test_self_test_rename_unsupported_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rename(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(os, "replace", no_rename)
    test = run_self_test(str(tmp_path))
    statuses = _statuses(test)
    assert statuses["rename"] == "unsupported" and statuses["remove"] == "ok" and test.ok
    findings = self_test_findings(test)
    assert [f.severity for f in findings] == [WARNING] and "in place" in findings[0].message
    assert not (tmp_path / ".ocigc").exists()


def test_self_test_failed_remove_is_unsafe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_unlink = os.unlink
    calls = {"n": 0}

    def refuse_first(path: Any, *a: Any, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", refuse_first)
    test = run_self_test(str(tmp_path))
    assert _statuses(test)["remove"] == "failed" and _statuses(test)["list-again"] == "skipped"
    findings = self_test_findings(test)
    assert findings[0].severity == UNSAFE and "delete" in findings[0].message
    assert not test.leftovers  # the clean-up retried and succeeded


def test_self_test_listing_that_misses_own_file_is_unsafe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_listdir = os.listdir

    def stale(path: Any = ".") -> list[str]:
        return [n for n in real_listdir(path) if not n.startswith("doctor-")]

    monkeypatch.setattr(os, "listdir", stale)
    test = run_self_test(str(tmp_path))
    assert _statuses(test)["list"] == "failed" and not test.ok
    assert "missing from the directory listing" in self_test_findings(test)[0].message


def test_self_test_hung_step_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real_stat = os.stat

    def hang(path: Any, *a: Any, **kw: Any) -> os.stat_result:
        if "doctor-" in str(path):
            release.wait()
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(os, "stat", hang)
    try:
        test = run_self_test(str(tmp_path), timeout=0.2)
    finally:
        release.set()
    assert _statuses(test)["stat"] == "timeout" and _statuses(test)["read"] == "skipped"
    assert test.leftovers and not test.ok
    assert self_test_findings(test)[0].severity == UNSAFE


# ------------------------------------------------------------------------------------ the command


def _json(out: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(out)
    return data


def test_cli_local_directory_fit(tmp_path: Path) -> None:
    rc, out, err, _ = run_ocigc("doctor", tmp_path)
    assert rc == 0, err
    assert "local file system" in out and "FIT" in out and "rename" in out
    rc, out, err, _ = run_ocigc("doctor", "--json", tmp_path)
    data = _json(out)
    assert rc == 0 and data["fit"] and data["adapter"] == "local" and data["self_test"]["ok"]
    assert not (tmp_path / ".ocigc").exists()


def test_cli_errors_are_one_line_naming_the_path(tmp_path: Path) -> None:
    rc, _, err, _ = run_ocigc("doctor", tmp_path / "missing")
    assert rc == 1 and err.strip() == f"error: {tmp_path / 'missing'}: no such directory"
    rc, _, err, _ = run_ocigc("doctor", "--settle", "soon", tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_cli_no_self_test_and_daemon_args_on_local_disk(tmp_path: Path) -> None:
    """--no-self-test writes nothing; --daemon-args means nothing for a local disk, which stays fit."""
    rc, out, _, _ = run_ocigc("doctor", "--no-self-test", "--daemon-args", "s3fs b /x", "--json", tmp_path)
    assert rc == 0 and _json(out)["self_test"] is None


# ------------------------------------------------------------------------------------ real mounts


def _objects(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    resp = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in resp.get("Contents", [])]


def test_real_s3fs_default_options_unsafe(s3fs_default_mount: S3fsMount, s3_client: Any) -> None:
    rc, out, err, _ = run_ocigc("doctor", "--json", s3fs_default_mount.mount_point)
    assert rc == 5, err
    data = _json(out)
    assert data["adapter"] == "s3fs" and data["version"] and data["daemon"]["name"] == "s3fs"
    unsafe = [f for f in data["findings"] if f["severity"] == "unsafe"]
    assert [f["option"] for f in unsafe] == ["stat_cache_expire"]
    assert unsafe[0]["current"] == "900s" and unsafe[0]["recommended"] == "-o stat_cache_expire=1"
    assert f"pid {data['daemon']['pid']}" in unsafe[0]["source"]
    assert "stat_cache_expire" in err and str(s3fs_default_mount.mount_point) in err
    assert data["self_test"]["ok"]  # the settings, not the self-test, make it unsafe
    assert _objects(s3_client, s3fs_default_mount.bucket, ".ocigc") == []


def test_real_s3fs_recommended_options_fit(
    make_bucket: Callable[..., str], s3fs_factory: Callable[..., S3fsMount], s3_client: Any
) -> None:
    mount = s3fs_factory(make_bucket("doctor"))
    rc, out, err, _ = run_ocigc("doctor", "--json", mount.mount_point)
    assert rc == 0, out + err
    data = _json(out)
    stat = next(f for f in data["findings"] if f["check"] == "s3fs.stat_cache")
    assert stat["severity"] == "ok" and stat["current"] == "1s"
    steps = {s["step"]: s for s in data["self_test"]["steps"]}
    assert list(steps) == ["mkdir", "create", "list", "stat", "read", "rename", "overwrite", "remove", "list-again"]
    assert all(s["status"] == "ok" and s["latency_ms"] > 0 for s in steps.values())
    assert _objects(s3_client, mount.bucket, ".ocigc") == []
    rc, out, _, _ = run_ocigc("doctor", mount.mount_point)
    assert rc == 0 and "s3fs" in out and "self-test" in out and " ms" in out


def test_real_s3fs_default_and_recommended_side_by_side(
    make_bucket: Callable[..., str], s3fs_factory: Callable[..., S3fsMount]
) -> None:
    """The issue's "done when": doctor tells the two s3fs mounts of one bucket apart."""
    bucket = make_bucket("pair")
    default = s3fs_factory(bucket, ())
    recommended = s3fs_factory(bucket)
    (default.mount_point / "repo").mkdir()
    rc_default, _, err_default, _ = run_ocigc("doctor", "--no-self-test", default.mount_point / "repo")
    rc_recommended, _, _, _ = run_ocigc("doctor", "--no-self-test", recommended.mount_point / "repo")
    assert (rc_default, rc_recommended) == (5, 0)
    assert "stat_cache_expire=1" in err_default


def test_real_rclone_default_caches_unsafe(
    make_bucket: Callable[..., str], rclone_factory: Callable[..., RcloneMount]
) -> None:
    bucket = make_bucket("rclone")
    defaults = rclone_factory(bucket, ())
    rc, out, err, _ = run_ocigc("doctor", "--json", defaults.mount_point)
    data = _json(out)
    assert rc == 5, err
    assert data["adapter"] == "rclone" and data["self_test"]["ok"]
    assert [f["option"] for f in data["findings"] if f["severity"] == "unsafe"] == ["--dir-cache-time"]
    writes = rclone_factory(bucket, ("--vfs-cache-mode", "writes"))
    rc, out, _, _ = run_ocigc("doctor", "--json", writes.mount_point)
    unsafe = {f["option"] for f in _json(out)["findings"] if f["severity"] == "unsafe"}
    assert rc == 5 and unsafe == {"--vfs-cache-mode", "--dir-cache-time"}


def test_real_rclone_recommended_fit(rclone_mount: RcloneMount) -> None:
    rc, out, err, _ = run_ocigc("doctor", "--json", rclone_mount.mount_point)
    assert rc == 0, out + err
    data = _json(out)
    assert data["adapter"] == "rclone" and all(s["status"] == "ok" for s in data["self_test"]["steps"])


def test_cli_an_s3_url_is_a_usage_error_that_says_why(tmp_path: Path) -> None:
    rc, _, err, _ = run_ocigc("doctor", "s3://bucket/prefix")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "s3://bucket/prefix: doctor checks a mounted bucket" in err and "OCIGC_S3_CONDITIONAL" in err
