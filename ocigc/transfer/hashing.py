"""Streaming copies that hash as they go: files and streams to a writer, pipelined so hashing and
writing overlap."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import BinaryIO, Protocol

from ocigc.digest import Digest
from ocigc.errors import (
    IntegrityError,
    OcigcError,
)
from ocigc.progress import Counter

#: Streaming chunk size and the number of chunks in flight between the reading and writing threads.
CHUNK = 1024 * 1024


PIPELINE_DEPTH = 8


# --- streaming ---------------------------------------------------------------------------------
class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


def hash_file(path: str, algorithm: str = "sha256", counter: Counter | None = None) -> tuple[Digest, int]:
    """Digest and size of a local file, read in constant memory."""
    h = hashlib.new(algorithm)
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
            if counter is not None:
                counter.add(n)
    return Digest(f"{algorithm}:{h.hexdigest()}"), size


class SizeExceeded(OcigcError):
    """A stream held more bytes than its descriptor says."""

    exit_code = IntegrityError.exit_code


def _fill(src: BinaryIO, buf: bytearray) -> int:
    """Read into ``buf`` (``readinto`` when the stream has it); 0 at EOF."""
    readinto = getattr(src, "readinto", None)
    if readinto is not None:
        return int(readinto(buf) or 0)
    data = src.read(len(buf))
    buf[:len(data)] = data
    return len(data)


def copy_hashing(src: BinaryIO, write: Callable[[memoryview], object], algorithm: str = "sha256", *,
                 max_bytes: int | None = None, on_bytes: Callable[[int], None] | None = None,
                 where: str = "stream") -> tuple[Digest, int]:
    """Copy ``src`` to ``write`` until EOF, hashing every byte; returns the digest and the size.

    A helper thread reads and hashes while the calling thread writes, so hashing (CPU) overlaps
    the write (I/O). Chunks live in a fixed pool of ``PIPELINE_DEPTH + 2`` buffers of ``CHUNK``
    bytes, reused (constant memory, no allocation per chunk); ``write`` gets a memoryview it must
    not keep. With ``max_bytes`` the copy stops with SizeExceeded as soon as the stream holds more.
    """
    h = hashlib.new(algorithm)
    first = bytearray(CHUNK)
    n = _fill(src, first)
    if n < CHUNK:  # small (or a short read): finish inline when the stream ends here
        extra = bytearray(CHUNK)
        m = _fill(src, extra) if n else 0
        if not m:
            if max_bytes is not None and n > max_bytes:
                raise SizeExceeded(f"{where}: larger than the expected {max_bytes} bytes")
            view = memoryview(first)[:n]
            h.update(view)
            if n:
                write(view)
                if on_bytes:
                    on_bytes(n)
            return Digest(f"{algorithm}:{h.hexdigest()}"), n
        return _copy_pipelined(src, write, h, algorithm, [(first, n), (extra, m)], max_bytes, on_bytes, where)
    return _copy_pipelined(src, write, h, algorithm, [(first, n)], max_bytes, on_bytes, where)


def _copy_pipelined(src: BinaryIO, write: Callable[[memoryview], object], h: _Hasher, algorithm: str,
                    firsts: list[tuple[bytearray, int]], max_bytes: int | None,
                    on_bytes: Callable[[int], None] | None, where: str) -> tuple[Digest, int]:
    q: queue.Queue[tuple[bytearray, int] | BaseException | None] = queue.Queue(maxsize=PIPELINE_DEPTH)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(PIPELINE_DEPTH + 2 - len(firsts)):
        free.put(bytearray(CHUNK))
    stop = threading.Event()
    total = [0]

    def put(item: tuple[bytearray, int] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def take() -> bytearray | None:
        while not stop.is_set():
            try:
                return free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def reader() -> None:
        try:
            pending = list(firsts)
            while True:
                if pending:
                    buf, n = pending.pop(0)
                else:
                    got = take()
                    if got is None:
                        return
                    buf, n = got, _fill(src, got)
                if not n:
                    put(None)
                    return
                total[0] += n
                if max_bytes is not None and total[0] > max_bytes:
                    raise SizeExceeded(f"{where}: larger than the expected {max_bytes} bytes")
                h.update(memoryview(buf)[:n])
                if not put((buf, n)):
                    return
        except BaseException as e:  # handed to the writer, which raises it
            put(e)

    t = threading.Thread(target=reader, name="ocigc-read", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            buf, n = item
            write(memoryview(buf)[:n])
            free.put(buf)
            if on_bytes:
                on_bytes(n)
    finally:
        stop.set()
        t.join()
    return Digest(f"{algorithm}:{h.hexdigest()}"), total[0]
