"""The registry of markets the service drives, in Redis, rebuilt from ``MarketCreated``.

Redis holds, per factory: the set of known markets with the block each was created in,
the block up to which the factory's events were scanned, public metadata per market (for
example the feature spec participants must encode with), and which markets are finished.
All of it can be flushed: :meth:`Registry.sync` rescans the factory's events from block 0,
and metadata is reloaded from the ``<address>.meta.json`` files kept beside the vault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from web3 import Web3

from market.chain import FactoryClient, MarketClient
from market.vault import write_atomic

PREFIX = "market:registry:"


class Registry:
    """Markets of one factory: addresses, creation blocks, metadata, finished flags."""

    def __init__(
        self, cache: redis.Redis, factory: FactoryClient, metadata_dir: Path | None = None
    ) -> None:
        self.cache = cache
        self.factory = factory
        self.metadata_dir = metadata_dir
        self._key = PREFIX + factory.address.lower()
        # Bindings are kept: building one parses the market's ABI (tens of milliseconds), and
        # a reconcile needs every active market's.
        self._clients: dict[str, MarketClient] = {}

    @property
    def w3(self) -> Web3:
        return self.factory.w3

    def sync(self) -> list[str]:
        """Scan ``MarketCreated`` since the last scan; the addresses added."""
        head = int(self.w3.eth.block_number)
        start = int(self.cache.hget(self._key + ":meta", "scanned") or -1) + 1
        if start > head:
            return []
        added = []
        for created in self.factory.markets(start, head):
            if self.cache.hsetnx(
                self._key + ":markets", created.market.lower(), created.block_number
            ):
                added.append(created.market)
        self.cache.hset(self._key + ":meta", "scanned", head)
        return added

    def add(self, address: str, created_block: int) -> None:
        """Register a market the service just launched (before the next scan sees it)."""
        self.cache.hsetnx(self._key + ":markets", address.lower(), created_block)

    def markets(self) -> dict[str, int]:
        """Known markets: address (lower-case) → creation block."""
        raw = self.cache.hgetall(self._key + ":markets")
        return {_text(k): int(v) for k, v in raw.items()}

    def created_block(self, address: str) -> int | None:
        value = self.cache.hget(self._key + ":markets", address.lower())
        return None if value is None else int(value)

    def client(self, address: str) -> MarketClient:
        """Bindings for a registered market, scanning its logs from its creation block."""
        key = address.lower()
        if key in self._clients:
            return self._clients[key]
        created = self.created_block(address)
        client = MarketClient(self.w3, address, created_block=created or 0)
        if created is not None:  # an unknown creation block is looked up again next time
            self._clients[key] = client
        return client

    def mark_finished(self, address: str) -> None:
        self.cache.sadd(self._key + ":finished", address.lower())

    def finished(self) -> set[str]:
        return {_text(v) for v in self.cache.smembers(self._key + ":finished")}

    def mark_settled(self, address: str) -> None:
        """Everything of a finished market has been withdrawn: nothing left to watch."""
        self.cache.sadd(self._key + ":settled", address.lower())

    def settled(self) -> set[str]:
        return {_text(v) for v in self.cache.smembers(self._key + ":settled")}

    def active(self) -> list[str]:
        """Markets that may still have work: known and not finished."""
        done = self.finished()
        return [a for a in self.markets() if a not in done]

    # ----------------------------------------------------------------- public metadata

    def save_metadata(self, address: str, metadata: dict[str, Any]) -> None:
        """Public metadata of a market (name, feature spec): Redis and a file beside the vault."""
        text = json.dumps(metadata, sort_keys=True)
        self.cache.hset(self._key + ":metadata", address.lower(), text)
        if self.metadata_dir is not None:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            path = self.metadata_dir / f"{Web3.to_checksum_address(address)}.meta.json"
            write_atomic(path, text.encode())

    def save_pending_metadata(self, root: bytes, metadata: dict[str, Any]) -> None:
        """Metadata of a market about to be deployed, named by its test root like the vault's
        pending file: a launch killed after the deployment loses neither."""
        if self.metadata_dir is not None:
            self.metadata_dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(metadata, sort_keys=True)
            write_atomic(self._pending_metadata_path(root), text.encode())

    def promote_metadata(self, root: bytes, address: str) -> bool:
        """Give the pending metadata of ``root`` to the deployed market; whether there was any."""
        if self.metadata_dir is None:
            return False
        pending = self._pending_metadata_path(root)
        try:
            text = pending.read_text()
        except FileNotFoundError:
            return False
        self.save_metadata(address, dict(json.loads(text)))
        pending.unlink(missing_ok=True)
        return True

    def _pending_metadata_path(self, root: bytes) -> Path:
        assert self.metadata_dir is not None
        return self.metadata_dir / f"pending-{root.hex()}.meta.json"

    def metadata(self, address: str) -> dict[str, Any] | None:
        raw = self.cache.hget(self._key + ":metadata", address.lower())
        if raw is None and self.metadata_dir is not None:
            path = self.metadata_dir / f"{Web3.to_checksum_address(address)}.meta.json"
            if path.exists():
                raw = path.read_text()
                self.cache.hset(self._key + ":metadata", address.lower(), raw)
        return None if raw is None else dict(json.loads(raw))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
