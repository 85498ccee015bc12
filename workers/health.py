"""Container health checks that go through Redis.

    python -m workers.health reconcile   # exit 0 when a reconcile ran recently

The reconcile check watches the whole loop (beat schedules, a worker runs it): the
``market.reconcile`` task stamps ``market:reconcile:last`` each time it runs.
"""

from __future__ import annotations

import sys
import time

import redis

from market.config import Settings, load_settings
from workers.tasks import RECONCILE_HEARTBEAT_KEY

# Tolerated silence: ten missed reconcile ticks, and never less than 30 s so that a worker
# busy for a few seconds (or restarting) does not flap the health status.
MISSED_TICKS = 10
MIN_MAX_AGE_S = 30.0


def max_reconcile_age_s(settings: Settings) -> float:
    """How old the last reconcile may be before the loop counts as unhealthy."""
    return max(MIN_MAX_AGE_S, MISSED_TICKS * settings.reconcile_interval_s)


def reconcile_age_s(client: redis.Redis) -> float | None:
    """Seconds since the last reconcile ran, or None if none ran since Redis started."""
    stamp = client.get(RECONCILE_HEARTBEAT_KEY)
    return None if stamp is None else time.time() - float(stamp)


def main(argv: list[str]) -> int:
    """Exit 0 when healthy, 1 when not (with one line saying why), 2 on bad usage."""
    if argv != ["reconcile"]:
        print("usage: python -m workers.health reconcile", file=sys.stderr)
        return 2
    settings = load_settings()
    limit = max_reconcile_age_s(settings)
    try:
        age = reconcile_age_s(redis.Redis.from_url(settings.redis_url, socket_timeout=5))
    except redis.RedisError as error:
        print(f"unhealthy: Redis at {settings.redis_url}: {error}", file=sys.stderr)
        return 1
    if age is None or age > limit:
        seen = "never" if age is None else f"{age:.0f} s ago"
        print(f"unhealthy: last reconcile {seen} (limit {limit:.0f} s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
