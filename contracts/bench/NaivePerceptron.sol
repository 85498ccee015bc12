// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title NaivePerceptron
/// @notice Benchmark baseline, not part of the product: the sparse perceptron as 0xDeCA10B's
/// `SparsePerceptron` keeps it (one storage weight per feature) and its `evaluateBatch`, which
/// re-evaluates every test sample. `scoreContribution` is what a market that re-scores the
/// whole test set after each contribution pays per contribution.
contract NaivePerceptron {
    mapping(uint64 feature => int80) public weights;
    int80 public intercept;
    int80 public learningRate;

    constructor(int80 intercept_, int80 learningRate_) {
        intercept = intercept_;
        learningRate = learningRate_;
    }

    /// @notice Predicts the class of a sample (0 or 1).
    function predict(int64[] memory data) public view returns (uint64) {
        int256 m = intercept;
        for (uint256 i = 0; i < data.length; ++i) {
            m += weights[uint64(data[i])];
        }
        return m > 0 ? 1 : 0;
    }

    /// @notice Updates the weights when the model gets `data` wrong.
    function update(int64[] memory data, uint64 classification) public {
        if (predict(data) == classification) return;
        int80 delta = classification == 1 ? learningRate : -learningRate;
        for (uint256 i = 0; i < data.length; ++i) {
            weights[uint64(data[i])] += delta;
        }
    }

    /// @notice Counts the samples of a batch that the model classifies correctly.
    function evaluateBatch(int64[][] memory dataBatch, uint64[] memory classifications) public view returns (uint256 correct) {
        for (uint256 i = 0; i < dataBatch.length; ++i) {
            if (predict(dataBatch[i]) == classifications[i]) ++correct;
        }
    }

    /// @notice Trains on one contribution, then re-evaluates the whole test set.
    function scoreContribution(
        int64[] calldata data,
        uint64 classification,
        int64[][] calldata testData,
        uint64[] calldata testLabels
    ) external returns (uint256 correct) {
        update(data, classification);
        correct = evaluateBatch(testData, testLabels);
        emit Scored(correct);
    }

    /// @dev One contribution was scored.
    event Scored(uint256 correct);
}
