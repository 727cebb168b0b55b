"""An HTTP proxy in front of an S3 endpoint that gives every request a bucket's round trip.

    python -m tests.harness.proxy --port P --upstream http://127.0.0.1:U --delay 0.02 [--strip-conditional LOG]

Each request waits ``--delay`` seconds, then is forwarded; requests are served concurrently (a
thread per client connection, keep-alive on both sides), and bodies stream through in 1 MiB pieces
in both directions, so a 2 GiB upload costs no memory. The kernel here has no ``sch_netem``, so
``tc netem`` cannot add the delay.

``--strip-conditional LOG`` drops ``If-Match`` and ``If-None-Match`` from every request (a store that
accepts the headers and ignores them) and appends ``METHOD Header`` to LOG for each one.

``GET /-/proxy-ready`` answers 204 at once: the harness's readiness check. ``GET /-/proxy-stats``
answers the requests forwarded so far as JSON, counted by kind when they arrive: ``GET``, ``HEAD``,
``PUT``, ``POST``, ``DELETE``, ``LIST`` (a GET with a ``list-type``, ``prefix`` or ``delimiter``
query parameter) and ``DELETE-MANY`` (a POST with ``?delete``); ``POST /-/proxy-stats/reset`` answers
the same and sets every count to zero. Neither is delayed nor counted.
``POST /-/proxy-lose-answer?method=PUT&path=SUBSTRING`` arms a one-shot fault: the next such request
is forwarded and done by the store, and its answer is lost (the client's connection is closed
without a response), as when a network drops it on the way back; the client retries.
"""

from __future__ import annotations

import argparse
import http.client
import json
import select
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

PIECE = 1 << 20
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect"}
CONDITIONAL = {"if-match", "if-none-match"}
LIST_PARAMETERS = {"list-type", "prefix", "delimiter"}


def request_kind(method: str, path: str) -> str:
    """The kind a request is counted as: its method, or LIST / DELETE-MANY."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    if method == "GET" and LIST_PARAMETERS & query.keys():
        return "LIST"
    if method == "POST" and "delete" in query:
        return "DELETE-MANY"
    return method


class RequestStats:
    """Thread-safe counts of the requests forwarded, by kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1

    def snapshot(self, reset: bool = False) -> dict[str, int]:
        with self._lock:
            counts = dict(sorted(self._counts.items()))
            if reset:
                self._counts.clear()
        return counts


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection the other end closed reads as ready (EOF): check before reuse."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Handler(BaseHTTPRequestHandler):
    upstream: ClassVar[tuple[str, int]] = ("127.0.0.1", 0)
    delay: ClassVar[float] = 0.0
    strip_log: ClassVar[str | None] = None
    log_lock: ClassVar[threading.Lock] = threading.Lock()
    stats: ClassVar[RequestStats] = RequestStats()
    #: Armed one-shot faults: (method, path substring) whose next answer is lost.
    lose: ClassVar[list[tuple[str, str]]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # No Nagle on the client's side: an answer goes out as headers, then body, in two writes;
        # with Nagle the body waits for the ACK of the headers, which the client delays (40 ms on
        # Linux): every answer with a body would cost 40 ms more than the delay we mean to give it.
        # (http.client sets TCP_NODELAY on the upstream side itself; so do boto3 and s3fs's curl.)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        if self._conn is not None:
            self._conn.close()
        super().finish()

    # ------------------------------------------------------------------ request side
    def _body_pieces(self) -> Any:
        """The request body as it arrives: Content-Length bytes, or chunked pieces (decoded)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            piece = self.rfile.read(min(PIECE, left))
            if not piece:
                return
            left -= len(piece)
            yield piece

    def _headers_out(self) -> list[tuple[str, str]]:
        out = []
        strip = self.strip_log is not None
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        for key, value in self.headers.items():
            low = key.lower()
            if low in HOP_BY_HOP or low == "transfer-encoding" or (chunked and low == "content-length"):
                continue
            if strip and low in CONDITIONAL:
                with self.log_lock, open(self.strip_log, "a") as log:  # type: ignore[arg-type]
                    log.write(f"{self.command} {key}\n")
                continue
            out.append((key, value))
        return out

    def _send_upstream(self) -> http.client.HTTPResponse:
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        for attempt in (1, 2):
            if self._conn is not None and _dropped(self._conn):
                self._conn.close()  # the store closed the idle connection: do not send on it
                self._conn = None
            if self._conn is None:
                self._conn = http.client.HTTPConnection(*self.upstream, timeout=300)
            conn = self._conn
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in self._headers_out():
                    conn.putheader(key, value)
                if chunked:
                    conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                for piece in self._body_pieces():
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                if chunked:
                    conn.send(b"0\r\n\r\n")
                return conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                # a kept-alive upstream connection closed under us: retry once on a new one, only
                # when no body had to be sent (the body is gone)
                conn.close()
                self._conn = None
                if attempt == 2 or self.headers.get("Content-Length") not in (None, "0") or chunked:
                    raise
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- response side
    def _control(self) -> bool:
        """The proxy's own endpoints (``/-/...``); True when the request was one (answered here)."""
        url = urlsplit(self.path)
        if (self.command, url.path) in (("GET", "/-/proxy-stats"), ("POST", "/-/proxy-stats/reset")):
            for _piece in self._body_pieces():
                pass
            body = json.dumps(self.stats.snapshot(reset=self.command == "POST")).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        if url.path == "/-/proxy-ready":
            pass
        elif url.path == "/-/proxy-lose-answer":
            query = parse_qs(url.query)
            with self.log_lock:
                self.lose.append((query.get("method", ["PUT"])[0], query.get("path", [""])[0]))
        else:
            return False
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _answer_lost(self) -> bool:
        with self.log_lock:
            for fault in self.lose:
                if fault[0] == self.command and fault[1] in self.path:
                    self.lose.remove(fault)
                    return True
        return False

    def _forward(self) -> None:
        if self.path.startswith("/-/") and self._control():
            return
        self.stats.add(request_kind(self.command, self.path))
        if self.delay:
            time.sleep(self.delay)
        try:
            resp = self._send_upstream()
        except OSError as e:
            self.send_error(502, f"upstream: {e}")
            self.close_connection = True
            return
        if self._answer_lost():
            resp.read()
            self.close_connection = True
            return
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        chunked = length is None and self.command != "HEAD" and resp.status not in (204, 304)
        for key, value in resp.getheaders():
            if key.lower() in HOP_BY_HOP or key.lower() == "transfer-encoding":
                continue
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            # read even a HEAD's answer (http.client returns b"" and marks it closed): an answer left
            # open makes the next request on this upstream connection fail after it was sent (the
            # client then sends it again: a conditional PUT's second copy gets 412)
            piece = resp.read(PIECE)
            if not piece:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        if resp.will_close:
            assert self._conn is not None
            self._conn.close()
            self._conn = None

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--strip-conditional", metavar="LOG")
    args = parser.parse_args(argv)
    up = urlsplit(args.upstream)
    Handler.upstream = (up.hostname or "127.0.0.1", up.port or 80)
    Handler.delay = args.delay
    Handler.strip_log = args.strip_conditional
    server = Server(("127.0.0.1", args.port), Handler)
    print(f"proxy 127.0.0.1:{args.port} -> {args.upstream}, {args.delay * 1000:.0f} ms per request", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
