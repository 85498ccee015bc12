"""Run benchmarks and record their results.

``python -m benchmarks [NAME ...]`` imports ``benchmarks.<NAME>`` for each name (every module of
the package when none is given), calls its ``run() -> dict``, adds a ``machine`` block (CPU
count, Python version, date, load average) and writes the result to
``benchmarks/results/<NAME>.json`` (indent 2, sorted keys) before printing it. A benchmark
module measures one thing, states what bounds it, and keeps its sizes as named constants.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import pkgutil
import platform
import sys
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
RESULTS_DIR = PACKAGE_DIR / "results"


def available() -> list[str]:
    """Names of the benchmark modules in this package."""
    return sorted(
        m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)]) if not m.name.startswith("_")
    )


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        # Other work on the machine slows every figure down; the load says how much there was.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def run_benchmark(name: str) -> dict[str, Any]:
    """Run ``benchmarks.<name>``, write its result file and return the result."""
    module = importlib.import_module(f"benchmarks.{name}")
    result = {**module.run(), "machine": machine()}
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line entry: run the named benchmarks, or all of them."""
    known = available()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {', '.join(known)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(known)}")
    for name in args.names or known:
        print(f"==> {name}", file=sys.stderr, flush=True)
        result = run_benchmark(name)
        print(json.dumps({name: result}, indent=2, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
