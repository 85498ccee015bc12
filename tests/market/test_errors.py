"""The error tree: its drawing, its fields, typed reverts checked against the ABI and a chain."""

from __future__ import annotations

import inspect
import pickle
import re
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

import market.errors as errors
from market.contracts import load_artifact
from market.errors import (
    CUSTOM_ERRORS,
    REVERT_ERRORS,
    ChainError,
    CommitmentMismatch,
    ContractReverted,
    GasCapExceeded,
    InvalidDataset,
    InvalidInput,
    InvalidParams,
    InvalidSample,
    LockNotAcquired,
    MarketDepositTooLow,
    MarketError,
    MarketInvalidSample,
    MarketTransferFailed,
    MarketWrongPhase,
    VaultIntegrityError,
    decode_revert,
)
from market.types import Phase


def abi_errors() -> list[dict[str, Any]]:
    return [item for item in load_artifact("IPredictionMarket").abi if item["type"] == "error"]


def abi_signature(item: dict[str, Any]) -> str:
    return f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"


def test_every_custom_error_of_the_interface_has_a_class_and_vice_versa() -> None:
    in_abi = {abi_signature(item) for item in abi_errors()}
    in_python = {cls.signature for cls in CUSTOM_ERRORS}
    assert in_python == in_abi
    assert {cls.__name__ for cls in CUSTOM_ERRORS} == {item["name"] for item in abi_errors()}


def test_field_names_follow_the_abi() -> None:
    classes = {cls.__name__: cls for cls in CUSTOM_ERRORS}
    for item in abi_errors():
        assert classes[item["name"]].fields == tuple(i["name"] for i in item["inputs"])


def test_selectors_are_keccak_of_the_signatures() -> None:
    expected = {keccak(text=abi_signature(item))[:4]: item["name"] for item in abi_errors()}
    assert {selector: cls.__name__ for selector, cls in REVERT_ERRORS.items()} == expected


def test_the_docstring_draws_every_class() -> None:
    drawn = errors.__doc__ or ""
    own = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, MarketError) and cls.__module__ == errors.__name__
    ]
    for cls in own:
        if cls not in CUSTOM_ERRORS and not cls.__name__.startswith("_"):
            assert re.search(rf"[+*-] {cls.__name__}\b", drawn), cls.__name__
        assert cls.__doc__, cls.__name__


def test_input_errors_are_value_errors_and_name_the_field() -> None:
    for error in (
        InvalidSample("order", 2, "features must be strictly increasing"),
        InvalidDataset(4, "x3", "NaN"),
        InvalidParams("minStake", "must be at least 1 wei"),
    ):
        assert isinstance(error, InvalidInput)
        assert isinstance(error, ValueError)
        assert isinstance(error, MarketError)
    dataset = InvalidDataset(4, "x3", "NaN")
    assert (dataset.row, dataset.column, dataset.field) == (4, "x3", "dataset")
    assert str(dataset) == "dataset: row 4, column x3: NaN"


def test_gas_cap_error_carries_both_numbers() -> None:
    error = GasCapExceeded(16_000_000, 15_000_000, "revealBatch")
    assert isinstance(error, ChainError)
    assert "16000000" in str(error) and "15000000" in str(error)


@pytest.mark.parametrize(
    "error",
    [
        InvalidSample("range", 1, "feature 9 is not < 8"),
        CommitmentMismatch("test root", "0xaa", "0xbb"),
        VaultIntegrityError("var/vault/m.bin"),
        LockNotAcquired("market:lock:0xabc", 2.5),
        decode_revert(
            keccak(text="MarketWrongPhase(uint8,uint8)")[:4] + encode(["uint8", "uint8"], [1, 2])
        ),
    ],
)
def test_errors_survive_pickling(error: MarketError) -> None:
    # Celery ships exceptions between processes.
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error)
    assert again.__dict__ == error.__dict__


# ----------------------------------------------------------------------------- decode_revert


def revert_data(signature: str, types: list[str], values: list[Any]) -> bytes:
    return keccak(text=signature)[:4] + encode(types, values)


def test_wrong_phase_decodes_to_phases() -> None:
    error = decode_revert(revert_data("MarketWrongPhase(uint8,uint8)", ["uint8"] * 2, [2, 1]))
    assert isinstance(error, MarketWrongPhase)
    assert (error.current, error.expected) == (Phase.REVEAL, Phase.PARTICIPATION)
    assert error.error_name == "MarketWrongPhase"
    assert error.selector == keccak(text="MarketWrongPhase(uint8,uint8)")[:4]


def test_arguments_become_typed_fields() -> None:
    data = revert_data("MarketInvalidSample(uint256,string)", ["uint256", "string"], [3, "order"])
    error = decode_revert("0x" + data.hex())
    assert isinstance(error, MarketInvalidSample)
    assert (error.position, error.reason) == (3, "order")
    assert error.error_args == (3, "order")
    assert error.data == data
    address = "0x" + "ab" * 20
    error = decode_revert(
        revert_data("MarketTransferFailed(address,uint256)", ["address", "uint256"], [address, 5])
    )
    assert isinstance(error, MarketTransferFailed)
    assert error.to == Web3.to_checksum_address(address)
    assert error.amount == 5


def test_every_custom_error_decodes_to_its_class() -> None:
    samples = {"uint256": 7, "uint8": 1, "string": "x", "address": "0x" + "11" * 20}
    for item in abi_errors():
        types = [i["type"] for i in item["inputs"]]
        error = decode_revert(revert_data(abi_signature(item), types, [samples[t] for t in types]))
        assert type(error).__name__ == item["name"]
        assert isinstance(error, ContractReverted) and isinstance(error, ChainError)


@pytest.mark.parametrize(
    ("data", "name", "args"),
    [
        (revert_data("Error(string)", ["string"], ["nope"]), "Error", ("nope",)),
        (revert_data("Panic(uint256)", ["uint256"], [0x11]), "Panic", (0x11,)),
        (bytes.fromhex("deadbeef"), "", ()),
        (b"", "", ()),
        # A known selector with malformed arguments keeps the raw data instead of failing.
        (keccak(text="MarketInvalidSample(uint256,string)")[:4] + b"\x01", "", ()),
    ],
)
def test_other_reverts_stay_generic(data: bytes, name: str, args: tuple[Any, ...]) -> None:
    error = decode_revert(data)
    assert type(error) is ContractReverted
    assert (error.error_name, error.error_args, error.data) == (name, args, data)


def test_revert_data_from_a_real_chain(w3: Web3, accounts: list[LocalAccount]) -> None:
    artifact = load_artifact("Reverter")
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor().transact({"from": accounts[0].address})
    address = w3.eth.wait_for_transaction_receipt(tx_hash)["contractAddress"]
    reverter = w3.eth.contract(address=address, abi=artifact.abi)

    def revert_of(call: str) -> bytes:
        response = w3.provider.make_request(
            "eth_call",  # type: ignore[arg-type]
            [{"to": address, "data": call}, "latest"],
        )
        return bytes.fromhex(response["error"]["data"].removeprefix("0x"))

    custom = decode_revert(revert_of(reverter.encode_abi("failCustom", args=[5])))
    assert isinstance(custom, MarketDepositTooLow)
    assert (custom.deposit, custom.minStake) == (5, 10**18)
    string = decode_revert(revert_of(reverter.encode_abi("failString")))
    assert (string.error_name, string.error_args) == ("Error", ("Reverter: told to fail",))
    panic = decode_revert(revert_of(reverter.encode_abi("failPanic")))
    assert (panic.error_name, panic.error_args) == ("Panic", (1,))
