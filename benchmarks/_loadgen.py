"""A small HTTP/1.1 keep-alive load generator: GET random paths for a fixed time.

``python -m benchmarks._loadgen --host H --port P --paths FILE --seconds S --connections C``
prints one JSON object: requests, errors, rps, and latency percentiles in milliseconds. Each
connection sends one request at a time (no pipelining) and times it from write to the last
body byte, so latency includes the server's queueing under the offered concurrency. Raw
sockets keep the client's own cost per request far below an HTTP library's, which matters
when client and server share two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any


async def _connection(
    host: str, port: int, paths: list[bytes], until: float, seed: int, out: dict[str, Any]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random(seed)
    latencies: list[float] = out["latencies"]
    host_header = f"Host: {host}:{port}\r\n".encode()
    try:
        while time.perf_counter() < until:
            request = b"GET " + rng.choice(paths) + b" HTTP/1.1\r\n" + host_header + b"\r\n"
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if head[9:12] != b"200":
                out["errors"] += 1
    finally:
        writer.close()


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    host: str, port: int, paths: list[str], seconds: float, connections: int
) -> dict[str, Any]:
    """Drive ``connections`` keep-alive clients for ``seconds``; counts and percentiles."""
    encoded = [p.encode() for p in paths]
    out: dict[str, Any] = {"latencies": [], "errors": 0}
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(_connection(host, port, encoded, until, seed, out) for seed in range(connections))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(out["latencies"])
    return {
        "requests": len(ordered),
        "errors": out["errors"],
        "seconds": round(elapsed, 3),
        "connections": connections,
        "rps": round(len(ordered) / elapsed, 1),
        "p50_ms": round(1000 * _percentile(ordered, 0.50), 3),
        "p90_ms": round(1000 * _percentile(ordered, 0.90), 3),
        "p99_ms": round(1000 * _percentile(ordered, 0.99), 3),
        "max_ms": round(1000 * ordered[-1], 3) if ordered else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry: print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks._loadgen", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", required=True, help="file with one request path per line")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    with open(args.paths) as handle:
        paths = [line.strip() for line in handle if line.strip()]
    result = asyncio.run(run(args.host, args.port, paths, args.seconds, args.connections))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
