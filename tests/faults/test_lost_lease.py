"""A market lock lost while its holder's step is still in the pool (Redis flushed mid-step).

The next holder must not plan from the chain before that transaction is mined: the step is
not visible on chain yet, so it would be planned and sent a second time, and revert.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.errors import LockLost
from market.locks import lock_key
from market.orchestrator import AdvanceResult, Orchestrator
from market.tx import pending_to
from market.types import Phase
from tests.contracts.chaintools import mine
from tests.e2e.harness import (
    assert_no_step_twice,
    chain_payouts,
    mirror_payouts,
    operator_transactions,
    wait_for,
)
from tests.faults.inprocess import drive, end_participation, make_orchestrator, open_market

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@contextlib.contextmanager
def manual_mining(w3: Web3) -> Iterator[None]:
    """Transactions wait in the pool until the test mines: a step stays in flight."""
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        yield
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        mine(w3)


def _in_thread(orchestrator: Orchestrator, address: str) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(orchestrator.advance(address))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_step_left_in_flight_is_waited_for_not_sent_again(
    w3: Web3,
    accounts: list[LocalAccount],
    redis_url: str,
    tmp_path: Path,
    snapshot: None,
) -> None:
    first = make_orchestrator(w3, accounts[0], redis_url, tmp_path)
    market = open_market(w3, first, accounts[1:6], random.Random(41), test_size=60)
    end_participation(w3, market)
    start_block = int(w3.eth.block_number)
    operator = first.account.address
    with manual_mining(w3):
        # given a worker whose first reveal batch is sent but not mined
        holder, held = _in_thread(first, market.address)
        wait_for(lambda: pending_to(w3, operator, market.address), 30, "the reveal in the pool")
        # when its lock vanishes (Redis flushed) and another worker takes the market
        first.cache.delete(lock_key(market.address))
        second = Orchestrator(first.settings, w3=w3, cache=first.cache, account=first.account)
        taker, taken = _in_thread(second, market.address)
        time.sleep(2)
        # then the new holder waits for the step in flight instead of sending it again
        assert pending_to(w3, operator, market.address) == 1
        assert taker.is_alive()
        mine(w3)
        holder.join(30)
        assert isinstance(held[0], LockLost), held
        # and carries on from the chain once it is mined
        deadline = time.monotonic() + 60
        while taker.is_alive() and time.monotonic() < deadline:
            mine(w3)
            time.sleep(0.2)
        assert not taker.is_alive()
        assert isinstance(taken[0], AdvanceResult), taken
        assert taken[0].done >= 1
    drive(w3, first, market)
    assert market.phase() == Phase.COLLECT
    assert chain_payouts(market) == mirror_payouts(market)
    assert_no_step_twice(market)
    sent = [t for t in operator_transactions(w3, operator, start_block) if t.to == market.address]
    assert sent and all(t.status == 1 for t in sent), sent
