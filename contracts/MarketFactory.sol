// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {IPredictionMarket} from "./interfaces/IPredictionMarket.sol";
import {PredictionMarket} from "./PredictionMarket.sol";

/// @title MarketFactory
/// @notice Deploys each market as an EIP-1167 clone of one {PredictionMarket} implementation
/// and initializes it in the same transaction, so no one can initialize a clone first.
/// @dev `MarketCreated` is the registry: the service rebuilds its list of markets from it.
contract MarketFactory {
    /// @notice The implementation every clone delegates to; its initializer is disabled.
    address public immutable implementation;

    /// @dev A market was created and initialized with `bounty` wei.
    event MarketCreated(address indexed market, address indexed provider, bytes32 testRoot, uint256 bounty);

    constructor() {
        implementation = address(new PredictionMarket());
    }

    /// @notice Creates a market; `msg.value` is the bounty and the caller is its provider.
    /// @param params Launch parameters (see {IPredictionMarket.MarketParams}).
    /// @param initialWeights WEIGHTS of the initial model.
    /// @return market The new market's address.
    function createMarket(
        IPredictionMarket.MarketParams calldata params,
        bytes calldata initialWeights
    ) external payable returns (address market) {
        market = Clones.clone(implementation);
        PredictionMarket(market).initialize{value: msg.value}(msg.sender, params, initialWeights);
        emit MarketCreated(market, msg.sender, params.testRoot, msg.value);
    }
}
