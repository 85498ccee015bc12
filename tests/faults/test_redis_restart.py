"""Redis killed and restarted empty in the middle of a market's reveal.

Unlike a flush (``tests/e2e/test_crashes.py``), the server goes away: every connection of the
workers, of beat and of their pool processes breaks, and when a server answers again on the
same port it holds nothing (no persistence): no broker queues or bindings, no locks, no nonce
counters, no registry, no status cache. The same worker and beat processes must reconnect by
themselves and finish the market from the chain and the vault, with no conflicting
transaction: consecutive nonces, none reverted, no step done twice.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from market.services import free_port, redis_answers
from market.types import Phase
from tests.e2e.harness import running, wait_for
from tests.faults.stackmarkets import (
    assert_finished_like_the_mirror,
    assert_no_conflicting_transactions,
    open_market,
)

pytestmark = pytest.mark.e2e

# As in the crash tests: the reveal of 450 samples takes two or three transactions under this
# cap (and the preparation's index check of 500 still fits one), so Redis goes away between
# two reveal batches.
GAS_CAP = 2_000_000
TEST_SIZE = 500
PORTIONS = 10


class RedisServer:
    """A ``redis-server`` of the test's own, in the foreground, without persistence."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(lambda: redis_answers(self.url), 20, f"redis-server on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; connections break."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None


@contextlib.contextmanager
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.timeout(180)
def test_redis_restarted_empty_mid_reveal(tmp_path: Path) -> None:
    rng = random.Random(81)
    with own_redis(tmp_path) as server, running(server.url, tmp_path, gas_cap=GAS_CAP) as env:
        address = open_market(env, rng, test_size=TEST_SIZE, portions=PORTIONS)
        market = env.client(address)
        # given a market with a reveal batch mined and more to reveal (counts exclude the
        # public portion)
        wait_for(
            lambda: 0 < (status := market.reveal_status())[0] < status[1], 60, "a partial reveal"
        )
        assert market.phase() == Phase.REVEAL
        env.cache.set("test:before-restart", 1)
        # when Redis is killed, and a server comes back on the same port two seconds later
        server.kill()
        time.sleep(2)
        server.start()
        assert not env.cache.exists("test:before-restart")  # it came back empty
        # then the same processes finish the market from the chain and the vault
        assert_finished_like_the_mirror(env, address, timeout_s=120)
        assert_no_conflicting_transactions(env)
        assert len(market.revealed_batches()) >= 2
        procs = [*env.stack.workers, env.stack.beat]
        assert all(p is not None and p.alive() for p in procs), "a stack process exited"
        # and the registry was rebuilt from MarketCreated
        assert address.lower() in env.orchestrator.registry.markets()
