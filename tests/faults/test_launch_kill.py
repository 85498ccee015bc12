"""The provider's launch SIGKILLed at each point between the vault and the registry.

``market.launch.launch_market`` runs in a process of its own, stopped at one point (it waits
there) and then SIGKILLed, as a crashed host would leave it. After each kill the state must
be clearly one of two: no market on chain and nothing in the operator's way (the next launch
goes through with the next nonce), or a market on chain whose secrets are in the vault, which
the registry finds from ``MarketCreated`` and the workers drive to the end with the vault's
test set. No vault file is ever left half-written.

A launch killed between the deployment and the vault's rename leaves the secrets (and the
public metadata) under their pending name: the workers take them over for a market whose
provider is their operator, and open it by themselves.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from market import replay
from market.services import ROOT
from market.types import Phase
from market.vault import PENDING_PREFIX, SUFFIX, Vault
from tests.e2e.harness import (
    E2E,
    contribute_all,
    hidden_rule,
    launch,
    running,
    sample,
    wait_for,
    wait_phase,
)
from tests.faults.stackmarkets import (
    assert_finished_like_the_mirror,
    assert_no_conflicting_transactions,
)

pytestmark = pytest.mark.e2e

TEST_SIZE = 60
PORTIONS = 5
CONTRIBUTIONS = 8

# Runs launch_market with MARKET_* settings from the environment, stopping at one point:
# the wrapped function prints "at <point>" and sleeps until the test kills the process.
LAUNCHER = r"""
import json, os, sys, time
import market.vault
from market.config import load_settings
from market.launch import LaunchSpec, launch_market
from market.orchestrator import Orchestrator
from market.registry import Registry
from market.tx import TxSender
from market.types import Sample
from market.vault import Vault

point, spec_path = sys.argv[1:3]


def stop_here():
    print("at", point, flush=True)
    time.sleep(3600)


def stop_at(owner, name, *, after=False):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if after:
            original(*args, **kwargs)
        stop_here()

    setattr(owner, name, wrapper)


if point == "mid-vault-write":
    # Inside the atomic write: the temporary file is complete, the rename not done.
    replace = os.replace

    def replace_then_stop(src, dst):
        if os.path.basename(dst).startswith("pending-"):
            stop_here()
        replace(src, dst)

    market.vault.os.replace = replace_then_stop
elif point == "before-send":
    stop_at(Vault, "save_pending", after=True)
elif point == "nonce-held":
    stop_at(TxSender, "_broadcast")
elif point == "after-send":
    stop_at(TxSender, "_send_new", after=True)
elif point == "before-promote":
    stop_at(Vault, "promote")
elif point == "before-register":
    stop_at(Registry, "add")
else:
    raise SystemExit(f"unknown point {point}")

raw = json.loads(open(spec_path).read())
spec = LaunchSpec(
    **{k: v for k, v in raw.items() if k != "test_set"},
    test_set=[Sample(tuple(f), label) for f, label in raw["test_set"]],
)
result = launch_market(Orchestrator(load_settings()), spec)
print("launched", result.address, flush=True)
"""

# Where the launch is killed, and whether a market is on chain afterwards.
POINTS = {
    "mid-vault-write": False,
    "before-send": False,
    "nonce-held": False,
    "after-send": True,
    "before-promote": True,
    "before-register": True,
}


def kill_launch_at(env: E2E, point: str, rule: list[int], tmp_path: Path) -> None:
    """Run a launch in its own process until ``point``, then SIGKILL it."""
    rng = random.Random(61)
    spec = {
        "test_set": [
            [list(s.features), s.label] for s in (sample(rng, rule) for _ in range(TEST_SIZE))
        ],
        "dim": len(rule),
        "bounty": 10**18,
        "min_stake": 10**16,
        "portions": PORTIONS,
        "min_contributions": CONTRIBUTIONS,
        "earliest_end_s": 10,
        "latest_end_s": 120,
        "reveal_window_s": 300,
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, point, str(spec_path)],
        cwd=ROOT,
        env=env.stack.env,  # the stack's settings: same node, Redis, vault, key and operator
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "launcher.log").open("wb"),
    )
    try:
        assert launcher.stdout is not None
        line = launcher.stdout.readline().decode().strip()  # blocks until it stops there
        assert line == f"at {point}", f"{line!r}; log: {(tmp_path / 'launcher.log').read_text()}"
    finally:
        launcher.kill()  # SIGKILL
        launcher.wait()


def vault_files(env: E2E) -> list[Path]:
    directory = env.settings.vault_dir
    return sorted(directory.iterdir()) if directory.exists() else []


def assert_vault_whole(env: E2E) -> Vault:
    """Every vault file decrypts and matches its own root; temporary files are all that's left."""
    vault = Vault.from_settings(env.settings)
    for path in vault_files(env):
        if path.name.endswith(".tmp"):
            assert path.name.startswith("."), path  # mkstemp's name: no reader ever opens it
            continue
        if path.name.endswith(".meta.json"):
            json.loads(path.read_text())
            continue
        assert path.name.endswith(SUFFIX), path
        stem = path.name.removesuffix(SUFFIX)
        if stem.startswith(PENDING_PREFIX):
            vault.load_pending(bytes.fromhex(stem.removeprefix(PENDING_PREFIX)))
        else:
            vault.load(stem)
    return vault


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", list(POINTS))
def test_launch_killed_leaves_a_recoverable_state(
    point: str, stack_redis_url: str, tmp_path: Path
) -> None:
    rng = random.Random(62)
    rule = hidden_rule(rng)
    with running(stack_redis_url, tmp_path) as env:
        nonce_before = env.w3.eth.get_transaction_count(env.operator.address)
        factory = env.orchestrator.factory
        # given a launch killed at the point
        kill_launch_at(env, point, rule, tmp_path)
        vault = assert_vault_whole(env)
        if not POINTS[point]:
            # then nothing is on chain, no nonce was used, no vault entry but a whole pending one
            head = env.w3.eth.block_number
            wait_for(lambda: env.w3.eth.block_number > head + 2, 30, "a few more blocks")
            assert factory.markets() == []
            assert env.w3.eth.get_transaction_count(env.operator.address, "pending") == nonce_before
            names = [p.name for p in vault_files(env) if p.name.endswith(SUFFIX)]
            assert all(n.startswith(PENDING_PREFIX) for n in names), names
            assert len(names) == (0 if point == "mid-vault-write" else 1), names
            # and the next launch goes through, with the next nonce, and the workers open it
            address = launch(env, rule, test_size=TEST_SIZE, portions=PORTIONS)
            wait_phase(env, address, {Phase.PARTICIPATION}, 90)
            assert_no_conflicting_transactions(env)
            return
        # then the market is on chain, and the registry finds it from MarketCreated
        [created] = wait_for(factory.markets, 30, "the killed launch's deployment")
        address = created.market
        assert created.provider.lower() == env.operator.address.lower()
        registry = env.orchestrator.registry
        wait_for(lambda: address.lower() in registry.markets(), 30, "the registry's scan")
        # and its secrets are in the vault, under the market's name or the pending one
        root = env.client(address).params().test_root
        assert root == created.test_root
        pending = vault.pending_path(root).exists()
        assert pending == (point in ("after-send", "before-promote"))
        # and the workers take over the interrupted launch's files and open the market
        wait_phase(env, address, {Phase.PARTICIPATION}, 60)
        assert not vault.pending_path(root).exists()
        secrets = vault.load(address, expected_root=root)
        market = env.client(address)
        contribute_all(
            env,
            [(address, sample(rng, rule, flip=i % 4 == 3)) for i in range(CONTRIBUTIONS)],
        )
        assert_finished_like_the_mirror(env, address)
        revealed = replay.test_set(market)
        assert set(revealed) <= set(secrets.samples)
        assert len(revealed) == TEST_SIZE - TEST_SIZE // PORTIONS
        assert_no_conflicting_transactions(env)
        # and the public metadata, written before the deployment, is the market's
        metadata = registry.metadata(address)
        assert metadata is not None and "launched_at" in metadata


@pytest.mark.timeout(120)
def test_workers_recover_a_launch_killed_before_the_vault_rename(
    stack_redis_url: str, tmp_path: Path
) -> None:
    rule = hidden_rule(random.Random(63))
    with running(stack_redis_url, tmp_path) as env:
        kill_launch_at(env, "after-send", rule, tmp_path)
        [created] = wait_for(env.orchestrator.factory.markets, 30, "the deployment")
        # the workers alone open the market (draw and public reveal): seconds when the vault
        # file is under the market's name (the before-register case above)
        wait_phase(env, created.market, {Phase.PARTICIPATION}, 45)
