"""Typed bindings for the factory and the market contracts.

Reads return Python values (``Phase``, ``MarketParams``, wei as ``int``); writes return web3
``ContractFunction`` objects that :mod:`market.tx` signs and sends, so this module never
holds a key. Event readers rebuild every public input of a market (its samples, its revealed
test set, its initial weights) from the chain alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import Any, cast

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import BlockIdentifier, RPCEndpoint

from market.contracts import load_artifact
from market.types import Phase

# Logs are fetched in windows: public RPC providers refuse wide eth_getLogs ranges.
LOG_WINDOW_BLOCKS = 10_000
# web3 asks the node for the chain id before every contract call and every transaction it
# builds: half the requests of a reconcile were eth_chainId. It never changes under a
# running node, so the provider answers it from memory after the first time.
CACHED_REQUESTS = {RPCEndpoint("eth_chainId")}


def connect(rpc_url: str, *, timeout_s: float = 30) -> Web3:
    """A Web3 client for ``rpc_url`` that asks for the chain id once."""
    provider = Web3.HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout_s},
        cache_allowed_requests=True,
        cacheable_requests=CACHED_REQUESTS,
        # No reorg-depth check for what is cached (the chain id has none), and so no extra
        # eth_chainId request to pick one.
        request_cache_validation_threshold=None,
    )
    return Web3(provider)


@dataclass(frozen=True, kw_only=True)
class MarketParams:
    """Mirror of ``IPredictionMarket.MarketParams`` (field order is the ABI's)."""

    test_root: bytes
    min_stake: int
    allow_greater_deposits: bool
    dim: int
    max_features: int
    latest_end: int
    test_size: int
    portions: int
    intercept: int
    learning_rate: int
    min_contributions: int
    earliest_end: int
    reveal_window: int

    def as_tuple(self) -> tuple[Any, ...]:
        return astuple(self)

    @classmethod
    def from_tuple(cls, values: Sequence[Any]) -> MarketParams:
        (root, stake, greater, dim, maxf, late, n, parts, intercept, lr, minc, early, window) = (
            values
        )
        return cls(
            test_root=bytes(root),
            min_stake=int(stake),
            allow_greater_deposits=bool(greater),
            dim=int(dim),
            max_features=int(maxf),
            latest_end=int(late),
            test_size=int(n),
            portions=int(parts),
            intercept=int(intercept),
            learning_rate=int(lr),
            min_contributions=int(minc),
            earliest_end=int(early),
            reveal_window=int(window),
        )

    def portion_range(self, portion: int) -> tuple[int, int]:
        """Index range ``[p·n/P, (p+1)·n/P)`` of portion ``p``."""
        return portion * self.test_size // self.portions, (
            portion + 1
        ) * self.test_size // self.portions


@dataclass(frozen=True)
class MarketInfo:
    provider: str
    bounty: int
    created_at: int
    draw_block: int
    ended_at: int
    drawn: bool
    portion: int


@dataclass(frozen=True)
class RewardStatus:
    """Progress of the reward computation.

    ``stage``: 0 prepare, 1 train, 2 collect, 3 apply, 4 settle, 5 done.
    """

    stage: int
    trained: int
    settled: int
    active: int
    total: int
    remaining: int
    heap_size: int
    pending: int


@dataclass(frozen=True)
class ContributionRecord:
    """One ``ContributionAdded`` event."""

    id: int
    contributor: str
    deposit: int
    sample: bytes
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class CreatedMarket:
    """One ``MarketCreated`` event."""

    market: str
    provider: str
    test_root: bytes
    bounty: int
    block_number: int


def _logs(event: Any, from_block: int, to_block: int | None = None, **filters: Any) -> list[Any]:
    w3 = event.w3
    last = w3.eth.block_number if to_block is None else to_block
    out: list[Any] = []
    start = from_block
    while start <= last:
        end = min(start + LOG_WINDOW_BLOCKS - 1, last)
        out.extend(event.get_logs(from_block=start, to_block=end, argument_filters=filters or None))
        start = end + 1
    out.sort(key=lambda log: (log["blockNumber"], log["logIndex"]))
    return out


class FactoryClient:
    """The market factory: creates clones and lists them from ``MarketCreated``."""

    def __init__(self, w3: Web3, address: str) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(
            address=self.address, abi=load_artifact("MarketFactory").abi
        )

    def create_market(self, params: MarketParams, initial_weights: bytes) -> ContractFunction:
        """The ``createMarket`` call; send it with ``value = bounty``."""
        return self.contract.functions.createMarket(params.as_tuple(), initial_weights)

    def implementation(self) -> str:
        return str(self.contract.functions.implementation().call())

    def markets(self, from_block: int = 0, to_block: int | None = None) -> list[CreatedMarket]:
        """Every market the factory created, oldest first."""
        return [
            CreatedMarket(
                market=log["args"]["market"],
                provider=log["args"]["provider"],
                test_root=bytes(log["args"]["testRoot"]),
                bounty=int(log["args"]["bounty"]),
                block_number=int(log["blockNumber"]),
            )
            for log in _logs(self.contract.events.MarketCreated(), from_block, to_block)
        ]

    def market_from_receipt(self, receipt: Any) -> str:
        """The market address a ``createMarket`` receipt created."""
        events = self.contract.events.MarketCreated().process_receipt(receipt, errors=DISCARD)
        if not events:
            raise ValueError("the receipt holds no MarketCreated event")
        return str(events[0]["args"]["market"])


class MarketClient:
    """One market: typed reads, call builders, and event readers."""

    def __init__(self, w3: Web3, address: str, *, created_block: int = 0) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = Web3.to_checksum_address(address)
        # Logs before the clone existed cannot concern it; scanning starts here.
        self.created_block = created_block
        self.contract: Contract = w3.eth.contract(
            address=self.address, abi=load_artifact("PredictionMarket").abi
        )
        # Fixed when the market is created: read once per client.
        self._params: MarketParams | None = None
        self._provider: str | None = None

    # ------------------------------------------------------------------ reads

    def phase(self, block: BlockIdentifier = "latest") -> Phase:
        return Phase(self.contract.functions.phase().call(block_identifier=block))

    def params(self) -> MarketParams:
        """The launch parameters, which never change: read once per client."""
        if self._params is None:
            self._params = MarketParams.from_tuple(self.contract.functions.params().call())
        return self._params

    def provider(self) -> str:
        """The provider's address (lower-case), which never changes: read once per client."""
        if self._provider is None:
            self._provider = self.info().provider.lower()
        return self._provider

    def info(self) -> MarketInfo:
        return MarketInfo(*self.contract.functions.info().call())

    def contribution_stats(self) -> tuple[int, int]:
        """(number of contributions, sum of deposits in wei)."""
        count, deposits = self.contract.functions.contributionStats().call()
        return int(count), int(deposits)

    def contribution(self, contribution_id: int) -> tuple[str, int]:
        depositor, deposit = self.contract.functions.contribution(contribution_id).call()
        return str(depositor), int(deposit)

    def reveal_status(self) -> tuple[int, int, bytes]:
        """(test samples revealed for scoring, m, digest)."""
        revealed, m, digest = self.contract.functions.revealStatus().call()
        return int(revealed), int(m), bytes(digest)

    def weights_hash(self) -> bytes:
        return bytes(self.contract.functions.weightsHash().call())

    def reward_status(self) -> RewardStatus:
        return RewardStatus(*(int(v) for v in self.contract.functions.rewardStatus().call()))

    def payout_of(self, contribution_id: int) -> int:
        return int(self.contract.functions.payoutOf(contribution_id).call())

    def refund_of(self, contribution_id: int) -> int:
        return int(self.contract.functions.refundOf(contribution_id).call())

    def withdrawn(self, contribution_id: int) -> bool:
        return bool(self.contract.functions.withdrawn(contribution_id).call())

    def provider_remainder(self) -> int:
        return int(self.contract.functions.providerRemainder().call())

    def provider_withdrawn(self) -> bool:
        return bool(self.contract.functions.providerWithdrawn().call())

    def balance(self) -> int:
        return int(self.w3.eth.get_balance(self.address))

    # ------------------------------------------------------------------ calls

    def draw(self) -> ContractFunction:
        return self.contract.functions.draw()

    def reveal_public(
        self, items: bytes, proof: Sequence[bytes], flags: Sequence[bool]
    ) -> ContractFunction:
        return self.contract.functions.revealPublic(items, list(proof), list(flags))

    def contribute(self, features: Sequence[int], label: int) -> ContractFunction:
        """The ``contribute`` call; send it with ``value = deposit``."""
        return self.contract.functions.contribute(list(features), label)

    def end_market(self) -> ContractFunction:
        return self.contract.functions.endMarket()

    def reveal_batch(
        self, items: bytes, proof: Sequence[bytes], flags: Sequence[bool]
    ) -> ContractFunction:
        return self.contract.functions.revealBatch(items, list(proof), list(flags))

    def prepare_rewards(
        self, weights: bytes, test_samples: bytes, index: bytes
    ) -> ContractFunction:
        return self.contract.functions.prepareRewards(weights, test_samples, index)

    def process_rewards(
        self,
        state: bytes = b"",
        index: bytes = b"",
        contributions: bytes = b"",
        count: int = 0,
    ) -> ContractFunction:
        return self.contract.functions.processRewards(state, index, contributions, count)

    def cancel(self) -> ContractFunction:
        return self.contract.functions.cancel()

    def withdraw(self, ids: Sequence[int]) -> ContractFunction:
        return self.contract.functions.withdraw(list(ids))

    def withdraw_provider(self) -> ContractFunction:
        return self.contract.functions.withdrawProvider()

    # ------------------------------------------------------------------ events

    def _from_block(self) -> int:
        return self.created_block

    def initialized(self) -> dict[str, Any]:
        """The ``MarketInitialized`` event: provider, bounty, params, initial WEIGHTS."""
        logs = _logs(self.contract.events.MarketInitialized(), self._from_block())
        if not logs:
            raise LookupError(f"no MarketInitialized event for {self.address}")
        args = logs[0]["args"]
        return {
            "provider": args["provider"],
            "bounty": int(args["bounty"]),
            "params": MarketParams.from_tuple(
                tuple(args["params"].values())
                if isinstance(args["params"], Mapping)
                else args["params"]
            ),
            "initial_weights": bytes(args["initialWeights"]),
            "block_number": int(logs[0]["blockNumber"]),
        }

    def contributions(self, from_block: int | None = None) -> list[ContributionRecord]:
        """Every accepted contribution, in id order."""
        logs = _logs(
            self.contract.events.ContributionAdded(),
            self._from_block() if from_block is None else from_block,
        )
        records = [
            ContributionRecord(
                id=int(log["args"]["id"]),
                contributor=str(log["args"]["contributor"]),
                deposit=int(log["args"]["deposit"]),
                sample=bytes(log["args"]["sample"]),
                block_number=int(log["blockNumber"]),
                tx_hash=log["transactionHash"].to_0x_hex(),
            )
            for log in logs
        ]
        records.sort(key=lambda r: r.id)
        return records

    def revealed_batches(self) -> list[bytes]:
        """REVEAL_ITEM buffers of every ``TestBatchRevealed``, in reveal order.

        The items are the input of the ``revealBatch`` call that emitted the event (keeping
        them out of the event saves 8 gas a byte); a reveal sent through another contract
        would need a trace, and is refused here with a clear error.
        """
        logs = _logs(self.contract.events.TestBatchRevealed(), self._from_block())
        batches = []
        for log in logs:
            tx = self.w3.eth.get_transaction(log["transactionHash"])
            if tx.get("to") is None or Web3.to_checksum_address(tx["to"]) != self.address:
                raise LookupError(
                    f"reveal {log['transactionHash'].to_0x_hex()} was not a direct call to "
                    f"{self.address}: its items cannot be read from the transaction input"
                )
            fn, args = self.contract.decode_function_input(tx["input"])
            if fn.fn_name != "revealBatch":
                raise LookupError(f"reveal transaction calls {fn.fn_name}, not revealBatch")
            batches.append(bytes(args["items"]))
        return batches

    def public_portion(self) -> tuple[int, bytes] | None:
        """(portion, REVEAL_ITEMs) of the public reveal, once it happened."""
        logs = _logs(self.contract.events.PublicPortionRevealed(), self._from_block())
        if not logs:
            return None
        return int(logs[0]["args"]["portion"]), bytes(logs[0]["args"]["items"])

    def rounds(self) -> list[tuple[int, int, int]]:
        """Each ``RoundCompleted``: (cumulative amount T, remaining bounty R, removed count)."""
        return [
            (int(log["args"]["total"]), int(log["args"]["remaining"]), int(log["args"]["removed"]))
            for log in _logs(self.contract.events.RoundCompleted(), self._from_block())
        ]

    def initial_accuracy(self) -> int | None:
        """A_0 from ``RewardsPrepared``, once the reward phase is prepared."""
        logs = _logs(self.contract.events.RewardsPrepared(), self._from_block())
        return int(logs[0]["args"]["initialAccuracy"]) if logs else None

    def scored(self) -> list[tuple[int, int, list[int]]]:
        """Each ``ContributionsScored``: (from, A_0, the A_i of the step)."""
        initial = self.initial_accuracy()
        out = []
        for log in _logs(self.contract.events.ContributionsScored(), self._from_block()):
            raw = bytes(log["args"]["accuracies"])
            values = [int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4)]
            out.append((int(log["args"]["from"]), initial or 0, values))
        return out


def decode_event_args(args: Any) -> dict[str, Any]:
    """Event args as a plain dict (web3 returns an AttributeDict)."""
    return dict(cast(dict[str, Any], args))
