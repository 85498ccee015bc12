"""The one-at-a-time markers of reconcile and status refresh are leases, renewed while held.

A run may take long (a refresh of many markets), so the marker must outlive its lease while
the holder works; a holder SIGKILLed mid-run must not keep every later tick skipped for the
longest run time, only for one lease.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from market.services import ROOT
from tests.e2e.harness import wait_for
from workers.tasks import _redis, single_flight

pytestmark = pytest.mark.timeout(60)

HOLDER = """
import sys, time
from workers.tasks import single_flight
with single_flight(sys.argv[1], int(sys.argv[2])) as held:
    print(held, flush=True)
    time.sleep(60)
"""


def test_a_long_run_keeps_its_marker_past_the_lease() -> None:
    key = f"market:test:single-flight:{uuid.uuid4().hex}"
    with single_flight(key, 1) as held:
        time.sleep(2.5)  # over twice the lease
        assert held
        with single_flight(key, 1) as second:
            assert not second  # still running: the next tick is skipped
    assert not _redis().exists(key)


def test_a_killed_holder_blocks_the_job_for_one_lease_at_most() -> None:
    key = f"market:test:single-flight:{uuid.uuid4().hex}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, key, "2"], cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"True"
        time.sleep(3)  # renewed past its lease while the holder lives
        with single_flight(key, 2) as second:
            assert not second
    finally:
        holder.kill()  # SIGKILL: no finally runs, the marker stays behind
        holder.wait()
    # the marker frees itself within the lease (2 s), not after the 60 s the job would take
    wait_for(lambda: not _redis().exists(key), 15, "the dead holder's marker to expire")
    with single_flight(key, 2) as third:
        assert third
