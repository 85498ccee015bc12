"""Participant polls against the real API process: throughput, latency, RPC calls per poll.

uvicorn serves ``market.api:app`` on loopback with ``WORKERS`` processes; the status cache in
Redis holds one market with ``CONTRIBUTORS`` contributors (the shape ``market.status``
writes), and a thread plays the worker, rewriting the status every second as reconcile does.
A separate load process (``benchmarks._loadgen``) polls
``GET /markets/{market}/contributors/{account}`` for random contributors for ``SECONDS``.
``MARKET_RPC_URL`` points at a counting HTTP server: every JSON-RPC call the API made would
land there, so ``rpc_calls_per_poll`` is measured, not assumed.

What bounds it: two cores shared by the server workers and the load generator; per poll the
server parses HTTP, routes, builds the contributor view from the memoised cache documents and
serialises about 500 bytes of JSON. Redis is read once per worker per memo period. uvicorn
picks httptools and uvloop when they are installed (``uvicorn[standard]``); the result says
which ran, since its pure-Python h11 parser is several times slower here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from market.services import ensure_redis
from market.status import contributors_key, status_key

ROOT = Path(__file__).resolve().parents[1]
# A database of its own: the benchmark writes and deletes only its own market's keys.
REDIS_URL = os.environ.get("MARKET_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
CONTRIBUTORS = 200
CONTRIBUTIONS_PER_ACCOUNT = 2
SECONDS = 60.0
WARMUP_SECONDS = 3.0
# Two server processes for two cores; the load process takes its share of them too.
WORKERS = 2
# Enough concurrent pollers to keep both workers busy; more only adds queueing to the latency.
CONNECTIONS = 8
MARKET = "0x" + "5a" * 20
TOKEN = "bench-token"


class _CountingRpc(BaseHTTPRequestHandler):
    """Stands in for the chain endpoint and counts every request the API sends it."""

    calls = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
        with self.lock:
            type(self).calls += 1
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"counting proxy"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accounts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["0x" + rng.randbytes(20).hex() for _ in range(n)]


def _documents(accounts: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A market in REWARD with projected payouts: the largest contributor document."""
    per = CONTRIBUTIONS_PER_ACCOUNT
    entries = {
        a: {
            "ids": [1 + k * len(accounts) + i for k in range(per)],
            "deposits": [str(10**16)] * per,
            "payouts": None,
            "withdrawn": [False] * per,
            "projected": str(10**16 + i * 10**12),
        }
        for i, a in enumerate(accounts)
    }
    status = {
        "address": MARKET,
        "phase": "REWARD",
        "phase_code": 3,
        "final": False,
        "bounty": str(10**18),
        "contributions": per * len(accounts),
        "deposits": str(per * len(accounts) * 10**16),
        "earliest_end": 1_000,
        "latest_end": 2_000,
        "revealed": 400,
        "test_count": 400,
        "reveal_progress": 1.0,
        "reward": {"stage": 0, "trained": 150, "settled": 0, "active": 400, "progress": 0.19},
        "transactions": [
            {"step": "reveal", "tx_hash": "0x" + f"{i:064x}", "gas_used": 14_000_000, "block": i}
            for i in range(20)
        ],
        "last_error": None,
        "updated_at": time.time(),
    }
    return status, {"accounts": entries, "seen": per * len(accounts), "projected": True}


def _play_worker(client: Any, status: dict[str, Any], stop: threading.Event) -> None:
    """Rewrite the status every second, as the reconcile loop does."""
    while not stop.wait(1.0):
        status["updated_at"] = time.time()
        client.set(status_key(MARKET), json.dumps(status, sort_keys=True))


def _wait_for(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _loadgen(port: int, paths_file: str, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks._loadgen",
            "--port",
            str(port),
            "--paths",
            paths_file,
            "--seconds",
            str(seconds),
            "--connections",
            str(CONNECTIONS),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run() -> dict[str, Any]:
    """Serve, fill the cache, poll for SECONDS; the figures."""
    ensure_redis(REDIS_URL)
    client: Any = redis.Redis.from_url(REDIS_URL)
    accounts = _accounts(CONTRIBUTORS)
    status, contributors = _documents(accounts)
    client.set(status_key(MARKET), json.dumps(status, sort_keys=True))
    client.set(contributors_key(MARKET), json.dumps(contributors, sort_keys=True))

    rpc = ThreadingHTTPServer(("127.0.0.1", 0), _CountingRpc)
    threading.Thread(target=rpc.serve_forever, daemon=True).start()
    port = _free_port()
    env = {
        **os.environ,
        "MARKET_REDIS_URL": REDIS_URL,
        "MARKET_RPC_URL": f"http://127.0.0.1:{rpc.server_address[1]}",
        "MARKET_FACTORY": "0x" + "fa" * 20,
        "MARKET_API_TOKEN": TOKEN,
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "market.api:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    stop = threading.Event()
    worker = threading.Thread(target=_play_worker, args=(client, status, stop), daemon=True)
    worker.start()
    try:
        _wait_for(f"http://127.0.0.1:{port}/health")
        sample = f"http://127.0.0.1:{port}/markets/{MARKET}/contributors/{accounts[0]}"
        with urllib.request.urlopen(sample) as answer:
            view = json.loads(answer.read())
        assert view["state"] == "computing" and view["stale"] is False, view
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
            handle.write("".join(f"/markets/{MARKET}/contributors/{a}\n" for a in accounts))
            paths_file = handle.name
        _loadgen(port, paths_file, WARMUP_SECONDS)
        calls_before = _CountingRpc.calls
        load = _loadgen(port, paths_file, SECONDS)
        rpc_calls = _CountingRpc.calls - calls_before
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
        rpc.shutdown()
        client.delete(status_key(MARKET), contributors_key(MARKET))
        if "paths_file" in locals():
            Path(paths_file).unlink(missing_ok=True)
    return {
        "rps": load["rps"],
        "p50_ms": load["p50_ms"],
        "p90_ms": load["p90_ms"],
        "p99_ms": load["p99_ms"],
        "max_ms": load["max_ms"],
        "requests": load["requests"],
        "errors": load["errors"],
        "rpc_calls": rpc_calls,
        "rpc_calls_per_poll": rpc_calls / max(1, load["requests"]),
        "seconds": load["seconds"],
        "connections": CONNECTIONS,
        "workers": WORKERS,
        "contributors": CONTRIBUTORS,
        "response_bytes": len(json.dumps(view, separators=(",", ":"))),
        "server": {
            "uvloop": importlib.util.find_spec("uvloop") is not None,
            "httptools": importlib.util.find_spec("httptools") is not None,
        },
        "targets": {"rps": 1000, "p99_ms": 50, "rpc_calls_per_poll": 0},
    }
