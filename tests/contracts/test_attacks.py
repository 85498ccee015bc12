"""The attacks of DESIGN.md, each against a real market on anvil.

Every test asserts the specific defence (the custom error by name, the exact amounts), so it
would fail if that defence were removed: the re-entrancy guard, the payout-per-caller rule,
gas-bounded reward steps, leaves hashed by the contract, the revealed-index bitmap, the
one-time draw, the cancel path, phase checks, depositor checks and balance-free accounting.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth_abi.abi import decode
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from market.chain import FactoryClient, MarketClient, MarketParams
from market.contracts import load_artifact
from market.encoding import encode_reveal_item, encode_reveal_items
from market.merkle import StandardMerkleTree, process_proof, test_sample_tree
from market.model import Perceptron
from market.steps import (
    next_step,
    predicted_portion,
    reveal_batch,
    revealed_test_set,
    unrevealed_indices,
)
from market.types import Phase, Sample, TestSample
from tests.contracts.chaintools import Reverted, expect_revert, increase_time, mine, send
from tests.contracts.scenario import (
    MarketSpec,
    contribute_all,
    drive,
    launch,
    mirror_of,
    random_spec,
)

# ------------------------------------------------------------------------------- helpers


def spec_of(seed: int, contributions: int = 8, n: int = 24, flippers: float = 0.3) -> MarketSpec:
    """A small random market (dim 16) whose rewards are settled in a handful of steps."""
    return random_spec(
        random.Random(seed), contributions=contributions, n=n, dim=16, flippers=flippers
    )


def honest_sample(spec: MarketSpec, seed: int) -> Sample:
    """A contribution labelled like the test set (a copy of one test sample): it gains."""
    t = spec.test[random.Random(seed).randrange(len(spec.test))]
    return Sample(t.features, t.label)


def revert_of(w3: Web3, account: LocalAccount, call: Any, value: int = 0) -> bytes:
    """Send ``call``, which must revert, and return the revert data."""
    try:
        send(w3, account, call, value=value)
    except Reverted as exc:
        return exc.data
    raise AssertionError("expected a revert")


def error_args(
    name: str, w3: Web3, account: LocalAccount, call: Any, value: int = 0
) -> tuple[Any, ...]:
    """Assert ``call`` reverts with the market's custom error ``name``; return its arguments."""
    data = revert_of(w3, account, call, value)
    errors = {e["name"]: e for e in load_artifact("PredictionMarket").abi if e["type"] == "error"}
    types = [i["type"] for i in errors[name]["inputs"]]
    selector = Web3.keccak(text=f"{name}({','.join(types)})")[:4]
    assert data[:4] == selector, f"expected {name}, got 0x{data[:4].hex()}"
    return tuple(decode(types, data[4:]))


def selector(signature: str) -> bytes:
    return bytes(Web3.keccak(text=signature)[:4])


def deploy(w3: Web3, account: LocalAccount, name: str, *args: Any, value: int = 0) -> Contract:
    art = load_artifact(name)
    ctor = w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(*args)
    receipt = send(w3, account, ctor, value=value)  # type: ignore[arg-type]
    address = Web3.to_checksum_address(receipt["contractAddress"])
    return w3.eth.contract(address=address, abi=art.abi)


def calldata(client: MarketClient, name: str, *args: Any) -> bytes:
    return bytes.fromhex(client.contract.encode_abi(name, args=list(args))[2:])


def at_participation(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], spec: MarketSpec
) -> MarketClient:
    client = launch(w3, factory, accounts[0], spec)
    drive(w3, client, accounts[0], spec, until=Phase.PARTICIPATION)
    return client


def at_reveal(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], spec: MarketSpec
) -> MarketClient:
    client = at_participation(w3, factory, accounts, spec)
    contribute_all(w3, client, accounts, spec)
    drive(w3, client, accounts[0], spec, until=Phase.REVEAL)
    return client


def pending_indices(client: MarketClient) -> list[int]:
    revealed = {t.index for t in revealed_test_set(client.revealed_batches())}
    return unrevealed_indices(client.params(), client.info().portion, revealed)


def status_tuple(client: MarketClient) -> tuple[int, ...]:
    """Every field of rewardStatus: a unit of reward work always changes at least one."""
    s = client.reward_status()
    return (s.stage, s.trained, s.settled, s.active, s.total, s.remaining, s.heap_size, s.pending)


def ids_by_account(spec: MarketSpec) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for cid, (account, _, _) in enumerate(spec.contributions, start=1):
        out.setdefault(account, []).append(cid)
    return out


def withdraw_all(
    w3: Web3, client: MarketClient, accounts: list[LocalAccount], spec: MarketSpec
) -> dict[int, int]:
    """Each account withdraws its contributions; returns what each received (fees added back)."""
    received: dict[int, int] = {}
    for account, ids in ids_by_account(spec).items():
        before = w3.eth.get_balance(accounts[account].address)
        receipt = send(w3, accounts[account], client.withdraw(ids))
        fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
        received[account] = w3.eth.get_balance(accounts[account].address) - before + fee
    return received


REENTRANT_CALL = selector("ReentrancyGuardReentrantCall()")
INVALID_INITIALIZATION = selector("InvalidInitialization()")

# ------------------------------------------------------------------------------- re-entrancy


def test_reentrant_withdraw_is_refused_by_the_guard(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(11)
    client = at_participation(w3, factory, accounts, spec)
    attacker = deploy(w3, accounts[9], "ReentrantReceiver")
    sample = honest_sample(spec, 1)
    contribute = calldata(client, "contribute", list(sample.features), sample.label)
    send(
        w3,
        accounts[9],
        attacker.functions.execute(client.address, contribute),
        value=spec.min_stake,
    )
    contribute_all(w3, client, accounts, spec)
    drive(w3, client, accounts[0], spec)
    assert client.phase() == Phase.COLLECT
    payout = client.payout_of(1)
    assert payout > 0
    # when the attacker's receive() calls withdraw([1]) again while being paid
    withdraw = calldata(client, "withdraw", [1])
    send(w3, accounts[9], attacker.functions.arm(client.address, withdraw))
    market_before = client.balance()
    send(w3, accounts[9], attacker.functions.execute(client.address, withdraw))
    # then the nested call hit the guard and the attacker got its payout exactly once
    assert attacker.functions.attempts().call() == 1
    assert attacker.functions.reentered().call() is False
    assert bytes(attacker.functions.reentryError().call())[:4] == REENTRANT_CALL
    assert w3.eth.get_balance(attacker.address) == payout
    assert market_before - client.balance() == payout
    assert client.withdrawn(1)


def test_reentrant_provider_withdraw_is_refused_by_the_guard(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(12, contributions=0)
    attacker = deploy(w3, accounts[9], "ReentrantReceiver")
    # the attacker contract is the provider: it creates the market through the factory
    now = int(w3.eth.get_block("latest")["timestamp"])
    tree = test_sample_tree(spec.test)
    params = MarketParams(
        test_root=tree.root,
        test_size=len(spec.test),
        portions=spec.portions,
        dim=spec.dim,
        max_features=spec.max_features,
        intercept=0,
        learning_rate=1,
        min_stake=spec.min_stake,
        allow_greater_deposits=False,
        min_contributions=0,
        earliest_end=now + 1800,
        latest_end=now + 3600,
        reveal_window=600,
    )
    weights = Perceptron(weights=[0] * spec.dim, intercept=0, learning_rate=1).weights_bytes()
    create = factory.contract.encode_abi("createMarket", args=[params.as_tuple(), weights])
    receipt = send(
        w3,
        accounts[9],
        attacker.functions.execute(factory.address, bytes.fromhex(create[2:])),
        value=spec.bounty,
    )
    client = MarketClient(w3, factory.market_from_receipt(receipt))
    assert client.info().provider == attacker.address
    # the provider never reveals the public portion: after the window the bounty goes back
    increase_time(w3, 601)
    assert client.phase() == Phase.CANCELLED
    again = calldata(client, "withdrawProvider")
    send(w3, accounts[9], attacker.functions.arm(client.address, again))
    send(w3, accounts[9], attacker.functions.execute(client.address, again))
    assert attacker.functions.attempts().call() == 1
    assert attacker.functions.reentered().call() is False
    assert bytes(attacker.functions.reentryError().call())[:4] == REENTRANT_CALL
    assert w3.eth.get_balance(attacker.address) == spec.bounty
    assert client.balance() == 0
    # and a later call finds nothing left
    expect_revert(
        "MarketNothingToWithdraw",
        send,
        w3,
        accounts[9],
        attacker.functions.execute(client.address, again),
    )


# ------------------------------------------------------------------------------- refusing ether


def test_a_contributor_that_refuses_ether_only_hurts_itself(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(13)
    spec.allow_greater = False
    client = at_participation(w3, factory, accounts, spec)
    refuser = deploy(w3, accounts[9], "RevertingReceiver")
    sample = honest_sample(spec, 2)
    contribute = calldata(client, "contribute", list(sample.features), sample.label)
    # an overpayment must be refunded to it, which it refuses: only its own call fails
    expect_revert(
        "MarketTransferFailed",
        send,
        w3,
        accounts[9],
        refuser.functions.execute(client.address, contribute),
        value=spec.min_stake + 1,
    )
    send(
        w3, accounts[9], refuser.functions.execute(client.address, contribute), value=spec.min_stake
    )
    contribute_all(w3, client, accounts, spec)
    # the market still settles, to the wei of the mirror
    drive(w3, client, accounts[0], spec)
    assert client.phase() == Phase.COLLECT
    mirror = mirror_of(client, spec)
    payouts = [client.payout_of(i) for i in range(1, len(spec.contributions) + 2)]
    assert payouts == list(mirror.payouts)
    assert payouts[0] > 0
    # its own withdrawal fails and leaves its payout in place
    expect_revert(
        "MarketTransferFailed",
        send,
        w3,
        accounts[9],
        refuser.functions.execute(client.address, calldata(client, "withdraw", [1])),
    )
    assert not client.withdrawn(1)
    # everyone else withdraws exactly their payouts (ids shift by one: the refuser is id 1)
    shifted = MarketSpec(
        **{**spec.__dict__, "contributions": [(0, sample, 0), *spec.contributions]}
    )
    by_account = ids_by_account(shifted)
    by_account.pop(0)
    for account, ids in by_account.items():
        before = w3.eth.get_balance(accounts[account].address)
        receipt = send(w3, accounts[account], client.withdraw(ids))
        fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
        got = w3.eth.get_balance(accounts[account].address) - before + fee
        assert got == sum(payouts[i - 1] for i in ids)
    assert client.provider_withdrawn()
    assert client.balance() == payouts[0]


# ------------------------------------------------------------------------------- flooding


def test_flooding_with_minimum_deposits_cannot_stall_the_reward_steps(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    # 300 minimum-stake contributions, 60% from label-flippers, stepped at a 1.5M-gas budget
    spec = spec_of(14, contributions=300, n=30, flippers=0.6)
    spec.bounty = 10**18
    spec.contributions = [(a, s, spec.min_stake) for a, s, _ in spec.contributions]
    budget = 1_500_000
    client = at_reveal(w3, factory, accounts, spec)
    drive(w3, client, accounts[0], spec, until=Phase.REWARD)
    tree = test_sample_tree(spec.test)
    steps: list[str] = []
    while client.phase() == Phase.REWARD:
        before = status_tuple(client)
        step = next_step(
            client, gas_cap=budget, secrets=(tree, spec.test), sender=accounts[0].address
        )
        assert step is not None and step.name in ("prepare", "train", "rewards")
        receipt = send(w3, accounts[0], step.call, gas=step.gas)
        # every call fits the budget and moves the reward state forward: preparing moves the
        # stage, training moves `trained`; a round step pops the heap, removes, or settles
        assert receipt["gasUsed"] <= budget
        after = status_tuple(client)
        if step.name == "train":
            assert after[1] > before[1]
        else:
            assert after != before, (len(steps), before)
        steps.append(step.name)
    assert client.phase() == Phase.COLLECT
    # the budget really did split both passes
    assert steps.count("train") > 3 and steps.count("rewards") > 3
    mirror = mirror_of(client, spec)
    assert [client.payout_of(i) for i in range(1, 301)] == list(mirror.payouts)
    assert client.provider_remainder() == mirror.provider_remainder


# ------------------------------------------------------------------------------- reveals


def internal_node_and_path(tree: StandardMerkleTree, value: int) -> tuple[bytes, list[bytes]]:
    """The parent node of value ``value``'s leaf, and that node's proof up to the root."""
    nodes = [bytes.fromhex(h[2:]) for h in tree.dump()["tree"]]
    parent = (tree.tree_index(value) - 1) // 2
    path = []
    index = parent
    while index > 0:
        path.append(nodes[index + 1 if index % 2 else index - 1])
        index = (index - 1) // 2
    return nodes[parent], path


def test_an_internal_node_cannot_pass_as_a_leaf(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(15)
    client = at_reveal(w3, factory, accounts, spec)
    tree = test_sample_tree(spec.test)
    value = pending_indices(client)[0]
    node, path = internal_node_and_path(tree, value)
    # the node with its path does reach the root: a contract taking leaf hashes would accept it
    assert process_proof(node, path) == tree.root
    flags = [False] * len(path)
    # given as the item bytes (its two children), it is not a sample
    expect_revert(
        "MarketInvalidSample", send, w3, accounts[0], client.reveal_batch(node, path, flags)
    )
    # a real sample under the node's path does not reach the root
    item = encode_reveal_item(spec.test[value])
    expect_revert(
        "MarketInvalidProof", send, w3, accounts[0], client.reveal_batch(item, path, flags)
    )
    assert client.reveal_status()[0] == 0
    # the honest proof still works
    b = reveal_batch(tree, spec.test, [value])
    send(w3, accounts[0], client.reveal_batch(b.items, b.proof, b.flags))
    assert client.reveal_status()[0] == 1


def test_an_empty_reveal_is_refused(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(16)
    client = launch(w3, factory, accounts[0], spec)
    mine(w3, 2)  # estimates run against the latest block: it must be past drawBlock
    send(w3, accounts[0], client.draw())
    expect_revert("MarketEmptyReveal", send, w3, accounts[0], client.reveal_public(b"", [], []))
    drive(w3, client, accounts[0], spec, until=Phase.PARTICIPATION)
    contribute_all(w3, client, accounts, spec)
    drive(w3, client, accounts[0], spec, until=Phase.REVEAL)
    expect_revert("MarketEmptyReveal", send, w3, accounts[0], client.reveal_batch(b"", [], []))
    # an empty batch with the root as its "proof" is refused too
    root = test_sample_tree(spec.test).root
    expect_revert("MarketEmptyReveal", send, w3, accounts[0], client.reveal_batch(b"", [root], []))
    assert client.reveal_status()[0] == 0


def test_a_leaf_cannot_be_revealed_twice_or_from_the_public_portion(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(17)
    client = at_reveal(w3, factory, accounts, spec)
    tree = test_sample_tree(spec.test)
    first, second = pending_indices(client)[:2]
    b = reveal_batch(tree, spec.test, [first])
    send(w3, accounts[0], client.reveal_batch(b.items, b.proof, b.flags))
    # the same leaf again, alone or with a new one
    assert error_args(
        "MarketInvalidRevealIndex",
        w3,
        accounts[0],
        client.reveal_batch(b.items, b.proof, b.flags),
    ) == (first,)
    both = reveal_batch(tree, spec.test, [first, second])
    assert error_args(
        "MarketInvalidRevealIndex",
        w3,
        accounts[0],
        client.reveal_batch(both.items, both.proof, both.flags),
    ) == (first,)
    # one leaf twice in a single batch
    twice = b"".join([encode_reveal_item(spec.test[second])] * 2)
    one = reveal_batch(tree, spec.test, [second])
    assert error_args(
        "MarketInvalidRevealIndex",
        w3,
        accounts[0],
        client.reveal_batch(twice, one.proof, [*one.flags, True]),
    ) == (second,)
    # a leaf of the public portion, with its valid proof
    start, _ = client.params().portion_range(client.info().portion)
    public = reveal_batch(tree, spec.test, [start])
    assert error_args(
        "MarketInvalidRevealIndex",
        w3,
        accounts[0],
        client.reveal_batch(public.items, public.proof, public.flags),
    ) == (start,)
    assert client.reveal_status()[0] == 1


def test_a_forged_index_is_refused(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(18)
    client = at_reveal(w3, factory, accounts, spec)
    tree = test_sample_tree(spec.test)
    value, other = pending_indices(client)[:2]
    real = spec.test[value]
    proof = reveal_batch(tree, spec.test, [value])
    # the sample of `value` claimed under index `other`, with `value`'s proof
    forged = encode_reveal_item(TestSample(other, real.salt, real.features, real.label))
    expect_revert(
        "MarketInvalidProof",
        send,
        w3,
        accounts[0],
        client.reveal_batch(forged, proof.proof, proof.flags),
    )
    # an index past the test set
    n = len(spec.test)
    beyond = encode_reveal_item(TestSample(n, real.salt, real.features, real.label))
    assert error_args(
        "MarketInvalidRevealIndex",
        w3,
        accounts[0],
        client.reveal_batch(beyond, proof.proof, proof.flags),
    ) == (n,)
    # a sample with label 2 is refused before any proof is checked
    bad = bytearray(encode_reveal_item(real))
    bad[36] = 2
    assert error_args(
        "MarketInvalidSample",
        w3,
        accounts[0],
        client.reveal_batch(bytes(bad), proof.proof, proof.flags),
    ) == (0, "label")
    assert client.reveal_status()[0] == 0


def test_a_public_reveal_before_the_draw_draws_the_same_portion(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(23)
    client = launch(w3, factory, accounts[0], spec)
    params = client.params()
    tree = test_sample_tree(spec.test)
    # before the draw block is mined, a reveal cannot draw
    first = reveal_batch(tree, spec.test, range(*params.portion_range(0)))
    expect_revert(
        "MarketDrawNotReady",
        send,
        w3,
        accounts[0],
        client.reveal_public(first.items, first.proof, first.flags),
    )
    mine(w3, 2)
    # given the portion draw() picks
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    send(w3, accounts[5], client.draw())
    drawn = client.info().portion
    w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]
    assert not client.info().drawn
    assert predicted_portion(client, client.info().draw_block) == drawn
    # when the provider reveals another portion without a draw, it is refused, draw included
    other = (drawn + 1) % params.portions
    wrong = reveal_batch(tree, spec.test, range(*params.portion_range(other)))
    assert error_args(
        "MarketInvalidRevealIndex",
        w3,
        accounts[0],
        client.reveal_public(wrong.items, wrong.proof, wrong.flags),
    ) == (wrong.indices[0],)
    assert not client.info().drawn
    # and revealing the portion the draw would pick draws it and opens the market
    right = reveal_batch(tree, spec.test, range(*params.portion_range(drawn)))
    receipt = send(w3, accounts[0], client.reveal_public(right.items, right.proof, right.flags))
    [event] = client.contract.events.PortionDrawn().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["portion"] == drawn
    assert client.info().drawn and client.phase() == Phase.PARTICIPATION


def test_the_provider_cannot_reroll_or_pick_the_public_portion(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(19)
    client = launch(w3, factory, accounts[0], spec)
    # the draw reads the hash of the block after creation: not before it exists
    expect_revert("MarketDrawNotReady", send, w3, accounts[0], client.draw())
    mine(w3, 2)  # estimates run against the latest block: it must be past drawBlock
    send(w3, accounts[0], client.draw())
    portion = client.info().portion
    # drawing again is refused, whoever asks
    for who in (accounts[0], accounts[5]):
        assert error_args("MarketAlreadyDrawn", w3, who, client.draw()) == (portion,)
    assert client.info().portion == portion
    params = client.params()
    tree = test_sample_tree(spec.test)
    # revealing another portion (with a valid multiproof) is refused
    other = (portion + 1) % params.portions
    o_start, o_end = params.portion_range(other)
    wrong = reveal_batch(tree, spec.test, range(o_start, o_end))
    assert error_args(
        "MarketInvalidRevealIndex",
        w3,
        accounts[0],
        client.reveal_public(wrong.items, wrong.proof, wrong.flags),
    ) == (wrong.indices[0],)
    # so is part of the drawn portion
    start, end = params.portion_range(portion)
    part = reveal_batch(tree, spec.test, range(start, end - 1))
    assert error_args(
        "MarketIncompletePortion",
        w3,
        accounts[0],
        client.reveal_public(part.items, part.proof, part.flags),
    ) == (end - 1 - start, end - start)
    whole = reveal_batch(tree, spec.test, range(start, end))
    send(w3, accounts[0], client.reveal_public(whole.items, whole.proof, whole.flags))
    assert client.phase() == Phase.PARTICIPATION
    assert client.public_portion() == (portion, whole.items)


# ------------------------------------------------------------------------------- cancel path


def test_a_provider_who_never_reveals_the_test_set_loses_the_bounty(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(20, contributions=9)
    spec.allow_greater = True
    spec.contributions = [
        (a, s, spec.min_stake * (1 + i % 4) + i) for i, (a, s, _) in enumerate(spec.contributions)
    ]
    client = at_reveal(w3, factory, accounts, spec)
    tree = test_sample_tree(spec.test)
    # one batch is revealed, then the provider stops
    b = reveal_batch(tree, spec.test, pending_indices(client)[:2])
    send(w3, accounts[0], client.reveal_batch(b.items, b.proof, b.flags))
    expect_revert("MarketNotCancellable", send, w3, accounts[5], client.cancel())
    params = client.params()
    ended = client.info().ended_at
    now = int(w3.eth.get_block("latest")["timestamp"])
    increase_time(w3, ended + params.reveal_window - now + 1)
    assert client.phase() == Phase.CANCELLED
    # nothing more can be revealed or scored
    rest = reveal_batch(tree, spec.test, pending_indices(client)[:1])
    expect_revert(
        "MarketWrongPhase",
        send,
        w3,
        accounts[0],
        client.reveal_batch(rest.items, rest.proof, rest.flags),
    )
    # refunds are deposit + pro-rata share and add up to the bounty exactly
    count, deposits = client.contribution_stats()
    refunds = [client.refund_of(i) for i in range(1, count + 1)]
    assert sum(refunds) == deposits + spec.bounty
    for i, (_, _, value) in enumerate(spec.contributions, start=1):
        share = spec.bounty * sum(v for _, _, v in spec.contributions[:i]) // deposits - (
            spec.bounty * sum(v for _, _, v in spec.contributions[: i - 1]) // deposits
        )
        assert refunds[i - 1] == value + share
    # the provider gets nothing
    expect_revert("MarketNothingToWithdraw", send, w3, accounts[0], client.withdraw_provider())
    assert next_step(client, gas_cap=15_000_000, sender=accounts[0].address) is None
    # anyone may record the cancellation, once
    send(w3, accounts[5], client.cancel())
    expect_revert("MarketNotCancellable", send, w3, accounts[5], client.cancel())
    received = withdraw_all(w3, client, accounts, spec)
    for account, ids in ids_by_account(spec).items():
        assert received[account] == sum(refunds[i - 1] for i in ids)
    assert client.balance() == 0


# ------------------------------------------------------------------------------- phases


def test_calls_out_of_phase_are_refused(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(21)
    client = launch(w3, factory, accounts[0], spec)
    sample = spec.contributions[0][1]
    stake = spec.min_stake

    def wrong_phase(fn: Any, account: LocalAccount, value: int = 0) -> tuple[Any, ...]:
        return error_args("MarketWrongPhase", w3, account, fn, value=value)

    # committed: no contributions, no end
    assert wrong_phase(client.contribute(sample.features, sample.label), accounts[1], stake) == (
        Phase.COMMITTED,
        Phase.PARTICIPATION,
    )
    assert wrong_phase(client.end_market(), accounts[1]) == (Phase.COMMITTED, Phase.PARTICIPATION)
    drive(w3, client, accounts[0], spec, until=Phase.PARTICIPATION)
    # participation: no early end, no reveal, no rewards, no withdrawals
    expect_revert("MarketCannotEnd", send, w3, accounts[1], client.end_market())
    assert wrong_phase(client.reveal_batch(b"\x00", [], []), accounts[0]) == (
        Phase.PARTICIPATION,
        Phase.REVEAL,
    )
    assert wrong_phase(client.process_rewards(), accounts[1]) == (Phase.PARTICIPATION, Phase.REWARD)
    contribute_all(w3, client, accounts, spec)
    assert wrong_phase(client.withdraw([1]), accounts[spec.contributions[0][0]]) == (
        Phase.PARTICIPATION,
        Phase.COLLECT,
    )
    assert wrong_phase(client.withdraw_provider(), accounts[0]) == (
        Phase.PARTICIPATION,
        Phase.COLLECT,
    )
    drive(w3, client, accounts[0], spec, until=Phase.REVEAL)
    # after the end: no contributions; no rewards before the reveal is complete
    assert wrong_phase(client.contribute(sample.features, sample.label), accounts[1], stake) == (
        Phase.REVEAL,
        Phase.PARTICIPATION,
    )
    assert wrong_phase(client.process_rewards(), accounts[1]) == (Phase.REVEAL, Phase.REWARD)
    tree = test_sample_tree(spec.test)
    b = reveal_batch(tree, spec.test, pending_indices(client)[:1])
    send(w3, accounts[0], client.reveal_batch(b.items, b.proof, b.flags))
    assert wrong_phase(client.process_rewards(), accounts[1]) == (Phase.REVEAL, Phase.REWARD)
    assert wrong_phase(client.withdraw([1]), accounts[spec.contributions[0][0]]) == (
        Phase.REVEAL,
        Phase.COLLECT,
    )
    drive(w3, client, accounts[0], spec, until=Phase.REWARD)
    assert wrong_phase(client.withdraw([1]), accounts[spec.contributions[0][0]]) == (
        Phase.REWARD,
        Phase.COLLECT,
    )
    expect_revert("MarketNotCancellable", send, w3, accounts[1], client.cancel())
    drive(w3, client, accounts[0], spec)
    assert client.phase() == Phase.COLLECT
    assert wrong_phase(client.process_rewards(), accounts[1]) == (Phase.COLLECT, Phase.REWARD)


def test_the_market_ends_at_latest_end_without_a_call(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(22, contributions=2)
    client = at_participation(w3, factory, accounts, spec)
    contribute_all(w3, client, accounts, spec)
    params = client.params()
    now = int(w3.eth.get_block("latest")["timestamp"])
    increase_time(w3, params.latest_end - now)
    sample = spec.contributions[0][1]
    assert client.phase() == Phase.REVEAL
    expect_revert(
        "MarketWrongPhase",
        send,
        w3,
        accounts[1],
        client.contribute(sample.features, sample.label),
        value=spec.min_stake,
    )
    assert client.contribution_stats()[0] == 2


def test_clones_and_the_implementation_cannot_be_initialised_again(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(23, contributions=0)
    client = launch(w3, factory, accounts[0], spec)
    params = client.params()
    weights = Perceptron(weights=[0] * spec.dim, intercept=0, learning_rate=1).weights_bytes()
    implementation = w3.eth.contract(
        address=Web3.to_checksum_address(factory.implementation()),
        abi=load_artifact("PredictionMarket").abi,
    )
    for target in (client.contract, implementation):
        call = target.functions.initialize(accounts[5].address, params.as_tuple(), weights)
        data = revert_of(w3, accounts[5], call, value=1)
        assert data[:4] == INVALID_INITIALIZATION
    assert client.info().provider == accounts[0].address


# ------------------------------------------------------------------------------- withdrawals


def test_nobody_withdraws_for_someone_else(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(24, contributions=6)
    spec.contributions = [(1 + i % 2, s, v) for i, (_, s, v) in enumerate(spec.contributions)]
    client = at_participation(w3, factory, accounts, spec)
    contribute_all(w3, client, accounts, spec)
    drive(w3, client, accounts[0], spec)
    assert client.phase() == Phase.COLLECT
    alice, bob = accounts[1], accounts[2]
    # id 1 is alice's: bob can name it but not take it, alone or among his own ids
    for ids in ([1], [2, 1]):
        assert error_args("MarketNotWithdrawable", w3, bob, client.withdraw(ids)) == (1,)
    for ids in ([0], [len(spec.contributions) + 1]):
        expect_revert("MarketNotWithdrawable", send, w3, alice, client.withdraw(ids))
    expect_revert("MarketNothingToWithdraw", send, w3, alice, client.withdraw([]))
    assert error_args("MarketUnauthorized", w3, bob, client.withdraw_provider()) == (
        bob.address.lower(),
    )
    # alice's payout is intact, and paid once
    payout = client.payout_of(1)
    before = w3.eth.get_balance(alice.address)
    receipt = send(w3, alice, client.withdraw([1]))
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(alice.address) - before + fee == payout
    expect_revert("MarketNotWithdrawable", send, w3, alice, client.withdraw([1]))


# ------------------------------------------------------------------------------- forced ether


def test_force_fed_ether_does_not_change_the_accounting(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(25)
    extra = 3 * 10**18 + 7
    client = at_participation(w3, factory, accounts, spec)
    # ether arrives without a call the market could refuse
    deploy(w3, accounts[9], "ForceFeeder", client.address, value=extra)
    assert client.balance() == spec.bounty + extra
    contribute_all(w3, client, accounts, spec)
    drive(w3, client, accounts[0], spec, until=Phase.REWARD)
    deploy(w3, accounts[9], "ForceFeeder", client.address, value=extra)
    drive(w3, client, accounts[0], spec)
    assert client.phase() == Phase.COLLECT
    # payouts and the remainder are the mirror's, not a share of the balance
    mirror = mirror_of(client, spec)
    count, deposits = client.contribution_stats()
    payouts = [client.payout_of(i) for i in range(1, count + 1)]
    assert payouts == list(mirror.payouts)
    assert client.provider_remainder() == mirror.provider_remainder
    assert sum(payouts) + client.provider_remainder() == spec.bounty + deposits
    received = withdraw_all(w3, client, accounts, spec)
    for account, ids in ids_by_account(spec).items():
        assert received[account] == sum(payouts[i - 1] for i in ids)
    assert client.provider_withdrawn()
    # the forced ether stays, exactly
    assert client.balance() == 2 * extra


# ------------------------------------------------------------------------------- bad samples


@pytest.mark.parametrize(
    ("features", "label", "expected"),
    [
        ((3, 2), 1, (1, "order")),
        ((2, 2), 0, (1, "order")),
        ((1, 16), 1, (1, "range")),
        ((), 1, (0, "count")),
        ((1, 2, 3, 4, 5, 6, 7, 8, 9), 1, (0, "count")),
        ((1, 2), 2, (0, "label")),
    ],
    ids=["out-of-order", "repeated", "out-of-range", "empty", "too-many", "label-2"],
)
def test_bad_samples_are_refused_by_name(
    w3: Web3,
    factory: FactoryClient,
    accounts: list[LocalAccount],
    snapshot: None,
    features: tuple[int, ...],
    label: int,
    expected: tuple[int, str],
) -> None:
    spec = spec_of(26, contributions=0)
    spec.max_features = 8
    client = at_participation(w3, factory, accounts, spec)
    call = client.contribute(features, label)
    assert (
        error_args("MarketInvalidSample", w3, accounts[1], call, value=spec.min_stake) == expected
    )
    assert client.contribution_stats() == (0, 0)


def test_a_deposit_below_the_stake_is_refused(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(27, contributions=0)
    client = at_participation(w3, factory, accounts, spec)
    call = client.contribute((1, 2), 1)
    for value in (0, spec.min_stake - 1):
        assert error_args("MarketDepositTooLow", w3, accounts[1], call, value=value) == (
            value,
            spec.min_stake,
        )
    send(w3, accounts[1], call, value=spec.min_stake)
    assert client.contribution_stats() == (1, spec.min_stake)


def test_reveal_items_are_checked_like_contributions(
    w3: Web3, factory: FactoryClient, accounts: list[LocalAccount], snapshot: None
) -> None:
    spec = spec_of(28)
    client = at_reveal(w3, factory, accounts, spec)
    value = pending_indices(client)[0]
    real = spec.test[value]
    cases = {
        "order": TestSample(value, real.salt, (5, 3), real.label),
        "range": TestSample(value, real.salt, (1, spec.dim), real.label),
    }
    for reason, item in cases.items():
        args = error_args(
            "MarketInvalidSample",
            w3,
            accounts[0],
            client.reveal_batch(encode_reveal_items([item]), [], []),
        )
        assert args == (0, reason)
    truncated = encode_reveal_item(real)[:-1]
    assert (
        error_args(
            "MarketInvalidSample",
            w3,
            accounts[0],
            client.reveal_batch(truncated, [], []),
        )[1]
        == "length"
    )
