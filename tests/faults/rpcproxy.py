"""An HTTP JSON-RPC proxy on loopback that injects the faults of a flaky node or gateway.

    proxy = RpcProxy(anvil.url, Faults(error_rate=0.1), seed=1).start()
    url = proxy.url          # what the workers use as MARKET_RPC_URL
    proxy.counts             # Counter of what was done to each request
    proxy.faults = Faults()  # change the faults while it runs
    proxy.stop()

Where :class:`tests.e2e.proxy.TcpProxy` only cuts the node off, this one understands HTTP, so
it can fail single requests the way hosted RPC endpoints do:

- *slow*: every request waits ``delay_s`` (plus up to ``jitter_s``) before it is forwarded;
- *errors*: a fraction ``error_rate`` of requests never reach the node and get an HTTP 502 or
  503, a JSON-RPC error -32000 or -32603, or a TCP reset instead of an answer;
- *drops*: a fraction ``drop_rate`` of requests reach the node, which acts on them (a
  transaction enters its pool), but the answer is lost: the connection is closed before the
  first byte, or after the headers and half of the body. The client cannot tell whether its
  request was carried out, which is the hard case for a sender.

Whether a request gets a fault is drawn from a seeded generator, so a run is repeatable up to
thread scheduling; the kinds are taken in turn, so any five errors include every error kind.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

ERROR_KINDS = ("http-502", "http-503", "rpc-32000", "rpc-32603", "reset")
DROP_KINDS = ("drop-silent", "drop-cut")
UPSTREAM_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Faults:
    """What the proxy does to requests (the default: nothing, a transparent proxy)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    error_rate: float = 0.0
    error_kinds: tuple[str, ...] = ERROR_KINDS
    drop_rate: float = 0.0
    drop_kinds: tuple[str, ...] = DROP_KINDS
    # Per JSON-RPC method, the chance of a fault instead of ``error_rate + drop_rate`` (the
    # kind still drawn in that proportion): e.g. lose the answers to most transaction sends.
    method_rates: tuple[tuple[str, float], ...] = ()
    # Only requests of these methods get faults (None: all); delays apply to every request.
    methods: frozenset[str] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.error_kinds) - set(ERROR_KINDS) | set(self.drop_kinds) - set(DROP_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if not 0 <= self.error_rate + self.drop_rate <= 1:
            raise ValueError("error_rate + drop_rate must be within 0..1")
        if self.method_rates and self.error_rate + self.drop_rate == 0:
            raise ValueError("method_rates needs error_rate or drop_rate to choose the kind")

    def rate(self, method: str) -> float:
        """The chance that a request of ``method`` gets a fault."""
        if self.methods is not None and method not in self.methods:
            return 0.0
        return dict(self.method_rates).get(method, self.error_rate + self.drop_rate)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: RpcProxy


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as a real node or gateway: web3's session reuses its connections, so a
    # reset or a cut answer also hits the connection pool, not only one request.
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def do_POST(self) -> None:  # noqa: N802 - the base class's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy = self.server.proxy
        method = _method(body)
        fault, delay = proxy.draw(method)
        if delay:
            time.sleep(delay)
        if fault in ERROR_KINDS:
            proxy.count(fault, method)
            self._error(fault, body)
            return
        try:
            status, payload = proxy.forward(body)
        except OSError:
            proxy.count("upstream-error", method)
            self._abort()
            return
        if fault in DROP_KINDS:
            proxy.count(fault, method)
            if fault == "drop-cut":
                self._send(status, payload, cut=True)
            self._abort()
            return
        proxy.count("forwarded", method)
        self._send(status, payload)

    def _send(self, status: int, payload: bytes, *, cut: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2] if cut else payload)
        self.wfile.flush()

    def _error(self, kind: str, body: bytes) -> None:
        if kind == "reset":
            self._abort()
        elif kind.startswith("http-"):
            status = int(kind.removeprefix("http-"))
            self._send(status, json.dumps({"error": "bad gateway (injected)"}).encode())
        else:
            code = -int(kind.removeprefix("rpc-"))
            self._send(200, _rpc_error(body, code))

    def _abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0): the client reads ECONNRESET or a short body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()


def _method(body: bytes) -> str:
    try:
        request = json.loads(body)
    except ValueError:
        return "?"
    if isinstance(request, list):
        return "batch"
    return str(request.get("method", "?")) if isinstance(request, dict) else "?"


def _rpc_error(body: bytes, code: int) -> bytes:
    try:
        request = json.loads(body)
    except ValueError:
        request = {}
    ids = [r.get("id") for r in request] if isinstance(request, list) else [request.get("id")]
    errors = [
        {"jsonrpc": "2.0", "id": i, "error": {"code": code, "message": "internal error (injected)"}}
        for i in ids
    ]
    return json.dumps(errors if isinstance(request, list) else errors[0]).encode()


class RpcProxy:
    """Forward JSON-RPC over HTTP from ``127.0.0.1:<port>`` to ``target_url``, with faults."""

    def __init__(self, target_url: str, faults: Faults | None = None, *, seed: int = 0) -> None:
        parts = urlsplit(target_url)
        assert parts.hostname is not None and parts.port is not None, target_url
        self.target = (parts.hostname, parts.port)
        self.faults = faults or Faults()
        self.counts: Counter[str] = Counter()
        self.by_method: Counter[tuple[str, str]] = Counter()
        self._rng = random.Random(seed)
        self._turns: Counter[str] = Counter()  # faults given so far, per family
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._local = threading.local()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RpcProxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def draw(self, method: str) -> tuple[str | None, float]:
        """The fault for one request (None: forward it as is) and its delay."""
        f = self.faults
        with self._lock:
            delay = f.delay_s + (self._rng.uniform(0, f.jitter_s) if f.jitter_s else 0.0)
            if self._rng.random() >= f.rate(method):
                return None, delay
            if self._rng.random() * (f.error_rate + f.drop_rate) < f.error_rate:
                return self._take_turn("error", f.error_kinds), delay
            return self._take_turn("drop", f.drop_kinds), delay

    def _take_turn(self, family: str, kinds: tuple[str, ...]) -> str:
        """The next kind of ``family`` in rotation (called with the lock held)."""
        kind = kinds[self._turns[family] % len(kinds)]
        self._turns[family] += 1
        return kind

    def count(self, what: str, method: str) -> None:
        with self._lock:
            self.counts[what] += 1
            self.by_method[(what, method)] += 1

    def injected(self) -> int:
        """How many requests got a fault (not counting delays)."""
        with self._lock:
            return sum(n for what, n in self.counts.items() if what != "forwarded")

    def forward(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to the node on this thread's connection; its status and answer."""
        for attempt in (1, 2):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(*self.target, timeout=UPSTREAM_TIMEOUT_S)
                self._local.connection = connection
            try:
                connection.request(
                    "POST", "/", body=body, headers={"Content-Type": "application/json"}
                )
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


__all__ = ["DROP_KINDS", "ERROR_KINDS", "Faults", "RpcProxy"]
