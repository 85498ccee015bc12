"""Merkle commitments compatible with OpenZeppelin's ``StandardMerkleTree``.

This is a bit-for-bit port of ``@openzeppelin/merkle-tree`` 1.0.8 (``standard-v1``), so that
its roots, proofs and multiproofs are accepted by ``MerkleProof.verify`` and
``MerkleProof.multiProofVerify`` on-chain and by the JavaScript library off-chain:

* a leaf is ``keccak256(keccak256(abi.encode(values...)))`` for the tree's leaf encoding;
* an internal node is ``keccak256(min(a, b) ‖ max(a, b))`` (sorted pairs);
* the tree is one array of ``2n − 1`` nodes, node ``i`` having children ``2i+1`` and
  ``2i+2``; the leaf hashes are sorted ascending and placed from the end of the array, so the
  smallest hash sits at index ``2n − 2``;
* a multiproof walks the requested leaves from the highest array index down, which is the
  order in which its leaves are returned and must be passed to ``multiProofVerify``.

It is the only module of the project that hashes leaves. Building is vectorized: the ABI
encoding of salted test samples is written with numpy into one buffer, every level of the
tree is hashed in one batch, and proofs are index arithmetic on the node array. What remains
is one keccak call per hashed message, which bounds the build (see ``benchmarks/merkle.py``).

Python values are strict: integers are ``int`` (not ``bool``), ``bytes``/``bytesN`` are
``bytes`` or ``0x`` hex strings of the exact size, addresses are ``0x`` hex strings (kept in
checksum form), arrays and tuples are lists or tuples (kept as tuples). Dumps follow OZ's
JSON, where integers are decimal strings and bytes are ``0x`` hex.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import re
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from eth_utils.address import is_checksum_address, to_checksum_address

from market.errors import InvalidInput
from market.types import TestSample

__all__ = [
    "LEAF_TYPES",
    "DuplicateLeafIndex",
    "EmptyTreeError",
    "InvalidTreeDump",
    "LeafIndexError",
    "LeafTypeError",
    "LeafValueError",
    "MerkleError",
    "MultiProof",
    "MultiProofRequestError",
    "ProofTable",
    "StandardMerkleTree",
    "keccak256",
    "process_multiproof",
    "process_proof",
    "test_sample_leaf",
    "test_sample_tree",
    "verify",
    "verify_multiproof",
]

# The leaf of a salted test sample (docs/protocol.md): (index, salt, features, label).
LEAF_TYPES: Final = ("uint256", "bytes32", "uint32[]", "uint8")
TEST_SAMPLE_FIELDS: Final = ("index", "salt", "features", "label")
DUMP_FORMAT: Final = "standard-v1"

Bytes32Array = npt.NDArray[np.uint8]
IntArray = npt.NDArray[np.int64]


# ----------------------------------------------------------------------------- errors


class MerkleError(InvalidInput):
    """A Merkle tree input breaks a rule; ``field`` says where (``values[3].label``)."""


class LeafTypeError(MerkleError):
    """A leaf encoding type is not a canonical Solidity ABI type supported here."""


class LeafValueError(MerkleError):
    """A leaf value does not fit its type (wrong Python type, out of range, wrong size)."""


class EmptyTreeError(MerkleError):
    """A tree needs at least one leaf."""


class LeafIndexError(MerkleError):
    """An index does not name a value of the tree."""


class MultiProofRequestError(MerkleError):
    """A multiproof request is empty or names an index twice."""


class DuplicateLeafIndex(MultiProofRequestError):
    """A multiproof request names the same leaf twice."""


class InvalidTreeDump(MerkleError):
    """A dump is not a valid ``standard-v1`` tree (format, shape, or hashes)."""


# ----------------------------------------------------------------------------- keccak


class _Hash(Protocol):
    def digest(self) -> bytes: ...


def _keccak_backend() -> tuple[Callable[[Any], _Hash], str]:
    # safe-pysha3 hashes a 64-byte node in ~0.7 µs a call, pycryptodome in ~4.8 µs: the
    # per-call overhead is what bounds a tree of a million leaves, so prefer the former.
    try:
        module: Any = importlib.import_module("sha3")
        ctor: Callable[[Any], _Hash] = module.keccak_256
        return ctor, "safe-pysha3"
    except ImportError:
        from Crypto.Hash import keccak

        def pycryptodome(data: Any) -> _Hash:
            result: _Hash = keccak.new(digest_bits=256, data=data)
            return result

        return pycryptodome, "pycryptodome"


_keccak, KECCAK_BACKEND = _keccak_backend()


def keccak256(data: bytes | bytearray | memoryview) -> bytes:
    """Ethereum's keccak256 of ``data``."""
    return _keccak(data).digest()


def _double_hash(data: Any) -> bytes:
    return _keccak(_keccak(data).digest()).digest()


def _node_hash(a: bytes, b: bytes) -> bytes:
    return _keccak(a + b if a <= b else b + a).digest()


# ----------------------------------------------------------------------------- ABI types


@dataclass(frozen=True)
class _AbiType:
    """A parsed canonical ABI type."""

    kind: str  # uint, int, address, bool, fixed_bytes, bytes, string, array, tuple
    size: int = 0  # bits of uint/int, bytes of fixed_bytes, length of a fixed array (0: dynamic)
    elem: _AbiType | None = None
    components: tuple[_AbiType, ...] = ()

    @cached_property
    def dynamic(self) -> bool:
        if self.kind in ("bytes", "string"):
            return True
        if self.kind == "array":
            assert self.elem is not None
            return self.size == 0 or self.elem.dynamic
        if self.kind == "tuple":
            return any(c.dynamic for c in self.components)
        return False

    @cached_property
    def head_size(self) -> int:
        if self.dynamic:
            return 32
        if self.kind == "array":
            assert self.elem is not None
            return self.size * self.elem.head_size
        if self.kind == "tuple":
            return sum(c.head_size for c in self.components)
        return 32


_INT_RE = re.compile(r"(u?int)([1-9][0-9]*)")
_BYTES_RE = re.compile(r"bytes([1-9][0-9]*)")
_NON_CANONICAL = {"uint": "uint256", "int": "int256", "byte": "bytes1"}
_SIMPLE = {"address", "bool", "bytes", "string"}


def _parse_type(text: str, field: str) -> _AbiType:
    if not isinstance(text, str):
        raise LeafTypeError(field, f"a type must be a string, got {type(text).__name__}")
    if text in _NON_CANONICAL:
        raise LeafTypeError(
            field,
            f"non-canonical type {text!r}: write {_NON_CANONICAL[text]!r}, as abi.encode does",
        )
    if text != text.strip() or " " in text:
        raise LeafTypeError(field, f"non-canonical type {text!r}: no spaces in a canonical type")
    if text.endswith("]"):
        open_at = text.rfind("[")
        if open_at <= 0:
            raise LeafTypeError(field, f"malformed array type {text!r}")
        elem = _parse_type(text[:open_at], field)
        length = text[open_at + 1 : -1]
        if length == "":
            return _AbiType("array", 0, elem)
        if not re.fullmatch(r"[1-9][0-9]*", length):
            raise LeafTypeError(field, f"array length in {text!r} must be a positive integer")
        return _AbiType("array", int(length), elem)
    if text.startswith("(") and text.endswith(")"):
        parts = _split_components(text[1:-1], field, text)
        return _AbiType("tuple", components=tuple(_parse_type(p, field) for p in parts))
    if text in _SIMPLE:
        return _AbiType(text)
    if m := _INT_RE.fullmatch(text):
        bits = int(m.group(2))
        if bits % 8 or not 8 <= bits <= 256:
            raise LeafTypeError(field, f"{text!r}: integer sizes are multiples of 8 from 8 to 256")
        return _AbiType(m.group(1), bits)
    if m := _BYTES_RE.fullmatch(text):
        size = int(m.group(1))
        if size > 32:
            raise LeafTypeError(field, f"{text!r}: fixed byte sizes go from 1 to 32")
        return _AbiType("fixed_bytes", size)
    raise LeafTypeError(field, f"unsupported type {text!r}")


def _split_components(inner: str, field: str, text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for pos, char in enumerate(inner):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            raise LeafTypeError(field, f"unbalanced parentheses in {text!r}")
        if char == "," and depth == 0:
            parts.append(inner[start:pos])
            start = pos + 1
    parts.append(inner[start:])
    if depth != 0 or any(p == "" for p in parts):
        raise LeafTypeError(field, f"malformed tuple type {text!r}")
    return parts


def _parse_encoding(leaf_encoding: Sequence[str]) -> tuple[tuple[str, ...], tuple[_AbiType, ...]]:
    if isinstance(leaf_encoding, str | bytes) or not isinstance(leaf_encoding, Sequence):
        raise LeafTypeError(
            "leaf_encoding", "expected a sequence of type strings such as ['address', 'uint256']"
        )
    if len(leaf_encoding) == 0:
        raise LeafTypeError("leaf_encoding", "a leaf needs at least one type")
    types = tuple(_parse_type(t, f"leaf_encoding[{i}]") for i, t in enumerate(leaf_encoding))
    return tuple(leaf_encoding), types


# ----------------------------------------------------------------------------- values

_HEX_RE = re.compile(r"0x([0-9a-fA-F]{2})*")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def _type_name(t: _AbiType) -> str:
    if t.kind in ("uint", "int"):
        return f"{t.kind}{t.size}"
    if t.kind == "fixed_bytes":
        return f"bytes{t.size}"
    if t.kind == "array":
        assert t.elem is not None
        return f"{_type_name(t.elem)}[{t.size or ''}]"
    if t.kind == "tuple":
        return "(" + ",".join(_type_name(c) for c in t.components) + ")"
    return t.kind


def _bytes_value(t: _AbiType, v: Any, field: str) -> bytes:
    if isinstance(v, bytes | bytearray | memoryview):
        data = bytes(v)
    elif isinstance(v, str):
        if not _HEX_RE.fullmatch(v):
            raise LeafValueError(field, f"{v[:80]!r} is not 0x-prefixed hex for {_type_name(t)}")
        data = bytes.fromhex(v[2:])
    else:
        raise LeafValueError(field, f"expected bytes for {_type_name(t)}, got {type(v).__name__}")
    if t.kind == "fixed_bytes" and len(data) != t.size:
        raise LeafValueError(
            field, f"{_type_name(t)} takes exactly {t.size} bytes, got {len(data)}"
        )
    return data


def _normalize(t: _AbiType, v: Any, field: str, *, from_json: bool = False) -> Any:
    """Check ``v`` against ``t`` and return its canonical Python form."""
    kind = t.kind
    if kind in ("uint", "int"):
        if from_json and isinstance(v, str):
            try:
                v = int(v, 16) if v[:2].lower() == "0x" else int(v, 10)
            except ValueError:
                raise LeafValueError(field, f"{v[:80]!r} is not a number") from None
        if not isinstance(v, int) or isinstance(v, bool):
            raise LeafValueError(
                field, f"expected an int for {_type_name(t)}, got {type(v).__name__}"
            )
        low, high = (
            (0, 2**t.size - 1) if kind == "uint" else (-(2 ** (t.size - 1)), 2 ** (t.size - 1) - 1)
        )
        if not low <= v <= high:
            raise LeafValueError(field, f"{v} does not fit {_type_name(t)} ({low}..{high})")
        return int(v)
    if kind == "address":
        if isinstance(v, bytes | bytearray) and len(v) == 20:
            v = "0x" + bytes(v).hex()
        if not isinstance(v, str) or not _ADDRESS_RE.fullmatch(v):
            raise LeafValueError(
                field, f"expected a 0x-prefixed 20-byte hex address, got {v!r:.80}"
            )
        mixed = v[2:] != v[2:].lower() and v[2:] != v[2:].upper()
        if mixed and not is_checksum_address(v):
            raise LeafValueError(field, f"address {v} has a wrong EIP-55 checksum")
        return str(to_checksum_address(v))
    if kind == "bool":
        if not isinstance(v, bool):
            raise LeafValueError(field, f"expected a bool, got {type(v).__name__}")
        return v
    if kind in ("fixed_bytes", "bytes"):
        return _bytes_value(t, v, field)
    if kind == "string":
        if not isinstance(v, str):
            raise LeafValueError(field, f"expected a str, got {type(v).__name__}")
        return v
    if not isinstance(v, list | tuple):
        raise LeafValueError(
            field, f"expected a list or tuple for {_type_name(t)}, got {type(v).__name__}"
        )
    if kind == "array":
        assert t.elem is not None
        if t.size and len(v) != t.size:
            raise LeafValueError(field, f"{_type_name(t)} takes {t.size} items, got {len(v)}")
        return tuple(
            _normalize(t.elem, x, f"{field}[{i}]", from_json=from_json) for i, x in enumerate(v)
        )
    if len(v) != len(t.components):
        raise LeafValueError(
            field, f"{_type_name(t)} takes {len(t.components)} items, got {len(v)}"
        )
    return tuple(
        _normalize(c, x, f"{field}[{i}]", from_json=from_json)
        for i, (c, x) in enumerate(zip(t.components, v, strict=True))
    )


def _normalize_leaf(
    types: Sequence[_AbiType], value: Any, field: str, *, from_json: bool = False
) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise LeafValueError(
            field, f"a leaf is a list or tuple of values, got {type(value).__name__}"
        )
    if len(value) != len(types):
        raise LeafValueError(
            field, f"the leaf encoding has {len(types)} types, the value {len(value)} items"
        )
    names = TEST_SAMPLE_FIELDS if len(types) == len(LEAF_TYPES) and _is_test_sample(types) else None
    return tuple(
        _normalize(t, x, f"{field}.{names[i]}" if names else f"{field}[{i}]", from_json=from_json)
        for i, (t, x) in enumerate(zip(types, value, strict=True))
    )


def _to_json(t: _AbiType, v: Any) -> Any:
    if t.kind in ("uint", "int"):
        return str(v)
    if t.kind in ("fixed_bytes", "bytes"):
        return "0x" + v.hex()
    if t.kind == "array":
        assert t.elem is not None
        return [_to_json(t.elem, x) for x in v]
    if t.kind == "tuple":
        return [_to_json(c, x) for c, x in zip(t.components, v, strict=True)]
    return v


# ----------------------------------------------------------------------------- ABI encoding


def _encode(t: _AbiType, v: Any) -> bytes:
    kind = t.kind
    if kind == "uint":
        return int(v).to_bytes(32, "big")
    if kind == "int":
        return (int(v) % 2**256).to_bytes(32, "big")
    if kind == "address":
        return bytes(12) + bytes.fromhex(v[2:])
    if kind == "bool":
        return (1 if v else 0).to_bytes(32, "big")
    if kind == "fixed_bytes":
        return bytes(v).ljust(32, b"\0")
    if kind in ("bytes", "string"):
        data = v.encode("utf-8") if kind == "string" else bytes(v)
        return len(data).to_bytes(32, "big") + data.ljust(-(-len(data) // 32) * 32, b"\0")
    if kind == "array":
        assert t.elem is not None
        body = _encode_sequence([t.elem] * len(v), v)
        return body if t.size else len(v).to_bytes(32, "big") + body
    return _encode_sequence(t.components, v)


def _encode_sequence(types: Sequence[_AbiType], values: Sequence[Any]) -> bytes:
    heads: list[bytes] = []
    tails: list[bytes] = []
    offset = sum(t.head_size for t in types)
    for t, v in zip(types, values, strict=True):
        encoded = _encode(t, v)
        if t.dynamic:
            heads.append(offset.to_bytes(32, "big"))
            tails.append(encoded)
            offset += len(encoded)
        else:
            heads.append(encoded)
    return b"".join(heads + tails)


_TEST_SAMPLE_TYPES: Final = tuple(_parse_type(t, "LEAF_TYPES") for t in LEAF_TYPES)


def _is_test_sample(types: Sequence[_AbiType]) -> bool:
    return tuple(types) == _TEST_SAMPLE_TYPES


# Salted test samples are encoded and hashed this many at a time, in one scratch buffer that is
# reused: about 5 MB at 32 features, so it stays mapped and cached. A fresh page costs ~10 µs
# to fault in on the project's machines, which made one buffer for all leaves (1.2 GB for a
# million samples) cost more than the encoding itself.
_CHUNK = 4096


class _Scratch:
    """A reusable zeroed byte buffer."""

    def __init__(self) -> None:
        self._buf: Bytes32Array = np.zeros(0, np.uint8)

    def zeros(self, size: int) -> Bytes32Array:
        if size > len(self._buf):
            self._buf = np.zeros(size, np.uint8)
        view = self._buf[:size]
        view.fill(0)
        return view


def _test_sample_hashes(values: Sequence[Any]) -> Bytes32Array | None:
    """Leaf hashes of ``(index, salt, features, label)`` values, or None off the fast path.

    None means a value is outside the fast path (a wrong type, an index of 2**64 or more):
    the generic path then names the fault, or encodes it.
    """
    scratch = _Scratch()
    keccak = _keccak
    digests: list[bytes] = []
    for start in range(0, len(values), _CHUNK):
        encoded = _encode_test_samples(values[start : start + _CHUNK], scratch)
        if encoded is None:
            return None
        view, offsets = encoded
        digests += [
            keccak(keccak(view[a:b]).digest()).digest() for a, b in itertools.pairwise(offsets)
        ]
    return np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32)


def _encode_test_samples(
    values: Sequence[Any], scratch: _Scratch
) -> tuple[memoryview, list[int]] | None:
    """abi.encode of ``(index, salt, features, label)`` leaves, one after the other.

    Returns the encodings and their ``n + 1`` offsets. Layout of one leaf, in 32-byte words:
    index, salt, the offset of the array (0x80), label, the array's length, then one word per
    feature.
    """
    n = len(values)
    if not set(map(type, values)) <= {tuple, list} or set(map(len, values)) != {4}:
        return None
    index_col, salt_col, feature_col, label_col = zip(*values, strict=True)
    try:
        if set(map(type, index_col)) != {int} or set(map(type, label_col)) != {int}:
            return None
        index = np.frombuffer(array("Q", index_col), np.uint64)
        labels = np.frombuffer(array("B", label_col), np.uint8)
        if set(map(type, salt_col)) != {bytes} or set(map(len, salt_col)) != {32}:
            return None
        if not set(map(type, feature_col)) <= {tuple, list}:
            return None
        counts = np.frombuffer(array("Q", map(len, feature_col)), np.uint64).astype(np.int64)
        # array("I") refuses floats, strings and anything outside 0..2**32-1 ...
        flat = np.frombuffer(array("I", itertools.chain.from_iterable(feature_col)), np.uint32)
    except (OverflowError, TypeError):
        return None
    # ... but not bools, which are ints to Python and not to abi.encode.
    if bool in set(map(type, itertools.chain.from_iterable(feature_col))):
        return None
    salts = np.frombuffer(b"".join(salt_col), np.uint8).reshape(n, 32)

    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(160 + 32 * counts, out=offsets[1:])
    buf = scratch.zeros(int(offsets[-1]))
    words = buf.view(">u4")  # word w of a leaf at byte o holds its low 32 bits at o/4 + 8w + 7
    base = offsets[:-1] // 4
    words[base + 6] = (index >> np.uint64(32)).astype(np.uint32)
    words[base + 7] = (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    buf.view(np.uint64)[(offsets[:-1] // 8 + 4)[:, None] + np.arange(4)] = salts.view(np.uint64)
    words[base + 8 * 2 + 7] = 0x80
    words[base + 8 * 3 + 7] = labels
    words[base + 8 * 4 + 7] = counts.astype(np.uint32)
    if len(flat):
        first = np.cumsum(counts) - counts  # position of each leaf's first feature in `flat`
        words[np.repeat(base + 8 * 5 + 7 - 8 * first, counts) + 8 * np.arange(len(flat))] = flat
    return buf.data, offsets.tolist()


# ----------------------------------------------------------------------------- hashing


def _hash_leaves(blobs: Sequence[bytes]) -> Bytes32Array:
    keccak = _keccak
    digests = [keccak(keccak(blob).digest()).digest() for blob in blobs]
    return np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32)


def _greater(a: Bytes32Array, b: Bytes32Array) -> npt.NDArray[np.bool_]:
    """Row-wise ``a > b`` of 32-byte big-endian values."""
    av, bv = a.view(">u8"), b.view(">u8")
    first = (av != bv).argmax(axis=1)  # the first differing 8-byte word (0 when equal)
    rows = np.arange(len(a))
    return np.asarray(av[rows, first] > bv[rows, first])


def _hash_pairs(pairs: Bytes32Array) -> Bytes32Array:
    """Sorted-pair hashes of an ``(m, 2, 32)`` array of sibling nodes."""
    swap = _greater(pairs[:, 0], pairs[:, 1])
    ordered = pairs.copy()
    ordered[swap] = pairs[swap][:, ::-1]
    view = memoryview(ordered.tobytes())
    digests = [_keccak(view[i : i + 64]).digest() for i in range(0, len(view), 64)]
    return np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32)


def _internal_levels(n: int) -> Iterable[tuple[int, int]]:
    """``[lo, hi)`` of the internal nodes at each depth, deepest first."""
    if n < 2:
        return
    for depth in range((n - 1).bit_length() - 1, -1, -1):
        yield 2**depth - 1, min(2 ** (depth + 1) - 1, n - 1)


def _build_nodes(sorted_leaves: Bytes32Array) -> Bytes32Array:
    n = len(sorted_leaves)
    nodes = np.empty((2 * n - 1, 32), np.uint8)
    nodes[n - 1 :] = sorted_leaves[::-1]
    # Internal nodes of one depth have their children at the next depth, side by side.
    for lo, hi in _internal_levels(n):
        nodes[lo:hi] = _hash_pairs(nodes[2 * lo + 1 : 2 * hi + 1].reshape(-1, 2, 32))
    return nodes


def _sibling(i: int) -> int:
    return i + 1 if i % 2 else i - 1


def process_proof(leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from the leaf hash ``leaf`` (MerkleProof.processProof)."""
    node = _check_node(leaf, "leaf")
    for i, sibling in enumerate(proof):
        node = _node_hash(node, _check_node(sibling, f"proof[{i}]"))
    return node


def process_multiproof(
    leaves: Sequence[bytes], proof: Sequence[bytes], proof_flags: Sequence[bool]
) -> bytes:
    """The root a multiproof leads to (MerkleProof.processMultiProof, with OZ's format checks)."""
    if len(leaves) + len(proof) != len(proof_flags) + 1:
        raise MerkleError(
            "proof_flags",
            f"{len(leaves)} leaves and {len(proof)} proof nodes need "
            f"{len(leaves) + len(proof) - 1} flags, got {len(proof_flags)}",
        )
    if len(proof) < sum(1 for f in proof_flags if not f):
        raise MerkleError("proof", "fewer proof nodes than flags that consume one")
    queue = deque(_check_node(x, f"leaves[{i}]") for i, x in enumerate(leaves))
    nodes = deque(_check_node(x, f"proof[{i}]") for i, x in enumerate(proof))
    for flag in proof_flags:
        a = queue.popleft()
        b = queue.popleft() if flag else nodes.popleft()
        queue.append(_node_hash(a, b))
    return queue.pop() if queue else nodes.popleft()


def _check_node(node: Any, field: str) -> bytes:
    if not isinstance(node, bytes | bytearray) or len(node) != 32:
        raise MerkleError(field, "a Merkle node is 32 bytes")
    return bytes(node)


# ----------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class MultiProof:
    """A multiproof: ``leaves`` (values) in the order ``multiProofVerify`` takes them."""

    leaves: list[tuple[Any, ...]]
    leaf_indices: list[int]
    proof: list[bytes]
    proof_flags: list[bool]


@dataclass(frozen=True)
class ProofTable:
    """Every proof of a tree, materialized level by level in the order of the tree's leaves.

    ``nodes[k, c]`` is the ``k``-th proof node of the leaf in column ``c`` (the leaf at tree
    index ``n - 1 + c``), zero past the end of its proof; value ``i`` is in column
    ``columns[i]`` and its proof has ``lengths[columns[i]]`` nodes. Leaf order keeps every
    level a sequential copy out of the node array.
    """

    nodes: Bytes32Array  # (depth, n, 32)
    lengths: IntArray  # (n,) by column
    columns: IntArray  # (n,) by value index

    def __len__(self) -> int:
        return len(self.columns)

    def proof(self, index: int) -> list[bytes]:
        """The proof of value ``index``, leaf to root."""
        column = int(self.columns[index])
        return [bytes(row) for row in self.nodes[: self.lengths[column], column]]


class StandardMerkleTree:
    """OpenZeppelin's StandardMerkleTree (``@openzeppelin/merkle-tree`` 1.0.8).

    >>> tree = StandardMerkleTree.of([("0x" + "11" * 20, 5)], ["address", "uint256"])
    >>> tree.get_proof(0)
    []
    """

    def __init__(
        self,
        nodes: Bytes32Array,
        values: Sequence[tuple[Any, ...]],
        tree_indices: IntArray,
        leaf_encoding: tuple[str, ...],
    ) -> None:
        """Wrap a built tree; use :meth:`of` or :meth:`load` to make one."""
        self._nodes = nodes
        self._values = tuple(values)
        self._tree_indices = tree_indices
        self._encoding, self._types = _parse_encoding(leaf_encoding)
        n = len(self._values)
        self._value_at_leaf = np.empty(n, np.int64)  # by tree index - (n - 1)
        self._value_at_leaf[tree_indices - (n - 1)] = np.arange(n)

    # construction ------------------------------------------------------------------------

    @classmethod
    def of(
        cls, values: Sequence[Sequence[Any]], leaf_encoding: Sequence[str]
    ) -> StandardMerkleTree:
        """Build the tree of ``values``, each a sequence matching ``leaf_encoding``."""
        encoding, types = _parse_encoding(leaf_encoding)
        if len(values) == 0:
            raise EmptyTreeError("values", "a Merkle tree needs at least one leaf")
        normalized, leaves = _leaf_hashes(types, values)
        order = np.argsort(leaves.view("S32").ravel(), kind="stable")  # OZ's stable sort
        nodes = _build_nodes(leaves[order])
        tree_indices = np.empty(len(values), np.int64)
        tree_indices[order] = 2 * len(values) - 2 - np.arange(len(values))
        return cls(nodes, normalized, tree_indices, encoding)

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> StandardMerkleTree:
        """Rebuild a tree from a ``standard-v1`` dump (ours or OZ's), checking every hash."""
        if not isinstance(data, Mapping):
            raise InvalidTreeDump("dump", "expected a JSON object")
        if data.get("format") != DUMP_FORMAT:
            raise InvalidTreeDump(
                "format", f"unknown format {data.get('format')!r}, expected {DUMP_FORMAT!r}"
            )
        if "leafEncoding" not in data:
            raise InvalidTreeDump("leafEncoding", "expected the leaf encoding")
        encoding, types = _parse_encoding(data["leafEncoding"])
        raw_tree, raw_values = data.get("tree"), data.get("values")
        if not isinstance(raw_values, list) or not raw_values:
            raise InvalidTreeDump("values", "expected a non-empty list of {value, treeIndex}")
        n = len(raw_values)
        if not isinstance(raw_tree, list) or len(raw_tree) != 2 * n - 1:
            raise InvalidTreeDump("tree", f"{n} values need a list of {2 * n - 1} nodes")
        nodes = _parse_nodes(raw_tree)
        values, indices = [], []
        for i, entry in enumerate(raw_values):
            if not isinstance(entry, Mapping) or set(entry) != {"value", "treeIndex"}:
                raise InvalidTreeDump(f"values[{i}]", "expected {value, treeIndex}")
            values.append(entry["value"])
            indices.append(entry["treeIndex"])
        if set(map(type, indices)) != {int} or sorted(indices) != list(range(n - 1, 2 * n - 1)):
            raise InvalidTreeDump(
                "values", f"tree indices must place the {n} leaves at {n - 1}..{2 * n - 2}"
            )
        tree_indices = np.array(indices, np.int64)
        normalized, leaves = _leaf_hashes(types, values, from_json=True)
        bad = np.flatnonzero((nodes[tree_indices] != leaves).any(axis=1))
        if len(bad):
            raise InvalidTreeDump(f"values[{bad[0]}]", "the value does not hash to its tree node")
        rebuilt = _build_nodes(nodes[n - 1 :][::-1])
        bad = np.flatnonzero((rebuilt != nodes).any(axis=1))
        if len(bad):
            raise InvalidTreeDump(f"tree[{bad[0]}]", "the node is not the hash of its children")
        return cls(nodes, normalized, tree_indices, encoding)

    # reading -----------------------------------------------------------------------------

    @property
    def root(self) -> bytes:
        """The root, as 32 bytes."""
        return bytes(self._nodes[0])

    @property
    def root_hex(self) -> str:
        """The root, as ``0x`` hex."""
        return "0x" + self.root.hex()

    @property
    def values(self) -> tuple[tuple[Any, ...], ...]:
        """The values in the order given, in canonical form."""
        return self._values

    @property
    def leaf_encoding(self) -> tuple[str, ...]:
        """The ABI types of a leaf."""
        return self._encoding

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        encoding = list(self._encoding)
        return f"StandardMerkleTree(root={self.root_hex}, leaves={len(self)}, encoding={encoding})"

    def leaf_hash(self, value: Sequence[Any]) -> bytes:
        """The leaf hash of ``value`` under this tree's encoding (in the tree or not)."""
        return _double_hash(
            _encode_sequence(self._types, _normalize_leaf(self._types, value, "value"))
        )

    def leaf_hash_at(self, index: int) -> bytes:
        """The leaf hash of value ``index``."""
        return bytes(self._nodes[self._tree_index(index)])

    def tree_index(self, index: int) -> int:
        """Where value ``index`` sits in the node array (``dump()["tree"]``)."""
        return self._tree_index(index)

    def _tree_index(self, index: int, field: str = "index") -> int:
        if not isinstance(index, int | np.integer) or isinstance(index, bool):
            raise LeafIndexError(field, f"expected an int index, got {type(index).__name__}")
        if not 0 <= index < len(self._values):
            raise LeafIndexError(
                field, f"index {index} out of range for a tree of {len(self)} values"
            )
        return int(self._tree_indices[index])

    # proofs ------------------------------------------------------------------------------

    def get_proof(self, index: int) -> list[bytes]:
        """The proof of value ``index``, leaf to root (for ``MerkleProof.verify``)."""
        i = self._tree_index(index)
        proof = []
        while i > 0:
            proof.append(bytes(self._nodes[_sibling(i)]))
            i = (i - 1) // 2
        return proof

    def get_all_proofs(self) -> ProofTable:
        """Every proof at once (what :meth:`get_proof` returns, for all values)."""
        n = len(self._values)
        depth = (2 * n - 1).bit_length() - 1  # of the deepest leaf; the others are one less
        table = np.empty((depth, n, 32), np.uint8)
        lengths = np.full(n, depth, np.int64)
        current = np.arange(n - 1, 2 * n - 1)  # ascending, and stays so as it climbs
        for level in range(depth):
            start = int(np.searchsorted(current, 1))  # columns whose node is not yet the root
            siblings = ((current[start:] - 1) ^ 1) + 1  # i + 1 for odd i, i - 1 for even i
            np.take(self._nodes, siblings, axis=0, out=table[level, start:])
            table[level, :start] = 0
            lengths[:start] = np.minimum(lengths[:start], level)
            current = np.maximum((current - 1) // 2, 0)
        return ProofTable(table, lengths, self._tree_indices - (n - 1))

    def get_multiproof(self, indices: Sequence[int]) -> MultiProof:
        """A multiproof of the values at ``indices``, in OZ's order (for ``multiProofVerify``)."""
        if len(indices) == 0:
            # OZ would return [root] as the proof of nothing; multiProofVerify accepts that, so
            # a reveal of an empty set must never be produced.
            raise MultiProofRequestError("indices", "a multiproof needs at least one index")
        tree_indices = [self._tree_index(i, f"indices[{p}]") for p, i in enumerate(indices)]
        if len(set(tree_indices)) != len(tree_indices):
            seen: set[int] = set()
            for p, i in enumerate(indices):
                if i in seen:
                    raise DuplicateLeafIndex(f"indices[{p}]", f"index {i} is requested twice")
                seen.add(i)
        tree_indices.sort(reverse=True)
        stack = deque(tree_indices)
        proof: list[bytes] = []
        flags: list[bool] = []
        while stack and stack[0] > 0:
            j = stack.popleft()
            s = _sibling(j)
            if stack and stack[0] == s:
                flags.append(True)
                stack.popleft()
            else:
                flags.append(False)
                proof.append(bytes(self._nodes[s]))
            stack.append((j - 1) // 2)
        n = len(self._values)
        leaf_indices = [int(self._value_at_leaf[t - (n - 1)]) for t in tree_indices]
        return MultiProof([self._values[i] for i in leaf_indices], leaf_indices, proof, flags)

    def verify(self, leaf: int | Sequence[Any], proof: Sequence[bytes]) -> bool:
        """Whether ``proof`` proves ``leaf`` (a value, or the index of one) against the root."""
        leaf_hash = self.leaf_hash_at(leaf) if isinstance(leaf, int) else self.leaf_hash(leaf)
        return process_proof(leaf_hash, proof) == self.root

    def verify_multiproof(self, multiproof: MultiProof) -> bool:
        """Whether ``multiproof`` proves its leaves against the root."""
        return verify_multiproof(self.root, self._encoding, multiproof)

    # dumps -------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The tree as OZ's ``standard-v1`` JSON object."""
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(self._encoding),
            "tree": ["0x" + node.hex() for node in map(bytes, self._nodes)],
            "values": [
                {
                    "value": [_to_json(t, x) for t, x in zip(self._types, v, strict=True)],
                    "treeIndex": int(i),
                }
                for v, i in zip(self._values, self._tree_indices.tolist(), strict=True)
            ],
        }


@contextmanager
def _gc_paused() -> Iterator[None]:
    # A big tree allocates millions of tuples and bytes, none in a reference cycle; left on,
    # the cyclic collector walks every live object several times over meanwhile.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _leaf_hashes(
    types: Sequence[_AbiType], values: Sequence[Any], *, from_json: bool = False
) -> tuple[list[tuple[Any, ...]], Bytes32Array]:
    """Canonical values and their leaf hashes (vectorized for salted test samples)."""
    with _gc_paused():
        return _leaf_hashes_unpaused(types, values, from_json=from_json)


def _leaf_hashes_unpaused(
    types: Sequence[_AbiType], values: Sequence[Any], *, from_json: bool
) -> tuple[list[tuple[Any, ...]], Bytes32Array]:
    if _is_test_sample(types) and not from_json:
        hashes = _test_sample_hashes(values)
        if hashes is not None:
            normalized = [
                v if type(v) is tuple and type(v[2]) is tuple else (v[0], v[1], tuple(v[2]), v[3])
                for v in values
            ]
            return normalized, hashes
    normalized = [
        _normalize_leaf(types, v, f"values[{i}]", from_json=from_json) for i, v in enumerate(values)
    ]
    if _is_test_sample(types) and (hashes := _test_sample_hashes(normalized)) is not None:
        return normalized, hashes
    return normalized, _hash_leaves([_encode_sequence(types, v) for v in normalized])


def _parse_nodes(raw: list[Any]) -> Bytes32Array:
    for i, node in enumerate(raw):
        if not isinstance(node, str) or len(node) != 66 or not _HEX_RE.fullmatch(node):
            raise InvalidTreeDump(f"tree[{i}]", "a node is 0x followed by 64 hex digits")
    return np.frombuffer(bytes.fromhex("".join(x[2:] for x in raw)), np.uint8).reshape(-1, 32)


def verify(
    root: bytes, leaf_encoding: Sequence[str], value: Sequence[Any], proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` proves ``value`` against ``root`` (StandardMerkleTree.verify)."""
    _, types = _parse_encoding(leaf_encoding)
    leaf = _double_hash(_encode_sequence(types, _normalize_leaf(types, value, "value")))
    return process_proof(leaf, proof) == bytes(root)


def verify_multiproof(root: bytes, leaf_encoding: Sequence[str], multiproof: MultiProof) -> bool:
    """Whether ``multiproof`` proves its leaves against ``root`` (OZ's ``verifyMultiProof``)."""
    _, types = _parse_encoding(leaf_encoding)
    leaves = [
        _double_hash(_encode_sequence(types, _normalize_leaf(types, v, f"leaves[{i}]")))
        for i, v in enumerate(multiproof.leaves)
    ]
    return process_multiproof(leaves, multiproof.proof, multiproof.proof_flags) == bytes(root)


# ----------------------------------------------------------------------------- test samples


def _sample_value(sample: TestSample) -> tuple[Any, ...]:
    return (sample.index, sample.salt, sample.features, sample.label)


def test_sample_leaf(sample: TestSample) -> bytes:
    """The leaf hash of a salted test sample (docs/protocol.md, "test leaf")."""
    value = _normalize_leaf(_TEST_SAMPLE_TYPES, _sample_value(sample), "sample")
    return _double_hash(_encode_sequence(_TEST_SAMPLE_TYPES, value))


def test_sample_tree(samples: Sequence[TestSample]) -> StandardMerkleTree:
    """The commitment to a test set: sample ``i`` must carry index ``i``."""
    with _gc_paused():
        values = [_sample_value(s) for s in samples]
    index = np.fromiter(
        (v[0] if type(v[0]) is int else -1 for v in values), np.float64, len(values)
    )
    wrong = np.flatnonzero(index != np.arange(len(values)))
    if len(wrong):
        i = int(wrong[0])
        raise LeafValueError(
            f"samples[{i}].index", f"sample {i} carries index {values[i][0]!r}, expected {i}"
        )
    return StandardMerkleTree.of(values, LEAF_TYPES)


test_sample_leaf.__test__ = False  # type: ignore[attr-defined]  # not pytest tests despite the names
test_sample_tree.__test__ = False  # type: ignore[attr-defined]
