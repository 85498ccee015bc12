// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title MerkleVerifier
/// @notice Test-only contract: OpenZeppelin's MerkleProof as the market uses it, so tests can
/// check that the commitments built by `market/merkle.py` are accepted on-chain, and that
/// tampered ones are not.
contract MerkleVerifier {
    /// @notice A salted test sample, the values of one committed leaf (docs/protocol.md).
    struct TestSample {
        uint256 index;
        bytes32 salt;
        uint32[] features;
        uint8 label;
    }

    /// @notice `MerkleProof.verify`: whether `proof` leads from `leaf` to `root`.
    function verify(bytes32[] calldata proof, bytes32 root, bytes32 leaf) external pure returns (bool) {
        return MerkleProof.verifyCalldata(proof, root, leaf);
    }

    /// @notice `MerkleProof.multiProofVerify`: whether `leaves`, in multiproof order, lead to
    /// `root`. Reverts with `MerkleProofInvalidMultiproof` when the lengths do not fit.
    function multiProofVerify(
        bytes32[] calldata proof,
        bool[] calldata proofFlags,
        bytes32 root,
        bytes32[] calldata leaves
    ) external pure returns (bool) {
        return MerkleProof.multiProofVerifyCalldata(proof, proofFlags, root, leaves);
    }

    /// @notice The StandardMerkleTree leaf of a salted test sample:
    /// `keccak256(bytes.concat(keccak256(abi.encode(index, salt, features, label))))`.
    function testSampleLeaf(
        uint256 index,
        bytes32 salt,
        uint32[] calldata features,
        uint8 label
    ) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(index, salt, features, label))));
    }

    /// @notice Whether `proof` proves the test sample `(index, salt, features, label)` under `root`.
    function verifyTestSample(
        bytes32[] calldata proof,
        bytes32 root,
        uint256 index,
        bytes32 salt,
        uint32[] calldata features,
        uint8 label
    ) external pure returns (bool) {
        return MerkleProof.verifyCalldata(proof, root, testSampleLeaf(index, salt, features, label));
    }

    /// @notice Whether a multiproof proves `samples` (in multiproof order) under `root`, each
    /// leaf computed on-chain from the sample's values.
    function multiProofVerifyTestSamples(
        bytes32[] calldata proof,
        bool[] calldata proofFlags,
        bytes32 root,
        TestSample[] calldata samples
    ) external pure returns (bool) {
        bytes32[] memory leaves = new bytes32[](samples.length);
        for (uint256 i = 0; i < samples.length; ++i) {
            TestSample calldata s = samples[i];
            leaves[i] = testSampleLeaf(s.index, s.salt, s.features, s.label);
        }
        return MerkleProof.multiProofVerify(proof, proofFlags, root, leaves);
    }
}
