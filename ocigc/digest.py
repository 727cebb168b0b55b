"""Digests: validation, blob paths and streaming verification (sha256, sha384, sha512)."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from ocigc.errors import InvalidDigest

#: Supported algorithms and the length of their lowercase hex encoding.
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")
#: Per algorithm: whether a name is exactly its lowercase hex encoding (a blob's file name).
_BLOB_NAME = {alg: re.compile(f"[a-f0-9]{{{n}}}").fullmatch for alg, n in ALGORITHMS.items()}
CHUNK = 1024 * 1024


class Digest(str):
    """A validated ``alg:hex`` digest string. Equal to (and hashable as) the plain string."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str):
            raise InvalidDigest(f"digest must be a string, got {type(value).__name__}")
        alg, sep, hexpart = value.partition(":")
        if not sep:
            raise InvalidDigest(f"invalid digest {value[:80]!r}: expected ALGORITHM:HEX")
        if alg not in ALGORITHMS:
            raise InvalidDigest(f"invalid digest {value[:80]!r}: unsupported algorithm {alg[:20]!r}")
        if len(hexpart) != ALGORITHMS[alg] or not _HEX.match(hexpart):
            raise InvalidDigest(
                f"invalid digest {value[:80]!r}: {alg} needs {ALGORITHMS[alg]} lowercase hex characters"
            )
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.partition(":")[0]

    @property
    def encoded(self) -> str:
        return self.partition(":")[2]

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.encoded[:12]}"

    def blob_path(self) -> str:
        """Path of the blob relative to the layout root."""
        return f"blobs/{self.algorithm}/{self.encoded}"

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")

    @classmethod
    def from_blob_name(cls, algorithm: str, name: str) -> Digest | None:
        """The digest named by ``blobs/<algorithm>/<name>``, or None when it is not one."""
        match = _BLOB_NAME.get(algorithm)
        if match is None or match(name) is None:
            return None
        return str.__new__(cls, f"{algorithm}:{name}")  # exactly what ``__new__`` accepts, checked above


def is_digest(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        Digest(value)
    except InvalidDigest:
        return False
    return True


class DigestingReader:
    """Wraps a binary stream, hashing and counting every byte read through it."""

    def __init__(self, stream: BinaryIO, algorithm: str = "sha256") -> None:
        self._stream = stream
        self._hash = hashlib.new(algorithm)
        self.algorithm = algorithm
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def digest(self) -> Digest:
        return Digest(f"{self.algorithm}:{self._hash.hexdigest()}")


def digest_stream(stream: BinaryIO, algorithm: str = "sha256") -> tuple[Digest, int]:
    """Hash a stream in constant memory; returns the digest and the byte count."""
    reader = DigestingReader(stream, algorithm)
    while reader.read(CHUNK):
        pass
    return reader.digest(), reader.size


