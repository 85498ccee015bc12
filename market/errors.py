"""The project's exceptions, in one tree.

* MarketError
  + InvalidInput (also ValueError) .................. field, detail
    - InvalidSample ................................. reason, position
    - InvalidDataset ................................ row, column
    - InvalidParams
  + WeightOverflow (also OverflowError) ............. feature, value
  + CommitmentMismatch .............................. what, expected, actual
  + VaultError
    - VaultKeyMissing ............................... variable
    - VaultIntegrityError ........................... path
  + ChainError
    - ContractReverted .............................. error_name, error_args, selector, data
      · one subclass per custom error of IPredictionMarket.sol (MarketWrongPhase, ...),
        found by selector through :func:`decode_revert`
    - TransactionTimeout ............................ tx_hash, timeout_s
    - GasCapExceeded ................................ estimate, cap, what
    - RpcUnavailable ................................ url, attempts
  + LockNotAcquired ................................. key, waited_s
  + LockLost ........................................ key

Every exception keeps its fields as attributes and survives pickling (Celery ships
exceptions between processes), so callers branch on types and fields, never on messages.
"""

from __future__ import annotations

from typing import Any, ClassVar

from eth_abi.abi import decode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from market.types import Phase


def _rebuild(cls: type[MarketError], message: str, fields: dict[str, Any]) -> MarketError:
    error = Exception.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(fields)
    return error


class MarketError(Exception):
    """Base of every error raised by this project."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclass constructors take their fields, not the message: rebuild from both.
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


# ----------------------------------------------------------------------------- bad input


class InvalidInput(MarketError, ValueError):
    """An input breaks a rule; ``field`` names what was wrong (``"features"``, ``"bounty"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class InvalidSample(InvalidInput):
    """A sample is malformed.

    ``reason`` is one of the contract's rule names: ``label`` (not 0 or 1), ``count`` (no
    features or more than ``maxFeatures``), ``range`` (a feature ``>= dim``), ``order``
    (features not strictly increasing) or ``length`` (the bytes end inside a sample).
    ``position`` is where: the feature's position in the sample for ``range`` and ``order``,
    the sample's position in a list, or a byte offset for ``length``, as the message says.
    """

    REASONS: ClassVar[tuple[str, ...]] = ("label", "count", "range", "order", "length")

    def __init__(self, reason: str, position: int, message: str, field: str = "sample") -> None:
        super().__init__(field, message)
        self.reason = reason
        self.position = position


class InvalidDataset(InvalidInput):
    """A dataset cell is unusable (NaN, not a number, wrong label); ``row``/``column`` locate it."""

    def __init__(self, row: int, column: int | str, message: str, field: str = "dataset") -> None:
        super().__init__(field, f"row {row}, column {column}: {message}")
        self.row = row
        self.column = column


class InvalidParams(InvalidInput):
    """A market or model parameter breaks its rule (``field`` names the parameter)."""


class WeightOverflow(MarketError, OverflowError):
    """A perceptron update would move weight ``feature`` to ``value``, outside int64."""

    def __init__(self, feature: int, value: int) -> None:
        super().__init__(f"weight {feature} would become {value}, outside int64")
        self.feature = feature
        self.value = value


class CommitmentMismatch(MarketError):
    """Data does not match its commitment (``what``: Merkle root, digest, weights hash)."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what} does not match its commitment: expected {expected}, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


# ----------------------------------------------------------------------------- vault


class VaultError(MarketError):
    """The vault of secrets (test sets, salts, keys) cannot be used."""


class VaultKeyMissing(VaultError):
    """No vault key is configured (``variable`` names the environment variable to set)."""

    def __init__(self, variable: str = "MARKET_VAULT_KEY") -> None:
        super().__init__(f"no vault key: set {variable}")
        self.variable = variable


class VaultIntegrityError(VaultError):
    """The vault file at ``path`` does not decrypt: wrong key or tampered file."""

    def __init__(self, path: str, detail: str = "wrong key or tampered file") -> None:
        super().__init__(f"vault file {path} cannot be opened: {detail}")
        self.path = path


# ----------------------------------------------------------------------------- chain


class ChainError(MarketError):
    """Talking to the chain failed."""


class ContractReverted(ChainError):
    """A call reverted; the revert data decoded into ``error_name`` and ``error_args``.

    Built by :func:`decode_revert`, which returns the subclass matching the selector. A
    plain ``revert("...")`` has ``error_name == "Error"``, a failed assertion or overflow
    ``"Panic"``, and unknown or empty data ``""``.
    """

    signature: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, error_name: str, error_args: tuple[Any, ...], selector: bytes, data: bytes = b""
    ) -> None:
        shown = ", ".join(repr(a) for a in error_args)
        super().__init__(f"reverted with {error_name or 'no known error'}({shown})")
        self.error_name = error_name
        self.error_args = error_args
        self.selector = selector
        self.data = data

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The field names are the class's own annotations, in declaration order; a test
        # checks them against the ABI's input names.
        cls.fields = tuple(cls.__dict__.get("__annotations__", {}))


class _CustomError(ContractReverted):
    """A custom error of IPredictionMarket.sol: its decoded arguments become attributes."""

    def __init__(self, error_args: tuple[Any, ...], data: bytes = b"") -> None:
        selector = function_signature_to_4byte_selector(self.signature)
        super().__init__(type(self).__name__, error_args, selector, data)
        for name, value in zip(self.fields, error_args, strict=True):
            setattr(self, name, value)


class MarketWrongPhase(_CustomError):
    """The call is not allowed in the market's current phase."""

    signature = "MarketWrongPhase(uint8,uint8)"
    current: Phase
    expected: Phase


class MarketUnauthorized(_CustomError):
    """Only the provider may do this."""

    signature = "MarketUnauthorized(address)"
    caller: str


class MarketInvalidParams(_CustomError):
    """A launch parameter breaks its rule."""

    signature = "MarketInvalidParams(string)"
    field: str


class MarketInvalidWeights(_CustomError):
    """The weights do not have ``dim`` entries or their hash does not match."""

    signature = "MarketInvalidWeights()"


class MarketDrawNotReady(_CustomError):
    """The draw block is not mined yet."""

    signature = "MarketDrawNotReady(uint256,uint256)"
    drawBlock: int
    current: int


class MarketAlreadyDrawn(_CustomError):
    """The public portion was already drawn."""

    signature = "MarketAlreadyDrawn(uint256)"
    portion: int


class MarketInvalidSample(_CustomError):
    """A sample is malformed: ``reason`` names the rule (label, order, range, count, length)."""

    signature = "MarketInvalidSample(uint256,string)"
    position: int
    reason: str


class MarketDepositTooLow(_CustomError):
    """The deposit is below the stake."""

    signature = "MarketDepositTooLow(uint256,uint256)"
    deposit: int
    minStake: int


class MarketCannotEnd(_CustomError):
    """The market cannot end yet."""

    signature = "MarketCannotEnd(uint256,uint256,uint256)"
    contributions: int
    earliestEnd: int
    latestEnd: int


class MarketEmptyReveal(_CustomError):
    """A reveal batch is empty."""

    signature = "MarketEmptyReveal()"


class MarketInvalidRevealIndex(_CustomError):
    """A revealed index is out of range, already revealed, or in the public portion."""

    signature = "MarketInvalidRevealIndex(uint256)"
    index: int


class MarketIncompletePortion(_CustomError):
    """The public reveal does not cover exactly the drawn portion."""

    signature = "MarketIncompletePortion(uint256,uint256)"
    revealed: int
    expected: int


class MarketInvalidProof(_CustomError):
    """The multiproof does not prove the leaves against the root."""

    signature = "MarketInvalidProof()"


class MarketInvalidTrainingInput(_CustomError):
    """The training input does not match the on-chain commitments."""

    signature = "MarketInvalidTrainingInput(string)"
    part: str


class MarketNotWithdrawable(_CustomError):
    """The caller is not the depositor of a contribution, or it was already withdrawn."""

    signature = "MarketNotWithdrawable(uint256)"
    id: int


class MarketNothingToWithdraw(_CustomError):
    """There is nothing to withdraw."""

    signature = "MarketNothingToWithdraw()"


class MarketTransferFailed(_CustomError):
    """An ether transfer failed."""

    signature = "MarketTransferFailed(address,uint256)"
    to: str
    amount: int


class MarketNotCancellable(_CustomError):
    """The market cannot be cancelled now."""

    signature = "MarketNotCancellable()"


CUSTOM_ERRORS: tuple[type[_CustomError], ...] = (
    MarketWrongPhase,
    MarketUnauthorized,
    MarketInvalidParams,
    MarketInvalidWeights,
    MarketDrawNotReady,
    MarketAlreadyDrawn,
    MarketInvalidSample,
    MarketDepositTooLow,
    MarketCannotEnd,
    MarketEmptyReveal,
    MarketInvalidRevealIndex,
    MarketIncompletePortion,
    MarketInvalidProof,
    MarketInvalidTrainingInput,
    MarketNotWithdrawable,
    MarketNothingToWithdraw,
    MarketTransferFailed,
    MarketNotCancellable,
)

#: Revert selector (first 4 bytes of keccak256 of the error signature) -> exception class.
REVERT_ERRORS: dict[bytes, type[_CustomError]] = {
    function_signature_to_4byte_selector(cls.signature): cls for cls in CUSTOM_ERRORS
}

ERROR_STRING_SELECTOR = function_signature_to_4byte_selector("Error(string)")
PANIC_SELECTOR = function_signature_to_4byte_selector("Panic(uint256)")


def _abi_types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : -1]
    return inner.split(",") if inner else []


def _convert(cls: type[_CustomError], values: tuple[Any, ...]) -> tuple[Any, ...]:
    annotations = cls.__dict__.get("__annotations__", {})
    out: list[Any] = []
    for name, abi_type, value in zip(cls.fields, _abi_types(cls.signature), values, strict=True):
        if abi_type == "address":
            out.append(to_checksum_address(value))
        elif annotations[name] == "Phase":  # the Solidity enum travels as uint8
            out.append(Phase(value))
        else:
            out.append(value)
    return tuple(out)


def _decode_known(selector: bytes, body: bytes, raw: bytes) -> ContractReverted | None:
    if (cls := REVERT_ERRORS.get(selector)) is not None:
        return cls(_convert(cls, tuple(decode(_abi_types(cls.signature), body))), raw)
    if selector == ERROR_STRING_SELECTOR:
        return ContractReverted("Error", tuple(decode(["string"], body)), selector, raw)
    if selector == PANIC_SELECTOR:
        return ContractReverted("Panic", tuple(decode(["uint256"], body)), selector, raw)
    return None


def decode_revert(data: bytes | str) -> ContractReverted:
    """Turn revert data (bytes or 0x-hex) into the typed exception, with decoded arguments.

    >>> error = decode_revert("0x1f1b9006")
    >>> type(error).__name__, error.error_args
    ('MarketInvalidProof', ())
    """
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    selector, body = raw[:4], raw[4:]
    try:
        known = _decode_known(selector, body, raw)
    except Exception:  # malformed arguments: keep the raw data rather than hide the revert
        known = None
    return known if known is not None else ContractReverted("", (), selector, raw)


class TransactionTimeout(ChainError):
    """Transaction ``tx_hash`` was not mined (or not confirmed) within ``timeout_s`` seconds."""

    def __init__(self, tx_hash: str, timeout_s: float) -> None:
        super().__init__(f"transaction {tx_hash} not confirmed within {timeout_s:.0f} s")
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s


class GasCapExceeded(ChainError):
    """The gas ``estimate`` of ``what`` is above the per-transaction ``cap``."""

    def __init__(self, estimate: int, cap: int, what: str = "transaction") -> None:
        super().__init__(f"{what} needs an estimated {estimate} gas, above the cap of {cap}")
        self.estimate = estimate
        self.cap = cap
        self.what = what


class RpcUnavailable(ChainError):
    """The JSON-RPC endpoint at ``url`` did not answer after ``attempts`` tries."""

    def __init__(self, url: str, attempts: int = 1, detail: str = "") -> None:
        suffix = f": {detail}" if detail else ""
        super().__init__(f"RPC endpoint {url} unavailable after {attempts} attempt(s){suffix}")
        self.url = url
        self.attempts = attempts


# ----------------------------------------------------------------------------- coordination


class LockNotAcquired(MarketError):
    """Another actor holds the lock ``key`` and did not release it within ``waited_s`` seconds."""

    def __init__(self, key: str, waited_s: float) -> None:
        super().__init__(f"lock {key!r} is held by another actor (waited {waited_s:.1f} s)")
        self.key = key
        self.waited_s = waited_s


class LockLost(MarketError):
    """The lease on ``key`` expired and may now belong to another actor: stop the step."""

    def __init__(self, key: str) -> None:
        super().__init__(f"lease on {key!r} was lost: it expired or another actor holds it")
        self.key = key


__all__ = [
    "CUSTOM_ERRORS",
    "ChainError",
    "CommitmentMismatch",
    "ContractReverted",
    "GasCapExceeded",
    "InvalidDataset",
    "InvalidInput",
    "InvalidParams",
    "InvalidSample",
    "LockLost",
    "LockNotAcquired",
    "MarketAlreadyDrawn",
    "MarketCannotEnd",
    "MarketDepositTooLow",
    "MarketDrawNotReady",
    "MarketEmptyReveal",
    "MarketError",
    "MarketIncompletePortion",
    "MarketInvalidParams",
    "MarketInvalidProof",
    "MarketInvalidRevealIndex",
    "MarketInvalidSample",
    "MarketInvalidTrainingInput",
    "MarketInvalidWeights",
    "MarketNotCancellable",
    "MarketNotWithdrawable",
    "MarketNothingToWithdraw",
    "MarketTransferFailed",
    "MarketUnauthorized",
    "MarketWrongPhase",
    "REVERT_ERRORS",
    "RpcUnavailable",
    "TransactionTimeout",
    "VaultError",
    "VaultIntegrityError",
    "VaultKeyMissing",
    "WeightOverflow",
    "decode_revert",
]
