"""A node's answer cut off mid-body: the sender retries it like a reset, never sends twice.

The hard case of a flaky endpoint is an answer lost after the node acted on the request: a
transaction that is in the pool while its sender saw only a broken connection. The sender
must find it there (same signed transaction, same nonce) instead of failing the step.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.nonces import LocalNonces
from market.services import Anvil
from market.tx import TxSender, TxSettings, is_transient, pending_count
from tests.faults.rpcproxy import Faults, RpcProxy

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cutting_proxy(anvil: Anvil) -> Iterator[RpcProxy]:
    # A third of the answers to the sender's own calls cut after the headers and half of the body
    # (seeded: requests come one at a time, so the draws repeat from run to run).
    faults = Faults(
        drop_rate=0.35,
        drop_kinds=("drop-cut",),
        methods=frozenset(
            {
                "eth_sendRawTransaction",
                "eth_getTransactionReceipt",
                "eth_blockNumber",
                "eth_estimateGas",
                "eth_getBlockByNumber",
            }
        ),
    )
    proxy = RpcProxy(anvil.url, faults, seed=2).start()
    yield proxy
    proxy.stop()


def test_a_cut_answer_is_transient() -> None:
    assert is_transient(requests.exceptions.ChunkedEncodingError("Connection broken"))
    assert not is_transient(ValueError("not a transport failure"))


def test_a_send_whose_answers_are_cut_is_confirmed_once(
    w3: Web3, accounts: list[LocalAccount], cutting_proxy: RpcProxy, snapshot: None
) -> None:
    # given a sender whose node loses half of its answers, without retries in the provider
    proxied = Web3(
        Web3.HTTPProvider(
            cutting_proxy.url, request_kwargs={"timeout": 10}, exception_retry_configuration=None
        )
    )
    sender = TxSender(
        proxied,
        accounts[17],
        nonces=LocalNonces(pending_count(proxied)),
        settings=TxSettings(poll_interval_s=0.05, backoff_initial_s=0.05, rpc_deadline_s=30),
    )
    before = w3.eth.get_transaction_count(accounts[17].address)
    # when it sends three transfers
    results = [sender.send(to=accounts[18].address, value=1) for _ in range(3)]
    # then each is confirmed with the next nonce: none failed, none was sent twice
    assert [r.status for r in results] == [1, 1, 1]
    assert [r.nonce for r in results] == [before, before + 1, before + 2]
    assert w3.eth.get_transaction_count(accounts[17].address) == before + 3
    # and answers were cut, sends' among them, and retried
    cut_sends = cutting_proxy.by_method[("drop-cut", "eth_sendRawTransaction")]
    assert cut_sends >= 1, cutting_proxy.by_method
    assert sender.stats.snapshot()["rpc_retries"] >= cutting_proxy.counts["drop-cut"] - 1
