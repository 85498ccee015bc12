// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Blockhash} from "@openzeppelin/contracts/utils/Blockhash.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {IPredictionMarket} from "./interfaces/IPredictionMarket.sol";
import {SampleCodec} from "./utils/SampleCodec.sol";

/// @title PredictionMarket
/// @notice One market, deployed as an EIP-1167 clone by {MarketFactory}. Phases and the reward
/// formula follow DESIGN.md; the data layout and the cost of each piece are in docs/protocol.md.
/// @dev Hot data (the test set, the weights, the contributions' samples) is re-supplied as
/// calldata and checked against hashes; storage keeps one slot per contribution for its
/// depositor and running deposit, one slot per contribution for its lazy reward balance, and
/// a heap of threshold crossings for the rounds.
contract PredictionMarket is IPredictionMarket, Initializable, ReentrancyGuardTransient {
    using SampleCodec for bytes;

    /// @notice Largest model: the weights travel as calldata and live in memory while training.
    uint256 public constant MAX_DIM = 8192;
    /// @notice Most features in one sample; bounds the cost of one contribution.
    uint256 public constant MAX_FEATURES = 256;
    /// @notice Bound on `testSize * maxFeatures`: re-supplying and indexing the test set is the
    /// fixed cost of every training step and must leave most of a 15M-gas step for contributions.
    uint256 public constant MAX_TEST_ENTRIES = 30_000;
    /// @notice Contributions per checkpoint hash.
    uint256 public constant CHECKPOINT = 16;
    /// @dev Weights and intercept stay within ±2^62 and the learning rate within 2^20, so
    /// 2^32 updates cannot leave int64: the trained model always encodes back to WEIGHTS.
    int256 private constant MAX_ABS_WEIGHT = 2 ** 62;
    int256 private constant MAX_LEARNING_RATE = 2 ** 20;
    uint256 private constant MAX_TEST_SIZE = 65_535;

    uint8 private constant STAGE_PREPARE = 0;
    uint8 private constant STAGE_TRAIN = 1;
    uint8 private constant STAGE_COLLECT = 2;
    uint8 private constant STAGE_APPLY = 3;
    uint8 private constant STAGE_SETTLE = 4;
    uint8 private constant STAGE_DONE = 5;

    uint256 private constant FLAG_ACTIVE = 1;
    uint256 private constant FLAG_PENDING = 2;

    // --------------------------------------------------------------------------- storage

    MarketParams private _params;
    address private _provider;
    uint96 private _bounty;
    uint64 private _createdAt;
    uint64 private _drawBlock;
    uint64 private _endedAt;
    uint32 private _portion;
    bool private _drawn;
    bool private _publicRevealed;
    bool private _cancelled;
    bool private _providerWithdrawn;
    bytes32 private _weightsHash;

    uint32 private _contributionCount;
    uint96 private _totalDeposits;
    uint32 private _revealedCount;

    bytes32 private _testDigest;
    /// @dev keccak256 of the INDEX (labels, CSR offsets, entries) checked by prepareRewards.
    bytes32 private _indexHash;
    /// @dev keccak256 of the training STATE (WEIGHTS ‖ test scores) after the last step.
    bytes32 private _stateHash;
    /// @dev id => depositor (low 160 bits) | cumulative deposit up to and including id (high 96).
    mapping(uint256 id => uint256) private _contributions;
    mapping(uint256 block_ => bytes32) private _checkpoints;
    mapping(uint256 word => uint256) private _revealedBits;
    mapping(uint256 word => uint256) private _withdrawnBits;

    // Reward computation.
    struct RewardState {
        uint8 stage;
        uint32 trained;
        uint32 initialAccuracy;
        uint32 lastAccuracy;
        uint32 activeCount;
        uint32 pendingCount;
        uint32 pendingCursor;
        uint32 settled;
        uint32 heapSize;
        uint128 total; // T, the cumulative round amount
        uint128 remaining; // R, the bounty not yet distributed
        uint128 target; // T*, the end of the round being collected
        uint128 totalPayout;
    }

    RewardState private _reward;
    /// @dev id => b:int136 | s:int24 | prev:uint32 | next:uint32 | flags:uint8 (docs/protocol.md).
    mapping(uint256 id => uint256) private _balances;
    /// @dev 1-based binary min-heap of (crossing time << 32 | id).
    mapping(uint256 position => uint256) private _heap;
    mapping(uint256 position => uint256) private _pending;

    // --------------------------------------------------------------------------- setup

    /// @dev The implementation behind the clones is never initialized itself.
    constructor() {
        _disableInitializers();
    }

    /// @notice Sets up a clone; the factory calls it in the transaction that creates the clone.
    /// @param provider The bounty provider (the factory's caller).
    /// @param marketParams Launch parameters.
    /// @param initialWeights WEIGHTS of the initial model (`dim` big-endian int64s).
    function initialize(
        address provider,
        MarketParams calldata marketParams,
        bytes calldata initialWeights
    ) external payable initializer {
        _validateParams(marketParams, initialWeights);
        _params = marketParams;
        _provider = provider;
        _bounty = uint96(msg.value);
        _createdAt = uint64(block.timestamp);
        _drawBlock = uint64(block.number + 1);
        _weightsHash = keccak256(initialWeights);
        emit MarketInitialized(provider, msg.value, marketParams, initialWeights);
    }

    function _validateParams(MarketParams calldata p, bytes calldata weights) private view {
        if (msg.value == 0 || msg.value > type(uint96).max) revert MarketInvalidParams("bounty");
        if (p.testRoot == bytes32(0)) revert MarketInvalidParams("testRoot");
        if (p.portions < 2) revert MarketInvalidParams("portions");
        if (p.testSize < p.portions || p.testSize > MAX_TEST_SIZE) revert MarketInvalidParams("testSize");
        if (p.dim == 0 || p.dim > MAX_DIM) revert MarketInvalidParams("dim");
        if (p.maxFeatures == 0 || p.maxFeatures > MAX_FEATURES) revert MarketInvalidParams("maxFeatures");
        if (uint256(p.testSize) * p.maxFeatures > MAX_TEST_ENTRIES) revert MarketInvalidParams("testSize");
        if (p.learningRate < 1 || p.learningRate > MAX_LEARNING_RATE) revert MarketInvalidParams("learningRate");
        if (p.intercept > MAX_ABS_WEIGHT || p.intercept < -MAX_ABS_WEIGHT) revert MarketInvalidParams("intercept");
        if (p.minStake == 0) revert MarketInvalidParams("minStake");
        if (p.latestEnd <= block.timestamp || p.earliestEnd > p.latestEnd) revert MarketInvalidParams("latestEnd");
        if (p.revealWindow == 0) revert MarketInvalidParams("revealWindow");
        if (weights.length != uint256(p.dim) * 8) revert MarketInvalidWeights();
        for (uint256 i = 0; i < p.dim; ++i) {
            int256 w = SampleCodec.weightAt(weights, i);
            if (w > MAX_ABS_WEIGHT || w < -MAX_ABS_WEIGHT) revert MarketInvalidWeights();
        }
    }

    // --------------------------------------------------------------------------- phase

    /// @notice The market's phase, derived from its flags and deadlines.
    function phase() public view returns (Phase) {
        if (_cancelled) return Phase.Cancelled;
        MarketParams storage p = _params;
        if (!_publicRevealed) {
            return block.timestamp > uint256(_createdAt) + p.revealWindow ? Phase.Cancelled : Phase.Committed;
        }
        uint256 endedAt = _effectiveEnd();
        if (endedAt == 0) return Phase.Participation;
        if (_contributionCount == 0 || _reward.stage == STAGE_DONE) return Phase.Collect;
        if (_revealedCount < _testCount()) {
            return block.timestamp > endedAt + p.revealWindow ? Phase.Cancelled : Phase.Reveal;
        }
        return Phase.Reward;
    }

    /// @dev The end time: recorded by {endMarket}, or `latestEnd` once it has passed.
    function _effectiveEnd() private view returns (uint256) {
        if (_endedAt != 0) return _endedAt;
        uint256 latest = _params.latestEnd;
        return block.timestamp >= latest ? latest : 0;
    }

    function _requirePhase(Phase expected) private view {
        Phase current = phase();
        if (current != expected) revert MarketWrongPhase(current, expected);
    }

    /// @dev First and one-past-last index of the drawn public portion.
    function _portionRange() private view returns (uint256 start, uint256 end) {
        uint256 n = _params.testSize;
        uint256 parts = _params.portions;
        start = (uint256(_portion) * n) / parts;
        end = ((uint256(_portion) + 1) * n) / parts;
    }

    /// @dev m: the number of test samples used for scoring (all but the public portion).
    function _testCount() private view returns (uint256) {
        (uint256 start, uint256 end) = _portionRange();
        return uint256(_params.testSize) - (end - start);
    }

    // --------------------------------------------------------------------------- commitment

    /// @inheritdoc IPredictionMarket
    function draw() external {
        _requirePhase(Phase.Committed);
        if (_drawn) revert MarketAlreadyDrawn(_portion);
        _draw();
    }

    /// @dev Draws the public portion from the hash of the draw block, or, when that hash is too
    /// old to read, re-arms the draw at the next block (nobody could have known that hash
    /// either) and returns false.
    function _draw() private returns (bool) {
        uint256 drawBlock = _drawBlock;
        if (block.number <= drawBlock) revert MarketDrawNotReady(drawBlock, block.number);
        bytes32 seed = Blockhash.blockHash(drawBlock);
        if (seed == bytes32(0)) {
            _drawBlock = uint64(block.number + 1);
            emit DrawRearmed(block.number + 1);
            return false;
        }
        uint32 portion = uint32(uint256(keccak256(abi.encode(seed, address(this)))) % _params.portions);
        _portion = portion;
        _drawn = true;
        emit PortionDrawn(portion);
        return true;
    }

    /// @inheritdoc IPredictionMarket
    /// @dev A reveal before the draw draws first, from the same block hash {draw} would read:
    /// the portion is the same whoever draws, so the reveal saves a transaction and chooses
    /// nothing. A reveal that does not match the drawn portion reverts, draw included.
    function revealPublic(bytes calldata items, bytes32[] calldata proof, bool[] calldata proofFlags) external {
        _requirePhase(Phase.Committed);
        if (!_drawn && !_draw()) revert MarketDrawNotReady(_drawBlock, block.number);
        (uint256 start, uint256 end) = _portionRange();
        (bytes32[] memory leaves, ) = _readRevealItems(items, start, end, true);
        if (leaves.length != end - start) revert MarketIncompletePortion(leaves.length, end - start);
        if (!MerkleProof.multiProofVerifyCalldata(proof, proofFlags, _params.testRoot, leaves)) {
            revert MarketInvalidProof();
        }
        _publicRevealed = true;
        emit PublicPortionRevealed(_portion, items);
    }

    // --------------------------------------------------------------------------- participation

    /// @inheritdoc IPredictionMarket
    function contribute(uint32[] calldata features, uint8 label) external payable nonReentrant {
        _requirePhase(Phase.Participation);
        MarketParams storage p = _params;
        bytes memory sample = SampleCodec.encodeSample(features, label, p.dim, p.maxFeatures);
        uint256 stake = p.minStake;
        if (msg.value < stake) revert MarketDepositTooLow(msg.value, stake);
        uint256 deposit = p.allowGreaterDeposits ? msg.value : stake;

        uint256 id = uint256(_contributionCount) + 1;
        uint256 cumulative = uint256(_totalDeposits) + deposit;
        if (cumulative > type(uint96).max || id > type(uint32).max) revert MarketInvalidParams("deposit");
        _contributionCount = uint32(id);
        _totalDeposits = uint96(cumulative);
        _contributions[id] = uint256(uint160(msg.sender)) | (cumulative << 160);
        uint256 blockIndex = (id - 1) / CHECKPOINT;
        bytes32 previous = (id - 1) % CHECKPOINT == 0 ? bytes32(0) : _checkpoints[blockIndex];
        _checkpoints[blockIndex] = SampleCodec.chainMemory(previous, sample);
        emit ContributionAdded(id, msg.sender, deposit, sample);

        if (msg.value > deposit) _send(msg.sender, msg.value - deposit);
    }

    /// @inheritdoc IPredictionMarket
    function endMarket() external {
        if (_endedAt != 0 || !_publicRevealed || _cancelled) revert MarketWrongPhase(phase(), Phase.Participation);
        MarketParams storage p = _params;
        uint256 count = _contributionCount;
        uint256 endedAt;
        if (block.timestamp >= p.latestEnd) {
            endedAt = p.latestEnd;
        } else if (block.timestamp >= p.earliestEnd && count >= p.minContributions) {
            endedAt = block.timestamp;
        } else {
            revert MarketCannotEnd(count, p.earliestEnd, p.latestEnd);
        }
        _endedAt = uint64(endedAt);
        emit MarketEnded(count, endedAt + p.revealWindow);
    }

    // --------------------------------------------------------------------------- reveal

    /// @inheritdoc IPredictionMarket
    function revealBatch(bytes calldata items, bytes32[] calldata proof, bool[] calldata proofFlags) external {
        _requirePhase(Phase.Reveal);
        (uint256 start, uint256 end) = _portionRange();
        (bytes32[] memory leaves, bytes32 digest) = _readRevealItems(items, start, end, false);
        if (!MerkleProof.multiProofVerifyCalldata(proof, proofFlags, _params.testRoot, leaves)) {
            revert MarketInvalidProof();
        }
        uint256 revealed = uint256(_revealedCount) + leaves.length;
        _revealedCount = uint32(revealed);
        _testDigest = digest;
        emit TestBatchRevealed(leaves.length, revealed);
    }

    /// @dev Parses REVEAL_ITEMs, marks their indices revealed, and returns their Merkle leaves
    /// and the test digest extended by their samples. `inPortion` selects whether indices must
    /// lie inside [start, end) (the public reveal) or outside it (the test reveal).
    function _readRevealItems(
        bytes calldata items,
        uint256 start,
        uint256 end,
        bool inPortion
    ) private returns (bytes32[] memory leaves, bytes32 digest) {
        if (items.length == 0) revert MarketEmptyReveal();
        uint256 dim = _params.dim;
        uint256 maxFeatures = _params.maxFeatures;
        digest = _testDigest;
        // The smallest REVEAL_ITEM is 43 bytes (index, salt, header, one feature).
        leaves = new bytes32[](items.length / 43 + 1);
        // One buffer for every leaf's ABI encoding: memory expansion is paid once per batch.
        bytes memory scratch = new bytes(32 * (5 + maxFeatures));
        uint256 count;
        uint256 offset;
        while (offset < items.length) {
            (uint256 index, bytes32 leaf, uint256 sampleEnd) = items.revealItemLeaf(
                offset,
                dim,
                maxFeatures,
                count,
                scratch
            );
            _markRevealed(index, start, end, inPortion);
            if (!inPortion) digest = items.chainSample(digest, offset + 36, sampleEnd);
            leaves[count++] = leaf;
            offset = sampleEnd;
        }
        assembly ("memory-safe") {
            mstore(leaves, count)
        }
    }

    /// @dev Marks test index `index` revealed; it must be in range, on the right side of the
    /// public portion [start, end), and not revealed before.
    function _markRevealed(uint256 index, uint256 start, uint256 end, bool inPortion) private {
        if (index >= _params.testSize || (index >= start && index < end) != inPortion) {
            revert MarketInvalidRevealIndex(index);
        }
        uint256 word = index >> 8;
        uint256 bit = 1 << (index & 255);
        uint256 bits = _revealedBits[word];
        if (bits & bit != 0) revert MarketInvalidRevealIndex(index);
        _revealedBits[word] = bits | bit;
    }

    // --------------------------------------------------------------------------- reward

    /// @inheritdoc IPredictionMarket
    /// @dev Once per market, before training: checks the inverted INDEX of the revealed test
    /// set against the test digest, scores the test set with the initial weights (A_0), and
    /// commits to the INDEX and to the training STATE by hash (docs/protocol.md).
    function prepareRewards(bytes calldata weights, bytes calldata testSamples, bytes calldata index) external {
        _requirePhase(Phase.Reward);
        RewardState memory state = _reward;
        if (state.stage != STAGE_PREPARE) revert MarketWrongPhase(Phase.Reward, Phase.Reward);
        MarketParams memory p = _params;
        if (weights.length != uint256(p.dim) * 8 || keccak256(weights) != _weightsHash) {
            revert MarketInvalidTrainingInput("weights");
        }
        int256[] memory w = SampleCodec.decodeWeights(weights, p.dim);
        bytes32 indexHash = keccak256(index);
        (bytes32 digest, int256[] memory scores, uint256 accuracy) = SampleCodec.verifyIndex(
            testSamples,
            index,
            indexHash,
            w,
            p.intercept
        );
        if (digest != _testDigest) revert MarketInvalidTrainingInput("testSamples");
        bytes32 stateHash = SampleCodec.hashState(w, scores);
        _indexHash = indexHash;
        _stateHash = stateHash;
        state.stage = STAGE_TRAIN;
        state.initialAccuracy = uint32(accuracy);
        state.lastAccuracy = uint32(accuracy);
        _reward = state;
        emit RewardsPrepared(accuracy, indexHash, stateHash);
    }

    /// @inheritdoc IPredictionMarket
    /// @dev During the training pass `state`, `index` and `contributions` are required and
    /// `count` contributions are trained; afterwards they are empty and the call runs rounds
    /// and settlement until `gasleft()` no longer covers one more unit of work.
    function processRewards(
        bytes calldata state_,
        bytes calldata index,
        bytes calldata contributions,
        uint256 count
    ) external {
        _requirePhase(Phase.Reward);
        RewardState memory state = _reward;
        if (state.stage == STAGE_PREPARE) revert MarketInvalidTrainingInput("prepare");
        bool trained;
        if (state.stage == STAGE_TRAIN) {
            _trainStep(state, state_, index, contributions, count);
            trained = true;
        }
        // A call that trained has made its progress: it goes on with the rounds only while the
        // gas left covers a unit. A rounds-only call always does at least one unit.
        if (state.stage != STAGE_TRAIN && (!trained || gasleft() > _unitGas(state.heapSize))) {
            _roundSteps(state);
        }
        _reward = state;
    }

    // ---- training pass

    /// @dev Scores contributions `trained+1 .. trained+count` (see docs/protocol.md).
    function _trainStep(
        RewardState memory state,
        bytes calldata stateData,
        bytes calldata index,
        bytes calldata contributions,
        uint256 count
    ) private {
        uint256 total = _contributionCount;
        uint256 from = uint256(state.trained) + 1;
        if (count == 0 || from + count - 1 > total) revert MarketInvalidTrainingInput("count");
        MarketParams memory p = _params;
        uint256 m = _testCount();
        if (stateData.length != (uint256(p.dim) + m) * 8 || keccak256(stateData) != _stateHash) {
            revert MarketInvalidTrainingInput("state");
        }
        if (keccak256(index) != _indexHash) revert MarketInvalidTrainingInput("index");
        (int256[] memory w, int256[] memory scores) = SampleCodec.decodeState(stateData, p.dim, m);

        bytes memory accuracies = new bytes(count * 4);
        uint256 offset = _verifyContributionBlocks(contributions, from, from + count - 1);
        uint256 threshold = uint256(p.minStake) * m;
        uint256 previousCumulative = _contributions[from - 1] >> 160;
        uint256 accuracy = state.lastAccuracy;
        SampleCodec.Model memory model = SampleCodec.Model({
            weights: w,
            scores: scores,
            intercept: p.intercept,
            learningRate: p.learningRate
        });
        for (uint256 i = 0; i < count; ++i) {
            uint256 id = from + i;
            (accuracy, offset) = SampleCodec.trainOne(contributions, offset, model, index, m, accuracy);
            uint256 cumulative = _contributions[id] >> 160;
            int256 score = int256(accuracy) - int256(uint256(state.lastAccuracy));
            int256 base = int256((cumulative - previousCumulative) * m);
            previousCumulative = cumulative;
            state.lastAccuracy = uint32(accuracy);
            _balances[id] = _packBalance(base, score, id - 1, id == total ? 0 : id + 1, FLAG_ACTIVE);
            if (score < 0) _heapPush(state, _crossing(base, score, threshold), id);
            SampleCodec.writeUint32(accuracies, i * 4, accuracy);
        }
        bytes32 stateHash = SampleCodec.hashState(w, scores);
        _stateHash = stateHash;
        state.trained = uint32(from + count - 1);
        emit ContributionsScored(from, count, accuracies, stateHash);
        if (state.trained == total) {
            bytes32 weightsHash_ = SampleCodec.hashWeights(w);
            _weightsHash = weightsHash_;
            state.stage = STAGE_COLLECT;
            state.activeCount = uint32(total);
            state.remaining = uint128(_bounty);
            state.target = uint128(_bounty);
            emit TrainingCompleted(accuracy, weightsHash_);
        }
    }

    /// @dev Checks the SAMPLEs in `data` against the checkpoints of every block they cover and
    /// returns the offset of contribution `from` inside `data`. `data` starts at the first
    /// contribution of `from`'s block and ends with the last one of `last`'s block.
    function _verifyContributionBlocks(bytes calldata data, uint256 from, uint256 last) private view returns (uint256 start) {
        uint256 firstBlock = (from - 1) / CHECKPOINT;
        uint256 lastBlock = (last - 1) / CHECKPOINT;
        uint256 total = _contributionCount;
        uint256 offset;
        for (uint256 b = firstBlock; b <= lastBlock; ++b) {
            uint256 blockEnd = Math.min((b + 1) * CHECKPOINT, total);
            bytes32 h;
            for (uint256 id = b * CHECKPOINT + 1; id <= blockEnd; ++id) {
                if (id == from) start = offset;
                uint256 end = data.sampleEnd(offset);
                h = data.chainSample(h, offset, end);
                offset = end;
            }
            if (h != _checkpoints[b]) revert MarketInvalidTrainingInput("contributions");
        }
        if (offset != data.length) revert MarketInvalidTrainingInput("contributions");
    }

    // ---- rounds

    /// @dev Runs units of round and settlement work while the gas left covers one more.
    function _roundSteps(RewardState memory state) private {
        uint256 m = _testCount();
        uint256 threshold = uint256(_params.minStake) * m;
        do {
            if (state.stage == STAGE_COLLECT) _collectStep(state);
            else if (state.stage == STAGE_APPLY) _applyStep(state, threshold);
            else if (state.stage == STAGE_SETTLE) _settleStep(state, m);
            else break;
        } while (state.stage != STAGE_DONE && gasleft() > _unitGas(state.heapSize));
    }

    /// @dev Gas one unit may need: a heap sift touches two slots per level (cold read and write
    /// about 10k gas), plus one balance rebase and the final write-back of the state.
    function _unitGas(uint256 heapSize) private pure returns (uint256) {
        return 90_000 + 11_000 * (Math.log2(heapSize + 1) + 1);
    }

    /// @dev Pops one heap entry of the round being collected, or closes the collection.
    function _collectStep(RewardState memory state) private {
        uint256 top = state.heapSize == 0 ? type(uint256).max : _heap[1] >> 32;
        if (top > state.target) {
            if (state.target == uint256(state.total) + state.remaining) {
                state.total = state.target;
                state.remaining = 0;
                state.stage = STAGE_SETTLE;
                emit RoundCompleted(state.total, 0, 0);
            } else {
                state.remaining -= state.target - state.total;
                state.total = state.target;
                state.stage = STAGE_APPLY;
            }
            return;
        }
        uint256 id = _heapPop(state) & type(uint32).max;
        uint256 packed = _balances[id];
        (int256 b, int256 s, , , uint256 flags) = _unpackBalance(packed);
        if (flags != FLAG_ACTIVE || s >= 0) return; // stale entry
        uint256 threshold = uint256(_params.minStake) * _testCount();
        if (_crossing(b, s, threshold) != top) return; // stale entry
        _balances[id] = packed | (FLAG_PENDING << 224);
        _pending[state.pendingCount++] = id;
        uint256 zero = uint256(b) / uint256(-s);
        if (zero < state.target) state.target = uint128(zero);
    }

    /// @dev Removes one pending contribution, or closes the round.
    function _applyStep(RewardState memory state, uint256 threshold) private {
        if (state.pendingCursor < state.pendingCount) {
            _remove(state, _pending[state.pendingCursor++], threshold);
            return;
        }
        emit RoundCompleted(state.total, state.remaining, state.pendingCount);
        state.pendingCount = 0;
        state.pendingCursor = 0;
        if (state.activeCount == 0) {
            state.stage = STAGE_SETTLE;
        } else {
            state.stage = STAGE_COLLECT;
            state.target = state.total + state.remaining;
        }
    }

    /// @dev Freezes contribution `id` at its balance at `T`, unlinks it, and passes its score
    /// on to its successor (s_next += s_id, the telescoping of A_next − A_prev).
    function _remove(RewardState memory state, uint256 id, uint256 threshold) private {
        int256 t = int256(uint256(state.total));
        (int256 b, int256 s, uint256 prev, uint256 next, ) = _unpackBalance(_balances[id]);
        _balances[id] = _packBalance(b + s * t, 0, prev, next, 0);
        if (prev != 0) {
            (int256 pb, int256 ps, uint256 pp, , uint256 pf) = _unpackBalance(_balances[prev]);
            _balances[prev] = _packBalance(pb, ps, pp, next, pf);
        }
        if (next != 0) {
            (int256 nb, int256 ns, , uint256 nn, uint256 nf) = _unpackBalance(_balances[next]);
            int256 balance = nb + ns * t;
            int256 score = ns + s;
            int256 base = balance - score * t;
            _balances[next] = _packBalance(base, score, prev, nn, nf);
            if (score < 0 && nf & FLAG_PENDING == 0) _heapPush(state, _crossing(base, score, threshold), next);
        }
        state.activeCount -= 1;
    }

    /// @dev First T at which b + s·T < threshold, for s < 0 and b ≥ threshold.
    function _crossing(int256 b, int256 s, uint256 threshold) private pure returns (uint256) {
        return (uint256(b) - threshold) / uint256(-s) + 1;
    }

    /// @dev Adds one contribution's payout to the running total.
    function _settleStep(RewardState memory state, uint256 m) private {
        uint256 id = uint256(state.settled) + 1;
        state.totalPayout += uint128(_payoutOf(id, state.total, m));
        state.settled = uint32(id);
        if (id == _contributionCount) {
            state.stage = STAGE_DONE;
            uint256 remainder = uint256(_bounty) + _totalDeposits - state.totalPayout;
            emit RewardsFinalized(state.totalPayout, remainder);
        }
    }

    function _payoutOf(uint256 id, uint256 total, uint256 m) private view returns (uint256) {
        (int256 b, int256 s, , , ) = _unpackBalance(_balances[id]);
        return uint256(b + s * int256(total)) / m;
    }

    // ---- heap of (crossing << 32 | id)

    function _heapPush(RewardState memory state, uint256 key, uint256 id) private {
        uint256 entry = (key << 32) | id;
        uint256 position = ++state.heapSize;
        while (position > 1) {
            uint256 parent = position >> 1;
            uint256 above = _heap[parent];
            if (above <= entry) break;
            _heap[position] = above;
            position = parent;
        }
        _heap[position] = entry;
    }

    function _heapPop(RewardState memory state) private returns (uint256 top) {
        top = _heap[1];
        uint256 size = state.heapSize--;
        uint256 last = _heap[size];
        delete _heap[size];
        size -= 1;
        if (size == 0) return top;
        uint256 position = 1;
        while (true) {
            uint256 child = position << 1;
            if (child > size) break;
            uint256 smallest = _heap[child];
            if (child < size) {
                uint256 right = _heap[child + 1];
                if (right < smallest) {
                    smallest = right;
                    child += 1;
                }
            }
            if (last <= smallest) break;
            _heap[position] = smallest;
            position = child;
        }
        _heap[position] = last;
    }

    // ---- balance slots

    function _packBalance(int256 b, int256 s, uint256 prev, uint256 next, uint256 flags) private pure returns (uint256) {
        return
            uint256(uint136(int136(b))) |
            (uint256(uint24(int24(s))) << 136) |
            (prev << 160) |
            (next << 192) |
            (flags << 224);
    }

    function _unpackBalance(
        uint256 packed
    ) private pure returns (int256 b, int256 s, uint256 prev, uint256 next, uint256 flags) {
        b = int256(int136(uint136(packed)));
        s = int256(int24(uint24(packed >> 136)));
        prev = uint32(packed >> 160);
        next = uint32(packed >> 192);
        flags = uint8(packed >> 224);
    }

    // --------------------------------------------------------------------------- cancel, collect

    /// @inheritdoc IPredictionMarket
    function cancel() external {
        if (_cancelled || phase() != Phase.Cancelled) revert MarketNotCancellable();
        _cancelled = true;
        emit MarketCancelled(_publicRevealed ? Phase.Reveal : Phase.Committed);
    }

    /// @inheritdoc IPredictionMarket
    function withdraw(uint256[] calldata ids) external nonReentrant {
        Phase current = phase();
        if (current != Phase.Collect && current != Phase.Cancelled) revert MarketWrongPhase(current, Phase.Collect);
        uint256 total = _contributionCount;
        uint256 m = _testCount();
        uint256 amount;
        for (uint256 i = 0; i < ids.length; ++i) {
            uint256 id = ids[i];
            if (id == 0 || id > total) revert MarketNotWithdrawable(id);
            uint256 record = _contributions[id];
            uint256 word = id >> 8;
            uint256 bit = 1 << (id & 255);
            uint256 bits = _withdrawnBits[word];
            if (address(uint160(record)) != msg.sender || bits & bit != 0) revert MarketNotWithdrawable(id);
            _withdrawnBits[word] = bits | bit;
            amount += current == Phase.Collect ? _payoutOf(id, _reward.total, m) : _refundOf(id, record);
        }
        if (ids.length == 0) revert MarketNothingToWithdraw();
        emit Withdrawn(msg.sender, amount);
        if (amount > 0) _send(msg.sender, amount);
    }

    /// @dev A cancelled market's refund: the deposit plus a pro-rata share of the bounty, split
    /// by running sums so that the shares add up to the bounty exactly.
    function _refundOf(uint256 id, uint256 record) private view returns (uint256) {
        uint256 cumulative = record >> 160;
        uint256 previous = _contributions[id - 1] >> 160;
        uint256 deposits = _totalDeposits;
        uint256 bounty = _bounty;
        return cumulative - previous + (bounty * cumulative) / deposits - (bounty * previous) / deposits;
    }

    /// @inheritdoc IPredictionMarket
    function withdrawProvider() external nonReentrant {
        if (msg.sender != _provider) revert MarketUnauthorized(msg.sender);
        Phase current = phase();
        uint256 amount;
        if (current == Phase.Collect) {
            amount = providerRemainder();
        } else if (current == Phase.Cancelled) {
            amount = _publicRevealed ? 0 : _bounty;
        } else {
            revert MarketWrongPhase(current, Phase.Collect);
        }
        if (_providerWithdrawn || amount == 0) revert MarketNothingToWithdraw();
        _providerWithdrawn = true;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    function _send(address to, uint256 amount) private {
        (bool ok, ) = payable(to).call{value: amount}("");
        if (!ok) revert MarketTransferFailed(to, amount);
    }

    // --------------------------------------------------------------------------- views

    /// @notice The launch parameters.
    function params() external view returns (MarketParams memory) {
        return _params;
    }

    /// @notice Provider, bounty, creation time, draw block, recorded end, drawn portion.
    function info()
        external
        view
        returns (
            address provider,
            uint256 bounty,
            uint256 createdAt,
            uint256 drawBlock,
            uint256 endedAt,
            bool drawn,
            uint256 portion
        )
    {
        return (_provider, _bounty, _createdAt, _drawBlock, _effectiveEnd(), _drawn, _portion);
    }

    /// @notice Number of contributions and the sum of their deposits.
    function contributionStats() external view returns (uint256 count, uint256 deposits) {
        return (_contributionCount, _totalDeposits);
    }

    /// @notice Depositor and deposit of contribution `id` (1-based).
    function contribution(uint256 id) external view returns (address depositor, uint256 deposit) {
        uint256 record = _contributions[id];
        return (address(uint160(record)), (record >> 160) - (_contributions[id - 1] >> 160));
    }

    /// @notice Test samples revealed for scoring so far, out of m, and their digest.
    function revealStatus() external view returns (uint256 revealed, uint256 m, bytes32 digest) {
        return (_revealedCount, _testCount(), _testDigest);
    }

    /// @notice Hash of the weights: the initial ones until the training pass ends, then the trained.
    function weightsHash() external view returns (bytes32) {
        return _weightsHash;
    }

    /// @notice Progress of the reward computation: stage (0 prepare, 1 train, 2 collect,
    /// 3 apply, 4 settle, 5 done), contributions trained and settled, active contributions,
    /// cumulative round amount T, bounty left R, heap entries, and pending removals.
    function rewardStatus()
        external
        view
        returns (
            uint256 stage,
            uint256 trained,
            uint256 settled,
            uint256 active,
            uint256 total,
            uint256 remaining,
            uint256 heapSize,
            uint256 pending
        )
    {
        RewardState storage s = _reward;
        return (
            s.stage,
            s.trained,
            s.settled,
            s.activeCount,
            s.total,
            s.remaining,
            s.heapSize,
            uint256(s.pendingCount) - s.pendingCursor
        );
    }

    /// @notice The payout of contribution `id` once the rewards are final (in Collect).
    function payoutOf(uint256 id) external view returns (uint256) {
        _requirePhase(Phase.Collect);
        if (id == 0 || id > _contributionCount) revert MarketNotWithdrawable(id);
        return _payoutOf(id, _reward.total, _testCount());
    }

    /// @notice What contribution `id` gets back from a cancelled market.
    function refundOf(uint256 id) external view returns (uint256) {
        _requirePhase(Phase.Cancelled);
        if (id == 0 || id > _contributionCount) revert MarketNotWithdrawable(id);
        return _refundOf(id, _contributions[id]);
    }

    /// @notice Whether contribution `id` has been withdrawn.
    function withdrawn(uint256 id) external view returns (bool) {
        return _withdrawnBits[id >> 8] & (1 << (id & 255)) != 0;
    }

    /// @notice The provider's share once the rewards are final: bounty + deposits − payouts.
    function providerRemainder() public view returns (uint256) {
        if (_contributionCount == 0) return _bounty;
        if (_reward.stage != STAGE_DONE) return 0;
        return uint256(_bounty) + _totalDeposits - _reward.totalPayout;
    }

    /// @notice Whether the provider has withdrawn.
    function providerWithdrawn() external view returns (bool) {
        return _providerWithdrawn;
    }
}
