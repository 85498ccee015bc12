"""End to end: markets driven by real workers and beat on a 1 s-block anvil, measured.

Two scenarios: one market of 200 contributions on one worker process, and 20 concurrent
markets of 50 contributions on two worker processes. Each market ends early (earliestEnd
with ``minContributions`` reached); from then on only the stack sends transactions. Reported
per scenario, all read from the chain afterwards:

- ``deadline_to_collect_s`` (median, max): from the moment the market could end (the later
  of earliestEnd and the block of its last required contribution) to the block of
  ``RewardsFinalized`` (the market is in COLLECT from that block);
- ``end_lateness_s_p99``: from that same moment to the block of the worker's ``endMarket``
  (``end_mode`` says whether the early end or the implicit end at latestEnd was used);
- ``txs_sent``: the operator's transactions to the markets (every step, the provider's
  withdrawal included); ``txs_steps``: those of the draw, reveal, end and reward steps;
- ``txs_minimum``: per market ⌈gas used by those steps / cap⌉, summed; with the targets
  ``txs_steps ≤ 1.2 × txs_minimum + 5 × markets`` (a phase change needs its own
  transaction: draw, public reveal, end, and the switches from reveal to training and
  from training to rounds) and ``end_lateness_s_p99 ≤ reconcile interval + 2 s``.

Bounded by: the block time (1 s: each step waits for its block), the reconcile interval
(1 s) and, with many markets, the one nonce stream of the operator account.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import statistics
import time
from typing import Any

import redis
from eth_utils.abi import function_abi_to_4byte_selector

from market.chain import MarketClient
from market.services import ROOT, ensure_redis
from market.tx import read_tx_stats
from market.types import Phase
from tests.e2e.harness import (
    BLOCK_TIME_S,
    E2E,
    RECONCILE_INTERVAL_S,
    chain_payouts,
    contribute_all,
    hidden_rule,
    launch,
    mirror_payouts,
    operator_transactions,
    running,
    sample,
    wait_for,
    wait_phase,
)

REDIS_URL = os.environ.get("MARKET_E2E_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
# (name, markets, contributions per market, worker processes)
SCENARIOS = [("single", 1, 200, 1), ("concurrent", 20, 50, 2)]
# Pool processes per worker process: each step waits for its block, so the number of
# markets that can have a step in the same block is the total pool size; 10 per process
# lets the 20 markets' ends, all due together, go out in the same block or two.
CONCURRENCY = 10
TEST_SIZE = 300
PORTIONS = 5
# Time to launch every market, see it drawn and publicly revealed, and send every
# contribution, before earliestEnd: about 1.5 s per launch (one block each) plus margin.
SETUP_S_PER_MARKET = 2
SETUP_S = 30
STEP_SELECTORS = {
    "draw",
    "revealPublic",
    "endMarket",
    "revealBatch",
    "prepareRewards",
    "processRewards",
}


def _selectors(client: MarketClient) -> dict[str, str]:
    """4-byte selector (hex) → function name, from the market's ABI."""
    return {
        function_abi_to_4byte_selector(entry).hex(): str(entry["name"])
        for entry in client.contract.abi
        if entry["type"] == "function"
    }


def _block_time(env: E2E, number: int) -> int:
    return int(env.w3.eth.get_block(number)["timestamp"])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[k]


def _measure_market(env: E2E, address: str) -> dict[str, Any]:
    market = env.client(address)
    params = market.params()
    records = market.contributions()
    needed = records[params.min_contributions - 1] if params.min_contributions else None
    ready = max(params.earliest_end, _block_time(env, needed.block_number) if needed else 0)
    ended = market.contract.events.MarketEnded().get_logs(from_block=market.created_block)
    final = market.contract.events.RewardsFinalized().get_logs(from_block=market.created_block)
    end_block = int(ended[0]["blockNumber"]) if ended else None
    end_time = _block_time(env, end_block) if end_block is not None else params.latest_end
    collect_time = _block_time(env, int(final[0]["blockNumber"]))
    return {
        "address": address,
        "ready": ready,
        "end_mode": "early" if ended else "latestEnd",
        "end_lateness_s": end_time - ready,
        "deadline_to_collect_s": collect_time - (ready if ended else params.latest_end),
        "payouts_match_mirror": chain_payouts(market) == mirror_payouts(market),
    }


def run_scenario(name: str, markets: int, contributions: int, workers: int) -> dict[str, Any]:
    """Launch ``markets`` markets, contribute, wait for COLLECT; the figures."""
    ensure_redis(REDIS_URL)
    cache: Any = redis.Redis.from_url(REDIS_URL)
    cache.flushdb()
    rng = random.Random(5)
    rule = hidden_rule(rng)
    # Logs and the vault stay in var/ after the run, for a look at what the workers did.
    work = ROOT / "var" / "bench-e2e" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with running(REDIS_URL, work, workers=workers, concurrency=CONCURRENCY) as env:
        earliest = SETUP_S + SETUP_S_PER_MARKET * markets + contributions * markets // 100
        started = time.monotonic()
        addresses = [
            launch(
                env,
                rule,
                test_size=TEST_SIZE,
                portions=PORTIONS,
                min_contributions=contributions,
                earliest_end_s=earliest,
                latest_end_s=earliest + 600,
            )
            for _ in range(markets)
        ]
        for address in addresses:
            wait_phase(env, address, {Phase.PARTICIPATION}, 60)
        orders = [
            (a, sample(rng, rule, flip=i % 4 == 3)) for i in range(contributions) for a in addresses
        ]
        contribute_all(env, orders)
        for address in addresses:
            wait_phase(env, address, {Phase.COLLECT}, 600)
        for address in addresses:
            wait_for(env.client(address).provider_withdrawn, 60, "the provider's withdrawal")
        wall_s = time.monotonic() - started
        selectors = _selectors(env.client(addresses[0]))
        per_market = [_measure_market(env, a) for a in addresses]
        txs = operator_transactions(env.w3, env.operator.address)
        to_markets = {a.lower() for a in addresses}
        sent = steps = minimum = 0
        gas_by_market: dict[str, int] = dict.fromkeys(to_markets, 0)
        for tx in txs:
            if tx.to is None or tx.to.lower() not in to_markets:
                continue
            sent += 1
            if selectors.get(tx.selector) in STEP_SELECTORS:
                steps += 1
                gas_by_market[tx.to.lower()] += tx.gas_used
        cap = env.settings.tx_gas_cap
        minimum = sum(math.ceil(g / cap) for g in gas_by_market.values())
        reverted = sum(1 for t in txs if t.status != 1)
        lateness = [float(m["end_lateness_s"]) for m in per_market]
        to_collect = [float(m["deadline_to_collect_s"]) for m in per_market]
        stats = read_tx_stats(env.cache)
        return {
            "scenario": name,
            "markets": markets,
            "contributions_per_market": contributions,
            "worker_processes": workers,
            "pool_per_process": CONCURRENCY,
            "block_time_s": BLOCK_TIME_S,
            "tx_gas_cap": cap,
            "reconcile_interval_s": RECONCILE_INTERVAL_S,
            "deadline_to_collect_s": {
                "median": statistics.median(to_collect),
                "max": max(to_collect),
            },
            "end_lateness_s_p99": _percentile(lateness, 0.99),
            "end_lateness_s_max": max(lateness),
            "end_mode": sorted({m["end_mode"] for m in per_market}),
            "txs_sent": sent,
            "txs_steps": steps,
            "txs_minimum": minimum,
            "txs_target": 1.2 * minimum + 5 * markets,
            "txs_within_target": steps <= 1.2 * minimum + 5 * markets,
            "end_lateness_within_target": _percentile(lateness, 0.99) <= RECONCILE_INTERVAL_S + 2,
            "reverted": reverted,
            "replaced": stats["replaced"],
            "payouts_match_mirror": all(m["payouts_match_mirror"] for m in per_market),
            "wall_s": round(wall_s, 1),
        }


def run() -> dict[str, Any]:
    """Both scenarios; see the module docstring for what each figure means."""
    return {name: run_scenario(name, m, c, w) for name, m, c, w in SCENARIOS}
