"""``./run demo``: a whole market on a real dataset, through the real stack.

A fresh anvil (1 s blocks, so that the draw block and the deadlines come by themselves), the
demo's own Redis database, a Celery worker and beat. The demo deploys a factory, launches a
market on a dataset bundled with scikit-learn, and sends the agents' contributions over
time: honest agents with true labels, an adversary flipping labels and depositing more.
Everything after that (the end, the reveal, training, the reward rounds, the provider's
withdrawal) is done by the workers; the demo only watches the status cache. At the end it
checks the chain against the mirror, lets every agent withdraw, prints the balances and
writes the balances-and-accuracy figure.

    python -m market.demo [--contributions 180] [--honest 4] [--adversaries 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from web3 import Web3

from market import replay
from market import status as status_cache
from market.chain import MarketClient, connect
from market.config import Settings, load_settings
from market.encoding import decode_sample
from market.errors import MarketError
from market.launch import LaunchSpec, deploy_factory, launch_market
from market.orchestrator import Orchestrator
from market.plot import plot_market
from market.rewards import RewardResult
from market.services import ANVIL_MNEMONIC, ROOT, start_anvil
from market.simulate import (
    ETHER,
    Agent,
    MarketTrace,
    PlannedContribution,
    default_agents,
    plan_contributions,
    prepare_data,
    trace_of,
)
from market.stack import local_stack
from market.tx import TxSender
from market.types import Phase
from market.vault import generate_vault_key

Account.enable_unaudited_hdwallet_features()

DEFAULT_OUT_DIR = ROOT / "var" / "demo"
# The demo's own Redis database: a running `market stack up` uses db 0 and the tests db 13;
# sharing a broker with them would hand the demo's tasks to workers of another factory.
DEMO_REDIS_DB = 14
# A tip well above anvil's minimum, the same for every transaction: with equal fees anvil
# includes transactions in arrival order, so contribution ids follow the plan.
TIP_WEI = 10**9
# contribute() of a 30-feature sample uses ~90-150k gas; the estimate's margin covers the
# cold-slot difference between the estimate and the actual block position.
GAS_MARGIN = 1.3


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Everything a demo run depends on; the defaults are ``./run demo``'s."""

    dataset: str = "breast_cancer"
    contributions: int = 180
    honest: int = 4
    adversaries: int = 1
    adversary_stake: int = 3  # the adversary deposits this multiple of the minimum stake
    # Seed 1 splits and orders the data so the perceptron ends on a good stretch (80% test
    # accuracy); every seed shows the same gains and losses, some end on a noisier model.
    seed: int = 1
    bounty: int = ETHER
    min_stake: int = ETHER // 100
    portions: int = 10
    # Contributions sent per block: 20 keeps the participation phase around 10-15 s.
    per_block: int = 20
    block_time_s: float = 1.0
    workers: int = 1
    concurrency: int = 2
    # The whole run after launch must finish in this time, or the demo stops with an error.
    timeout_s: float = 170.0
    redis_url: str | None = None
    out_dir: Path = DEFAULT_OUT_DIR
    withdraw: bool = True


@dataclass
class DemoOutcome:
    """What a demo run measured, for the report and the tests."""

    address: str
    trace: MarketTrace
    mirror: RewardResult
    test_before: float  # accuracy on the scoring test set, initial model
    test_after: float  # ... with the trained model read from the chain
    holdout_before: float  # accuracy on held-out data no party ever saw
    holdout_after: float
    chain_matches_mirror: bool  # A_i, payouts and remainder on-chain equal the mirror's
    weights_verified: bool  # the replayed model's hash equals the chain's weightsHash()
    deposits_total: int
    payouts_total: int
    provider_remainder: int
    received: list[int] = field(default_factory=list)  # what each agent withdrew (wei)
    plot: Path | None = None
    elapsed_s: float = 0.0

    @property
    def conserved(self) -> bool:
        """bounty + deposits = payouts + provider remainder, to the wei."""
        bounty = self.trace.bounty
        return bounty + self.deposits_total == self.payouts_total + self.provider_remainder


def demo_redis_url(base: str) -> str:
    """``base`` with the demo's own database number."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{DEMO_REDIS_DB}"))


def dev_account(index: int) -> LocalAccount:
    """anvil's funded development account ``index``."""
    account: LocalAccount = Account.from_mnemonic(
        ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


def eth(wei: int | float) -> str:
    """Wei as ether with 4 decimals."""
    return f"{wei / ETHER:,.4f}"


class BatchSender:
    """Signs and sends many transactions at once (explicit nonces), then waits for them all.

    The agents' own wallets: nothing here goes through the service's nonce allocator.
    """

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self.nonces: dict[str, int] = {}
        self.chain_id = int(w3.eth.chain_id)

    def send(self, account: LocalAccount, fn: Any, value: int = 0) -> str:
        """Sign and send ``fn`` from ``account``; the transaction hash (not waited for)."""
        address = account.address
        if address not in self.nonces:
            self.nonces[address] = int(self.w3.eth.get_transaction_count(address, "pending"))
        data = fn._encode_transaction_data()
        call = {"from": address, "to": fn.address, "value": value, "data": data}
        gas = int(int(self.w3.eth.estimate_gas(call)) * GAS_MARGIN)  # type: ignore[arg-type]
        base = int(self.w3.eth.get_block("latest")["baseFeePerGas"])
        tx = {
            **call,
            "gas": gas,
            "nonce": self.nonces[address],
            "chainId": self.chain_id,
            "type": 2,
            "maxPriorityFeePerGas": TIP_WEI,
            "maxFeePerGas": 2 * base + TIP_WEI,
        }
        signed = account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.nonces[address] += 1
        return tx_hash.to_0x_hex()

    def wait(self, hashes: Sequence[str], what: str, timeout_s: float = 60.0) -> list[Any]:
        """Receipts of ``hashes``; a clear error if one reverted."""
        receipts = []
        for tx_hash in hashes:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash,  # type: ignore[arg-type]
                timeout=timeout_s,
                poll_latency=0.2,
            )
            if receipt["status"] != 1:
                raise MarketError(f"{what}: transaction {tx_hash} reverted")
            receipts.append(receipt)
        return receipts


class Demo:
    """One demo run; :meth:`run` does it all."""

    def __init__(self, config: DemoConfig, console: Console) -> None:
        self.config = config
        self.console = console
        self.agents: list[Agent] = default_agents(
            config.honest, config.adversaries, config.adversary_stake
        )
        self.operator = dev_account(0)
        self.wallets = [dev_account(1 + k) for k in range(len(self.agents))]
        self.redis_url = config.redis_url or demo_redis_url(load_settings().redis_url)

    def say(self, text: str) -> None:
        self.console.print(f"[bold cyan]==>[/] {text}")

    def run(self) -> DemoOutcome:
        """Start the stack, run the market, read the outcome, print it, draw it."""
        started = time.monotonic()
        config = self.config
        out = config.out_dir
        for stale in ("vault", "run"):
            # Fresh anvil, fresh addresses: secrets of a previous run would collide.
            shutil.rmtree(out / stale, ignore_errors=True)
        self.say(f"preparing {config.dataset}")
        data = prepare_data(config.dataset, seed=config.seed)
        plan = plan_contributions(
            data.pool,
            self.agents,
            config.contributions,
            min_stake=config.min_stake,
            seed=config.seed,
        )
        self.say(f"starting anvil ({config.block_time_s:g} s blocks)")
        node = start_anvil(block_time=config.block_time_s)
        try:
            w3 = connect(node.url)
            cache: redis.Redis = redis.Redis.from_url(self.redis_url)
            cache.flushdb()  # the demo's own database (see DEMO_REDIS_DB)
            base = Settings(
                rpc_url=node.url,
                redis_url=self.redis_url,
                vault_dir=out / "vault",
                vault_key=generate_vault_key(),
                operator_key="0x" + self.operator.key.hex(),
                reconcile_interval_s=1.0,
            )
            factory = deploy_factory(TxSender.from_settings(base, w3, self.operator, cache))
            settings = replace(base, factory_address=factory)
            self.say(f"factory {factory}; starting a Celery worker and beat")
            env = {
                "MARKET_FACTORY": factory,
                "MARKET_OPERATOR_KEY": "0x" + self.operator.key.hex(),
                "MARKET_VAULT_KEY": str(settings.vault_key),
                "MARKET_VAULT_DIR": str(settings.vault_dir),
                # One-second ticks: blocks come every second, so a slower tick only waits.
                "MARKET_RECONCILE_INTERVAL_S": "1",
                "MARKET_CONFIRMATIONS": "1",
            }
            with local_stack(
                redis_url=self.redis_url,
                rpc_url=node.url,
                workers=config.workers,
                concurrency=config.concurrency,
                env=env,
                log_dir=out / "log",
                run_dir=out / "run",
            ):
                orchestrator = Orchestrator(settings, w3=w3, cache=cache, account=self.operator)
                outcome = self._market(orchestrator, data, plan, started)
        finally:
            node.stop()
        outcome.elapsed_s = time.monotonic() - started
        self._report(outcome)
        return outcome

    # ------------------------------------------------------------------ the market

    def _market(
        self,
        orchestrator: Orchestrator,
        data: Any,
        plan: list[PlannedContribution],
        started: float,
    ) -> DemoOutcome:
        config = self.config
        spec = LaunchSpec(
            test_set=data.test,
            dim=data.spec.dim,
            bounty=config.bounty,
            min_stake=config.min_stake,
            portions=config.portions,
            allow_greater_deposits=True,  # the adversary deposits more than the minimum
            min_contributions=len(plan),
            # The market ends once every planned contribution is in (min_contributions) and
            # the earliest end passed; the latest end is only a fallback.
            earliest_end_s=5,
            latest_end_s=600,
            reveal_window_s=300,
            metadata={"name": f"demo: {data.name}", "feature_spec": data.spec.to_json()},
        )
        launched = launch_market(orchestrator, spec)
        address = launched.address
        self.say(f"market {address} launched with a bounty of {eth(config.bounty)} ETH")
        deadline = started + config.timeout_s
        self._wait(orchestrator, address, "waiting for the draw and the public reveal", deadline,
                   lambda s: s.get("phase") not in (None, "COMMITTED"))  # fmt: skip
        client = MarketClient(orchestrator.w3, address, created_block=launched.block_number)
        sender = BatchSender(orchestrator.w3)
        self._contribute(client, sender, plan)
        self._wait(orchestrator, address, "workers: end, reveal, training, rewards", deadline,
                   lambda s: bool(s.get("final")))  # fmt: skip
        outcome = self._read(client, data, orchestrator.w3)
        if config.withdraw:
            outcome.received = self._withdraw(client, sender, outcome)
        return outcome

    def _contribute(
        self, client: MarketClient, sender: BatchSender, plan: Sequence[PlannedContribution]
    ) -> None:
        with self._progress() as progress:
            task = progress.add_task("contributions", total=len(plan))
            for first in range(0, len(plan), self.config.per_block):
                batch = plan[first : first + self.config.per_block]
                hashes = [
                    sender.send(
                        self.wallets[p.agent],
                        client.contribute(p.sample.features, p.sample.label),
                        value=p.deposit,
                    )
                    for p in batch
                ]
                sender.wait(hashes, "contribute")
                progress.advance(task, len(batch))

    def _wait(
        self,
        orchestrator: Orchestrator,
        address: str,
        what: str,
        deadline: float,
        done: Callable[[dict[str, Any]], bool],
    ) -> dict[str, Any]:
        """Watch the status cache (the workers refresh it) until ``done``; a bar meanwhile."""
        with self._progress() as progress:
            task = progress.add_task(what, total=1.0)
            while True:
                status = status_cache.read_status(orchestrator.cache, address) or {}
                progress.update(
                    task, completed=_progress_of(status), description=f"{what} [{_phase(status)}]"
                )
                if done(status):
                    progress.update(task, completed=1.0)
                    return status
                if status.get("last_error"):
                    error = status["last_error"]
                    progress.console.log(f"step {error['step']} failed: {error['message']}")
                if time.monotonic() > deadline:
                    raise MarketError(
                        f"market {address} still in {_phase(status)} after "
                        f"{self.config.timeout_s:g} s; worker logs are in {self.config.out_dir}/log"
                    )
                time.sleep(0.25)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )

    # ------------------------------------------------------------------ the outcome

    def _read(self, client: MarketClient, data: Any, w3: Web3) -> DemoOutcome:
        """Everything from the chain: contributions, A_i, payouts; cross-checked by the mirror."""
        initial = replay.initial_model(client)
        owner_of = {w.address.lower(): k for k, w in enumerate(self.wallets)}
        records = client.contributions()
        chain_plan = [
            PlannedContribution(owner_of[r.contributor.lower()], decode_sample(r.sample), r.deposit)
            for r in records
        ]
        test = replay.test_set(client)
        mirror = replay.mirror(client)
        scored = chain_accuracies(client)
        payouts = [client.payout_of(r.id) for r in records]
        remainder = client.provider_remainder()
        trained = initial.copy()
        for p in chain_plan:
            trained.update(p.sample.features, p.sample.label)
        m = max(len(test), 1)
        return DemoOutcome(
            address=client.address,
            trace=trace_of(mirror, self.agents, chain_plan, scored),
            mirror=mirror,
            test_before=scored[0] / m,
            test_after=scored[-1] / m,
            holdout_before=initial.accuracy(data.holdout),
            holdout_after=trained.accuracy(data.holdout),
            chain_matches_mirror=(
                scored == list(mirror.accuracies)
                and payouts == list(mirror.payouts)
                and remainder == mirror.provider_remainder
            ),
            weights_verified=trained.weights_hash() == client.weights_hash(),
            deposits_total=sum(r.deposit for r in records),
            payouts_total=sum(payouts),
            provider_remainder=remainder,
        )

    def _withdraw(
        self, client: MarketClient, sender: BatchSender, outcome: DemoOutcome
    ) -> list[int]:
        """Every agent withdraws its payouts; what each one's balance grew by (plus fees)."""
        w3 = client.w3
        ids: dict[int, list[int]] = {}
        for r in client.contributions():
            k = next(i for i, w in enumerate(self.wallets) if w.address == r.contributor)
            if client.payout_of(r.id) > 0:
                ids.setdefault(k, []).append(r.id)
        before = {k: int(w3.eth.get_balance(self.wallets[k].address)) for k in ids}
        hashes = {k: sender.send(self.wallets[k], client.withdraw(v)) for k, v in ids.items()}
        receipts = dict(zip(hashes, sender.wait(list(hashes.values()), "withdraw"), strict=True))
        received = [0] * len(self.agents)
        for k, receipt in receipts.items():
            fee = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
            received[k] = int(w3.eth.get_balance(self.wallets[k].address)) - before[k] + fee
        return received

    def _report(self, outcome: DemoOutcome) -> None:
        trace = outcome.trace
        table = Table(title=f"market {outcome.address}")
        table.caption = "amounts in ETH; n = contributions"
        for column in ("agent", "role", "n", "deposit", "payout", "gain/loss", "%"):
            table.add_column(column, justify="left" if column in ("agent", "role") else "right")
        if outcome.received:
            table.add_column("withdrawn", justify="right")
        for k, agent in enumerate(trace.agents):
            deposit, payout, gain = trace.deposits[k], trace.payouts[k], trace.gains[k]
            colour = "green" if gain > 0 else "red" if gain < 0 else "white"
            row = [
                agent.name,
                "honest" if agent.honest else f"flips, {agent.stake_multiple}x stake",
                str(trace.owners.count(k)),
                eth(deposit),
                eth(payout),
                f"[{colour}]{gain / ETHER:+,.4f}[/]",
                f"[{colour}]{100 * gain / deposit:+.1f}%[/]" if deposit else "-",
            ]
            if outcome.received:
                row.append(eth(outcome.received[k]))
            table.add_row(*row)
        self.console.print(table)
        self.console.print(
            f"provider: bounty {eth(trace.bounty)} ETH, remainder {eth(outcome.provider_remainder)}"
            f" ETH; conservation {'exact' if outcome.conserved else 'BROKEN'} "
            f"(bounty + deposits = payouts + remainder)"
        )
        self.console.print(
            f"accuracy on the test set ({outcome.mirror.test_size} samples scored): "
            f"{100 * outcome.test_before:.1f}% -> {100 * outcome.test_after:.1f}%; "
            f"on held-out data: {100 * outcome.holdout_before:.1f}% -> "
            f"{100 * outcome.holdout_after:.1f}%"
        )
        self.console.print(
            f"chain vs mirror: {'identical' if outcome.chain_matches_mirror else 'DIFFERENT'}; "
            f"trained weights {'match' if outcome.weights_verified else 'DO NOT match'} "
            f"weightsHash(); {len(outcome.mirror.rounds)} reward rounds"
        )
        outcome.plot = plot_market(
            trace,
            self.config.out_dir / "market.png",
            title=f"{self.config.dataset}: {len(trace.owners)} contributions, "
            f"{self.config.honest} honest agents, {self.config.adversaries} adversary",
        )
        self.console.print(f"plot: {outcome.plot}")
        self.console.print(f"done in {outcome.elapsed_s:.1f} s")


def chain_accuracies(client: MarketClient) -> list[int]:
    """``A_0 .. A_K`` from the ``ContributionsScored`` events."""
    events = sorted(client.scored())
    if not events:
        return []
    accuracies = [events[0][1]]
    for _, _, values in events:
        accuracies.extend(values)
    return accuracies


def _phase(status: dict[str, Any]) -> str:
    return str(status.get("phase") or "waiting")


def _progress_of(status: dict[str, Any]) -> float:
    """0..1 across the workers' part: the reveal is the first 30%, rewards the rest."""
    phase = status.get("phase")
    if phase in (None, Phase.COMMITTED.name, Phase.PARTICIPATION.name):
        return 0.0
    if status.get("final"):
        return 1.0
    reveal = float(status.get("reveal_progress", 0.0))
    reward = float(status.get("reward", {}).get("progress", 0.0))
    return 0.3 * reveal + 0.7 * reward


def run_demo(config: DemoConfig | None = None, console: Console | None = None) -> DemoOutcome:
    """Run the demo with ``config``; the measured outcome."""
    return Demo(config or DemoConfig(), console or Console()).run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m market.demo``: the command line of the demo."""
    parser = argparse.ArgumentParser(prog="python -m market.demo", description=__doc__)
    defaults = DemoConfig()
    parser.add_argument("--dataset", default=defaults.dataset, help="breast_cancer or digits_odd")
    parser.add_argument("--contributions", type=int, default=defaults.contributions)
    parser.add_argument("--honest", type=int, default=defaults.honest)
    parser.add_argument("--adversaries", type=int, default=defaults.adversaries)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=defaults.out_dir, help="output directory")
    args = parser.parse_args(argv)
    console = Console()
    try:
        run_demo(
            DemoConfig(
                dataset=args.dataset,
                contributions=args.contributions,
                honest=args.honest,
                adversaries=args.adversaries,
                seed=args.seed,
                out_dir=args.out,
            ),
            console,
        )
    except (MarketError, ValueError, RuntimeError, OSError, redis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["DemoConfig", "DemoOutcome", "chain_accuracies", "demo_redis_url", "main", "run_demo"]
