"""Gas of the market contract on a reference market, against a naive re-scoring baseline.

The reference market: K = 1000 contributions of 60 features over dim 1024, a test set of
n = 500 samples of 60 features split into P = 10 portions (m = 450 scored), and 30% of the
contributions from three label-flipping accounts out of ten. Data comes from
``market.datasets.synthetic`` with a fixed seed, so every run builds the same market. It runs
on its own anvil with a raised block gas limit (the naive baseline needs more than 15M gas
per contribution); every step of the market itself is sized by ``market.steps.next_step`` to
a 15M-gas cap, as the service does.

What each figure measures (docs/gas.md explains why each costs what it does):

- ``contribute_gas``: median ``contribute`` receipt with 60 features.
- ``reveal_gas_per_sample``: a 100-sample ``revealBatch`` receipt divided by 100 (median).
- ``deploy_market_gas``: ``createMarket`` through the clone factory with dim 1024 (zero
  weights); ``deploy_market_gas_dim1`` the same with dim 1, and ``weights_init_gas`` the
  difference: what carrying, checking and logging 1024 initial weights costs.
- ``prepare_gas``: the one ``prepareRewards`` step that checks the test set's inverted index.
- ``train_gas_per_contribution``: gas of all training steps / K (without the preparation).
- ``naive_train_gas_per_contribution``: ``NaivePerceptron.scoreContribution`` (storage
  weights, update + evaluateBatch over the m test samples, as 0xDeCA10B scores), averaged over
  20 contributions spread over the sequence, the model advanced by ``update`` in between.
- ``rounds_gas_*``: gas of the ``rewards`` steps (rounds and settlement) for K = 250/500/1000.
- ``reward_gas_total``: preparation + training + rounds + settlement of the reference market;
  ``reward_txs`` the number of ``processRewards`` transactions and ``reward_txs_bound``
  ``⌈reward_gas_total / 15M⌉ + 2``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract.contract import ContractFunction

from market.chain import FactoryClient, MarketClient, MarketParams
from market.contracts import load_artifact
from market.datasets import synthetic
from market.merkle import StandardMerkleTree, test_sample_tree
from market.model import Perceptron
from market.services import start_anvil
from market.steps import next_step, reveal_batch, revealed_test_set, unrevealed_indices
from market.types import Phase, Sample, TestSample

K = 1000
K_SCALING = (250, 500, 1000)
DIM = 1024
FEATURES = 60
N_TEST = 500
PORTIONS = 10
FLIP_ACCOUNTS = 3  # of ACCOUNTS: 30% of the contributions carry flipped labels
ACCOUNTS = 10
SEED = 2024
GAS_CAP = 15_000_000
REVEAL_BATCH = 100
NAIVE_SAMPLES = 20
MIN_STAKE = 10**15
BOUNTY = 10 * 10**18
# The naive baseline re-reads the whole test set per contribution: far above 15M gas.
BLOCK_GAS_LIMIT = 1_000_000_000
DURATION = 3600
# Explicit limits skip a gas estimate per transaction: 60 fresh features cost well under these.
CONTRIBUTE_GAS = 400_000
NAIVE_UPDATE_GAS = 3_000_000

TARGETS = {
    "contribute_gas": 100_000,
    "reveal_gas_per_sample": 25_000,
    "deploy_market_gas_dim1": 300_000,
    "train_speedup_vs_naive": 20,
    "rounds_k1000_over_k500": 2.4,
    "reward_gas_total": 300_000_000,
}


@dataclass
class Chain:
    """An anvil with unlocked accounts and a deployed factory."""

    w3: Web3
    accounts: list[ChecksumAddress]
    factory: FactoryClient

    def send(
        self, fn: ContractFunction, sender: int = 0, value: int = 0, gas: int | None = None
    ) -> Any:
        """Send from an unlocked account, wait, and return the receipt (raises on revert)."""
        return self.send_many([(fn, sender, value, gas)])[0]

    def send_many(
        self, calls: Sequence[tuple[ContractFunction, int, int, int | None]]
    ) -> list[Any]:
        """Send calls (fn, sender, value, gas) back to back, then wait for every receipt.

        The node mines them in order, one block each; not waiting in between keeps a run of
        thousands of transactions to minutes.
        """
        hashes = []
        for fn, sender, value, gas in calls:
            tx: dict[str, Any] = {"from": self.accounts[sender], "value": value}
            if gas is not None:
                tx["gas"] = gas
            hashes.append(fn.transact(tx))  # type: ignore[arg-type]
        receipts = [
            self.w3.eth.wait_for_transaction_receipt(h, timeout=600, poll_latency=0.01)
            for h in hashes
        ]
        for (fn, *_), receipt in zip(calls, receipts, strict=True):
            if receipt["status"] != 1:
                raise RuntimeError(f"transaction reverted: {fn.fn_name}")
        return receipts

    def rpc(self, method: str, *params: Any) -> Any:
        return self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]


@dataclass
class Market:
    """A generated market: test set, contributions (account, sample), and the chain client."""

    test: list[TestSample]
    tree: StandardMerkleTree
    contributions: list[tuple[int, Sample]]
    client: MarketClient | None = None
    deploy_gas: int = 0
    contribute_gas: list[int] = field(default_factory=list)
    reveal_gas: list[tuple[int, int]] = field(default_factory=list)  # (samples, gas)
    steps: list[tuple[str, int]] = field(default_factory=list)


def make_market(k: int, seed: int = SEED) -> Market:
    """The reference data: n test samples and k contributions sharing one hidden rule."""
    samples = synthetic(N_TEST + k, dim=DIM, features=FEATURES, seed=seed)
    test = [
        TestSample(i, bytes(Web3.keccak(text=f"salt{seed}:{i}")), s.features, s.label)
        for i, s in enumerate(samples[:N_TEST])
    ]
    contributions: list[tuple[int, Sample]] = []
    for i, s in enumerate(samples[N_TEST:]):
        account = 1 + i % ACCOUNTS
        flip = account <= FLIP_ACCOUNTS
        contributions.append((account, Sample(s.features, 1 - s.label) if flip else s))
    return Market(test=test, tree=test_sample_tree(test), contributions=contributions)


def market_params(chain: Chain, market: Market, dim: int = DIM) -> MarketParams:
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    return MarketParams(
        test_root=market.tree.root,
        test_size=len(market.test),
        portions=PORTIONS,
        dim=dim,
        max_features=FEATURES,
        intercept=0,
        learning_rate=1,
        min_stake=MIN_STAKE,
        allow_greater_deposits=False,
        min_contributions=0,
        earliest_end=now + DURATION // 2,
        latest_end=now + DURATION,
        reveal_window=DURATION,
    )


def create(
    chain: Chain, market: Market, dim: int = DIM, weights: list[int] | None = None
) -> tuple[MarketClient, int]:
    """createMarket through the factory; the client and the receipt's gas."""
    model = Perceptron(weights=weights or [0] * dim, intercept=0, learning_rate=1)
    call = chain.factory.create_market(market_params(chain, market, dim), model.weights_bytes())
    receipt = chain.send(call, value=BOUNTY)
    address = chain.factory.market_from_receipt(receipt)
    return MarketClient(chain.w3, address, created_block=receipt["blockNumber"]), int(
        receipt["gasUsed"]
    )


def drive(chain: Chain, market: Market, *, until: Phase | None = None) -> None:
    """Send next_step until nothing is due, moving the clock when only time is missing."""
    assert market.client is not None
    client = market.client
    for _ in range(100_000):
        if until is not None and client.phase() == until:
            return
        step = next_step(
            client,
            gas_cap=GAS_CAP,
            secrets=(market.tree, market.test),
            sender=chain.accounts[0],
            rounds_after_training=False,
        )
        if step is None:
            phase = client.phase()
            if phase == Phase.COMMITTED:
                chain.rpc("evm_mine")
                continue
            if phase == Phase.PARTICIPATION:
                params = client.params()
                now = int(chain.w3.eth.get_block("latest")["timestamp"])
                chain.rpc("evm_increaseTime", max(1, params.earliest_end - now))
                chain.rpc("evm_mine")
                continue
            return
        receipt = chain.send(step.call, gas=step.gas)
        if receipt["gasUsed"] > GAS_CAP:
            raise RuntimeError(f"{step.name} used {receipt['gasUsed']} gas, over the cap")
        market.steps.append((step.name, int(receipt["gasUsed"])))
    raise RuntimeError("the market did not settle")


def reveal_in_batches(chain: Chain, market: Market) -> None:
    """Reveal the scored test samples REVEAL_BATCH at a time (the last batch is smaller)."""
    assert market.client is not None
    client = market.client
    params = client.params()
    portion = client.info().portion
    revealed = {t.index for t in revealed_test_set(client.revealed_batches())}
    pending = unrevealed_indices(params, portion, revealed)
    for start in range(0, len(pending), REVEAL_BATCH):
        chunk = pending[start : start + REVEAL_BATCH]
        b = reveal_batch(market.tree, market.test, chunk)
        receipt = chain.send(client.reveal_batch(b.items, b.proof, b.flags))
        market.reveal_gas.append((len(chunk), int(receipt["gasUsed"])))


def run_market(chain: Chain, market: Market) -> Market:
    """Launch, contribute, end, reveal in batches of 100, train, rounds, settle."""
    market.client, market.deploy_gas = create(chain, market)
    drive(chain, market, until=Phase.PARTICIPATION)
    calls = [
        (market.client.contribute(s.features, s.label), account, MIN_STAKE, CONTRIBUTE_GAS)
        for account, s in market.contributions
    ]
    market.contribute_gas = [int(r["gasUsed"]) for r in chain.send_many(calls)]
    drive(chain, market, until=Phase.REVEAL)
    reveal_in_batches(chain, market)
    drive(chain, market)
    if market.client.phase() != Phase.COLLECT:
        raise RuntimeError(f"the market ended in {market.client.phase()!r}, not COLLECT")
    return market


def naive_gas(chain: Chain, market: Market) -> list[int]:
    """scoreContribution receipts of NAIVE_SAMPLES contributions spread over the sequence."""
    assert market.client is not None
    test = [t.sample for t in revealed_test_set(market.client.revealed_batches())]
    test_data = [list(s.features) for s in test]
    test_labels = [s.label for s in test]
    art = load_artifact("NaivePerceptron")
    deploy = chain.w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(0, 1)
    address = chain.send(deploy)["contractAddress"]  # type: ignore[arg-type]
    naive = chain.w3.eth.contract(address=address, abi=art.abi)
    chosen = {round(j * (K - 1) / (NAIVE_SAMPLES - 1)) for j in range(NAIVE_SAMPLES)}
    calls: list[tuple[ContractFunction, int, int, int | None]] = []
    for i, (_, sample) in enumerate(market.contributions):
        features, label = list(sample.features), sample.label
        if i in chosen:
            call = naive.functions.scoreContribution(features, label, test_data, test_labels)
            calls.append((call, 0, 0, BLOCK_GAS_LIMIT // 2))
        else:
            calls.append((naive.functions.update(features, label), 0, 0, NAIVE_UPDATE_GAS))
    receipts = chain.send_many(calls)
    return [int(r["gasUsed"]) for i, r in enumerate(receipts) if i in chosen]


def calldata_gas(data: bytes) -> int:
    """Intrinsic calldata gas (EIP-2028 pricing: 4 per zero byte, 16 per other byte)."""
    zeros = data.count(0)
    return 4 * zeros + 16 * (len(data) - zeros)


def step_gas(market: Market, *names: str) -> tuple[int, int]:
    """(total gas, number of transactions) of the steps with these names."""
    chosen = [g for n, g in market.steps if n in names]
    return sum(chosen), len(chosen)


def run() -> dict[str, Any]:
    """Run the reference market and the scaling markets; return the figures."""
    started = time.perf_counter()
    node = start_anvil(accounts=ACCOUNTS + 1)
    try:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 300}))
        w3.provider.make_request("evm_setBlockGasLimit", [hex(BLOCK_GAS_LIMIT)])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        accounts = list(w3.eth.accounts)
        art = load_artifact("MarketFactory")
        receipt = w3.eth.wait_for_transaction_receipt(
            w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
            .constructor()
            .transact({"from": accounts[0], "gas": 10_000_000})
        )
        chain = Chain(w3, accounts, FactoryClient(w3, str(receipt["contractAddress"])))

        # Deployment: dim 1024 against dim 1 isolates what the initial weights cost.
        probe = make_market(0)
        _, deploy_dim1 = create(chain, probe, dim=1)
        _, deploy_full = create(chain, probe)
        dense = [((i * 7919) % 201) - 100 or 1 for i in range(DIM)]
        _, deploy_dense = create(chain, probe, weights=dense)

        markets: dict[int, Market] = {}
        for k in sorted(K_SCALING, reverse=True):
            markets[k] = run_market(chain, make_market(k))
            print(f"market K={k}: {len(markets[k].steps)} steps", file=sys.stderr, flush=True)
        ref = markets[K]

        prepare_total, prepare_txs = step_gas(ref, "prepare")
        train_total, train_txs = step_gas(ref, "train")
        rounds_total, rounds_txs = step_gas(ref, "rewards")
        reward_total = prepare_total + train_total + rounds_total
        naive = naive_gas(chain, ref)
        naive_mean = statistics.fmean(naive)
        assert ref.client is not None
        test = [t.sample for t in revealed_test_set(ref.client.revealed_batches())]
        naive_call = (
            chain.w3.eth.contract(abi=load_artifact("NaivePerceptron").abi)
            .functions.scoreContribution(
                list(ref.contributions[0][1].features),
                ref.contributions[0][1].label,
                [list(s.features) for s in test],
                [s.label for s in test],
            )
            ._encode_transaction_data()
        )
        naive_calldata = calldata_gas(bytes.fromhex(naive_call[2:]))
        train_per = train_total / K
        full_batches = [g for s, g in ref.reveal_gas if s == REVEAL_BATCH]
        rounds = {k: step_gas(markets[k], "rewards")[0] for k in K_SCALING}
        result: dict[str, Any] = {
            "reference": {
                "contributions": K,
                "dim": DIM,
                "features": FEATURES,
                "test_size": N_TEST,
                "portions": PORTIONS,
                "scored_test_samples": len(test),
                "flipping_share": FLIP_ACCOUNTS / ACCOUNTS,
                "gas_cap": GAS_CAP,
                "seed": SEED,
            },
            "contribute_gas": int(statistics.median(ref.contribute_gas)),
            "contribute_gas_max": max(ref.contribute_gas),
            "reveal_gas_per_sample": round(statistics.median(full_batches) / REVEAL_BATCH, 1),
            "reveal_batches": ref.reveal_gas,
            "deploy_market_gas": deploy_full,
            "deploy_market_gas_dim1": deploy_dim1,
            "weights_init_gas": deploy_full - deploy_dim1,
            "deploy_market_gas_dense_weights": deploy_dense,
            "weights_init_gas_dense": deploy_dense - deploy_dim1,
            "prepare_gas": prepare_total,
            "train_gas_total": train_total,
            "train_txs": train_txs,
            "train_gas_per_contribution": round(train_per, 1),
            "naive_train_gas_per_contribution": round(naive_mean, 1),
            "naive_samples": len(naive),
            "naive_calldata_gas": naive_calldata,
            "naive_execution_gas_per_contribution": round(naive_mean - 21_000 - naive_calldata, 1),
            "train_speedup_vs_naive": round(naive_mean / train_per, 2),
            "rounds_gas_total": rounds_total,
            "rounds_txs": rounds_txs,
            "rounds_gas_k250": rounds[250],
            "rounds_gas_k500": rounds[500],
            "rounds_gas_k1000": rounds[1000],
            "rounds_k1000_over_k500": round(rounds[1000] / rounds[500], 3),
            "reward_gas_total": reward_total,
            "reward_txs": prepare_txs + train_txs + rounds_txs,
            "reward_txs_bound": math.ceil(reward_total / GAS_CAP) + 2,
            "rounds": len(ref.client.rounds()),
            "node": w3.client_version,
            "seconds": round(time.perf_counter() - started, 1),
        }
        result["targets"] = {
            name: {"target": bound, "value": result[name], "met": _met(name, result[name], bound)}
            for name, bound in TARGETS.items()
        }
        result["targets"]["reward_txs"] = {
            "target": result["reward_txs_bound"],
            "value": result["reward_txs"],
            "met": result["reward_txs"] <= result["reward_txs_bound"],
        }
        return result
    finally:
        node.stop()


def _met(name: str, value: float, bound: float) -> bool:
    # The speedup is a floor; every other target is a ceiling.
    return value >= bound if name == "train_speedup_vs_naive" else value <= bound


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2, sort_keys=True))
