"""A fault-injecting HTTP proxy on loopback, in front of the moto S3 server (or any HTTP server).

Each request is, with seeded probabilities, answered 503 SlowDown or 500 InternalError, cut off
by a connection reset (RST, nothing answered), delayed, or forwarded untouched. PUT/POST under `deny_writes_under` get 403 AccessDenied, as a bucket policy would answer. Requests
for paths under a prefix of `faults_under` ({"/bucket/prefix/": "refused" or "slow_down"}) always get
that fault: an outage of the objects after their listing (a listing's path is "/bucket?..."). `down()` refuses
every connection, as an endpoint that is gone; `up()` brings it back. Counts of what was done are
in `stats`. Standalone (no pytest imports).
"""
from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
ACCESS_DENIED = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
INTERNAL = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>'
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    """proxy = FaultProxy("http://127.0.0.1:PORT", fault_rate=0.05, seed=0).start(); proxy.url ..."""

    def __init__(self, upstream: str, fault_rate: float = 0.05, seed: int = 0, delay_s: float = 0.3):
        host_port = upstream.split("://", 1)[1].rstrip("/")
        self.upstream_host, port = host_port.rsplit(":", 1)
        self.upstream_port = int(port)
        self.fault_rate = fault_rate
        self.delay_s = delay_s
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.stats: Counter = Counter()
        self.refusing = False
        self.deny_writes_under: str | None = None  # e.g. "/bucket/prefix": PUT/POST there get 403 AccessDenied
        self.faults_under: dict[str, str] = {}  # path prefix -> the fault every request there gets
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def down(self) -> None:
        self.refusing = True

    def up(self) -> None:
        self.refusing = False

    def _fault(self) -> str:
        with self.lock:
            draw = self.random.random()
        if draw >= self.fault_rate:
            return "forward"
        kinds = ("slow_down", "internal", "reset", "delay")
        return kinds[min(int(draw / self.fault_rate * len(kinds)), len(kinds) - 1)]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = b""
        length = int(request.headers.get("Content-Length") or 0)
        if length:
            body = request.rfile.read(length)
        fault = "refused" if self.refusing else self._fault()
        for prefix, kind in self.faults_under.items():
            if request.path.startswith(prefix):
                fault = kind
        if self.deny_writes_under and request.command in ("PUT", "POST") and request.path.startswith(self.deny_writes_under):
            fault = "access_denied"
        with self.lock:
            self.stats[fault] += 1
            self.stats["requests"] += 1
        if fault in ("reset", "refused"):
            request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.close_connection = True
            request.connection.close()
            return
        if fault in ("slow_down", "internal", "access_denied"):
            status, payload = {"slow_down": (503, SLOW_DOWN), "internal": (500, INTERNAL), "access_denied": (403, ACCESS_DENIED)}[fault]
            request.send_response(status)
            request.send_header("Content-Type", "application/xml")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            if request.command != "HEAD":
                request.wfile.write(payload)
            return
        if fault == "delay":
            threading.Event().wait(self.delay_s)
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        upstream.request(request.command, request.path, body=body or None, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        request.send_response_only(response.status, response.reason)
        head = request.command == "HEAD"  # keeps the object's Content-Length; there is no body
        for key, value in response.getheaders():
            if key.lower() not in HOP_HEADERS and (head or key.lower() != "content-length"):
                request.send_header(key, value)
        if not head:
            request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(payload)
        upstream.close()
