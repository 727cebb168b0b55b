"""Native s3:// vs an s3fs mount: the same 10,000-blob layout swept both ways, side by side.

One moto server, one bucket, the layout uploaded twice (``fuse/<repo>`` and ``native/<repo>``); an s3fs
mount of the bucket (the harness's recommended options). Each sweep runs as a child process; the
requests it causes are counted from moto's request log (every HTTP request the server answered,
whoever sent it: ocigc's boto3 client or the s3fs daemon), by method. Afterwards both copies must hold
exactly the reachable blobs.

    python -m bench s3                    # 10,000 blobs
    python -m bench s3 -- --blobs 2000    # smaller
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OCIGC, ObjectStore, object_store, ratio, save, timed
from bench.gen import generate, spec_for_blobs

JOBS = 16
_REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/[0-9.]+')


def requests_since(log: Path, offset: int, prefix: str = "") -> tuple[Counter[str], int, int]:
    """Requests in moto's log after byte ``offset`` that concern keys under ``prefix``, by method; the
    number of other requests (whoever else used the server or the mount meanwhile); the new offset."""
    with open(log, "rb") as f:
        f.seek(offset)
        data = f.read()
    counts: Counter[str] = Counter()
    others = 0
    for line in data.decode(errors="replace").splitlines():
        m = _REQUEST.search(line)
        if not m:
            continue
        method, path = m.groups()
        path = unquote(path)
        if prefix and f"/{prefix}" not in path and f"prefix={prefix}" not in path and "delete" not in path:
            others += 1
            continue
        kind = "LIST" if method == "GET" and ("list-type" in path or "delimiter" in path or "prefix=" in path) \
            else ("DELETE-MANY" if method == "POST" and "delete" in path else method)
        counts[kind] += 1
    return counts, others, offset + len(data)


def blob_keys(store: ObjectStore, prefix: str) -> set[str]:
    out: set[str] = set()
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket,
                                                                       Prefix=f"{prefix}/blobs/"):
        for obj in page.get("Contents") or []:
            alg, hexd = obj["Key"].rsplit("/", 2)[-2:]
            out.add(f"{alg}:{hexd}")
    return out


def run_case(label: str, argv: list[str], env: dict[str, str], store: ObjectStore, log: Path,
             prefix: str, reachable: set[str]) -> dict[str, Any]:
    _, _, offset = requests_since(log, 0)
    r = timed(argv, env=env)
    if r.rc != 0:
        raise SystemExit(f"{label}: sweep failed (rc={r.rc})\n{r.stderr[-3000:]}")
    counts, others, _ = requests_since(log, offset, prefix.split("/", 1)[0])  # s3fs also HEADs the parents
    left = blob_keys(store, prefix)
    return {"where": label, "wall_s": round(r.wall, 2), "cpu_s": round(r.cpu, 2), "requests": sum(counts.values()),
            "other_requests": others, "by_method": dict(sorted(counts.items())), "ocigc_ops": r.ops,
            "peak_mb": round(r.max_rss_mb, 1), "left_equals_reachable": left == reachable,
            "stderr": r.stderr.strip()[-500:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-s3-") as tmp:
        workdir = Path(tmp)
        asked = args.blobs
        for _ in range(4):  # the generator's blob count is approximate: scale until there are enough
            gen = generate(workdir / f"src-{asked}", spec_for_blobs(asked, seed=10))
            if gen.total_blobs >= args.blobs:
                break
            asked = int(asked * args.blobs / max(1, gen.total_blobs)) + 1
        repo = next(iter(gen.blobs))
        layout = gen.root / repo
        reachable = gen.reachable[repo]
        with object_store(workdir / "store") as store:
            print(f"uploading {len(gen.blobs[repo])} blobs twice ...", flush=True)
            store.upload_tree(layout, f"fuse/{repo}")
            store.upload_tree(layout, f"native/{repo}")
            log = store.server.log_path
            env = store.server.env()
            mount = Path(store.mount.mount_point)
            rows = [
                run_case("s3fs mount", [OCIGC, "sweep", str(mount / "fuse" / repo), "--grace", "0", "--yes",
                                        "--jobs", str(JOBS), "-q"], {}, store, log, f"fuse/{repo}", reachable),
                run_case("s3:// native", [OCIGC, "sweep", f"s3://{store.bucket}/native/{repo}", "--grace", "0",
                                          "--yes", "--jobs", str(JOBS), "-q"], env, store, log, f"native/{repo}",
                         reachable),
            ]
    fuse, native = rows
    summary = {"blobs": len(gen.blobs[repo]), "manifests": len(gen.manifests[repo]),
               "garbage": len(gen.blobs[repo] - reachable),
               "requests_ratio": ratio(fuse["requests"], native["requests"]),
               "wall_ratio": ratio(fuse["wall_s"], native["wall_s"])}
    print(f"\n{summary['blobs']} blobs, {summary['manifests']} manifests, {summary['garbage']} unreachable\n")
    print("| where | wall s | CPU s | requests | by method | other requests meanwhile | left = reachable |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        methods = ", ".join(f"{k} {v}" for k, v in r["by_method"].items())
        print(f"| {r['where']} | {r['wall_s']} | {r['cpu_s']} | {r['requests']} | {methods} | "
              f"{r['other_requests']} | {r['left_equals_reachable']} |")
    print(f"\nnative: {summary['requests_ratio']}x fewer requests, {summary['wall_ratio']}x less wall time")
    path = save("s3", {"summary": summary, "rows": rows})
    print(f"results: {path}")
    if not all(r["left_equals_reachable"] for r in rows):
        raise SystemExit("a sweep left something other than the reachable blobs")


if __name__ == "__main__":
    main()
