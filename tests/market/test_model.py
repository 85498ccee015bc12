"""The sparse binary perceptron of DESIGN.md "Model (v1)": exact integers, updates on mistakes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.encoding import decode_weights, encode_weights, weights_hash
from market.errors import InvalidParams, InvalidSample, WeightOverflow
from market.model import Perceptron
from market.types import Sample, TestSample

DIM = 8
INT64_MAX = 2**63 - 1


def rows(dim: int = DIM) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(0, dim - 1), max_size=dim, unique=True).map(
        lambda xs: tuple(sorted(xs))
    )


def models(bound: int = 10, dim: int = DIM) -> st.SearchStrategy[Perceptron]:
    return st.builds(
        Perceptron,
        weights=st.lists(st.integers(-bound, bound), min_size=dim, max_size=dim),
        intercept=st.integers(-bound, bound),
        learning_rate=st.integers(1, 5),
    )


def test_score_is_intercept_plus_weights_of_present_features() -> None:
    model = Perceptron(weights=[5, -3, 7, 0], intercept=-4, learning_rate=1)
    assert model.score((0, 2)) == -4 + 5 + 7
    assert model.score(()) == -4
    assert model.predict((0, 1)) == 0  # score -2
    assert model.predict((2,)) == 1  # score 3
    assert model.predict((1, 2)) == 0  # score 0 is not positive


@given(models(), rows(), st.integers(0, 1))
def test_update_moves_the_present_weights_only_on_a_mistake(
    model: Perceptron, features: tuple[int, ...], label: int
) -> None:
    before = model.copy()
    mistaken = model.predict(features) != label
    changed = model.update(features, label)
    assert changed == mistaken
    step = model.learning_rate if label == 1 else -model.learning_rate
    for j in range(DIM):
        expected = before.weights[j] + (step if changed and j in features else 0)
        assert model.weights[j] == expected
    assert model.intercept == before.intercept


def test_update_example_by_hand() -> None:
    model = Perceptron(weights=[0, 0, 0], intercept=0, learning_rate=2)
    assert model.update((0, 2), 1) is True  # score 0 → predicts 0, label 1: mistake
    assert model.weights == [2, 0, 2]
    assert model.update((0,), 1) is False  # score 2 → predicts 1: right, no change
    assert model.update((0, 1), 0) is True  # score 2 → predicts 1, label 0: mistake
    assert model.weights == [0, -2, 2]


def test_scores_are_exact_beyond_int64_and_floats() -> None:
    # Four weights of 2^62 sum to 2^64: outside int64, and 2^64 + 1 is not a float64.
    model = Perceptron(weights=[2**62] * 4, intercept=1, learning_rate=1)
    assert model.score(range(4)) == 2**64 + 1
    assert model.scores_many([(0, 1, 2, 3), (0,)]) == [2**64 + 1, 2**62 + 1]
    negative = Perceptron(weights=[-(2**62)] * 4, intercept=0, learning_rate=1)
    assert negative.predict_many([(0, 1, 2, 3)]).tolist() == [0]
    assert negative.scores_many([(0, 1, 2, 3)]) == [-(2**64)]


@given(models(bound=2**62), st.lists(rows(), max_size=30))
def test_vectorized_equals_scalar(model: Perceptron, data: list[tuple[int, ...]]) -> None:
    assert model.scores_many(data) == [model.score(row) for row in data]
    predictions = model.predict_many(data)
    assert predictions.dtype == np.int8
    assert predictions.tolist() == [model.predict(row) for row in data]


@given(models(bound=3), st.lists(rows(), max_size=30))
def test_vectorized_equals_scalar_for_small_weights(
    model: Perceptron, data: list[tuple[int, ...]]
) -> None:
    assert model.scores_many(data) == [model.score(row) for row in data]


def test_vectorized_refuses_features_outside_the_model() -> None:
    model = Perceptron.zeros(4)
    with pytest.raises(InvalidSample) as caught:
        model.predict_many([(1,), (4,)])
    assert caught.value.reason == "range"


def test_correct_count_and_accuracy() -> None:
    model = Perceptron(weights=[1, -1], intercept=0, learning_rate=1)
    test = [
        TestSample(0, bytes(32), (0,), 1),  # score 1 → 1, right
        TestSample(1, bytes(32), (1,), 0),  # score -1 → 0, right
        TestSample(2, bytes(32), (0, 1), 1),  # score 0 → 0, wrong
    ]
    assert model.correct_count(test) == 2
    assert model.accuracy(test) == pytest.approx(2 / 3)
    assert model.correct_count([Sample((0,), 0)]) == 0
    assert model.accuracy([]) == 0.0


def test_weight_overflow_raises_and_changes_nothing() -> None:
    model = Perceptron(weights=[INT64_MAX - 1, 0], intercept=-(2**63), learning_rate=2)
    with pytest.raises(WeightOverflow) as caught:
        model.update((0, 1), 1)
    assert (caught.value.feature, caught.value.value) == (0, INT64_MAX + 1)
    assert isinstance(caught.value, OverflowError)
    assert model.weights == [INT64_MAX - 1, 0]


def test_update_refuses_bad_samples() -> None:
    model = Perceptron.zeros(3)
    with pytest.raises(InvalidSample):
        model.update((3,), 1)
    with pytest.raises(InvalidSample):
        model.update((-1,), 1)  # a negative index would silently wrap around in Python
    with pytest.raises(InvalidSample):
        model.update((0,), 2)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"weights": [], "intercept": 0, "learning_rate": 1}, "dim"),
        ({"weights": [0], "intercept": 0, "learning_rate": 0}, "learningRate"),
        ({"weights": [0], "intercept": 2**63, "learning_rate": 1}, "intercept"),
        ({"weights": [0, -(2**63) - 1], "intercept": 0, "learning_rate": 1}, "weights"),
    ],
)
def test_parameters_are_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidParams) as caught:
        Perceptron(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


@given(models(bound=2**63 - 1))
def test_weights_round_trip_through_encoding(model: Perceptron) -> None:
    data = model.weights_bytes()
    assert data == encode_weights(model.weights)
    again = Perceptron.from_weights_bytes(
        data, intercept=model.intercept, learning_rate=model.learning_rate, dim=DIM
    )
    assert again == model
    assert decode_weights(data) == model.weights
    assert model.weights_hash() == weights_hash(model.weights)


def test_copy_is_independent() -> None:
    model = Perceptron.zeros(2)
    twin = model.copy()
    twin.update((0,), 1)
    assert model.weights == [0, 0]
    assert twin.weights == [1, 0]
    assert model != twin
