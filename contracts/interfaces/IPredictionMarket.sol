// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title IPredictionMarket
/// @notice A prediction market for labelled training data: a provider stakes a bounty and
/// commits to a secret test set; participants contribute samples with deposits; after the
/// market ends the test set is revealed and each contribution is paid by how much it improved
/// a sparse binary perceptron on that test set. Byte formats: docs/protocol.md.
interface IPredictionMarket {
    /// @notice Phases, derived from stored flags and deadlines.
    enum Phase {
        Committed,
        Participation,
        Reveal,
        Reward,
        Collect,
        Cancelled
    }

    /// @notice Launch parameters, fixed for the life of the market.
    /// @dev Ordered so that the second slot holds everything `contribute` reads.
    struct MarketParams {
        bytes32 testRoot; // Merkle root of the salted test set (OpenZeppelin StandardMerkleTree)
        uint96 minStake; // deposit charged per contribution, in wei
        bool allowGreaterDeposits; // keep deposits above minStake instead of refunding the excess
        uint32 dim; // number of features of the model
        uint32 maxFeatures; // most features in one sample
        uint64 latestEnd; // timestamp at which the market ends whatever the count
        uint32 testSize; // n, number of test samples
        uint32 portions; // P >= 2; portion p is [p*n/P, (p+1)*n/P)
        int64 intercept; // perceptron intercept
        int64 learningRate; // perceptron step, >= 1
        uint32 minContributions; // count that allows an early end at earliestEnd
        uint64 earliestEnd; // timestamp from which the market may end with enough contributions
        uint64 revealWindow; // seconds the provider has for each reveal
    }

    // ----------------------------------------------------------------------------- errors

    /// @dev The call is not allowed in the market's current phase.
    error MarketWrongPhase(Phase current, Phase expected);
    /// @dev Only the provider may do this.
    error MarketUnauthorized(address caller);
    /// @dev A launch parameter breaks its rule.
    error MarketInvalidParams(string field);
    /// @dev The weights do not have `dim` entries or their hash does not match.
    error MarketInvalidWeights();
    /// @dev The draw block is not mined yet, or (from a public reveal) its hash was too old
    /// to read: {draw} re-arms the draw then.
    error MarketDrawNotReady(uint256 drawBlock, uint256 current);
    /// @dev The public portion was already drawn.
    error MarketAlreadyDrawn(uint256 portion);
    /// @dev A sample is malformed: `reason` names the rule (label, order, range, count, length).
    error MarketInvalidSample(uint256 position, string reason);
    /// @dev The deposit is below the stake.
    error MarketDepositTooLow(uint256 deposit, uint256 minStake);
    /// @dev The market cannot end yet.
    error MarketCannotEnd(uint256 contributions, uint256 earliestEnd, uint256 latestEnd);
    /// @dev A reveal batch is empty.
    error MarketEmptyReveal();
    /// @dev A revealed index is out of range, already revealed, or in the public portion.
    error MarketInvalidRevealIndex(uint256 index);
    /// @dev The public reveal does not cover exactly the drawn portion.
    error MarketIncompletePortion(uint256 revealed, uint256 expected);
    /// @dev The multiproof does not prove the leaves against the root.
    error MarketInvalidProof();
    /// @dev The training input does not match the on-chain commitments.
    error MarketInvalidTrainingInput(string part);
    /// @dev The caller is not the depositor of a contribution, or it was already withdrawn.
    error MarketNotWithdrawable(uint256 id);
    /// @dev There is nothing to withdraw.
    error MarketNothingToWithdraw();
    /// @dev An ether transfer failed.
    error MarketTransferFailed(address to, uint256 amount);
    /// @dev The market cannot be cancelled now.
    error MarketNotCancellable();

    // ----------------------------------------------------------------------------- events

    /// @dev The clone was initialized with its parameters, bounty and initial weights.
    event MarketInitialized(address indexed provider, uint256 bounty, MarketParams params, bytes initialWeights);
    /// @dev The draw block's hash was too old to read; a new draw block was fixed.
    event DrawRearmed(uint256 drawBlock);
    /// @dev The public portion was drawn.
    event PortionDrawn(uint256 portion);
    /// @dev The public portion was revealed; its samples (REVEAL_ITEMs) are public from now on.
    event PublicPortionRevealed(uint256 portion, bytes items);
    /// @dev A contribution was accepted; `sample` is its SAMPLE encoding.
    event ContributionAdded(uint256 indexed id, address indexed contributor, uint256 deposit, bytes sample);
    /// @dev The market ended; the reveal window runs until `revealDeadline`.
    event MarketEnded(uint256 contributions, uint256 revealDeadline);
    /// @dev A batch of `count` test samples was revealed; its REVEAL_ITEMs are the call's input.
    event TestBatchRevealed(uint256 count, uint256 revealed);
    /// @dev The test set's inverted index was checked; A_0 is `initialAccuracy`.
    event RewardsPrepared(uint256 initialAccuracy, bytes32 indexHash, bytes32 stateHash);
    /// @dev Contributions `from..from+count-1` were scored; `accuracies` are their A_i as uint32s.
    event ContributionsScored(uint256 from, uint256 count, bytes accuracies, bytes32 stateHash);
    /// @dev A round of the reward computation ended at cumulative amount `total`.
    event RoundCompleted(uint256 total, uint256 remaining, uint256 removed);
    /// @dev The training pass is complete; `weightsHash` commits to the trained model.
    event TrainingCompleted(uint256 finalAccuracy, bytes32 weightsHash);
    /// @dev The rewards are final; contributors and the provider may withdraw.
    event RewardsFinalized(uint256 totalPayout, uint256 providerRemainder);
    /// @dev The market was cancelled.
    event MarketCancelled(Phase from);
    /// @dev `account` withdrew `amount`.
    event Withdrawn(address indexed account, uint256 amount);

    // ----------------------------------------------------------------------------- calls

    /// @notice Draws the public portion from the hash of the draw block (anyone, once it is mined).
    function draw() external;
    /// @notice Reveals the drawn public portion (drawing it first if nobody has) and opens the market.
    function revealPublic(bytes calldata items, bytes32[] calldata proof, bool[] calldata proofFlags) external;
    function contribute(uint32[] calldata features, uint8 label) external payable;
    function endMarket() external;
    function revealBatch(bytes calldata items, bytes32[] calldata proof, bool[] calldata proofFlags) external;
    function prepareRewards(bytes calldata weights, bytes calldata testSamples, bytes calldata index) external;
    function processRewards(
        bytes calldata state,
        bytes calldata index,
        bytes calldata contributions,
        uint256 count
    ) external;
    function cancel() external;
    function withdraw(uint256[] calldata ids) external;
    function withdrawProvider() external;

    function phase() external view returns (Phase);
}
