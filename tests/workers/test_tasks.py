"""Task registration and the contract between the tasks and the orchestrator."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from market.config import Settings
from workers.celeryconf import CeleryConfig, app, time_limits_s, visibility_timeout_s
from workers.tasks import MAX_ADVANCE_INVOCATIONS, _redis, has_more, single_flight


def test_tasks_are_registered_under_stable_names() -> None:
    app.loader.import_default_modules()
    names = {name for name in app.tasks if name.startswith("market.")}
    assert names == {
        "market.reconcile",
        "market.refresh_statuses",
        "market.advance",
        "market.ping",
        "market.sleep_then_mark",
    }


@dataclass
class Step:
    more: bool


def test_advance_results_say_whether_more_is_due() -> None:
    assert has_more((3, True)) is True
    assert has_more((3, False)) is False
    assert has_more(True) is True
    assert has_more(False) is False
    assert has_more(Step(more=True)) is True
    assert has_more(None) is False
    assert MAX_ADVANCE_INVOCATIONS > 1


def test_visibility_timeout_outlasts_a_queued_and_a_running_step() -> None:
    settings = Settings(receipt_timeout_s=120)
    soft, hard = time_limits_s(settings)
    assert (soft, hard) == (240, 300)
    assert visibility_timeout_s(settings, env={}) == 900 > 2 * hard
    assert visibility_timeout_s(settings, env={"MARKET_VISIBILITY_TIMEOUT_S": "4"}) == 4


def test_celery_settings_are_the_documented_ones() -> None:
    config = CeleryConfig(Settings(redis_url="redis://example:6379/2"), env={})
    assert config.broker_url == config.result_backend == "redis://example:6379/2"
    assert config.task_acks_late and config.task_reject_on_worker_lost
    assert config.worker_prefetch_multiplier == 1
    assert config.accept_content == ["json"]
    assert config.broker_connection_retry_on_startup
    assert config.broker_transport_options["visibility_timeout"] == 900
    assert config.beat_schedule["reconcile"]["task"] == "market.reconcile"
    assert config.beat_schedule["refresh-statuses"]["task"] == "market.refresh_statuses"
    assert app.conf.task_acks_late and app.conf.worker_prefetch_multiplier == 1


def test_single_flight_lets_one_caller_run_and_frees_the_key_after() -> None:
    key = f"market:test:single-flight:{uuid.uuid4().hex}"
    with single_flight(key, 30) as first:
        with single_flight(key, 30) as second:
            # a second reconcile or status refresh while one runs is skipped
            assert first and not second
        assert first
    # the holder's marker is gone once it is done, so the next tick runs
    with single_flight(key, 30) as third:
        assert third
    assert not _redis().exists(key)
