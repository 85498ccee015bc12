"""Contract-test tools: a direct sender, revert assertions, and time travel on anvil."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError

from market.contracts import load_artifact


class Reverted(Exception):
    """A transaction or call reverted; ``data`` holds the revert data."""

    def __init__(self, data: bytes, message: str = "") -> None:
        super().__init__(message or data.hex())
        self.data = data


def error_selector(name: str, types: str) -> bytes:
    return Web3.keccak(text=f"{name}({types})")[:4]


def send(
    w3: Web3,
    account: LocalAccount,
    fn: ContractFunction | None = None,
    *,
    value: int = 0,
    gas: int | None = None,
    to: str | None = None,
    data: bytes = b"",
) -> Any:
    """Sign and send a call (or a plain transfer), wait for it, and raise ``Reverted``."""
    tx: dict[str, Any] = {"from": account.address, "value": value}
    if fn is not None:
        try:
            built = fn.build_transaction({**tx, **({"gas": gas} if gas else {})})
        except ContractLogicError as exc:
            raise Reverted(bytes.fromhex(str(exc.data or "0x")[2:]), str(exc)) from None
    else:
        built = {**tx, "to": to, "data": data, "gas": gas or 100_000}
    built["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
    built.setdefault("chainId", w3.eth.chain_id)
    if "gasPrice" not in built and "maxFeePerGas" not in built:
        built["gasPrice"] = w3.eth.gas_price
    signed = account.sign_transaction(built)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1:
        raise Reverted(b"", f"transaction {tx_hash.hex()} reverted")
    return receipt


def expect_revert(selector_name: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    """Run ``fn`` and assert it reverts with the custom error named ``selector_name``."""
    try:
        fn(*args, **kwargs)
    except Reverted as exc:
        names = {
            e["name"]: e for e in load_artifact("IPredictionMarket").abi if e["type"] == "error"
        }
        err = names[selector_name]
        types = ",".join(_abi_type(i) for i in err["inputs"])
        want = error_selector(selector_name, types)
        assert exc.data[:4] == want, f"expected {selector_name}, got {exc.data[:4].hex()} ({exc})"
        return
    raise AssertionError(f"expected a revert with {selector_name}")


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return str(param["type"])


def increase_time(w3: Web3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def mine(w3: Web3, blocks: int = 1) -> None:
    for _ in range(blocks):
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
