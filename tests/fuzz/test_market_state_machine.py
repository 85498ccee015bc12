"""Stateful fuzzing of one market on anvil: random actors, random calls, random time.

Each example launches a market and lets hypothesis pick a sequence of calls from every
entry point: valid and malformed contributions with deposits below, at and above the stake,
the draw, honest and wrong public reveals, the end, honest and forged reveal batches (wrong
index, duplicate, public-portion index), reward steps with small gas budgets and forged
training input, withdrawals of one's own and of others' ids, the provider's withdrawal,
cancel, and moves of the clock. Where the outcome of a call is certain from the state, the
machine asserts it (accepted or refused, and the amount paid). After every step it checks:

- conservation: the contract holds exactly what it still owes (no ether is force-fed here,
  so the balance is exact; the attack tests cover force-feeding); at COLLECT
  ``bounty + deposits = Σ payoutOf + providerRemainder`` to the wei;
- no payout is a wrapped negative balance (each is at most the whole pot);
- the phase never goes back (CANCELLED only from COMMITTED or REVEAL);
- every accepted ``processRewards`` makes progress;
- at COLLECT, the payouts equal ``market.rewards.compute_rewards`` on the revealed test set.

The chain is reverted after every example. ``MARKET_FUZZ_EXAMPLES`` runs more examples;
``MARKET_FUZZ_TALLY`` names a JSON file that receives the tallies (examples run included), for
``benchmarks/reliability.py``.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from eth_account.signers.local import LocalAccount
from hypothesis import HealthCheck, settings
from hypothesis import Phase as Stage
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3 import Web3
from web3.logs import DISCARD

from market.chain import FactoryClient, MarketClient
from market.contracts import load_artifact
from market.encoding import encode_index, encode_reveal_items, encode_samples
from market.merkle import StandardMerkleTree, test_sample_tree
from market.steps import (
    STAGE_PREPARE,
    STAGE_TRAIN,
    MarketView,
    next_step,
    predicted_portion,
    reveal_batch,
    revealed_test_set,
    training_input,
    unrevealed_indices,
)
from market.types import Phase, TestSample
from tests.contracts.chaintools import Reverted, error_selector, increase_time, mine, send
from tests.contracts.scenario import MarketSpec, launch, mirror_of, random_spec

EXAMPLES = int(os.environ.get("MARKET_FUZZ_EXAMPLES", "25"))
TALLY_PATH = os.environ.get("MARKET_FUZZ_TALLY")
STEPS = 40
# Launch clock: earliest end at +DURATION/2, latest end at +DURATION, each reveal window
# DURATION long. Time moves below are chosen around these so that every deadline is crossed.
DURATION = 1200
PROVIDER = 0
CONTRIBUTORS = (1, 2, 3, 4, 5)
OUTSIDER = 6  # never contributes: tries others' ids and the provider's withdrawal
GAS_CAP = 15_000_000
# A phase read this close to a deadline may differ from the phase the next block sees (the
# next block's timestamp follows the wall clock), so outcomes there are not predicted.
DEADLINE_SLACK_S = 5
# Small budgets: most reward calls then run only a unit or two of work, or run out of gas.
REWARD_GAS = (60_000, 150_000, 250_000, 400_000, 800_000, 2_000_000, None)
TIME_MOVES = (1, 60, 200, 400, 700, 700, 1300)
PHASE_ORDER = {
    Phase.COMMITTED: 0,
    Phase.PARTICIPATION: 1,
    Phase.REVEAL: 2,
    Phase.REWARD: 3,
    Phase.COLLECT: 4,
}
INVALID_SAMPLES = ("label", "order", "duplicate", "range", "empty", "count")
ANYONE = st.sampled_from((PROVIDER, OUTSIDER, *CONTRIBUTORS))
SEED = st.integers(0, 2**16)
# Arguments of each call rule, shared by the rule and by out_of_turn.
ARGS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "contribute": {
        "who": st.sampled_from(CONTRIBUTORS),
        "kind": st.sampled_from(("valid", "valid", "valid", *INVALID_SAMPLES)),
        "deposit": st.sampled_from(("below", "at", "at", "above")),
        "seed": SEED,
    },
    "draw": {"who": ANYONE},
    "reveal_public": {
        "who": st.sampled_from((PROVIDER, OUTSIDER)),
        "kind": st.sampled_from(("honest", "honest", "wrong_portion", "partial")),
    },
    "end_market": {"who": ANYONE},
    "reveal_batch": {
        "who": st.sampled_from((PROVIDER, OUTSIDER)),
        "kind": st.sampled_from(
            ("honest", "honest", "wrong_index", "duplicate", "public", "twice_in_batch")
        ),
        "k": st.integers(1, 4),
        "seed": SEED,
    },
    "process_rewards": {
        "who": st.sampled_from((OUTSIDER, *CONTRIBUTORS)),
        "gas": st.sampled_from(REWARD_GAS),
        "k": st.integers(1, 20),
        "forged": st.sampled_from((False, False, False, True)),
    },
    "withdraw": {
        "who": st.sampled_from((*CONTRIBUTORS, OUTSIDER)),
        "mode": st.sampled_from(("own", "own", "others", "again", "bogus", "twice", "empty")),
        "seed": SEED,
    },
    "withdraw_provider": {"who": st.sampled_from((PROVIDER, OUTSIDER))},
    "cancel": {"who": ANYONE},
}
FINAL = (Phase.COLLECT, Phase.CANCELLED)
F = TypeVar("F", bound=Callable[..., None])


def call_rule(name: str) -> Callable[[F], F]:
    """``@rule`` with the shared arguments of the call ``name``."""
    decorator: Callable[[F], F] = rule(**ARGS[name])  # type: ignore[call-overload]
    return decorator


# Tallies across examples, printed at the end of the test (what the run reached).
REACHED: Counter[str] = Counter()


def _error_names() -> dict[bytes, str]:
    names: dict[bytes, str] = {}
    for e in load_artifact("IPredictionMarket").abi:
        if e["type"] == "error":
            # Every error input is elementary (enums are uint8 in the ABI).
            types = ",".join(i["type"] for i in e["inputs"])
            names[error_selector(e["name"], types)] = e["name"]
    return names


ERRORS = _error_names()


@dataclass
class Env:
    """The session fixtures the machine runs on (set by the test before it starts)."""

    w3: Web3
    factory: FactoryClient
    accounts: list[LocalAccount]


class MarketMachine(RuleBasedStateMachine):
    """One market and the actors around it; see the module docstring."""

    env: ClassVar[Env]

    def __init__(self) -> None:
        super().__init__()
        self.w3 = self.env.w3
        self.accounts = self.env.accounts
        self.snap = self.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
        self.client: MarketClient | None = None
        self.last_phase = Phase.COMMITTED
        self.ids: dict[int, int] = {}  # contribution id -> account index
        self.withdrawn: set[int] = set()
        self.paid_out = 0  # Σ Withdrawn amounts
        self.provider_withdrawn = False
        self.public_revealed = False
        self.end_recorded = False
        self.cancel_called = False
        self.revealed: list[int] = []  # test indices revealed for scoring, in order
        self.checked_collect = False

    # ------------------------------------------------------------------ setup

    @initialize(
        seed=st.integers(0, 2**32),
        n=st.integers(4, 12),
        greater=st.booleans(),
        start=st.sampled_from(
            (Phase.COMMITTED, Phase.PARTICIPATION, Phase.REVEAL, Phase.REWARD, Phase.REWARD)
        ),
        crowd=st.lists(st.sampled_from(CONTRIBUTORS), min_size=1, max_size=10),
    )
    def launch_market(
        self, seed: int, n: int, greater: bool, start: Phase, crowd: list[int]
    ) -> None:
        """Launch, then play honestly up to ``start`` so that every phase gets its share of the
        random steps (a random walk from COMMITTED rarely gets past the participation)."""
        rng = random.Random(seed)
        spec = random_spec(rng, contributions=0, n=n, dim=8)
        spec.allow_greater = greater
        self.spec: MarketSpec = spec
        self.tree: StandardMerkleTree = test_sample_tree(spec.test)
        self.client = launch(
            self.w3, self.env.factory, self.accounts[PROVIDER], spec, duration=DURATION
        )
        self.params = self.client.params()
        if start == Phase.COMMITTED:
            return
        mine(self.w3, 2)  # past the draw block, so that the draw can be estimated
        self.draw(PROVIDER)
        self.reveal_public(PROVIDER, "honest")
        self.contribute_crowd(crowd, seed)
        if start == Phase.PARTICIPATION:
            return
        increase_time(self.w3, self.params.earliest_end - self._now() + 1)
        self.end_market(PROVIDER)
        if start == Phase.REVEAL:
            return
        while self.market.phase() == Phase.REVEAL:
            self.reveal_batch(PROVIDER, "honest", 4, seed)
        assert self.market.phase() in (Phase.REWARD, Phase.COLLECT)

    def teardown(self) -> None:
        REACHED["example"] += 1
        self.w3.provider.make_request("evm_revert", [self.snap])  # type: ignore[arg-type]

    # ------------------------------------------------------------------ helpers

    @property
    def market(self) -> MarketClient:
        assert self.client is not None
        return self.client

    def _now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def _certain(self) -> bool:
        """Whether the next block sees the phase the latest block shows."""
        now = self._now()
        info = self.market.info()
        deadlines = [
            info.created_at + self.params.reveal_window,
            self.params.earliest_end,
            self.params.latest_end,
            self.params.latest_end + self.params.reveal_window,
        ]
        if info.ended_at:
            deadlines.append(info.ended_at + self.params.reveal_window)
        return all(abs(now - d) > DEADLINE_SLACK_S for d in deadlines)

    def _send(
        self, who: int, fn: Any, *, value: int = 0, gas: int | None = None
    ) -> tuple[Any, str | None]:
        """(receipt, None) if accepted, (None, error name or "") if refused."""
        try:
            receipt = send(self.w3, self.accounts[who], fn, value=value, gas=gas)
        except Reverted as exc:
            return None, ERRORS.get(exc.data[:4], "")
        self._record_withdrawals(receipt)
        return receipt, None

    def _record_withdrawals(self, receipt: Any) -> None:
        for log in self.market.contract.events.Withdrawn().process_receipt(receipt, errors=DISCARD):
            self.paid_out += int(log["args"]["amount"])

    @staticmethod
    def _expect(expected: bool | None, error: str | None, what: str) -> None:
        if expected is None:
            return
        accepted = error is None
        assert accepted == expected, (
            f"{what}: expected {'accepted' if expected else 'refused'}, got {error!r}"
        )

    # ------------------------------------------------------------------ participation

    @precondition(lambda self: self.last_phase in (Phase.PARTICIPATION,))
    @call_rule("contribute")
    def contribute(self, who: int, kind: str, deposit: str, seed: int) -> None:
        rng = random.Random(seed)
        dim, maxf = self.params.dim, self.params.max_features
        features = sorted(rng.sample(range(dim), rng.randint(1, maxf)))
        label = rng.randint(0, 1)
        if kind == "label":
            label = 2
        elif kind == "order":
            features = [1, 0]
        elif kind == "duplicate":
            features = [features[0], features[0]]
        elif kind == "range":
            features = [*features[:-1], dim]
        elif kind == "empty":
            features = []
        elif kind == "count":
            features = list(range(maxf + 1)) if maxf < dim else [*range(dim), dim]
        stake = self.params.min_stake
        value = {"below": stake - 1, "at": stake, "above": stake + rng.randint(1, 3 * stake)}[
            deposit
        ]
        certain = self._certain()
        phase = self.market.phase()
        count_before, deposits_before = self.market.contribution_stats()
        receipt, error = self._send(who, self.market.contribute(features, label), value=value)
        ok = phase == Phase.PARTICIPATION and kind == "valid" and deposit != "below"
        self._expect(ok if certain else None, error, f"contribute {kind} {deposit} in {phase.name}")
        if receipt is not None:
            count, deposits = self.market.contribution_stats()
            charged = value if self.params.allow_greater_deposits else stake
            assert (count, deposits) == (count_before + 1, deposits_before + charged)
            self.ids[count] = who
            REACHED["contribution"] += 1

    @precondition(lambda self: self.last_phase == Phase.PARTICIPATION)
    @rule(
        crowd=st.lists(st.sampled_from(CONTRIBUTORS), min_size=1, max_size=6),
        seed=st.integers(0, 2**16),
    )
    def contribute_crowd(self, crowd: list[int], seed: int) -> None:
        """Several valid contributions in a row (markets need a crowd to reward)."""
        for i, who in enumerate(crowd):
            self.contribute(who, "valid", "above" if (seed >> i) & 1 else "at", seed + i)

    @precondition(lambda self: self.last_phase in (Phase.COMMITTED,))
    @call_rule("draw")
    def draw(self, who: int) -> None:
        certain = self._certain()
        phase = self.market.phase()
        info = self.market.info()
        # The draw's own block comes after the draw block, but nodes estimate gas against the
        # latest block, so a draw sent while the latest block *is* the draw block is refused
        # at estimation (the planner waits one more block): not predicted there.
        latest = self.w3.eth.block_number
        certain = certain and latest != info.draw_block
        _, error = self._send(who, self.market.draw())
        ok = phase == Phase.COMMITTED and not info.drawn and latest > info.draw_block
        self._expect(ok if certain else None, error, f"draw in {phase.name}")

    @precondition(lambda self: self.last_phase in (Phase.COMMITTED,))
    @call_rule("reveal_public")
    def reveal_public(self, who: int, kind: str) -> None:
        info = self.market.info()
        # Before the draw the reveal draws by itself: it must reveal the portion to come.
        predicted = None if info.drawn else predicted_portion(self.market, info.draw_block)
        portion = info.portion if predicted is None else predicted
        parts = self.params.portions
        if kind == "wrong_portion":
            portion = (portion + 1) % parts
        start, end = self.params.portion_range(portion)
        indices = list(range(start, end))
        if kind == "partial" and len(indices) > 1:
            indices = indices[:-1]
        else:
            kind = "honest" if kind == "partial" else kind
        batch = reveal_batch(self.tree, self.spec.test, indices)
        certain = self._certain()
        phase = self.market.phase()
        receipt, error = self._send(
            who, self.market.reveal_public(batch.items, batch.proof, batch.flags)
        )
        # The prediction reads the latest block; the reveal runs in the next one, where the
        # same hash is read (the draw block is far from blockhash's 256-block edge here).
        drawable = info.drawn or predicted is not None
        ok = phase == Phase.COMMITTED and drawable and kind == "honest"
        self._expect(ok if certain else None, error, f"revealPublic {kind} in {phase.name}")
        if receipt is not None:
            self.public_revealed = True
            REACHED["public reveal"] += 1

    @precondition(lambda self: self.last_phase in (Phase.PARTICIPATION,))
    @call_rule("end_market")
    def end_market(self, who: int) -> None:
        certain = self._certain()
        now = self._now()
        receipt, error = self._send(who, self.market.end_market())
        could_end = now >= self.params.latest_end or now >= self.params.earliest_end
        ok = self.public_revealed and not self.end_recorded and not self.cancel_called and could_end
        self._expect(ok if certain else None, error, "endMarket")
        if receipt is not None:
            self.end_recorded = True

    # ------------------------------------------------------------------ reveal

    def _pending(self, portion: int) -> list[int]:
        return unrevealed_indices(self.params, portion, set(self.revealed))

    @precondition(lambda self: self.last_phase in (Phase.REVEAL,))
    @call_rule("reveal_batch")
    def reveal_batch(self, who: int, kind: str, k: int, seed: int) -> None:
        rng = random.Random(seed)
        info = self.market.info()
        pending = self._pending(info.portion)
        start, end = self.params.portion_range(info.portion)
        outside = [i for i in range(self.params.test_size) if not start <= i < end]
        test = self.spec.test
        indices: list[int] = []
        if kind == "honest" and pending:
            indices = pending[:k]
            batch = reveal_batch(self.tree, test, indices)
            items, proof, flags = batch.items, batch.proof, batch.flags
        elif kind == "duplicate" and self.revealed:
            batch = reveal_batch(self.tree, test, [rng.choice(self.revealed)])
            items, proof, flags = batch.items, batch.proof, batch.flags
        elif kind == "public":
            batch = reveal_batch(self.tree, test, [rng.randrange(start, end)])
            items, proof, flags = batch.items, batch.proof, batch.flags
        elif kind == "twice_in_batch":
            i = rng.choice(pending or outside)
            batch = reveal_batch(self.tree, test, [i])
            items, proof, flags = batch.items * 2, batch.proof, batch.flags
        else:
            # A sample revealed under another index: the leaf changes, so the proof fails.
            kind = "wrong_index"
            i = rng.choice(pending or outside)
            j = rng.choice([x for x in outside if x != i])
            batch = reveal_batch(self.tree, test, [i])
            s = test[i]
            items = encode_reveal_items([TestSample(j, s.salt, s.features, s.label)])
            proof, flags = batch.proof, batch.flags
        certain = self._certain()
        phase = self.market.phase()
        receipt, error = self._send(who, self.market.reveal_batch(items, proof, flags))
        ok = phase == Phase.REVEAL and kind == "honest" and bool(indices)
        self._expect(ok if certain else None, error, f"revealBatch {kind} in {phase.name}")
        if kind != "honest" and certain and phase == Phase.REVEAL:
            assert error in ("MarketInvalidRevealIndex", "MarketInvalidProof"), (kind, error)
        if receipt is not None:
            self.revealed.extend(reveal_batch(self.tree, test, indices).indices)
            REACHED["reveal batch"] += 1

    # ------------------------------------------------------------------ reward

    @precondition(lambda self: self.last_phase in (Phase.REWARD,))
    @call_rule("process_rewards")
    def process_rewards(self, who: int, gas: int | None, k: int, forged: bool) -> None:
        phase = self.market.phase()
        before = self.market.reward_status()
        if phase == Phase.REWARD and before.stage == STAGE_PREPARE:
            view = MarketView.load(self.market)
            test = view.test_set()
            weights = view.initial.weights_bytes()
            if forged:
                weights = bytes([weights[0] ^ 1]) + weights[1:]
            call = self.market.prepare_rewards(
                weights, encode_samples(test), encode_index(test, view.initial.dim)
            )
        elif phase == Phase.REWARD and before.stage == STAGE_TRAIN:
            view = MarketView.load(self.market)
            contributions = view.contributions()
            count = min(k, len(contributions) - before.trained)
            t = training_input(view.initial, view.test_set(), contributions, before.trained, count)
            state = t.state
            if forged:
                state = bytes([state[0] ^ 1]) + state[1:]
            call = self.market.process_rewards(state, t.index, t.contributions, count)
        else:
            call = self.market.process_rewards()
            forged = False
        receipt, error = self._send(who, call, gas=gas)
        if phase != Phase.REWARD or forged:
            assert receipt is None, f"processRewards accepted in {phase.name} (forged={forged})"
            return
        if receipt is None:
            return
        REACHED["reward step"] += 1
        after = self.market.reward_status()
        if after == before:
            # Heap pops and pending marks are not in rewardStatus: look at the storage itself.
            REACHED["reward step invisible in rewardStatus"] += 1
            diff = self.w3.provider.make_request(
                "debug_traceTransaction",  # type: ignore[arg-type]
                [
                    receipt["transactionHash"].to_0x_hex(),
                    {"tracer": "prestateTracer", "tracerConfig": {"diffMode": True}},
                ],
            )["result"]
            post = diff["post"].get(self.market.address.lower(), {})
            assert post.get("storage"), "an accepted processRewards changed nothing"

    @precondition(lambda self: self.last_phase not in FINAL)
    @rule(steps=st.integers(1, 8))
    def operator_advances(self, steps: int) -> None:
        """The service's own planner moves the market (so that examples reach the end)."""
        provider = self.accounts[PROVIDER]
        for _ in range(steps):
            certain = self._certain()
            step = next_step(
                self.market,
                gas_cap=GAS_CAP,
                secrets=(self.tree, self.spec.test),
                sender=provider.address,
            )
            if step is None:
                # Only the draw block is missing: mine it.
                if self.market.phase() == Phase.COMMITTED:
                    mine(self.w3)
                else:  # in PARTICIPATION the clock moves only by move_time
                    return
                    return
                continue
            before = self.market.phase()
            receipt, error = self._send(PROVIDER, step.call, gas=step.gas)
            if receipt is None:
                assert not certain, f"planned step {step.name} refused: {error!r}"
                return
            if step.name == "reveal_public":
                self.public_revealed = True
            elif step.name == "end":
                self.end_recorded = True
            elif step.name == "reveal":
                self.revealed = [t.index for t in revealed_test_set(self.market.revealed_batches())]
            elif step.name == "withdraw_provider":
                self.provider_withdrawn = True
            if self.market.phase() != before:
                return  # leave the new phase to the other actors for a while

    # ------------------------------------------------------------------ collect, cancel

    @precondition(lambda self: self.last_phase in FINAL)
    @call_rule("withdraw")
    def withdraw(self, who: int, mode: str, seed: int) -> None:
        rng = random.Random(seed)
        own = [i for i, a in self.ids.items() if a == who and i not in self.withdrawn]
        ids: list[int]
        if mode == "own" and own:
            ids = rng.sample(own, rng.randint(1, len(own)))
        elif mode == "others" and any(a != who for a in self.ids.values()):
            ids = [rng.choice([i for i, a in self.ids.items() if a != who])]
        elif mode == "again" and any(self.ids[i] == who for i in self.withdrawn):
            ids = [rng.choice([i for i in self.withdrawn if self.ids[i] == who])]
        elif mode == "twice" and own:
            ids = [own[0], own[0]]
        elif mode == "bogus":
            ids = [rng.choice((0, len(self.ids) + 1))]
        else:
            mode, ids = "empty", []
        certain = self._certain()
        phase = self.market.phase()
        expected_amount = 0
        if mode == "own" and phase == Phase.COLLECT:
            expected_amount = sum(self.market.payout_of(i) for i in ids)
        elif mode == "own" and phase == Phase.CANCELLED:
            expected_amount = sum(self.market.refund_of(i) for i in ids)
        paid_before = self.paid_out
        receipt, error = self._send(who, self.market.withdraw(ids))
        ok = phase in (Phase.COLLECT, Phase.CANCELLED) and mode == "own"
        self._expect(ok if certain else None, error, f"withdraw {mode} {ids} in {phase.name}")
        if receipt is not None and certain:
            assert self.paid_out - paid_before == expected_amount
        if receipt is not None:
            self.withdrawn.update(ids)
            REACHED["withdraw"] += 1

    @precondition(lambda self: self.last_phase in FINAL)
    @call_rule("withdraw_provider")
    def withdraw_provider(self, who: int) -> None:
        certain = self._certain()
        phase = self.market.phase()
        amount = 0
        if phase == Phase.COLLECT:
            amount = self.market.provider_remainder()
        elif phase == Phase.CANCELLED and not self.public_revealed:
            amount = self.params_bounty()
        paid_before = self.paid_out
        receipt, error = self._send(who, self.market.withdraw_provider())
        ok = who == PROVIDER and not self.provider_withdrawn and amount > 0
        self._expect(ok if certain else None, error, f"withdrawProvider by {who} in {phase.name}")
        if receipt is not None:
            assert not certain or self.paid_out - paid_before == amount
            self.provider_withdrawn = True

    def params_bounty(self) -> int:
        return int(self.market.info().bounty)

    @precondition(lambda self: self.last_phase in (Phase.COMMITTED, Phase.REVEAL, Phase.CANCELLED))
    @call_rule("cancel")
    def cancel(self, who: int) -> None:
        certain = self._certain()
        phase = self.market.phase()
        receipt, error = self._send(who, self.market.cancel())
        ok = phase == Phase.CANCELLED and not self.cancel_called
        self._expect(ok if certain else None, error, f"cancel in {phase.name}")
        if receipt is not None:
            self.cancel_called = True

    # ------------------------------------------------------------------ time

    @precondition(lambda self: self.last_phase not in (Phase.REWARD, *FINAL))
    @rule(seconds=st.sampled_from(TIME_MOVES))
    def move_time(self, seconds: int) -> None:
        increase_time(self.w3, seconds)

    @rule(blocks=st.integers(1, 3))
    def mine_blocks(self, blocks: int) -> None:
        mine(self.w3, blocks)

    @rule(name=st.sampled_from(sorted(ARGS)), data=st.data())
    def out_of_turn(self, name: str, data: st.DataObject) -> None:
        """Any call at any time: the phase-gated rules above, called in any phase."""
        getattr(self, name)(**data.draw(st.fixed_dictionaries(ARGS[name])))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def phase_never_goes_back(self) -> None:
        if self.client is None:
            return
        phase = self.market.phase()
        last = self.last_phase
        if phase == Phase.CANCELLED:
            # From PARTICIPATION the market passes through REVEAL implicitly at latestEnd.
            assert last in (Phase.COMMITTED, Phase.REVEAL, Phase.CANCELLED) or (
                last == Phase.PARTICIPATION and self.market.info().ended_at != 0
            ), f"{last.name} -> CANCELLED"
        else:
            assert last != Phase.CANCELLED, f"CANCELLED -> {phase.name}"
            assert PHASE_ORDER[phase] >= PHASE_ORDER[last], f"{last.name} -> {phase.name}"
        if phase != last:
            REACHED[f"phase {phase.name}"] += 1
        self.last_phase = phase

    @invariant()
    def conservation(self) -> None:
        if self.client is None:
            return
        market = self.market
        phase = market.phase()
        count, deposits = market.contribution_stats()
        bounty = int(market.info().bounty)
        pot = bounty + deposits
        balance = market.balance()
        # Nothing here sends ether to the market but its own calls: the books are exact.
        assert balance == pot - self.paid_out, (balance, pot, self.paid_out)
        ids = range(1, count + 1)
        if phase == Phase.COLLECT:
            payouts = [market.payout_of(i) for i in ids]
            remainder = market.provider_remainder()
            assert all(0 <= p <= pot for p in payouts), payouts  # no wrapped negative balance
            assert pot == sum(payouts) + remainder
            owed = sum(p for i, p in zip(ids, payouts, strict=True) if i not in self.withdrawn)
            owed += 0 if self.provider_withdrawn else remainder
            assert balance == owed, (balance, owed)
            if not self.checked_collect:
                self._check_mirror(payouts, remainder, bounty, count)
        elif phase == Phase.CANCELLED:
            refunds = [market.refund_of(i) for i in ids]
            if self.public_revealed:
                assert sum(refunds) == pot  # the provider gets nothing back, not even dust
            owed = sum(r for i, r in zip(ids, refunds, strict=True) if i not in self.withdrawn)
            if not self.public_revealed and not self.provider_withdrawn:
                owed += bounty
            assert balance == owed, (balance, owed)
        else:
            assert self.paid_out == 0
            assert balance == pot

    def _check_mirror(self, payouts: list[int], remainder: int, bounty: int, count: int) -> None:
        self.checked_collect = True
        REACHED["collect checked against the mirror"] += 1
        if count == 0:
            assert remainder == bounty
            return
        mirror = mirror_of(self.market, self.spec)
        assert payouts == list(mirror.payouts)
        assert remainder == mirror.provider_remainder
        assert [t.index for t in revealed_test_set(self.market.revealed_batches())] == (
            self.revealed
        )


@pytest.mark.timeout(300)
def test_market_state_machine(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount]
) -> None:
    MarketMachine.env = Env(w3, factory, accounts)
    REACHED.clear()
    try:
        run_state_machine_as_test(
            MarketMachine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                derandomize=True,
                # No shrinking: each step is a transaction, and shrinking a 40-step failure
                # would take far longer than finding it. The failing sequence is printed as found.
                phases=(Stage.explicit, Stage.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        if TALLY_PATH:
            Path(TALLY_PATH).write_text(json.dumps(dict(REACHED)))
    print(dict(REACHED))
    # The run must have exercised the whole life of a market, not only its first phase.
    assert REACHED["collect checked against the mirror"] > 0
    assert REACHED["reward step"] > 0 and REACHED["withdraw"] > 0
