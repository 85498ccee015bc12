"""The next due step of a market, read from the chain, with its calldata built and sized.

:func:`next_step` is the whole decision of the orchestrator: it reads the market's phase and
progress from the chain (never from memory), and returns the one call that moves it forward,
or ``None`` when nothing is due. Every step is idempotent: if another actor did it first, the
next read sees the progress and plans the step after.

Only the reveals need the provider's secrets; every later step is built from public events,
so anyone can push a stalled market forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from web3.contract.contract import ContractFunction

from market import replay
from market.chain import MarketClient, MarketParams
from market.encoding import (
    CHECKPOINT,
    decode_reveal_items,
    encode_index,
    encode_reveal_items,
    encode_samples,
    encode_state,
    keccak256,
)
from market.errors import GasCapExceeded
from market.merkle import StandardMerkleTree
from market.model import Perceptron
from market.types import Phase, Sample, TestSample

# Reward stages of PredictionMarket.rewardStatus().
STAGE_PREPARE = 0
STAGE_TRAIN = 1
STAGE_DONE = 5
# Fraction of the gas cap a step aims for: estimates move a little between the estimate and
# the block (state written by other transactions), so a step keeps 10% headroom.
FILL = 0.97
# ``blockhash`` reads the last 256 blocks; a public reveal that draws is planned only while the
# draw block is well inside them (a transaction can wait a few blocks for inclusion).
DRAW_HASH_HORIZON = 240


@dataclass(frozen=True)
class Step:
    """One call to send: ``name`` for logs and status, ``call`` to sign, ``gas`` to use."""

    name: str
    call: ContractFunction
    gas: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RevealBatch:
    """REVEAL_ITEMs for some test indices, in the multiproof's order, with the proof."""

    indices: tuple[int, ...]
    items: bytes
    proof: list[bytes]
    flags: list[bool]


@dataclass(frozen=True)
class TrainingInput:
    """Calldata of one training step (docs/protocol.md): STATE, INDEX, contributions."""

    state: bytes
    index: bytes
    contributions: bytes
    count: int


def reveal_batch(
    tree: StandardMerkleTree, samples: Sequence[TestSample], indices: Sequence[int]
) -> RevealBatch:
    """A multiproof reveal of ``samples[i]`` for ``i`` in ``indices``."""
    multiproof = tree.get_multiproof(list(indices))
    items = encode_reveal_items([samples[i] for i in multiproof.leaf_indices])
    return RevealBatch(
        tuple(multiproof.leaf_indices), items, multiproof.proof, multiproof.proof_flags
    )


def unrevealed_indices(params: MarketParams, portion: int, revealed: set[int]) -> list[int]:
    """Test indices outside the public portion that are not revealed yet, ascending."""
    start, end = params.portion_range(portion)
    return [i for i in range(params.test_size) if not start <= i < end and i not in revealed]


def revealed_test_set(batches: Sequence[bytes]) -> list[TestSample]:
    """The revealed test samples in reveal order, from the reveal calls' items."""
    return [item for batch in batches for item in decode_reveal_items(batch)]


def training_input(
    initial: Perceptron,
    test: Sequence[Sample],
    contributions: Sequence[Sample],
    trained: int,
    count: int,
) -> TrainingInput:
    """Calldata to train contributions ``trained+1 .. trained+count``.

    The STATE is the model after the first ``trained`` contributions with the scores it gives
    the test samples; the contributions cover whole checkpoint blocks around the range.
    """
    model = initial.copy()
    for sample in contributions[:trained]:
        model.update(sample.features, sample.label)
    first = (trained // CHECKPOINT) * CHECKPOINT
    last = min(-(-(trained + count) // CHECKPOINT) * CHECKPOINT, len(contributions))
    return TrainingInput(
        state=encode_state(model.weights, model.scores_many([s.features for s in test])),
        index=encode_index(test, model.dim),
        contributions=encode_samples(contributions[first:last]),
        count=count,
    )


@dataclass
class MarketView:
    """What the planner reads of a market's public data (initial model, samples, reveals)."""

    client: MarketClient
    initial: Perceptron

    @classmethod
    def load(cls, client: MarketClient) -> MarketView:
        return cls(client=client, initial=replay.initial_model(client))

    def contributions(self) -> list[Sample]:
        return [c.sample for c in replay.contributions(self.client)]

    def test_set(self) -> list[Sample]:
        return [t.sample for t in replay.test_set(self.client)]


Estimator = Callable[[ContractFunction], int]


# Sizing stops when the next guess would add less than this fraction of the batch: one more
# estimate (an RPC call replaying the whole step) is not worth a 2% fuller transaction.
MIN_GROWTH = 0.02
# At most this many estimates per step: the secant search below converges in 3-4 on the
# near-linear costs of reveals and training; the bound only guards against odd curves.
MAX_ESTIMATES = 8


def _largest_fitting(
    build: Callable[[int], ContractFunction], upper: int, estimate: Estimator, budget: int
) -> tuple[int, ContractFunction, int]:
    """The largest ``k <= upper`` whose call's gas estimate fits ``budget`` (near enough).

    A secant search on the marginal cost: a call's gas is a fixed part plus a near-constant
    cost per item, so extrapolating from one small probe (which charges the fixed part to
    every item) undershoots, by a third for reveals. Each guess uses the slope between the
    last two estimates; fitting guesses raise the floor, others lower the ceiling.
    """
    k = min(upper, 4)
    call = build(k)
    gas = estimate(call)
    best: tuple[int, ContractFunction, int] | None = (k, call, gas) if gas <= budget else None
    ceiling = upper + 1 if best else k  # smallest size known not to fit
    points = [(0, 0), (k, gas)] if best else [(k, gas)]
    for _ in range(MAX_ESTIMATES - 1):
        low = best[0] if best else 0
        if best and best[0] == upper or ceiling - low <= 1:
            break
        (k0, g0), (k1, g1) = points[-2:] if len(points) > 1 else ((0, 0), points[-1])
        slope = max(1.0, (g1 - g0) / (k1 - k0)) if k1 != k0 else max(1.0, g1 / max(k1, 1))
        guess = int(k1 + (budget - g1) / slope)
        guess = max(low + 1, min(guess, ceiling - 1, upper))
        if best and guess - best[0] < max(1, MIN_GROWTH * best[0]):
            break
        call = build(guess)
        gas = estimate(call)
        points.append((guess, gas))
        if gas <= budget:
            best = (guess, call, gas)
        else:
            ceiling = guess
    if best is not None:
        return best
    # Not even the smallest probe fits: one item, and the cap check refuses it if it must.
    call = build(1)
    return 1, call, estimate(call)


def next_step(
    client: MarketClient,
    *,
    gas_cap: int,
    secrets: tuple[StandardMerkleTree, Sequence[TestSample]] | None = None,
    sender: str | None = None,
    view: MarketView | None = None,
    rounds_after_training: bool = True,
) -> Step | None:
    """The call that moves the market forward now, or ``None`` if nothing is due.

    ``secrets`` (the provider's tree and salted samples) are needed for the two reveals;
    without them those steps are not planned. ``sender`` is the account that will send,
    used for gas estimation and for the provider's withdrawal. ``rounds_after_training=False``
    keeps the rounds out of the last training step (to measure the two apart).
    """
    w3 = client.w3
    phase = client.phase()
    info = client.info()
    budget = int(gas_cap * FILL)

    def estimate(call: ContractFunction) -> int:
        return int(call.estimate_gas({"from": sender} if sender else {}))

    if phase == Phase.COMMITTED:
        portion = info.portion
        if not info.drawn:
            # Nodes estimate against the latest block, so wait until it is past the draw block.
            if w3.eth.block_number <= info.draw_block:
                return None
            # The provider's reveal draws by itself (one transaction instead of two); anyone
            # else, or a draw block too old to read, goes through draw().
            predicted = predicted_portion(client, info.draw_block) if secrets else None
            if predicted is None:
                return Step("draw", client.draw())
            portion = predicted
        if secrets is None:
            return None
        tree, samples = secrets
        params = client.params()
        start, end = params.portion_range(portion)
        batch = reveal_batch(tree, samples, range(start, end))
        return Step(
            "reveal_public",
            client.reveal_public(batch.items, batch.proof, batch.flags),
            detail={"portion": portion, "samples": len(batch.indices), "draws": not info.drawn},
        )

    if phase == Phase.PARTICIPATION:
        params = client.params()
        count, _ = client.contribution_stats()
        now = int(w3.eth.get_block("latest")["timestamp"])
        if now >= params.earliest_end and count >= params.min_contributions:
            return Step("end", client.end_market(), detail={"contributions": count})
        return None

    if phase == Phase.REVEAL:
        if secrets is None:
            return None
        tree, samples = secrets
        params = client.params()
        revealed = {t.index for t in revealed_test_set(client.revealed_batches())}
        pending = unrevealed_indices(params, info.portion, revealed)
        if not pending:
            return None

        def build_reveal(k: int) -> ContractFunction:
            b = reveal_batch(tree, samples, pending[:k])
            return client.reveal_batch(b.items, b.proof, b.flags)

        k, call, gas = _largest_fitting(build_reveal, len(pending), estimate, budget)
        return Step(
            "reveal",
            call,
            gas=_with_margin(gas, gas_cap, "revealBatch"),
            detail={"samples": k, "remaining": len(pending) - k},
        )

    if phase == Phase.REWARD:
        status = client.reward_status()
        if status.stage == STAGE_PREPARE:
            view = view or MarketView.load(client)
            test = view.test_set()
            call = client.prepare_rewards(
                view.initial.weights_bytes(),
                encode_samples(test),
                encode_index(test, view.initial.dim),
            )
            return Step(
                "prepare", call, gas=_with_margin(estimate(call), gas_cap, "prepareRewards")
            )
        if status.stage == STAGE_TRAIN:
            view = view or MarketView.load(client)
            contributions = view.contributions()
            test = view.test_set()
            trained = status.trained

            def build_train(k: int) -> ContractFunction:
                t = training_input(view.initial, test, contributions, trained, k)
                return client.process_rewards(t.state, t.index, t.contributions, k)

            k, call, gas = _largest_fitting(
                build_train, len(contributions) - trained, estimate, budget
            )
            limit = _with_margin(gas, gas_cap, "processRewards (training)")
            # The call goes on with the rounds while gasleft() allows: the last training step
            # gets the whole cap, so a small market's rounds and settlement need no more steps.
            rounds = rounds_after_training and trained + k == len(contributions)
            return Step(
                "train",
                call,
                gas=gas_cap if rounds else limit,
                detail={
                    "contributions": k,
                    "trained": trained + k,
                    "total": len(contributions),
                    "rounds": rounds,
                },
            )
        # Rounds and settlement stop by themselves when gasleft() runs low: give them the cap.
        return Step(
            "rewards", client.process_rewards(), gas=gas_cap, detail={"stage": status.stage}
        )

    is_provider = sender is not None and sender.lower() == info.provider.lower()
    if (
        phase in (Phase.COLLECT, Phase.CANCELLED)
        and is_provider
        and not client.provider_withdrawn()
        and _provider_amount(client, phase, info) > 0
    ):
        return Step("withdraw_provider", client.withdraw_provider())
    return None


def predicted_portion(client: MarketClient, draw_block: int) -> int | None:
    """The portion a draw in the next block picks, or None when the planner cannot know it.

    The contract's rule (docs/protocol.md): ``keccak256(abi.encode(blockhash(drawBlock),
    market)) % P``. None before the draw block is mined, and near the 256-block edge of
    ``blockhash``: a reveal planned there could land after the hash is gone, where only
    ``draw()`` (which re-arms) helps.
    """
    w3 = client.w3
    latest = int(w3.eth.block_number)
    if latest <= draw_block or latest + 1 - draw_block > DRAW_HASH_HORIZON:
        return None
    seed = bytes(w3.eth.get_block(draw_block)["hash"])
    market = bytes.fromhex(client.address[2:])
    digest = keccak256(seed + bytes(12) + market)
    return int.from_bytes(digest, "big") % client.params().portions


def _provider_amount(client: MarketClient, phase: Phase, info: Any) -> int:
    if phase == Phase.COLLECT:
        return client.provider_remainder()
    return 0 if client.public_portion() is not None else int(info.bounty)


def _with_margin(estimate: int, cap: int, what: str) -> int:
    """Gas limit for a sized step: the estimate plus 10%, never above the cap.

    A step whose smallest batch (one item) is estimated above the cap is refused here: sent
    with the cap as its limit it could only run out of gas and revert.
    """
    if estimate > cap:
        raise GasCapExceeded(estimate, cap, what)
    return min(cap, estimate + estimate // 10)
