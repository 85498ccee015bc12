"""Units and shared value types: wei, addresses, phases, samples."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NewType

Wei = NewType("Wei", int)
Address = NewType("Address", str)
MarketId = NewType("MarketId", str)


class Phase(IntEnum):
    """Mirror of ``IPredictionMarket.Phase`` (a test checks it against the ABI)."""

    COMMITTED = 0
    PARTICIPATION = 1
    REVEAL = 2
    REWARD = 3
    COLLECT = 4
    CANCELLED = 5


@dataclass(frozen=True)
class Sample:
    """A labelled sample: strictly increasing feature indices and a 0/1 label."""

    features: tuple[int, ...]
    label: int


@dataclass(frozen=True)
class TestSample:
    """A salted test sample as committed: Merkle leaf ``(index, salt, features, label)``."""

    __test__ = False  # not a pytest test class despite the name

    index: int
    salt: bytes
    features: tuple[int, ...]
    label: int

    @property
    def sample(self) -> Sample:
        return Sample(self.features, self.label)
