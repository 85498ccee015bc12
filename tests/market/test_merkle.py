"""market.merkle against @openzeppelin/merkle-tree itself (run through node), and its errors."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from market import merkle
from market.errors import MarketError
from market.merkle import (
    LEAF_TYPES,
    DuplicateLeafIndex,
    EmptyTreeError,
    InvalidTreeDump,
    LeafIndexError,
    LeafTypeError,
    LeafValueError,
    MerkleError,
    MultiProofRequestError,
    StandardMerkleTree,
)
from market.types import TestSample

ROOT = Path(__file__).resolve().parents[2]
OZ_SCRIPT = ROOT / "scripts" / "oz_merkle.mjs"


def oz(mode: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run @openzeppelin/merkle-tree through scripts/oz_merkle.mjs."""
    done = subprocess.run(
        ["node", str(OZ_SCRIPT), mode],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def hexes(nodes: list[bytes]) -> list[str]:
    return ["0x" + node.hex() for node in nodes]


# ----------------------------------------------------------------------------- random values


def random_value(rng: random.Random, t: str) -> Any:
    if t.endswith("]"):
        inner, length = t[: t.rfind("[")], t[t.rfind("[") + 1 : -1]
        count = int(length) if length else rng.randrange(0, 5)
        return [random_value(rng, inner) for _ in range(count)]
    if t.startswith("("):
        return [random_value(rng, c) for c in t[1:-1].split(",")]
    if t == "address":
        return "0x" + rng.randbytes(20).hex()
    if t == "bool":
        return rng.random() < 0.5
    if t == "string":
        return "".join(rng.choice("abcé€😀 ") for _ in range(rng.randrange(0, 70)))
    if t == "bytes":
        return rng.randbytes(rng.randrange(0, 70))
    if t.startswith("bytes"):
        return rng.randbytes(int(t[5:]))
    bits = int(t[4:] if t.startswith("uint") else t[3:])
    edge = rng.random() < 0.2
    if t.startswith("uint"):
        return rng.choice([0, 2**bits - 1]) if edge else rng.randrange(2**bits)
    half = 2 ** (bits - 1)
    return rng.choice([-half, half - 1, -1]) if edge else rng.randrange(-half, half)


def random_sample_value(rng: random.Random, index: int) -> list[Any]:
    features = sorted(rng.sample(range(4096), rng.randrange(1, 40)))
    return [index, rng.randbytes(32), features, rng.randrange(2)]


ENCODINGS: list[list[str]] = [
    ["address", "uint256"],
    ["bytes32"],
    ["bool", "string", "bytes"],
    ["uint32[]", "int64", "bytes4"],
    ["(uint8,address)[2]", "string[]", "int256"],
    list(LEAF_TYPES),
]


def random_values(rng: random.Random, encoding: list[str], n: int) -> list[list[Any]]:
    if encoding == list(LEAF_TYPES):
        return [random_sample_value(rng, i) for i in range(n)]
    return [[random_value(rng, t) for t in encoding] for _ in range(n)]


# ----------------------------------------------------------------------------- cross-checks


def check_against_oz(tree: StandardMerkleTree, rng: random.Random) -> None:
    n = len(tree)
    dump = tree.dump()
    json_values = [entry["value"] for entry in dump["values"]]
    indices = rng.sample(range(n), rng.randrange(1, n + 1))
    ours = tree.get_multiproof(indices)
    theirs = oz(
        "tree",
        {"values": json_values, "encoding": list(tree.leaf_encoding), "multiproof": indices},
    )

    assert tree.root_hex == theirs["root"]
    table = tree.get_all_proofs()
    for i in range(n):
        assert hexes(tree.get_proof(i)) == theirs["proofs"][i], f"proof of value {i}"
        assert table.proof(i) == tree.get_proof(i)
    assert [json_values[i] for i in ours.leaf_indices] == theirs["multiproof"]["leaves"]
    assert hexes(ours.proof) == theirs["multiproof"]["proof"]
    assert ours.proof_flags == theirs["multiproof"]["proofFlags"]
    assert list(ours.leaves) == [tree.values[i] for i in ours.leaf_indices]
    assert dump == theirs["dump"]

    assert all(tree.verify(i, tree.get_proof(i)) for i in range(n))
    assert tree.verify_multiproof(ours)
    loaded = StandardMerkleTree.load(theirs["dump"])
    assert loaded.root == tree.root and loaded.values == tree.values
    assert oz("load", {"dump": dump})["root"] == tree.root_hex


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 1000])
def test_matches_openzeppelin_for_every_size(n: int) -> None:
    rng = random.Random(n)
    encoding = ENCODINGS[n % len(ENCODINGS)] if n < 1000 else list(LEAF_TYPES)
    tree = StandardMerkleTree.of(random_values(rng, encoding, n), encoding)
    check_against_oz(tree, rng)


@pytest.mark.parametrize("encoding", ENCODINGS, ids=lambda e: ",".join(e))
def test_matches_openzeppelin_for_every_encoding(encoding: list[str]) -> None:
    rng = random.Random(",".join(encoding))
    tree = StandardMerkleTree.of(random_values(rng, encoding, 13), encoding)
    check_against_oz(tree, rng)


def test_test_sample_indices_beyond_64_bits_take_the_generic_path() -> None:
    rng = random.Random(7)
    values = [random_sample_value(rng, i) for i in range(5)]
    values[3][0] = 2**200 + 3
    tree = StandardMerkleTree.of(values, LEAF_TYPES)
    assert tree.values[3][0] == 2**200 + 3
    check_against_oz(tree, rng)


def test_duplicate_values_sort_stably_like_openzeppelin() -> None:
    rng = random.Random(3)
    values = [["0x" + "11" * 20, 5], ["0x" + "22" * 20, 6]] * 3
    tree = StandardMerkleTree.of(values, ["address", "uint256"])
    check_against_oz(tree, rng)


def test_test_sample_tree_and_leaf_agree_with_the_generic_encoding() -> None:
    rng = random.Random(11)
    samples = [
        TestSample(i, rng.randbytes(32), tuple(v[2]), v[3])
        for i, v in enumerate(random_sample_value(rng, i) for i in range(50))
    ]
    tree = merkle.test_sample_tree(samples)
    generic = StandardMerkleTree.of(
        [[s.index, "0x" + s.salt.hex(), list(s.features), s.label] for s in samples], LEAF_TYPES
    )
    assert tree.root == generic.root
    for i, s in enumerate(samples):
        assert merkle.test_sample_leaf(s) == tree.leaf_hash_at(i) == tree.leaf_hash(tree.values[i])
    assert tree.values[0] == (0, samples[0].salt, samples[0].features, samples[0].label)


def test_dump_and_load_round_trip() -> None:
    rng = random.Random(5)
    for encoding in ENCODINGS:
        tree = StandardMerkleTree.of(random_values(rng, encoding, 10), encoding)
        loaded = StandardMerkleTree.load(json.loads(json.dumps(tree.dump())))
        assert loaded.root == tree.root
        assert loaded.values == tree.values
        assert loaded.dump() == tree.dump()
        assert [loaded.get_proof(i) for i in range(10)] == [tree.get_proof(i) for i in range(10)]


def test_module_level_verify_helpers() -> None:
    values = [["0x" + f"{i:040x}", i] for i in range(6)]
    tree = StandardMerkleTree.of(values, ["address", "uint256"])
    proof = tree.get_proof(2)
    assert merkle.verify(tree.root, ["address", "uint256"], values[2], proof)
    assert not merkle.verify(tree.root, ["address", "uint256"], values[3], proof)
    mp = tree.get_multiproof([0, 4, 5])
    assert merkle.verify_multiproof(tree.root, ["address", "uint256"], mp)
    leaves = [tree.leaf_hash(v) for v in mp.leaves]
    assert merkle.process_multiproof(leaves, mp.proof, mp.proof_flags) == tree.root
    with pytest.raises(MerkleError, match="flags"):
        merkle.process_multiproof(leaves, mp.proof, mp.proof_flags[1:])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "bad_type",
    ["uint", "int", "byte", "uint256 ", "uint7", "uint264", "uint08", "bytes0", "bytes33",
     "fixed128x18", "function", "uint256[0]", "uint256[01]", "(uint256", "()", "",
     "address payable"],
)  # fmt: skip
def test_non_canonical_or_unsupported_types_are_refused(bad_type: str) -> None:
    with pytest.raises(LeafTypeError, match=r"leaf_encoding\[1\]"):
        StandardMerkleTree.of([[1, 2]], ["uint256", bad_type])


def test_encoding_must_be_a_sequence_of_types() -> None:
    with pytest.raises(LeafTypeError, match="sequence"):
        StandardMerkleTree.of([[1]], "uint256")
    with pytest.raises(LeafTypeError, match="at least one type"):
        StandardMerkleTree.of([[]], [])


def sample(**changes: Any) -> TestSample:
    fields: dict[str, Any] = {"index": 0, "salt": b"\x07" * 32, "features": (1, 5, 9), "label": 1}
    return TestSample(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"label": 256}, "label", "does not fit uint8"),
        ({"label": -1}, "label", "does not fit uint8"),
        ({"label": "1"}, "label", "expected an int"),
        ({"label": True}, "label", "expected an int"),
        ({"label": 1.0}, "label", "expected an int"),
        ({"features": (1, -1)}, r"features\[1\]", "does not fit uint32"),
        ({"features": (2**32,)}, r"features\[0\]", "does not fit uint32"),
        ({"features": (1.5,)}, r"features\[0\]", "expected an int"),
        ({"features": ("3",)}, r"features\[0\]", "expected an int"),
        ({"features": (True,)}, r"features\[0\]", "expected an int"),
        ({"features": 3}, "features", "expected a list or tuple"),
        ({"salt": b"\x01" * 31}, "salt", "exactly 32 bytes, got 31"),
        ({"salt": b"\x01" * 33}, "salt", "exactly 32 bytes, got 33"),
        ({"salt": 5}, "salt", "expected bytes"),
        ({"index": -1}, "index", "does not fit uint256"),
        ({"index": 2**256}, "index", "does not fit uint256"),
    ],
)
def test_test_sample_values_that_do_not_fit_are_refused(
    changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(LeafValueError, match=rf"^sample\.{field}: .*{words}"):
        merkle.test_sample_leaf(sample(**changes))
    # In a tree, through the vectorized path, the error names the value too.
    samples = [sample(index=0), sample(**{"index": 1, **changes}), sample(index=2)]
    values = [(s.index, s.salt, s.features, s.label) for s in samples]
    with pytest.raises(LeafValueError, match=rf"^values\[1\]\.{field}: .*{words}"):
        StandardMerkleTree.of(values, LEAF_TYPES)
    if "index" not in changes:
        with pytest.raises(LeafValueError, match=rf"^values\[1\]\.{field}: .*{words}"):
            merkle.test_sample_tree(samples)


def test_test_sample_tree_requires_index_equal_to_position() -> None:
    with pytest.raises(LeafValueError, match=r"samples\[1\]\.index.*carries index 5, expected 1"):
        merkle.test_sample_tree([sample(index=0), sample(index=5)])


@pytest.mark.parametrize(
    ("encoding", "value", "words"),
    [
        (["address"], ["0x" + "ab" * 19], "20-byte hex address"),
        (["address"], ["0xAbCdEf0123456789aBcDeF0123456789aBcDeF01"], "checksum"),
        (["bytes32"], ["0x1234"], "exactly 32 bytes, got 2"),
        (["bytes"], ["12zz"], "hex"),
        (["bool"], [1], "expected a bool"),
        (["uint8"], [300], "does not fit uint8"),
        (["int8"], [-129], "does not fit int8"),
        (["string"], [b"abc"], "expected a str"),
        (["uint8[2]"], [[1, 2, 3]], "takes 2 items, got 3"),
        (["uint8", "bool"], [1], "2 types, the value 1 items"),
    ],
)
def test_generic_values_that_do_not_fit_are_refused(
    encoding: list[str], value: list[Any], words: str
) -> None:
    good_value = [random_value(random.Random(1), t) for t in encoding]
    with pytest.raises(LeafValueError, match=rf"^values\[1\].*{words}"):
        StandardMerkleTree.of([good_value, value], encoding)
    tree = StandardMerkleTree.of([good_value], encoding)
    with pytest.raises(LeafValueError, match=words):
        tree.leaf_hash(value)


def test_empty_tree_is_refused() -> None:
    with pytest.raises(EmptyTreeError, match="at least one leaf"):
        StandardMerkleTree.of([], ["uint256"])
    with pytest.raises(EmptyTreeError):
        merkle.test_sample_tree([])


def test_bad_proof_requests_are_refused() -> None:
    tree = StandardMerkleTree.of([[i] for i in range(5)], ["uint256"])
    with pytest.raises(MultiProofRequestError, match="at least one index"):
        tree.get_multiproof([])
    with pytest.raises(DuplicateLeafIndex, match=r"indices\[2\]: index 1 is requested twice"):
        tree.get_multiproof([1, 3, 1])
    with pytest.raises(LeafIndexError, match=r"indices\[1\]: index 5 out of range"):
        tree.get_multiproof([0, 5])
    for bad in (5, -1):
        with pytest.raises(LeafIndexError, match=f"index {bad} out of range for a tree of 5"):
            tree.get_proof(bad)
    with pytest.raises(LeafIndexError, match="expected an int"):
        tree.get_proof(True)


def test_bad_dumps_are_refused() -> None:
    tree = StandardMerkleTree.of([[i] for i in range(4)], ["uint256"])
    good = tree.dump()
    with pytest.raises(InvalidTreeDump, match="format"):
        StandardMerkleTree.load({**good, "format": "simple-v1"})
    tampered_node = json.loads(json.dumps(good))
    tampered_node["tree"][0] = "0x" + "00" * 32
    with pytest.raises(InvalidTreeDump, match=r"tree\[0\]: the node is not the hash"):
        StandardMerkleTree.load(tampered_node)
    tampered_value = json.loads(json.dumps(good))
    tampered_value["values"][2]["value"] = ["99"]
    with pytest.raises(InvalidTreeDump, match=r"values\[2\]: the value does not hash"):
        StandardMerkleTree.load(tampered_value)
    moved = json.loads(json.dumps(good))
    moved["values"][0]["treeIndex"] = 0
    with pytest.raises(InvalidTreeDump, match="tree indices"):
        StandardMerkleTree.load(moved)
    with pytest.raises(InvalidTreeDump, match="nodes"):
        StandardMerkleTree.load({**good, "tree": good["tree"][:-1]})


def test_errors_belong_to_the_project_tree() -> None:
    for cls in (LeafTypeError, LeafValueError, EmptyTreeError, LeafIndexError,
                MultiProofRequestError, DuplicateLeafIndex, InvalidTreeDump):  # fmt: skip
        assert issubclass(cls, MerkleError)
        assert issubclass(cls, ValueError)
        assert issubclass(cls, MarketError)
