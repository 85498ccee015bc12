"""A flaky JSON-RPC endpoint between the workers and the node: slow, failing, losing answers.

Each case runs real workers against :class:`tests.faults.rpcproxy.RpcProxy` in one mode for the
whole life of a market (the provider and participants talk to the node directly). The market
must end as it would on a healthy node: the mirror's payouts, no step sent twice, consecutive
nonces and no reverted transaction.

No transaction is replaced either, and that is a consequence of the fault levels rather than
a promise of the code: a sender replaces a transaction only when it has seen no receipt for
``replace_after_s`` (30 s), and a replacement reuses the nonce and the call, so it could
never do a step twice; here every fault is over in well under a second, blocks come every
second, and a task that fails mid-wait leaves the pending step to the next advance, which
waits for it (``Orchestrator._await_inflight``) rather than sending it again.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import E2E, running
from tests.faults.rpcproxy import ERROR_KINDS, Faults, RpcProxy
from tests.faults.stackmarkets import (
    GAS_CAP,
    assert_finished_like_the_mirror,
    assert_no_conflicting_transactions,
    open_market,
)

pytestmark = pytest.mark.e2e

MODES = {
    # Every request waits 50-150 ms: a distant or overloaded endpoint.
    "slow": Faults(delay_s=0.05, jitter_s=0.1),
    # 6% of requests never reach the node: a gateway's 502/503, a JSON-RPC -32000/-32603 (not
    # retried by web3: the task fails and the next reconcile tries again), or a TCP reset.
    "errors": Faults(error_rate=0.06),
    # 3% of answers are lost after the node acted on the request, and half of the
    # transaction sends: the sender cannot know whether its transaction is in the pool.
    "drops": Faults(drop_rate=0.03, method_rates=(("eth_sendRawTransaction", 0.5),)),
}


@pytest.fixture
def proxied(
    stack_redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[E2E, RpcProxy]]:
    faults: Faults = MODES[request.param]
    proxies: list[RpcProxy] = []

    def through_proxy(url: str) -> str:
        proxies.append(RpcProxy(url, faults, seed=5).start())
        return proxies[0].url

    try:
        with running(
            stack_redis_url,
            tmp_path,
            gas_cap=GAS_CAP,
            concurrency=2,
            worker_rpc_url=through_proxy,
        ) as env:
            yield env, proxies[0]
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("proxied", list(MODES), indirect=True)
def test_market_finishes_through_a_faulty_rpc(proxied: tuple[E2E, RpcProxy]) -> None:
    env, proxy = proxied
    mode = next(name for name, faults in MODES.items() if faults == proxy.faults)
    # given a market opened while the workers' node answers through the faulty proxy
    address = open_market(env, random.Random(51))
    # when the workers drive it to the end through the same proxy
    assert_finished_like_the_mirror(env, address)
    # then nothing was sent twice or out of order, and nothing reverted or was replaced
    stats = assert_no_conflicting_transactions(env)
    assert stats["replaced"] == 0, stats
    assert stats["confirmed"] > 0, stats
    # and the faults did happen, on the requests that matter
    counts = proxy.counts
    assert counts["forwarded"] > 100, counts
    if mode == "slow":
        assert proxy.injected() == 0, counts
    elif mode == "errors":
        assert {k for k in ERROR_KINDS if counts[k]} == set(ERROR_KINDS), counts
    else:
        lost_sends = sum(
            n
            for (what, method), n in proxy.by_method.items()
            if what.startswith("drop") and method == "eth_sendRawTransaction"
        )
        assert lost_sends > 0, proxy.by_method
