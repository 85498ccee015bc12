"""A launch request: parameters, the provider's test set, and the encoder fitted on it.

The request arrives as a multipart upload (the file plus form fields) or as JSON naming a file
under the dataset directory; either way it becomes :class:`LaunchParams`, then a
:class:`~market.datasets.Dataset`, a fitted :class:`~market.features.FeatureSpec` and a
:class:`~market.launch.LaunchSpec` that :func:`~market.launch.validate_spec` has accepted.
Every refusal names the field, row or column at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from market.datasets import DatasetFormat, load_dataset
from market.errors import InvalidInput, InvalidParams
from market.features import (
    DEFAULT_N_BINS,
    MAX_FEATURES,
    BinnedNumericEncoder,
    Encoder,
    FeatureSpec,
    HashedTextEncoder,
    PrecomputedSparseEncoder,
)
from market.launch import MAX_TEST_ENTRIES, LaunchSpec, validate_spec

EncoderName = Literal["binned_numeric", "hashed_text", "precomputed_sparse"]
# Short names a provider is likely to type; the stored spec always uses the full name.
ENCODER_ALIASES = {
    "numeric": "binned_numeric",
    "text": "hashed_text",
    "sparse": "precomputed_sparse",
}
KIND_OF: dict[str, Literal["numeric", "text", "sparse"]] = {
    "binned_numeric": "numeric",
    "hashed_text": "text",
    "precomputed_sparse": "sparse",
}


def _wei(value: Any) -> Any:
    """Wei as an integer or a decimal string: JSON numbers lose precision past 2**53."""
    if isinstance(value, bool | float):
        raise ValueError("must be an integer number of wei (a decimal string or an integer)")
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise ValueError(f"{value!r} is not a decimal integer number of wei")
        return int(text)
    return value


def _encoder_name(value: Any) -> Any:
    return ENCODER_ALIASES.get(value, value) if isinstance(value, str) else value


def _names(value: Any) -> Any:
    """Columns as a list, or as one comma-separated form field."""
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return value


Wei = Annotated[int, BeforeValidator(_wei)]
Seconds = Annotated[int, Field(ge=0, le=10 * 365 * 86400)]


class LaunchParams(BaseModel):
    """What a provider chooses besides the file (form fields, or JSON keys)."""

    model_config = ConfigDict(extra="forbid")

    bounty: Wei = Field(description="wei paid into the market, as a decimal string or integer")
    min_stake: Wei = Field(description="wei each contribution deposits")
    portions: int = Field(10, ge=2, description="P: the test set is cut into P portions")
    encoder: Annotated[EncoderName, BeforeValidator(_encoder_name)] = Field(
        "binned_numeric",
        description="binned_numeric (numeric), hashed_text (text) or precomputed_sparse (sparse)",
    )
    format: DatasetFormat | None = Field(None, description="csv, jsonl or npz; default: by name")
    label_column: str = "label"
    columns: Annotated[list[str] | None, BeforeValidator(_names)] = Field(
        None, description="numeric feature columns (default: every column but the label)"
    )
    text_column: str = "text"
    features_column: str = "features"
    dim: int | None = Field(None, ge=1, description="model size (hashed_text, precomputed_sparse)")
    n_bins: int = Field(DEFAULT_N_BINS, ge=1, le=256, description="bins per numeric column")
    bigrams: bool = False
    max_features: int | None = Field(None, ge=1, le=MAX_FEATURES)
    learning_rate: int = Field(1, ge=1)
    intercept: int = 0
    allow_greater_deposits: bool = False
    min_contributions: int = Field(0, ge=0)
    earliest_end_s: Seconds = 3600
    latest_end_s: Seconds = 7200
    reveal_window_s: Seconds = 3600
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)


class LaunchFromPath(LaunchParams):
    """A JSON launch naming a file under the server's dataset directory."""

    path: str = Field(description="file path relative to the dataset directory")


def resolve_dataset_path(root: Path, relative: str) -> Path:
    """``relative`` inside ``root``, refusing escapes (``..``, absolute paths, symlinks out)."""
    if "\x00" in relative:
        raise InvalidParams("path", "a path cannot hold a NUL byte")
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise InvalidParams("path", f"{relative!r} is outside the dataset directory")
    if not target.is_file():
        raise InvalidParams("path", f"{relative!r} is not a file in the dataset directory")
    return target


def _fit(params: LaunchParams, dataset_rows: int, columns: tuple[str, ...], data: Any) -> Encoder:
    """The encoder the market will publish, fitted or sized on the provider's data."""
    name = params.encoder
    # Without an explicit cap, each sample may use as many features as the contract's
    # test-set entry budget (MAX_TEST_ENTRIES) allows for this many rows (and no more than 256).
    fitting_cap = max(1, min(MAX_FEATURES, MAX_TEST_ENTRIES // max(1, dataset_rows)))
    cap = params.max_features or fitting_cap
    try:
        if name == "binned_numeric":
            if params.dim is not None:
                raise InvalidParams("dim", "binned_numeric sizes the model from its bins; omit dim")
            return BinnedNumericEncoder.fit(data, params.n_bins, max_features=len(columns))
        if name == "hashed_text":
            return HashedTextEncoder(
                dim=params.dim or 4096, max_features=cap, bigrams=params.bigrams
            )
        return PrecomputedSparseEncoder(dim=params.dim or 0, max_features=cap)
    except InvalidInput:  # the dataset's own errors, and the dim rules above
        raise
    except ValueError as exc:  # an encoder parameter out of range
        raise InvalidParams("encoder", str(exc)) from None


def build_launch(
    params: LaunchParams, source: bytes | Path, *, filename: str, max_bytes: int
) -> tuple[LaunchSpec, FeatureSpec]:
    """Load and encode the test set, then validate the whole launch; nothing is sent."""
    if params.encoder == "precomputed_sparse" and params.dim is None:
        raise InvalidParams("dim", "precomputed_sparse needs dim (feature indices are < dim)")
    fmt: DatasetFormat | None = params.format
    if fmt is None and filename:
        suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        fmt = {
            "csv": "csv",
            "jsonl": "jsonl",
            "json": "jsonl",
            "ndjson": "jsonl",
            "npz": "npz",
        }.get(suffix)  # type: ignore[assignment]
    dataset = load_dataset(
        source,
        fmt,
        label_column=params.label_column,
        kind=KIND_OF[params.encoder],
        columns=params.columns,
        text_column=params.text_column,
        features_column=params.features_column,
        max_bytes=max_bytes,
    )
    encoder = _fit(params, len(dataset), dataset.columns, dataset)
    feature_spec = FeatureSpec(encoder)
    samples = feature_spec.encode(dataset)
    metadata: dict[str, Any] = {
        "feature_spec": feature_spec.to_json(),
        "feature_spec_fingerprint": feature_spec.fingerprint(),
        "dataset": {"filename": filename, "format": fmt, "rows": len(dataset)},
    }
    if params.name is not None:
        metadata["name"] = params.name
    if params.description is not None:
        metadata["description"] = params.description
    spec = LaunchSpec(
        test_set=samples,
        dim=feature_spec.dim,
        bounty=params.bounty,
        min_stake=params.min_stake,
        portions=params.portions,
        max_features=encoder.max_features,
        intercept=params.intercept,
        learning_rate=params.learning_rate,
        allow_greater_deposits=params.allow_greater_deposits,
        min_contributions=params.min_contributions,
        earliest_end_s=params.earliest_end_s,
        latest_end_s=params.latest_end_s,
        reveal_window_s=params.reveal_window_s,
        metadata=metadata,
    )
    validate_spec(spec)
    return spec, feature_spec
