// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IPredictionMarket} from "../interfaces/IPredictionMarket.sol";

/// @title SampleCodec
/// @notice Reads and writes the packed byte formats of docs/protocol.md (SAMPLE, REVEAL_ITEM,
/// WEIGHTS) and runs the perceptron over them in memory.
/// @dev Calldata is read with `calldataload`, which never reverts past the end of calldata:
/// every reader first checks the sample's declared length against the buffer.
library SampleCodec {
    /// @notice The perceptron while training: weights and the scores of the test samples.
    struct Model {
        int256[] weights;
        int256[] scores;
        int256 intercept;
        int256 learningRate;
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
        uint256 bad; // 1 + position of the first bad feature, 0 if none
        uint256 reason; // 1: range, 2: order
        assembly ("memory-safe") {
            // Features are written front to back with whole-word stores: each store's tail is
            // overwritten by the next, and the last one's tail lands in free memory.
            let out := add(sample, 35)
            let previous := 0
            for { let i := 0 } lt(i, count) { i := add(i, 1) } {
                let f := calldataload(add(features.offset, mul(i, 32)))
                if iszero(lt(f, dim)) {
                    bad := add(i, 1)
                    reason := 1
                    break
                }
                if and(gt(i, 0), iszero(gt(f, previous))) {
                    bad := add(i, 1)
                    reason := 2
                    break
                }
                previous := f
                mstore(add(out, mul(i, 4)), shl(224, f))
            }
            let head := add(sample, 32)
            mstore8(head, label)
            mstore8(add(head, 1), shr(8, count))
            mstore8(add(head, 2), and(count, 0xff))
        }
        if (bad != 0) revert IPredictionMarket.MarketInvalidSample(bad - 1, reason == 1 ? "range" : "order");
    }

    /// @dev keccak256(h ‖ sample) for a sample in memory, hashed in place.
    function chainMemory(bytes32 h, bytes memory sample) internal pure returns (bytes32 out) {
        assembly ("memory-safe") {
            let len := mload(sample)
            mstore(sample, h)
            out := keccak256(sample, add(len, 32))
            mstore(sample, len)
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
        uint256 position,
        bytes memory encoded
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
        // abi.encode(uint256 index, bytes32 salt, uint32[] features, uint8 label), built in the
        // caller's buffer (sized for maxFeatures).
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
            mstore(0x00, keccak256(add(encoded, 32), mul(32, add(5, count))))
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

    /// @dev keccak256(WEIGHTS) of `w`.
    function hashWeights(int256[] memory w) internal pure returns (bytes32 h) {
        uint256 dim = w.length;
        bytes memory packed = new bytes(dim * 8 + 24);
        _packInt64s(packed, 0, w);
        assembly ("memory-safe") {
            h := keccak256(add(packed, 32), mul(dim, 8))
        }
    }

    /// @dev STATE (WEIGHTS ‖ SCORES, big-endian int64s, length checked by the caller) decoded.
    function decodeState(
        bytes calldata data,
        uint256 dim,
        uint256 m
    ) internal pure returns (int256[] memory w, int256[] memory scores) {
        w = new int256[](dim);
        scores = new int256[](m);
        assembly ("memory-safe") {
            let out := add(w, 32)
            for { let i := 0 } lt(i, dim) { i := add(i, 1) } {
                mstore(add(out, mul(i, 32)), sar(192, calldataload(add(data.offset, mul(i, 8)))))
            }
            let base := add(data.offset, mul(dim, 8))
            out := add(scores, 32)
            for { let t := 0 } lt(t, m) { t := add(t, 1) } {
                mstore(add(out, mul(t, 32)), sar(192, calldataload(add(base, mul(t, 8)))))
            }
        }
    }

    /// @dev keccak256(WEIGHTS ‖ SCORES); reverts if a value left int64 (the launch bounds make
    /// that impossible; checked so that a state is never silently truncated).
    function hashState(int256[] memory w, int256[] memory scores) internal pure returns (bytes32 h) {
        uint256 dim = w.length;
        uint256 m = scores.length;
        bytes memory packed = new bytes((dim + m) * 8 + 24);
        _packInt64s(packed, 0, w);
        _packInt64s(packed, dim * 8, scores);
        assembly ("memory-safe") {
            h := keccak256(add(packed, 32), mul(add(dim, m), 8))
        }
    }

    function _packInt64s(bytes memory packed, uint256 at, int256[] memory values) private pure {
        uint256 n = values.length;
        uint256 bad;
        assembly ("memory-safe") {
            let src := add(values, 32)
            let dst := add(add(packed, 32), at)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let v := mload(add(src, mul(i, 32)))
                // v fits int64 iff sign-extending its low 8 bytes gives v back.
                if iszero(eq(signextend(7, v), v)) { bad := 1 }
                // Writes a whole word; the next write overwrites its tail (24 spare bytes).
                mstore(add(dst, mul(i, 8)), shl(192, v))
            }
        }
        if (bad != 0) revert IPredictionMarket.MarketInvalidWeights();
    }

    /// @dev The largest prime below 2^256: the field of the index check's polynomial identity.
    uint256 private constant FIELD = 2 ** 256 - 189;

    /// @dev Checks that `index` is the inverted index of the m test SAMPLEs in `data` and scores
    /// them with the weights. INDEX = labels (m bytes) ‖ starts ((dim+1) × uint32) ‖ entries
    /// (E × uint16): the test samples containing feature j are entries starts[j] .. starts[j+1]-1.
    /// Returns the test digest of `data`, the scores and the correct count.
    ///
    /// The pairs (t, j) listed by the columns must be exactly the pairs of the rows. Both sides
    /// are hashed into the polynomial Π (x + (t << 32 | j)) over a prime field at a point x
    /// drawn from the hash of both inputs (Fiat–Shamir): two different multisets of at most E
    /// pairs agree at a random point with probability at most E / 2^256, and changing either
    /// input redraws x. Rows never repeat a pair (their features strictly increase), so equal
    /// multisets mean the index is the exact transpose. This costs two field multiplications
    /// per entry, where matching every entry against its row's next feature costs three times
    /// as much.
    function verifyIndex(
        bytes calldata data,
        bytes calldata index,
        bytes32 indexHash,
        int256[] memory w,
        int256 intercept
    ) internal pure returns (bytes32 digest, int256[] memory scores, uint256 correct) {
        uint256[] memory rows;
        uint256 entries;
        (digest, rows, entries) = _scanSamples(data);
        uint256 m = rows.length;
        uint256 dim = w.length;
        if (index.length != m + 4 * (dim + 1) + 2 * entries) {
            revert IPredictionMarket.MarketInvalidTrainingInput("index");
        }
        uint256 x = uint256(keccak256(abi.encode(digest, indexHash))) % FIELD;
        uint256 rowProduct;
        (scores, correct, rowProduct) = _scoreRows(data, index, rows, w, intercept, x);
        if (rowProduct != _columnProduct(index, m, dim, entries, x)) {
            revert IPredictionMarket.MarketInvalidTrainingInput("index");
        }
    }

    /// @dev Pass 1: the digest chain, each sample's offset, and the number of features in all.
    function _scanSamples(
        bytes calldata data
    ) private pure returns (bytes32 digest, uint256[] memory rows, uint256 entries) {
        rows = new uint256[](16);
        uint256 m;
        uint256 offset;
        while (offset < data.length) {
            uint256 end = sampleEnd(data, offset);
            digest = chainSample(data, digest, offset, end);
            if (m == rows.length) rows = _grow(rows);
            rows[m++] = offset;
            entries += (end - offset - 3) / 4;
            offset = end;
        }
        assembly ("memory-safe") {
            mstore(rows, m)
        }
    }

    /// @dev Scores every test sample, checks that INDEX carries its label, and returns the
    /// product over the rows' pairs.
    function _scoreRows(
        bytes calldata data,
        bytes calldata index,
        uint256[] memory rows,
        int256[] memory w,
        int256 intercept,
        uint256 x
    ) private pure returns (int256[] memory scores, uint256 correct, uint256 product) {
        uint256 m = rows.length;
        scores = new int256[](m);
        product = 1;
        uint256 bad;
        for (uint256 t = 0; t < m; ++t) {
            int256 score;
            uint256 label;
            (score, label, product) = _scoreRow(data, rows[t], w, intercept, t, x, product);
            scores[t] = score;
            if (label != uint8(index[t])) bad = 1;
            if ((score > 0 ? 1 : 0) == label) ++correct;
        }
        if (bad != 0) revert IPredictionMarket.MarketInvalidTrainingInput("index labels");
    }

    /// @dev One row: its score, its label, and `product` times (x + (t << 32 | j)) for its j.
    function _scoreRow(
        bytes calldata data,
        uint256 offset,
        int256[] memory w,
        int256 intercept,
        uint256 t,
        uint256 x,
        uint256 product
    ) private pure returns (int256 score, uint256 label, uint256) {
        assembly ("memory-safe") {
            let base := add(data.offset, offset)
            let header := calldataload(base)
            label := shr(248, header)
            let fp := add(base, 3)
            let stop_ := add(fp, mul(and(shr(232, header), 0xffff), 4))
            let wp := add(w, 32)
            let row := add(x, shl(32, t))
            score := intercept
            for { } lt(fp, stop_) { fp := add(fp, 4) } {
                let f := shr(224, calldataload(fp))
                score := add(score, mload(add(wp, shl(5, f))))
                product := mulmod(product, addmod(row, f, FIELD), FIELD)
            }
        }
        return (score, label, product);
    }

    /// @dev The product over the columns' pairs; checks the offsets run from 0 to E without
    /// going back and that every entry names a test sample.
    function _columnProduct(
        bytes calldata index,
        uint256 m,
        uint256 dim,
        uint256 entries,
        uint256 x
    ) private pure returns (uint256 product) {
        uint256 bad;
        assembly ("memory-safe") {
            let starts := add(index.offset, m)
            let first := add(starts, mul(add(dim, 1), 4))
            let e := shr(224, calldataload(starts))
            if e { bad := 1 }
            product := 1
            for { let j := 0 } lt(j, dim) { j := add(j, 1) } {
                let until := shr(224, calldataload(add(starts, shl(2, add(j, 1)))))
                if or(lt(until, e), gt(until, entries)) {
                    bad := 1
                    break
                }
                let column := add(x, j)
                let last := add(first, shl(1, until))
                for { let entry := add(first, shl(1, e)) } lt(entry, last) { entry := add(entry, 2) } {
                    let t := shr(240, calldataload(entry))
                    if iszero(lt(t, m)) { bad := 1 }
                    product := mulmod(product, addmod(column, shl(32, t), FIELD), FIELD)
                }
                e := until
            }
            if iszero(eq(e, entries)) { bad := 1 }
        }
        if (bad != 0) revert IPredictionMarket.MarketInvalidTrainingInput("index");
    }

    function _u32(bytes calldata data, uint256 pos) private pure returns (uint256 v) {
        assembly ("memory-safe") {
            v := shr(224, calldataload(add(data.offset, pos)))
        }
    }

    function _grow(uint256[] memory a) private pure returns (uint256[] memory b) {
        b = new uint256[](a.length * 2);
        for (uint256 i = 0; i < a.length; ++i) b[i] = a[i];
    }

    /// @dev Trains the model on the contribution SAMPLE at `offset` (validated when contributed
    /// and matched to its checkpoint by the caller). On a mistake, moves the weights of its
    /// features and the scores of the test samples that share them, read from the checked
    /// INDEX, keeping `correct` exact. Returns the new count and the offset after the sample.
    function trainOne(
        bytes calldata data,
        uint256 offset,
        Model memory model,
        bytes calldata index,
        uint256 m,
        uint256 correct
    ) internal pure returns (uint256, uint256 next) {
        (int256 score, uint256 label, ) = _scoreRow(data, offset, model.weights, model.intercept, 0, 0, 1);
        uint256 count;
        assembly ("memory-safe") {
            count := and(shr(232, calldataload(add(data.offset, offset))), 0xffff)
        }
        next = offset + 3 + 4 * count;
        if ((score > 0 ? 1 : 0) == label) return (correct, next);
        int256 delta = label == 1 ? model.learningRate : -model.learningRate;
        uint256 dim = model.weights.length;
        for (uint256 k = 0; k < count; ++k) {
            uint256 f = _u32(data, offset + 3 + 4 * k);
            correct = _moveFeature(model, index, m, dim, f, delta, correct);
        }
        return (correct, next);
    }

    /// @dev Adds `delta` to weight `f` and to the score of every test sample in INDEX column
    /// `f`, counting predictions that flip to right (+1) or to wrong (−1).
    function _moveFeature(
        Model memory model,
        bytes calldata index,
        uint256 m,
        uint256 dim,
        uint256 f,
        int256 delta,
        uint256 correct
    ) private pure returns (uint256) {
        int256[] memory w = model.weights;
        int256[] memory scores = model.scores;
        assembly ("memory-safe") {
            let wslot := add(add(w, 32), shl(5, f))
            mstore(wslot, add(mload(wslot), delta))
            let starts := add(index.offset, m)
            let entry := add(add(starts, mul(add(dim, 1), 4)), shl(1, shr(224, calldataload(add(starts, shl(2, f))))))
            let last := add(add(starts, mul(add(dim, 1), 4)), shl(1, shr(224, calldataload(add(starts, shl(2, add(f, 1)))))))
            let scp := add(scores, 32)
            let labels := index.offset
            for { } lt(entry, last) { entry := add(entry, 2) } {
                let t := shr(240, calldataload(entry))
                let sslot := add(scp, shl(5, t))
                let old := mload(sslot)
                let new := add(old, delta)
                mstore(sslot, new)
                let positive := sgt(new, 0)
                if iszero(eq(sgt(old, 0), positive)) {
                    // The prediction flipped: it is now right iff it equals the label.
                    switch eq(positive, shr(248, calldataload(add(labels, t))))
                    case 1 { correct := add(correct, 1) }
                    default { correct := sub(correct, 1) }
                }
            }
        }
        return correct;
    }
}
