"""Settings: one frozen object, environment variables read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CONFIRMATIONS = 1
# EIP-7825 caps a transaction at 2**24 gas; staying under it with a margin leaves room for
# estimation error and for chains that price calldata differently.
DEFAULT_TX_GAS_CAP = 15_000_000
DEFAULT_VAULT_DIR = Path("var/vault")
DEFAULT_RECONCILE_INTERVAL_S = 2.0
DEFAULT_LOCK_LEASE_S = 120.0
DEFAULT_RECEIPT_TIMEOUT_S = 120.0
DEFAULT_STATUS_STALENESS_S = 5.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Service settings.

    >>> Settings(rpc_url="http://127.0.0.1:8545").tx_gas_cap
    15000000
    """

    rpc_url: str = DEFAULT_RPC_URL
    redis_url: str = DEFAULT_REDIS_URL
    confirmations: int = DEFAULT_CONFIRMATIONS
    tx_gas_cap: int = DEFAULT_TX_GAS_CAP
    vault_dir: Path = DEFAULT_VAULT_DIR
    vault_key: str | None = field(default=None, repr=False)
    operator_key: str | None = field(default=None, repr=False)
    factory_address: str | None = None
    api_token: str | None = field(default=None, repr=False)
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    lock_lease_s: float = DEFAULT_LOCK_LEASE_S
    receipt_timeout_s: float = DEFAULT_RECEIPT_TIMEOUT_S
    status_staleness_s: float = DEFAULT_STATUS_STALENESS_S
    upload_limit_bytes: int = 20_000_000
    # How long before an early end a worker takes the market and waits for the deadline's
    # block (about one block time on a chain that makes blocks by itself); 0 waits for the
    # reconcile to find the end due, as a chain that only mines on demand needs.
    end_lookahead_s: float = 0.0


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read the ``MARKET_*`` environment variables into a :class:`Settings`."""
    source = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = source.get(name)
        return value if value not in (None, "") else None

    kwargs: dict[str, object] = {}
    text = {
        "rpc_url": "MARKET_RPC_URL",
        "redis_url": "MARKET_REDIS_URL",
        "vault_key": "MARKET_VAULT_KEY",
        "operator_key": "MARKET_OPERATOR_KEY",
        "factory_address": "MARKET_FACTORY",
        "api_token": "MARKET_API_TOKEN",
    }
    for attr, name in text.items():
        if (value := get(name)) is not None:
            kwargs[attr] = value
    numbers: dict[str, tuple[str, type]] = {
        "confirmations": ("MARKET_CONFIRMATIONS", int),
        "tx_gas_cap": ("MARKET_TX_GAS_CAP", int),
        "reconcile_interval_s": ("MARKET_RECONCILE_INTERVAL_S", float),
        "lock_lease_s": ("MARKET_LOCK_LEASE_S", float),
        "receipt_timeout_s": ("MARKET_RECEIPT_TIMEOUT_S", float),
        "status_staleness_s": ("MARKET_STATUS_STALENESS_S", float),
        "upload_limit_bytes": ("MARKET_UPLOAD_LIMIT_BYTES", int),
        "end_lookahead_s": ("MARKET_END_LOOKAHEAD_S", float),
    }
    for attr, (name, kind) in numbers.items():
        if (value := get(name)) is not None:
            try:
                kwargs[attr] = kind(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a valid {kind.__name__}") from None
    if (value := get("MARKET_VAULT_DIR")) is not None:
        kwargs["vault_dir"] = Path(value)
    settings = Settings(**kwargs)  # type: ignore[arg-type]
    if settings.tx_gas_cap > 2**24:
        raise ValueError(f"MARKET_TX_GAS_CAP={settings.tx_gas_cap} exceeds the EIP-7825 cap 2**24")
    return settings


__all__ = ["Settings", "load_settings"]
