"""The provider's vault key missing or wrong when the reveal is due.

The market must be left in a clear, recoverable state: nothing sent, the status cache's
``last_error`` naming the vault, and once the key is back the market finishes with the
mirror's payouts.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market import status as status_cache
from market.errors import MarketError
from market.types import Phase
from market.vault import generate_vault_key
from tests.e2e.harness import assert_no_step_twice, chain_payouts, mirror_payouts
from tests.faults.inprocess import (
    drive,
    end_participation,
    make_orchestrator,
    open_market,
    operator_nonce,
    with_settings,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    "broken_key",
    [
        pytest.param(lambda: generate_vault_key(), id="wrong"),
        pytest.param(lambda: None, id="missing"),
    ],
)
def test_a_bad_vault_key_at_the_reveal_stops_cleanly_and_recovers(
    w3: Web3,
    accounts: list[LocalAccount],
    redis_url: str,
    tmp_path: Path,
    snapshot: None,
    broken_key: object,
) -> None:
    good = make_orchestrator(w3, accounts[0], redis_url, tmp_path)
    market = open_market(w3, good, accounts[1:6], random.Random(31))
    end_participation(w3, market)
    # when the service restarts with a wrong or missing vault key while the reveal is due
    bad = with_settings(good, vault_key=broken_key())  # type: ignore[operator]
    nonce = operator_nonce(w3, good)
    for _ in range(3):
        due = bad.reconcile()
        assert market.address in due
        with pytest.raises(MarketError):
            bad.advance(market.address)
    # then nothing was sent, the market waits in REVEAL, and the cache says why
    assert operator_nonce(w3, good) == nonce
    assert market.phase() == Phase.REVEAL
    assert market.reveal_status()[0] == 0
    status = status_cache.read_status(good.cache, market.address)
    assert status is not None and status["last_error"] is not None
    error = status["last_error"]
    assert error["step"] == "vault", error
    assert "vault" in (error["type"] + error["message"]).lower(), error
    # when the key is back, the market finishes as if nothing happened
    drive(w3, good, market)
    assert market.phase() == Phase.COLLECT
    assert chain_payouts(market) == mirror_payouts(market)
    assert_no_step_twice(market)
