"""The Celery app: Redis broker and result backend from ``MARKET_REDIS_URL``.

    python -m celery -A workers.celeryconf worker --loglevel=info
    python -m celery -A workers.celeryconf beat --loglevel=info

Every task is idempotent: it takes a market address, re-reads the chain and does nothing
when its step is already done (DESIGN.md, "Orchestration"). That is what makes late
acknowledgement and redelivery safe, and what the settings below rely on.
"""

from __future__ import annotations

import os

from celery import Celery

from market.config import Settings, load_settings

# Read here rather than in market/config.py: it only matters to the Celery transport.
VISIBILITY_TIMEOUT_ENV = "MARKET_VISIBILITY_TIMEOUT_S"
# A step waits for at most one transaction at a time: its receipt (receipt_timeout_s) and,
# when stuck, one fee-bumped replacement; the soft limit allows both.
RECEIPT_WAITS_PER_STEP = 2
# Time between the soft limit (an exception in the task: release the lock, log) and the
# hard limit (the pool kills the child process).
HARD_LIMIT_GRACE_S = 60.0


def visibility_timeout_s(settings: Settings, env: dict[str, str] | None = None) -> float:
    """Seconds before Redis hands an unacknowledged task to another worker.

    A message stays unacknowledged while it waits behind the task its worker is running
    (prefetch 1: at most one) and while it runs itself: two hard time limits. A third one
    is margin for clock skew, since the worker that restores a message compares its own
    clock with the one of the worker that reserved it. With the default 120 s receipt
    timeout this is 3 x 300 s = 900 s. Tests set ``MARKET_VISIBILITY_TIMEOUT_S`` to a few
    seconds to see a killed worker's task come back quickly.
    """
    source = os.environ if env is None else env
    if value := source.get(VISIBILITY_TIMEOUT_ENV):
        try:
            seconds = float(value)
        except ValueError:
            raise ValueError(f"{VISIBILITY_TIMEOUT_ENV}={value!r} is not a number") from None
        if seconds <= 0:
            raise ValueError(f"{VISIBILITY_TIMEOUT_ENV}={value!r} must be positive")
        return seconds
    return 3 * time_limits_s(settings)[1]


def time_limits_s(settings: Settings) -> tuple[float, float]:
    """(soft, hard) time limits of a step, derived from the receipt timeout."""
    soft = RECEIPT_WAITS_PER_STEP * settings.receipt_timeout_s
    return soft, soft + HARD_LIMIT_GRACE_S


class CeleryConfig:
    """Settings for ``app.config_from_object``, computed from the service settings."""

    def __init__(self, settings: Settings, env: dict[str, str] | None = None) -> None:
        visibility = visibility_timeout_s(settings, env)
        soft, hard = time_limits_s(settings)

        self.broker_url = settings.redis_url
        self.result_backend = settings.redis_url
        # Keep retrying while Redis is still starting (compose, a reboot) instead of exiting;
        # Celery 6 stops doing this implicitly.
        self.broker_connection_retry_on_startup = True

        # JSON only: a pickle payload from anyone who can write to Redis would be code.
        self.task_serializer = "json"
        self.result_serializer = "json"
        self.accept_content = ["json"]
        self.result_accept_content = ["json"]

        # Acknowledge after the task returns, so a worker that dies mid-step leaves the
        # message to be redelivered. Safe because every task is idempotent: it re-reads the
        # chain and skips what is done, and the market lock keeps two copies from overlapping.
        self.task_acks_late = True
        # A pool child killed mid-task (OOM, hard time limit, SIGKILL) requeues the message
        # at once instead of failing it. Safe for the same reason; the cost is that a task
        # that always kills its process loops, which the hard time limit makes visible in
        # the logs instead of silent.
        self.task_reject_on_worker_lost = True
        # A task that raised or hit its time limit is acknowledged (Celery's default), not
        # redelivered: the next reconcile finds the market's step still due and retries it.
        self.task_acks_on_failure = True
        self.task_acks_on_timeout = True
        # One message per process: a long step must not hold others hostage in its prefetch
        # buffer while idle workers wait, and fewer messages sit unacknowledged.
        self.worker_prefetch_multiplier = 1
        # On broker connection loss, stop running acks_late tasks: their acknowledgement
        # could not be delivered anyway, and redelivery re-runs them (Celery 6's default).
        self.worker_cancel_long_running_tasks_on_connection_loss = True

        self.task_soft_time_limit = soft
        self.task_time_limit = hard
        self.broker_transport_options = {
            "visibility_timeout": visibility,
            # Sweep for expired unacknowledged messages every tenth of the timeout (1 s to
            # 60 s) and scan on every sweep, so redelivery takes about visibility x 1.1
            # instead of kombu's default of up to 100 s more.
            "unacked_restore_interval": max(1.0, min(60.0, visibility / 10)),
            "unacked_restore_throttle": 1,
        }

        # Results are only read by diagnostics (ping); tasks that need one opt in.
        self.task_ignore_result = True
        self.result_expires = 3600

        # Beat enqueues reconcile every interval; a reconcile older than a few intervals
        # (workers were down or busy) is superseded by newer ones, so it expires.
        self.beat_schedule = {
            "reconcile": {
                "task": "market.reconcile",
                "schedule": settings.reconcile_interval_s,
                "options": {"expires": 5 * settings.reconcile_interval_s},
            },
            # Statuses are refreshed apart from the reconcile, which must stay quick; twice per
            # staleness window keeps every poll's answer fresh.
            "refresh-statuses": {
                "task": "market.refresh_statuses",
                "schedule": max(1.0, settings.status_staleness_s / 2),
                "options": {"expires": settings.status_staleness_s},
            },
        }


def create_app(settings: Settings | None = None, env: dict[str, str] | None = None) -> Celery:
    """A Celery app on the settings' Redis (the worker's app, or a client for the stack)."""
    app = Celery("market", include=["workers.tasks"])
    app.config_from_object(CeleryConfig(settings or load_settings(env), env))
    return app


app = create_app()

__all__ = ["CeleryConfig", "app", "create_app", "time_limits_s", "visibility_timeout_s"]
