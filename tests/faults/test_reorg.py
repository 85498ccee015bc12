"""Reorganizations that remove mined step transactions.

``anvil_reorg(depth, [])`` replaces the last ``depth`` blocks with empty ones: the step
transactions in them vanish (from the chain and from the pool), as on a chain whose new
branch did not include them. The service must notice that the steps' effects are gone, do
them again, and not be held up by its Redis nonce record, which still counts the vanished
transactions: the record may only be trusted while the node can catch up with it.

Two moments, with the number of confirmations that makes each possible:

- after the sender returned (one confirmation, the default): the orchestrator reads the
  chain for its next step and plans the vanished steps again;
- before the sender returned (two confirmations): the sender sees its receipt leave the
  chain while it counts confirmations and sends the same transaction again.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3
from web3.exceptions import TransactionNotFound

from market.chain import MarketClient
from market.orchestrator import Orchestrator
from market.steps import Step
from market.types import Phase
from tests.e2e.harness import (
    OperatorTx,
    assert_clean_nonces,
    assert_no_step_twice,
    chain_payouts,
    dev_accounts,
    mirror_payouts,
)
from tests.faults.inprocess import (
    drive,
    end_participation,
    make_orchestrator,
    open_market,
    with_settings,
)
from tests.faults.ownchain import (
    chain_nonce,
    own_node,
    redis_nonce,
    rpc,
    use_sender,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

# A cap that splits training into a few steps (24 contributions), with room for the
# preparation's check of the whole 60-sample test set.
GAS_CAP = 600_000
CONTRIBUTIONS = 24
# How long the Redis nonce record is trusted ahead of the node: short here, so that the
# account waits seconds, not the default half minute, after its transactions vanished.
STALE_S = 3.0
# Long against the test: a replacement with a fee bump is not how these faults are repaired.
REPLACE_AFTER_S = 60.0
RECEIPT_TIMEOUT_S = 45.0


def start(w3: Web3, redis_url: str, tmp_path: Path, seed: int) -> tuple[Orchestrator, MarketClient]:
    """A market in REVEAL and the orchestrator that launched it."""
    accounts = dev_accounts(6)
    orchestrator = make_orchestrator(w3, accounts[0], redis_url, tmp_path, tx_gas_cap=GAS_CAP)
    market = open_market(
        w3, orchestrator, accounts[1:6], random.Random(seed), contributions=CONTRIBUTIONS
    )
    end_participation(w3, market)
    return orchestrator, market


def operator_txs_in(w3: Web3, operator: str, first: int, last: int) -> list[str]:
    """Hashes of the operator's transactions in blocks ``first..last``."""
    hashes = []
    for number in range(first, last + 1):
        block: Any = w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if str(tx["from"]).lower() == operator.lower():
                hashes.append(tx["hash"].to_0x_hex())
    return hashes


def assert_finished(w3: Web3, orchestrator: Orchestrator, market: MarketClient) -> list[OperatorTx]:
    assert market.phase() == Phase.COLLECT
    assert chain_payouts(market) == mirror_payouts(market)
    assert_no_step_twice(market)
    txs = assert_clean_nonces(w3, orchestrator.account.address)
    assert redis_nonce(orchestrator) == chain_nonce(w3, orchestrator.account.address)
    assert orchestrator.sender.stats.snapshot()["reverted"] == 0
    return txs


@pytest.mark.parametrize("depth", [1, 2])
def test_steps_removed_by_a_reorg_after_they_returned_are_planned_and_sent_again(
    redis_url: str, tmp_path: Path, depth: int
) -> None:
    with own_node() as w3:
        orchestrator, market = start(w3, redis_url, tmp_path, seed=53)
        sender = use_sender(
            orchestrator,
            stale_after_s=STALE_S,
            replace_after_s=REPLACE_AFTER_S,
            receipt_timeout_s=RECEIPT_TIMEOUT_S,
        )
        operator = orchestrator.account.address
        sent: list[str] = []
        fault: dict[str, Any] = {}
        send = orchestrator._send

        def send_then_reorg(client: MarketClient, step: Step, lease: Any) -> None:
            send(client, step, lease)
            sent.append(step.name)
            if fault:
                fault.setdefault("resent_at", time.monotonic())
                return
            if step.name != "train":
                return
            # when the first training step has returned (mined, one confirmation), the last
            # `depth` blocks are replaced by empty ones: with automine each held one step
            head = int(w3.eth.block_number)
            fault["hashes"] = operator_txs_in(w3, operator, head - depth + 1, head)
            fault["trained"] = market.reward_status().trained
            rpc(w3, "anvil_reorg", depth, [])
            fault["at"] = time.monotonic()
            fault["sent_before"] = len(sent)
            fault["chain"] = chain_nonce(w3, operator, "pending")
            fault["redis"] = redis_nonce(orchestrator)

        orchestrator._send = send_then_reorg  # type: ignore[method-assign, assignment]
        drive(w3, orchestrator, market)

        # the reorg removed `depth` step transactions, and Redis counted them
        assert len(fault["hashes"]) == depth
        for tx_hash in fault["hashes"]:
            with pytest.raises(TransactionNotFound):
                w3.eth.get_transaction(tx_hash)
        assert fault["trained"] > 0
        assert fault["redis"] == fault["chain"] + depth
        # then the orchestrator planned the vanished steps again from the chain: the steps
        # sent next were the same ones (preparation, if it vanished, then the training step)
        again = sent[fault["sent_before"] :]
        assert again[:depth] == (["prepare", "train"] if depth == 2 else ["train"]), sent
        # after a wait bounded by the record's staleness (generous: a loaded machine)
        assert fault["resent_at"] - fault["at"] < STALE_S + 20
        # with the vanished nonces, once the record was no longer trusted: no gap, no
        # transaction queued behind one, nothing replaced
        txs = assert_finished(w3, orchestrator, market)
        reused = [t for t in txs if fault["chain"] <= t.nonce < fault["chain"] + depth]
        assert len(reused) == depth
        assert sender.stats.snapshot()["replaced"] == 0
        assert sender.stats.snapshot()["confirmed"] == len(sent)


@pytest.mark.parametrize("depth", [1, 2])
def test_a_step_removed_by_a_reorg_before_its_confirmations_is_sent_again_by_its_sender(
    redis_url: str, tmp_path: Path, depth: int
) -> None:
    with own_node() as w3:
        first, market = start(w3, redis_url, tmp_path, seed=59)
        # the market was opened with one confirmation (blocks come only from transactions
        # then); from here on blocks come from a miner thread and steps wait for two
        orchestrator = with_settings(first, confirmations=2)
        sender = use_sender(
            orchestrator,
            stale_after_s=STALE_S,
            replace_after_s=REPLACE_AFTER_S,
            receipt_timeout_s=RECEIPT_TIMEOUT_S,
        )
        operator = orchestrator.account.address
        armed = threading.Event()
        counting = threading.Event()
        stop = threading.Event()
        fault: dict[str, Any] = {}
        send = orchestrator._send
        await_confirmations = sender._await_confirmations

        def arm_on_training(client: MarketClient, step: Step, lease: Any) -> None:
            # steps are sent one at a time, each after its confirmations: the next operator
            # transaction mined after this is the training step's
            if step.name == "train" and not fault:
                counting.clear()
                armed.set()
            send(client, step, lease)

        def counting_confirmations(*args: Any, **kwargs: Any) -> Any:
            counting.set()  # the sender has its receipt and waits for the next block
            return await_confirmations(*args, **kwargs)

        def miner() -> None:
            try:
                mine_until_stopped()
            except BaseException as exc:  # reported by the test below
                fault["miner_error"] = exc
                raise

        def mine_until_stopped() -> None:
            while not stop.is_set():
                rpc(w3, "evm_mine")
                head = int(w3.eth.block_number)
                if armed.is_set() and not fault:
                    hashes = operator_txs_in(w3, operator, head, head)
                    if hashes:
                        # mined, one confirmation of two: once the sender has seen it and
                        # waits for the next block, the block is replaced by an empty one
                        assert counting.wait(30), "the sender never saw its receipt"
                        fault["hashes"] = hashes
                        fault["block"] = head
                        rpc(w3, "anvil_reorg", depth, [])
                time.sleep(0.2)

        orchestrator._send = arm_on_training  # type: ignore[method-assign, assignment]
        sender._await_confirmations = counting_confirmations  # type: ignore[method-assign]
        rpc(w3, "evm_setAutomine", False)
        thread = threading.Thread(target=miner, daemon=True)
        thread.start()
        try:
            drive(w3, orchestrator, market)
        finally:
            stop.set()
            thread.join(10)
            rpc(w3, "evm_setAutomine", True)

        assert "miner_error" not in fault, fault["miner_error"]
        assert fault, "the training step was never mined"
        # then the sender sent the same transaction again: it is on chain in a later block,
        # with the nonce it had, and nothing was replaced or planned twice
        (tx_hash,) = fault["hashes"]
        receipt = w3.eth.get_transaction_receipt(tx_hash)
        assert receipt["status"] == 1
        assert receipt["blockNumber"] > fault["block"]
        stats = sender.stats.snapshot()
        assert stats["replaced"] == 0, stats
        assert stats["sent"] == stats["confirmed"], stats
        assert_finished(w3, orchestrator, market)
