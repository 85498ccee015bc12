"""Drives markets: finds due steps (``reconcile``) and performs them (``advance``).

The chain is the source of truth. ``advance`` takes the market's lock, asks
:func:`market.steps.next_step` what is due *now* (a fresh read of the chain), sends it
through the one nonce stream of the operator account (:class:`market.tx.TxSender`), and
repeats for a bounded number of steps. A step that another worker already did is simply
not planned again; a worker killed mid-step leaves either a mined transaction (the next
read sees its effect) or none (the step is planned again), never a half-done step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market import status as status_cache
from market.chain import FactoryClient, MarketClient, connect
from market.config import Settings, load_settings
from market.errors import ChainError, MarketError, RpcUnavailable, VaultError
from market.locks import Lease, market_lock
from market.merkle import StandardMerkleTree
from market.steps import Step, next_step
from market.tx import TxSender, pending_to
from market.types import Phase
from market.vault import Vault

log = logging.getLogger(__name__)

# Steps per advance: a batch long enough to amortize the lock and the reads, short enough
# that one busy market does not hold a worker away from the others for long.
MAX_STEPS_PER_ADVANCE = 8
MAX_SECONDS_PER_ADVANCE = 60.0
# Steps bound to a deadline: after one, the batch stops and the market is re-queued behind
# the others, so that a worker does not spend the next minute on this market's reveal and
# rewards while other markets' ends wait in the queue (20 markets ending together on two
# workers had their last end land 70 s after it was due).
YIELD_AFTER = frozenset({"end"})
# Withdrawals of a finished market change nothing on the service's side; refreshing them this
# often keeps the API's "withdrawn" state current without an RPC burst every reconcile tick.
WITHDRAWAL_REFRESH_S = 15.0
WITHDRAWALS_REFRESHED_PREFIX = "market:withdrawals-refreshed:"
# A step that another actor left in flight (its lease lost to a Redis flush or restart while
# the transaction was pending) is waited for, a few blocks at most on a live chain; past this
# the advance gives up for now and the market is queued again.
INFLIGHT_WAIT_S = 60.0
INFLIGHT_POLL_S = 0.5
# How often a waiting advance looks for the deadline's block: a small fraction of a block.
BLOCK_POLL_S = 0.1


@dataclass(frozen=True)
class AdvanceResult:
    """What one ``advance`` did: steps sent, and whether more work is due now."""

    done: int
    more: bool
    steps: tuple[str, ...] = ()


class Orchestrator:
    """The service's view of the chain, Redis and the vault, for one operator account."""

    def __init__(
        self,
        settings: Settings,
        *,
        w3: Web3 | None = None,
        cache: redis.Redis | None = None,
        account: LocalAccount | None = None,
    ) -> None:
        if settings.factory_address is None:
            raise MarketError("MARKET_FACTORY is not set: the factory whose markets to drive")
        self.settings = settings
        self.w3 = w3 or connect(settings.rpc_url)
        self.cache: redis.Redis = cache or redis.Redis.from_url(settings.redis_url)
        if account is None:
            if settings.operator_key is None:
                raise MarketError("MARKET_OPERATOR_KEY is not set: the account that sends steps")
            account = Account.from_key(settings.operator_key)
        self.account = account
        self.factory = FactoryClient(self.w3, settings.factory_address)
        from market.registry import Registry

        self.registry = Registry(self.cache, self.factory, settings.vault_dir)
        self._vault: Vault | None = None
        self._sender: TxSender | None = None

    @property
    def sender(self) -> TxSender:
        if self._sender is None:
            self._sender = TxSender.from_settings(self.settings, self.w3, self.account, self.cache)
        return self._sender

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = Vault.from_settings(self.settings)
        return self._vault

    # ------------------------------------------------------------------ reconcile

    def reconcile(self) -> list[str]:
        """Refresh every unfinished market's status, then list the ones with a step due now."""
        self.refresh_statuses()
        return self.due_markets()

    def due_markets(self) -> list[str]:
        """The markets with a step due now, from a few cheap reads of each.

        Kept fast on purpose (about three RPC calls a market): the workers refresh the status
        cache on its own schedule (:meth:`refresh_statuses`), so a due step is queued within a
        reconcile interval however many markets there are.
        """
        self.registry.sync()
        due: list[str] = []
        latest = self.w3.eth.get_block("latest")  # one clock for every market of the tick
        head, now = int(latest["number"]), int(latest["timestamp"])
        markets = [self.registry.client(address) for address in self.registry.active()]
        for market, reads in zip(markets, self._phases_and_counts(markets), strict=True):
            try:
                if self._is_due(market, head, now, reads):
                    due.append(market.address)
            except Exception as exc:  # one broken market must not stop the others
                log.warning("market %s: due check failed: %s", market.address, exc)
        return due

    def _phases_and_counts(self, markets: list[MarketClient]) -> list[tuple[Phase, int] | None]:
        """Every market's phase and contribution count, in one JSON-RPC batch.

        Two calls a market in one round trip: with twenty markets on a busy machine, one call
        at a time made a reconcile take seconds, and due ends waited for it. None for every
        market when the batch fails (a node without batches): each is then read on its own.
        """
        if not markets:
            return []
        try:
            with self.w3.batch_requests() as batch:
                for market in markets:
                    batch.add(market.contract.functions.phase())
                    batch.add(market.contract.functions.contributionStats())
                results: list[Any] = list(batch.execute())
            return [
                (Phase(int(results[2 * i])), int(results[2 * i + 1][0]))
                for i in range(len(markets))
            ]
        except Exception as exc:
            log.info("batched due check failed (%s): reading markets one by one", exc)
            return [None] * len(markets)

    def refresh_statuses(self) -> int:
        """Refresh the status cache of every unfinished market; how many were refreshed."""
        self.registry.sync()
        refreshed = 0
        for address in self.registry.active():
            market = self.registry.client(address)
            try:
                current = status_cache.refresh(
                    self.cache, market, confirmations=self.settings.confirmations
                )
            except Exception as exc:  # one broken market must not stop the others
                log.warning("market %s: status refresh failed: %s", address, exc)
                continue
            refreshed += 1
            if current["final"] and not self._provider_withdrawal_due(market):
                self.registry.mark_finished(address)
        self._refresh_withdrawals()
        return refreshed

    def _provider_withdrawal_due(self, market: MarketClient) -> bool:
        """Whether our provider's withdrawal is still to send: one read once it is done."""
        if market.provider() != self.account.address.lower() or market.provider_withdrawn():
            return False
        return (
            next_step(market, gas_cap=self.settings.tx_gas_cap, sender=self.account.address)
            is not None
        )

    def _is_due(
        self, market: MarketClient, head: int, now: int, reads: tuple[Phase, int] | None = None
    ) -> bool:
        """Whether there is anything to send for the market now (at block ``head``, ``now``).

        ``reads`` are its phase and contribution count when already read (in a batch).
        """
        phase = market.phase() if reads is None else reads[0]
        if phase in (Phase.REVEAL, Phase.REWARD):
            return True
        if phase == Phase.PARTICIPATION:
            params = market.params()
            count = market.contribution_stats()[0] if reads is None else reads[1]
            soon = now + self._lookahead_s() >= params.earliest_end
            return soon and count >= params.min_contributions
        if phase == Phase.COMMITTED:
            info = market.info()
            return info.drawn or head > info.draw_block
        return self._provider_withdrawal_due(market)

    def _refresh_withdrawals(self) -> None:
        """Finished markets: keep withdrawals visible, at a slower pace, until all are done."""
        now = time.time()
        for address in self.registry.finished() - self.registry.settled():
            key = WITHDRAWALS_REFRESHED_PREFIX + address
            if not self.cache.set(key, now, nx=True, ex=int(WITHDRAWAL_REFRESH_S)):
                continue
            market = self.registry.client(address)
            try:
                status_cache.refresh(self.cache, market, confirmations=self.settings.confirmations)
            except Exception as exc:
                log.warning("market %s: withdrawal refresh failed: %s", address, exc)
                continue
            contributors = status_cache.read_contributors(self.cache, address)
            accounts = contributors.get("accounts", {}).values()
            if market.provider_withdrawn() and all(all(a["withdrawn"]) for a in accounts):
                self.registry.mark_settled(address)

    # ------------------------------------------------------------------ advance

    def advance(self, address: str) -> AdvanceResult:
        """Send up to a bounded number of due steps of one market, under its lock."""
        market = self.registry.client(address)
        sent: list[str] = []
        started = time.monotonic()
        with market_lock(self.cache, address, lease_s=self.settings.lock_lease_s) as lease:
            if not self._await_inflight(market, lease):
                return AdvanceResult(0, True)
            self._await_end(market, lease)
            secrets = self._secrets(market)
            while len(sent) < MAX_STEPS_PER_ADVANCE:
                if time.monotonic() - started > MAX_SECONDS_PER_ADVANCE:
                    return AdvanceResult(len(sent), True, tuple(sent))
                step = self._plan(market, secrets)
                if step is None:
                    break
                self._send(market, step, lease)
                sent.append(step.name)
                lease.extend()
                if step.name in YIELD_AFTER:
                    break
            more = len(sent) == MAX_STEPS_PER_ADVANCE or bool(sent and sent[-1] in YIELD_AFTER)
        status_cache.refresh(self.cache, market, confirmations=self.settings.confirmations)
        return AdvanceResult(len(sent), more, tuple(sent))

    def _await_inflight(self, market: MarketClient, lease: Lease) -> bool:
        """Wait until no transaction of ours to the market is pending; whether that happened.

        The lock says nobody else is driving the market *now*, not that nobody was a moment
        ago: a holder whose lease vanished (Redis flushed or restarted) may have left a step
        in the pool, and planning from the chain before it is mined would send that step a
        second time, to revert. The chain's own pool is the record that survives Redis.
        """
        deadline = time.monotonic() + INFLIGHT_WAIT_S
        operator = self.account.address
        while True:
            inflight = pending_to(self.w3, operator, market.address)
            if inflight is None:  # no txpool API: any pending transaction of the account
                pending = self.w3.eth.get_transaction_count(operator, "pending")
                inflight = pending - self.w3.eth.get_transaction_count(operator, "latest")
            if inflight <= 0:
                return True
            if time.monotonic() > deadline:
                log.warning("market %s: a transaction of ours is still pending", market.address)
                return False
            lease.extend()
            time.sleep(INFLIGHT_POLL_S)

    def _lookahead_s(self) -> float:
        """How early an end is taken: the setting plus one reconcile tick, or 0 when off."""
        lookahead = self.settings.end_lookahead_s
        return lookahead + self.settings.reconcile_interval_s if lookahead > 0 else 0.0

    def _await_end(self, market: MarketClient, lease: Lease) -> None:
        """When the market's early end is moments away, wait for the block that allows it.

        ``endMarket`` is estimated against the latest block, so it can be sent once a block
        at or past ``earliestEnd`` exists; waiting here (a second or two, lease renewed)
        sends it in that very moment, and it lands in the next block instead of a reconcile
        tick (or a busy queue) later. Any other state, or the lookahead off, returns at once.
        """
        lookahead = self._lookahead_s()
        if lookahead <= 0 or market.phase() != Phase.PARTICIPATION:
            return
        params = market.params()
        count, _ = market.contribution_stats()
        if count < params.min_contributions:
            return
        deadline = time.monotonic() + 2 * lookahead
        while int(self.w3.eth.get_block("latest")["timestamp"]) < params.earliest_end:
            if time.monotonic() > deadline:
                return
            lease.extend()
            time.sleep(BLOCK_POLL_S)

    def _plan(
        self, market: MarketClient, secrets: tuple[StandardMerkleTree, Any] | None
    ) -> Step | None:
        try:
            return next_step(
                market,
                gas_cap=self.settings.tx_gas_cap,
                secrets=secrets,
                sender=self.account.address,
            )
        except (ChainError, RpcUnavailable) as exc:
            status_cache.record_error(self.cache, market.address, "plan", exc)
            raise

    def _send(self, market: MarketClient, step: Step, lease: Lease) -> None:
        log.info("market %s: %s %s", market.address, step.name, step.detail)
        # Still ours right before sending: a lease lost since the plan means someone else may
        # be planning the same step (LockLost, and the market is tried again).
        lease.extend()
        try:
            # The lease is renewed while the transaction is pending: a step in flight is never
            # taken over (and sent twice) by another worker because its receipt is slow.
            result = self.sender.transact(step.call, gas=step.gas, waiting=lease.extend)
        except MarketError as exc:
            status_cache.record_error(self.cache, market.address, step.name, exc)
            raise
        status_cache.record_transaction(
            self.cache,
            market.address,
            step.name,
            result.tx_hash,
            result.gas_used,
            result.block_number,
        )

    def _secrets(self, market: MarketClient) -> tuple[StandardMerkleTree, Any] | None:
        """The provider's tree and samples, when this service launched the market."""
        phase = market.phase()
        if phase not in (Phase.COMMITTED, Phase.REVEAL):
            return None
        try:
            root = market.params().test_root
            if not self.vault.exists(market.address) and not self._adopt_pending(market, root):
                return None
            secrets = self.vault.load(market.address, expected_root=root)
        except VaultError as exc:
            status_cache.record_error(self.cache, market.address, "vault", exc)
            raise
        return StandardMerkleTree.load(dict(secrets.tree)), list(secrets.samples)

    def _adopt_pending(self, market: MarketClient, root: bytes) -> bool:
        """Finish a launch that died between its deployment and the vault's rename.

        The secrets (and the public metadata) then sit under ``pending-<root>``. They are
        taken for this market only if our operator is its provider: anyone may create a
        market with our root, and revealing our test set on it would hand the test set out.
        """
        if not self.vault.pending_path(root).exists():
            return False
        if market.provider() != self.account.address.lower():
            return False
        self.vault.promote(root, market.address)
        self.registry.promote_metadata(root, market.address)
        log.info("market %s: took over the vault file of an interrupted launch", market.address)
        return True


@cache
def _default() -> Orchestrator:
    return Orchestrator(load_settings())


def reconcile() -> Iterable[str]:
    """Markets with a step due now (the Celery ``market.reconcile`` task calls this)."""
    return _default().due_markets()


def refresh_statuses() -> int:
    """Refresh the status cache (the Celery ``market.refresh_statuses`` task calls this)."""
    return _default().refresh_statuses()


def advance(address: str) -> tuple[int, bool]:
    """One bounded batch of a market's steps (the Celery ``market.advance`` task)."""
    result = _default().advance(address)
    return result.done, result.more
