"""The market's model (DESIGN.md, "Model (v1)"): a binary perceptron over sparse binary features.

Integer arithmetic throughout, as on-chain: ``score(x) = intercept + Σ_{j∈x} w[j]``,
``predict(x) = 1 if score(x) > 0 else 0``, and ``update(x, y)`` moves the weights of ``x`` by
the learning rate only when ``predict(x) != y``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from market.encoding import INT64_MAX, INT64_MIN, decode_weights, encode_weights, weights_hash
from market.errors import InvalidParams, InvalidSample, WeightOverflow


class Labelled(Protocol):
    """Anything with sparse ``features`` and a 0/1 ``label`` (Sample, TestSample)."""

    @property
    def features(self) -> tuple[int, ...]: ...

    @property
    def label(self) -> int: ...


def _in_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


@dataclass(eq=True)
class Perceptron:
    """A sparse binary perceptron with int64 weights (``dim = len(weights)``).

    >>> model = Perceptron(weights=[0, 0, 0], intercept=0, learning_rate=2)
    >>> model.update((0, 2), 1), model.weights, model.predict((2,))
    (True, [2, 0, 2], 1)
    """

    weights: list[int]
    intercept: int
    learning_rate: int

    def __post_init__(self) -> None:
        self.weights = [int(w) for w in self.weights]
        if not self.weights:
            raise InvalidParams("dim", "the model needs at least one weight")
        if self.learning_rate < 1 or not _in_int64(self.learning_rate):
            raise InvalidParams("learningRate", f"{self.learning_rate} is not an int64 >= 1")
        if not _in_int64(self.intercept):
            raise InvalidParams("intercept", f"{self.intercept} is outside int64")
        for j, w in enumerate(self.weights):
            if not _in_int64(w):
                raise InvalidParams("weights", f"weight {j} = {w} is outside int64")

    @property
    def dim(self) -> int:
        """Number of features the model knows."""
        return len(self.weights)

    @classmethod
    def zeros(cls, dim: int, *, intercept: int = 0, learning_rate: int = 1) -> Perceptron:
        """A model with all weights zero."""
        return cls(weights=[0] * dim, intercept=intercept, learning_rate=learning_rate)

    @classmethod
    def from_weights_bytes(
        cls, data: bytes, *, intercept: int, learning_rate: int, dim: int | None = None
    ) -> Perceptron:
        """A model from its ``WEIGHTS`` bytes and its scalar parameters."""
        weights = decode_weights(data, dim)
        return cls(weights=weights, intercept=intercept, learning_rate=learning_rate)

    def weights_bytes(self) -> bytes:
        """The ``WEIGHTS`` encoding of the weights."""
        return encode_weights(self.weights)

    def weights_hash(self) -> bytes:
        """``keccak256(WEIGHTS)``, as the contract stores it."""
        return weights_hash(self.weights)

    def copy(self) -> Perceptron:
        """An independent copy (updates to one do not touch the other)."""
        return Perceptron(
            weights=list(self.weights), intercept=self.intercept, learning_rate=self.learning_rate
        )

    # ------------------------------------------------------------------------- one sample

    def score(self, features: Iterable[int]) -> int:
        """``intercept + Σ_{j∈x} w[j]``, exact (features must be valid indices ``< dim``)."""
        return self.intercept + sum(self.weights[j] for j in features)

    def predict(self, features: Iterable[int]) -> int:
        """1 if the score is positive, else 0."""
        return 1 if self.score(features) > 0 else 0

    def update(self, features: Sequence[int], label: int) -> bool:
        """Learn from one sample if the model gets it wrong; returns whether the weights moved.

        On a mistake each ``w[j]``, ``j ∈ x``, moves by ``+lr`` for label 1 and ``-lr`` for 0.
        Raises :class:`WeightOverflow` (and changes nothing) if a weight would leave int64.
        """
        if label not in (0, 1):
            raise InvalidSample("label", 0, f"label {label} is not 0 or 1")
        for position, j in enumerate(features):
            if not 0 <= j < self.dim:
                raise InvalidSample(
                    "range", position, f"feature {j} at position {position} is not < {self.dim}"
                )
        if self.predict(features) == label:
            return False
        step = self.learning_rate if label == 1 else -self.learning_rate
        for j in features:
            if not _in_int64(self.weights[j] + step):
                raise WeightOverflow(j, self.weights[j] + step)
        for j in features:
            self.weights[j] += step
        return True

    # ------------------------------------------------------------------------- datasets

    def _vector_scores(self, rows: Sequence[Sequence[int]]) -> npt.NDArray[np.int64] | None:
        """Scores of ``rows`` in int64, or None when int64 might not hold them exactly."""
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        total = int(lengths.sum())
        flat = np.fromiter((j for row in rows for j in row), dtype=np.int64, count=total)
        if total and (int(flat.min()) < 0 or int(flat.max()) >= self.dim):
            raise InvalidSample("range", 0, f"a feature index is outside 0..{self.dim - 1}")
        largest = max(abs(w) for w in self.weights)
        # Every running sum below, and every score, stays within ±(largest·total + |intercept|):
        # int64 is exact only under 2^63, so larger models take the Python-int path instead.
        if largest * total + abs(self.intercept) > INT64_MAX:
            return None
        weights = np.asarray(self.weights, dtype=np.int64)
        running = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(weights[flat])))
        ends = np.cumsum(lengths)
        sums: npt.NDArray[np.int64] = running[ends] - running[ends - lengths] + self.intercept
        return sums

    def scores_many(self, rows: Sequence[Sequence[int]]) -> list[int]:
        """:meth:`score` of each row of feature indices, exact, vectorized where int64 is safe."""
        scores = self._vector_scores(rows)
        if scores is None:
            return [self.score(row) for row in rows]
        return [int(s) for s in scores]

    def predict_many(self, rows: Sequence[Sequence[int]]) -> npt.NDArray[np.int8]:
        """:meth:`predict` of each row, as an int8 array of 0/1."""
        scores = self._vector_scores(rows)
        if scores is None:
            return np.array([self.predict(row) for row in rows], dtype=np.int8)
        return (scores > 0).astype(np.int8)

    def correct_count(self, samples: Sequence[Labelled]) -> int:
        """How many of ``samples`` the model labels correctly (the ``correct(M)`` of DESIGN)."""
        predictions = self.predict_many([s.features for s in samples])
        labels = np.fromiter((s.label for s in samples), dtype=np.int64, count=len(samples))
        return int(np.count_nonzero(predictions == labels))

    def accuracy(self, samples: Sequence[Labelled]) -> float:
        """Fraction of ``samples`` labelled correctly, for display (0.0 for no samples)."""
        return self.correct_count(samples) / len(samples) if samples else 0.0


__all__ = ["Labelled", "Perceptron"]
