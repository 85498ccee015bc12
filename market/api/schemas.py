"""Answer shapes, for the OpenAPI document (the handlers build plain JSON for speed)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Open):
    """Every error: a message, the field at fault, and the row/column for a dataset cell."""

    detail: str
    field: str | None = None


class Freshness(_Open):
    """How old the cached figures are; ``stale`` once older than the staleness limit."""

    updated_at: float | None
    age_s: float | None
    stale: bool


class LaunchAnswer(_Open):
    """A launched market."""

    address: str
    test_root: str
    tx_hash: str
    block_number: int
    test_size: int
    dim: int
    max_features: int
    feature_spec: dict[str, Any]


class MarketSummary(Freshness):
    """One market of the list."""

    address: str
    phase: str | None


class MarketList(_Open):
    markets: list[MarketSummary]


class MarketView(Freshness):
    """The cached status of a market: phase, deadlines, counts, progress, transactions."""

    address: str
    phase: str
    final: bool
    contributions: int
    reveal_progress_pct: float
    reward_progress_pct: float
    transactions: list[dict[str, Any]]
    last_error: dict[str, Any] | None
    metadata: dict[str, Any] | None
    feature_spec: dict[str, Any] | None


class ContributionView(_Open):
    id: int
    deposit: str
    payout: str | None
    withdrawn: bool


class ContributorView(Freshness):
    """A participant's poll: ``state`` is open, computing, claimable, withdrawn, refundable
    or unknown (no contribution from this account yet)."""

    market: str
    account: str
    phase: str | None
    state: str
    contributions: list[ContributionView]
    amount: str | None
    projected_payout: str | None
    progress: float | None


class Health(_Open):
    status: str
    redis: bool
