"""The installed ``market`` console script, run as a subprocess against the session anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.chain import FactoryClient, MarketClient
from market.config import Settings
from market.datasets import load_builtin
from market.launch import deploy_factory
from market.orchestrator import Orchestrator
from market.tx import TxSender
from market.types import Phase
from market.vault import generate_vault_key
from tests.contracts.chaintools import increase_time, mine

MARKET = Path(sys.executable).parent / "market"
KEY_VAR = "CLI_TEST_PARTICIPANT_KEY"


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``market ARGS``; check the exit status is 0 (``ok``) or 1 with one line on stderr."""
    proc = subprocess.run(
        [str(MARKET), *args], env=env, capture_output=True, text=True, timeout=120
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture
def provider(
    w3: Web3, accounts: list[LocalAccount], redis_url: str, tmp_path: Path, snapshot: None
) -> tuple[Orchestrator, dict[str, str]]:
    """A factory on the session anvil, the provider's orchestrator and the CLI's environment."""
    # Not account 0: other test sessions on this machine use it, and the operator's nonce
    # counter lives in the shared test Redis under the chain id and address.
    operator = accounts[7]
    base = Settings(
        rpc_url=w3.provider.endpoint_uri,  # type: ignore[attr-defined]
        redis_url=redis_url,
        vault_dir=tmp_path / "vault",
        vault_key=generate_vault_key(),
        operator_key=operator.key.hex(),
    )
    cache = redis.Redis.from_url(redis_url)
    factory = deploy_factory(TxSender.from_settings(base, w3, operator, cache))
    settings = replace(base, factory_address=factory)
    env = {
        **os.environ,
        "MARKET_RPC_URL": settings.rpc_url,
        "MARKET_REDIS_URL": redis_url,
        "MARKET_FACTORY": factory,
        "MARKET_OPERATOR_KEY": "0x" + operator.key.hex(),
        "MARKET_VAULT_KEY": str(settings.vault_key),
        "MARKET_VAULT_DIR": str(settings.vault_dir),
        KEY_VAR: "0x" + accounts[8].key.hex(),
    }
    return Orchestrator(settings, w3=w3, cache=cache, account=operator), env


def drive(w3: Web3, orch: Orchestrator, address: str, until: Phase, *, wait_s: int = 0) -> None:
    """What the workers do: reconcile and advance, moving time, until the market is in ``until``."""
    client = MarketClient(w3, address)
    for _ in range(60):
        if client.phase() == until and not orch.reconcile():
            return
        for due in orch.reconcile():
            orch.advance(due)
        if client.phase() == until:
            continue
        if client.phase() == Phase.PARTICIPATION and wait_s:
            increase_time(w3, wait_s)
        else:
            mine(w3)
    raise AssertionError(f"market stuck in {client.phase().name}")


def write_rows(path: Path, start: int, count: int, *, labelled: bool) -> None:
    data = load_builtin("breast_cancer")
    assert data.numeric is not None
    header = [*data.columns, "label"] if labelled else list(data.columns)
    lines = [",".join(header)]
    for i in range(start, start + count):
        values = [repr(float(v)) for v in data.numeric[i]]
        lines.append(",".join(values + ([str(int(data.labels[i]))] if labelled else [])))
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.timeout(240)
def test_provider_and_participant_walkthrough(
    w3: Web3,
    accounts: list[LocalAccount],
    provider: tuple[Orchestrator, dict[str, str]],
    tmp_path: Path,
) -> None:
    orch, env = provider
    participant = accounts[8].address
    spec_file = tmp_path / "spec.json"
    # given a market launched from the command line on 60 rows of a bundled dataset
    launched = run(
        env, "launch", "--builtin", "breast_cancer", "--rows", "60", "--bounty", "1eth",
        "--stake", "0.01eth", "--earliest-end", "60", "--latest-end", "600",
        "--reveal-window", "600", "--name", "cli test", "--spec-out", str(spec_file),
    )  # fmt: skip
    address = launched.stdout.split()[1]
    assert Web3.is_address(address)
    assert json.loads(spec_file.read_text())["encoder"] == "binned_numeric"
    listing = json.loads(run(env, "status", "--json").stdout)
    assert [row["market"].lower() for row in listing] == [address.lower()]
    drive(w3, orch, address, Phase.PARTICIPATION)
    view = json.loads(run(env, "status", address, "--json").stdout)
    assert view["phase"] == "PARTICIPATION" and view["contributions"] == 0
    assert "PARTICIPATION" in run(env, "status", address).stdout

    # when a participant contributes one sample by indices and three rows from a CSV
    first = run(env, "contribute", address, "--features", "0,9,17", "--label", "1",
                "--key-env", KEY_VAR)  # fmt: skip
    assert accounts[8].key.hex() not in first.stdout + first.stderr
    rows = tmp_path / "rows.csv"
    write_rows(rows, 100, 3, labelled=True)
    run(env, "contribute", address, "--csv", str(rows), "--key-env", KEY_VAR)
    client = MarketClient(w3, address)
    assert client.contribution_stats() == (4, 4 * 10**16)
    assert all(r.contributor == participant for r in client.contributions())
    assert json.loads(run(env, "rewards", address, participant, "--json").stdout)["state"] == "open"

    # then predictions replay those contributions locally, by indices or from unlabelled rows
    unlabelled = tmp_path / "predict.csv"
    write_rows(unlabelled, 200, 2, labelled=False)
    predicted = run(env, "predict", address, "--csv", str(unlabelled)).stdout.splitlines()
    assert len(predicted) == 2 and all(line.split("\t")[0] in ("0", "1") for line in predicted)
    single = run(env, "predict", address, "--features", "0,9,17").stdout.split("\t")
    assert single[0] == "1" and int(single[1]) > 0  # it learned the one sample it was given

    # when the market runs to the end, the participant sees a claimable payout and withdraws it
    drive(w3, orch, address, Phase.COLLECT, wait_s=120)
    claim = json.loads(run(env, "rewards", address, participant, "--json").stdout)
    assert claim["state"] == "claimable"
    payouts = sum(int(c["payout"]) for c in claim["contributions"])
    assert claim["claimable"] == payouts == claim["projected_payout"]
    before = w3.eth.get_balance(participant)
    withdrawn = run(env, "withdraw", address, "--key-env", KEY_VAR)
    paid = sum(1 for c in claim["contributions"] if int(c["payout"]) > 0)
    assert f"withdrew {paid} contribution(s)" in withdrawn.stdout
    assert w3.eth.get_balance(participant) > before
    assert json.loads(run(env, "rewards", address, participant, "--json").stdout)["state"] == (
        "withdrawn"
    )
    # and the model is now checked against the trained weightsHash() before predicting
    assert run(env, "predict", address, "--features", "0,9,17").stdout.startswith("1\t")

    # errors: one line on stderr, exit 1
    again = run(env, "withdraw", address, "--key-env", KEY_VAR, ok=False)
    assert "nothing to withdraw" in again.stderr
    late = run(env, "contribute", address, "--features", "1,2", "--label", "0",
               "--key-env", KEY_VAR, ok=False)  # fmt: skip
    assert "COLLECT" in late.stderr


def test_errors_are_one_line(
    w3: Web3,
    accounts: list[LocalAccount],
    provider: tuple[Orchestrator, dict[str, str]],
    tmp_path: Path,
) -> None:
    orch, env = provider
    launched = run(env, "launch", "--builtin", "breast_cancer", "--rows", "40")
    address = launched.stdout.split()[1]
    drive(w3, orch, address, Phase.PARTICIPATION)
    cases = {
        "strictly increasing": ["contribute", address, "--features", "9,3", "--label", "1",
                                "--key-env", KEY_VAR],
        "label 2": ["contribute", address, "--features", "3", "--label", "2", "--key-env", KEY_VAR],
        "not set": ["contribute", address, "--features", "3", "--label", "1",
                    "--key-env", "CLI_TEST_UNSET_VARIABLE"],
        "below the minimum stake": ["contribute", address, "--features", "3", "--label", "1",
                                    "--deposit", "5wei", "--key-env", KEY_VAR],
        "withdrawals open in COLLECT": ["withdraw", address, "--key-env", KEY_VAR],
        "no contract": ["status", accounts[5].address],
        "not an address": ["rewards", address, "nobody"],
        "not an amount": ["launch", "--builtin", "breast_cancer", "--bounty", "lots"],
        "unknown built-in": ["launch", "--builtin", "iris"],
    }  # fmt: skip
    for expected, args in cases.items():
        proc = run(env, *args, ok=False)
        assert expected in proc.stderr, (args, proc.stderr)
    # a participant without the service's metadata must pass the spec
    rows = tmp_path / "rows.csv"
    write_rows(rows, 0, 1, labelled=False)
    alone = {**env, "MARKET_VAULT_DIR": str(tmp_path / "elsewhere"), "MARKET_FACTORY": ""}
    proc = run(alone, "predict", address, "--csv", str(rows), ok=False)
    assert "--spec FILE" in proc.stderr
    # a bad key is refused without echoing it
    secret = "0x" + "zz" * 32
    proc = run({**env, KEY_VAR: secret}, "contribute", address, "--features", "3", "--label", "1",
               "--key-env", KEY_VAR, ok=False)  # fmt: skip
    assert "valid private key" in proc.stderr and secret not in proc.stderr
    # an unreachable node is one line too
    down = run({**env, "MARKET_RPC_URL": "http://127.0.0.1:9"}, "status", address, ok=False)
    assert "127.0.0.1:9" in down.stderr


def test_simulate_prints_the_table_and_writes_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "sim.png"
    proc = run(dict(os.environ), "simulate", "--contributions", "60", "--honest", "3",
               "--plot", str(plot))  # fmt: skip
    assert "adversary-1" in proc.stdout and "honest-3" in proc.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(120)
def test_deploy_factory_prints_a_working_factory(
    w3: Web3, accounts: list[LocalAccount], snapshot: None
) -> None:
    env = {
        **os.environ,
        "MARKET_RPC_URL": w3.provider.endpoint_uri,  # type: ignore[attr-defined]
        "MARKET_OPERATOR_KEY": "0x" + accounts[9].key.hex(),
    }
    address = run(env, "deploy-factory").stdout.strip()
    factory = FactoryClient(w3, address)
    assert Web3.is_address(factory.implementation())
    assert w3.eth.get_code(factory.implementation())
    run({**env, "MARKET_OPERATOR_KEY": "0x1234"}, "deploy-factory", ok=False)
