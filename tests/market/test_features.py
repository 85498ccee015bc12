"""Feature encoders and the stored FeatureSpec: determinism, limits, round trips, bad input."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import market.features
from market.datasets import Dataset, load_builtin, load_dataset, synthetic
from market.errors import InvalidDataset, InvalidInput
from market.features import (
    MAX_DIM,
    MAX_FEATURES,
    BinnedNumericEncoder,
    FeatureSpec,
    HashedTextEncoder,
    PrecomputedSparseEncoder,
    token_index,
)
from market.types import Sample

ROOT = Path(__file__).resolve().parents[2]


def numeric(rows: list[list[float]], columns: tuple[str, ...], labels: list[int]) -> Dataset:
    matrix = np.asarray(rows, dtype=np.float64)
    return Dataset("numeric", columns, np.asarray(labels, np.uint8), numeric=matrix)


def text_dataset(texts: list[str], labels: list[int]) -> Dataset:
    return Dataset("text", ("text",), np.asarray(labels, np.uint8), text=tuple(texts))


def strictly_increasing(row: tuple[int, ...]) -> bool:
    return all(a < b for a, b in zip(row, row[1:], strict=False))


def test_doctests() -> None:
    assert doctest.testmod(market.features).failed == 0


# --- text -----------------------------------------------------------------------------------------


def test_token_hash_is_pinned() -> None:
    # These values must never change: launched markets and their participants depend on them.
    tokens = ("hello", "world", "hello world", "é", "42")
    assert [token_index(t, 8192) for t in tokens] == [5547, 3832, 7203, 5925, 1691]
    assert (token_index("hello", 1024), token_index("world", 1024)) == (427, 760)


def test_tokens_are_lowercased_words_then_bigrams() -> None:
    encoder = HashedTextEncoder(dim=4096, bigrams=True)
    assert encoder.tokens("Don't STOP_now, 42!") == [
        "don",
        "t",
        "stop",
        "now",
        "42",
        "don t",
        "t stop",
        "stop now",
        "now 42",
    ]
    plain = HashedTextEncoder(dim=4096)
    assert plain.tokens("A b a") == ["a", "b", "a"]
    (row,) = plain.features(["A b a"])
    assert row == tuple(sorted({token_index("a", 4096), token_index("b", 4096)}))


def test_text_cap_keeps_the_first_tokens_in_text_order() -> None:
    words = [f"w{i}" for i in range(600)]
    encoder = HashedTextEncoder(dim=MAX_DIM, max_features=10, bigrams=True)
    (row,) = encoder.features([" ".join(words)])
    first = []
    for word in words:
        index = token_index(word, MAX_DIM)
        if index not in first:
            first.append(index)
    assert row == tuple(sorted(first[:10]))


def test_text_encode_refuses_rows_without_features() -> None:
    spec = FeatureSpec(HashedTextEncoder(dim=64))
    samples = spec.encode(text_dataset(["good film", "bad"], [1, 0]))
    assert [s.label for s in samples] == [1, 0]
    with pytest.raises(InvalidInput, match="row 1, column text: encodes to no features") as caught:
        spec.encode(text_dataset(["good", " ,.;"], [1, 0]))
    assert isinstance(caught.value, InvalidDataset)
    assert (caught.value.row, caught.value.column) == (1, "text")
    assert spec.features(["!!!"]) == [()]  # predictions may see an empty row


@given(st.lists(st.text(max_size=300), max_size=8), st.integers(1, MAX_DIM), st.booleans())
def test_text_rows_obey_the_market_limits(texts: list[str], dim: int, bigrams: bool) -> None:
    encoder = HashedTextEncoder(dim=dim, max_features=16, bigrams=bigrams)
    for row in encoder.features(texts):
        assert len(row) <= 16 and strictly_increasing(row)
        assert all(0 <= j < dim for j in row)


# --- numbers --------------------------------------------------------------------------------------


def test_binned_numeric_fits_quantile_edges_and_one_bin_per_column() -> None:
    data = numeric([[0, 5, 1], [1, 5, 2], [2, 5, 3], [3, 5, 4]], ("a", "const", "b"), [0, 1, 0, 1])
    encoder = BinnedNumericEncoder.fit(data, n_bins=4)
    # a: quantiles 0.75, 1.5, 2.25; const: one bin; b: 1.75, 2.5, 3.25.
    assert encoder.edges == ((0.75, 1.5, 2.25), (), (1.75, 2.5, 3.25))
    assert encoder.dim == 4 + 1 + 4
    samples = encoder.encode(data)
    assert samples == [
        Sample((0, 4, 5), 0),
        Sample((1, 4, 6), 1),
        Sample((2, 4, 7), 0),
        Sample((3, 4, 8), 1),
    ]
    # Values outside the fitted range fall in the outer bins; an edge value goes up a bin.
    assert encoder.features([[-100, 0, 100], [1.5, 9, 1.75]]) == [(0, 4, 8), (2, 4, 6)]


def test_binned_numeric_drops_empty_bins_of_skewed_columns() -> None:
    column = [[0.0]] * 90 + [[float(i)] for i in range(1, 11)]
    encoder = BinnedNumericEncoder.fit(numeric(column, ("x",), [0] * 100), n_bins=8)
    rows = encoder.features(column)
    assert encoder.edges[0][0] > 0.0  # no edge at the minimum: bin 0 is not empty
    used = {r[0] for r in rows}
    assert used == set(range(encoder.dim))


def test_binned_numeric_reads_columns_by_name() -> None:
    provider = numeric([[1, 10], [2, 20], [3, 30]], ("a", "b"), [0, 1, 1])
    encoder = BinnedNumericEncoder.fit(provider, n_bins=2)
    participant = numeric([[20, 2], [10, 1]], ("b", "a"), [1, 0])
    assert encoder.encode(participant) == [Sample((1, 3), 1), Sample((0, 2), 0)]
    with pytest.raises(InvalidInput, match="missing") as caught:
        encoder.encode(numeric([[1]], ("a",), [0]))
    assert caught.value.field == "b"


def test_binned_numeric_refuses_nan_and_inf_with_row_and_column() -> None:
    good = numeric([[1, 2], [3, 4]], ("a", "b"), [0, 1])
    encoder = BinnedNumericEncoder.fit(good)
    with pytest.raises(InvalidDataset, match="NaN") as caught:
        encoder.features([[1, 2], [3, float("nan")]])
    assert (caught.value.row, caught.value.column) == (1, "b")
    with pytest.raises(InvalidDataset, match="inf") as caught:
        BinnedNumericEncoder.fit(numeric([[1, 2], [float("-inf"), 4]], ("a", "b"), [0, 1]))
    assert (caught.value.row, caught.value.column) == (1, "a")
    with pytest.raises(InvalidInput, match=r"expected \(n, 2\)"):
        encoder.features([[1, 2, 3]])
    with pytest.raises(InvalidInput, match="reads numeric data, not text"):
        encoder.encode(text_dataset(["x"], [0]))


def test_binned_numeric_limits() -> None:
    wide = numeric([list(range(300))], tuple(f"c{i}" for i in range(300)), [0])
    with pytest.raises(ValueError, match="300 features per sample, over max_features=256"):
        BinnedNumericEncoder.fit(wide)
    many = numeric(
        [[float(i)] * 200 for i in range(100)], tuple(f"c{i}" for i in range(200)), [0] * 100
    )
    with pytest.raises(ValueError, match="over the limit of 8192; use fewer bins"):
        BinnedNumericEncoder.fit(many, n_bins=64)


def test_builtins_encode_within_the_market_limits() -> None:
    for name, dim in (("breast_cancer", 240), ("digits_odd", None)):
        data = load_builtin(name)
        spec = FeatureSpec(BinnedNumericEncoder.fit(data))
        samples = spec.encode(data)
        assert spec.dim <= MAX_DIM and (dim is None or spec.dim == dim)
        assert len(samples) == len(data)
        assert all(len(s.features) == len(data.columns) <= MAX_FEATURES for s in samples)
        assert all(strictly_increasing(s.features) and s.features[-1] < spec.dim for s in samples)


@given(
    st.lists(st.lists(st.floats(-1e6, 1e6), min_size=3, max_size=3), min_size=1, max_size=40),
    st.integers(1, 12),
)
def test_numeric_rows_obey_the_market_limits(rows: list[list[float]], n_bins: int) -> None:
    data = numeric(rows, ("a", "b", "c"), [0] * len(rows))
    encoder = BinnedNumericEncoder.fit(data, n_bins=n_bins)
    for row in encoder.features(rows):
        assert len(row) == 3 and strictly_increasing(row) and row[-1] < encoder.dim


# --- precomputed indices --------------------------------------------------------------------------


def test_precomputed_sparse_sorts_and_checks() -> None:
    encoder = PrecomputedSparseEncoder(dim=10, max_features=3)
    assert encoder.features([[7, 2], (0,), []]) == [(2, 7), (0,), ()]
    for rows, words in (
        ([[1], [10]], "row 1: feature index 10 is outside \\[0, 10\\)"),
        ([[-1]], "row 0: feature index -1 is outside"),
        ([[3, 1, 3]], "row 0: feature index 3 appears twice"),
        ([[], [1, 2, 3, 4]], "row 1: 4 features, over max_features=3"),
        ([[1.0]], "row 0: feature index 1.0 is not an integer"),
    ):
        with pytest.raises(InvalidInput, match=words):
            encoder.features(rows)


def test_precomputed_sparse_from_files() -> None:
    data = load_dataset(b"features,label\n5 1,1\n2,0\n", kind="sparse")
    spec = FeatureSpec(PrecomputedSparseEncoder(dim=8))
    assert spec.encode(data) == [Sample((1, 5), 1), Sample((2,), 0)]
    with pytest.raises(InvalidInput, match="reads sparse data, not numeric"):
        spec.encode(load_dataset(b"a,label\n1,0\n"))


def test_synthetic_samples_pass_through_unchanged() -> None:
    samples = synthetic(50, dim=64, features=(1, 8), seed=5)
    spec = FeatureSpec(PrecomputedSparseEncoder(dim=64))
    assert spec.features([s.features for s in samples]) == [s.features for s in samples]


# --- the stored spec ------------------------------------------------------------------------------

SPECS = [
    FeatureSpec(HashedTextEncoder(dim=2048, max_features=64, bigrams=True)),
    FeatureSpec(PrecomputedSparseEncoder(dim=100, max_features=7)),
    # Floats that print with 17 digits must come back bit for bit.
    FeatureSpec(BinnedNumericEncoder(columns=("x", "y"), edges=((1e-300, 0.1 + 0.2, 7.5), ()))),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.encoder.name)
def test_spec_round_trips_through_json(spec: FeatureSpec) -> None:
    text = spec.to_json()
    again = FeatureSpec.from_json(text)
    assert again == spec
    assert again.to_json() == text
    assert again.fingerprint() == spec.fingerprint()
    document = json.loads(text)
    assert document["version"] == 1 and document["encoder"] == spec.encoder.name
    assert text == json.dumps(document, sort_keys=True, separators=(",", ":"))


def test_fitted_spec_reloaded_encodes_identically() -> None:
    data = load_builtin("breast_cancer")
    provider = FeatureSpec(BinnedNumericEncoder.fit(data))
    participant = FeatureSpec.from_json(provider.to_json().encode())
    assert participant.encode(data) == provider.encode(data)
    assert participant.sample(data.numeric[0], 1) == Sample(  # type: ignore[index]
        provider.encode(data)[0].features, 1
    )


def test_fingerprint_is_pinned() -> None:
    spec = FeatureSpec(PrecomputedSparseEncoder(dim=16))
    expected = "979c231329dd63c6f45f23df7c603e8bd3ce7edf99f2648d9e36010cbd88c7fe"
    assert spec.fingerprint() == expected
    assert FeatureSpec(PrecomputedSparseEncoder(dim=17)).fingerprint() != expected


BAD_SPECS = [
    ("not json", "not valid JSON"),
    ("[1]", "must be a JSON object"),
    ('{"version":2,"encoder":"precomputed_sparse","params":{"dim":8}}', "version 2"),
    ('{"version":1,"encoder":"word2vec","params":{}}', "unknown encoder 'word2vec'"),
    ('{"version":1,"encoder":"precomputed_sparse"}', "has keys"),
    ('{"version":1,"encoder":"precomputed_sparse","params":[]}', "params must be"),
    ('{"version":1,"encoder":"precomputed_sparse","params":{"dim":0}}', r"dim=0 .*\[1, 8192\]"),
    ('{"version":1,"encoder":"precomputed_sparse","params":{"dim":9000}}', "dim=9000"),
    ('{"version":1,"encoder":"precomputed_sparse","params":{"dim":true}}', "dim=True"),
    ('{"version":1,"encoder":"precomputed_sparse","params":{"dim":8,"x":1}}', "invalid"),
    ('{"version":1,"encoder":"hashed_text","params":{"max_features":300}}', "max_features=300"),
    ('{"version":1,"encoder":"hashed_text","params":{"bigrams":"yes"}}', "true or false"),
    (
        '{"version":1,"encoder":"binned_numeric","params":{"columns":["a"],"edges":[[2,1]]}}',
        "column 'a': bin edges must be strictly increasing",
    ),
    (
        '{"version":1,"encoder":"binned_numeric","params":{"columns":["a"],"edges":[["1"]]}}',
        "finite floats",
    ),
    (
        '{"version":1,"encoder":"binned_numeric","params":{"columns":["a","b"],"edges":[[]]}}',
        "2 columns and 1 edge lists",
    ),
    (
        '{"version":1,"encoder":"binned_numeric","params":{"columns":["a","a"],"edges":[[],[]]}}',
        "repeat a name",
    ),
]


@pytest.mark.parametrize(("text", "words"), BAD_SPECS)
def test_bad_specs_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        FeatureSpec.from_json(text)


def test_spec_accepts_integer_edges_written_by_hand() -> None:
    text = '{"version":1,"encoder":"binned_numeric","params":{"columns":["a"],"edges":[[1,2.5]]}}'
    spec = FeatureSpec.from_json(text)
    assert spec.features([[0], [1], [3]]) == [(0,), (1,), (2,)]


def test_sample_validates_label_and_emptiness() -> None:
    spec = FeatureSpec(HashedTextEncoder(dim=32))
    assert spec.sample("hi", 1).label == 1
    with pytest.raises(InvalidInput, match="not 0 or 1"):
        spec.sample("hi", 2)
    with pytest.raises(InvalidInput, match="no features"):
        spec.sample("", 0)


# --- same input, same output, in another process --------------------------------------------------

_PROGRAM = """
import json, sys
from market.datasets import load_builtin
from market.features import BinnedNumericEncoder, FeatureSpec, HashedTextEncoder
text = FeatureSpec(HashedTextEncoder(dim=8192, bigrams=True))
data = load_builtin("breast_cancer")
binned = FeatureSpec(BinnedNumericEncoder.fit(data))
print(json.dumps([
    text.features(["The quick brown fox", "jumps over the lazy dog", "Ünïcödé wörds"]),
    binned.to_json(),
    [s.features for s in binned.encode(data)][:50],
]))
"""


def test_encoding_does_not_depend_on_the_process() -> None:
    outputs = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _PROGRAM],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    text_rows = json.loads(outputs.pop())[0]
    assert text_rows[0] == sorted(
        {
            token_index(t, 8192)
            for t in ["the", "quick", "brown", "fox", "the quick", "quick brown", "brown fox"]
        }
    )
