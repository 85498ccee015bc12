"""The transaction layer and the nonce allocator against a real anvil and a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from market.contracts import load_artifact
from market.errors import (
    ContractReverted,
    GasCapExceeded,
    MarketDepositTooLow,
    RpcUnavailable,
    TransactionTimeout,
)
from market.nonces import LocalNonces, NonceAllocator, nonce_key
from market.services import Anvil, free_port
from market.tx import TxSender, TxSettings, pending_count, read_tx_stats

ETHER = 10**18
# Short waits keep the suite fast; the defaults (seconds to minutes) suit a real chain.
FAST = TxSettings(poll_interval_s=0.02, replace_after_s=30.0, receipt_timeout_s=30.0)


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]


def allocator(w3: Web3, redis_url: str) -> NonceAllocator:
    client: Any = redis.Redis.from_url(redis_url)
    return NonceAllocator(client, w3.eth.chain_id, pending_count(w3))


def make_sender(
    w3: Web3, account: LocalAccount, redis_url: str, settings: TxSettings = FAST
) -> TxSender:
    return TxSender(w3, account, nonces=allocator(w3, redis_url), settings=settings)


def deploy_reverter(sender: TxSender) -> Contract:
    artifact = load_artifact("Reverter")
    result = sender.send(to=None, data=bytes.fromhex(artifact.bytecode[2:]), what="deploy")
    assert result.contract_address is not None
    address = Web3.to_checksum_address(result.contract_address)
    return sender.w3.eth.contract(address=address, abi=artifact.abi)


def chain_nonce(w3: Web3, account: LocalAccount) -> int:
    return int(w3.eth.get_transaction_count(account.address, "latest"))


# ----------------------------------------------------------------------------- sending


def test_value_transfer_is_sent_and_confirmed(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given a sender for account 1
    sender = make_sender(w3, accounts[1], redis_url)
    start = chain_nonce(w3, accounts[1])
    before = w3.eth.get_balance(accounts[2].address)
    # when it sends one ether to account 2
    result = sender.send(to=accounts[2].address, value=ETHER)
    # then the transfer is mined with the nonce it was given, and counted
    assert result.status == 1
    assert result.gas_used == 21_000
    assert result.nonce == start
    assert result.replaced == 0
    assert w3.eth.get_balance(accounts[2].address) - before == ETHER
    assert sender.stats.snapshot() == {
        "sent": 1,
        "replaced": 0,
        "reverted": 0,
        "confirmed": 1,
        "refused": 0,
        "rpc_retries": 0,
    }


def test_contract_call_is_sent_and_confirmed(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    sender = make_sender(w3, accounts[3], redis_url)
    reverter = deploy_reverter(sender)
    result = sender.transact(reverter.functions.bump())
    assert result.status == 1
    assert reverter.functions.counter().call() == 1
    tx = w3.eth.get_transaction(result.tx_hash)  # type: ignore[arg-type]
    assert tx["type"] == 2  # EIP-1559 fields, signed locally
    assert tx["gas"] >= result.gas_used


def test_waits_for_confirmations(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given three confirmations wanted and a chain that mines one block every 0.2 s
    sender = make_sender(
        w3, accounts[4], redis_url, TxSettings(poll_interval_s=0.02, confirmations=3)
    )
    stop = threading.Event()

    def mine() -> None:
        while not stop.wait(0.2):
            rpc(w3, "evm_mine")

    miner = threading.Thread(target=mine)
    miner.start()
    try:
        result = sender.send(to=accounts[5].address, value=1)
        # then the sender returned only once two more blocks were on top of the receipt
        assert w3.eth.block_number >= result.block_number + 2
    finally:
        stop.set()
        miner.join()


def test_gas_cap_exceeded_is_refused_before_sending(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    sender = make_sender(w3, accounts[6], redis_url, TxSettings(gas_cap=1_000_000))
    reverter = deploy_reverter(sender)
    start = chain_nonce(w3, accounts[6])
    # 100 fresh slots cost about 2.2M gas, above the 1M cap
    with pytest.raises(GasCapExceeded) as caught:
        sender.transact(reverter.functions.burn(100))
    assert caught.value.cap == 1_000_000
    assert caught.value.estimate > 2_000_000
    assert str(caught.value.estimate) in str(caught.value)
    # an explicit gas limit above the cap is refused the same way
    with pytest.raises(GasCapExceeded) as explicit:
        sender.transact(reverter.functions.bump(), gas=1_000_001)
    assert explicit.value.estimate == 1_000_001
    # and nothing was sent
    assert chain_nonce(w3, accounts[6]) == start
    assert sender.stats.snapshot()["sent"] == 1  # the deployment only
    assert sender.stats.snapshot()["refused"] == 2


def test_revert_at_estimation_is_typed_and_nothing_is_sent(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    sender = make_sender(w3, accounts[7], redis_url)
    reverter = deploy_reverter(sender)
    start = chain_nonce(w3, accounts[7])
    with pytest.raises(MarketDepositTooLow) as caught:
        sender.transact(reverter.functions.failCustom(5))
    assert (caught.value.deposit, caught.value.minStake) == (5, ETHER)
    assert chain_nonce(w3, accounts[7]) == start


def test_mined_revert_is_recovered_with_eth_call_and_typed(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given calls sent with a fixed gas limit, so estimation does not catch the revert first
    sender = make_sender(w3, accounts[8], redis_url)
    reverter = deploy_reverter(sender)
    start = chain_nonce(w3, accounts[8])
    # when the custom-error call is mined, it reverts on chain and comes back typed
    with pytest.raises(MarketDepositTooLow) as caught:
        sender.transact(reverter.functions.failCustom(7), gas=100_000)
    assert caught.value.deposit == 7
    tx_hash = caught.value.tx_hash  # type: ignore[attr-defined]
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 0
    # a reason string and a panic decode too
    with pytest.raises(ContractReverted) as reason:
        sender.transact(reverter.functions.failString(), gas=100_000)
    assert (reason.value.error_name, reason.value.error_args) == (
        "Error",
        ("Reverter: told to fail",),
    )
    with pytest.raises(ContractReverted) as panic:
        sender.transact(reverter.functions.failPanic(), gas=100_000)
    assert (panic.value.error_name, panic.value.error_args) == ("Panic", (1,))
    # then all three were mined (nonces used) and counted as reverted
    assert chain_nonce(w3, accounts[8]) == start + 3
    assert sender.stats.snapshot()["reverted"] == 3


# ----------------------------------------------------------------------------- replacement


def test_stuck_transaction_is_replaced_with_higher_fees_and_mined(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given a chain that stopped mining: every transaction stays in the pool
    settings = TxSettings(poll_interval_s=0.02, replace_after_s=0.3, receipt_timeout_s=30)
    sender = make_sender(w3, accounts[9], redis_url, settings)
    first_tip = int(w3.eth.max_priority_fee)
    first_max_fee = 2 * int(w3.eth.get_block("latest")["baseFeePerGas"]) + first_tip
    rpc(w3, "evm_setAutomine", False)
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["result"] = sender.send(to=accounts[10].address, value=ETHER)
        except Exception as exc:  # surfaced by the assertions below
            outcome["error"] = exc

    thread = threading.Thread(target=send)
    try:
        thread.start()
        # when the sender has replaced it (once), the chain mines a block
        deadline = time.monotonic() + 10
        while sender.stats.snapshot()["replaced"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sender.stats.snapshot()["replaced"] >= 1
        pool = rpc(w3, "txpool_content")["pending"]
        assert sum(len(v) for v in pool.values()) == 1  # the replacement took the slot
        rpc(w3, "evm_mine")
        thread.join(timeout=10)
    finally:
        rpc(w3, "evm_setAutomine", True)
        thread.join(timeout=10)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    # then the mined version is a replacement with the same nonce and both fees raised
    assert result.replaced >= 1
    mined = w3.eth.get_transaction(result.tx_hash)
    assert mined["nonce"] == result.nonce
    assert mined["maxPriorityFeePerGas"] >= first_tip * 1125 // 1000
    assert mined["maxFeePerGas"] >= first_max_fee * 1125 // 1000
    assert w3.eth.get_balance(accounts[10].address) >= ETHER


def test_unmined_transaction_times_out_with_its_hash(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    settings = TxSettings(poll_interval_s=0.02, replace_after_s=60, receipt_timeout_s=0.5)
    sender = make_sender(w3, accounts[11], redis_url, settings)
    rpc(w3, "evm_setAutomine", False)
    try:
        with pytest.raises(TransactionTimeout) as caught:
            sender.send(to=accounts[12].address, value=1)
        pool = rpc(w3, "txpool_content")["pending"]
        hashes = [tx["hash"] for txs in pool.values() for tx in txs.values()]
        assert hashes == [caught.value.tx_hash]  # sent, still waiting, not replaced
        assert caught.value.timeout_s == 0.5
    finally:
        rpc(w3, "evm_setAutomine", True)


def test_a_transaction_that_leaves_the_chain_before_its_confirmations_is_sent_again(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given a sender waiting for two confirmations on a chain that mines on demand, and a
    # replacement delay far beyond the test: only a re-broadcast can bring the transaction back
    settings = TxSettings(
        poll_interval_s=0.02, replace_after_s=600, receipt_timeout_s=30, confirmations=2
    )
    sender, counting = counting_sender(w3, accounts[13], redis_url, settings)
    rpc(w3, "evm_setAutomine", False)
    try:
        thread, outcome = send_in_thread(sender, accounts[14].address)
        (original,) = wait_for_pool(w3, accounts[13].address)
        rpc(w3, "evm_mine")
        mined_in = int(w3.eth.block_number)
        assert counting.wait(10), "the sender did not see its receipt"
        # when a reorg replaces its block by an empty one, the transaction is gone entirely
        rpc(w3, "anvil_reorg", 1, [])
        assert pool(w3, accounts[13].address) == []
        rpc(w3, "evm_mine")  # the sender's second confirmation would be due now
        # then the sender sends it again, as signed
        assert wait_for_pool(w3, accounts[13].address) == [original]
        rpc(w3, "evm_mine")
        rpc(w3, "evm_mine")
        thread.join(timeout=20)
    finally:
        rpc(w3, "evm_setAutomine", True)
        thread.join(timeout=20)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.tx_hash == original
    assert result.block_number > mined_in
    assert result.replaced == 0
    assert sender.stats.snapshot()["replaced"] == 0


def test_the_version_a_reorg_leaves_on_chain_is_the_one_confirmed(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given a transaction that was replaced once, and the replacement mined
    settings = TxSettings(
        poll_interval_s=0.02,
        replace_after_s=0.3,
        max_replacements=1,
        receipt_timeout_s=30,
        confirmations=2,
    )
    sender, counting = counting_sender(w3, accounts[13], redis_url, settings)
    signed: list[dict[str, Any]] = []
    broadcast = sender._broadcast

    def keep(tx: dict[str, Any], keep_alive: Any = None) -> str:
        signed.append(tx)
        return broadcast(tx, keep_alive=keep_alive)

    sender._broadcast = keep  # type: ignore[method-assign]
    rpc(w3, "evm_setAutomine", False)
    try:
        thread, outcome = send_in_thread(sender, accounts[14].address)
        wait_until(lambda: sender.stats.snapshot()["replaced"] == 1)
        (replacement,) = pool(w3, accounts[13].address)
        rpc(w3, "evm_mine")
        assert counting.wait(10), "the sender did not see its receipt"
        # when a reorg's new branch holds the first version instead
        first = accounts[13].sign_transaction(signed[0])  # type: ignore[arg-type]
        rpc(w3, "anvil_reorg", 1, [[first.raw_transaction.to_0x_hex(), 0]])
        rpc(w3, "evm_mine")
        rpc(w3, "evm_mine")
        thread.join(timeout=20)
    finally:
        rpc(w3, "evm_setAutomine", True)
        thread.join(timeout=20)
    # then the sender confirms that version, not the one it saw mined first
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    first_hash = first.hash.to_0x_hex()
    assert first_hash != replacement
    assert result.tx_hash == first_hash
    assert w3.eth.get_transaction_receipt(first_hash)["status"] == 1  # type: ignore[arg-type]


def counting_sender(
    w3: Web3, account: LocalAccount, redis_url: str, settings: TxSettings
) -> tuple[TxSender, threading.Event]:
    """A sender, and an event set when it has a receipt and starts counting confirmations."""
    sender = make_sender(w3, account, redis_url, settings)
    counting = threading.Event()
    await_confirmations = sender._await_confirmations

    def spy(*args: Any, **kwargs: Any) -> Any:
        counting.set()
        return await_confirmations(*args, **kwargs)

    sender._await_confirmations = spy  # type: ignore[method-assign]
    return sender, counting


def send_in_thread(sender: TxSender, to: str) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["result"] = sender.send(to=to, value=1)
        except Exception as exc:  # surfaced by the test's assertions
            outcome["error"] = exc

    thread = threading.Thread(target=send)
    thread.start()
    return thread, outcome


def pool(w3: Web3, address: str) -> list[str]:
    """Hashes of the account's transactions in the node's pool."""
    content = rpc(w3, "txpool_content")
    return [
        tx["hash"]
        for part in ("pending", "queued")
        for sender, txs in content[part].items()
        if sender.lower() == address.lower()
        for tx in txs.values()
    ]


def wait_until(condition: Any, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def wait_for_pool(w3: Web3, address: str) -> list[str]:
    return list(wait_until(lambda: pool(w3, address)))


# ----------------------------------------------------------------------------- RPC outage


class _Proxy(ThreadingHTTPServer):
    """A loopback JSON-RPC forwarder to anvil that can answer 503 instead."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int, target: str, fail_first: int = 0) -> None:
        self.target = target
        self.fail_remaining = fail_first
        self.failed = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _Proxy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            fail = self.server.fail_remaining > 0
            if fail:
                self.server.fail_remaining -= 1
                self.server.failed += 1
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        request = urllib.request.Request(
            self.server.target, body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = response.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: the tests assert on counters, not on access logs."""


def direct_w3(url: str) -> Web3:
    # No retries inside the provider: the sender's own backoff is under test.
    return Web3(
        Web3.HTTPProvider(url, request_kwargs={"timeout": 5}, exception_retry_configuration=None)
    )


def serve(proxy: _Proxy) -> threading.Thread:
    thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


def test_rpc_outage_is_retried_until_the_node_is_back(
    w3: Web3, anvil: Anvil, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given a sender pointed at a port where nothing listens yet
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = TxSettings(poll_interval_s=0.02, rpc_deadline_s=20, backoff_initial_s=0.1)
    client: Any = redis.Redis.from_url(redis_url)
    proxied = direct_w3(url)
    nonces = NonceAllocator(client, w3.eth.chain_id, pending_count(proxied))
    sender = TxSender(proxied, accounts[11], nonces=nonces, settings=settings)
    proxies: list[_Proxy] = []
    threads: list[threading.Thread] = []

    def come_back() -> None:
        proxies.append(_Proxy(port, anvil.url))
        threads.append(serve(proxies[0]))

    timer = threading.Timer(1.5, come_back)
    started = time.monotonic()
    timer.start()
    try:
        # when it sends while the endpoint is down for 1.5 s
        result = sender.send(to=accounts[12].address, value=ETHER)
    finally:
        timer.join()
        for proxy in proxies:
            proxy.shutdown()
            proxy.server_close()
        for thread in threads:
            thread.join()
    # then it retried with backoff and finished once the endpoint answered
    assert result.status == 1
    assert time.monotonic() - started >= 1.5
    assert sender.stats.snapshot()["rpc_retries"] >= 3  # 0.1 + 0.2 + 0.4 + 0.8 > 1.5


def test_http_5xx_is_retried(
    w3: Web3, anvil: Anvil, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    proxy = _Proxy(free_port(), anvil.url, fail_first=4)
    thread = serve(proxy)
    try:
        proxied = direct_w3(f"http://127.0.0.1:{proxy.server_address[1]}")
        settings = TxSettings(poll_interval_s=0.02, backoff_initial_s=0.05)
        sender = TxSender(
            proxied, accounts[13], nonces=LocalNonces(pending_count(proxied)), settings=settings
        )
        result = sender.send(to=accounts[14].address, value=1)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert result.status == 1
    assert proxy.failed == 4
    assert sender.stats.snapshot()["rpc_retries"] == 4


def test_rpc_unavailable_after_the_deadline(accounts: list[LocalAccount]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    dead = direct_w3(url)
    settings = TxSettings(rpc_deadline_s=1.0, backoff_initial_s=0.1)
    sender = TxSender(
        dead, accounts[15], nonces=LocalNonces(pending_count(dead)), settings=settings
    )
    started = time.monotonic()
    with pytest.raises(RpcUnavailable) as caught:
        sender.send(to=accounts[16].address, value=1)
    elapsed = time.monotonic() - started
    assert caught.value.url == url
    assert caught.value.attempts >= 3
    assert 0.5 <= elapsed <= 3.0


# ----------------------------------------------------------------------------- nonces


_CHILD = """
import json, sys, time
import redis
from eth_account import Account
from web3 import Web3
from market.config import Settings
from market.tx import TxSender

rpc_url, redis_url, key, to, count = sys.argv[1:6]
w3 = Web3(Web3.HTTPProvider(rpc_url))
client = redis.Redis.from_url(redis_url)
settings = Settings(rpc_url=rpc_url, redis_url=redis_url)
sender = TxSender.from_settings(settings, w3, Account.from_key(key), client, poll_interval_s=0.02)
out = []
began = time.monotonic()
for _ in range(int(count)):
    r = sender.send(to=to, value=1)
    out.append([r.nonce, r.tx_hash])
print(json.dumps({"sent": out, "seconds": time.monotonic() - began}))
"""


def test_nonces_from_processes_never_collide_and_leave_no_gap(
    w3: Web3, anvil: Anvil, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given four processes sending ten transfers each from one account
    account, processes, per_process = accounts[17], 4, 10
    start = chain_nonce(w3, account)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CHILD,
                anvil.url,
                redis_url,
                account.key.hex(),
                accounts[18].address,
                str(per_process),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    sent: list[tuple[int, str]] = []
    sending_s = 0.0
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
        report = json.loads(out)
        sent += [(int(n), str(h)) for n, h in report["sent"]]
        sending_s = max(sending_s, report["seconds"])
    total = processes * per_process
    # then every nonce was used once, with no gap, and every transfer was mined
    nonces = sorted(n for n, _ in sent)
    assert nonces == list(range(start, start + total))
    assert chain_nonce(w3, account) == start + total
    assert all(w3.eth.get_transaction_receipt(h)["status"] == 1 for _, h in sent)  # type: ignore[arg-type]
    client: Any = redis.Redis.from_url(redis_url)
    assert read_tx_stats(client)["sent"] == total
    print(f"{total} transfers from one account, 4 processes: {sending_s:.2f} s sending")


def test_nonces_from_threads_never_collide(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    account = accounts[19]
    start = chain_nonce(w3, account)
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        sender = make_sender(w3, account, redis_url)
        try:
            for _ in range(5):
                results.append(sender.send(to=accounts[0].address, value=1).nonce)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(results) == list(range(start, start + 20))


def test_unsent_reservation_leaves_no_gap(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    nonces = allocator(w3, redis_url)
    address = accounts[2].address
    start = chain_nonce(w3, accounts[2])
    # given a reservation that ends with an error before anything was sent
    with pytest.raises(RuntimeError), nonces.reserve(address) as slot:
        assert slot.nonce == start
        raise RuntimeError("signing failed")
    # then the next sender gets the same nonce, and its transaction is mined right away
    sender = TxSender(w3, accounts[2], nonces=nonces, settings=FAST)
    result = sender.send(to=accounts[3].address, value=1)
    assert result.nonce == start
    assert nonces.peek(address) == start + 1


def test_resyncs_when_redis_is_flushed_or_the_chain_is_ahead(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    account = accounts[5]
    sender = make_sender(w3, account, redis_url)
    first = sender.send(to=accounts[6].address, value=1)
    client: Any = redis.Redis.from_url(redis_url)
    # Redis lost its records: the next nonce comes from the chain
    client.flushdb()
    second = sender.send(to=accounts[6].address, value=1)
    assert second.nonce == first.nonce + 1
    # another tool sent from the same key: the chain is ahead, the allocator follows it
    signed = account.sign_transaction(
        {
            "to": accounts[6].address,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "nonce": second.nonce + 1,
            "chainId": w3.eth.chain_id,
        }
    )
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    third = sender.send(to=accounts[6].address, value=1)
    assert third.nonce == second.nonce + 2


def test_redis_ahead_of_the_chain_is_never_handed_out_and_followed_once_stale(
    w3: Web3, accounts: list[LocalAccount], redis_url: str
) -> None:
    client: Any = redis.Redis.from_url(redis_url)
    nonces = NonceAllocator(client, w3.eth.chain_id, pending_count(w3), stale_after_s=1.0)
    address = accounts[4].address
    chain = int(w3.eth.get_transaction_count(address, "pending"))
    key = nonce_key(nonces.chain_id, address)
    # a record two ahead, written a moment ago, that the node never catches up with (its
    # transactions were dropped, or removed by a reorg): a nonce above the node's pending
    # count would sit behind a gap, so the reservation waits until the record is stale
    client.hset(key, mapping={"next": chain + 2, "at": time.time()})
    renewals: list[float] = []
    began = time.monotonic()
    with nonces.reserve(address, waiting=lambda: renewals.append(time.monotonic())) as slot:
        waited = time.monotonic() - began
        assert slot.nonce == chain
    assert 0.5 < waited < 20, waited
    assert renewals  # the caller's lease is renewed meanwhile, as while a receipt is pending
    # the same record, long past: followed at once
    client.hset(key, mapping={"next": chain + 2, "at": time.time() - 3600})
    began = time.monotonic()
    with nonces.reserve(address) as slot:
        assert slot.nonce == chain
    assert time.monotonic() - began < 0.5


def test_redis_ahead_of_a_lagging_node_is_used_once_the_node_catches_up(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, snapshot: None
) -> None:
    # given a record one ahead of the node (a send that the node has not seen yet)
    nonces = allocator(w3, redis_url)
    account = accounts[13]
    chain = int(w3.eth.get_transaction_count(account.address, "pending"))
    nonces.client.hset(
        nonce_key(nonces.chain_id, account.address), mapping={"next": chain + 1, "at": time.time()}
    )
    signed = account.sign_transaction(
        {
            "to": accounts[14].address,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            "nonce": chain,
            "chainId": w3.eth.chain_id,
        }
    )
    # when the node sees that transaction a moment later
    timer = threading.Timer(0.5, w3.eth.send_raw_transaction, (signed.raw_transaction,))
    timer.start()
    began = time.monotonic()
    try:
        with nonces.reserve(account.address) as slot:
            waited = time.monotonic() - began
    finally:
        timer.join()
    # then the reservation waited for it and gets the nonce after it, long before staleness
    assert slot.nonce == chain + 1
    assert 0.3 < waited < 20, waited


def test_settings_refuse_a_bump_nodes_would_reject() -> None:
    with pytest.raises(ValueError, match="fee_bump_percent"):
        TxSettings(fee_bump_percent=10)
    with pytest.raises(ValueError, match="gas_cap"):
        TxSettings(gas_cap=2**24 + 1)
