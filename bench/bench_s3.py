"""Sweep on object stores: ``ocigc sweep`` through an s3fs mount and through ``s3://``, ``umoci gc``
through the same mount, and the I/O floor of each, on moto and SeaweedFS, at 0 and 20 ms per request.

    python -m bench s3                                  # SPEC_2000 and 10,000 blobs, every store and latency
    python -m bench s3 -- --quick                       # one small layout (smoke test)
    python -m bench s3 -- --sizes 2000 --stores seaweedfs --latency 20

For each store and latency (a fresh store, bucket and s3fs mount; ``bench/stores.py``) and each
layout (``--sizes``: ``2000`` is ``bench_sweep.SPEC_2000``, another N a generated layout of about N
blobs), every contender runs as a child process on its own copy of the layout, uploaded with boto3
straight to the store just before and removed just after (so a listing never scans another copy):

- ``ocigc sweep MOUNT/... --grace 0 --yes --jobs 16`` through the mount (``--via mount``), the same
  with ``--via auto`` (``s3fs-auto``: the bucket behind the mount), and ``ocigc sweep s3://BUCKET/...``;
- ``umoci gc --layout MOUNT/...``;
- the I/O floor through the mount (``bench_sweep.io_floor``: one listing, a read per reachable
  manifest, a stat and an unlink per garbage blob, 16 threads) and for ``s3://`` (``s3_floor``: the
  minimum boto3 requests: a listing per 1,000 keys, a GET of ``index.json`` and of each reachable
  manifest, a DeleteObjects per 1,000 garbage keys, 16 threads).

Requests are counted by the latency proxy (at 0 ms a proxy with no delay sits in the path): every
request of the tool or of the s3fs daemon serving it. Afterwards each copy must hold exactly the
reachable blobs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_sweep import SPEC_2000, floor_script
from bench.common import OCIGC, ROOT, Matrix, load_1min, save, timed
from bench.gen import Generated, age_tree, generate, spec_for_blobs
from bench.stores import S3_PAGE, BenchStore, add_store_arguments, open_store, store_matrix

JOBS = 16
CONTENDERS = ("ocigc s3fs", "ocigc s3fs-auto", "ocigc s3://", "umoci s3fs", "floor s3fs", "floor s3://")


def s3_floor(url: str, manifests: list[str], garbage: list[str], jobs: int = JOBS) -> None:
    """The fewest boto3 requests a sweep of ``url`` needs (endpoint and credentials from AWS_*)."""
    import boto3
    from botocore.config import Config

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/")
    client = boto3.client("s3", config=Config(max_pool_connections=jobs, s3={"addressing_style": "path"}))
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/blobs/sha256/"):
        _ = page.get("Contents")
    client.get_object(Bucket=bucket, Key=f"{prefix}/index.json")["Body"].read()

    def key(d: str) -> str:
        return f"{prefix}/blobs/sha256/{d.split(':', 1)[1]}"

    def delete(batch: list[str]) -> None:
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key(d)} for d in batch], "Quiet": True})

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda d: client.get_object(Bucket=bucket, Key=key(d))["Body"].read(), manifests))
        list(pool.map(delete, [garbage[i:i + S3_PAGE] for i in range(0, len(garbage), S3_PAGE)]))


def s3_floor_script(url: str, manifests: list[str], garbage: list[str], workdir: Path) -> list[str]:
    """A child process running s3_floor, so it is timed like the tools (interpreter start-up included)."""
    spec = workdir / "floor-s3.txt"
    spec.write_text("\n".join(["M " + m for m in manifests] + ["G " + g for g in garbage]))
    code = (
        "import sys; from pathlib import Path; from bench.bench_s3 import s3_floor;"
        "lines=Path(sys.argv[2]).read_text().splitlines();"
        "s3_floor(sys.argv[1], [l[2:] for l in lines if l[0]=='M'], [l[2:] for l in lines if l[0]=='G'])"
    )
    return [sys.executable, "-c", code, url, str(spec)]


def layout_for(size: int, workdir: Path) -> Generated:
    """``2000``: SPEC_2000; otherwise a generated layout of at least ``size`` blobs (seed 10)."""
    if size == 2000:
        gen = generate(workdir / "src-2000", SPEC_2000)
    else:
        asked = size
        for _ in range(4):  # the generator's blob count is approximate: scale until there are enough
            gen = generate(workdir / f"src-{size}-{asked}", spec_for_blobs(asked, seed=10))
            if gen.total_blobs >= size:
                break
            asked = int(asked * size / max(1, gen.total_blobs)) + 1
    age_tree(gen.root)
    return gen


def run_contender(name: str, store: BenchStore, gen: Generated, workdir: Path) -> dict[str, Any]:
    """Upload a copy, run one contender on it, count its requests, check what is left, remove the copy."""
    repo = next(iter(gen.blobs))
    manifests = sorted(gen.manifests[repo] & gen.reachable[repo])
    garbage = sorted(gen.blobs[repo] - gen.reachable[repo])
    prefix = f"copy-{name.replace(' ', '-').replace(':', '').replace('/', '')}"
    store.upload_tree(gen.root / repo, f"{prefix}/{repo}")
    mounted, url = store.path / prefix / repo, store.url(f"{prefix}/{repo}")
    argv = {
        "ocigc s3fs": [OCIGC, "sweep", str(mounted), "--grace", "0", "--yes", "--jobs", str(JOBS), "-q"],
        "ocigc s3fs-auto": [OCIGC, "sweep", str(mounted), "--grace", "0", "--yes", "--jobs", str(JOBS), "-q"],
        "ocigc s3://": [OCIGC, "sweep", url, "--grace", "0", "--yes", "--jobs", str(JOBS), "-q"],
        "umoci s3fs": ["umoci", "gc", "--layout", str(mounted)],
        "floor s3fs": floor_script(mounted, manifests, garbage, workdir),
        "floor s3://": s3_floor_script(url, manifests, garbage, workdir),
    }[name]
    try:
        store.reset_counts()
        via = "auto" if name == "ocigc s3fs-auto" else "mount"  # s3fs-auto: the bucket behind the mount
        r = timed(argv, env={**store.env(), "PYTHONPATH": str(ROOT), "OCIGC_VIA": via}, cwd=ROOT)
        counts = store.counts(reset=True)
        load = load_1min()
        if r.rc != 0:
            raise SystemExit(f"{name} on {store.column} failed: rc={r.rc}\n{r.stderr[-3000:]}")
        left = {"sha256:" + k for k in store.keys(f"{prefix}/{repo}/blobs/sha256") if k and "/" not in k}
    finally:
        store.delete_prefix(prefix)
    return {"contender": name, "wall_s": round(r.wall, 3), "cpu_s": round(r.cpu, 3),
            "peak_mb": round(r.max_rss_mb, 1), "requests": sum(counts.values()), "by_kind": counts,
            "ocigc_ops": r.ops, "load": load, "left_equals_reachable": left == gen.reachable[repo]}


def minimum_requests(gen: Generated) -> int:
    """The s3:// floor's requests: listing pages, index.json, reachable manifests, DeleteObjects."""
    repo = next(iter(gen.blobs))
    pages = max(1, -(-len(gen.blobs[repo]) // S3_PAGE))
    garbage = len(gen.blobs[repo] - gen.reachable[repo])
    return pages + 1 + len(gen.manifests[repo] & gen.reachable[repo]) + -(-garbage // S3_PAGE)


def fill(table: Matrix, kinds: Matrix, col: str, rows: dict[str, dict[str, Any]]) -> None:
    for name, row in rows.items():
        table.put(f"{name} (s)", col, row["wall_s"], row["load"])
    table.put_ratio("umoci / ocigc, s3fs", col, "umoci s3fs (s)", "ocigc s3fs (s)")
    table.put_ratio("ocigc / floor, s3fs", col, "ocigc s3fs (s)", "floor s3fs (s)")
    table.put_ratio("ocigc / floor, s3://", col, "ocigc s3:// (s)", "floor s3:// (s)")
    table.put_ratio("ocigc s3fs / s3:// (wall)", col, "ocigc s3fs (s)", "ocigc s3:// (s)")
    for name, row in rows.items():
        table.put(f"requests: {name}", col, row["requests"], row["load"])
        kinds.put(name, col, ", ".join(f"{k} {v}" for k, v in row["by_kind"].items()), row["load"])
    table.put_ratio("requests s3fs / s3:// (ocigc)", col, "requests: ocigc s3fs", "requests: ocigc s3://")
    table.put_ratio("requests ocigc / floor, s3://", col, "requests: ocigc s3://", "requests: floor s3://")
    if "ocigc s3fs-auto" in rows:  # --via auto through the same mount: the bucket behind it
        table.put_ratio("umoci / ocigc, s3fs-auto", col, "umoci s3fs (s)", "ocigc s3fs-auto (s)")
        table.put_ratio("requests s3fs-auto / s3:// (ocigc)", col, "requests: ocigc s3fs-auto", "requests: ocigc s3://")
    table.put("left exactly the reachable blobs", col, all(r["left_equals_reachable"] for r in rows.values()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sizes", default="2000,10000", help="layouts: 2000 (SPEC_2000) or about N blobs")
    ap.add_argument("--quick", action="store_true", help="one layout of about 300 blobs")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help=",".join(CONTENDERS))
    add_store_arguments(ap)
    args = ap.parse_args(argv)
    sizes = [300] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    contenders = [c for c in args.contenders.split(",") if c]
    if any(c not in CONTENDERS for c in contenders):
        ap.error(f"unknown contenders (have: {', '.join(CONTENDERS)})")
    combos = store_matrix(args)
    tables: list[Matrix] = []
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-s3-") as tmp:
        workdir = Path(tmp)
        layouts = {size: layout_for(size, workdir / "layouts") for size in sizes}
        pairs = []
        for size, gen in layouts.items():
            repo = next(iter(gen.blobs))
            facts = (f"{len(gen.blobs[repo])} blobs, {len(gen.manifests[repo])} manifests, "
                     f"{len(gen.blobs[repo] - gen.reachable[repo])} garbage; minimum s3:// requests "
                     f"{minimum_requests(gen)}")
            note = ("Seconds are wall time of each child process (start-up included); requests are counted by "
                    "the latency proxy (at 0 ms a proxy with no delay is in the path), s3fs's included. " + facts)
            pairs.append((Matrix(f"sweep, {size} blobs ({facts.split(';')[0]})", note),
                          Matrix(f"requests by kind, {size} blobs")))
        for kind, ms in combos:
            with open_store(kind, ms, workdir / f"store-{kind}-{ms}", count=True) as store:
                for (size, gen), (table, kinds) in zip(layouts.items(), pairs, strict=True):
                    rows = {}
                    for name in contenders:
                        rows[name] = run_contender(name, store, gen, workdir)
                        print(f"{store.column}, {size}: {name} {rows[name]['wall_s']} s, "
                              f"{rows[name]['requests']} requests (load {rows[name]['load']})", flush=True)
                    fill(table, kinds, store.column, rows)
        for table, kinds in pairs:
            tables += [table, kinds]
    for t in tables:
        print("\n" + t.markdown())
    path = save("s3", {"sizes": sizes, "tables": [t.to_json() for t in tables]})
    print(f"\nresults: {path}")
    ok = all(all(v for v in t.rows.get("left exactly the reachable blobs", {}).values()) for t in tables)
    if not ok:
        print("a sweep left something other than the reachable blobs", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
