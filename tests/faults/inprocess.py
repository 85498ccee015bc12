"""Markets driven in this process (no Celery) on the session anvil, for the fault tests.

``reconcile``/``advance`` are called directly, and the test moves the clock and mines, so a
fault can be put exactly between two steps and a market still takes seconds, not minutes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import redis
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.chain import MarketClient
from market.config import Settings
from market.launch import LaunchSpec, deploy_factory, launch_market
from market.orchestrator import Orchestrator
from market.tx import TxSender
from market.types import Phase, Sample
from market.vault import generate_vault_key
from tests.contracts.chaintools import increase_time, mine, send
from tests.e2e.harness import hidden_rule, sample

DIM = 32
STAKE = 10**16
BOUNTY = 10**18


def make_orchestrator(
    w3: Web3, operator: LocalAccount, redis_url: str, tmp_path: Path, **overrides: Any
) -> Orchestrator:
    """An orchestrator with a fresh factory, vault and key (``overrides`` change settings)."""
    base = Settings(
        rpc_url=w3.provider.endpoint_uri,  # type: ignore[attr-defined]
        redis_url=redis_url,
        vault_dir=tmp_path / "vault",
        vault_key=generate_vault_key(),
        operator_key=operator.key.hex(),
    )
    cache: Any = redis.Redis.from_url(redis_url)
    factory = deploy_factory(TxSender.from_settings(base, w3, operator, cache))
    settings = Settings(**{**base.__dict__, "factory_address": factory, **overrides})
    return Orchestrator(settings, w3=w3, cache=cache, account=operator)


def with_settings(orchestrator: Orchestrator, **changes: Any) -> Orchestrator:
    """The same service (account, Redis, factory) under changed settings."""
    settings = Settings(**{**orchestrator.settings.__dict__, **changes})
    return Orchestrator(
        settings, w3=orchestrator.w3, cache=orchestrator.cache, account=orchestrator.account
    )


def open_market(
    w3: Web3,
    orchestrator: Orchestrator,
    participants: list[LocalAccount],
    rng: random.Random,
    *,
    test_size: int = 60,
    contributions: int = 12,
) -> MarketClient:
    """Launch, draw and reveal the public portion, contribute; the market is in PARTICIPATION."""
    rule = hidden_rule(rng, DIM)
    spec = LaunchSpec(
        test_set=[sample(rng, rule) for _ in range(test_size)],
        dim=DIM,
        bounty=BOUNTY,
        min_stake=STAKE,
        portions=5,
        earliest_end_s=300,
        latest_end_s=600,
        reveal_window_s=3600,
    )
    address = launch_market(orchestrator, spec).address
    market = orchestrator.registry.client(address)
    while market.phase() == Phase.COMMITTED:
        mine(w3)
        for due in orchestrator.reconcile():
            orchestrator.advance(due)
    assert market.phase() == Phase.PARTICIPATION
    for i in range(contributions):
        s: Sample = sample(rng, rule, flip=i % 4 == 3)
        account = participants[i % len(participants)]
        send(w3, account, market.contribute(s.features, s.label), value=STAKE)
    return market


def end_participation(w3: Web3, market: MarketClient) -> None:
    """Move the clock past ``latestEnd``: the market is in REVEAL without any call."""
    increase_time(w3, 700)
    mine(w3)
    assert market.phase() == Phase.REVEAL


def drive(w3: Web3, orchestrator: Orchestrator, market: MarketClient, rounds: int = 200) -> None:
    """reconcile/advance (mining when nothing is due) until the market is done for the service."""
    for _ in range(rounds):
        due = orchestrator.reconcile()
        if market.phase() == Phase.COLLECT and market.provider_withdrawn():
            return
        if not due:
            if market.phase() == Phase.PARTICIPATION:
                increase_time(w3, 120)
            mine(w3)
            continue
        for address in due:
            orchestrator.advance(address)
    raise AssertionError(f"{market.address} did not finish: {market.phase().name}")


def operator_nonce(w3: Web3, orchestrator: Orchestrator) -> int:
    return int(w3.eth.get_transaction_count(orchestrator.account.address, "pending"))
