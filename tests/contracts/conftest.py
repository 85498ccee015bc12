"""Contract-test fixtures: a deployed factory."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from market.chain import FactoryClient
from market.contracts import load_artifact
from tests.contracts.chaintools import send


@pytest.fixture(scope="session")
def factory(w3: Web3, accounts: list[LocalAccount]) -> FactoryClient:
    art = load_artifact("MarketFactory")
    deployer = accounts[-1]
    contract = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    receipt = send(w3, deployer, contract.constructor(), gas=8_000_000)
    return FactoryClient(w3, receipt["contractAddress"])
