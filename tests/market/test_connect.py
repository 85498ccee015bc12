"""The service's Web3 client asks the node for the chain id once, and nothing else from memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from market.chain import connect
from market.services import Anvil
from tests.faults.rpcproxy import RpcProxy


@pytest.fixture
def proxy(anvil: Anvil) -> Iterator[RpcProxy]:
    """A transparent proxy to anvil (no faults) that counts the requests it forwards."""
    proxy = RpcProxy(anvil.url).start()
    yield proxy
    proxy.stop()


def test_chain_id_is_asked_once_and_blocks_every_time(proxy: RpcProxy) -> None:
    w3 = connect(proxy.url)
    ids = {w3.eth.chain_id for _ in range(5)}
    numbers = [w3.eth.block_number for _ in range(3)]
    assert ids == {31337}
    assert len(numbers) == 3
    assert proxy.by_method[("forwarded", "eth_chainId")] == 1
    assert proxy.by_method[("forwarded", "eth_blockNumber")] == 3
