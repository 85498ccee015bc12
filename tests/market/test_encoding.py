"""Packed byte formats (docs/protocol.md) and the hash chains built over them."""

from __future__ import annotations

import pytest
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from market.encoding import (
    CHECKPOINT,
    ZERO_HASH,
    checkpoint_hashes,
    decode_reveal_items,
    decode_sample,
    decode_samples,
    decode_weights,
    digest_chain,
    encode_reveal_item,
    encode_reveal_items,
    encode_sample,
    encode_samples,
    encode_weights,
    keccak256,
    validate_sample,
    validate_samples,
    weights_hash,
)
from market.errors import InvalidInput, InvalidParams, InvalidSample
from market.types import Sample, TestSample

features = st.lists(st.integers(0, 2**32 - 1), max_size=40, unique=True).map(
    lambda xs: tuple(sorted(xs))
)
samples = st.builds(Sample, features=features, label=st.integers(0, 1))
test_samples = st.builds(
    TestSample,
    index=st.integers(0, 2**32 - 1),
    salt=st.binary(min_size=32, max_size=32),
    features=features,
    label=st.integers(0, 1),
)
int64s = st.integers(-(2**63), 2**63 - 1)


# ----------------------------------------------------------------------------- SAMPLE


def test_sample_layout_is_label_count_then_big_endian_features() -> None:
    encoded = encode_sample(Sample((1, 256), 1))
    assert encoded.hex() == "01" + "0002" + "00000001" + "00000100"


@given(samples)
def test_sample_round_trip(sample: Sample) -> None:
    encoded = encode_sample(sample)
    assert len(encoded) == 3 + 4 * len(sample.features)
    assert decode_sample(encoded) == sample


@given(st.lists(samples, max_size=20))
def test_concatenated_samples_round_trip(items: list[Sample]) -> None:
    assert decode_samples(encode_samples(items)) == items


@given(st.lists(samples, min_size=1, max_size=8), st.data())
def test_a_cut_inside_a_sample_is_a_length_error(items: list[Sample], data: st.DataObject) -> None:
    encoded = encode_samples(items)
    boundaries = {0}
    for sample in items:
        boundaries.add(max(boundaries) + len(encode_sample(sample)))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    if cut in boundaries:
        # A cut between samples is a shorter, valid concatenation.
        assert decode_samples(encoded[:cut]) == items[: sorted(boundaries).index(cut)]
    else:
        with pytest.raises(InvalidSample) as caught:
            decode_samples(encoded[:cut])
        assert caught.value.reason == "length"
        assert caught.value.position in boundaries  # the byte offset of the broken sample


def test_truncation_error_names_the_sample_and_the_shortfall() -> None:
    encoded = encode_samples([Sample((1,), 0), Sample((2, 3), 1)])
    with pytest.raises(InvalidSample, match=r"sample 1 at byte 7: 2 features need 8 bytes, 4 left"):
        decode_samples(encoded[:-4])


def test_single_sample_refuses_trailing_bytes() -> None:
    with pytest.raises(InvalidSample, match="1 bytes left"):
        decode_sample(encode_sample(Sample((1,), 0)) + b"\x00")


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (Sample((1,), 256), "label"),
        (Sample((2**32,), 0), "range"),
        (Sample((-1,), 0), "range"),
        (Sample(tuple(range(2**16)), 0), "count"),
    ],
)
def test_encoding_refuses_values_the_format_cannot_hold(sample: Sample, reason: str) -> None:
    with pytest.raises(InvalidSample) as caught:
        encode_sample(sample)
    assert caught.value.reason == reason


# ----------------------------------------------------------------------------- REVEAL_ITEM


def test_reveal_item_layout_is_index_salt_sample() -> None:
    item = TestSample(7, bytes(range(32)), (5,), 1)
    encoded = encode_reveal_item(item)
    assert encoded[:4].hex() == "00000007"
    assert encoded[4:36] == bytes(range(32))
    assert encoded[36:] == encode_sample(Sample((5,), 1))


@given(st.lists(test_samples, max_size=10))
def test_reveal_items_round_trip(items: list[TestSample]) -> None:
    assert decode_reveal_items(encode_reveal_items(items)) == items


def test_truncated_reveal_header_is_a_length_error() -> None:
    encoded = encode_reveal_items([TestSample(0, bytes(32), (1,), 0)] * 2)
    with pytest.raises(InvalidSample, match="reveal item 1 at byte 43: truncated header"):
        decode_reveal_items(encoded[:50])


def test_salt_must_be_32_bytes() -> None:
    with pytest.raises(InvalidSample) as caught:
        encode_reveal_item(TestSample(0, bytes(31), (1,), 0))
    assert caught.value.field == "salt"


# ----------------------------------------------------------------------------- WEIGHTS


def test_weights_are_big_endian_twos_complement_int64() -> None:
    assert encode_weights([-1, 1, -(2**63)]).hex() == "ff" * 8 + "00" * 7 + "01" + "80" + "00" * 7


@given(st.lists(int64s, max_size=50))
def test_weights_round_trip(weights: list[int]) -> None:
    assert decode_weights(encode_weights(weights), dim=len(weights)) == weights


@pytest.mark.parametrize("weight", [2**63, -(2**63) - 1])
def test_weights_outside_int64_are_refused(weight: int) -> None:
    with pytest.raises(InvalidParams, match="weight 1 ") as caught:
        encode_weights([0, weight])
    assert caught.value.field == "weights"


def test_weights_length_is_checked() -> None:
    with pytest.raises(InvalidParams, match="not a whole number"):
        decode_weights(bytes(12))
    with pytest.raises(InvalidParams, match="expected dim = 3"):
        decode_weights(bytes(16), dim=3)


def test_weights_hash_is_keccak_of_the_encoding() -> None:
    weights = [3, -2, 0]
    assert weights_hash(weights) == keccak(encode_weights(weights))


# ----------------------------------------------------------------------------- hash chains


def test_keccak256_is_ethereum_keccak_not_sha3() -> None:
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


def test_digest_chain_starts_from_zero_and_chains_each_sample() -> None:
    a, b = Sample((1,), 0), Sample((2, 9), 1)
    assert digest_chain([]) == ZERO_HASH
    d1 = keccak(ZERO_HASH + encode_sample(a))
    assert digest_chain([a]) == d1
    assert digest_chain([a, b]) == keccak(d1 + encode_sample(b))


@given(st.lists(samples, max_size=6), st.lists(samples, max_size=6))
def test_digest_chain_extends_batch_by_batch(first: list[Sample], second: list[Sample]) -> None:
    assert digest_chain(second, start=digest_chain(first)) == digest_chain(first + second)


@pytest.mark.parametrize(("count", "blocks"), [(0, 0), (1, 1), (16, 1), (17, 2), (48, 3)])
def test_one_checkpoint_per_block_of_sixteen(count: int, blocks: int) -> None:
    items = [Sample((i,), i % 2) for i in range(count)]
    hashes = checkpoint_hashes(items)
    assert CHECKPOINT == 16
    assert len(hashes) == blocks
    for block, value in enumerate(hashes):
        # Each block restarts from 32 zero bytes.
        assert value == digest_chain(items[block * 16 : block * 16 + 16])
    if count == 17:
        assert hashes[1] == keccak(ZERO_HASH + encode_sample(items[16]))


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("sample", "reason", "position"),
    [
        (Sample((1, 2), 2), "label", 0),
        (Sample((), 1), "count", 0),
        (Sample((0, 1, 2, 3), 1), "count", 0),
        (Sample((1, 10), 0), "range", 1),
        (Sample((1, 5, 5), 0), "order", 2),
        (Sample((4, 3), 0), "order", 1),
        # The contract checks the label before the count, and the range before the order.
        (Sample((), 7), "label", 0),
        (Sample((5, 12), 1), "range", 1),
    ],
)
def test_validation_names_the_rule_and_position(sample: Sample, reason: str, position: int) -> None:
    with pytest.raises(InvalidSample) as caught:
        validate_sample(sample, dim=10, max_features=3)
    assert (caught.value.reason, caught.value.position) == (reason, position)
    assert caught.value.reason in InvalidSample.REASONS
    assert isinstance(caught.value, InvalidInput) and isinstance(caught.value, ValueError)


def test_order_error_message_says_what_is_wrong() -> None:
    with pytest.raises(InvalidSample, match="feature 3 at position 1 .* strictly increasing"):
        validate_sample(Sample((4, 3), 0), dim=10, max_features=3)


@given(samples)
def test_encodable_sorted_samples_within_bounds_are_valid(sample: Sample) -> None:
    if sample.features:
        validate_sample(sample, dim=2**32, max_features=40)


def test_validate_samples_reports_which_sample() -> None:
    good, bad = Sample((1,), 0), Sample((1, 1), 0)
    expected = r"^sample: sample 2: feature 1 at position 1"
    with pytest.raises(InvalidSample, match=expected) as caught:
        validate_samples([good, good, bad], dim=4, max_features=4)
    assert (caught.value.reason, caught.value.position) == ("order", 2)
