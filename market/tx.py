"""Sending transactions: estimate, sign locally, send, wait, replace when stuck, confirm.

:class:`TxSender` is the one place that turns a web3 ``ContractFunction`` (or raw call data)
into a mined, confirmed transaction:

    sender = TxSender(w3, account, nonces=NonceAllocator(redis, chain_id, pending_count(w3)),
                      settings=TxSettings(confirmations=2))
    result = sender.transact(market.end_market())
    result.tx_hash, result.gas_used, result.block_number

- the gas estimate is checked against the cap before anything is signed (:class:`GasCapExceeded`
  with both numbers); a call that would revert is refused at estimation with its typed error;
- the key never leaves the process: transactions are signed with eth-account and sent raw;
- nonces come from a :class:`market.nonces.NonceSource`, held only for the send itself;
- a transaction without a receipt after ``replace_after_s`` is re-sent with the same nonce and
  both EIP-1559 fees raised by ``fee_bump_percent``; the first of the versions to be mined wins;
- a mined version that leaves the chain before its confirmations (a reorg) is broadcast again
  at once, and every version is watched until one is confirmed;
- a mined revert is replayed with ``eth_call`` at its block to recover the revert data, and
  raised as the typed exception of :func:`market.errors.decode_revert`;
- RPC failures (connection refused, timeouts, HTTP 5xx/429) are retried with exponential
  backoff until ``rpc_deadline_s``, then :class:`RpcUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis
import requests
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    TooManyRequests,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import RPCEndpoint, TxParams, TxReceipt

from market.config import (
    DEFAULT_CONFIRMATIONS,
    DEFAULT_RECEIPT_TIMEOUT_S,
    DEFAULT_TX_GAS_CAP,
    Settings,
)
from market.errors import (
    ContractReverted,
    GasCapExceeded,
    RpcUnavailable,
    TransactionTimeout,
    decode_revert,
)
from market.nonces import NonceAllocator, NonceSource

log = logging.getLogger(__name__)

T = TypeVar("T")

# A stuck transaction is replaced after this long without a receipt: several block times on
# mainnet and L2s (12 s and below), short against the default receipt timeout of 120 s.
DEFAULT_REPLACE_AFTER_S = 30.0
# Each replacement raises the tip and the max fee by this much. Nodes refuse a replacement
# that does not raise both by at least 10% (geth's txpool default); 12.5% is also the most
# the base fee can rise in one block, so each bump keeps up with a full block.
MIN_FEE_BUMP_PERCENT = 12.5
DEFAULT_MAX_REPLACEMENTS = 5
# Headroom over the estimate for the gas limit: state can change between estimation and
# inclusion (a slot written by another transaction first). Unused gas is refunded.
DEFAULT_GAS_MARGIN_PERCENT = 20
# How often a waiting sender asks for its receipt: a fraction of a block even on fast L2s,
# and a handful of cheap calls per second against one node.
DEFAULT_POLL_INTERVAL_S = 0.25
# How long RPC failures are retried before giving up: long enough to ride out a node restart
# or a load balancer failover, short against a Celery task's time limit.
DEFAULT_RPC_DEADLINE_S = 60.0
DEFAULT_BACKOFF_INITIAL_S = 0.25
DEFAULT_BACKOFF_MAX_S = 5.0
# Without a node-suggested tip, 1 gwei: the customary priority fee on Ethereum mainnet.
FALLBACK_TIP_WEI = 10**9
STATS_KEY = "market:tx:stats"


@dataclass(frozen=True, kw_only=True)
class TxSettings:
    """How :class:`TxSender` sends and waits.

    >>> TxSettings(confirmations=3, fee_bump_percent=25).fee_bump_percent
    25
    """

    gas_cap: int = DEFAULT_TX_GAS_CAP
    gas_margin_percent: int = DEFAULT_GAS_MARGIN_PERCENT
    confirmations: int = DEFAULT_CONFIRMATIONS
    receipt_timeout_s: float = DEFAULT_RECEIPT_TIMEOUT_S
    replace_after_s: float = DEFAULT_REPLACE_AFTER_S
    max_replacements: int = DEFAULT_MAX_REPLACEMENTS
    fee_bump_percent: float = MIN_FEE_BUMP_PERCENT
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    rpc_deadline_s: float = DEFAULT_RPC_DEADLINE_S
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S

    def __post_init__(self) -> None:
        if self.fee_bump_percent < MIN_FEE_BUMP_PERCENT:
            raise ValueError(
                f"fee_bump_percent={self.fee_bump_percent} is below {MIN_FEE_BUMP_PERCENT}: "
                "nodes would refuse the replacement as underpriced"
            )
        if self.confirmations < 1:
            raise ValueError(f"confirmations={self.confirmations} must be at least 1")
        if not 0 < self.gas_cap <= 2**24:
            raise ValueError(f"gas_cap={self.gas_cap} must be in 1..2**24 (EIP-7825)")
        for name in ("receipt_timeout_s", "replace_after_s", "poll_interval_s", "rpc_deadline_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TxSettings:
        """The service's configured cap, confirmations and timeout, plus ``overrides``."""
        values: dict[str, Any] = {
            "gas_cap": settings.tx_gas_cap,
            "confirmations": settings.confirmations,
            "receipt_timeout_s": settings.receipt_timeout_s,
        }
        return cls(**(values | overrides))


@dataclass(frozen=True)
class TxResult:
    """A mined and confirmed transaction (the version that was mined, if it was replaced)."""

    tx_hash: str
    nonce: int
    gas_used: int
    block_number: int
    status: int
    replaced: int
    contract_address: str | None = None
    receipt: TxReceipt | None = field(default=None, repr=False, compare=False)


class TxStats:
    """Counters of sent, replaced, reverted and confirmed transactions, of transactions
    refused before sending (gas cap, a revert at estimation) and of retried RPC calls.

    In-process (``snapshot()``) and, with a Redis client, mirrored into the hash
    ``market:tx:stats`` so that benchmarks can add up every worker's figures
    (:func:`read_tx_stats`).
    """

    NAMES = ("sent", "replaced", "reverted", "confirmed", "refused", "rpc_retries")

    def __init__(self, client: redis.Redis | None = None, key: str = STATS_KEY) -> None:
        self.client = client
        self.key = key
        self._counts = dict.fromkeys(self.NAMES, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        with self._lock:
            self._counts[name] += amount
        if self.client is not None:
            try:
                self.client.hincrby(self.key, name, amount)
            except redis.RedisError as exc:  # statistics must never fail a transaction
                log.warning("could not record tx stat %s: %s", name, exc)

    def snapshot(self) -> dict[str, int]:
        """The counters of this process."""
        with self._lock:
            return dict(self._counts)


def read_tx_stats(client: redis.Redis, key: str = STATS_KEY) -> dict[str, int]:
    """The counters summed over every process that mirrored them into Redis."""
    raw = cast(Mapping[bytes | str, bytes | str], client.hgetall(key))
    counts = dict.fromkeys(TxStats.NAMES, 0)
    for name, value in raw.items():
        counts[name.decode() if isinstance(name, bytes) else name] = int(value)
    return counts


def pending_count(w3: Web3) -> Callable[[str], int]:
    """The chain's ``pending`` transaction count of an address, for nonce sources."""
    return lambda address: int(
        w3.eth.get_transaction_count(Web3.to_checksum_address(address), "pending")
    )


def pending_to(w3: Web3, sender: str, to: str) -> int | None:
    """How many of ``sender``'s transactions to ``to`` wait in the node's pool.

    Read from ``txpool_content`` (geth, anvil, erigon, nethermind). Nodes without that method
    (many hosted RPCs) give None, and then ``pending - latest`` transaction count of the sender,
    a count over every destination, is the caller's best answer.
    """
    reply = w3.provider.make_request(RPCEndpoint("txpool_content"), [])
    pool = reply.get("result")
    if not isinstance(pool, dict):
        return None
    sender, to = sender.lower(), to.lower()
    count = 0
    for section in ("pending", "queued"):
        for address, by_nonce in (pool.get(section) or {}).items():
            if address.lower() != sender:
                continue
            count += sum(1 for tx in by_nonce.values() if str(tx.get("to") or "").lower() == to)
    return count


def is_transient(exc: BaseException) -> bool:
    """Whether an RPC failure is worth retrying: no connection, a timeout, HTTP 5xx or 429.

    An answer cut off mid-body (``ChunkedEncodingError``: the connection broke after the
    headers) is the same failure as a reset, one moment later. Every call retried here is a
    read or the re-broadcast of one signed transaction, so it is as safe to repeat.
    """
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        return status >= 500 or status == 429
    return isinstance(
        exc,
        requests.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | requests.Timeout
        | ProviderConnectionError
        | RequestTimedOut
        | TooManyRequests
        | ConnectionError
        | TimeoutError,
    )


def _bump(value: int, percent: float) -> int:
    # Integer ceiling of value · (1 + percent/100), in per-mille to avoid float rounding,
    # and at least one wei more so that a zero or tiny fee still moves.
    permille = round(percent * 10)
    return max(value + 1, -(-value * (1000 + permille) // 1000))


def _revert_data(exc: ContractLogicError) -> bytes:
    data = exc.data
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
        data = data.get("data", "")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    return b""


@dataclass(frozen=True)
class _Sent:
    """One signed version of a transaction that the node accepted."""

    tx: dict[str, Any]
    tx_hash: str


class TxSender:
    """Signs with ``account`` and sends through ``w3``; see the module docstring."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        nonces: NonceSource,
        settings: TxSettings | None = None,
        stats: TxStats | None = None,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.nonces = nonces
        self.settings = settings or TxSettings()
        self.stats = stats or TxStats()
        self._chain_id: int | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        w3: Web3,
        account: LocalAccount,
        client: redis.Redis,
        **overrides: Any,
    ) -> TxSender:
        """A worker's sender: nonces and counters shared through Redis, configured limits."""
        chain_id = int(w3.eth.chain_id)
        return cls(
            w3,
            account,
            nonces=NonceAllocator(client, chain_id, pending_count(w3)),
            settings=TxSettings.from_settings(settings, **overrides),
            stats=TxStats(client),
        )

    # ------------------------------------------------------------------------- public

    def transact(
        self,
        fn: ContractFunction,
        *,
        value: int = 0,
        gas: int | None = None,
        waiting: Callable[[], None] | None = None,
    ) -> TxResult:
        """Send a call of a bound contract function and wait until it is confirmed.

        ``waiting`` is called on every poll while the transaction is pending, and while its
        nonce waits for a node behind the Redis record (a lock holder renews its lease there,
        so that nobody takes over a step that is still in flight).
        """
        # web3's encoder for a bound call; the public build_transaction would also estimate
        # gas and fetch fees, which this class does itself, with retries and the cap.
        data = HexBytes(fn._encode_transaction_data())
        return self.send(
            to=fn.address, data=bytes(data), value=value, gas=gas, what=fn.fn_name, waiting=waiting
        )

    def send(
        self,
        *,
        to: str | None,
        data: bytes = b"",
        value: int = 0,
        gas: int | None = None,
        what: str = "transaction",
        waiting: Callable[[], None] | None = None,
    ) -> TxResult:
        """Send raw call data (``to=None`` deploys) and wait until it is confirmed.

        ``gas`` fixes the gas limit instead of estimating it: functions that work until
        ``gasleft()`` runs low need it. Either way it is checked against the cap.
        """
        call: dict[str, Any] = {"from": self.address, "value": value, "data": data}
        if to is not None:
            call["to"] = Web3.to_checksum_address(to)
        gas_limit = self._gas_limit(call, gas, what)
        tx = self._initial_fees(call | {"gas": gas_limit, "chainId": self.chain_id, "type": 2})
        sent = self._send_new(tx, what, waiting)
        versions = [sent]
        receipt = self._await_receipt(versions, what, waiting)
        receipt = self._await_confirmations(receipt, versions, what, waiting)
        replaced = len(versions) - 1
        if receipt["status"] != 1:
            self.stats.add("reverted")
            raise self._revert_error(call, receipt, gas_limit)
        self.stats.add("confirmed")
        address = receipt.get("contractAddress")
        return TxResult(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            nonce=int(sent.tx["nonce"]),
            gas_used=int(receipt["gasUsed"]),
            block_number=int(receipt["blockNumber"]),
            status=int(receipt["status"]),
            replaced=replaced,
            contract_address=str(address) if address else None,
            receipt=receipt,
        )

    @property
    def chain_id(self) -> int:
        """The chain id, read once."""
        if self._chain_id is None:
            self._chain_id = self._rpc("eth_chainId", lambda: int(self.w3.eth.chain_id))
        return self._chain_id

    # ------------------------------------------------------------------------- steps

    def _gas_limit(self, call: dict[str, Any], gas: int | None, what: str) -> int:
        cap = self.settings.gas_cap
        if gas is not None:
            if gas > cap:
                self.stats.add("refused")
                raise GasCapExceeded(gas, cap, what)
            return gas
        try:
            estimate = self._rpc(
                "eth_estimateGas", lambda: int(self.w3.eth.estimate_gas(cast(TxParams, call)))
            )
        except ContractLogicError as exc:
            # Refused before signing: the call would revert in the current state.
            self.stats.add("refused")
            error = decode_revert(_revert_data(exc))
            log.warning("%s from %s refused at estimation: %s", what, self.address, error)
            raise error from exc
        if estimate > cap:
            self.stats.add("refused")
            raise GasCapExceeded(estimate, cap, what)
        return min(cap, estimate * (100 + self.settings.gas_margin_percent) // 100)

    def _initial_fees(self, tx: dict[str, Any]) -> dict[str, Any]:
        block = self._rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
        base = int(block.get("baseFeePerGas", 0))
        try:
            tip = self._rpc("eth_maxPriorityFeePerGas", lambda: int(self.w3.eth.max_priority_fee))
        except Web3RPCError:  # a node without the method
            tip = FALLBACK_TIP_WEI
        # Twice the base fee survives six full blocks of +12.5% before the transaction is
        # priced out; only the actual base fee plus the tip is ever paid.
        return tx | {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base + tip}

    def _send_new(
        self, tx: dict[str, Any], what: str, waiting: Callable[[], None] | None = None
    ) -> _Sent:
        with self.nonces.reserve(self.address, waiting) as slot:
            tx = tx | {"nonce": slot.nonce}
            tx_hash = self._broadcast(tx, keep_alive=slot.keep_alive)
            slot.mark_sent()
        self.stats.add("sent")
        log.info("sent %s from %s nonce=%d hash=%s", what, self.address, slot.nonce, tx_hash)
        return _Sent(tx, tx_hash)

    def _broadcast(self, tx: dict[str, Any], keep_alive: Callable[[], None] | None = None) -> str:
        signed = self.account.sign_transaction(tx)
        tx_hash = HexBytes(signed.hash).to_0x_hex()

        def attempt() -> str:
            try:
                self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError:
                # A retried send whose first attempt reached the node answers "already
                # known" or "nonce too low": the transaction is there, which is success.
                if self._known(tx_hash):
                    return tx_hash
                raise
            return tx_hash

        return self._rpc("eth_sendRawTransaction", attempt, keep_alive=keep_alive)

    def _known(self, tx_hash: str) -> bool:
        try:
            self._rpc(
                "eth_getTransactionByHash", lambda: self.w3.eth.get_transaction(HexStr(tx_hash))
            )
        except TransactionNotFound:
            return False
        return True

    def _await_receipt(
        self, versions: list[_Sent], what: str, waiting: Callable[[], None] | None = None
    ) -> TxReceipt:
        """The receipt of whichever version is mined first; replacements join ``versions``."""
        s = self.settings
        start = time.monotonic()
        replace_at = start + s.replace_after_s
        while True:
            for version in reversed(versions):
                receipt = self._receipt(version.tx_hash)
                if receipt is not None:
                    return receipt
            now = time.monotonic()
            if now - start >= s.receipt_timeout_s:
                raise TransactionTimeout(versions[-1].tx_hash, s.receipt_timeout_s)
            if now >= replace_at and len(versions) - 1 < s.max_replacements:
                replacement = self._replace(versions[-1], what)
                if replacement is not None:
                    versions.append(replacement)
                replace_at = time.monotonic() + s.replace_after_s
            if waiting is not None:
                waiting()
            time.sleep(s.poll_interval_s)

    def _replace(self, sent: _Sent, what: str) -> _Sent | None:
        bump = self.settings.fee_bump_percent
        tx = sent.tx
        tip = _bump(int(tx["maxPriorityFeePerGas"]), bump)
        block = self._rpc("eth_getBlockByNumber", lambda: self.w3.eth.get_block("latest"))
        base = int(block.get("baseFeePerGas", 0))
        max_fee = max(_bump(int(tx["maxFeePerGas"]), bump), 2 * base + tip)
        replacement = tx | {"maxPriorityFeePerGas": tip, "maxFeePerGas": max_fee}
        try:
            tx_hash = self._broadcast(replacement)
        except Web3RPCError as exc:
            # "nonce too low": a version was mined meanwhile and the next poll finds it;
            # "underpriced": another bump follows after the next wait.
            log.warning("replacing %s nonce=%d refused: %s", what, tx["nonce"], exc)
            return None
        self.stats.add("replaced")
        log.info(
            "replaced %s from %s nonce=%d hash=%s (tip %d, max fee %d wei)",
            what,
            self.address,
            tx["nonce"],
            tx_hash,
            tip,
            max_fee,
        )
        return _Sent(replacement, tx_hash)

    def _rebroadcast(self, versions: list[_Sent], tx_hash: str, what: str) -> None:
        """Send the version ``tx_hash`` again, as it was signed (same nonce, fees, hash)."""
        version = next((v for v in versions if v.tx_hash == tx_hash), None)
        if version is None:  # not ours: nothing to send again
            return
        try:
            self._broadcast(version.tx)
        except Web3RPCError as exc:
            # "nonce too low": another version is on the new branch, and the wait finds it.
            log.warning("re-sending %s %s refused: %s", what, tx_hash, exc)
            return
        log.info("re-sent %s %s after it left the chain", what, tx_hash)

    def _receipt(self, tx_hash: str) -> TxReceipt | None:
        try:
            return self._rpc(
                "eth_getTransactionReceipt",
                lambda: self.w3.eth.get_transaction_receipt(tx_hash),  # type: ignore[arg-type]
            )
        except (TransactionNotFound, TimeExhausted):
            return None

    def _await_confirmations(
        self,
        receipt: TxReceipt,
        versions: list[_Sent],
        what: str,
        waiting: Callable[[], None] | None = None,
    ) -> TxReceipt:
        """Wait until ``receipt``'s block is ``confirmations`` deep and still holds it.

        A reorg may move the mined version to another block (counted from there) or take it
        off the chain. Then it is broadcast again at once: a node that drops the transactions
        of an abandoned branch instead of returning them to its pool (anvil's ``anvil_reorg``
        does) would otherwise leave the step undone until a replacement ``replace_after_s``
        later. Every version stays watched and the one that ends up mined is the one
        counted: following only the first mined hash would time out when a replacement is
        what the new branch holds.
        """
        s = self.settings
        deadline = time.monotonic() + s.receipt_timeout_s
        while True:
            head = self._rpc("eth_blockNumber", lambda: int(self.w3.eth.block_number))
            if head - int(receipt["blockNumber"]) + 1 >= s.confirmations:
                # Re-read: a reorg may have moved or dropped it while we waited.
                tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
                again = self._receipt(tx_hash)
                if again is not None and again["blockHash"] == receipt["blockHash"]:
                    return again
                log.warning(
                    "%s %s left block %d: waiting again", what, tx_hash, receipt["blockNumber"]
                )
                if again is None:
                    self._rebroadcast(versions, tx_hash, what)
                receipt = self._await_receipt(versions, what, waiting)
                continue
            if time.monotonic() >= deadline:
                raise TransactionTimeout(tx_hash, s.receipt_timeout_s)
            if waiting is not None:
                waiting()
            time.sleep(s.poll_interval_s)

    def _revert_error(self, call: dict[str, Any], receipt: TxReceipt, gas: int) -> ContractReverted:
        # Receipts carry no revert data: replay the call on the state of the failing block.
        tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
        block = int(receipt["blockNumber"])
        data = b""
        try:
            self._rpc(
                "eth_call", lambda: self.w3.eth.call(cast(TxParams, call | {"gas": gas}), block)
            )
        except ContractLogicError as exc:
            data = _revert_data(exc)
        except Web3RPCError as exc:  # e.g. a node without that block's state: no data
            log.warning("replaying %s at block %d failed: %s", tx_hash, block, exc)
        error = decode_revert(data)
        error.add_note(f"transaction {tx_hash} reverted in block {block}")
        error.tx_hash = tx_hash  # type: ignore[attr-defined]
        log.warning("transaction %s reverted in block %d: %s", tx_hash, block, error)
        return error

    # ------------------------------------------------------------------------- RPC

    def _rpc(
        self, method: str, fn: Callable[[], T], *, keep_alive: Callable[[], None] | None = None
    ) -> T:
        """Run one RPC call, retrying transient failures with exponential backoff."""
        s = self.settings
        start = time.monotonic()
        delay = s.backoff_initial_s
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                waited = time.monotonic() - start
                if waited + delay > s.rpc_deadline_s:
                    raise RpcUnavailable(self._url(), attempts, f"{method}: {exc}") from exc
                self.stats.add("rpc_retries")
                log.warning(
                    "%s failed (attempt %d, %.1f s): %s; retrying in %.2f s",
                    method,
                    attempts,
                    waited,
                    type(exc).__name__,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, s.backoff_max_s)
                if keep_alive is not None:
                    keep_alive()

    def _url(self) -> str:
        return str(getattr(self.w3.provider, "endpoint_uri", self.w3.provider))


__all__ = [
    "TxResult",
    "TxSender",
    "TxSettings",
    "TxStats",
    "is_transient",
    "pending_count",
    "read_tx_stats",
]
