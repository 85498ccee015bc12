"""The ``market`` command line: providers launch, participants contribute and withdraw, anyone
reads status, rewards and predictions from the chain.

Settings come from the ``MARKET_*`` environment variables (:mod:`market.config`). A
participant's key never leaves the process and is never printed: ``--key-env NAME`` reads
it from an environment variable, ``--keystore FILE`` decrypts an Ethereum keystore file.
Expected failures (bad input, a revert, an unreachable node) end with one line on stderr
and exit status 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from web3 import Web3
from web3.exceptions import Web3Exception

from market import replay
from market.chain import FactoryClient, MarketClient, connect
from market.config import Settings, load_settings
from market.datasets import BUILTIN_NAMES, Dataset, DatasetKind, load_builtin, load_dataset
from market.encoding import decode_sample, validate_sample
from market.errors import InvalidInput, InvalidParams, MarketError
from market.features import (
    DEFAULT_N_BINS,
    BinnedNumericEncoder,
    Encoder,
    FeatureSpec,
    HashedTextEncoder,
    PrecomputedSparseEncoder,
)
from market.model import Perceptron
from market.nonces import LocalNonces
from market.rewards import Contribution, compute_rewards
from market.steps import revealed_test_set
from market.tx import TxSender, TxSettings, TxStats, pending_count
from market.types import Address, Phase, Sample, Wei

ETHER = 10**18
UNITS = {"wei": 1, "gwei": 10**9, "eth": ETHER, "ether": ETHER}
# Ids per withdraw transaction: each id costs a few thousand gas; 200 stay far below the cap.
WITHDRAW_CHUNK = 200

# soft_wrap: hashes and addresses stay on one line whatever the terminal width.
out = Console(soft_wrap=True)
err = Console(stderr=True)


class MarketApp(typer.Typer):
    """Typer with the project's error policy: expected failures are one line, exit 1."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (MarketError, ValueError, LookupError, OSError, redis.RedisError) as exc:
            fail(exc)
        except Web3Exception as exc:
            fail(exc)


def fail(exc: BaseException | str) -> None:
    """Print ``error: …`` on one line of stderr and exit 1."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


app = MarketApp(
    name="market",
    help="Prediction markets for machine-learning data on an Ethereum chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local stack: anvil, Redis, Celery worker and beat, API.")
app.add_typer(stack_app, name="stack")


# ----------------------------------------------------------------------------- helpers


def parse_wei(text: str) -> int:
    """``"10000"``, ``"5 gwei"``, ``"0.01eth"`` → wei; refuses fractions of a wei."""
    raw = text.strip().lower().replace("_", "")
    unit = next((u for u in sorted(UNITS, key=len, reverse=True) if raw.endswith(u)), "wei")
    number = raw[: len(raw) - len(unit)].strip() if raw.endswith(unit) else raw
    try:
        value = Decimal(number) * UNITS[unit]
    except InvalidOperation:
        raise InvalidInput(
            "amount", f"{text!r} is not an amount (e.g. 10000, 5gwei, 0.01eth)"
        ) from None
    if value != value.to_integral_value() or value < 0:
        raise InvalidInput("amount", f"{text!r} is not a whole, non-negative number of wei")
    return int(value)


def parse_features(text: str) -> tuple[int, ...]:
    """``"1,5,9"`` → ``(1, 5, 9)``."""
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise InvalidInput(
            "features", f"{text!r} is not a comma-separated list of indices"
        ) from None


def eth(wei: int) -> str:
    return f"{wei / ETHER:,.6f} ETH"


def settings() -> Settings:
    return load_settings()


def web3(config: Settings) -> Web3:
    w3 = connect(config.rpc_url)
    if not w3.is_connected():
        raise MarketError(f"no Ethereum node answers at MARKET_RPC_URL={config.rpc_url}")
    return w3


def market_client(w3: Web3, address: str) -> MarketClient:
    if not Web3.is_address(address):
        raise InvalidInput("market", f"{address!r} is not an address")
    if not w3.eth.get_code(Web3.to_checksum_address(address)):
        raise InvalidInput("market", f"no contract at {address} on this chain")
    return MarketClient(w3, address)


def load_account(
    key_env: str | None, keystore: Path | None, password_env: str | None
) -> LocalAccount:
    """The participant's account: a key from an environment variable, or a keystore file."""
    if (key_env is None) == (keystore is None):
        raise InvalidInput("key", "give exactly one of --key-env NAME or --keystore FILE")
    if key_env is not None:
        key = os.environ.get(key_env)
        if not key:
            raise InvalidInput("key", f"environment variable {key_env} is not set")
        try:
            account: LocalAccount = Account.from_key(key.strip())
        except (ValueError, TypeError):
            # The message must not echo the key.
            raise InvalidInput("key", f"{key_env} does not hold a valid private key") from None
        return account
    assert keystore is not None
    document = json.loads(keystore.read_text())
    password = os.environ.get(password_env) if password_env else None
    if password is None:
        password = typer.prompt(f"password for {keystore}", hide_input=True)
    try:
        decrypted = Account.decrypt(document, password)
    except ValueError:
        raise InvalidInput("keystore", f"wrong password or damaged keystore {keystore}") from None
    account = Account.from_key(decrypted)
    return account


def sender_for(config: Settings, w3: Web3, account: LocalAccount) -> TxSender:
    """A participant's sender: nonces from the node, no Redis."""
    return TxSender(
        w3,
        account,
        nonces=LocalNonces(pending_count(w3)),
        settings=TxSettings(
            gas_cap=config.tx_gas_cap,
            confirmations=config.confirmations,
            receipt_timeout_s=config.receipt_timeout_s,
        ),
        stats=TxStats(),
    )


def feature_spec(config: Settings, address: str, spec_file: Path | None) -> FeatureSpec:
    """The market's feature spec: ``--spec FILE``, else the metadata the service stored."""
    if spec_file is not None:
        return FeatureSpec.from_json(spec_file.read_text())
    path = config.vault_dir / f"{Web3.to_checksum_address(address)}.meta.json"
    metadata: dict[str, Any] | None = None
    if path.exists():
        metadata = json.loads(path.read_text())
    elif config.factory_address is not None:
        from market.registry import Registry

        cache: redis.Redis = redis.Redis.from_url(config.redis_url)
        factory = FactoryClient(web3(config), config.factory_address)
        metadata = Registry(cache, factory, config.vault_dir).metadata(address)
    if not metadata or "feature_spec" not in metadata:
        raise InvalidInput("spec", f"no feature spec known for {address}: pass --spec FILE")
    raw = metadata["feature_spec"]
    return FeatureSpec.from_json(raw if isinstance(raw, str) else json.dumps(raw))


def csv_rows(path: Path, spec: FeatureSpec, *, labelled: bool) -> list[Sample]:
    """Rows of a CSV/JSONL/NPZ file encoded with the market's spec (labels 0 when unlabelled)."""
    kind: DatasetKind = spec.kind
    if not labelled:
        # Prediction input has no labels: give every row a 0 label column for the loader.
        text = path.read_text().splitlines()
        if not text:
            raise InvalidInput("csv", f"{path} is empty")
        body = "\n".join([text[0] + ",label", *(line + ",0" for line in text[1:] if line)])
        dataset = load_dataset(body.encode(), "csv", kind=kind)
    else:
        dataset = load_dataset(path, kind=kind)
    rows = spec.encoder.rows_of(dataset)
    features = spec.features(rows)
    return [Sample(f, int(y)) for f, y in zip(features, dataset.labels, strict=True)]


def model_from_chain(client: MarketClient) -> tuple[Perceptron, bool]:
    """The market's current model: initial weights plus every contribution replayed.

    Returns ``(model, verified)``: ``verified`` when the replay reached a point the chain
    holds the hash of (``weightsHash()`` covers the contributions trained so far).
    """
    model = replay.initial_model(client)
    samples = [c.sample for c in replay.contributions(client)]
    trained = client.reward_status().trained if client.phase() >= Phase.REWARD else 0
    for sample in samples[:trained]:
        model.update(sample.features, sample.label)
    if model.weights_hash() != client.weights_hash():
        raise MarketError(
            f"the replayed model differs from the chain's weightsHash() after {trained} "
            "contributions"
        )
    for sample in samples[trained:]:
        model.update(sample.features, sample.label)
    return model, True


def progress() -> Progress:
    return Progress(console=err, transient=True)


@app.callback()
def main() -> None:
    """Prediction markets for machine-learning data (settings: MARKET_* environment)."""


# ----------------------------------------------------------------------------- provider


def _encoder(
    name: str, dataset: Dataset, *, bins: int, dim: int | None, max_features: int
) -> Encoder:
    if name == "binned_numeric":
        return BinnedNumericEncoder.fit(dataset, bins, max_features=max_features)
    if name == "hashed_text":
        return HashedTextEncoder(dim=dim or 4096, max_features=max_features)
    if name == "precomputed_sparse":
        if dim is None:
            raise InvalidInput("dim", "precomputed_sparse needs --dim")
        return PrecomputedSparseEncoder(dim=dim, max_features=max_features)
    raise InvalidInput(
        "encoder", f"{name!r}: use binned_numeric, hashed_text or precomputed_sparse"
    )


@app.command()
def launch(
    test_set: Annotated[
        str | None, typer.Argument(help="the secret test set: a CSV, JSONL or NPZ file")
    ] = None,
    builtin: Annotated[
        str | None, typer.Option(help=f"a bundled dataset instead: {', '.join(BUILTIN_NAMES)}")
    ] = None,
    rows: Annotated[int | None, typer.Option(help="use only the first ROWS rows")] = None,
    kind: Annotated[str, typer.Option(help="numeric, text or sparse")] = "numeric",
    label_column: Annotated[str, typer.Option()] = "label",
    encoder: Annotated[
        str, typer.Option(help="binned_numeric, hashed_text or precomputed_sparse")
    ] = "binned_numeric",
    bins: Annotated[int, typer.Option(help="bins per numeric column")] = DEFAULT_N_BINS,
    dim: Annotated[int | None, typer.Option(help="model size (text and sparse encoders)")] = None,
    max_features: Annotated[int, typer.Option()] = 256,
    bounty: Annotated[str, typer.Option(help="e.g. 1eth")] = "1eth",
    stake: Annotated[
        str, typer.Option(help="minimum deposit per sample, e.g. 0.01eth")
    ] = "0.01eth",
    portions: Annotated[int, typer.Option()] = 10,
    min_contributions: Annotated[int, typer.Option()] = 0,
    earliest_end: Annotated[int, typer.Option(help="seconds from now")] = 3600,
    latest_end: Annotated[int, typer.Option(help="seconds from now")] = 7200,
    reveal_window: Annotated[int, typer.Option(help="seconds after the end")] = 3600,
    allow_greater_deposits: Annotated[bool, typer.Option()] = False,
    name: Annotated[str, typer.Option(help="a public name for the market")] = "",
    spec_out: Annotated[
        Path | None, typer.Option(help="also write the feature spec participants need here")
    ] = None,
) -> None:
    """Launch a market: commit to a test set, stake the bounty, let the workers drive it."""
    from market.launch import LaunchSpec, launch_market
    from market.orchestrator import Orchestrator

    if (test_set is None) == (builtin is None):
        raise InvalidInput("test_set", "give a test-set file or --builtin NAME, not both")
    if kind not in ("numeric", "text", "sparse"):
        raise InvalidInput("kind", f"{kind!r}: use numeric, text or sparse")
    if builtin is not None:
        dataset = load_builtin(builtin)
    else:
        assert test_set is not None
        dataset = load_dataset(Path(test_set), kind=kind, label_column=label_column)  # type: ignore[arg-type]
    if rows is not None:
        dataset = dataset.subset(list(range(min(rows, len(dataset)))))
    spec = FeatureSpec(_encoder(encoder, dataset, bins=bins, dim=dim, max_features=max_features))
    samples = spec.encode(dataset)
    config = settings()
    orchestrator = Orchestrator(config, w3=web3(config))
    launch_spec = LaunchSpec(
        test_set=samples,
        dim=spec.dim,
        bounty=parse_wei(bounty),
        min_stake=parse_wei(stake),
        portions=portions,
        max_features=max(len(s.features) for s in samples) if samples else None,
        allow_greater_deposits=allow_greater_deposits,
        min_contributions=min_contributions,
        earliest_end_s=earliest_end,
        latest_end_s=latest_end,
        reveal_window_s=reveal_window,
        metadata={"name": name, "feature_spec": spec.to_json()},
    )
    with progress() as bar:
        bar.add_task("committing and deploying", total=None)
        result = launch_market(orchestrator, launch_spec)
    if spec_out is not None:
        spec_out.write_text(spec.to_json())
    out.print(f"market  {result.address}")
    out.print(f"root    0x{result.test_root.hex()}")
    out.print(f"tx      {result.tx_hash} (block {result.block_number})")
    out.print(f"samples {len(samples)}, dim {spec.dim}, spec {spec.fingerprint()[:16]}")


# ----------------------------------------------------------------------------- anyone


@app.command()
def status(
    market: Annotated[
        str | None, typer.Argument(help="a market address; all markets if absent")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """A market's phase, deadlines and progress (or every market of MARKET_FACTORY)."""
    config = settings()
    w3 = web3(config)
    if market is None:
        if config.factory_address is None:
            raise InvalidInput("market", "give a market address or set MARKET_FACTORY")
        rows: list[dict[str, Any]] = []
        for created in FactoryClient(w3, config.factory_address).markets():
            client = MarketClient(w3, created.market, created_block=created.block_number)
            count, deposits = client.contribution_stats()
            rows.append(
                {
                    "market": created.market,
                    "phase": client.phase().name,
                    "contributions": count,
                    "bounty": created.bounty,
                    "deposits": deposits,
                }
            )
        if as_json:
            print(json.dumps(rows))
            return
        table = Table("market", "phase", "contributions", "bounty", "deposits")
        for row in rows:
            table.add_row(
                str(row["market"]),
                str(row["phase"]),
                str(row["contributions"]),
                eth(int(row["bounty"])),
                eth(int(row["deposits"])),
            )
        out.print(table)
        return
    client = market_client(w3, market)
    from market.status import refresh

    # The same view the API serves, read from the chain into a throwaway dict.
    view = _chain_status(client, refresh)
    if as_json:
        print(json.dumps(view, sort_keys=True))
        return
    table = Table(show_header=False, title=f"market {client.address}")
    for key in (
        "phase", "provider", "bounty", "contributions", "deposits", "earliest_end",
        "latest_end", "ended_at", "reveal_deadline", "revealed", "test_count", "reward",
        "provider_remainder",
    ):  # fmt: skip
        table.add_row(key, str(view.get(key)))
    params = view["params"]
    table.add_row("dim / max features", f"{params['dim']} / {params['max_features']}")
    table.add_row("min stake", eth(int(params["min_stake"])))
    out.print(table)


def _chain_status(client: MarketClient, refresh: Any) -> dict[str, Any]:
    """Status fields read from the chain, without touching any Redis."""

    class _Memory:
        """Just enough of a Redis client for :func:`market.status.refresh`."""

        def __init__(self) -> None:
            self.data: dict[str, bytes] = {}

        def get(self, key: str) -> bytes | None:
            return self.data.get(key)

        def set(self, key: str, value: str) -> None:
            self.data[key] = value.encode()

    status: dict[str, Any] = refresh(_Memory(), client)
    for key in ("transactions", "last_error", "updated_at"):
        status.pop(key, None)
    return status


@app.command()
def rewards(
    market: Annotated[str, typer.Argument(help="market address")],
    account: Annotated[str, typer.Argument(help="the participant's address")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """An account's contributions, its projected or final payout, and what it can withdraw."""
    if not Web3.is_address(account):
        raise InvalidInput("account", f"{account!r} is not an address")
    config = settings()
    client = market_client(web3(config), market)
    phase = client.phase()
    mine = [r for r in client.contributions() if r.contributor.lower() == account.lower()]
    projected: int | None = None
    if phase in (Phase.REWARD, Phase.COLLECT) and mine:
        init = client.initialized()
        params = init["params"]
        result = compute_rewards(
            model=Perceptron.from_weights_bytes(
                init["initial_weights"],
                intercept=params.intercept,
                learning_rate=params.learning_rate,
                dim=params.dim,
            ),
            test=revealed_test_set(client.revealed_batches()),
            contributions=[
                Contribution(Address(r.contributor), Wei(r.deposit), decode_sample(r.sample))
                for r in client.contributions()
            ],
            bounty=int(init["bounty"]),
            min_stake=params.min_stake,
        )
        projected = sum(result.payouts[r.id - 1] for r in mine)
    items = []
    for r in mine:
        amount: int | None = None
        if phase == Phase.COLLECT:
            amount = client.payout_of(r.id)
        elif phase == Phase.CANCELLED:
            amount = client.refund_of(r.id)
        final = phase in (Phase.COLLECT, Phase.CANCELLED)
        items.append(
            {
                "id": r.id,
                "deposit": r.deposit,
                "payout": amount,
                "withdrawn": client.withdrawn(r.id) if final else False,
            }
        )
    if not mine:
        state = "unknown"
    elif phase in (Phase.COMMITTED, Phase.PARTICIPATION):
        state = "open"
    elif phase in (Phase.REVEAL, Phase.REWARD):
        state = "computing"
    elif all(i["withdrawn"] or not i["payout"] for i in items):
        state = "withdrawn"
    else:
        state = "refundable" if phase == Phase.CANCELLED else "claimable"
    claimable = sum(int(i["payout"] or 0) for i in items if not i["withdrawn"])
    deposited = sum(r.deposit for r in mine)
    view = {
        "market": client.address,
        "account": Web3.to_checksum_address(account),
        "phase": phase.name,
        "state": state,
        "deposited": deposited,
        "projected_payout": projected,
        "claimable": claimable if state in ("claimable", "refundable") else 0,
        "contributions": items,
    }
    if as_json:
        print(json.dumps(view))
        return
    out.print(f"{view['account']} in {client.address}: {state} ({phase.name})")
    out.print(f"contributions {len(mine)}, deposited {eth(deposited)}")
    if projected is not None:
        out.print(f"projected payout {eth(projected)} ({eth(projected - deposited)} gain)")
    if state in ("claimable", "refundable"):
        out.print(f"claimable now {eth(claimable)}: run `market withdraw {client.address}`")


@app.command()
def predict(
    market: Annotated[str, typer.Argument(help="market address")],
    features: Annotated[str | None, typer.Option(help="feature indices, e.g. 1,5,9")] = None,
    csv: Annotated[Path | None, typer.Option(help="unlabelled rows to encode with --spec")] = None,
    spec: Annotated[Path | None, typer.Option(help="the market's feature spec JSON")] = None,
) -> None:
    """Predict locally with the market's model read from the chain (no transaction)."""
    if (features is None) == (csv is None):
        raise InvalidInput("features", "give --features 1,5,9 or --csv FILE")
    config = settings()
    client = market_client(web3(config), market)
    model, _ = model_from_chain(client)
    if features is not None:
        rows = [parse_features(features)]
    else:
        assert csv is not None
        rows = [
            s.features for s in csv_rows(csv, feature_spec(config, market, spec), labelled=False)
        ]
    for row in rows:
        validate_sample(Sample(row, 0), model.dim, model.dim)
        print(f"{model.predict(row)}\t{model.score(row)}")


# ----------------------------------------------------------------------------- participant


KeyEnv = Annotated[str | None, typer.Option(help="environment variable holding your private key")]
Keystore = Annotated[Path | None, typer.Option(help="an Ethereum keystore (JSON) file")]
PasswordEnv = Annotated[
    str | None, typer.Option(help="environment variable holding the keystore password")
]


@app.command()
def contribute(
    market: Annotated[str, typer.Argument(help="market address")],
    features: Annotated[str | None, typer.Option(help="feature indices, e.g. 1,5,9")] = None,
    label: Annotated[int | None, typer.Option(help="0 or 1")] = None,
    csv: Annotated[Path | None, typer.Option(help="labelled rows, encoded with the spec")] = None,
    spec: Annotated[Path | None, typer.Option(help="the market's feature spec JSON")] = None,
    deposit: Annotated[
        str | None, typer.Option(help="per sample; default: the minimum stake")
    ] = None,
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    password_env: PasswordEnv = None,
) -> None:
    """Submit labelled samples with a deposit, signed with your own key."""
    account = load_account(key_env, keystore, password_env)
    config = settings()
    w3 = web3(config)
    client = market_client(w3, market)
    if features is not None:
        if label is None:
            raise InvalidInput("label", "--features needs --label 0 or 1")
        samples = [Sample(parse_features(features), label)]
    elif csv is not None:
        samples = csv_rows(csv, feature_spec(config, market, spec), labelled=True)
    else:
        raise InvalidInput("features", "give --features 1,5,9 --label 1, or --csv FILE")
    params = client.params()
    for k, sample in enumerate(samples):
        try:
            validate_sample(sample, params.dim, params.max_features)
        except InvalidInput as exc:
            where = f" (row {k})" if len(samples) > 1 else ""
            raise InvalidInput(exc.field, f"{exc.detail}{where}") from None
    value = params.min_stake if deposit is None else parse_wei(deposit)
    if value < params.min_stake:
        raise InvalidParams("deposit", f"{value} wei is below the minimum stake {params.min_stake}")
    phase = client.phase()
    if phase != Phase.PARTICIPATION:
        raise InvalidInput(
            "market", f"is in {phase.name}; contributions are taken in PARTICIPATION"
        )
    sender = sender_for(config, w3, account)
    with progress() as bar:
        task = bar.add_task("contributing", total=len(samples))
        for sample in samples:
            result = sender.transact(client.contribute(sample.features, sample.label), value=value)
            bar.advance(task)
            out.print(f"contributed {sample.features} label {sample.label}: {result.tx_hash}")
    out.print(f"{len(samples)} sample(s) from {account.address}, {eth(value)} each")


@app.command()
def withdraw(
    market: Annotated[str, typer.Argument(help="market address")],
    key_env: KeyEnv = None,
    keystore: Keystore = None,
    password_env: PasswordEnv = None,
) -> None:
    """Withdraw your payouts (or refunds of a cancelled market)."""
    account = load_account(key_env, keystore, password_env)
    config = settings()
    w3 = web3(config)
    client = market_client(w3, market)
    phase = client.phase()
    if phase not in (Phase.COLLECT, Phase.CANCELLED):
        raise InvalidInput("market", f"is in {phase.name}; withdrawals open in COLLECT")
    amount_of = client.payout_of if phase == Phase.COLLECT else client.refund_of
    pending = [
        (r.id, amount_of(r.id))
        for r in client.contributions()
        if r.contributor.lower() == account.address.lower() and not client.withdrawn(r.id)
    ]
    pending = [(i, a) for i, a in pending if a > 0]
    if not pending:
        raise InvalidInput("account", f"{account.address} has nothing to withdraw here")
    sender = sender_for(config, w3, account)
    for chunk in _chunks([i for i, _ in pending], WITHDRAW_CHUNK):
        result = sender.transact(client.withdraw(chunk))
        out.print(f"withdrew {len(chunk)} contribution(s): {result.tx_hash}")
    out.print(f"total {eth(sum(a for _, a in pending))} to {account.address}")


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# ----------------------------------------------------------------------------- off-chain


@app.command()
def simulate(
    dataset: Annotated[str, typer.Option(help="breast_cancer or digits_odd")] = "breast_cancer",
    contributions: Annotated[int, typer.Option()] = 180,
    honest: Annotated[int, typer.Option()] = 4,
    adversaries: Annotated[int, typer.Option()] = 1,
    adversary_stake: Annotated[int, typer.Option(help="adversary deposit / min stake")] = 3,
    seed: Annotated[int, typer.Option()] = 1,
    plot: Annotated[Path, typer.Option(help="where to write the PNG")] = Path(
        "var/simulate/market.png"
    ),
) -> None:
    """The blog's simulation off-chain, with the exact reward mirror: table and plot."""
    from market import simulate as sim
    from market.plot import plot_market

    agents = sim.default_agents(honest, adversaries, adversary_stake)
    with progress() as bar:
        bar.add_task("simulating", total=None)
        result = sim.simulate(
            dataset=dataset, contributions=contributions, agents=agents, seed=seed
        )
    trace = result.trace
    table = Table("agent", "role", "n", "deposit", "payout", "gain/loss", caption="amounts in ETH")
    for k, agent in enumerate(trace.agents):
        gain = trace.gains[k]
        colour = "green" if gain > 0 else "red" if gain < 0 else "white"
        table.add_row(
            agent.name,
            "honest" if agent.honest else f"flips, {agent.stake_multiple}x stake",
            str(trace.owners.count(k)),
            f"{trace.deposits[k] / ETHER:.4f}",
            f"{trace.payouts[k] / ETHER:.4f}",
            f"[{colour}]{gain / ETHER:+.4f}[/]",
        )
    out.print(table)
    out.print(
        f"test accuracy {100 * trace.accuracies[0]:.1f}% -> {100 * trace.accuracies[-1]:.1f}%; "
        f"held-out {100 * result.holdout_before:.1f}% -> {100 * result.holdout_after:.1f}%; "
        f"{len(result.result.rounds)} rounds; provider remainder "
        f"{trace.provider_remainder / ETHER:.4f} ETH"
    )
    path = plot_market(trace, plot, title=f"simulation: {dataset}, {contributions} contributions")
    out.print(f"plot: {path}")


@app.command("deploy-factory")
def deploy_factory_command() -> None:
    """Deploy the market factory with the operator account and print its address."""
    config = settings()
    w3 = web3(config)
    if config.operator_key is None:
        raise InvalidInput("MARKET_OPERATOR_KEY", "is not set: the account that deploys and pays")
    try:
        operator: LocalAccount = Account.from_key(config.operator_key)
    except (ValueError, TypeError):
        raise InvalidInput("MARKET_OPERATOR_KEY", "does not hold a valid private key") from None
    from market.launch import deploy_factory

    address = deploy_factory(sender_for(config, w3, operator))
    typer.echo(address)
    typer.echo(f"set MARKET_FACTORY={address} for the service", err=True)


@stack_app.command("up")
def stack_up(
    workers: Annotated[int, typer.Option()] = 1,
    concurrency: Annotated[int, typer.Option()] = 2,
    api: Annotated[bool, typer.Option(help="also serve the HTTP API on port 8000")] = True,
) -> None:
    """Run anvil (if no node answers), Redis, workers, beat and the API until Ctrl-C."""
    from importlib.util import find_spec

    from market.stack import serve

    try:
        serve(
            workers=workers,
            concurrency=concurrency,
            api_port=8000 if api and find_spec("market.api") else None,
        )
    except RuntimeError as exc:
        fail(exc)


__all__ = ["app", "parse_features", "parse_wei"]
