// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IPredictionMarket} from "../interfaces/IPredictionMarket.sol";

/// @title SampleCodec
/// @notice Reads and writes the packed byte formats of docs/protocol.md (SAMPLE, REVEAL_ITEM,
/// WEIGHTS) and runs the perceptron over them in memory.
/// @dev Calldata is read with `calldataload`, which never reverts past the end of calldata:
/// every reader first checks the sample's declared length against the buffer.
library SampleCodec {
    /// @notice The test set held in memory during one training step.
    /// @dev `starts` is a CSR index: the test samples that contain feature `j` are the uint16
    /// entries `starts[j] .. starts[j+1]-1` of `entries`.
    struct TestIndex {
        bytes32 digest;
        int256[] scores;
        bytes labels;
        uint256[] starts;
        bytes entries;
    }

    /// @dev Offset one past the SAMPLE at `offset`, reverting when it overruns `data`.
    function sampleEnd(bytes calldata data, uint256 offset) internal pure returns (uint256 end) {
        if (offset + 3 > data.length) revert IPredictionMarket.MarketInvalidSample(offset, "length");
        uint256 count;
        assembly ("memory-safe") {
            count := and(shr(240, calldataload(add(add(data.offset, offset), 1))), 0xffff)
        }
        end = offset + 3 + 4 * count;
        if (end > data.length) revert IPredictionMarket.MarketInvalidSample(offset, "length");
    }

    /// @dev keccak256(h ‖ data[start:end]).
    function chainSample(bytes calldata data, bytes32 h, uint256 start, uint256 end) internal pure returns (bytes32 out) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, h)
            let len := sub(end, start)
            calldatacopy(add(ptr, 32), add(data.offset, start), len)
            out := keccak256(ptr, add(len, 32))
        }
    }

    /// @dev The `i`-th big-endian int64 of a WEIGHTS buffer.
    function weightAt(bytes calldata weights, uint256 i) internal pure returns (int256 w) {
        assembly ("memory-safe") {
            w := sar(192, calldataload(add(weights.offset, mul(i, 8))))
        }
    }

    /// @dev Validates a contribution and returns its SAMPLE encoding.
    function encodeSample(
        uint32[] calldata features,
        uint8 label,
        uint256 dim,
        uint256 maxFeatures
    ) internal pure returns (bytes memory sample) {
        uint256 count = features.length;
        if (label > 1) revert IPredictionMarket.MarketInvalidSample(0, "label");
        if (count == 0 || count > maxFeatures) revert IPredictionMarket.MarketInvalidSample(0, "count");
        sample = new bytes(3 + 4 * count);
        uint256 previous;
        for (uint256 i = 0; i < count; ++i) {
            uint256 f = features[i];
            if (f >= dim) revert IPredictionMarket.MarketInvalidSample(i, "range");
            if (i > 0 && f <= previous) revert IPredictionMarket.MarketInvalidSample(i, "order");
            previous = f;
            assembly ("memory-safe") {
                let ptr := add(add(sample, 35), mul(i, 4))
                mstore(ptr, or(shl(224, f), and(mload(ptr), 0xffffffffffffffffffffffffffffffffffffffffffffffffffffffff)))
            }
        }
        assembly ("memory-safe") {
            let ptr := add(sample, 32)
            mstore(ptr, or(or(shl(248, label), shl(232, count)), and(mload(ptr), 0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffff)))
        }
    }

    /// @dev Reads the REVEAL_ITEM at `offset`, validates its sample, and returns its index, its
    /// OpenZeppelin StandardMerkleTree leaf and the offset one past it. `position` names the
    /// item in errors.
    function revealItemLeaf(
        bytes calldata items,
        uint256 offset,
        uint256 dim,
        uint256 maxFeatures,
        uint256 position
    ) internal pure returns (uint256 index, bytes32 leaf, uint256 end) {
        if (offset + 36 > items.length) revert IPredictionMarket.MarketInvalidSample(position, "length");
        end = sampleEnd(items, offset + 36);
        uint256 label;
        uint256 count;
        bytes32 salt;
        assembly ("memory-safe") {
            let base := add(items.offset, offset)
            index := shr(224, calldataload(base))
            salt := calldataload(add(base, 4))
            let header := calldataload(add(base, 36))
            label := shr(248, header)
            count := and(shr(232, header), 0xffff)
        }
        if (label > 1) revert IPredictionMarket.MarketInvalidSample(position, "label");
        if (count == 0 || count > maxFeatures) revert IPredictionMarket.MarketInvalidSample(position, "count");
        // abi.encode(uint256 index, bytes32 salt, uint32[] features, uint8 label), built in memory.
        bytes memory encoded = new bytes(32 * (5 + count));
        uint256 previous;
        for (uint256 i = 0; i < count; ++i) {
            uint256 f;
            assembly ("memory-safe") {
                f := shr(224, calldataload(add(add(items.offset, offset), add(39, mul(i, 4)))))
                mstore(add(encoded, add(192, mul(i, 32))), f)
            }
            if (f >= dim) revert IPredictionMarket.MarketInvalidSample(position, "range");
            if (i > 0 && f <= previous) revert IPredictionMarket.MarketInvalidSample(position, "order");
            previous = f;
        }
        assembly ("memory-safe") {
            mstore(add(encoded, 32), index)
            mstore(add(encoded, 64), salt)
            mstore(add(encoded, 96), 0x80)
            mstore(add(encoded, 128), label)
            mstore(add(encoded, 160), count)
            mstore(0x00, keccak256(add(encoded, 32), mload(encoded)))
            leaf := keccak256(0x00, 0x20)
        }
    }

    /// @dev Writes `value` as a big-endian uint32 at byte `pos` of `out`, keeping the bytes around it.
    function writeUint32(bytes memory out, uint256 pos, uint256 value) internal pure {
        assembly ("memory-safe") {
            let ptr := add(add(out, 32), pos)
            mstore(ptr, or(shl(224, value), and(mload(ptr), 0xffffffffffffffffffffffffffffffffffffffffffffffffffffffff)))
        }
    }

    /// @dev WEIGHTS (checked to have `dim` entries by the caller) as an int256 array.
    function decodeWeights(bytes calldata data, uint256 dim) internal pure returns (int256[] memory w) {
        w = new int256[](dim);
        assembly ("memory-safe") {
            let out := add(w, 32)
            for { let i := 0 } lt(i, dim) { i := add(i, 1) } {
                mstore(add(out, mul(i, 32)), sar(192, calldataload(add(data.offset, mul(i, 8)))))
            }
        }
    }

    /// @dev keccak256(WEIGHTS) of `w`; reverts if a weight left int64 (prevented by the
    /// launch bounds, checked anyway so a model is never silently truncated).
    function hashWeights(int256[] memory w) internal pure returns (bytes32 h) {
        uint256 dim = w.length;
        bytes memory packed = new bytes(dim * 8 + 24);
        for (uint256 i = 0; i < dim; ++i) {
            int256 v = w[i];
            if (v > type(int64).max || v < type(int64).min) revert IPredictionMarket.MarketInvalidWeights();
            assembly ("memory-safe") {
                // Writes a whole word; the next write overwrites its tail (24 spare bytes at the end).
                mstore(add(add(packed, 32), mul(i, 8)), shl(192, v))
            }
        }
        assembly ("memory-safe") {
            h := keccak256(add(packed, 32), mul(dim, 8))
        }
    }

    /// @dev Parses the m test SAMPLEs, extends the digest chain over them, builds the inverted
    /// index and the initial scores; returns the index and the number classified correctly.
    function indexTestSet(
        bytes calldata data,
        uint256 m,
        int256[] memory w,
        int256 intercept
    ) internal pure returns (TestIndex memory ix, uint256 correct) {
        uint256 dim = w.length;
        uint256[] memory starts = new uint256[](dim + 1);
        bytes memory labels = new bytes(m);
        int256[] memory scores = new int256[](m);
        bytes32 digest;
        uint256 offset;
        uint256 entryCount;
        // Pass 1: digest, labels, feature counts, scores.
        for (uint256 t = 0; t < m; ++t) {
            uint256 end = sampleEnd(data, offset);
            digest = chainSample(data, digest, offset, end);
            assembly ("memory-safe") {
                let base := add(data.offset, offset)
                let header := calldataload(base)
                let label := shr(248, header)
                let count := and(shr(232, header), 0xffff)
                mstore8(add(add(labels, 32), t), label)
                let score := intercept
                let wp := add(w, 32)
                let sp := add(starts, 32)
                for { let k := 0 } lt(k, count) { k := add(k, 1) } {
                    let f := shr(224, calldataload(add(base, add(3, mul(k, 4)))))
                    score := add(score, mload(add(wp, mul(f, 32))))
                    let c := add(sp, mul(f, 32))
                    mstore(c, add(mload(c), 1))
                }
                mstore(add(add(scores, 32), mul(t, 32)), score)
                if eq(sgt(score, 0), label) { correct := add(correct, 1) }
                entryCount := add(entryCount, count)
            }
            offset = end;
        }
        if (offset != data.length) revert IPredictionMarket.MarketInvalidTrainingInput("testSamples");
        // Inclusive prefix sums: starts[j] becomes the end of feature j's range.
        uint256 running;
        for (uint256 j = 0; j < dim; ++j) {
            running += starts[j];
            starts[j] = running;
        }
        starts[dim] = running;
        // Pass 2: fill from the back; each starts[j] moves down to the start of its range.
        bytes memory entries = new bytes(entryCount * 2 + 32);
        offset = 0;
        for (uint256 t = 0; t < m; ++t) {
            assembly ("memory-safe") {
                let base := add(data.offset, offset)
                let count := and(shr(232, calldataload(base)), 0xffff)
                let sp := add(starts, 32)
                let ep := add(entries, 32)
                for { let k := 0 } lt(k, count) { k := add(k, 1) } {
                    let f := shr(224, calldataload(add(base, add(3, mul(k, 4)))))
                    let c := add(sp, mul(f, 32))
                    let pos := sub(mload(c), 1)
                    mstore(c, pos)
                    let at := add(ep, mul(pos, 2))
                    mstore8(at, shr(8, t))
                    mstore8(add(at, 1), and(t, 0xff))
                }
                offset := add(offset, add(3, mul(count, 4)))
            }
        }
        ix = TestIndex({digest: digest, scores: scores, labels: labels, starts: starts, entries: entries});
    }

    /// @dev Trains the model on the contribution SAMPLE at `offset` (validated when contributed
    /// and matched to its checkpoint by the caller). On a mistake, moves the weights of its
    /// features and the scores of the test samples that share them, keeping `correct` exact.
    function trainOne(
        bytes calldata data,
        uint256 offset,
        int256[] memory w,
        TestIndex memory ix,
        int256 intercept,
        int256 learningRate,
        uint256 correct
    ) internal pure returns (uint256, uint256 next) {
        int256[] memory scores = ix.scores;
        bytes memory labels = ix.labels;
        uint256[] memory starts = ix.starts;
        bytes memory entries = ix.entries;
        assembly ("memory-safe") {
            let base := add(data.offset, offset)
            let header := calldataload(base)
            let label := shr(248, header)
            let count := and(shr(232, header), 0xffff)
            next := add(offset, add(3, mul(count, 4)))
            let wp := add(w, 32)
            let score := intercept
            for { let k := 0 } lt(k, count) { k := add(k, 1) } {
                let f := shr(224, calldataload(add(base, add(3, mul(k, 4)))))
                score := add(score, mload(add(wp, mul(f, 32))))
            }
            if iszero(eq(sgt(score, 0), label)) {
                let delta := learningRate
                if iszero(label) { delta := sub(0, learningRate) }
                let sp := add(starts, 32)
                let ep := add(entries, 32)
                let scp := add(scores, 32)
                let lp := add(labels, 32)
                for { let k := 0 } lt(k, count) { k := add(k, 1) } {
                    let f := shr(224, calldataload(add(base, add(3, mul(k, 4)))))
                    let wslot := add(wp, mul(f, 32))
                    mstore(wslot, add(mload(wslot), delta))
                    let e := mload(add(sp, mul(f, 32)))
                    let until := mload(add(sp, mul(add(f, 1), 32)))
                    for { } lt(e, until) { e := add(e, 1) } {
                        let t := shr(240, mload(add(ep, mul(e, 2))))
                        let sslot := add(scp, mul(t, 32))
                        let old := mload(sslot)
                        let new := add(old, delta)
                        mstore(sslot, new)
                        let positive := sgt(new, 0)
                        if iszero(eq(sgt(old, 0), positive)) {
                            // The prediction flipped: it is now right iff it equals the label.
                            switch eq(positive, shr(248, mload(add(lp, t))))
                            case 1 { correct := add(correct, 1) }
                            default { correct := sub(correct, 1) }
                        }
                    }
                }
            }
        }
        return (correct, next);
    }
}
