"""The demo's core on a smaller market, through the real stack (anvil, Redis, worker, beat)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from market.demo import DemoConfig, demo_redis_url, run_demo


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_small_demo_rewards_honest_agents_and_punishes_the_adversary(
    redis_url: str, tmp_path: Path
) -> None:
    # given 60 contributions from 3 honest agents and 1 label-flipper depositing 3x
    config = DemoConfig(
        contributions=60,
        honest=3,
        adversaries=1,
        redis_url=redis_url,  # this session's own database (tests/conftest.py)
        out_dir=tmp_path / "demo",
        timeout_s=100,
    )
    # when the workers run the market to the end
    outcome = run_demo(config, Console(quiet=True))
    trace = outcome.trace
    honest = [k for k, agent in enumerate(trace.agents) if agent.honest]
    adversary = [k for k, agent in enumerate(trace.agents) if not agent.honest]
    # then honest agents gain in total and the adversary loses
    assert sum(trace.payouts[k] for k in honest) > sum(trace.deposits[k] for k in honest)
    assert all(trace.payouts[k] < trace.deposits[k] for k in adversary)
    # and money is conserved to the wei, on-chain results equal the mirror's
    assert outcome.conserved
    assert outcome.chain_matches_mirror and outcome.weights_verified
    assert len(trace.owners) == 60
    # and every agent withdrew exactly its payout
    assert outcome.received == list(trace.payouts)
    # and the model is no worse at the end than at the start
    assert outcome.test_after >= outcome.test_before
    assert outcome.plot is not None and outcome.plot.read_bytes()[:4] == b"\x89PNG"


def test_demo_uses_its_own_redis_database() -> None:
    assert demo_redis_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/14"
    assert demo_redis_url("redis://:pw@host:6380") == "redis://:pw@host:6380/14"
