"""Feature encoding: raw rows to the sparse binary samples the on-chain perceptron reads.

A market fixes one encoder when it launches and stores it as a :class:`FeatureSpec` (JSON), so
that participants encode their data exactly as the provider did. Every encoder is
deterministic: the same rows give the same samples on any machine (stable hashes, no Python
``hash()``, integer bin lookups against stored float edges that JSON round-trips exactly).

- :class:`HashedTextEncoder`: word (and optional bigram) tokens hashed with BLAKE2b into ``dim``;
- :class:`BinnedNumericEncoder`: per-column quantile bins fitted on the provider's data;
- :class:`PrecomputedSparseEncoder`: rows that already are lists of feature indices.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt

from market.datasets import Dataset, DatasetKind, dataset_error
from market.types import Sample

# Mirrors of the contract's constants (docs/protocol.md, "Limits").
MAX_DIM = 8192
MAX_FEATURES = 256
FEATURE_SPEC_VERSION = 1
# Eight quantile bins per column. One-hot bins let the perceptron learn a non-monotone response
# per column; 8 keeps the 64-column digits at dim 319. Test accuracy of one perceptron pass on
# a 70/30 split (mean of 20 seeds) with 2/4/8/16 bins: breast_cancer 0.890/0.927/0.930/0.923,
# digits_odd 0.837/0.882/0.892/0.877, digits_3 0.956/0.954/0.942/0.949.
DEFAULT_N_BINS = 8

Row = tuple[int, ...]


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} must be an integer in [{low}, {high}]")
    return value


class Encoder(ABC):
    """Turns rows of one :data:`~market.datasets.DatasetKind` into sorted feature indices."""

    name: ClassVar[str]
    kind: ClassVar[DatasetKind]
    dim: int
    max_features: int

    @abstractmethod
    def features(self, rows: Any) -> list[Row]:
        """The strictly increasing feature indices of each row (possibly empty)."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The encoder's whole state as JSON-ready values."""

    @classmethod
    @abstractmethod
    def from_params(cls, params: dict[str, Any]) -> Encoder:
        """Rebuild the encoder from :meth:`params`."""

    def rows_of(self, dataset: Dataset) -> Any:
        """The dataset's rows in the form :meth:`features` takes (checking the kind)."""
        if dataset.kind != self.kind:
            raise dataset_error(
                f"the {self.name} encoder reads {self.kind} data, not {dataset.kind}"
            )
        return {"text": dataset.text, "sparse": dataset.sparse}[self.kind]

    def encode(self, dataset: Dataset) -> list[Sample]:
        """Labelled samples ready for the chain: each has 1 to ``max_features`` features."""
        rows = self.features(self.rows_of(dataset))
        for i, row in enumerate(rows):
            if not row:
                raise dataset_error(
                    "encodes to no features; a market sample needs at least one",
                    row=i,
                    column=dataset.columns[0],
                )
        return [Sample(row, int(label)) for row, label in zip(rows, dataset.labels, strict=True)]


# --- text ----------------------------------------------------------------------------------------

# Letters and digits (Unicode), no underscore and no punctuation: "Don't" -> "don", "t".
# ASCII text tokenizes the same under every Python; other scripts follow Python's Unicode tables.
_WORD = re.compile(r"[^\W_]+")
# BLAKE2b personalisation keeps these hashes apart from any other use of BLAKE2b.
_TEXT_PERSON = b"market.text.v1"


def token_index(token: str, dim: int) -> int:
    """The feature index of one token: BLAKE2b-64 of its UTF-8 bytes, modulo ``dim``."""
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8, person=_TEXT_PERSON).digest()
    return int.from_bytes(digest, "big") % dim


# Words repeat across texts (Zipf's law): caching the last 65,536 word hashes cuts encoding time
# by about a third on a 5,000-word vocabulary. Bigrams are mostly unique, so they bypass it.
_word_index = functools.lru_cache(maxsize=2**16)(token_index)


@dataclass(frozen=True)
class HashedTextEncoder(Encoder):
    """Lowercased word tokens (and, with ``bigrams``, adjacent pairs) hashed into ``[0, dim)``.

    When a text has more than ``max_features`` distinct indices, the first ones in text order
    are kept (all words before any bigram), so long texts keep their opening.

    >>> HashedTextEncoder(dim=1024).features(["Hello, hello World"])
    [(427, 760)]
    """

    name: ClassVar[str] = "hashed_text"
    kind: ClassVar[DatasetKind] = "text"
    # Half the contract's limit: a few thousand distinct words rarely collide, and the weights
    # every training step re-supplies as calldata (8 bytes each) stay at 32 KB.
    dim: int = 4096
    max_features: int = MAX_FEATURES
    bigrams: bool = False

    def __post_init__(self) -> None:
        _check_int("dim", self.dim, 1, MAX_DIM)
        _check_int("max_features", self.max_features, 1, MAX_FEATURES)
        if not isinstance(self.bigrams, bool):
            raise ValueError(f"bigrams={self.bigrams!r} must be true or false")

    def tokens(self, text: str) -> list[str]:
        """The tokens of ``text`` in order: words, then ``"w1 w2"`` bigrams when enabled."""
        words = _WORD.findall(text.lower())
        if not self.bigrams:
            return words
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    def features(self, rows: Sequence[str]) -> list[Row]:
        """Hash each text's tokens; deduplicate, cap at ``max_features``, sort."""
        out = []
        for i, text in enumerate(rows):
            if not isinstance(text, str):
                raise dataset_error(f"value {text!r} is not text", row=i)
            kept: dict[int, None] = {}  # insertion-ordered set
            words = _WORD.findall(text.lower())
            indices: Iterable[int] = (_word_index(word, self.dim) for word in words)
            if self.bigrams:
                pairs = zip(words, words[1:], strict=False)
                indices = chain(indices, (token_index(f"{a} {b}", self.dim) for a, b in pairs))
            for index in indices:
                kept.setdefault(index)
                if len(kept) == self.max_features:
                    break
            out.append(tuple(sorted(kept)))
        return out

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, "max_features": self.max_features, "bigrams": self.bigrams}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> HashedTextEncoder:
        return cls(**params)


# --- numbers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinnedNumericEncoder(Encoder):
    """One feature per (column, quantile bin): each row sets exactly one bin of each column.

    ``edges[c]`` are column ``c``'s strictly increasing inner bin edges; a value ``v`` falls in
    bin ``k`` = the number of edges ``<= v``. Indices are laid out column after column, so a
    row's indices are strictly increasing by construction.
    """

    name: ClassVar[str] = "binned_numeric"
    kind: ClassVar[DatasetKind] = "numeric"
    columns: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    max_features: int = MAX_FEATURES

    def __post_init__(self) -> None:
        _check_int("max_features", self.max_features, 1, MAX_FEATURES)
        if not self.columns or len(self.columns) != len(self.edges):
            raise ValueError(
                f"{len(self.columns)} columns and {len(self.edges)} edge lists; "
                "need one edge list per column and at least one column"
            )
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns {list(self.columns)} repeat a name")
        if len(self.columns) > self.max_features:
            raise ValueError(
                f"{len(self.columns)} columns give {len(self.columns)} features per sample, "
                f"over max_features={self.max_features}"
            )
        for column, edges in zip(self.columns, self.edges, strict=True):
            if not all(isinstance(e, float) and math.isfinite(e) for e in edges):
                raise ValueError(f"column {column!r}: bin edges must be finite floats")
            if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise ValueError(f"column {column!r}: bin edges must be strictly increasing")
        if self.dim > MAX_DIM:
            raise ValueError(f"dim={self.dim} over the limit of {MAX_DIM}; use fewer bins")

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Total number of bins over all columns."""
        return sum(len(e) + 1 for e in self.edges)

    @classmethod
    def fit(
        cls,
        dataset: Dataset,
        n_bins: int = DEFAULT_N_BINS,
        *,
        max_features: int = MAX_FEATURES,
    ) -> BinnedNumericEncoder:
        """Quantile edges of each column of the provider's numeric data.

        A quantile that falls on the column's minimum (many equal smallest values: the zeros
        of a sparse column) is moved to the next value above it, so that mass keeps a bin of
        its own instead of swallowing the column: 90 zeros and 1..10 give the edge 1, not
        nothing. Repeated edges are merged; a constant column is one always-on bin.
        """
        _check_int("n_bins", n_bins, 1, MAX_DIM)
        if dataset.kind != "numeric" or dataset.numeric is None:
            raise dataset_error(f"binned_numeric fits numeric data, not {dataset.kind}")
        matrix = dataset.numeric
        _check_finite(matrix, dataset.columns)
        if len(matrix) == 0:
            raise dataset_error("cannot fit bins on a dataset with no rows")
        levels = np.arange(1, n_bins, dtype=np.float64) / n_bins
        edges = []
        for c in range(matrix.shape[1]):
            values = np.unique(matrix[:, c])
            cut = np.quantile(matrix[:, c], levels)
            cut = np.where(cut > values[0], cut, values[1]) if len(values) > 1 else cut[:0]
            edges.append(tuple(float(e) for e in np.unique(cut)))
        return cls(columns=dataset.columns, edges=tuple(edges), max_features=max_features)

    def rows_of(self, dataset: Dataset) -> Any:
        """The dataset's columns in the encoder's order, by name."""
        if dataset.kind != "numeric" or dataset.numeric is None:
            raise dataset_error(f"the {self.name} encoder reads numeric data, not {dataset.kind}")
        order = []
        for name in self.columns:
            if name not in dataset.columns:
                raise dataset_error(
                    f"missing; the encoder needs {list(self.columns)}",
                    column=name,
                )
            order.append(dataset.columns.index(name))
        return dataset.numeric[:, order]

    def features(self, rows: npt.ArrayLike) -> list[Row]:
        """Each row's bin index per column (rows hold the columns in the encoder's order)."""
        matrix = np.asarray(rows, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.columns):
            raise dataset_error(
                f"rows of shape {matrix.shape}; expected (n, {len(self.columns)}) "
                f"with columns {list(self.columns)}"
            )
        _check_finite(matrix, self.columns)
        out = np.empty(matrix.shape, dtype=np.int64)
        offset = 0
        for c, edges in enumerate(self.edges):
            cuts = np.asarray(edges, dtype=np.float64)
            out[:, c] = offset + np.searchsorted(cuts, matrix[:, c], side="right")
            offset += len(edges) + 1
        rows_out = cast(list[list[int]], out.tolist())
        return [tuple(row) for row in rows_out]

    def params(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "edges": [list(e) for e in self.edges],
            "max_features": self.max_features,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BinnedNumericEncoder:
        columns, edges = params.get("columns"), params.get("edges")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ValueError("columns must be a list of names")
        if not isinstance(edges, list) or not all(isinstance(e, list) for e in edges):
            raise ValueError("edges must be a list of lists of numbers")
        rest = {k: v for k, v in params.items() if k not in ("columns", "edges")}
        # JSON writes 2.0 as 2.0, but a hand-written spec may say 2: ints are exact as floats.
        as_float = [
            tuple(float(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in e)
            for e in edges
        ]
        return cls(columns=tuple(columns), edges=tuple(as_float), **rest)


def _check_finite(matrix: npt.NDArray[np.float64], columns: Sequence[str]) -> None:
    bad = np.argwhere(~np.isfinite(matrix))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        what = "NaN" if np.isnan(matrix[r, c]) else str(matrix[r, c])
        raise dataset_error(
            f"the value is {what}; numbers must be finite",
            row=r,
            column=columns[c],
        )


# --- precomputed indices -------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecomputedSparseEncoder(Encoder):
    """Rows given as feature indices: checked (integers in ``[0, dim)``, no repeats) and sorted."""

    name: ClassVar[str] = "precomputed_sparse"
    kind: ClassVar[DatasetKind] = "sparse"
    dim: int
    max_features: int = MAX_FEATURES

    def __post_init__(self) -> None:
        _check_int("dim", self.dim, 1, MAX_DIM)
        _check_int("max_features", self.max_features, 1, MAX_FEATURES)

    def features(self, rows: Sequence[Sequence[int]]) -> list[Row]:
        """Each row sorted, after checking range, repeats and count."""
        out = []
        for i, row in enumerate(rows):
            for j in row:
                if isinstance(j, bool) or not isinstance(j, int | np.integer):
                    raise dataset_error(f"feature index {j!r} is not an integer", row=i)
                if not 0 <= j < self.dim:
                    raise dataset_error(f"feature index {j} is outside [0, {self.dim})", row=i)
            ordered = tuple(sorted(int(j) for j in row))
            if len(set(ordered)) != len(ordered):
                repeated = next(a for a, b in zip(ordered, ordered[1:], strict=False) if a == b)
                raise dataset_error(f"feature index {repeated} appears twice", row=i)
            if len(ordered) > self.max_features:
                raise dataset_error(
                    f"{len(ordered)} features, over max_features={self.max_features}",
                    row=i,
                )
            out.append(ordered)
        return out

    def params(self) -> dict[str, Any]:
        return {"dim": self.dim, "max_features": self.max_features}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PrecomputedSparseEncoder:
        return cls(**params)


# --- the stored spec -----------------------------------------------------------------------------

ENCODERS: dict[str, type[Encoder]] = {
    cls.name: cls for cls in (HashedTextEncoder, BinnedNumericEncoder, PrecomputedSparseEncoder)
}


@dataclass(frozen=True)
class FeatureSpec:
    """A market's encoder with its fitted state, stored as canonical JSON beside the market.

    >>> spec = FeatureSpec(PrecomputedSparseEncoder(dim=16))
    >>> spec.to_json()
    '{"encoder":"precomputed_sparse","params":{"dim":16,"max_features":256},"version":1}'
    >>> FeatureSpec.from_json(spec.to_json()) == spec
    True
    """

    encoder: Encoder

    @property
    def dim(self) -> int:
        """Size of the model's weight vector."""
        return self.encoder.dim

    @property
    def max_features(self) -> int:
        """Most features one sample may have."""
        return self.encoder.max_features

    @property
    def kind(self) -> DatasetKind:
        """The kind of dataset the encoder reads."""
        return self.encoder.kind

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal specs give equal bytes."""
        document = {
            "version": FEATURE_SPEC_VERSION,
            "encoder": self.encoder.name,
            "params": self.encoder.params(),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSpec:
        """Parse and validate a spec written by :meth:`to_json`."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"feature spec is not valid JSON: {exc.msg}") from None
        if not isinstance(document, dict):
            raise ValueError("feature spec must be a JSON object")
        if set(document) != {"version", "encoder", "params"}:
            raise ValueError(
                f"feature spec has keys {sorted(document)}; expected encoder, params, version"
            )
        if document["version"] != FEATURE_SPEC_VERSION:
            raise ValueError(
                f"feature spec version {document['version']!r} is not supported "
                f"(this library reads version {FEATURE_SPEC_VERSION})"
            )
        name, params = document["encoder"], document["params"]
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder {name!r}; known: {sorted(ENCODERS)}")
        if not isinstance(params, dict):
            raise ValueError("feature spec params must be a JSON object")
        try:
            return cls(ENCODERS[name].from_params(params))
        except TypeError as exc:  # unknown or missing parameter names
            raise ValueError(f"{name} parameters {sorted(params)} are invalid: {exc}") from None

    def fingerprint(self) -> str:
        """Hex SHA-256 of :meth:`to_json`, to check that two parties use the same spec."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def features(self, rows: Any) -> list[Row]:
        """Feature indices of unlabelled rows (for predictions; rows may encode to nothing)."""
        return self.encoder.features(rows)

    def encode(self, dataset: Dataset) -> list[Sample]:
        """The dataset as labelled market samples."""
        return self.encoder.encode(dataset)

    def sample(self, row: Any, label: int) -> Sample:
        """One labelled sample from one raw row (a text, index list or row of numbers)."""
        if label not in (0, 1) or isinstance(label, bool):
            raise dataset_error(f"label {label!r} is not 0 or 1", column="label")
        (features,) = self.encoder.features([row])
        if not features:
            raise dataset_error("the row encodes to no features; a sample needs at least one")
        return Sample(features, label)


__all__ = [
    "DEFAULT_N_BINS",
    "ENCODERS",
    "FEATURE_SPEC_VERSION",
    "MAX_DIM",
    "MAX_FEATURES",
    "BinnedNumericEncoder",
    "Encoder",
    "FeatureSpec",
    "HashedTextEncoder",
    "PrecomputedSparseEncoder",
    "token_index",
]
