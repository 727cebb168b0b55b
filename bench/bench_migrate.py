"""Benchmark: ``ocigc migrate`` of a root of layouts to a fresh registry, against a loop of
``skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG`` over every tag (the seed's method), in the
same run, on the same machine, each to its own fresh docker-registry (distribution 2.8).

    .venv/bin/python bench/bench_migrate.py              # 20 repositories, 3 tags each, shared layers
    .venv/bin/python bench/bench_migrate.py --quick      # 5 repositories, small layers
    .venv/bin/python -m bench migrate                    # the same through the bench runner

Also measured: a rerun of ocigc (everything there: nothing uploaded), and ocigc's peak memory
(RSS of the process, ``os.wait4``) copying one blob of 16 MiB and one of 512 MiB to a registry and
back to a layout: streaming keeps it independent of the blob size.

The root: every repository has three tags, ``v1`` (3 shared base layers + 1 layer of its own),
``v2`` (v1 + 1 more layer of its own) and ``latest`` (= v2); layers are random (incompressible).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.common import loopback_env  # noqa: E402
from tests.harness.servers import RegistryServer  # noqa: E402
from tests.kit.layouts import LayoutBuilder  # noqa: E402

OCIGC = str(Path(sys.executable).parent / "ocigc")
MIB = 1024 * 1024


@dataclass
class Timed:
    wall: float
    max_rss_mb: float
    rc: int
    stdout: str
    stderr: str


#: Runs ARGV as a grandchild and reports its peak RSS. Linux carries a process's RSS high-water
#: mark across fork and exec, so a child forked straight from this (big) process would report at
#: least this process's RSS; a small exec'd wrapper resets the mark.
_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\n@@maxrss %d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(argv: list[str]) -> Timed:
    """Wall time and peak RSS (KiB from ``wait4``, reported in MiB) of one command."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, *argv], stdout=out, stderr=err,
                                env=loopback_env(), stdin=subprocess.DEVNULL)
        rc = proc.wait()
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        head, _, tail = stderr.rpartition("\n@@maxrss ")
        rss_kib = int(tail.strip() or 0) if head or tail else 0
        return Timed(wall, rss_kib / 1024, rc, out.read().decode(errors="replace"), head)


def _random_blob(size: int, seed: int) -> bytes:
    """A real tar+gzip layer of about ``size`` bytes (random content: gzip cannot shrink it).

    Real gzip matters: skopeo recompresses a "tar+gzip" layer that is not gzip (new digests)."""
    import gzip
    import io
    import random
    import tarfile

    data = random.Random(seed).randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo(f"layer-{seed}.bin")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tf.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def build_root(root: Path, repos: int, shared_mib: list[float], unique_mib: float) -> dict[str, list[str]]:
    """The root of layouts; returns repository -> tags."""
    shared = [_random_blob(int(m * MIB), 1000 + i) for i, m in enumerate(shared_mib)]
    out: dict[str, list[str]] = {}
    for r in range(repos):
        name = f"team{r % 4}/app{r:02d}"
        b = LayoutBuilder(root / name)
        own1 = _random_blob(int(unique_mib * MIB), 2 * r)
        own2 = _random_blob(int(unique_mib * MIB), 2 * r + 1)
        b.image("v1", [*shared, own1], config=json.dumps({"architecture": "amd64", "os": "linux",
                                                           "config": {"Env": [f"REPO={name}", "V=1"]}}).encode())
        v2 = b.manifest([*shared, own1, own2], config=json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {"Env": [f"REPO={name}", "V=2"]}}).encode())
        b.add(v2, "v2")
        b.add(v2, "latest")
        b.save()
        out[name] = ["v1", "v2", "latest"]
    return out


def start_registry(workdir: Path) -> RegistryServer:
    server = RegistryServer(workdir)
    server.start()
    return server


def ocigc_migrate(src: str, dst: str, jobs: int) -> Timed:
    t = timed([OCIGC, "migrate", src, dst, "--plain-http", "--jobs", str(jobs), "--json", "-q"])
    if t.rc != 0:
        raise SystemExit(f"ocigc migrate {src} {dst} failed ({t.rc}): {t.stderr[-2000:]}")
    return t


def skopeo_loop(root: Path, repos: dict[str, list[str]], host: str) -> tuple[float, float, int]:
    """The seed's method: one ``skopeo copy`` per tag. (seconds, peak RSS of one copy, copies)."""
    start = time.perf_counter()
    peak = 0.0
    n = 0
    for repo, tags in repos.items():
        for tag in tags:
            t = timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{root / repo}:{tag}",
                       f"docker://{host}/{repo}:{tag}"])
            if t.rc != 0:
                raise SystemExit(f"skopeo copy {repo}:{tag} failed: {t.stderr[-2000:]}")
            peak = max(peak, t.max_rss_mb)
            n += 1
    return time.perf_counter() - start, peak, n


def check_same(a: RegistryServer, b: RegistryServer, repos: dict[str, list[str]]) -> None:
    """Both registries hold the same digest under every tag (and ocigc kept the layout's digests)."""
    import requests

    accept = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
              "application/vnd.docker.distribution.manifest.v2+json")
    for repo, tags in repos.items():
        for tag in tags:
            da, db = (requests.head(f"{s.url}/v2/{repo}/manifests/{tag}", headers={"Accept": accept}, timeout=30,
                                    proxies={"http": "", "https": ""}).headers.get("Docker-Content-Digest")
                      for s in (a, b))
            if not da or da != db:
                raise SystemExit(f"{repo}:{tag}: ocigc has {da}, skopeo has {db}")


def memory_case(work: Path, size_mib: int, jobs: int) -> dict[str, Any]:
    """Peak RSS of ocigc copying one blob of ``size_mib`` to a registry and back to a layout."""
    src = work / f"big{size_mib}"
    b = LayoutBuilder(src / "big")
    # Write the big layer by streaming (never whole in this process either).
    import hashlib

    h = hashlib.sha256()
    tmp = src / "layer.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        chunk = os.urandom(MIB)
        for i in range(size_mib):
            piece = chunk[i % 7:] + chunk[: i % 7]
            h.update(piece)
            f.write(piece)
    digest = h.hexdigest()
    layer_path = b.root / "blobs" / "sha256" / digest
    shutil.move(str(tmp), layer_path)
    desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{digest}",
            "size": size_mib * MIB}
    b.add(b.manifest([desc]), "v1")
    b.save()
    registry = start_registry(work / f"reg-mem{size_mib}")
    try:
        up = ocigc_migrate(str(src), f"{registry.host}/mem", jobs)
        down = ocigc_migrate(f"{registry.host}/mem", str(work / f"back{size_mib}"), jobs)
    finally:
        registry.stop()
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(work / f"back{size_mib}", ignore_errors=True)
    return {"blob_mib": size_mib, "to_registry_s": round(up.wall, 2), "to_registry_rss_mb": round(up.max_rss_mb, 1),
            "to_layout_s": round(down.wall, 2), "to_layout_rss_mb": round(down.max_rss_mb, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=int, default=20)
    ap.add_argument("--shared-mib", default="16,8,4", help="sizes of the shared base layers (MiB)")
    ap.add_argument("--unique-mib", type=float, default=2.0, help="size of each repository's own layers (MiB)")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--memory-mib", default=None, help="blob sizes of the peak-memory cases (MiB; default 16,512)")
    ap.add_argument("--quick", action="store_true", help="5 repositories, small layers, small memory cases")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.repos, args.shared_mib, args.unique_mib = 5, "2,1", 0.5
    if args.memory_mib is None:
        args.memory_mib = "8,64" if args.quick else "16,512"
    shared = [float(x) for x in args.shared_mib.split(",") if x]
    work = Path(tempfile.mkdtemp(prefix="ocigc-bench-migrate-"))
    results: dict[str, Any] = {"repos": args.repos, "tags_per_repo": 3, "shared_mib": shared,
                               "unique_mib": args.unique_mib, "jobs": args.jobs}
    try:
        root = work / "root"
        repos = build_root(root, args.repos, shared, args.unique_mib)
        unique_bytes = sum(f.stat().st_size for f in root.rglob("blobs/sha256/*"))
        results["root_bytes_on_disk"] = unique_bytes
        reg_o = start_registry(work / "reg-ocigc")
        reg_s = start_registry(work / "reg-skopeo")
        try:
            t = ocigc_migrate(str(root), reg_o.host, args.jobs)
            summary = json.loads(t.stdout)
            results["ocigc_s"] = round(t.wall, 2)
            results["ocigc_rss_mb"] = round(t.max_rss_mb, 1)
            results["ocigc_stats"] = summary["stats"]
            s_wall, s_rss, copies = skopeo_loop(root, repos, reg_s.host)
            results["skopeo_s"] = round(s_wall, 2)
            results["skopeo_rss_mb"] = round(s_rss, 1)
            results["skopeo_copies"] = copies
            results["ratio"] = round(s_wall / t.wall, 2)
            check_same(reg_o, reg_s, repos)
            rerun = ocigc_migrate(str(root), reg_o.host, args.jobs)
            rs = json.loads(rerun.stdout)["stats"]
            results["ocigc_rerun_s"] = round(rerun.wall, 2)
            results["ocigc_rerun_uploaded"] = rs["blobs_uploaded"] + rs["blobs_mounted"]
        finally:
            reg_o.stop()
            reg_s.stop()
        results["memory"] = [memory_case(work, int(m), args.jobs) for m in args.memory_mib.split(",") if m]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    st = results["ocigc_stats"]
    print(f"root: {args.repos} repositories x 3 tags, shared layers {shared} MiB, own layers 2 x "
          f"{args.unique_mib} MiB per repository; {unique_bytes / MIB:.1f} MiB of blobs on disk")
    print("| method | wall s | peak RSS MiB | notes |")
    print("|---|---:|---:|---|")
    print(f"| ocigc migrate --jobs {args.jobs} | {results['ocigc_s']} | {results['ocigc_rss_mb']} | "
          f"{st['blobs_uploaded']} blobs uploaded ({st['bytes_uploaded'] / MIB:.1f} MiB), "
          f"{st['blobs_mounted']} mounted |")
    print(f"| skopeo copy loop ({results['skopeo_copies']} copies) | {results['skopeo_s']} | "
          f"{results['skopeo_rss_mb']} (one copy) | one process per tag |")
    print(f"| ocigc migrate, rerun | {results['ocigc_rerun_s']} | - | "
          f"{results['ocigc_rerun_uploaded']} blobs uploaded |")
    print(f"ratio skopeo loop / ocigc: {results['ratio']}x (target >= 2x)")
    print("| blob MiB | layout->registry s | peak RSS MiB | registry->layout s | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|")
    for m in results["memory"]:
        print(f"| {m['blob_mib']} | {m['to_registry_s']} | {m['to_registry_rss_mb']} | {m['to_layout_s']} | "
              f"{m['to_layout_rss_mb']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
