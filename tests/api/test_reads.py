"""Reads: every GET answers from the status cache, with freshness, 404 and 400 as they should."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi import FastAPI

from market.status import contributors_key, status_key
from tests.api.conftest import serve

pytestmark = pytest.mark.anyio

MARKET = "0x" + "ab" * 20
ALICE = "0x" + "a1" * 20
NOBODY = "0x" + "0f" * 20


def _status(phase: str, *, age_s: float = 0.0, final: bool = False, **extra: Any) -> dict[str, Any]:
    return {
        "address": MARKET,
        "phase": phase,
        "final": final,
        "bounty": str(10**18),
        "contributions": 2,
        "earliest_end": 1000,
        "latest_end": 2000,
        "revealed": 30,
        "test_count": 40,
        "reveal_progress": 0.75,
        "reward": {"stage": 0, "trained": 1, "settled": 0, "active": 2, "progress": 0.25},
        "transactions": [{"step": "draw", "tx_hash": "0x" + "11" * 32, "block": 5}],
        "last_error": None,
        "updated_at": time.time() - age_s,
        **extra,
    }


def _contributors(payouts: list[str] | None = None, withdrawn: bool = False) -> dict[str, Any]:
    return {
        "seen": 2,
        "accounts": {
            ALICE: {
                "ids": [1, 2],
                "deposits": ["100", "100"],
                "payouts": payouts,
                "withdrawn": [withdrawn, withdrawn],
                "projected": "250",
            }
        },
    }


def _fill(redis_url: str, status: dict[str, Any], contributors: dict[str, Any]) -> None:
    client: Any = redis.Redis.from_url(redis_url)
    client.set(status_key(MARKET), json.dumps(status))
    client.set(contributors_key(MARKET), json.dumps(contributors))


async def test_health_and_openapi(make_app: Callable[..., FastAPI]) -> None:
    async with serve(make_app()) as api:
        health = await api.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok", "redis": True}
        spec = (await api.get("/openapi.json")).json()
        assert {"/markets", "/markets/{market}", "/markets/{market}/contributors/{account}"} <= set(
            spec["paths"]
        )
        body = spec["paths"]["/markets"]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json"} == set(body)
        docs = await api.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_health_reports_redis_down(make_app: Callable[..., FastAPI]) -> None:
    async with serve(make_app(redis_url="redis://127.0.0.1:1/0")) as api:
        answer = await api.get("/health")
    assert answer.status_code == 503
    assert "Redis" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("phase", "final", "payouts", "withdrawn", "state", "amount"),
    [
        ("PARTICIPATION", False, None, False, "open", None),
        ("REWARD", False, None, False, "computing", None),
        ("COLLECT", True, ["300", "0"], False, "claimable", "300"),
        ("COLLECT", True, ["300", "0"], True, "withdrawn", "0"),
        ("CANCELLED", True, ["120", "120"], False, "refundable", "240"),
    ],
)
async def test_contributor_states(
    make_app: Callable[..., FastAPI],
    redis_url: str,
    phase: str,
    final: bool,
    payouts: list[str] | None,
    withdrawn: bool,
    state: str,
    amount: str | None,
) -> None:
    _fill(redis_url, _status(phase, final=final), _contributors(payouts, withdrawn))
    async with serve(make_app()) as api:
        answer = await api.get(
            f"/markets/{MARKET}/contributors/{ALICE.upper().replace('0X', '0x')}"
        )
    assert answer.status_code == 200
    view = answer.json()
    assert view["state"] == state
    assert view["amount"] == amount
    assert [c["id"] for c in view["contributions"]] == [1, 2]
    assert view["projected_payout"] == "250"
    assert view["stale"] is False and view["age_s"] < 5
    if state == "computing":
        # 30% reveal (0.75) and 70% rewards (0.25)
        assert view["progress"] == pytest.approx(0.3 * 0.75 + 0.7 * 0.25)


async def test_unknown_account_has_no_contribution(
    make_app: Callable[..., FastAPI], redis_url: str
) -> None:
    _fill(redis_url, _status("PARTICIPATION"), _contributors())
    async with serve(make_app()) as api:
        answer = await api.get(f"/markets/{MARKET}/contributors/{NOBODY}")
    assert answer.status_code == 200
    assert answer.json()["state"] == "unknown" and answer.json()["contributions"] == []


@pytest.mark.parametrize(
    ("age_s", "final", "stale"), [(0.0, False, False), (60.0, False, True), (60.0, True, False)]
)
async def test_staleness_is_reported(
    make_app: Callable[..., FastAPI], redis_url: str, age_s: float, final: bool, stale: bool
) -> None:
    _fill(redis_url, _status("REWARD", age_s=age_s, final=final), _contributors())
    async with serve(make_app(status_staleness_s=5.0)) as api:
        market = (await api.get(f"/markets/{MARKET}")).json()
        poll = (await api.get(f"/markets/{MARKET}/contributors/{ALICE}")).json()
    for view in (market, poll):
        assert view["stale"] is stale
        assert view["age_s"] == pytest.approx(age_s, abs=2.0)
        assert view["updated_at"] == pytest.approx(time.time() - age_s, abs=2.0)


async def test_market_view(make_app: Callable[..., FastAPI], redis_url: str) -> None:
    _fill(redis_url, _status("REVEAL"), _contributors())
    async with serve(make_app()) as api:
        answer = await api.get(f"/markets/{MARKET.upper().replace('0X', '0x')}")
    assert answer.status_code == 200
    view = answer.json()
    assert view["phase"] == "REVEAL"
    assert view["reveal_progress_pct"] == 75.0
    assert view["reward_progress_pct"] == 25.0
    assert view["transactions"][0]["tx_hash"] == "0x" + "11" * 32
    # no factory configured: no registry, so no metadata
    assert view["metadata"] is None and view["feature_spec"] is None


async def test_list_without_factory_scans_the_cache(
    make_app: Callable[..., FastAPI], redis_url: str
) -> None:
    _fill(redis_url, _status("PARTICIPATION"), _contributors())
    async with serve(make_app()) as api:
        answer = await api.get("/markets")
    assert answer.status_code == 200
    rows = answer.json()["markets"]
    assert [(r["address"], r["phase"], r["contributions"]) for r in rows] == [
        (MARKET, "PARTICIPATION", 2)
    ]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/markets/0x12", "market"),
        ("/markets/not-an-address", "market"),
        (f"/markets/0x{'g' * 40}/contributors/{ALICE}", "market"),
        (f"/markets/{MARKET}/contributors/0x1234", "account"),
    ],
)
async def test_malformed_address_is_400(
    make_app: Callable[..., FastAPI], path: str, field: str
) -> None:
    async with serve(make_app()) as api:
        answer = await api.get(path)
    assert answer.status_code == 400
    assert answer.json()["field"] == field
    assert "not an address" in answer.json()["detail"]


@pytest.mark.parametrize("suffix", ["", f"/contributors/{ALICE}"])
async def test_unknown_market_is_404(make_app: Callable[..., FastAPI], suffix: str) -> None:
    async with serve(make_app()) as api:
        answer = await api.get(f"/markets/{NOBODY}{suffix}")
    assert answer.status_code == 404
    assert NOBODY in answer.json()["detail"]


async def test_polls_are_memoised_briefly(make_app: Callable[..., FastAPI], redis_url: str) -> None:
    """A poll right after another may reuse it; after the memo's life it sees the cache again."""
    _fill(redis_url, _status("PARTICIPATION"), _contributors())
    # staleness 1 s: the memo lives 0.1 s
    async with serve(make_app(status_staleness_s=1.0)) as api:
        first = (await api.get(f"/markets/{MARKET}/contributors/{ALICE}")).json()
        _fill(redis_url, _status("REWARD"), _contributors())
        time.sleep(0.15)
        second = (await api.get(f"/markets/{MARKET}/contributors/{ALICE}")).json()
    assert (first["state"], second["state"]) == ("open", "computing")


async def test_poll_answers_503_when_redis_is_down(make_app: Callable[..., FastAPI]) -> None:
    async with serve(make_app(redis_url="redis://127.0.0.1:1/0")) as api:
        answer = await api.get(f"/markets/{MARKET}/contributors/{ALICE}")
    assert answer.status_code == 503
    assert "Redis" in answer.json()["detail"]


async def test_fast_path_serves_the_contributor_view(
    make_app: Callable[..., FastAPI], redis_url: str
) -> None:
    """The poll served before routing is the contributor view the route would build."""
    from market.api.views import StatusReader
    from market.config import Settings

    _fill(redis_url, _status("REWARD", age_s=1.0), _contributors())
    app = make_app()
    async with serve(app) as api:
        fast = await api.get(f"/markets/{MARKET}/contributors/{ALICE}")
    assert fast.headers["content-type"] == "application/json"
    reader = StatusReader(redis_url, 0.0)
    slow_view = await reader.contributor(MARKET, ALICE, Settings().status_staleness_s)
    fast_view = fast.json()
    for view in (fast_view, slow_view):
        view.pop("age_s")
    assert fast_view == slow_view
