"""Datasets: load providers' and participants' files, the bundled scikit-learn sets, synthetic data.

Every loader validates as it reads and raises :class:`~market.errors.InvalidDataset` naming the
row (0-based index of the data row), the column and the rule that was broken
(:class:`~market.errors.InvalidInput` when the fault is a whole file, column or row). A
:class:`Dataset` holds one kind of rows, ready for the encoder of that kind in
:mod:`market.features`:

- ``numeric``: a float64 matrix, one column per named feature column (``BinnedNumericEncoder``);
- ``text``: one string per row (``HashedTextEncoder``);
- ``sparse``: one tuple of feature indices per row (``PrecomputedSparseEncoder``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from market.errors import InvalidDataset, InvalidInput
from market.types import Sample

DatasetKind = Literal["numeric", "text", "sparse"]
DatasetFormat = Literal["csv", "jsonl", "npz"]
FloatMatrix = npt.NDArray[np.float64]
Labels = npt.NDArray[np.uint8]

# The same ceiling as the API's upload limit (``Settings.upload_limit_bytes``).
DEFAULT_MAX_BYTES = 20_000_000
# On-chain a test set holds at most 40,000 feature entries (docs/protocol.md); initial and
# participants' data may be larger; 100,000 rows of 20 numbers (16.5 MB of CSV) load in 2.5 s.
DEFAULT_MAX_ROWS = 100_000
_NPZ_MAGIC = b"PK\x03\x04"


def dataset_error(rule: str, *, row: int | None = None, column: str | None = None) -> InvalidInput:
    """The error for a broken ``rule``: :class:`InvalidDataset` when a cell is at fault.

    A problem with the whole file (too big, empty) or a whole column (missing from the header)
    or a whole row (ragged, not JSON) has no cell: it is an :class:`InvalidInput` whose
    ``field`` is the column, or ``dataset``, and whose message names the row.
    """
    if row is not None and column is not None:
        return InvalidDataset(row, column, rule)
    if row is not None:
        return InvalidInput("dataset", f"row {row}: {rule}")
    return InvalidInput(column if column is not None else "dataset", rule)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled rows of one kind; exactly one of ``numeric``, ``text``, ``sparse`` is set."""

    kind: DatasetKind
    columns: tuple[str, ...]
    labels: Labels
    numeric: FloatMatrix | None = None
    text: tuple[str, ...] | None = None
    sparse: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        held = {"numeric": self.numeric, "text": self.text, "sparse": self.sparse}
        for kind, rows in held.items():
            if (rows is not None) != (kind == self.kind):
                raise ValueError(f"a {self.kind} dataset must hold only {self.kind} rows")
        rows = held[self.kind]
        assert rows is not None
        if len(rows) != n:
            raise ValueError(f"{len(rows)} rows but {n} labels")
        if self.numeric is not None and self.numeric.shape != (n, len(self.columns)):
            raise ValueError(f"numeric rows of shape {self.numeric.shape} for {self.columns}")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.intp]) -> Dataset:
        """The rows at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.intp)
        return Dataset(
            kind=self.kind,
            columns=self.columns,
            labels=self.labels[idx],
            numeric=None if self.numeric is None else self.numeric[idx],
            text=None if self.text is None else tuple(self.text[i] for i in idx),
            sparse=None if self.sparse is None else tuple(self.sparse[i] for i in idx),
        )

    def split(self, fractions: Sequence[float], seed: int) -> list[Dataset]:
        """Shuffle with ``seed``; one part per fraction, then one more with the rest."""
        if any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
            raise ValueError(f"fractions {list(fractions)} must be >= 0 and sum to at most 1")
        order = np.random.default_rng(seed).permutation(len(self))
        cuts = np.floor(np.cumsum(fractions) * len(self)).astype(np.intp)
        return [self.subset(part) for part in np.split(order, cuts)]


# --- loading -------------------------------------------------------------------------------------


def load_dataset(
    source: str | os.PathLike[str] | bytes,
    format: DatasetFormat | None = None,
    *,
    label_column: str = "label",
    kind: DatasetKind = "numeric",
    columns: Sequence[str] | None = None,
    text_column: str = "text",
    features_column: str = "features",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Dataset:
    """Load a labelled CSV, JSONL or NPZ file (a path or its bytes) into a :class:`Dataset`.

    ``kind`` says how to read the feature columns: ``numeric`` uses ``columns`` (default: every
    column but the label) as finite numbers; ``text`` reads ``text_column``; ``sparse`` reads
    ``features_column`` as feature indices (space-separated in CSV, a JSON list in JSONL). NPZ
    files hold ``y`` and either a dense 2-D ``X`` (a 0/1 indicator matrix when ``kind`` is
    ``sparse``) or CSR index lists ``X_indices`` + ``X_indptr``; pickled object arrays are refused.

    >>> ds = load_dataset(b"a,b,label\\n1,2,0\\n3,4,1\\n")
    >>> ds.columns, ds.labels.tolist()
    (('a', 'b'), [0, 1])
    """
    data, name = _read_source(source, max_bytes)
    fmt = format or _detect_format(name, data)
    if fmt == "npz":
        return _load_npz(data, kind=kind, max_bytes=max_bytes, max_rows=max_rows)
    text = _decode(data)
    if fmt == "csv":
        header, records = _csv_records(text)
    elif fmt == "jsonl":
        header, records = None, _jsonl_records(text)
    else:
        raise ValueError(f"unknown format {fmt!r}; expected csv, jsonl or npz")
    return _from_records(
        header,
        records,
        label_column=label_column,
        kind=kind,
        columns=columns,
        text_column=text_column,
        features_column=features_column,
        max_rows=max_rows,
        from_text=fmt == "csv",
    )


def _read_source(source: str | os.PathLike[str] | bytes, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        name = ""
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise dataset_error(f"cannot read {str(path)!r}: {exc.strerror}") from None
        if size > max_bytes:
            raise dataset_error(f"file is {size} bytes, over the limit of {max_bytes} bytes")
        data = path.read_bytes()
        name = path.name
    if len(data) > max_bytes:
        raise dataset_error(f"file is {len(data)} bytes, over the limit of {max_bytes} bytes")
    if not data.strip():
        raise dataset_error("the file is empty")
    return data, name


def _detect_format(name: str, data: bytes) -> DatasetFormat:
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in ("csv", "jsonl", "npz"):
        return suffix  # type: ignore[return-value]
    if suffix in ("json", "ndjson"):
        return "jsonl"
    if data.startswith(_NPZ_MAGIC):
        return "npz"
    return "jsonl" if data.lstrip().startswith(b"{") else "csv"


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise dataset_error(
            f"not UTF-8 text: bad byte at offset {exc.start} (line {line})"
        ) from None


# A record is (row index, line number, mapping of column -> raw value).
Record = tuple[int, int, dict[str, Any]]


def _csv_records(text: str) -> tuple[list[str], Iterator[Record]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise dataset_error(f"CSV header is malformed: {exc}") from None
    header = [h.strip() for h in header]
    for position, name in enumerate(header):
        if not name:
            raise dataset_error(f"CSV header field {position} is empty; every column needs a name")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise dataset_error(f"CSV header names {duplicates} more than once", column=duplicates[0])

    def records() -> Iterator[Record]:
        row = 0
        try:
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank lines carry no data
                if len(fields) != len(header):
                    raise dataset_error(
                        f"has {len(fields)} fields but the header has {len(header)} "
                        f"(line {reader.line_num}); rows must not be ragged",
                        row=row,
                    )
                yield row, reader.line_num, dict(zip(header, fields, strict=True))
                row += 1
        except csv.Error as exc:
            raise dataset_error(
                f"malformed CSV at line {reader.line_num}: {exc}", row=row
            ) from None

    return header, records()


def _jsonl_records(text: str) -> Iterator[Record]:
    row = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise dataset_error(f"line {line_no} is not valid JSON: {exc.msg}", row=row) from None
        if not isinstance(obj, dict):
            raise dataset_error(
                f"line {line_no} is a JSON {type(obj).__name__}, not an object", row=row
            )
        yield row, line_no, obj
        row += 1


def _from_records(
    header: list[str] | None,
    records: Iterator[Record],
    *,
    label_column: str,
    kind: DatasetKind,
    columns: Sequence[str] | None,
    text_column: str,
    features_column: str,
    max_rows: int,
    from_text: bool,
) -> Dataset:
    feature_columns: tuple[str, ...] | None = None
    if kind == "text":
        feature_columns = (text_column,)
    elif kind == "sparse":
        feature_columns = (features_column,)
    elif columns is not None:
        feature_columns = tuple(columns)
    if header is not None:
        feature_columns = _check_header(header, label_column, feature_columns)

    labels: list[int] = []
    numeric: list[list[float]] = []
    texts: list[str] = []
    sparse: list[tuple[int, ...]] = []
    # Without a header or named columns, the first JSONL row names the features and every row
    # must have exactly those; named columns ignore other keys, as a CSV header does.
    inferred = header is None and feature_columns is None
    for row, line, record in records:
        if row >= max_rows:
            raise dataset_error(f"more than the limit of {max_rows} rows (line {line})", row=row)
        if feature_columns is None:
            feature_columns = tuple(k for k in record if k != label_column)
            if not feature_columns:
                raise dataset_error("has no feature columns besides the label", row=row)
        if header is None:
            _check_keys(record, row, label_column, feature_columns, exact=inferred)
        labels.append(_parse_label(record[label_column], row, label_column))
        if kind == "numeric":
            numeric.append([_parse_number(record[c], row, c, from_text) for c in feature_columns])
        elif kind == "text":
            texts.append(_parse_text(record[text_column], row, text_column))
        else:
            sparse.append(_parse_indices(record[features_column], row, features_column))
    if not labels:
        raise dataset_error("the file has no data rows")
    assert feature_columns is not None
    label_array = np.asarray(labels, dtype=np.uint8)
    if kind == "numeric":
        matrix = np.asarray(numeric, dtype=np.float64).reshape(len(labels), len(feature_columns))
        return Dataset("numeric", feature_columns, label_array, numeric=matrix)
    if kind == "text":
        return Dataset("text", feature_columns, label_array, text=tuple(texts))
    return Dataset("sparse", feature_columns, label_array, sparse=tuple(sparse))


def _check_header(
    header: list[str], label_column: str, wanted: tuple[str, ...] | None
) -> tuple[str, ...]:
    if label_column not in header:
        raise dataset_error(
            f"the label column is missing; the header has {header}", column=label_column
        )
    if wanted is None:
        wanted = tuple(h for h in header if h != label_column)
        if not wanted:
            raise dataset_error("the header has no feature columns besides the label")
    for name in wanted:
        if name not in header:
            raise dataset_error(
                f"the feature column is missing; the header has {header}", column=name
            )
        if name == label_column:
            raise dataset_error("the label column cannot also be a feature column", column=name)
    return wanted


def _check_keys(
    record: dict[str, Any],
    row: int,
    label_column: str,
    feature_columns: tuple[str, ...],
    *,
    exact: bool,
) -> None:
    for name in (label_column, *feature_columns):
        if name not in record:
            raise dataset_error("the column is missing from this row", row=row, column=name)
    extra = sorted(set(record) - {label_column, *feature_columns})
    if exact and extra:
        raise dataset_error(
            f"unexpected columns {extra}; rows must all have the same columns "
            f"(expected {[label_column, *feature_columns]})",
            row=row,
            column=extra[0],
        )


def _parse_label(value: Any, row: int, column: str) -> int:
    number: float | None = None
    if isinstance(value, bool | int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or number not in (0.0, 1.0):
        raise dataset_error(f"label {value!r} is not 0 or 1", row=row, column=column)
    return int(number)


def _parse_number(value: Any, row: int, column: str, from_text: bool) -> float:
    if from_text and isinstance(value, str):
        text = value.strip()
        if not text:
            raise dataset_error("the value is missing (empty field)", row=row, column=column)
        try:
            number = float(text)
        except ValueError:
            raise dataset_error(
                f"value {value!r} is not a number", row=row, column=column
            ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif value is None:
        raise dataset_error("the value is missing (null)", row=row, column=column)
    else:
        raise dataset_error(f"value {value!r} is not a number", row=row, column=column)
    if math.isnan(number):
        raise dataset_error("the value is NaN; fill or drop missing values", row=row, column=column)
    if math.isinf(number):
        raise dataset_error(f"the value is {number}, not finite", row=row, column=column)
    return number


def _parse_text(value: Any, row: int, column: str) -> str:
    if not isinstance(value, str):
        raise dataset_error(f"value {value!r} is not text", row=row, column=column)
    return value


def _parse_indices(value: Any, row: int, column: str) -> tuple[int, ...]:
    if isinstance(value, str):
        parts: list[Any] = value.replace(",", " ").split()
        try:
            items = [int(p) for p in parts]
        except ValueError:
            raise dataset_error(
                f"value {value!r} is not a list of integer feature indices", row=row, column=column
            ) from None
    elif isinstance(value, list):
        items = value
    else:
        raise dataset_error(
            f"value {value!r} is not a list of feature indices", row=row, column=column
        )
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise dataset_error(f"feature index {item!r} is not an integer", row=row, column=column)
        if item < 0:
            raise dataset_error(f"feature index {item} is negative", row=row, column=column)
    return tuple(items)


def _load_npz(data: bytes, *, kind: DatasetKind, max_bytes: int, max_rows: int) -> Dataset:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise dataset_error("not a valid NPZ (zip) archive") from None
    if unpacked > max_bytes:
        raise dataset_error(f"NPZ unpacks to {unpacked} bytes, over the limit of {max_bytes} bytes")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise dataset_error(
                "NPZ holds an object (pickled) array, refused because unpickling can run code; "
                "store index lists as X_indices and X_indptr (CSR)"
            ) from None
        raise dataset_error(f"not a valid NPZ archive: {exc}") from None
    if "y" not in arrays:
        raise dataset_error(f"NPZ has no array 'y'; it has {sorted(arrays)}", column="y")
    labels = _npz_labels(arrays["y"])
    n = len(labels)
    if n == 0:
        raise dataset_error("the file has no data rows", column="y")
    if n > max_rows:
        raise dataset_error(f"more than the limit of {max_rows} rows", row=max_rows)
    if "X_indices" in arrays or "X_indptr" in arrays:
        return _npz_csr(arrays, labels)
    if "X" not in arrays:
        raise dataset_error(
            f"NPZ has no array 'X' (nor X_indices/X_indptr); it has {sorted(arrays)}"
        )
    x = arrays["X"]
    if x.ndim != 2:
        raise dataset_error(f"X has shape {x.shape}; it must be 2-D (rows x columns)", column="X")
    if x.shape[0] != n:
        raise dataset_error(f"X has {x.shape[0]} rows but y has {n}", row=min(x.shape[0], n))
    if x.shape[1] == 0:
        raise dataset_error("X has no columns", column="X")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise dataset_error(f"X has dtype {x.dtype}, not numbers", column="X")
    matrix = x.astype(np.float64)
    columns = tuple(f"x{j}" for j in range(matrix.shape[1]))
    _check_finite(matrix, columns)
    if kind == "numeric":
        return Dataset("numeric", columns, labels, numeric=matrix)
    if kind == "sparse":
        bad = np.argwhere((matrix != 0) & (matrix != 1))
        if len(bad):
            r, c = (int(v) for v in bad[0])
            raise dataset_error(
                f"value {matrix[r, c]} is not 0 or 1 in a dense indicator matrix",
                row=r,
                column=columns[c],
            )
        rows = tuple(tuple(int(j) for j in np.flatnonzero(line)) for line in matrix)
        return Dataset("sparse", ("features",), labels, sparse=rows)
    raise dataset_error("an NPZ file holds numeric or sparse data, not text")


def _npz_labels(y: npt.NDArray[Any]) -> Labels:
    if y.ndim != 1:
        raise dataset_error(f"y has shape {y.shape}; it must be 1-D", column="y")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise dataset_error(f"y has dtype {y.dtype}, not numbers", column="y")
    values = y.astype(np.float64)
    bad = np.flatnonzero((values != 0) & (values != 1))
    if len(bad):
        r = int(bad[0])
        raise dataset_error(f"label {y[r]!r} is not 0 or 1", row=r, column="y")
    return values.astype(np.uint8)


def _npz_csr(arrays: dict[str, npt.NDArray[Any]], labels: Labels) -> Dataset:
    for name in ("X_indices", "X_indptr"):
        if name not in arrays:
            raise dataset_error("CSR index lists need both X_indices and X_indptr", column=name)
        if arrays[name].ndim != 1 or not np.issubdtype(arrays[name].dtype, np.integer):
            raise dataset_error("must be a 1-D integer array", column=name)
    indices, indptr = arrays["X_indices"], arrays["X_indptr"]
    n = len(labels)
    if len(indptr) != n + 1:
        raise dataset_error(
            f"X_indptr has {len(indptr)} entries; y has {n} rows, so it needs {n + 1}"
        )
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        bad = np.flatnonzero(np.diff(indptr) < 0)
        raise dataset_error(
            "X_indptr must start at 0, never decrease and end at len(X_indices)",
            row=int(bad[0]) if len(bad) else None,
            column="X_indptr",
        )
    negative = np.flatnonzero(indices < 0)
    if len(negative):
        r = int(np.searchsorted(indptr, negative[0], side="right") - 1)
        raise dataset_error(
            f"feature index {int(indices[negative[0]])} is negative", row=r, column="X"
        )
    rows = tuple(tuple(int(j) for j in indices[indptr[i] : indptr[i + 1]]) for i in range(n))
    return Dataset("sparse", ("features",), labels, sparse=rows)


def _check_finite(matrix: FloatMatrix, columns: tuple[str, ...]) -> None:
    bad = np.argwhere(~np.isfinite(matrix))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        rule = "the value is NaN" if np.isnan(matrix[r, c]) else f"the value is {matrix[r, c]}"
        raise dataset_error(f"{rule}, not finite", row=r, column=columns[c])


# --- bundled data ---------------------------------------------------------------------------------

BUILTIN_NAMES = ("breast_cancer", "digits_odd", *(f"digits_{d}" for d in range(10)))


def load_builtin(name: str) -> Dataset:
    """A dataset bundled with scikit-learn (no network), as a numeric binary task.

    ``breast_cancer``: 569 rows, 30 columns, label 1 = benign (scikit-learn's target).
    ``digits_odd``: 1797 8x8 images, label 1 = an odd digit. ``digits_<d>``: label 1 = digit d.
    """
    from sklearn import datasets as sk  # imported here: scikit-learn takes ~1 s to import

    if name == "breast_cancer":
        bunch = sk.load_breast_cancer()
        columns = tuple(str(c) for c in bunch.feature_names)
        labels = np.asarray(bunch.target, dtype=np.uint8)
    elif name in BUILTIN_NAMES:  # digits_odd, digits_0 .. digits_9
        bunch = sk.load_digits()
        columns = tuple(str(c) for c in bunch.feature_names)
        digit = np.asarray(bunch.target)
        positive = digit % 2 == 1 if name == "digits_odd" else digit == int(name[7:])
        labels = positive.astype(np.uint8)
    else:
        raise ValueError(f"unknown built-in dataset {name!r}; choose one of {list(BUILTIN_NAMES)}")
    matrix = np.asarray(bunch.data, dtype=np.float64)
    return Dataset("numeric", columns, labels, numeric=matrix)


# --- synthetic data -------------------------------------------------------------------------------

# Hidden weights are integers so the rule is exact on every machine (no float summation order).
_HIDDEN_WEIGHT_RANGE = 1000


def hidden_rule(dim: int, seed: int) -> npt.NDArray[np.int64]:
    """The integer weights of :func:`synthetic`'s hidden rule: label 1 iff their sum over x > 0."""
    rng = np.random.default_rng([seed, 0])
    return rng.integers(-_HIDDEN_WEIGHT_RANGE, _HIDDEN_WEIGHT_RANGE + 1, size=dim, dtype=np.int64)


def synthetic(
    n: int,
    *,
    dim: int = 1024,
    features: int | tuple[int, int] = 16,
    seed: int = 0,
    noise: float = 0.0,
) -> list[Sample]:
    """``n`` sparse binary samples labelled by a hidden linear rule (see :func:`hidden_rule`).

    ``features`` is the number of active features per sample, or an inclusive ``(low, high)``
    range; ``noise`` is the fraction of labels flipped afterwards (with :func:`flip_labels`).
    """
    low, high = (features, features) if isinstance(features, int) else features
    if not 1 <= low <= high <= dim:
        raise ValueError(f"features {features!r} must satisfy 1 <= low <= high <= dim={dim}")
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    weights = hidden_rule(dim, seed)
    rng = np.random.default_rng([seed, 1])
    counts = rng.integers(low, high + 1, size=n)
    samples = []
    for count in counts:
        idx = np.sort(rng.choice(dim, size=int(count), replace=False))
        label = int(int(weights[idx].sum()) > 0)
        samples.append(Sample(tuple(int(j) for j in idx), label))
    return flip_labels(samples, noise, seed=seed) if noise else samples


def flip_labels(samples: Sequence[Sample], fraction: float, *, seed: int = 0) -> list[Sample]:
    """Flip the labels of exactly ``round(fraction * n)`` samples chosen with ``seed``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be within [0, 1]")
    count = round(fraction * len(samples))
    chosen = set(np.random.default_rng([seed, 2]).permutation(len(samples))[:count].tolist())
    return [Sample(s.features, 1 - s.label) if i in chosen else s for i, s in enumerate(samples)]


__all__ = [
    "BUILTIN_NAMES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ROWS",
    "Dataset",
    "DatasetFormat",
    "DatasetKind",
    "dataset_error",
    "flip_labels",
    "hidden_rule",
    "load_builtin",
    "load_dataset",
    "synthetic",
]
