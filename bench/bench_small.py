"""Small operations on object stores: a one-file push and a tag delete through ocigc, against an
oras-style plain write of the same file, through s3fs (``--via mount``, and ``--via auto``: the
bucket behind the mount) and ``s3://``, on moto and SeaweedFS at 0 and 20 ms per request.

    python -m bench small                       # every store and latency, 5 rounds
    python -m bench small -- --quick            # 2 rounds
    python -m bench small -- --stores seaweedfs --latency 20 --rounds 9

Every round starts from two fresh copies of a small layout (one tagged image), uploaded with boto3
straight to the store: one for ocigc, one for the plain writer. Then, each as its own process:

- ``ocigc push LAYOUT:pushed FILE:text/plain`` (the lock, the blob, the empty config, the manifest,
  index.json under the index hold, the journal) and ``ocigc delete LAYOUT:pushed --yes``;
- the plain write (what oras does to a layout: no lock, nothing verified): the blob, the config
  ``{}`` and the manifest written, index.json read and rewritten with the tag; and the plain untag:
  index.json read and rewritten without it. Through the mount with ``open().write()``; for
  ``s3://`` the same objects with boto3 ``put_object``/``get_object``.

Figures: the median of the rounds' wall times (whole processes: interpreter start-up included on
both sides; ``ocigc --version`` gives ocigc's start-up), ocigc / plain ratios (how many times
slower ocigc is), and requests counted by the latency proxy (at 0 ms a proxy with no delay is in
the path). ``--settle`` sets ocigc's lock settle (default: the lock protocol's own, 2 s on FUSE).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OCIGC, ROOT, Matrix, load_1min, median, save, timed
from bench.stores import BenchStore, add_store_arguments, open_store, store_matrix

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
REF = "org.opencontainers.image.ref.name"
TAG = "pushed"
FILE = "notes.txt"


# ------------------------------------------------------------------------ the plain writer (child)
class Target:
    """A layout's files: a directory (through the mount) or an ``s3://`` prefix (boto3)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.client: Any = None
        if where.startswith("s3://"):
            import boto3
            from botocore.config import Config

            self.bucket, _, self.prefix = where.removeprefix("s3://").partition("/")
            self.client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))

    def read(self, rel: str) -> bytes:
        if self.client is None:
            return (Path(self.where) / rel).read_bytes()
        return bytes(self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{rel}")["Body"].read())

    def write(self, rel: str, data: bytes) -> None:
        if self.client is None:
            path = Path(self.where) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{rel}", Body=data)


def _blob(target: Target, data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    target.write(f"blobs/sha256/{digest[7:]}", data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _retag(target: Target, tag: str, entry: dict[str, Any] | None) -> None:
    index = json.loads(target.read("index.json"))
    kept = [m for m in index.get("manifests") or [] if (m.get("annotations") or {}).get(REF) != tag]
    index["manifests"] = kept + ([entry] if entry else [])
    target.write("index.json", json.dumps(index).encode())


def plain_write(where: str, file: str, tag: str) -> None:
    """What oras does pushing one file to a layout: blob, config ``{}``, manifest, index.json rewritten."""
    target = Target(where)
    layer = _blob(target, Path(file).read_bytes(), "text/plain")
    layer["annotations"] = {"org.opencontainers.image.title": Path(file).name}
    config = _blob(target, b"{}", EMPTY)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": "application/vnd.unknown.artifact.v1",
                "config": config, "layers": [layer]}
    entry = _blob(target, json.dumps(manifest).encode(), MANIFEST)
    _retag(target, tag, {**entry, "annotations": {REF: tag}})


def plain_untag(where: str, tag: str) -> None:
    """index.json read and rewritten without ``tag`` (nothing else: no lock, no blobs removed)."""
    _retag(Target(where), tag, None)


def plain_argv(*args: str) -> list[str]:
    code = ("import sys; from bench.bench_small import plain_write, plain_untag;"
            "plain_write(*sys.argv[2:]) if sys.argv[1] == 'write' else plain_untag(*sys.argv[2:])")
    return [sys.executable, "-c", code, *args]


# ------------------------------------------------------------------------------ the benchmark
def seed_layout(root: Path) -> Path:
    """A small layout with one tagged image, the starting point of every round."""
    from tests.kit.layouts import LayoutBuilder

    b = LayoutBuilder(root)
    b.image("base", [b"a base layer", b"another layer"])
    b.save()
    return root


def measure(store: BenchStore, label: str, argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    store.reset_counts()
    r = timed(argv, env=env, cwd=cwd)
    counts = store.counts(reset=True)
    if r.rc != 0:
        raise SystemExit(f"{label} on {store.column} failed: rc={r.rc}\n{r.stderr[-3000:]}")
    return {"wall_s": r.wall, "requests": sum(counts.values()), "by_kind": counts, "load": load_1min()}


def one_round(store: BenchStore, path: str, i: int, seed: Path, files: Path,
              env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """ocigc push + delete on one fresh copy, plain write + untag on another; one path (s3fs or s3://)."""
    where: dict[str, str] = {}
    prefixes = [f"r{i}-{who}-{'s3' if path == 's3://' else 'fuse'}" for who in ("ocigc", "plain")]
    for who, prefix in zip(("ocigc", "plain"), prefixes, strict=True):
        store.upload_tree(seed, prefix)
        where[who] = store.url(prefix) if path == "s3://" else str(store.path / prefix)
    # s3fs: through the mount (--via mount); s3fs-auto: the same mount, --via auto (the bucket behind it)
    env = {**env, **store.env(), "PYTHONPATH": str(ROOT), "OCIGC_VIA": "auto" if path == "s3fs-auto" else "mount"}
    file = str(files / FILE)
    try:
        return {
            "ocigc push": measure(store, "ocigc push", [OCIGC, "push", "-q", f"{where['ocigc']}:{TAG}",
                                                        f"{FILE}:text/plain"], env, files),
            "plain write": measure(store, "plain write", plain_argv("write", where["plain"], file, TAG), env, ROOT),
            "ocigc delete": measure(store, "ocigc delete", [OCIGC, "delete", "--yes", "-q", f"{where['ocigc']}:{TAG}",
                                                            "--yes"], env, files),
            "plain untag": measure(store, "plain untag", plain_argv("untag", where["plain"], TAG), env, ROOT),
        }
    finally:
        for prefix in prefixes:
            store.delete_prefix(prefix)


def fill(table: Matrix, col: str, path: str, rounds: list[dict[str, dict[str, Any]]]) -> None:
    for op in ("ocigc push", "plain write", "ocigc delete", "plain untag"):
        runs = [r[op] for r in rounds]
        table.put(f"{op}, {path} (s)", col, round(median([x["wall_s"] for x in runs]), 3),
                  max(x["load"] for x in runs))
    table.put_ratio(f"ocigc push / plain write, {path}", col, f"ocigc push, {path} (s)", f"plain write, {path} (s)")
    table.put_ratio(f"ocigc delete / plain write, {path}", col, f"ocigc delete, {path} (s)", f"plain write, {path} (s)")
    table.put_ratio(f"ocigc delete / plain untag, {path}", col, f"ocigc delete, {path} (s)", f"plain untag, {path} (s)")
    for op in ("ocigc push", "plain write", "ocigc delete", "plain untag"):
        runs = [r[op] for r in rounds]
        table.put(f"requests: {op}, {path}", col, int(median([x["requests"] for x in runs])),
                  max(x["load"] for x in runs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=None, help="rounds per store and latency (default 5; --quick 2)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--paths", default="s3fs,s3fs-auto,s3://",
                    help="s3fs (--via mount), s3fs-auto (the same mount, --via auto), s3://")
    ap.add_argument("--size", type=int, default=4096, help="bytes of the pushed file")
    ap.add_argument("--settle", default=None, help="OCIGC_LOCK_SETTLE for ocigc (default: the protocol's own)")
    add_store_arguments(ap)
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    paths = [p for p in args.paths.split(",") if p]
    env = {"NO_COLOR": "1"}
    if args.settle is not None:
        env["OCIGC_LOCK_SETTLE"] = args.settle
    note = ("Median of the rounds' wall times (whole processes, start-up included); requests counted by the latency "
            "proxy (at 0 ms a proxy with no delay is in the path). Ratios: ocigc / plain (times slower).")
    table = Matrix(f"one-file push ({args.size} bytes) and tag delete vs a plain write", note)
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ocigc-bench-small-") as tmp:
        work = Path(tmp)
        seed = seed_layout(work / "seed")
        files = work / "files"
        files.mkdir()
        (files / FILE).write_bytes(os.urandom(args.size // 2).hex().encode()[:args.size])
        startup = median([timed([OCIGC, "--version"]).wall for _ in range(3)])
        for kind, ms in store_matrix(args):
            with open_store(kind, ms, work / f"store-{kind}-{ms}", count=True) as store:
                table.put("ocigc start-up: ocigc --version (s)", store.column, round(startup, 3), load_1min())
                for path in paths:
                    runs = [one_round(store, path, i, seed, files, env) for i in range(rounds)]
                    raw[f"{store.column} {path}"] = runs
                    fill(table, store.column, path, runs)
                    print(f"{store.column} {path}: " + ", ".join(
                        f"{op} {median([r[op]['wall_s'] for r in runs]):.2f} s" for op in runs[0]), flush=True)
    print("\n" + table.markdown())
    out = save("small", {"rounds": rounds, "size": args.size, "table": table.to_json(), "runs": raw})
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
