"""A step's transaction dropped from the node's pool while the orchestrator waits for it.

The node forgets the transaction (``anvil_dropTransaction``: gone from the pool, never
mined), as a node does when it restarts, evicts underpriced transactions or loses a
load-balanced peer. Two ways back, depending on which of the sender's clocks runs out first:

- ``replace_after_s``: the sender re-sends the step with the same nonce and raised fees, the
  replacement is mined, and the step is done once;
- ``receipt_timeout_s``: the step fails with the dropped hash, the Redis nonce record is left
  one ahead of the node, and the next ``advance`` plans the step again from the chain. Its
  nonce must be the dropped one, not one behind a gap: the reservation waits until the
  record is stale rather than hand out a nonce the node would queue for ever.

Either way the market finishes with the mirror's payouts, no step twice, no nonce gap, and
the Redis record equal to the chain's count.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from web3.exceptions import TransactionNotFound

from market import status as status_cache
from market.errors import TransactionTimeout
from market.types import Phase
from tests.e2e.harness import (
    assert_clean_nonces,
    assert_no_step_twice,
    chain_payouts,
    dev_accounts,
    mirror_payouts,
)
from tests.faults.inprocess import drive, end_participation, make_orchestrator, open_market
from tests.faults.ownchain import (
    Background,
    chain_nonce,
    own_node,
    pool_hashes,
    redis_nonce,
    rpc,
    use_sender,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

# How long the Redis nonce record is trusted ahead of the node, here: longer than the short
# receipt timeout below, so that the step planned again right after the timeout finds the
# record still fresh (with the default 30 s and 120 s it is the other way round).
STALE_S = 8.0


@pytest.mark.parametrize("recovery", ["replaced", "timed_out"])
def test_a_step_dropped_from_the_pool_is_sent_again_with_its_nonce(
    redis_url: str, tmp_path: Path, recovery: str
) -> None:
    with own_node() as w3:
        accounts = dev_accounts(6)
        orchestrator = make_orchestrator(w3, accounts[0], redis_url, tmp_path)
        market = open_market(w3, orchestrator, accounts[1:6], random.Random(67))
        end_participation(w3, market)
        if recovery == "replaced":
            sender = use_sender(
                orchestrator, stale_after_s=STALE_S, replace_after_s=1.0, receipt_timeout_s=45
            )
        else:
            sender = use_sender(
                orchestrator, stale_after_s=STALE_S, replace_after_s=600, receipt_timeout_s=4
            )
        operator = orchestrator.account.address
        nonce = chain_nonce(w3, operator)
        # given a node that stops mining, and the reveal step waiting in its pool
        rpc(w3, "evm_setAutomine", False)
        advancing = Background(lambda: orchestrator.advance(market.address))
        (dropped,) = wait_until(lambda: pool_hashes(w3, operator), 30, "the reveal in the pool")
        # when the node drops it
        rpc(w3, "anvil_dropTransaction", dropped)
        assert pool_hashes(w3, operator) == []
        assert chain_nonce(w3, operator, "pending") == nonce
        with pytest.raises(TransactionNotFound):
            w3.eth.get_transaction(dropped)

        if recovery == "replaced":
            # then the sender re-sends the step with the same nonce, and it is mined
            (replacement,) = wait_until(
                lambda: pool_hashes(w3, operator), 30, "the step sent again"
            )
            assert replacement != dropped
            rpc(w3, "evm_setAutomine", True)
            rpc(w3, "evm_mine")
            result = advancing.join(60)
            assert result.steps[0] == "reveal"
            mined = w3.eth.get_transaction(replacement)
            assert mined["nonce"] == nonce
            assert sender.stats.snapshot()["replaced"] >= 1
            with pytest.raises(TransactionNotFound):
                w3.eth.get_transaction(dropped)
        else:
            # then the step fails with the dropped hash; Redis still counts it
            with pytest.raises(TransactionTimeout) as caught:
                advancing.join(60)
            assert caught.value.tx_hash == dropped
            status = status_cache.read_status(orchestrator.cache, market.address)
            assert status is not None and status["last_error"]["step"] == "reveal"
            assert redis_nonce(orchestrator) == nonce + 1
            assert chain_nonce(w3, operator, "pending") == nonce
            rpc(w3, "evm_setAutomine", True)
            # and the next advance plans it again and sends it with the dropped nonce, once
            # the record is stale (it waits, rather than send behind a gap)
            began = time.monotonic()
            result = orchestrator.advance(market.address)
            assert result.steps[0] == "reveal"
            assert time.monotonic() - began < STALE_S + 30
            assert sender.stats.snapshot()["replaced"] == 0
            # (planned from the same state with the same nonce and fees, it may well be the
            # very transaction that was dropped: then its hash is on chain now, which is fine)
        revealed = market.revealed_batches()
        assert len(revealed) == 1
        (reveal,) = [t for t in assert_clean_nonces(w3, operator) if t.nonce == nonce]
        assert reveal.status == 1

        drive(w3, orchestrator, market)
        assert market.phase() == Phase.COLLECT
        assert chain_payouts(market) == mirror_payouts(market)
        assert_no_step_twice(market)
        assert_clean_nonces(w3, operator)
        assert redis_nonce(orchestrator) == chain_nonce(w3, operator)
        assert sender.stats.snapshot()["reverted"] == 0
