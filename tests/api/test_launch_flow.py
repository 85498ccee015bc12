"""A real launch through the API on anvil, then polls whose states follow the market."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3 import Web3

from market import status as status_cache
from market.api import create_app
from market.config import Settings
from market.features import FeatureSpec
from market.orchestrator import Orchestrator
from market.types import Phase
from tests.api.conftest import AUTH, TOKEN, serve
from tests.contracts.chaintools import increase_time, mine, send

pytestmark = pytest.mark.anyio

# 1 s of staleness: the poll memo lives 0.1 s, so a poll after MEMO_WAIT sees the cache.
STALENESS_S = 1.0
MEMO_WAIT = 0.15
STAKE = 10**16


def _csv(rows: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = ["a,b,c,label"]
    for _ in range(rows):
        a, b, c = (round(rng.uniform(-1, 1), 3) for _ in range(3))
        lines.append(f"{a},{b},{c},{int(a + b > c)}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def launcher(make_service: Callable[..., Orchestrator]) -> tuple[Settings, Orchestrator]:
    orchestrator = make_service(api_token=TOKEN, status_staleness_s=STALENESS_S)
    return orchestrator.settings, orchestrator


@pytest.fixture
def api_app(launcher: tuple[Settings, Orchestrator], tmp_path: Path) -> FastAPI:
    settings, orchestrator = launcher
    created: list[Settings] = []

    def factory(s: Settings) -> Orchestrator:
        created.append(s)
        return orchestrator

    app = create_app(settings, orchestrator_factory=factory, dataset_dir=tmp_path / "datasets")
    app.state.created = created
    return app


async def _get(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    await asyncio.sleep(MEMO_WAIT)
    answer = await api.get(path)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _step(w3: Web3, orchestrator: Orchestrator) -> None:
    """One reconcile (which refreshes the cache) and the due advances, or let time pass."""
    due = orchestrator.reconcile()
    for address in due:
        orchestrator.advance(address)
    if not due:
        increase_time(w3, 120)
        mine(w3)


async def test_csv_launch_then_polls_follow_the_market(
    w3: Web3,
    accounts: list[LocalAccount],
    launcher: tuple[Settings, Orchestrator],
    api_app: FastAPI,
    snapshot: None,
) -> None:
    _, orchestrator = launcher
    alice, bob, carol = accounts[1], accounts[2], accounts[3]
    async with serve(api_app) as api:
        # given: a provider uploads a CSV test set
        answer = await api.post(
            "/markets",
            headers=AUTH,
            files={"file": ("test.csv", _csv(40, seed=1).encode())},
            data={
                "bounty": str(10**18),
                "min_stake": str(STAKE),
                "portions": "4",
                "n_bins": "4",
                "earliest_end_s": "300",
                "latest_end_s": "600",
                "reveal_window_s": "600",
                "name": "abc",
            },
        )
        assert answer.status_code == 201, answer.text
        launched = answer.json()
        address = launched["address"]
        assert answer.headers["location"] == f"/markets/{address}"
        assert launched["tx_hash"].startswith("0x") and launched["test_size"] == 40
        assert launched["dim"] == 12 and launched["max_features"] == 3  # 3 columns x 4 bins
        assert len(api_app.state.created) == 1
        receipt = w3.eth.get_transaction_receipt(launched["tx_hash"])
        assert receipt["status"] == 1

        # the market is listed and its view carries the published feature spec
        listed = await _get(api, "/markets")
        assert [m["address"].lower() for m in listed["markets"]] == [address.lower()]
        view = await _get(api, f"/markets/{address}")
        assert view["phase"] == "COMMITTED" and view["metadata"]["name"] == "abc"
        spec = FeatureSpec.from_json(view["metadata"]["feature_spec"])
        assert view["feature_spec"] == json.loads(spec.to_json())
        assert spec.encoder.name == "binned_numeric" and spec.dim == 12

        # the service draws and reveals the public portion
        market = orchestrator.registry.client(address)
        while market.phase() == Phase.COMMITTED:
            mine(w3)
            for due in orchestrator.reconcile():
                orchestrator.advance(due)
        poll = f"/markets/{address}/contributors/{alice.address}"
        assert (await _get(api, poll))["state"] == "unknown"

        # when: participants contribute rows encoded with the published spec
        rng = random.Random(2)
        for i, account in enumerate([alice, bob, alice, carol]):
            a, b, c = (rng.uniform(-1, 1) for _ in range(3))
            sample = spec.sample([a, b, c], int(a + b > c) if i != 3 else int(a + b <= c))
            send(w3, account, market.contribute(sample.features, sample.label), value=STAKE)
        orchestrator.reconcile()
        first = await _get(api, poll)
        assert first["state"] == "open" and [c["id"] for c in first["contributions"]] == [1, 3]
        assert all(c["deposit"] == str(STAKE) for c in first["contributions"])
        assert first["stale"] is False

        # then: the state moves from open to computing to claimable
        states = [first["state"]]
        views = []
        for _ in range(60):
            _step(w3, orchestrator)
            current = await _get(api, poll)
            states.append(current["state"])
            views.append(await _get(api, f"/markets/{address}"))
            if current["state"] == "claimable":
                break
        assert states[-1] == "claimable"
        collapsed = [s for k, s in enumerate(states) if k == 0 or s != states[k - 1]]
        assert collapsed == ["open", "computing", "claimable"], states
        computing = [v for v in views if v["phase"] in ("REVEAL", "REWARD")]
        assert computing, "the poll never saw the reveal or reward phase"
        final = views[-1]
        assert final["phase"] == "COLLECT" and final["final"] is True
        assert final["reveal_progress_pct"] == 100.0 and final["reward_progress_pct"] == 100.0
        steps = {t["step"] for t in final["transactions"]}
        assert {"reveal_public", "end", "reveal"} <= steps
        assert all(t["tx_hash"].startswith("0x") for t in final["transactions"])

        claimable = await _get(api, poll)
        payouts = [market.payout_of(1), market.payout_of(3)]
        assert claimable["amount"] == str(sum(payouts))
        assert claimable["projected_payout"] == str(sum(payouts))
        assert [c["payout"] for c in claimable["contributions"]] == [str(p) for p in payouts]

        # and after a withdrawal the next refresh (a worker's) shows it
        send(w3, alice, market.withdraw([1, 3]))
        status_cache.refresh(orchestrator.cache, market)
        withdrawn = await _get(api, poll)
        assert withdrawn["state"] == "withdrawn" and withdrawn["amount"] == "0"
        # the label-flipper's poll says what it may still claim
        carol_view = await _get(api, f"/markets/{address}/contributors/{carol.address}")
        assert carol_view["state"] == "claimable"
        assert carol_view["amount"] == str(market.payout_of(4))


async def test_json_launch_of_a_text_file_in_the_dataset_directory(
    w3: Web3, api_app: FastAPI, tmp_path: Path, snapshot: None
) -> None:
    words = ["good", "bad", "great", "awful", "fine", "poor", "nice", "vile"]
    rng = random.Random(5)
    lines = []
    for _ in range(24):
        picked = rng.sample(words, 3)
        label = int(sum(words.index(w) % 2 == 0 for w in picked) >= 2)
        lines.append(json.dumps({"text": " ".join(picked), "label": label}))
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "reviews.jsonl").write_text("\n".join(lines) + "\n")
    async with serve(api_app) as api:
        answer = await api.post(
            "/markets",
            headers=AUTH,
            json={
                "path": "reviews.jsonl",
                "encoder": "text",
                "dim": 64,
                "bounty": 10**18,
                "min_stake": STAKE,
                "portions": 3,
            },
        )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["feature_spec"]["encoder"] == "hashed_text"
        assert body["dim"] == 64 and body["test_size"] == 24
        view = await _get(api, f"/markets/{body['address']}")
    assert view["metadata"]["dataset"] == {
        "filename": "reviews.jsonl",
        "format": "jsonl",
        "rows": 24,
    }
    assert int(view["bounty"]) == 10**18
    assert w3.eth.get_transaction_receipt(body["tx_hash"])["status"] == 1


def test_app_module_builds_from_the_environment() -> None:
    """``uvicorn market.api:app`` imports an app without touching a chain."""
    import market.api

    assert isinstance(market.api.app, FastAPI)
    assert "/markets/{market}/contributors/{account}" in market.api.app.openapi()["paths"]
