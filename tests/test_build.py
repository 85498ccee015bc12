"""The contract build is reproducible: a fresh compile gives the artifacts market/ loads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from market.contracts import ARTIFACTS_DIR

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_a_fresh_build_reproduces_the_artifacts(tmp_path: Path) -> None:
    subprocess.run(
        ["node", "scripts/compile.mjs", "--force", "--quiet", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    current = sorted(p.name for p in ARTIFACTS_DIR.glob("*.json"))
    assert fresh == current and "PredictionMarket.json" in fresh
    for name in fresh:
        a = json.loads((tmp_path / name).read_text())
        b = json.loads((ARTIFACTS_DIR / name).read_text())
        assert a["bytecode"] == b["bytecode"], f"{name}: the built artifact is stale"
        assert a["abi"] == b["abi"], f"{name}: the built ABI is stale"
    # the fingerprint that lets ./run skip the build matches the sources too
    assert (tmp_path / ".fingerprint").read_text() == (ARTIFACTS_DIR / ".fingerprint").read_text()
