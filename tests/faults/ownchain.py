"""An anvil of the test's own, for faults that change how the node mines or what it keeps.

Dropping pool transactions, turning automine off for long stretches and reorganizing blocks
would disturb other tests sharing the session anvil, so these tests start a node of their own
and stop it when they end.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

from web3 import Web3

from market.nonces import NonceAllocator
from market.orchestrator import Orchestrator
from market.services import start_anvil
from market.tx import TxSender, TxSettings, TxStats, pending_count
from tests.e2e.harness import wait_for

# A receipt is polled this often: a fraction of the time between two blocks of the tests.
POLL_S = 0.05


@contextlib.contextmanager
def own_node(accounts: int = 8) -> Iterator[Web3]:
    """A fresh anvil (automine on) and a client of it; the node is stopped on the way out."""
    node = start_anvil(accounts=accounts)
    try:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))
        assert w3.is_connected()
        yield w3
    finally:
        node.stop()


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    """A raw JSON-RPC call (anvil's own methods have no web3 binding); fails on an error."""
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]


def use_sender(
    orchestrator: Orchestrator,
    *,
    stale_after_s: float,
    replace_after_s: float,
    receipt_timeout_s: float,
) -> TxSender:
    """Give the orchestrator a sender with the test's timings (the service has no setting for
    the nonce record's staleness or the replacement delay: their defaults are for real chains).
    """
    settings = orchestrator.settings
    w3 = orchestrator.w3
    nonces = NonceAllocator(
        orchestrator.cache, int(w3.eth.chain_id), pending_count(w3), stale_after_s=stale_after_s
    )
    sender = TxSender(
        w3,
        orchestrator.account,
        nonces=nonces,
        settings=TxSettings.from_settings(
            settings,
            replace_after_s=replace_after_s,
            receipt_timeout_s=receipt_timeout_s,
            poll_interval_s=POLL_S,
        ),
        stats=TxStats(),
    )
    orchestrator._sender = sender
    return sender


def redis_nonce(orchestrator: Orchestrator) -> int | None:
    """The operator's next nonce as the service's Redis record holds it."""
    nonces = orchestrator.sender.nonces
    assert isinstance(nonces, NonceAllocator)
    return nonces.peek(orchestrator.account.address)


def chain_nonce(w3: Web3, address: str, block: Literal["latest", "pending"] = "latest") -> int:
    """The account's transaction count on chain (``pending`` adds the node's pool)."""
    return int(w3.eth.get_transaction_count(Web3.to_checksum_address(address), block))


def pool_hashes(w3: Web3, address: str) -> list[str]:
    """Hashes of the account's transactions waiting in the node's pool (pending or queued)."""
    content = rpc(w3, "txpool_content")
    out = []
    for part in ("pending", "queued"):
        for sender, txs in content.get(part, {}).items():
            if sender.lower() == address.lower():
                out += [tx["hash"] for tx in txs.values()]
    return out


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """:func:`tests.e2e.harness.wait_for`, polling as often as the sender here does."""
    return wait_for(condition, timeout_s, what, poll_s=POLL_S)


class Background:
    """Run a call in a thread and keep its result or its exception for the test to check."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # handed to the test through join()
            self.error = exc

    def join(self, timeout_s: float) -> Any:
        """Wait for the call; its result, or its exception raised here."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the call did not return within {timeout_s} s"
        if self.error is not None:
            raise self.error
        return self.result
