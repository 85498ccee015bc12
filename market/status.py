"""The status cache: what the API serves, kept fresh by the workers, rebuilt from the chain.

Two Redis keys per market, both JSON and both disposable (every field is read from the
chain or its events again by :func:`refresh`):

- ``market:status:<address>``: phase, deadlines, counts, reveal and reward progress, recent
  transactions and the last error;
- ``market:contributors:<address>``: per account (lower-case), its contribution ids,
  deposits, payouts once final, withdrawn flags, and the mirror's projected payout once the
  test set is revealed.

Polls read these keys only: no RPC call per request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import redis

from market import replay
from market.chain import MarketClient
from market.steps import STAGE_DONE, STAGE_PREPARE, STAGE_TRAIN
from market.types import Phase

STATUS_PREFIX = "market:status:"
CONTRIBUTORS_PREFIX = "market:contributors:"
# Enough history to show what happened to a market without letting the key grow unbounded.
MAX_TRANSACTIONS = 50
# Contributions are read again from this many blocks before the last read: one that a short
# reorg moved to a later block is still found (ids already seen are skipped).
REREAD_BLOCKS = 8


def status_key(address: str) -> str:
    return STATUS_PREFIX + address.lower()


def contributors_key(address: str) -> str:
    return CONTRIBUTORS_PREFIX + address.lower()


def read_status(client: redis.Redis, address: str) -> dict[str, Any] | None:
    """The cached status of a market, or ``None`` if the cache has none."""
    raw = client.get(status_key(address))
    return None if raw is None else dict(json.loads(raw))


def read_contributors(client: redis.Redis, address: str) -> dict[str, Any]:
    raw = client.get(contributors_key(address))
    return {} if raw is None else dict(json.loads(raw))


def _write(client: redis.Redis, key: str, value: Mapping[str, Any]) -> None:
    client.set(key, json.dumps(value, sort_keys=True))


def record_transaction(
    client: redis.Redis, address: str, name: str, tx_hash: str, gas_used: int, block: int
) -> None:
    """Append a sent step to the market's transaction history."""
    status = read_status(client, address) or {"address": address}
    txs = list(status.get("transactions", []))
    txs.append(
        {"step": name, "tx_hash": tx_hash, "gas_used": gas_used, "block": block, "at": time.time()}
    )
    status["transactions"] = txs[-MAX_TRANSACTIONS:]
    status["last_step"] = txs[-1]
    status["last_error"] = None
    _write(client, status_key(address), status)


def record_error(client: redis.Redis, address: str, step: str, error: BaseException) -> None:
    """Remember the last failure of a market's step, for operators and the API."""
    status = read_status(client, address) or {"address": address}
    status["last_error"] = {
        "step": step,
        "type": type(error).__name__,
        "message": str(error)[:500],
        "at": time.time(),
    }
    _write(client, status_key(address), status)


def _reward_progress(stage: int, trained: int, settled: int, active: int, count: int) -> float:
    """0..1: preparing and training are the first half, rounds the next 40%, settlement the rest."""
    if count == 0 or stage >= STAGE_DONE:
        return 1.0
    if stage == STAGE_PREPARE:
        return 0.0
    if stage == STAGE_TRAIN:
        return 0.5 * trained / count
    if stage in (STAGE_TRAIN + 1, STAGE_TRAIN + 2):
        return 0.5 + 0.4 * (count - active) / count
    return 0.9 + 0.1 * settled / count


def refresh(cache: redis.Redis, market: MarketClient, *, confirmations: int = 1) -> dict[str, Any]:
    """Read a market from the chain into the status cache; the new status."""
    w3 = market.w3
    head = int(w3.eth.block_number)
    confirmed = max(0, head - confirmations + 1)
    phase = market.phase()
    confirmed_phase = market.phase(confirmed)
    info = market.info()
    params = market.params()
    count, deposits = market.contribution_stats()
    revealed, m, _ = market.reveal_status()
    reward = market.reward_status()
    final = confirmed_phase in (Phase.COLLECT, Phase.CANCELLED)
    previous = read_status(cache, market.address) or {}
    status: dict[str, Any] = {
        **previous,
        "address": market.address,
        "phase": phase.name,
        "phase_code": int(phase),
        "final": final,
        "provider": info.provider,
        "bounty": str(info.bounty),
        "created_block": market.created_block,
        "params": {k: (v.hex() if isinstance(v, bytes) else v) for k, v in asdict(params).items()},
        "drawn": info.drawn,
        "portion": info.portion if info.drawn else None,
        "contributions": count,
        "deposits": str(deposits),
        "earliest_end": params.earliest_end,
        "latest_end": params.latest_end,
        "ended_at": info.ended_at or None,
        "reveal_deadline": (info.ended_at + params.reveal_window) if info.ended_at else None,
        "revealed": revealed,
        "test_count": m,
        "reveal_progress": round(revealed / m, 4) if m else 0.0,
        "reward": {
            "stage": reward.stage,
            "trained": reward.trained,
            "settled": reward.settled,
            "active": reward.active,
            "progress": round(
                _reward_progress(
                    reward.stage, reward.trained, reward.settled, reward.active, count
                ),
                4,
            ),
        },
        "provider_remainder": str(market.provider_remainder()) if phase == Phase.COLLECT else None,
        "updated_at": time.time(),
        "block": head,
    }
    status.setdefault("transactions", [])
    status.setdefault("last_error", None)
    _write(cache, status_key(market.address), status)
    _refresh_contributors(cache, market, phase, final, previous.get("phase"))
    return status


def _refresh_contributors(
    cache: redis.Redis,
    market: MarketClient,
    phase: Phase,
    final: bool,
    previous_phase: str | None,
) -> None:
    """Per-account view: contributions (incremental), projections, payouts, withdrawals."""
    key = contributors_key(market.address)
    data = read_contributors(cache, market.address)
    accounts: dict[str, Any] = data.get("accounts", {})
    seen = int(data.get("seen", 0))
    if seen == 0 or phase == Phase.PARTICIPATION or previous_phase == Phase.PARTICIPATION.name:
        # Only the blocks since the last read (a few back, for a short reorg): a refresh of a
        # busy market must not decode every contribution again each time.
        last = data.get("seen_block")
        start = None if last is None else max(market.created_block, last - REREAD_BLOCKS)
        head = int(market.w3.eth.block_number)
        records = [r for r in market.contributions(from_block=start) if r.id > seen]
        for record in records:
            entry = accounts.setdefault(
                record.contributor.lower(),
                {"ids": [], "deposits": [], "payouts": None, "withdrawn": [], "projected": None},
            )
            entry["ids"].append(record.id)
            entry["deposits"].append(str(record.deposit))
            entry["withdrawn"].append(False)
        seen = max([seen, *(r.id for r in records)])
        data["seen_block"] = head
    if phase in (Phase.REWARD, Phase.COLLECT) and not data.get("projected"):
        _project(market, accounts)
        data["projected"] = True
    if final and phase == Phase.COLLECT and not data.get("payouts"):
        for entry in accounts.values():
            entry["payouts"] = [str(market.payout_of(i)) for i in entry["ids"]]
        data["payouts"] = True
    if final and phase == Phase.CANCELLED and not data.get("payouts"):
        for entry in accounts.values():
            entry["payouts"] = [str(market.refund_of(i)) for i in entry["ids"]]
        data["payouts"] = True
    if final:
        for entry in accounts.values():
            pending = [k for k, done in enumerate(entry["withdrawn"]) if not done]
            for k in pending:
                entry["withdrawn"][k] = market.withdrawn(entry["ids"][k])
    data.update({"accounts": accounts, "seen": seen})
    _write(cache, key, data)


def _project(market: MarketClient, accounts: dict[str, Any]) -> None:
    """The mirror's payouts, computed once the whole test set is public."""
    result = replay.mirror(market)
    for entry in accounts.values():
        entry["projected"] = str(sum(result.payouts[i - 1] for i in entry["ids"]))


def contributor_status(
    status: Mapping[str, Any], contributors: Mapping[str, Any], account: str
) -> dict[str, Any]:
    """What a participant polls: their contributions and where their reward stands.

    ``state`` is ``open`` (market running), ``computing`` (reveal or rewards in progress,
    with ``progress``), ``claimable`` (final, with ``amount`` not yet withdrawn),
    ``withdrawn``, ``refundable`` (cancelled, with ``amount``), or ``unknown`` when the
    account has no contribution.
    """
    entry = contributors.get("accounts", {}).get(account.lower())
    phase = status.get("phase")
    out: dict[str, Any] = {
        "market": status.get("address"),
        "account": account,
        "phase": phase,
        "contributions": [],
        "state": "unknown",
        "amount": None,
        "projected_payout": None,
        "progress": None,
        "updated_at": status.get("updated_at"),
    }
    if entry is None:
        return out
    payouts = entry.get("payouts")
    out["contributions"] = [
        {
            "id": cid,
            "deposit": entry["deposits"][k],
            "payout": payouts[k] if payouts else None,
            "withdrawn": entry["withdrawn"][k],
        }
        for k, cid in enumerate(entry["ids"])
    ]
    out["projected_payout"] = entry.get("projected")
    if phase in ("COMMITTED", "PARTICIPATION"):
        out["state"] = "open"
    elif phase in ("REVEAL", "REWARD") or not status.get("final") or payouts is None:
        out["state"] = "computing"
        reveal = float(status.get("reveal_progress", 0.0))
        reward = float(status.get("reward", {}).get("progress", 0.0))
        out["progress"] = round(0.3 * reveal + 0.7 * reward, 4)
    else:
        left = sum(int(p) for p, w in zip(payouts, entry["withdrawn"], strict=True) if not w)
        if all(entry["withdrawn"]):
            out["state"] = "withdrawn"
        else:
            out["state"] = "refundable" if phase == "CANCELLED" else "claimable"
        out["amount"] = str(left)
    return out
