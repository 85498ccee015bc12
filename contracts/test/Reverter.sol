// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IPredictionMarket} from "../interfaces/IPredictionMarket.sol";

/// @title Reverter
/// @notice Test-only contract for the transaction layer: a cheap state change, reverts of
/// every kind (a market custom error, a reason string, a panic) and a gas-hungry loop.
contract Reverter {
    uint256 public counter;
    mapping(uint256 => uint256) private _slots;

    /// @notice A state change that always succeeds.
    function bump() external {
        counter += 1;
    }

    /// @notice Reverts with a market custom error carrying `deposit`.
    function failCustom(uint256 deposit) external {
        counter += 1;
        revert IPredictionMarket.MarketDepositTooLow(deposit, 1 ether);
    }

    /// @notice Reverts with a reason string.
    function failString() external {
        counter += 1;
        revert("Reverter: told to fail");
    }

    /// @notice Reverts with a Panic(0x01) from a failed assert.
    function failPanic() external {
        counter += 1;
        assert(counter == 0);
    }

    /// @notice Writes `count` fresh storage slots (about 22,100 gas each).
    function burn(uint256 count) external {
        uint256 base = counter;
        for (uint256 i = 0; i < count; ++i) {
            _slots[base + i] = i + 1;
        }
        counter = base + count;
    }
}
