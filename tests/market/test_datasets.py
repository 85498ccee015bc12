"""Dataset loaders: CSV, JSONL, NPZ, the bundled scikit-learn sets, synthetic data, bad input."""

from __future__ import annotations

import doctest
import io
import json
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import market.datasets
from market.datasets import (
    BUILTIN_NAMES,
    Dataset,
    flip_labels,
    hidden_rule,
    load_builtin,
    load_dataset,
    synthetic,
)
from market.errors import InvalidDataset, InvalidInput


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_doctests() -> None:
    assert doctest.testmod(market.datasets).failed == 0


# --- good input -----------------------------------------------------------------------------------


def test_csv_numeric_keeps_column_order_and_values() -> None:
    ds = load_dataset(b"b,label,a\n1.5,1,-2\n3,0,4e2\n")
    assert ds.kind == "numeric"
    assert ds.columns == ("b", "a")
    assert ds.labels.tolist() == [1, 0]
    assert ds.numeric is not None
    assert ds.numeric.tolist() == [[1.5, -2.0], [3.0, 400.0]]


def test_csv_selected_columns_and_custom_label() -> None:
    ds = load_dataset(b"a,b,c,y\n1,2,3,1\n", label_column="y", columns=["c", "a"])
    assert ds.columns == ("c", "a")
    assert ds.numeric is not None and ds.numeric.tolist() == [[3.0, 1.0]]


def test_csv_text_and_sparse_with_quotes_and_blank_lines() -> None:
    text = load_dataset(b'text,label\n"Good, very good",1\n\nbad,0\n', kind="text")
    assert text.text == ("Good, very good", "bad")
    assert text.labels.tolist() == [1, 0]
    sparse = load_dataset(b"features,label\n3 1 7,1\n,0\n", kind="sparse")
    assert sparse.sparse == ((3, 1, 7), ())


def test_jsonl_numeric_text_sparse() -> None:
    rows = [{"x": 1, "z": 2.5, "label": 0}, {"z": 0, "x": -1, "label": True}]
    data = "\n".join(json.dumps(r) for r in rows).encode() + b"\n\n"
    ds = load_dataset(data)
    assert ds.columns == ("x", "z")
    assert ds.numeric is not None and ds.numeric.tolist() == [[1.0, 2.5], [-1.0, 0.0]]
    assert ds.labels.tolist() == [0, 1]
    text = load_dataset(b'{"id": 7, "text": "hi there", "label": 1}', kind="text")
    assert text.text == ("hi there",)  # named columns ignore other keys, like a CSV header
    picked = load_dataset(b'{"a": 1, "b": 2, "label": 1}\n{"b": 3, "label": 0}', columns=["b"])
    assert picked.numeric is not None and picked.numeric.tolist() == [[2.0], [3.0]]
    sparse = load_dataset(b'{"features": [0, 9], "label": 0}', format="jsonl", kind="sparse")
    assert sparse.sparse == ((0, 9),)


def test_npz_dense_numeric_and_indicator_and_csr() -> None:
    x = np.array([[0.5, 2.0], [1.0, 0.0]])
    ds = load_dataset(npz_bytes(X=x, y=np.array([1, 0])))
    assert ds.columns == ("x0", "x1")
    assert ds.numeric is not None and ds.numeric.tolist() == x.tolist()
    indicator = load_dataset(
        npz_bytes(X=np.array([[1, 0, 1], [0, 0, 1]]), y=np.array([0, 1])), kind="sparse"
    )
    assert indicator.sparse == ((0, 2), (2,))
    csr = load_dataset(
        npz_bytes(X_indices=np.array([4, 1, 7]), X_indptr=np.array([0, 2, 3]), y=np.array([1, 1]))
    )
    assert csr.kind == "sparse" and csr.sparse == ((4, 1), (7,))


def test_paths_pick_the_format_from_the_suffix(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_bytes(b"a,label\n1,1\n")
    (tmp_path / "d.jsonl").write_bytes(b'{"a": 2, "label": 0}\n')
    (tmp_path / "d.npz").write_bytes(npz_bytes(X=np.ones((1, 1)), y=np.array([1])))
    values = [load_dataset(tmp_path / f"d.{ext}").numeric for ext in ("csv", "jsonl", "npz")]
    assert [v.tolist() for v in values if v is not None] == [[[1.0]], [[2.0]], [[1.0]]]


def test_subset_and_split_are_deterministic_and_disjoint() -> None:
    ds = load_builtin("breast_cancer")
    a, b = ds.split([0.7], seed=3)
    again, _ = ds.split([0.7], seed=3)
    other, _ = ds.split([0.7], seed=4)
    assert (len(a), len(b)) == (398, 171)
    assert a.numeric is not None and again.numeric is not None and other.numeric is not None
    assert np.array_equal(a.numeric, again.numeric)
    assert not np.array_equal(a.numeric, other.numeric)
    assert b.numeric is not None
    rows = {tuple(r) for r in a.numeric.tolist()} | {tuple(r) for r in b.numeric.tolist()}
    assert len(rows) == len({tuple(r) for r in ds.numeric.tolist()})  # type: ignore[union-attr]
    assert ds.subset([2, 0]).labels.tolist() == [ds.labels[2], ds.labels[0]]


# --- bad input: each error names the rule, and the row and column where there is one --------------

CELL_ERRORS = [
    # (data, kwargs, row, column, words in the message)
    (b"a,label\n1,1\nnan,0\n", {}, 1, "a", "NaN"),
    (b"a,label\n1,1\n-inf,0\n", {}, 1, "a", "not finite"),
    (b'{"a": 1, "label": 0}\n{"a": NaN, "label": 1}\n', {}, 1, "a", "NaN"),
    (b'{"a": 1, "label": 0}\n{"a": Infinity, "label": 1}\n', {}, 1, "a", "not finite"),
    (b"a,label\n1,2\n", {}, 0, "label", "not 0 or 1"),
    (b"a,label\n1,1\n2,yes\n", {}, 1, "label", "not 0 or 1"),
    (b'{"a": 1, "label": -1}\n', {}, 0, "label", "not 0 or 1"),
    (b"a,b,label\n1,2,0\n1,abc,1\n", {}, 1, "b", "not a number"),
    (b"a,b,label\n1,,0\n", {}, 0, "b", "missing"),
    (b'{"a": "7", "label": 0}\n', {}, 0, "a", "not a number"),
    (b'{"a": null, "label": 0}\n', {}, 0, "a", "missing"),
    (b'{"a": 1, "label": 0}\n{"label": 1}\n', {}, 1, "a", "missing"),
    (b'{"a": 1, "label": 0}\n{"a": 1, "b": 2, "label": 1}\n', {}, 1, "b", "unexpected"),
    (b"features,label\n1 -2,0\n", {"kind": "sparse"}, 0, "features", "negative"),
    (b"features,label\n1 x,0\n", {"kind": "sparse"}, 0, "features", "integer"),
    (b'{"features": [1, 2.5], "label": 0}', {"kind": "sparse"}, 0, "features", "integer"),
    (b'{"text": 5, "label": 0}', {"kind": "text"}, 0, "text", "not text"),
]


@pytest.mark.parametrize(("data", "kwargs", "row", "column", "words"), CELL_ERRORS)
def test_bad_cells_name_row_and_column(
    data: bytes, kwargs: dict[str, Any], row: int, column: str, words: str
) -> None:
    with pytest.raises(InvalidDataset) as caught:
        load_dataset(data, **kwargs)
    assert (caught.value.row, caught.value.column) == (row, column)
    message = str(caught.value)
    assert f"row {row}" in message and column in message and words in message


ROW_ERRORS = [
    (b"a,b,label\n1,2,0\n1,2\n", {}, 1, "2 fields but the header has 3"),
    (b"a,label\n1,0\n2,1\n3,0\n", {"max_rows": 2}, 2, "limit of 2 rows"),
    (b'{"a": 1, "label": 0}\n{"a": 1,\n', {}, 1, "not valid JSON"),
    (b'{"a": 1, "label": 0}\n[1, 0]\n', {}, 1, "not an object"),
]


@pytest.mark.parametrize(("data", "kwargs", "row", "words"), ROW_ERRORS)
def test_bad_rows_name_the_row(data: bytes, kwargs: dict[str, Any], row: int, words: str) -> None:
    with pytest.raises(InvalidInput, match=f"row {row}: .*{words}"):
        load_dataset(data, **kwargs)


COLUMN_ERRORS = [
    (b"a,b\n1,0\n", {}, "label", "label column is missing"),
    (b"a,label\n1,0\n", {"columns": ["a", "c"]}, "c", "feature column is missing"),
    (b"a,label\n1,0\n", {"kind": "text"}, "text", "missing"),
    (b"a,a,label\n1,2,0\n", {}, "a", "more than once"),
    (b"a,label\n1,0\n", {"columns": ["label"]}, "label", "cannot also be a feature"),
]


@pytest.mark.parametrize(("data", "kwargs", "column", "words"), COLUMN_ERRORS)
def test_bad_columns_name_the_column(
    data: bytes, kwargs: dict[str, Any], column: str, words: str
) -> None:
    with pytest.raises(InvalidInput, match=words) as caught:
        load_dataset(data, **kwargs)
    assert caught.value.field == column


FILE_ERRORS = [
    (b"", {}, "empty"),
    (b"  \n\n", {}, "empty"),
    (b"a,label\n", {}, "no data rows"),
    (b"a,label\n1,0\n", {"max_bytes": 5}, "over the limit of 5 bytes"),
    (b"a,label\n\xff,0\n", {}, "not UTF-8"),
    (b"label\n1\n", {}, "no feature columns"),
    (b"a,,label\n1,2,0\n", {}, "field 1 is empty"),
]


@pytest.mark.parametrize(("data", "kwargs", "words"), FILE_ERRORS)
def test_bad_files_say_why(data: bytes, kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        load_dataset(data, **kwargs)


def test_size_limit_is_checked_before_reading_a_path(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,label\n" + b"1,0\n" * 1000)
    with pytest.raises(InvalidInput, match="4008 bytes, over the limit of 4000"):
        load_dataset(path, max_bytes=4000)
    with pytest.raises(InvalidInput, match="cannot read"):
        load_dataset(tmp_path / "absent.csv")


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not 0 or 1"):
        load_dataset(b"a,label\n1,3\n")


def test_npz_cells_name_row_and_column() -> None:
    x = np.zeros((3, 2))
    x[2, 1] = np.nan
    with pytest.raises(InvalidDataset, match="NaN") as caught:
        load_dataset(npz_bytes(X=x, y=np.array([0, 1, 0])))
    assert (caught.value.row, caught.value.column) == (2, "x1")
    with pytest.raises(InvalidDataset, match="not 0 or 1") as caught:
        load_dataset(npz_bytes(X=np.zeros((2, 1)), y=np.array([0, 2])))
    assert (caught.value.row, caught.value.column) == (1, "y")
    with pytest.raises(InvalidDataset, match="not 0 or 1") as caught:
        load_dataset(npz_bytes(X=np.array([[0, 3]]), y=np.array([0])), kind="sparse")
    assert (caught.value.row, caught.value.column) == (0, "x1")
    with pytest.raises(InvalidDataset, match="negative") as caught:
        load_dataset(
            npz_bytes(X_indices=np.array([1, 2, -3]), X_indptr=np.array([0, 2, 3]), y=np.ones(2))
        )
    assert (caught.value.row, caught.value.column) == (1, "X")


NPZ_ERRORS = [
    ({"X": np.zeros((2, 2))}, "no array 'y'"),
    ({"y": np.zeros(2)}, "no array 'X'"),
    ({"X": np.zeros((3, 2)), "y": np.zeros(2)}, "X has 3 rows but y has 2"),
    ({"X": np.zeros(2), "y": np.zeros(2)}, "must be 2-D"),
    ({"X": np.array([["a"]]), "y": np.zeros(1)}, "not numbers"),
    ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "no data rows"),
    ({"X_indices": np.array([1]), "X_indptr": np.array([0, 1]), "y": np.zeros(2)}, "needs 3"),
    ({"X_indices": np.array([1]), "y": np.zeros(1)}, "both X_indices and X_indptr"),
    ({"X_indices": np.array([1]), "X_indptr": np.array([0, 2]), "y": np.ones(1)}, "end at"),
]


@pytest.mark.parametrize(("arrays", "words"), NPZ_ERRORS)
def test_bad_npz_says_why(arrays: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        load_dataset(npz_bytes(**arrays))


def test_npz_refuses_pickles_and_bombs() -> None:
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.array([1, 2]), np.array([3])
    with pytest.raises(InvalidInput, match="pickled"):
        load_dataset(npz_bytes(X=ragged, y=np.array([0, 1])))
    # 8 MB of zeros compress to a few kB: the unpacked size is what counts.
    bomb = npz_bytes(X=np.zeros((1_000_000, 1)), y=np.zeros(1_000_000))
    assert len(bomb) < 100_000
    with pytest.raises(InvalidInput, match="unpacks to .* over the limit of 1000000"):
        load_dataset(bomb, max_bytes=1_000_000)
    with pytest.raises(InvalidInput, match="limit of 10 rows"):
        load_dataset(npz_bytes(X=np.zeros((11, 1)), y=np.zeros(11)), max_rows=10)
    with pytest.raises(InvalidInput, match="not a valid NPZ"):
        load_dataset(b"PK\x03\x04 truncated")


# --- bundled data ---------------------------------------------------------------------------------


def test_builtins_load_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a bundled dataset must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    cancer = load_builtin("breast_cancer")
    assert cancer.numeric is not None and cancer.numeric.shape == (569, 30)
    assert int(cancer.labels.sum()) == 357  # benign
    odd = load_builtin("digits_odd")
    assert odd.numeric is not None and odd.numeric.shape == (1797, 64)
    assert int(odd.labels.sum()) == 906
    three = load_builtin("digits_3")
    assert int(three.labels.sum()) == 183
    assert set(BUILTIN_NAMES) >= {"breast_cancer", "digits_odd", "digits_0", "digits_9"}
    with pytest.raises(ValueError, match="unknown built-in dataset 'digits_'"):
        load_builtin("digits_")


# --- synthetic data -------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_follows_its_hidden_rule() -> None:
    samples = synthetic(500, dim=256, features=(3, 20), seed=7)
    assert samples == synthetic(500, dim=256, features=(3, 20), seed=7)
    assert samples != synthetic(500, dim=256, features=(3, 20), seed=8)
    weights = hidden_rule(256, 7)
    for s in samples:
        assert 3 <= len(s.features) <= 20
        assert all(a < b for a, b in zip(s.features, s.features[1:], strict=False))
        assert s.features[0] >= 0 and s.features[-1] < 256
        assert s.label == int(sum(int(weights[j]) for j in s.features) > 0)
    positives = sum(s.label for s in samples)
    assert 150 < positives < 350  # the rule is balanced, not constant


def test_noise_and_flip_labels_flip_exactly_the_fraction() -> None:
    clean = synthetic(400, dim=128, seed=1)
    noisy = synthetic(400, dim=128, seed=1, noise=0.1)
    assert sum(a.label != b.label for a, b in zip(clean, noisy, strict=True)) == 40
    assert [s.features for s in noisy] == [s.features for s in clean]
    flipped = flip_labels(clean, 1.0)
    assert all(a.label == 1 - b.label for a, b in zip(clean, flipped, strict=True))
    assert flip_labels(clean, 0.0) == clean
    assert flip_labels(clean, 0.25, seed=2) == flip_labels(clean, 0.25, seed=2)
    assert flip_labels(clean, 0.25, seed=2) != flip_labels(clean, 0.25, seed=3)
    with pytest.raises(ValueError, match="within"):
        flip_labels(clean, 1.5)
    with pytest.raises(ValueError, match="low <= high"):
        synthetic(1, dim=8, features=9)


def test_dataset_refuses_mixed_kinds() -> None:
    with pytest.raises(ValueError, match="only numeric rows"):
        Dataset("numeric", ("a",), np.zeros(1, np.uint8), text=("x",))


def test_zip_listing_helper_sanity() -> None:
    # The bomb check reads sizes from the zip directory; make sure np.savez writes them there.
    data = npz_bytes(X=np.zeros((10, 10)), y=np.zeros(10))
    sizes = {i.filename: i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist()}
    assert sizes["X.npy"] >= 800
