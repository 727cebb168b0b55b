"""The S3 environment of the tests: one of the harness's object stores (moto, SeaweedFS) as the
process's AWS endpoint, a bucket to upload trees to and read keys from."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ocigc.layout.layout import Layout
from ocigc.storage.s3 import S3Storage
from ocigc.storage.s3client import reset_clients

OLD = 7200.0


class S3Env:
    """A bucket of one of the harness's object stores: upload local trees, read keys back."""

    def __init__(self, server: Any, bucket: str) -> None:
        self.server = server
        self.bucket = bucket
        self.client = server.client()

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def storage(self, prefix: str = "") -> S3Storage:
        return S3Storage.from_url(self.url(prefix))

    def layout(self, prefix: str) -> Layout:
        return Layout.open(self.storage(prefix))

    def upload(self, local: Path, prefix: str, age: float | None = OLD, young: tuple[str, ...] = ()) -> str:
        """Every file under ``local`` to ``prefix/``; with ``age``, an ``x-amz-meta-mtime`` that old (as
        s3fs writes it; LastModified stays the upload time). Files named in ``young`` get no age."""
        for p in sorted(local.rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(local).as_posix()
            extra: dict[str, Any] = {}
            if age is not None and rel not in young:
                extra["Metadata"] = {"mtime": str(int(time.time() - age))}
            self.client.put_object(Bucket=self.bucket, Key=f"{prefix}/{rel}", Body=p.read_bytes(), **extra)
        return prefix

    def keys(self, prefix: str) -> dict[str, str]:
        """Key (relative to ``prefix``) -> ETag, for every object under ``prefix/``."""
        out: dict[str, str] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{prefix}/"):
            for obj in page.get("Contents") or []:
                out[obj["Key"][len(prefix) + 1:]] = obj["ETag"]
        return out

    def layout_keys(self, prefix: str) -> dict[str, str]:
        """``keys`` without ocigc's control directory (journal, backups, locks)."""
        return {k: v for k, v in self.keys(prefix).items() if not k.startswith(".ocigc/")}

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception:
            return False
        return True

    def has_blob(self, prefix: str, digest: str) -> bool:
        alg, hexd = digest.split(":")
        return self.exists(f"{prefix}/blobs/{alg}/{hexd}")

    def tags(self, prefix: str) -> list[str | None]:
        doc = json.loads(self.read(f"{prefix}/index.json"))
        return [(m.get("annotations") or {}).get("org.opencontainers.image.ref.name") for m in doc["manifests"]]

    def download(self, prefix: str, dst: Path) -> Path:
        for key in self.keys(prefix):
            p = dst / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(self.read(f"{prefix}/{key}"))
        return dst


def s3_env(server: Any, bucket: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Env]:
    """An object store of the harness as the process's AWS endpoint (for the ``s3`` fixtures of the modules)."""
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OCIGC_S3_CONDITIONAL", raising=False)
    monkeypatch.setenv("OCIGC_LOCK_SETTLE", "0.05")
    reset_clients()
    yield S3Env(server, bucket)
    reset_clients()


def fresh(name: str = "t") -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"
