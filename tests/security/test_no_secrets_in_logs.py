"""No secret leaves the service through its logs, its status cache or its error messages.

A whole market runs in-process through :class:`market.orchestrator.Orchestrator` with every
logger (web3's and urllib3's request logs included) captured at DEBUG. The test then looks
for the operator's private key (hex, with and without ``0x``) and the vault key everywhere,
and for the hidden test set (each salt, each ``SAMPLE`` encoding, each feature list) in what
was logged and cached before the first ``revealBatch`` was planned: until then those values
exist only in the vault.
"""

from __future__ import annotations

import base64
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.config import Settings
from market.encoding import encode_sample
from market.errors import MarketError
from market.launch import LaunchSpec, launch_market
from market.orchestrator import Orchestrator
from market.types import Phase, Sample, TestSample
from market.vault import Vault, generate_vault_key
from tests.contracts.chaintools import increase_time, mine, send

LOGGERS = ("", "web3", "web3.providers", "web3.RequestManager", "urllib3", "market", "celery")


class Capture(logging.Handler):
    """Every record, formatted with its arguments and traceback."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Capture]:
    handler = Capture()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def redis_dump(client: Any) -> str:
    """Every key and value of the database, as text."""
    parts: list[str] = []
    for key in client.scan_iter():
        kind = client.type(key).decode()
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)


def key_forms(key: bytes) -> list[str]:
    """The ways a key is likely to be printed."""
    h = key.hex()
    return [h, "0x" + h, h.upper(), base64.b64encode(key).decode(), repr(key)]


def hidden_forms(sample: TestSample) -> list[str]:
    """How a hidden test sample could show up in text."""
    salt = sample.salt.hex()
    encoded = encode_sample(sample.sample).hex()
    forms = [salt, "0x" + salt, base64.b64encode(sample.salt).decode(), encoded]
    if len(sample.features) >= 4:  # shorter feature lists are common in any log line
        forms += [repr(sample.features), repr(list(sample.features))]
    return forms


def leaks(text: str, forms: dict[str, list[str]]) -> list[str]:
    return [name for name, values in forms.items() if any(v and v in text for v in values)]


@pytest.fixture
def orchestrator(make_service: Callable[..., Orchestrator]) -> Orchestrator:
    return make_service()


def _step(w3: Web3, orch: Orchestrator) -> None:
    due = orch.reconcile()
    for address in due:
        orch.advance(address)
    if not due:
        increase_time(w3, 120)
        mine(w3)


@pytest.mark.timeout(300)
def test_no_secret_in_logs_cache_or_errors(
    w3: Web3,
    accounts: list[LocalAccount],
    orchestrator: Orchestrator,
    captured: Capture,
    snapshot: None,
) -> None:
    rng = random.Random(11)
    dim = 64
    test_set = [
        Sample(tuple(sorted(rng.sample(range(dim), rng.randint(4, 8)))), rng.randint(0, 1))
        for _ in range(24)
    ]
    spec = LaunchSpec(
        test_set=test_set,
        dim=dim,
        bounty=10**18,
        min_stake=10**16,
        portions=4,
        earliest_end_s=300,
        latest_end_s=600,
        reveal_window_s=600,
    )
    settings = orchestrator.settings
    assert settings.operator_key is not None and settings.vault_key is not None
    keys = {
        "operator key": key_forms(bytes.fromhex(settings.operator_key.removeprefix("0x"))),
        "vault key": key_forms(bytes.fromhex(settings.vault_key)),
    }

    launched = launch_market(orchestrator, spec)
    market = orchestrator.registry.client(launched.address)
    secrets = orchestrator.vault.load(launched.address)
    while market.phase() == Phase.COMMITTED:
        _step(w3, orchestrator)
    public = market.public_portion()
    assert public is not None
    start, end = market.params().portion_range(public[0])
    hidden = {
        f"test sample {s.index}": hidden_forms(s)
        for s in secrets.samples
        if not start <= s.index < end
    }
    for i in range(8):
        # Contributions are public by design: fresh samples, not copies of the test set.
        features = tuple(sorted(rng.sample(range(dim), 3)))
        call = market.contribute(features, i % 2)
        send(w3, accounts[1 + i % 3], call, value=10**16)
    # Up to the first revealBatch: run until the market is in REVEAL (an advance stops after
    # endMarket, so no reveal has been planned or estimated yet).
    while market.phase() in (Phase.PARTICIPATION,):
        _step(w3, orchestrator)
    assert market.phase() == Phase.REVEAL
    before_reveal = "\n".join(captured.lines)
    cache_before_reveal = redis_dump(orchestrator.cache)
    assert len(captured.lines) > 20  # the capture works: the service logged its steps
    assert leaks(before_reveal, hidden) == []
    assert leaks(cache_before_reveal, hidden) == []

    for _ in range(100):
        if market.phase() == Phase.COLLECT and orchestrator.reconcile() == []:
            break
        _step(w3, orchestrator)
    assert market.phase() == Phase.COLLECT
    # The web3/urllib3 debug lines were captured too (they carry request bodies, if anything).
    assert any(line.startswith(("web3", "urllib3")) for line in captured.lines)

    # Positive control: the forms searched for are the ones the reveal did publish.
    published = "\n".join(batch.hex() for batch in market.revealed_batches())
    assert sorted(leaks(published, hidden)) == sorted(hidden)

    errors = _bad_input_messages(orchestrator, secrets.samples, launched.address)
    everything = "\n".join([*captured.lines, redis_dump(orchestrator.cache), *errors])
    assert leaks(everything, keys) == []
    assert leaks("\n".join(errors), hidden) == []


def _bad_input_messages(
    orch: Orchestrator, samples: tuple[TestSample, ...], address: str
) -> list[str]:
    """Messages (and reprs) of the errors raised for bad keys, settings and launches."""
    messages = [repr(orch.settings), str(orch.settings)]
    settings = orch.settings
    assert settings.operator_key is not None
    # A key with one character dropped or a stray letter: what an operator mistypes.
    bad_keys = [settings.operator_key[:-1], settings.operator_key[:-1] + "g"]
    for bad in bad_keys:
        try:
            Account.from_key(bad)
        except Exception as exc:  # whatever eth-account raises, its text is what gets logged
            messages.append(f"{type(exc).__name__}: {exc}")
        try:
            Orchestrator(
                Settings(**{**settings.__dict__, "operator_key": bad}), w3=orch.w3, cache=orch.cache
            )
        except Exception as exc:
            messages.append(f"{type(exc).__name__}: {exc}")
    # The vault opened with another key, and with a mangled one.
    for key in (generate_vault_key(), (settings.vault_key or "")[:-2]):
        try:
            Vault(settings.vault_dir, bytes.fromhex(key)).load(address)
        except (MarketError, ValueError) as exc:
            messages.append(f"{type(exc).__name__}: {exc}")
        else:
            raise AssertionError("the vault opened with a wrong key")
    # A launch refused for one bad sample among secret ones.
    refused = [s.sample for s in samples] + [Sample((3, 1), 0)]
    try:
        launch_market(orch, LaunchSpec(test_set=refused, dim=64, bounty=1, min_stake=1, portions=4))
    except MarketError as exc:
        messages.append(f"{type(exc).__name__}: {exc}")
    else:
        raise AssertionError("a bad launch was accepted")
    return messages
