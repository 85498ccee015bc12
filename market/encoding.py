"""The packed byte formats of docs/protocol.md, and the hashes built over them.

This is the only module that packs or unpacks them. All integers are big-endian:

- ``SAMPLE``      = ``label:uint8 ‖ count:uint16 ‖ features: count × uint32``
- ``REVEAL_ITEM`` = ``index:uint32 ‖ salt:bytes32 ‖ SAMPLE``
- ``WEIGHTS``     = ``dim × int64`` (two's complement)

Concatenations are plain juxtapositions: each ``SAMPLE`` carries its own length.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from Crypto.Hash import keccak

from market.errors import InvalidParams, InvalidSample
from market.types import Sample, TestSample

ZERO_HASH = bytes(32)
#: Contributions per checkpoint hash (the contract's ``CHECKPOINT``).
CHECKPOINT = 16

SAMPLE_HEADER = 3  # label:uint8 ‖ count:uint16
REVEAL_HEADER = 36  # index:uint32 ‖ salt:bytes32
UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak-256 (not NIST SHA3-256) of ``data``."""
    digest: bytes = keccak.new(digest_bits=256, data=data).digest()
    return digest


# ----------------------------------------------------------------------------- SAMPLE


def encode_sample(sample: Sample) -> bytes:
    """``SAMPLE`` bytes of ``sample``; refuses values the format cannot hold."""
    count = len(sample.features)
    if not 0 <= sample.label <= 255:
        raise InvalidSample("label", 0, f"label {sample.label} does not fit in uint8")
    if count > UINT16_MAX:
        raise InvalidSample("count", 0, f"{count} features do not fit a uint16 count")
    for position, feature in enumerate(sample.features):
        if not 0 <= feature <= UINT32_MAX:
            raise InvalidSample(
                "range", position, f"feature {feature} at position {position} is not a uint32"
            )
    return struct.pack(f">BH{count}I", sample.label, count, *sample.features)


def encode_samples(samples: Iterable[Sample]) -> bytes:
    """The concatenation of the ``SAMPLE`` encodings of ``samples``, in order."""
    return b"".join(encode_sample(sample) for sample in samples)


def _read_sample(data: bytes, offset: int, ordinal: int) -> tuple[Sample, int]:
    """The ``SAMPLE`` at ``offset`` and the offset one past it; ``ordinal`` names it in errors."""
    if offset + SAMPLE_HEADER > len(data):
        raise InvalidSample(
            "length",
            offset,
            f"sample {ordinal} at byte {offset}: truncated header, "
            f"needs {SAMPLE_HEADER} bytes, {len(data) - offset} left",
        )
    label, count = struct.unpack_from(">BH", data, offset)
    end = offset + SAMPLE_HEADER + 4 * count
    if end > len(data):
        raise InvalidSample(
            "length",
            offset,
            f"sample {ordinal} at byte {offset}: {count} features need {4 * count} bytes, "
            f"{len(data) - offset - SAMPLE_HEADER} left",
        )
    features = struct.unpack_from(f">{count}I", data, offset + SAMPLE_HEADER)
    return Sample(tuple(features), label), end


def decode_samples(data: bytes) -> list[Sample]:
    """Split a concatenation of ``SAMPLE``\\ s back into samples (validation is separate)."""
    samples: list[Sample] = []
    offset = 0
    while offset < len(data):
        sample, offset = _read_sample(data, offset, len(samples))
        samples.append(sample)
    return samples


def decode_sample(data: bytes) -> Sample:
    """The one ``SAMPLE`` that ``data`` holds exactly."""
    sample, end = _read_sample(data, 0, 0)
    if end != len(data):
        raise InvalidSample(
            "length", end, f"{len(data) - end} bytes left after the sample ending at byte {end}"
        )
    return sample


# ----------------------------------------------------------------------------- REVEAL_ITEM


def encode_reveal_item(item: TestSample) -> bytes:
    """``REVEAL_ITEM`` bytes of one salted test sample."""
    if not 0 <= item.index <= UINT32_MAX:
        raise InvalidSample("range", item.index, f"index {item.index} is not a uint32", "index")
    if len(item.salt) != 32:
        raise InvalidSample(
            "length", item.index, f"salt has {len(item.salt)} bytes, not 32", "salt"
        )
    return struct.pack(">I", item.index) + item.salt + encode_sample(item.sample)


def encode_reveal_items(items: Iterable[TestSample]) -> bytes:
    """The concatenation of the ``REVEAL_ITEM`` encodings of ``items``, in order."""
    return b"".join(encode_reveal_item(item) for item in items)


def decode_reveal_items(data: bytes) -> list[TestSample]:
    """Split a concatenation of ``REVEAL_ITEM``\\ s back into test samples."""
    items: list[TestSample] = []
    offset = 0
    while offset < len(data):
        if offset + REVEAL_HEADER > len(data):
            raise InvalidSample(
                "length",
                offset,
                f"reveal item {len(items)} at byte {offset}: truncated header, "
                f"needs {REVEAL_HEADER} bytes, {len(data) - offset} left",
            )
        (index,) = struct.unpack_from(">I", data, offset)
        salt = data[offset + 4 : offset + REVEAL_HEADER]
        sample, offset = _read_sample(data, offset + REVEAL_HEADER, len(items))
        items.append(TestSample(index, salt, sample.features, sample.label))
    return items


# ----------------------------------------------------------------------------- WEIGHTS


def encode_weights(weights: Sequence[int]) -> bytes:
    """``WEIGHTS`` bytes: one big-endian two's complement int64 per weight."""
    for position, weight in enumerate(weights):
        if not INT64_MIN <= weight <= INT64_MAX:
            raise InvalidParams("weights", f"weight {position} = {weight} is outside int64")
    return struct.pack(f">{len(weights)}q", *weights)


def decode_weights(data: bytes, dim: int | None = None) -> list[int]:
    """The weights in ``WEIGHTS`` bytes; checks there are exactly ``dim`` of them if given."""
    if len(data) % 8:
        raise InvalidParams("weights", f"{len(data)} bytes is not a whole number of int64s")
    if dim is not None and len(data) != 8 * dim:
        raise InvalidParams("weights", f"{len(data) // 8} weights, expected dim = {dim}")
    return list(struct.unpack(f">{len(data) // 8}q", data))


def weights_hash(weights: Sequence[int]) -> bytes:
    """``keccak256(WEIGHTS)``: the contract's ``weightsHash`` of a model."""
    return keccak256(encode_weights(weights))


# ----------------------------------------------------------------------------- hash chains


def digest_chain(samples: Iterable[Sample], start: bytes = ZERO_HASH) -> bytes:
    """The hash chain ``d_k = keccak256(d_{k-1} ‖ SAMPLE_k)`` over ``samples``.

        This is the contract's ``testDigest`` when ``samples`` are the revealed test samples in
        reveal order.
    ``start`` is ``d_0`` (32 zero bytes) or the digest after earlier batches, so that
        digests can be extended batch by batch as the reveal proceeds.
    """
    digest = start
    for sample in samples:
        digest = keccak256(digest + encode_sample(sample))
    return digest


def checkpoint_hashes(samples: Sequence[Sample]) -> list[bytes]:
    """One hash per block of :data:`CHECKPOINT` contributions: ``c = keccak256(c ‖ SAMPLE)``.

    Each block starts again from 32 zero bytes; the last block may be partial.
    """
    return [
        digest_chain(samples[start : start + CHECKPOINT])
        for start in range(0, len(samples), CHECKPOINT)
    ]


# ----------------------------------------------------------------------------- validation


def validate_sample(sample: Sample, dim: int, max_features: int) -> None:
    """Check the rules of docs/protocol.md, in the contract's order; :class:`InvalidSample` names
    the rule and, for ``range`` and ``order``, the feature's position."""
    if sample.label not in (0, 1):
        raise InvalidSample("label", 0, f"label {sample.label} is not 0 or 1")
    count = len(sample.features)
    if not 1 <= count <= max_features:
        raise InvalidSample("count", 0, f"{count} features, allowed 1..{max_features}")
    previous = -1
    for position, feature in enumerate(sample.features):
        if not 0 <= feature < dim:
            raise InvalidSample(
                "range", position, f"feature {feature} at position {position} is not < dim {dim}"
            )
        if feature <= previous:
            raise InvalidSample(
                "order",
                position,
                f"feature {feature} at position {position} does not exceed the previous "
                f"{previous}: features must be strictly increasing",
            )
        previous = feature


def validate_samples(samples: Iterable[Sample], dim: int, max_features: int) -> None:
    """:func:`validate_sample` on each; the error's ``position`` is the sample's position."""
    for ordinal, sample in enumerate(samples):
        try:
            validate_sample(sample, dim, max_features)
        except InvalidSample as error:
            raise InvalidSample(
                error.reason, ordinal, f"sample {ordinal}: {error.detail}"
            ) from None


__all__ = [
    "CHECKPOINT",
    "ZERO_HASH",
    "checkpoint_hashes",
    "decode_reveal_items",
    "decode_sample",
    "decode_samples",
    "decode_weights",
    "digest_chain",
    "encode_reveal_item",
    "encode_reveal_items",
    "encode_sample",
    "encode_samples",
    "encode_weights",
    "keccak256",
    "validate_sample",
    "validate_samples",
    "weights_hash",
]


# ----------------------------------------------------------------------------- reward inputs


def encode_index(test: Sequence[Sample], dim: int) -> bytes:
    """INDEX of a test set (in reveal order): labels, CSR offsets, entries (docs/protocol.md).

    ``labels`` is one byte per test sample; ``starts`` is ``dim + 1`` uint32s; the test
    samples containing feature ``j`` are the uint16 ``entries[starts[j] : starts[j+1]]``.
    """
    if len(test) > UINT16_MAX + 1:
        raise InvalidSample("count", len(test), f"{len(test)} test samples exceed uint16 entries")
    columns: list[list[int]] = [[] for _ in range(dim)]
    for t, sample in enumerate(test):
        for j in sample.features:
            columns[j].append(t)
    starts = [0]
    for column in columns:
        starts.append(starts[-1] + len(column))
    entries = [t for column in columns for t in column]
    return (
        bytes(s.label for s in test)
        + struct.pack(f">{dim + 1}I", *starts)
        + struct.pack(f">{len(entries)}H", *entries)
    )


def encode_state(weights: Sequence[int], scores: Sequence[int]) -> bytes:
    """STATE of the training pass: WEIGHTS ‖ the test samples' scores, as int64s."""
    return encode_weights(list(weights) + list(scores))
