"""Read views over the status cache: what polls see, with how fresh it is.

The workers write the cache (:mod:`market.status`); the API only reads it, so a poll costs
one Redis round trip at most and never an RPC call. A short in-process memo in front of Redis
absorbs bursts of polls on one market: its lifetime is a small fraction of the staleness
limit, and every answer reports the cache's own ``updated_at`` and age, so a memoised answer
is never passed off as fresher than it is.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import redis.asyncio as aioredis

from market.api.errors import ApiError
from market.status import contributor_status, contributors_key, status_key

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# Markets held in the memo per process: far more than one operator runs, and a bound on memory
# (a 200-contributor market takes about 100 KB parsed).
MEMO_MARKETS = 256


def check_address(value: str, what: str) -> str:
    """``value`` lower-cased if it is an address (0x and 40 hex digits), else a 400."""
    if not ADDRESS.match(value):
        raise ApiError(400, f"{what} {value!r} is not an address (0x and 40 hex digits)", what)
    return value.lower()


def freshness(
    status: dict[str, Any], staleness_s: float, now: float | None = None
) -> dict[str, Any]:
    """``updated_at``, ``age_s`` and ``stale``: older than the limit and not yet final.

    A final market (``COLLECT`` or ``CANCELLED`` at the confirmation depth) is not refreshed
    by every reconcile any more, and its figures no longer change but for withdrawals.
    """
    updated = status.get("updated_at")
    age = None if updated is None else max(0.0, (now or time.time()) - float(updated))
    stale = age is None or (age > staleness_s and not status.get("final"))
    return {"updated_at": updated, "age_s": None if age is None else round(age, 3), "stale": stale}


class StatusReader:
    """Reads a market's two cache keys in one round trip, memoised for ``ttl_s`` seconds."""

    def __init__(self, redis_url: str, ttl_s: float) -> None:
        self.redis_url = redis_url
        self.ttl_s = ttl_s
        self._memo: dict[str, tuple[float, dict[str, Any] | None, dict[str, Any]]] = {}
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> aioredis.Redis:
        """The asyncio Redis client of the running event loop (its connections belong to it)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(self.redis_url)
            self._loop = loop
        return self._client

    async def read(self, address: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The status (``None`` if the cache has none) and the contributors of a market."""
        now = time.monotonic()
        hit = self._memo.get(address)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1], hit[2]
        raw_status, raw_contributors = await self.client.mget(
            status_key(address), contributors_key(address)
        )
        status = None if raw_status is None else dict(json.loads(raw_status))
        contributors = {} if raw_contributors is None else dict(json.loads(raw_contributors))
        if len(self._memo) >= MEMO_MARKETS:
            self._memo.clear()
        self._memo[address] = (now, status, contributors)
        return status, contributors

    async def status(self, address: str) -> dict[str, Any]:
        """The cached status of a market, or a 404."""
        status, _ = await self.read(address)
        if status is None:
            raise ApiError(404, f"no market {address} is known to this service", "market")
        return status

    async def contributor(self, address: str, account: str, staleness_s: float) -> dict[str, Any]:
        """What a participant polls (:func:`market.status.contributor_status`) and its age."""
        status, contributors = await self.read(address)
        if status is None:
            raise ApiError(404, f"no market {address} is known to this service", "market")
        view = contributor_status(status, contributors, account)
        view.update(freshness(status, staleness_s))
        return view


def percent(fraction: Any) -> float:
    """0..1 as a percentage with two decimals."""
    return round(100.0 * float(fraction or 0.0), 2)


def market_view(
    status: dict[str, Any], metadata: dict[str, Any] | None, staleness_s: float
) -> dict[str, Any]:
    """The whole cached status of a market, with progress in %, metadata and freshness."""
    view = dict(status)
    view["reveal_progress_pct"] = percent(status.get("reveal_progress"))
    view["reward_progress_pct"] = percent((status.get("reward") or {}).get("progress"))
    view["metadata"] = metadata
    spec = (metadata or {}).get("feature_spec")
    view["feature_spec"] = json.loads(spec) if isinstance(spec, str) else spec
    view.update(freshness(status, staleness_s))
    return view


def market_summary(
    address: str, status: dict[str, Any] | None, staleness_s: float
) -> dict[str, Any]:
    """One line of the market list."""
    if status is None:
        return {"address": address, "phase": None, "stale": True, "updated_at": None, "age_s": None}
    return {
        "address": status.get("address", address),
        "phase": status.get("phase"),
        "final": status.get("final"),
        "bounty": status.get("bounty"),
        "contributions": status.get("contributions"),
        "earliest_end": status.get("earliest_end"),
        "latest_end": status.get("latest_end"),
        **freshness(status, staleness_s),
    }
