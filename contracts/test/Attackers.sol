// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @title Puppet
/// @notice Test-only base: a contract account that makes any call it is told to, so that a
/// market sees the contract (not the test's account) as provider or contributor.
abstract contract Puppet {
    /// @notice Calls `to` with `data` and `msg.value`, bubbling up its revert data.
    function execute(address to, bytes calldata data) external payable returns (bytes memory ret) {
        bool ok;
        (ok, ret) = to.call{value: msg.value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
    }
}

/// @title ReentrantReceiver
/// @notice Test-only attacker: when paid, it calls back into `target` with `reentryData`
/// (withdraw or withdrawProvider again) once, and records whether that succeeded and the
/// revert data it got, without reverting itself so the outer payment goes through.
contract ReentrantReceiver is Puppet {
    address public target;
    bytes public reentryData;
    uint256 public attempts;
    bool public reentered;
    bytes public reentryError;

    /// @notice Arms the attack: on the next payment, call `target_` with `data`.
    function arm(address target_, bytes calldata data) external {
        target = target_;
        reentryData = data;
    }

    receive() external payable {
        if (target == address(0) || attempts > 0) return;
        attempts += 1;
        (bool ok, bytes memory ret) = target.call(reentryData);
        reentered = ok;
        reentryError = ret;
    }
}

/// @title RevertingReceiver
/// @notice Test-only contributor that refuses every payment: it can only hurt itself.
contract RevertingReceiver is Puppet {
    receive() external payable {
        revert("RevertingReceiver: no ether");
    }
}

/// @title ForceFeeder
/// @notice Test-only: sends its value to `target` from its constructor with selfdestruct,
/// which no receive function or fallback can refuse (EIP-6780 still moves the ether).
contract ForceFeeder {
    constructor(address payable target) payable {
        selfdestruct(target);
    }
}
