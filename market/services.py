"""Local services: the anvil node from npm and a Redis server, started when absent.

Used by the test fixtures, the demo and ``market stack up``; ``python -m market.services
redis-ping`` is how ``./run`` asks whether Redis answers.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from market.config import DEFAULT_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
ANVIL_BIN = ROOT / "node_modules" / ".bin" / "anvil"
# anvil's well-known development mnemonic: its accounts are funded on every fresh node.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str = DEFAULT_REDIS_URL, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except redis.RedisError:
        return False


def ensure_redis(url: str = DEFAULT_REDIS_URL) -> None:
    """Start a local ``redis-server`` on the URL's port when nothing answers there."""
    if redis_answers(url):
        return
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError(f"no Redis answers at {url} and redis-server is not installed")
    port = redis.Redis.from_url(url).connection_pool.connection_kwargs.get("port", 6379)
    subprocess.run(
        [server, "--daemonize", "yes", "--port", str(port), "--save", "", "--appendonly", "no"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while not redis_answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer at {url}")
        time.sleep(0.05)


@dataclass
class Anvil:
    """A running anvil node."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_anvil(
    port: int | None = None,
    *,
    accounts: int = 20,
    balance_eth: int = 1_000_000,
    block_time: float | None = None,
    extra: list[str] | None = None,
) -> Anvil:
    """Spawn anvil from the npm package on a loopback port and wait until it answers."""
    if not ANVIL_BIN.exists():
        raise RuntimeError(f"{ANVIL_BIN} is missing: run `npm ci` (./run does it for you)")
    port = port or free_port()
    args = [
        str(ANVIL_BIN),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--accounts",
        str(accounts),
        "--balance",
        str(balance_eth),
        "--mnemonic",
        ANVIL_MNEMONIC,
        "--gas-limit",
        "60000000",
        "--silent",
    ]
    if block_time is not None:
        args += ["--block-time", str(block_time)]
    args += extra or []
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    node = Anvil(process=process, port=port)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"anvil exited with {process.returncode}: {err.strip()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return node
        if time.monotonic() > deadline:
            node.stop()
            raise RuntimeError(f"anvil did not listen on port {port} within 20 s")
        time.sleep(0.05)


@contextlib.contextmanager
def anvil_node(**kwargs: object) -> Iterator[Anvil]:
    """Run anvil for the duration of a ``with`` block."""
    node = start_anvil(**kwargs)  # type: ignore[arg-type]
    try:
        yield node
    finally:
        node.stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["redis-ping"]:
        import os

        return 0 if redis_answers(os.environ.get("MARKET_REDIS_URL", DEFAULT_REDIS_URL)) else 1
    print("usage: python -m market.services redis-ping", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
