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

import os
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ocigc.doctor.mounts import (
    ADAPTER_BINARIES,
    FUSE_OTHER,
    LOCAL,
    NETWORK,
    OTHER,
    OTHER_FUSE_NAMES,
    RCLONE,
    Daemon,
    System,
    find_daemon,
    identify_adapter,
    mount_points_of,
)
from ocigc.doctor.options import RCLONE_ENV, Options, parse_daemon_options
from ocigc.doctor.rules import (
    INFO,
    OK,
    SEVERITY_RANK,
    UNSAFE,
    WARNING,
    Context,
    Finding,
    assess,
    parse_version,
    version_str,
)
from ocigc.doctor.selftest import DEFAULT_STEP_TIMEOUT, SelfTest, run_self_test, self_test_findings
from ocigc.duration import format_duration
from ocigc.errors import OcigcError, UsageError
from ocigc.lock.params import DEFAULT_FUSE_SETTLE, LockParams
from ocigc.storage.behind import BucketBehind, bucket_behind_mount, not_found_json, not_fuse_reason
from ocigc.storage.mounts import MountEntry, find_mount, parse_mountinfo
from ocigc.storage.via import Route, route_for


class DoctorError(OcigcError):
    """doctor cannot look at PATH at all (missing, not a directory)."""


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
    #: The bucket behind a FUSE mount, or the reason it cannot be told (None: no mount found).
    bucket_behind: BucketBehind | str | None = None
    #: How ocigc reaches the path with the current ``--via`` (None: not a FUSE mount of a bucket).
    via: Route | None = None

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

    def _bucket_behind_json(self) -> dict[str, Any] | None:
        if isinstance(self.bucket_behind, BucketBehind):
            return self.bucket_behind.to_json()
        return not_found_json(self.bucket_behind) if self.bucket_behind is not None else None

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
            "bucket_behind": self._bucket_behind_json(),
            "via": self.via.to_json() if self.via is not None else None,
            "settle_s": self.settle,
            "findings": [f.to_json() for f in sorted(self.findings, key=lambda f: -SEVERITY_RANK[f.severity])],
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
    return version_str(version), where


def diagnose(
    path: str,
    *,
    settle: float | None = None,
    self_test: bool = True,
    timeout: float = DEFAULT_STEP_TIMEOUT,
    daemon_args: Sequence[str] | str | None = None,
    system: System | None = None,
    behind: bool = True,
    probe_via: bool | None = None,
) -> DoctorReport:
    """Look at the mount holding ``path``, its adapter and options, and run the self-test.

    ``behind``: also name the bucket behind a FUSE mount. ``probe_via`` (default: with the self-test, on
    this machine's mounts): also tell how ``--via`` reaches the path, probing the bucket behind the mount
    for conditional writes."""
    if probe_via is None:
        probe_via = self_test and system is None and behind
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
    bucket: BucketBehind | str | None = None
    via: Route | None = None
    if mount is not None:
        adapter = identify_adapter(mount)
        is_fuse = adapter in ADAPTER_BINARIES or adapter == FUSE_OTHER
        if daemon_args is not None and is_fuse:
            argv = tuple(shlex.split(daemon_args)) if isinstance(daemon_args, str) else tuple(daemon_args)
            daemon = Daemon(None, argv, None)
        elif is_fuse:
            daemon = find_daemon(system, mount_points_of(mount, entries), adapter)
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
        if behind:
            bucket = bucket_behind_mount(system, mount, entries, adapter, daemon, real) if is_fuse else \
                not_fuse_reason(real, mount)
            if is_fuse and probe_via:
                via = route_for(path, mount.mount_point, bucket)
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
                        findings, test, bucket, via)


#: Findings the check before a lock leaves to the write itself: a read-only mount fails loudly on its own
#: (one ``Read-only file system`` line naming the path), unlike a cache that hides another host's files.
LOUD_ON_THEIR_OWN = frozenset({"mount.read_only"})


def unsafe_mounts(paths: Iterable[str], system: System | None = None) -> list[DoctorReport]:
    """doctor's cheap checks (mountinfo and the adapter's options; no self-test, no bucket lookup),
    once per mount holding one of ``paths`` (the nearest existing directory of a path to be created;
    ``s3://`` locations have no mount): the reports of the mounts that are unsafe for ocigc's locks and
    deletions. Writers run this before they take a lock (``docs/object-storage.md``)."""
    system = system or System()
    try:
        entries = parse_mountinfo(system.mountinfo())
    except OSError:
        return []
    seen: set[str] = set()
    out: list[DoctorReport] = []
    for path in paths:
        if path.startswith("s3://"):
            continue
        real = os.path.realpath(path or ".")
        while not os.path.isdir(real) and real != os.path.dirname(real):
            real = os.path.dirname(real)
        mount = find_mount(entries, real)
        if mount is None or mount.mount_point in seen:
            continue
        seen.add(mount.mount_point)
        report = diagnose(real, self_test=False, system=system, behind=False)
        report.path = path
        report.findings = [f for f in report.findings if f.check not in LOUD_ON_THEIR_OWN]
        if not report.fit:
            out.append(report)
    return out


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
    if isinstance(report.bucket_behind, BucketBehind):
        yield f"  bucket    behind the mount: {report.bucket_behind.describe()}"
    elif report.bucket_behind is not None and report.adapter not in (LOCAL, NETWORK, OTHER):
        yield f"  bucket    behind the mount: not found: {report.bucket_behind}"
    if report.via is not None:
        yield f"  via       {report.via.used} (--via {report.via.requested}): {report.via.reason}"
    yield f"  settle    {format_duration(report.settle, 'exact')} (the lock settle delay caches are compared with)"
    yield ""
    for f in sorted(report.findings, key=lambda f: -SEVERITY_RANK[f.severity]):
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
