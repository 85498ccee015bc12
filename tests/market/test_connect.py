"""The service's Web3 client asks the node for the chain id once, and nothing else from memory."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from market.chain import connect
from market.services import Anvil


@pytest.fixture
def counting_rpc(anvil: Anvil) -> Iterator[tuple[str, Counter[str]]]:
    """An HTTP forwarder to anvil that counts the JSON-RPC methods it passes on."""
    seen: Counter[str] = Counter()

    class Forward(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            payload = json.loads(body)
            for call in payload if isinstance(payload, list) else [payload]:
                seen[call["method"]] += 1
            request = urllib.request.Request(
                anvil.url, data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                reply = answer.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_chain_id_is_asked_once_and_blocks_every_time(
    counting_rpc: tuple[str, Counter[str]],
) -> None:
    url, seen = counting_rpc
    w3 = connect(url)
    ids = {w3.eth.chain_id for _ in range(5)}
    numbers = [w3.eth.block_number for _ in range(3)]
    assert ids == {31337}
    assert len(numbers) == 3
    assert seen["eth_chainId"] == 1
    assert seen["eth_blockNumber"] == 3
