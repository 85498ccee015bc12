"""Launching a market: validate, commit, store the secrets, deploy, register.

Everything that can be wrong with a launch is refused before a transaction is sent, with an
error naming the field. The order of the rest is chosen so that a crash at any point loses
nothing: the secrets are in the vault (under a name derived from the root) before the
deployment is sent, and a deployed market is found again from ``MarketCreated``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from market.chain import MarketParams
from market.contracts import load_artifact
from market.encoding import validate_sample
from market.errors import InvalidParams
from market.model import Perceptron
from market.orchestrator import Orchestrator
from market.status import refresh
from market.tx import TxSender
from market.types import Sample, TestSample
from market.vault import MarketSecrets

# The contract's limits (PredictionMarket.sol), checked here first so that a bad launch never
# costs gas.
MAX_DIM = 8192
MAX_FEATURES = 256
MAX_TEST_ENTRIES = 30_000
MAX_TEST_SIZE = 65_535
MAX_ABS_WEIGHT = 2**62
MAX_LEARNING_RATE = 2**20


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """What a provider decides: the test set, the initial model, the money and the clock."""

    test_set: Sequence[Sample]
    dim: int
    bounty: int
    min_stake: int
    portions: int = 10
    max_features: int | None = None
    initial_weights: Sequence[int] | None = None
    intercept: int = 0
    learning_rate: int = 1
    allow_greater_deposits: bool = False
    min_contributions: int = 0
    earliest_end_s: int = 3600
    latest_end_s: int = 7200
    reveal_window_s: int = 3600
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchResult:
    address: str
    test_root: bytes
    tx_hash: str
    block_number: int


def _check(condition: bool, name: str, rule: str) -> None:
    if not condition:
        raise InvalidParams(name, rule)


def validate_spec(spec: LaunchSpec) -> int:
    """Refuse a bad launch before anything is sent; returns ``max_features``."""
    _check(
        isinstance(spec.bounty, int) and spec.bounty > 0, "bounty", "must be a positive wei amount"
    )
    _check(spec.bounty < 2**96, "bounty", "must be below 2**96 wei")
    _check(isinstance(spec.min_stake, int) and spec.min_stake > 0, "min_stake", "must be positive")
    _check(1 <= spec.dim <= MAX_DIM, "dim", f"must be in 1..{MAX_DIM}")
    _check(spec.portions >= 2, "portions", "P must be at least 2")
    n = len(spec.test_set)
    _check(n >= spec.portions, "test_set", f"has {n} samples, fewer than P = {spec.portions}")
    _check(n <= MAX_TEST_SIZE, "test_set", f"has {n} samples, more than {MAX_TEST_SIZE}")
    widest = max((len(s.features) for s in spec.test_set), default=0)
    max_features = spec.max_features or widest
    _check(1 <= max_features <= MAX_FEATURES, "max_features", f"must be in 1..{MAX_FEATURES}")
    _check(
        n * max_features <= MAX_TEST_ENTRIES,
        "test_set",
        f"n * max_features = {n * max_features} exceeds {MAX_TEST_ENTRIES}",
    )
    for i, sample in enumerate(spec.test_set):
        try:
            validate_sample(sample, spec.dim, max_features)
        except InvalidParams:
            raise
        except ValueError as exc:
            raise InvalidParams(f"test_set[{i}]", str(exc)) from None
    weights = spec.initial_weights if spec.initial_weights is not None else [0] * spec.dim
    _check(len(weights) == spec.dim, "initial_weights", f"needs {spec.dim} weights")
    for j, w in enumerate(weights):
        _check(
            isinstance(w, int) and not isinstance(w, bool) and abs(w) <= MAX_ABS_WEIGHT,
            f"initial_weights[{j}]",
            "must be an integer within ±2**62",
        )
    _check(abs(spec.intercept) <= MAX_ABS_WEIGHT, "intercept", "must be within ±2**62")
    _check(1 <= spec.learning_rate <= MAX_LEARNING_RATE, "learning_rate", "must be in 1..2**20")
    _check(spec.min_contributions >= 0, "min_contributions", "must be >= 0")
    _check(spec.latest_end_s > 0, "latest_end_s", "must be in the future")
    _check(
        0 <= spec.earliest_end_s <= spec.latest_end_s,
        "earliest_end_s",
        "must be between 0 and latest_end_s",
    )
    _check(spec.reveal_window_s > 0, "reveal_window_s", "must be positive")
    return max_features


# Upper estimates of the two steps that cannot be split (docs/gas.md): the public reveal is
# one multiproof, the preparation checks the whole test set's index at once.
REVEAL_GAS_PER_SAMPLE = 12_000
REVEAL_GAS_PER_FEATURE = 250
PREPARE_GAS_FIXED = 300_000
PREPARE_GAS_PER_ENTRY = 450
PREPARE_GAS_PER_SAMPLE = 1_500


def check_steps_fit(spec: LaunchSpec, max_features: int, gas_cap: int) -> None:
    """Refuse a market whose public reveal or preparation could never fit one transaction."""
    n = len(spec.test_set)
    portion = -(-n // spec.portions)
    widest = max((len(s.features) for s in spec.test_set), default=max_features)
    reveal = 100_000 + portion * (REVEAL_GAS_PER_SAMPLE + REVEAL_GAS_PER_FEATURE * widest)
    _check(
        reveal <= gas_cap,
        "portions",
        f"the public portion ({portion} samples) needs about {reveal} gas in one transaction, "
        f"above the gas cap {gas_cap}: use more portions",
    )
    entries = sum(len(s.features) for s in spec.test_set)
    prepare = (
        PREPARE_GAS_FIXED
        + PREPARE_GAS_PER_ENTRY * entries
        + PREPARE_GAS_PER_SAMPLE * n
        + 16 * 8 * spec.dim  # the initial weights as calldata
    )
    _check(
        prepare <= gas_cap,
        "test_set",
        f"checking the test set's index ({entries} features) needs about {prepare} gas in one "
        f"transaction, above the gas cap {gas_cap}: use a smaller test set",
    )


def salted(test_set: Sequence[Sample]) -> list[TestSample]:
    """The test set with a fresh random 32-byte salt per sample."""
    return [TestSample(i, os.urandom(32), s.features, s.label) for i, s in enumerate(test_set)]


def launch_market(orchestrator: Orchestrator, spec: LaunchSpec) -> LaunchResult:
    """Validate, commit, vault, deploy through the factory, register; the new market."""
    max_features = validate_spec(spec)
    check_steps_fit(spec, max_features, orchestrator.settings.tx_gas_cap)
    samples = salted(spec.test_set)
    secrets = MarketSecrets.create(samples)
    model = Perceptron(
        weights=list(spec.initial_weights or [0] * spec.dim),
        intercept=spec.intercept,
        learning_rate=spec.learning_rate,
    )
    now = int(orchestrator.w3.eth.get_block("latest")["timestamp"]) or int(time.time())
    params = MarketParams(
        test_root=secrets.root,
        test_size=len(samples),
        portions=spec.portions,
        dim=spec.dim,
        max_features=max_features,
        intercept=spec.intercept,
        learning_rate=spec.learning_rate,
        min_stake=spec.min_stake,
        allow_greater_deposits=spec.allow_greater_deposits,
        min_contributions=spec.min_contributions,
        earliest_end=now + spec.earliest_end_s,
        latest_end=now + spec.latest_end_s,
        reveal_window=spec.reveal_window_s,
    )
    # Secrets and metadata are written first, named by the root: a launch killed after the
    # deployment leaves them where the workers look for an interrupted launch's files.
    metadata = {**spec.metadata, "launched_at": now}
    orchestrator.vault.save_pending(secrets)
    orchestrator.registry.save_pending_metadata(secrets.root, metadata)
    result = orchestrator.sender.transact(
        orchestrator.factory.create_market(params, model.weights_bytes()), value=spec.bounty
    )
    address = orchestrator.factory.market_from_receipt(result.receipt)
    orchestrator.vault.promote(secrets.root, address)
    if not orchestrator.registry.promote_metadata(secrets.root, address):
        orchestrator.registry.save_metadata(address, metadata)
    orchestrator.registry.add(address, result.block_number)
    refresh(orchestrator.cache, orchestrator.registry.client(address))
    return LaunchResult(address, secrets.root, result.tx_hash, result.block_number)


def deploy_factory(sender: TxSender) -> str:
    """Deploy the market factory (and the implementation it clones); its address."""
    artifact = load_artifact("MarketFactory")
    result = sender.send(to=None, data=bytes.fromhex(artifact.bytecode[2:]), what="deploy factory")
    if result.contract_address is None:
        raise InvalidParams("factory", "the deployment created no contract")
    return result.contract_address
