"""End-to-end harness: a chain with real blocks, the real stack, markets and participants.

Shared by the end-to-end tests and ``benchmarks/e2e.py``. The chain is an anvil of its own
with a block every second (the draw needs new blocks and deadlines need the clock to move
by itself: nobody mines or travels in time here); the stack is real Celery processes on the
test Redis. After a launch the test process only sends participants' contributions and
reads the chain: every step of the market is the workers' doing.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market import replay
from market.chain import MarketClient
from market.config import Settings
from market.encoding import decode_reveal_items
from market.launch import LaunchSpec, deploy_factory, launch_market
from market.orchestrator import Orchestrator
from market.services import ANVIL_MNEMONIC, Anvil, start_anvil
from market.stack import Stack, local_stack
from market.tx import TxSender
from market.types import Phase, Sample
from market.vault import generate_vault_key

T = TypeVar("T")

N_ACCOUNTS = 20
# One block a second: the draw block comes by itself, and block timestamps follow the wall
# clock, so deadlines given in seconds pass in real seconds.
BLOCK_TIME_S = 1
# The reconcile interval of the stack under test: short, so that tests wait little.
RECONCILE_INTERVAL_S = 1.0
# A killed worker's task comes back after this (the default, 15 min, suits production).
VISIBILITY_TIMEOUT_S = 6
# A killed worker's market lock frees itself after this; long against one step (a few
# blocks), short against a test.
LOCK_LEASE_S = 8
DIM = 32
STAKE = 10**16
BOUNTY = 10**18


def wait_for(
    condition: Callable[[], T | None], timeout_s: float, what: str, *, poll_s: float = 0.2
) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


def dev_accounts(n: int = N_ACCOUNTS) -> list[LocalAccount]:
    """anvil's funded development accounts."""
    Account.enable_unaudited_hdwallet_features()
    return [
        Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(n)
    ]


@dataclass
class E2E:
    """A running chain and stack, and the provider's side of the service in this process."""

    anvil: Anvil
    w3: Web3
    stack: Stack
    cache: redis.Redis
    orchestrator: Orchestrator
    accounts: list[LocalAccount]
    settings: Settings
    start_block: int
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    @property
    def operator(self) -> LocalAccount:
        return self.accounts[0]

    def client(self, address: str) -> MarketClient:
        """A market client reading the chain directly (not through any proxy)."""
        return MarketClient(self.w3, address, created_block=self.start_block)


@contextlib.contextmanager
def running(
    redis_url: str,
    tmp_path: Path,
    *,
    workers: int = 1,
    concurrency: int = 1,
    gas_cap: int | None = None,
    worker_rpc_url: Callable[[str], str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[E2E]:
    """anvil (1 s blocks), a factory, and the stack (workers + beat) driving its markets.

    ``worker_rpc_url`` maps anvil's URL to the one the workers use (a proxy in front of it).
    """
    node = start_anvil(accounts=N_ACCOUNTS, block_time=BLOCK_TIME_S)
    try:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))
        wait_for(w3.is_connected, 20, "anvil")
        accounts = dev_accounts()
        cache: redis.Redis = redis.Redis.from_url(redis_url)
        vault_dir = tmp_path / "vault"
        base = Settings(
            rpc_url=node.url,
            redis_url=redis_url,
            vault_dir=vault_dir,
            vault_key=generate_vault_key(),
            operator_key=accounts[0].key.hex(),
            reconcile_interval_s=RECONCILE_INTERVAL_S,
            lock_lease_s=LOCK_LEASE_S,
        )
        # The factory deploys under the default cap: a small test cap is for market steps.
        factory = deploy_factory(TxSender.from_settings(base, w3, accounts[0], cache))
        changes: dict[str, Any] = {"factory_address": factory}
        if gas_cap is not None:
            changes["tx_gas_cap"] = gas_cap
        settings = Settings(**{**base.__dict__, **changes})
        rpc = worker_rpc_url(node.url) if worker_rpc_url else node.url
        stack_env = {
            "MARKET_FACTORY": factory,
            "MARKET_OPERATOR_KEY": str(settings.operator_key),
            "MARKET_VAULT_DIR": str(vault_dir),
            "MARKET_VAULT_KEY": str(settings.vault_key),
            "MARKET_TX_GAS_CAP": str(settings.tx_gas_cap),
            "MARKET_RECONCILE_INTERVAL_S": str(RECONCILE_INTERVAL_S),
            "MARKET_LOCK_LEASE_S": str(LOCK_LEASE_S),
            "MARKET_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
            # The chain makes a block every BLOCK_TIME_S: ends are taken that early.
            "MARKET_END_LOOKAHEAD_S": str(BLOCK_TIME_S),
            **(env or {}),
        }
        with local_stack(
            redis_url=redis_url,
            rpc_url=rpc,
            workers=workers,
            concurrency=concurrency,
            chain=False,
            env=stack_env,
            log_dir=tmp_path / "log",
            run_dir=tmp_path / "run",
        ) as stack:
            orchestrator = Orchestrator(settings, w3=w3, cache=cache, account=accounts[0])
            yield E2E(
                anvil=node,
                w3=w3,
                stack=stack,
                cache=cache,
                orchestrator=orchestrator,
                accounts=accounts,
                settings=settings,
                start_block=0,
            )
    finally:
        node.stop()


# ---------------------------------------------------------------------------- markets


def hidden_rule(rng: random.Random, dim: int = DIM) -> list[int]:
    return [rng.choice((-3, -2, -1, 1, 2, 3)) for _ in range(dim)]


def sample(rng: random.Random, rule: Sequence[int], flip: bool = False) -> Sample:
    """A sample labelled by ``rule`` (flipped for an adversary)."""
    features = tuple(sorted(rng.sample(range(len(rule)), rng.randint(2, 6))))
    label = int(sum(rule[j] for j in features) > 0)
    return Sample(features, 1 - label if flip else label)


def launch(
    env: E2E,
    rule: Sequence[int],
    *,
    test_size: int = 60,
    portions: int = 5,
    min_contributions: int = 1,
    earliest_end_s: int = 20,
    latest_end_s: int = 90,
    reveal_window_s: int = 300,
) -> str:
    """Launch a market through the service (vault, factory, registry); its address."""
    spec = LaunchSpec(
        test_set=[sample(env.rng, rule) for _ in range(test_size)],
        dim=len(rule),
        bounty=BOUNTY,
        min_stake=STAKE,
        portions=portions,
        min_contributions=min_contributions,
        earliest_end_s=earliest_end_s,
        latest_end_s=latest_end_s,
        reveal_window_s=reveal_window_s,
    )
    return launch_market(env.orchestrator, spec).address


def wait_phase(env: E2E, address: str, phases: set[Phase], timeout_s: float) -> Phase:
    """Wait until the market is in one of ``phases`` (read from the chain)."""
    market = env.client(address)
    names = "/".join(p.name for p in phases)
    return Phase(
        wait_for(
            lambda: (p := market.phase()) in phases and p, timeout_s, f"{address} to reach {names}"
        )
    )


def contribute_all(
    env: E2E, orders: Sequence[tuple[str, Sample]], *, first_account: int = 1
) -> list[Any]:
    """Send every ``(market, sample)`` with a deposit of ``STAKE`` from the participants.

    Transactions go out without waiting for each other (nonces counted here, several per
    block), then every receipt is awaited and checked: a deadline of seconds must not be
    eaten by one block per contribution.
    """
    w3 = env.w3
    participants = env.accounts[first_account:]
    nonces = {
        a.address: int(w3.eth.get_transaction_count(a.address, "pending")) for a in participants
    }
    fee = 2 * int(w3.eth.get_block("latest").get("baseFeePerGas", 0)) + 10**9
    hashes = []
    for k, (address, s) in enumerate(orders):
        account = participants[k % len(participants)]
        call = env.client(address).contribute(s.features, s.label)
        tx: Any = call.build_transaction(
            {  # type: ignore[arg-type]
                "from": account.address,
                "value": STAKE,
                "gas": 400_000,
                "nonce": nonces[account.address],
                "maxFeePerGas": fee,
                "maxPriorityFeePerGas": 10**9,
                "chainId": w3.eth.chain_id,
            }
        )
        nonces[account.address] += 1
        hashes.append(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    receipts = [w3.eth.wait_for_transaction_receipt(h, timeout=60) for h in hashes]
    assert all(r["status"] == 1 for r in receipts), "a contribution reverted"
    return receipts


def mirror_payouts(market: MarketClient) -> list[int]:
    """The mirror's payout per contribution, on the revealed test set in reveal order."""
    return list(replay.mirror(market).payouts)


def chain_payouts(market: MarketClient) -> list[int]:
    count, _ = market.contribution_stats()
    return [market.payout_of(i) for i in range(1, count + 1)]


# ---------------------------------------------------------------------------- audits


def reveal_indices(market: MarketClient) -> list[tuple[int, ...]]:
    """The test indices of each ``TestBatchRevealed``, in order."""
    return [tuple(t.index for t in decode_reveal_items(b)) for b in market.revealed_batches()]


def assert_no_step_twice(market: MarketClient) -> None:
    """Each reveal batch reveals new indices; each training step scores a new range."""
    batches = reveal_indices(market)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)), f"a test index was revealed twice: {batches}"
    _, m, _ = market.reveal_status()
    assert len(flat) == m
    scored = market.scored()
    ranges = sorted((start, start + len(values)) for start, _, values in scored)
    for (_, end), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert start == end, f"training ranges overlap or leave a gap: {ranges}"
    count, _ = market.contribution_stats()
    assert ranges[0][0] in (0, 1) and ranges[-1][1] - ranges[0][0] == count, ranges


@dataclass(frozen=True)
class OperatorTx:
    nonce: int
    block: int
    status: int
    gas_used: int
    to: str | None
    selector: str


def operator_transactions(w3: Web3, address: str, from_block: int = 0) -> list[OperatorTx]:
    """Every transaction the account sent that is on chain, with its receipt, by nonce."""
    out = []
    for number in range(from_block, int(w3.eth.block_number) + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for item in block["transactions"]:
            tx: Any = item
            if str(tx["from"]).lower() != address.lower():
                continue
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            out.append(
                OperatorTx(
                    nonce=int(tx["nonce"]),
                    block=number,
                    status=int(receipt["status"]),
                    gas_used=int(receipt["gasUsed"]),
                    to=tx["to"],
                    selector=bytes(tx["input"][:4]).hex(),
                )
            )
    return sorted(out, key=lambda t: t.nonce)


def assert_clean_nonces(w3: Web3, address: str) -> list[OperatorTx]:
    """The account's nonces on chain are consecutive, all mined, none reverted."""
    txs = operator_transactions(w3, address)
    latest = int(w3.eth.get_transaction_count(Web3.to_checksum_address(address), "latest"))
    pending = int(w3.eth.get_transaction_count(Web3.to_checksum_address(address), "pending"))
    assert [t.nonce for t in txs] == list(range(latest)), "nonce gap in the operator's history"
    assert pending == latest, f"{pending - latest} transaction(s) stuck unmined"
    reverted = [t for t in txs if t.status != 1]
    assert not reverted, f"reverted operator transactions: {reverted}"
    return txs
