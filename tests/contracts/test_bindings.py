"""The Python bindings mirror the contract's types: phases, parameters, reward status."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from market.chain import MarketParams, RewardStatus
from market.contracts import load_artifact
from market.types import Phase

INTERFACE = Path(__file__).resolve().parents[2] / "contracts/interfaces/IPredictionMarket.sol"


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_phase_enum_matches_the_solidity_enum() -> None:
    source = INTERFACE.read_text()
    body = re.search(r"enum Phase \{([^}]*)\}", source)
    assert body is not None
    names = [n.strip() for n in body.group(1).split(",") if n.strip()]
    assert [p.name for p in Phase] == [n.upper() for n in names]
    assert [int(p) for p in Phase] == list(range(len(names)))


def test_market_params_follow_the_abi_tuple_order() -> None:
    abi = load_artifact("MarketFactory").abi
    create = next(f for f in abi if f.get("name") == "createMarket")
    components = [c["name"] for c in create["inputs"][0]["components"]]
    assert [f.name for f in fields(MarketParams)] == [_snake(c) for c in components]


def test_reward_status_follows_the_view() -> None:
    view = next(f for f in load_artifact("PredictionMarket").abi if f.get("name") == "rewardStatus")
    assert [f.name for f in fields(RewardStatus)] == [_snake(o["name"]) for o in view["outputs"]]
