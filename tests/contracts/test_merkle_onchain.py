"""Commitments from market.merkle against OpenZeppelin's MerkleProof on anvil."""

from __future__ import annotations

import random
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractCustomError, ContractLogicError

from market.contracts import load_artifact
from market.merkle import (
    MultiProof,
    MultiProofRequestError,
    StandardMerkleTree,
    keccak256,
    test_sample_leaf,
    test_sample_tree,
)
from market.types import TestSample
from tests.contracts.chaintools import error_selector, send

N_SAMPLES = 37  # not a power of two: leaves sit at two depths, as in most real test sets


@pytest.fixture(scope="module")
def verifier(w3: Web3, accounts: list[LocalAccount]) -> Contract:
    art = load_artifact("MerkleVerifier")
    receipt = send(
        w3, accounts[0], w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor()
    )
    return w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)


@pytest.fixture(scope="module")
def samples() -> list[TestSample]:
    rng = random.Random(2024)
    return [
        TestSample(
            i,
            rng.randbytes(32),
            tuple(sorted(rng.sample(range(1000), rng.randrange(1, 30)))),
            i % 2,
        )
        for i in range(N_SAMPLES)
    ]


@pytest.fixture(scope="module")
def tree(samples: list[TestSample]) -> StandardMerkleTree:
    return test_sample_tree(samples)


def flip(data: bytes, bit: int = 0) -> bytes:
    return bytes([data[0] ^ (1 << bit)]) + data[1:]


def sample_args(s: TestSample) -> tuple[int, bytes, list[int], int]:
    return (s.index, s.salt, list(s.features), s.label)


def multi_verify(verifier: Contract, mp: MultiProof, root: bytes, leaves: list[bytes]) -> bool:
    return bool(verifier.functions.multiProofVerify(mp.proof, mp.proof_flags, root, leaves).call())


def leaf_hashes(tree: StandardMerkleTree, mp: MultiProof) -> list[bytes]:
    return [tree.leaf_hash_at(i) for i in mp.leaf_indices]


# ----------------------------------------------------------------------------- accepted


def test_leaf_is_computed_on_chain_as_in_python(
    verifier: Contract, samples: list[TestSample]
) -> None:
    for s in samples[:10]:
        assert verifier.functions.testSampleLeaf(*sample_args(s)).call() == test_sample_leaf(s)


def test_every_proof_is_accepted(
    verifier: Contract, tree: StandardMerkleTree, samples: list[TestSample]
) -> None:
    for i, s in enumerate(samples):
        proof = tree.get_proof(i)
        assert verifier.functions.verify(proof, tree.root, test_sample_leaf(s)).call()
        assert verifier.functions.verifyTestSample(proof, tree.root, *sample_args(s)).call()


@pytest.mark.parametrize(
    "indices",
    [[0], [N_SAMPLES - 1], [3, 4], list(range(9, 18)), [30, 2, 17, 8], list(range(N_SAMPLES))],
)
def test_multiproofs_are_accepted_in_their_order(
    verifier: Contract, tree: StandardMerkleTree, samples: list[TestSample], indices: list[int]
) -> None:
    mp = tree.get_multiproof(indices)
    assert sorted(mp.leaf_indices) == sorted(indices)
    assert multi_verify(verifier, mp, tree.root, leaf_hashes(tree, mp))
    structs = [sample_args(samples[i]) for i in mp.leaf_indices]
    fn = verifier.functions.multiProofVerifyTestSamples(
        mp.proof, mp.proof_flags, tree.root, structs
    )
    assert fn.call()


def test_random_multiproofs_are_accepted(
    verifier: Contract, tree: StandardMerkleTree, samples: list[TestSample]
) -> None:
    rng = random.Random(9)
    for _ in range(20):
        mp = tree.get_multiproof(rng.sample(range(N_SAMPLES), rng.randrange(1, N_SAMPLES + 1)))
        assert multi_verify(verifier, mp, tree.root, leaf_hashes(tree, mp))


# ----------------------------------------------------------------------------- rejected


def test_a_flipped_bit_is_rejected(
    verifier: Contract, tree: StandardMerkleTree, samples: list[TestSample]
) -> None:
    s = samples[5]
    proof = tree.get_proof(5)
    for position in range(len(proof)):
        bad = [*proof[:position], flip(proof[position], 3), *proof[position + 1 :]]
        assert not verifier.functions.verifyTestSample(bad, tree.root, *sample_args(s)).call()
    assert not verifier.functions.verify(proof, tree.root, flip(test_sample_leaf(s))).call()
    assert not verifier.functions.verify(proof, flip(tree.root, 7), test_sample_leaf(s)).call()
    index, salt, features, label = sample_args(s)
    fn = verifier.functions.verifyTestSample
    assert not fn(proof, tree.root, index, flip(salt), features, label).call()
    assert not fn(proof, tree.root, index, salt, [*features[:-1], features[-1] ^ 1], label).call()
    assert not fn(proof, tree.root, index, salt, features, 1 - label).call()

    mp = tree.get_multiproof([1, 2, 20])
    leaves = leaf_hashes(tree, mp)
    assert not multi_verify(verifier, mp, tree.root, [flip(leaves[0]), *leaves[1:]])
    bad_mp = MultiProof(
        mp.leaves, mp.leaf_indices, [flip(mp.proof[0]), *mp.proof[1:]], mp.proof_flags
    )
    assert not multi_verify(verifier, bad_mp, tree.root, leaves)


def test_a_wrong_index_is_rejected(
    verifier: Contract, tree: StandardMerkleTree, samples: list[TestSample]
) -> None:
    s = samples[6]
    proof = tree.get_proof(6)
    _, salt, features, label = sample_args(s)
    for forged in (7, 5, 6 + 2**128):
        assert not verifier.functions.verifyTestSample(
            proof, tree.root, forged, salt, features, label
        ).call()
    # Another sample's proof does not prove this one either.
    assert not verifier.functions.verifyTestSample(
        tree.get_proof(7), tree.root, *sample_args(s)
    ).call()
    # A multiproof's leaves must come in the multiproof's order, not the indices' order.
    mp = tree.get_multiproof([10, 11, 12, 25])
    leaves = leaf_hashes(tree, mp)
    by_index = [tree.leaf_hash_at(i) for i in sorted(mp.leaf_indices)]
    assert by_index != leaves
    assert not multi_verify(verifier, mp, tree.root, by_index)


def internal_node_and_path(tree: StandardMerkleTree) -> tuple[bytes, list[bytes]]:
    """The parent of value 0's leaf, and its proof up to the root."""
    nodes = tree.dump()["tree"]
    index = (tree.tree_index(0) - 1) // 2
    path = []
    while index > 0:
        path.append(bytes.fromhex(nodes[index + 1 if index % 2 else index - 1][2:]))
        index = (index - 1) // 2
    parent = bytes.fromhex(nodes[(tree.tree_index(0) - 1) // 2][2:])
    return parent, path


def test_an_internal_node_passed_as_a_leaf_is_rejected_where_leaves_are_computed(
    verifier: Contract, tree: StandardMerkleTree, samples: list[TestSample]
) -> None:
    node, path = internal_node_and_path(tree)
    # The bare library trusts the leaf it is given: an internal node with its own path passes.
    # This is why the market never takes a leaf hash, only the sample, and hashes it itself.
    assert verifier.functions.verify(path, tree.root, node).call()
    # Hashed as a leaf (what any value would go through), the internal node no longer fits:
    # leaves are hashed twice, so no 64-byte pair of children can pose as a leaf.
    assert not verifier.functions.verify(path, tree.root, keccak256(keccak256(node))).call()
    assert not verifier.functions.verify(path, tree.root, keccak256(node)).call()
    # No sample reaches it either: a sample is encoded in at least 160 bytes, never as the
    # 64 bytes of two children.
    for s in samples[:5]:
        assert not verifier.functions.verifyTestSample(path, tree.root, *sample_args(s)).call()


def revert_data(exc: Exception) -> bytes:
    data: Any = getattr(exc, "data", None)
    if isinstance(data, str):
        return bytes.fromhex(data.removeprefix("0x"))
    return bytes(data or b"")


def test_an_empty_leaf_set(verifier: Contract, tree: StandardMerkleTree) -> None:
    """What the market can rely on when a reveal carries no sample.

    With no leaves and no proof, multiProofVerify reverts (MerkleProofInvalidMultiproof).
    With no leaves and the root itself as the proof it returns *true*: the library proves
    nothing about the leaves then, so the market must refuse an empty batch before verifying
    (PredictionMarket does, with MarketEmptyReveal), and market.merkle never builds one.
    """
    with pytest.raises((ContractCustomError, ContractLogicError)) as raised:
        verifier.functions.multiProofVerify([], [], tree.root, []).call()
    assert revert_data(raised.value)[:4] == error_selector("MerkleProofInvalidMultiproof", "")

    assert verifier.functions.multiProofVerify([tree.root], [], tree.root, []).call()
    assert verifier.functions.multiProofVerifyTestSamples([tree.root], [], tree.root, []).call()
    assert not verifier.functions.multiProofVerify([flip(tree.root)], [], tree.root, []).call()

    with pytest.raises(MultiProofRequestError, match="at least one index"):
        tree.get_multiproof([])


def test_a_multiproof_of_the_wrong_shape_reverts(
    verifier: Contract, tree: StandardMerkleTree
) -> None:
    mp = tree.get_multiproof([3, 4, 5])
    leaves = leaf_hashes(tree, mp)
    with pytest.raises((ContractCustomError, ContractLogicError)) as raised:
        verifier.functions.multiProofVerify(mp.proof, mp.proof_flags[1:], tree.root, leaves).call()
    assert revert_data(raised.value)[:4] == error_selector("MerkleProofInvalidMultiproof", "")
    flags = [not mp.proof_flags[0], *mp.proof_flags[1:]]
    try:
        accepted = verifier.functions.multiProofVerify(mp.proof, flags, tree.root, leaves).call()
    except (ContractCustomError, ContractLogicError):
        accepted = False
    assert not accepted
