"""Reliability: the fault, attack and fuzz suites counted, and a soak under worker kills.

Suites. One pytest run (a subprocess, results read from its ``--junitxml``) over:

- fault scenarios: ``tests/faults/`` and ``tests/e2e/test_crashes.py`` (a worker SIGKILLed
  mid-step, Redis flushed, the node unreachable, a bad vault key...); a scenario survived
  when its test passed, i.e. the market still finished with the mirror's payouts;
- attacks: ``tests/contracts/test_attacks.py`` and ``tests/security/``; an attack was
  refused when its test passed (each asserts the specific defence);
- fuzzing: the examples run by the market state machine
  (``tests/fuzz/test_market_state_machine.py``, through ``MARKET_FUZZ_TALLY``) and the
  requests sent by the API fuzzer (``tests/api/test_schemathesis.py``, through
  ``MARKET_API_FUZZ_TALLY``) with the number answered 5xx.

Whatever test cases those paths hold when the benchmark runs are counted.

Soak. A real stack (``tests.e2e.harness.running``: its own anvil with 1 s blocks, beat and
``WORKERS`` worker processes on Redis) drives ``SOAK_MARKETS`` small markets whose earliest
ends are spread over the soak, so that every step (draw, public reveal, end, reveal batches,
reward steps, the provider's withdrawal) happens while a thread SIGKILLs a random worker
(its whole process group, pool included) every ``KILL_EVERY_S`` seconds and starts a
replacement, for ``SOAK_S`` seconds. Then the killing stops and every market must reach
COLLECT and pay the provider; a market cancelled instead (its reveal window passed) is a
failure, counted apart. Per finished market, read from the chain:

- the payouts against the Python mirror (``market.replay``), the provider's remainder too;
- conservation: ``bounty + deposits == Σ payouts + provider remainder``;
- what the contract still holds == Σ payouts (nobody has withdrawn but the provider);
- no test index revealed twice, no training range scored twice;

and per cancelled market, what it holds == the refunds it owes (+ the bounty until the
provider takes it back). ``wei_lost`` adds up every difference in wei of those checks; it
must be 0. (The suites assert their amounts exactly: a loss there is a failed test in their
counts.) Reverted and replaced transactions are counted both on chain and by the senders
(``market.tx.read_tx_stats``).

What bounds it: two cores shared by anvil, beat, the workers (each restart re-imports web3
and forks its pool) and this process; a killed worker's task comes back only after the
visibility timeout (``VISIBILITY_TIMEOUT_S``) and its market lock after the lease
(``LOCK_LEASE_S``), so under kills every few seconds a market advances in bursts.
``MARKET_SOAK_S`` and ``MARKET_SOAK_MARKETS`` shorten the soak for a quick check;
``MARKET_RELIABILITY_PARTS`` (``suites``, ``soak`` or both, comma separated) runs one part.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from market import replay
from market.chain import MarketClient
from market.services import ROOT, ensure_redis
from market.tx import read_tx_stats
from market.types import Phase
from tests.e2e.harness import (
    BLOCK_TIME_S,
    E2E,
    LOCK_LEASE_S,
    VISIBILITY_TIMEOUT_S,
    assert_clean_nonces,
    assert_no_step_twice,
    chain_payouts,
    contribute_all,
    hidden_rule,
    launch,
    operator_transactions,
    running,
    sample,
)

# Not a benchmark's database (10, 12), the e2e tests' (11), the demo's (14) or one the test
# sessions claim (1-8): the suites' end-to-end tests and the soak each flush it.
REDIS_URL = os.environ.get("MARKET_RELIABILITY_REDIS_URL", "redis://127.0.0.1:6379/9")
PARTS = set(os.environ.get("MARKET_RELIABILITY_PARTS", "suites,soak").split(","))

# ---------------------------------------------------------------------------- suites

SUITES = {
    "faults": ["tests/faults", "tests/e2e/test_crashes.py"],
    "attacks": ["tests/contracts/test_attacks.py", "tests/security"],
    "fuzz": ["tests/fuzz/test_market_state_machine.py", "tests/api/test_schemathesis.py"],
}
# Each test has its own timeout; this only stops a run that hangs outside any test.
SUITES_TIMEOUT_S = 3600
# pytest's last line: "3 failed, 40 passed, 2 xfailed in 512.30s (0:08:32)"
PYTEST_TOTALS = re.compile(r"^=*\s*\d+ (passed|failed|error|xfailed|skipped).* in [\d.]+s")

# ---------------------------------------------------------------------------- soak

# Seconds of killing; the markets are then given FINISH_TIMEOUT_S to finish.
SOAK_S = float(os.environ.get("MARKET_SOAK_S", "300"))
SOAK_MARKETS = int(os.environ.get("MARKET_SOAK_MARKETS", "50"))
WORKERS = 2
# Pool processes per worker: the markets' ends are spread out, so a few at a time suffice;
# each restart forks them all again.
CONCURRENCY = 4
# Small markets: a reveal batch or two and a few reward steps each, so that 50 of them fit
# in the soak and each still has several steps for a kill to land between.
TEST_SIZE = 100
PORTIONS = 5
CONTRIBUTIONS = (8, 12)
# Seconds between kills, drawn uniformly, counted from the moment the previous replacement
# answered (a kill of a worker still starting would test little).
KILL_EVERY_S = (3.0, 8.0)
# The earliest ends go from FIRST_END to LAST_END (fractions of SOAK_S after the stack is
# up), so that the markets' work spreads over the whole soak; never sooner than
# MIN_EARLIEST_S after the launch (time for the draw and the public reveal).
FIRST_END = 0.2
LAST_END = 0.9
MIN_EARLIEST_S = 20
# Far enough that every market ends early (minContributions reached) under the killing.
LATEST_AFTER_S = 1800
# A market that is not drawn and publicly revealed this long after its launch is a failure.
PARTICIPATION_TIMEOUT_S = 300
FINISH_TIMEOUT_S = 900
POLL_S = 1.0
# Celery's log lines for a market step (``market.advance``) taken and finished.
ADVANCE_RECEIVED = re.compile(r"Task market\.advance\[([0-9a-f-]+)\] received")
ADVANCE_FINISHED = re.compile(r"Task market\.advance\[([0-9a-f-]+)\] (?:succeeded|raised|retry)")


def _count_cases(junit: Path) -> dict[str, dict[str, int]]:
    """Test cases per suite group from a JUnit XML report: run, passed, failed, skipped."""
    counts = {name: Counter[str]() for name in SUITES}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        group = next(
            (
                name
                for name, prefixes in SUITES.items()
                if any(path.startswith(p.removesuffix(".py")) for p in prefixes)
            ),
            None,
        )
        if group is None:
            continue
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                # pytest reports an expected failure (a known defect) as skipped with this type
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        counts[group][outcome] += 1
        if outcome != "skipped":
            counts[group]["run"] += 1
    return {
        name: {k: c[k] for k in ("run", "passed", "failed", "xfailed", "skipped")}
        for name, c in counts.items()
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value


def run_suites() -> dict[str, Any]:
    """Run the fault, attack and fuzz suites once; the counts."""
    ensure_redis(REDIS_URL)
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        junit = Path(tmp) / "junit.xml"
        fuzz_tally = Path(tmp) / "fuzz.json"
        api_tally = Path(tmp) / "api.json"
        env = {
            **os.environ,
            "MARKET_E2E_REDIS_URL": REDIS_URL,
            "MARKET_FUZZ_TALLY": str(fuzz_tally),
            "MARKET_API_FUZZ_TALLY": str(api_tally),
        }
        paths = [p for prefixes in SUITES.values() for p in prefixes]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            + [f"--junitxml={junit}", *paths],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=SUITES_TIMEOUT_S,
        )
        wall_s = time.monotonic() - started
        if not junit.exists():
            raise RuntimeError(f"pytest wrote no report:\n{done.stdout[-3000:]}{done.stderr}")
        cases = _count_cases(junit)
        slowest = _slowest(junit)
        fuzz = _read_json(fuzz_tally)
        api = _read_json(api_tally)
    faults, attacks = cases["faults"], cases["attacks"]
    return {
        "fault_scenarios": {"run": faults["run"], "survived": faults["passed"], **faults},
        "attacks": {"tried": attacks["run"], "refused": attacks["passed"], **attacks},
        "fuzz_tests": cases["fuzz"],
        "fuzz_examples": int(fuzz.get("example", 0)),
        "fuzz_reached": {k: v for k, v in fuzz.items() if k != "example"},
        "api_requests_fuzzed": int(api.get("requests", 0)),
        "api_5xx": int(api.get("server_errors", 0)),
        "api_operations_fuzzed": int(api.get("operations", 0)),
        "pytest_exit_code": done.returncode,
        # the summary line and anything that failed, for a look without rerunning
        "pytest_summary": [
            line
            for line in done.stdout.splitlines()
            if line.startswith(("FAILED", "ERROR", "XFAIL", "XPASS")) or PYTEST_TOTALS.match(line)
        ][-20:],
        "wall_s": round(wall_s, 1),
        # where the suites' time goes (they run in ./run tests too, which must stay short)
        "slowest_s": slowest,
    }


def _slowest(junit: Path, count: int = 12) -> dict[str, float]:
    """The ``count`` longest test cases of a JUnit XML report, in seconds."""
    cases = [
        (f"{case.get('classname', '')}::{case.get('name', '')}", float(case.get("time", 0)))
        for case in ElementTree.parse(junit).getroot().iter("testcase")
    ]
    cases.sort(key=lambda c: -c[1])
    return {name: round(seconds, 1) for name, seconds in cases[:count]}


# ---------------------------------------------------------------------------- soak


@dataclass
class Killer:
    """SIGKILLs a random worker every few seconds and starts a replacement, until stopped."""

    env: E2E
    rng: random.Random
    until: float  # monotonic time at which the killing stops
    stop: threading.Event = field(default_factory=threading.Event)
    kills: list[float] = field(default_factory=list)  # monotonic time of each kill
    ended: float = 0.0
    mid_task: int = 0
    restart_failures: list[str] = field(default_factory=list)

    def run(self) -> None:
        while True:
            pause = min(self.rng.uniform(*KILL_EVERY_S), self.until - time.monotonic())
            if self.stop.wait(max(0.0, pause)) or time.monotonic() >= self.until:
                break
            stack = self.env.stack
            victim = self.rng.choice(stack.workers)
            self.mid_task += _busy(victim.log_path)
            self.kills.append(time.monotonic())
            try:
                stack.restart_worker(victim)
            except RuntimeError as exc:  # the replacement did not come up: keep going
                self.restart_failures.append(str(exc)[-500:])
        self.ended = time.monotonic()


def _busy(log: Path) -> int:
    """1 when the worker's log shows a market step received and not finished (at kill time)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    received = set(ADVANCE_RECEIVED.findall(text))
    return int(bool(received - set(ADVANCE_FINISHED.findall(text))))


@dataclass
class SoakMarket:
    address: str
    contributions: int
    launched: float
    contributed: bool = False


def _launch_and_contribute(
    env: E2E, rng: random.Random, t0: float, deadline: float
) -> tuple[list[SoakMarket], list[str]]:
    """Launch every market with its staggered end, and contribute to each once it opens."""
    rule = hidden_rule(rng)
    markets: list[SoakMarket] = []
    not_open: list[str] = []

    def contribute_to_open() -> None:
        waiting = [m for m in markets if not m.contributed]
        phases = {m.address: env.client(m.address).phase() for m in waiting}
        ready = [m for m in waiting if phases[m.address] == Phase.PARTICIPATION]
        for m in waiting:
            late = time.monotonic() - m.launched > PARTICIPATION_TIMEOUT_S
            if phases[m.address] == Phase.CANCELLED or (m not in ready and late):
                m.contributed = True  # given up on: reported, never contributed to
                not_open.append(m.address)
        orders = [
            (m.address, sample(rng, rule, flip=i % 4 == 3))
            for m in ready
            for i in range(m.contributions)
        ]
        if orders:
            contribute_all(env, orders)
        for m in ready:
            m.contributed = True

    span = (LAST_END - FIRST_END) * SOAK_S
    for i in range(SOAK_MARKETS):
        target = FIRST_END * SOAK_S + span * i / max(1, SOAK_MARKETS - 1)
        earliest = max(MIN_EARLIEST_S, round(target - (time.monotonic() - t0)))
        count = rng.randint(*CONTRIBUTIONS)
        address = launch(
            env,
            rule,
            test_size=TEST_SIZE,
            portions=PORTIONS,
            min_contributions=count,
            earliest_end_s=earliest,
            latest_end_s=earliest + LATEST_AFTER_S,
        )
        markets.append(SoakMarket(address, count, time.monotonic()))
        contribute_to_open()
    while any(not m.contributed for m in markets) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        contribute_to_open()
    return markets, not_open


def _settled_cancel(client: MarketClient) -> bool:
    """A cancelled market the service is done with: the provider took the bounty back, or
    the public portion was revealed (then the bounty goes to the contributors' refunds)."""
    return client.provider_withdrawn() or client.public_portion() is not None


def _wait_finished(
    env: E2E, markets: list[SoakMarket], deadline: float
) -> tuple[set[str], set[str]]:
    """Wait until every market is in COLLECT with the provider paid, or cancelled (a failure
    here) and settled; the finished ones and the cancelled ones."""
    finished: set[str] = set()
    cancelled: set[str] = set()
    while True:
        for m in markets:
            if m.address in finished | cancelled:
                continue
            client = env.client(m.address)
            phase = client.phase()
            if phase == Phase.COLLECT and client.provider_withdrawn():
                finished.add(m.address)
            elif phase == Phase.CANCELLED and _settled_cancel(client):
                cancelled.add(m.address)
        if len(finished | cancelled) == len(markets) or time.monotonic() > deadline:
            return finished, cancelled
        time.sleep(POLL_S)


def _audit(env: E2E, address: str) -> dict[str, Any]:
    """The wei differences of one finished market against the mirror and its own books."""
    client = env.client(address)
    payouts = chain_payouts(client)
    mirror = replay.mirror(client)
    bounty = int(client.initialized()["bounty"])
    _, deposits = client.contribution_stats()
    remainder = client.provider_remainder()
    # a payout missing on either side counts whole
    n = max(len(payouts), len(mirror.payouts))
    ours, theirs = [([*values] + [0] * n)[:n] for values in (payouts, mirror.payouts)]
    step_twice = ""
    try:
        assert_no_step_twice(client)
    except AssertionError as exc:
        step_twice = str(exc)
    return {
        "address": address,
        "payouts_vs_mirror_wei": sum(abs(a - b) for a, b in zip(ours, theirs, strict=True)),
        "remainder_vs_mirror_wei": abs(remainder - int(mirror.provider_remainder)),
        "conservation_wei": abs(bounty + deposits - sum(payouts) - remainder),
        "held_vs_owed_wei": abs(client.balance() - sum(payouts)),
        "step_twice": step_twice,
    }


def _audit_cancelled(env: E2E, address: str) -> dict[str, Any]:
    """A cancelled market must still hold exactly the refunds it owes (nobody has withdrawn
    but the provider), plus the bounty while the provider has not taken it back."""
    client = env.client(address)
    count, _ = client.contribution_stats()
    owed = sum(client.refund_of(i) for i in range(1, count + 1))
    public_revealed = client.public_portion() is not None
    if not public_revealed and not client.provider_withdrawn():
        owed += int(client.initialized()["bounty"])
    return {
        "address": address,
        "held_vs_owed_wei": abs(client.balance() - owed),
        "public_revealed": public_revealed,
    }


def _chain_figures(env: E2E) -> dict[str, Any]:
    """The operator's transactions as mined: count, reverted, and whether nonces are clean."""
    txs = operator_transactions(env.w3, env.operator.address)
    try:
        assert_clean_nonces(env.w3, env.operator.address)
        nonce_problem = ""
    except AssertionError as exc:
        nonce_problem = str(exc)[:500]
    return {
        "operator_txs_mined": len(txs),
        "reverted_on_chain": sum(1 for t in txs if t.status != 1),
        "nonce_problem": nonce_problem,
    }


def run_soak() -> dict[str, Any]:
    """SOAK_MARKETS markets under SOAK_S seconds of worker kills; the figures."""
    ensure_redis(REDIS_URL)
    cache: Any = redis.Redis.from_url(REDIS_URL)
    cache.flushdb()
    rng = random.Random(11)
    # Logs and the vault stay in var/ after the run, for a look at what the workers did.
    work = ROOT / "var" / "bench-reliability"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with running(REDIS_URL, work, workers=WORKERS, concurrency=CONCURRENCY) as env:
        t0 = time.monotonic()
        killer = Killer(env, random.Random(12), until=t0 + SOAK_S)
        thread = threading.Thread(target=killer.run, name="killer", daemon=True)
        thread.start()
        try:
            markets, not_open = _launch_and_contribute(
                env, rng, t0, t0 + SOAK_S + PARTICIPATION_TIMEOUT_S
            )
            thread.join()  # the killing goes on for SOAK_S whatever the markets are doing
        finally:
            killer.stop.set()
            thread.join()
        killing_s = killer.ended - t0
        finished, cancelled = _wait_finished(env, markets, time.monotonic() + FINISH_TIMEOUT_S)
        wall_s = time.monotonic() - t0
        unfinished = {}
        for m in markets:
            if m.address not in finished:
                client = env.client(m.address)
                unfinished[m.address] = (
                    f"{client.phase().name}, public portion revealed: "
                    f"{client.public_portion() is not None}, provider withdrawn: "
                    f"{client.provider_withdrawn()}"
                )
        audits = [_audit(env, a) for a in sorted(finished)]
        cancel_audits = [_audit_cancelled(env, a) for a in sorted(cancelled)]
        chain = _chain_figures(env)
        stats = read_tx_stats(env.cache)
    wei = ("payouts_vs_mirror_wei", "remainder_vs_mirror_wei", "conservation_wei")
    gaps = [b - a for a, b in zip(killer.kills, killer.kills[1:], strict=False)]
    return {
        "markets": len(markets),
        "markets_finished": len(finished),
        "exact_payouts": sum(1 for a in audits if not any(a[k] for k in wei)),
        "markets_cancelled": len(cancelled),
        "cancelled_after_public_reveal": sum(1 for a in cancel_audits if a["public_revealed"]),
        "wei_lost": sum(a[k] for a in audits for k in (*wei, "held_vs_owed_wei"))
        + sum(a["held_vs_owed_wei"] for a in cancel_audits),
        "wei_lost_by_check": {
            **{k: sum(a[k] for a in audits) for k in (*wei, "held_vs_owed_wei")},
            "cancelled_held_vs_owed_wei": sum(a["held_vs_owed_wei"] for a in cancel_audits),
        },
        "steps_done_twice": [
            a["address"] + ": " + a["step_twice"] for a in audits if a["step_twice"]
        ],
        "kills": len(killer.kills),
        "kills_mid_task": killer.mid_task,
        "kill_interval_s": {
            "median": round(statistics.median(gaps), 1) if gaps else None,
            "max": round(max(gaps), 1) if gaps else None,
        },
        "restart_failures": killer.restart_failures,
        "killing_s": round(killing_s, 1),
        "wall_s": round(wall_s, 1),
        "not_open_in_time": not_open,
        "unfinished": unfinished,
        "reverted": stats["reverted"],
        "replaced": stats["replaced"],
        "tx_stats": stats,
        **chain,
        "workers": WORKERS,
        "pool_per_worker": CONCURRENCY,
        "test_size": TEST_SIZE,
        "contributions_per_market": list(CONTRIBUTIONS),
        "kill_every_s": list(KILL_EVERY_S),
        "block_time_s": BLOCK_TIME_S,
        "visibility_timeout_s": VISIBILITY_TIMEOUT_S,
        "lock_lease_s": LOCK_LEASE_S,
        "logs": str((work / "log").relative_to(ROOT)),
    }


def _summary(suites: dict[str, Any], soak: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of both parts (None for a part that did not run)."""
    faults, attacks = suites.get("fault_scenarios", {}), suites.get("attacks", {})
    return {
        "fault_scenarios_run": faults.get("run"),
        "fault_scenarios_survived": faults.get("survived"),
        "attacks_tried": attacks.get("tried"),
        "attacks_refused": attacks.get("refused"),
        "fuzz_examples": suites.get("fuzz_examples"),
        "api_requests_fuzzed": suites.get("api_requests_fuzzed"),
        "api_5xx": suites.get("api_5xx"),
        "soak_markets": soak.get("markets"),
        "soak_markets_finished_exact": soak.get("exact_payouts"),
        "soak_kills": soak.get("kills"),
        "soak_killing_s": soak.get("killing_s"),
        "soak_reverted": soak.get("reverted"),
        "soak_replaced": soak.get("replaced"),
        "wei_lost": soak.get("wei_lost"),
    }


def run() -> dict[str, Any]:
    """The suites' counts and the soak; see the module docstring."""
    suites = run_suites() if "suites" in PARTS else {}
    soak = run_soak() if "soak" in PARTS else {}
    return {"summary": _summary(suites, soak), "suites": suites, "soak": soak}
