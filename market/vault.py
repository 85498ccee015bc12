"""The provider's secrets per market, encrypted at rest: the only module that touches AES.

A market's secrets are its salted test set and the Merkle tree built over it (the tree's
dump, so that reveal proofs need no rebuild). They are written before the market exists
under a *pending* name derived from the Merkle root, then renamed to the market's address
once the deployment is mined; a worker that died in between finds the pending file again
from the root it reads on chain.

File layout (``<directory>/<address>.vault``, ``pending-<root>.vault`` before that)::

    MAGIC (8 bytes) ‖ nonce (12 bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes)

The magic is authenticated as associated data; the plaintext is UTF-8 JSON. Loading fails
loudly, never with garbage: a wrong key, a changed byte or a truncated file fails the GCM
tag (:class:`VaultIntegrityError`), and a test set that does not hash to its stored Merkle
root (or to the root the caller expects from the chain) is refused the same way.

Writes are atomic: a temporary file in the same directory, fsync, ``os.replace``, fsync of the
directory; a failed write leaves the previous file, and no partial one, behind.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES

from market.config import Settings
from market.errors import VaultError, VaultIntegrityError, VaultKeyMissing
from market.merkle import StandardMerkleTree, test_sample_tree
from market.types import TestSample

log = logging.getLogger(__name__)

KEY_VARIABLE = "MARKET_VAULT_KEY"
KEY_BYTES = 32  # AES-256
MAGIC = b"MKTVLT01"  # file type and format version, authenticated with the ciphertext
# GCM's standard 96-bit nonce, drawn at random for every write: with one key, random nonces
# stay safe up to 2**32 encryptions (NIST SP 800-38D), far more than markets times rewrites.
NONCE_BYTES = 12
TAG_BYTES = 16
FORMAT_VERSION = 1
SUFFIX = ".vault"
PENDING_PREFIX = "pending-"


def parse_vault_key(value: str | None, variable: str = KEY_VARIABLE) -> bytes:
    """The 32-byte key from its text form: 64 hex digits (``0x`` optional) or base64.

    The error names ``variable`` and never repeats the value: it is a secret.
    """
    if value is None or not value.strip():
        raise VaultKeyMissing(variable)
    text = value.strip()
    hexdigits = text.removeprefix("0x")
    if len(hexdigits) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(hexdigits)
    for altchars in (None, b"-_"):  # standard and URL-safe alphabets
        with contextlib.suppress(binascii.Error, ValueError):
            key = base64.b64decode(text.encode("ascii"), altchars, validate=True)
            if len(key) == KEY_BYTES:
                return key
    raise VaultError(
        f"{variable} is malformed: expected {KEY_BYTES} bytes written as {2 * KEY_BYTES} hex "
        f"digits or in base64 (got {len(text)} characters); "
        "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
    )


def generate_vault_key() -> str:
    """A fresh random key in the hex form :func:`parse_vault_key` reads."""
    return secrets.token_hex(KEY_BYTES)


@dataclass(frozen=True)
class MarketSecrets:
    """A market's salted test set, its Merkle root and the tree's dump."""

    samples: tuple[TestSample, ...]
    root: bytes
    tree: Mapping[str, Any] = field(repr=False)

    def __repr__(self) -> str:  # never show salts or labels in logs or tracebacks
        return f"MarketSecrets(samples={len(self.samples)}, root=0x{self.root.hex()})"

    @classmethod
    def create(cls, samples: Sequence[TestSample]) -> MarketSecrets:
        """Build the Merkle tree over ``samples`` and keep it with them."""
        tree = test_sample_tree(samples)
        return cls(tuple(samples), bytes(tree.root), tree.dump())


class Vault:
    """Encrypted files of :class:`MarketSecrets` in one directory, one per market."""

    def __init__(self, directory: Path | str, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise VaultError(f"vault key must be {KEY_BYTES} bytes, got {len(key)}")
        self.directory = Path(directory)
        self._key = key

    def __repr__(self) -> str:
        return f"Vault({str(self.directory)!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Vault:
        """The vault at ``settings.vault_dir`` with the key of ``MARKET_VAULT_KEY``."""
        return cls(settings.vault_dir, parse_vault_key(settings.vault_key))

    # ------------------------------------------------------------------------- names

    def path_for(self, address: str) -> Path:
        """The file of the market at ``address`` (addresses compare case-insensitively)."""
        return self.directory / f"{address.lower()}{SUFFIX}"

    def pending_path(self, root: bytes) -> Path:
        """The file of a market not deployed yet, named by its test set's Merkle root."""
        return self.directory / f"{PENDING_PREFIX}{root.hex()}{SUFFIX}"

    def exists(self, address: str) -> bool:
        """Whether the market at ``address`` has a vault file."""
        return self.path_for(address).exists()

    # ------------------------------------------------------------------------- writes

    def save(self, address: str, market_secrets: MarketSecrets) -> Path:
        """Encrypt and write the secrets of the market at ``address`` (atomically)."""
        return self._write(self.path_for(address), market_secrets)

    def save_pending(self, market_secrets: MarketSecrets) -> Path:
        """Write secrets before the market's address is known, named by their root."""
        return self._write(self.pending_path(market_secrets.root), market_secrets)

    def promote(self, root: bytes, address: str) -> Path:
        """Rename the pending file of ``root`` to the market's address, once deployed.

        Idempotent: when a previous attempt already renamed it, the market's file is
        checked against ``root`` and returned; a market file for another root is an error.
        """
        pending, final = self.pending_path(root), self.path_for(address)
        if final.exists():
            # Never overwrite a market's secrets: only accept a file for the same test set.
            self.load(address, expected_root=root)
            pending.unlink(missing_ok=True)
            return final
        if not pending.exists():
            raise VaultError(f"no pending vault file for root 0x{root.hex()} in {self.directory}")
        try:
            os.replace(pending, final)
        except FileNotFoundError:
            # Renamed meanwhile by another actor (the launch and a worker may both promote).
            if not final.exists():
                raise
            self.load(address, expected_root=root)
            return final
        _fsync_dir(self.directory)
        log.info("vault: %s is now %s", pending.name, final.name)
        return final

    # ------------------------------------------------------------------------- reads

    def load(self, address: str, *, expected_root: bytes | None = None) -> MarketSecrets:
        """Decrypt and check the secrets of the market at ``address``.

        ``expected_root`` (the root committed on chain) is checked too when given.
        """
        return self._read(self.path_for(address), expected_root)

    def load_pending(self, root: bytes) -> MarketSecrets:
        """Decrypt and check the pending secrets of ``root``."""
        return self._read(self.pending_path(root), root)

    # ------------------------------------------------------------------------- internals

    def _write(self, path: Path, market_secrets: MarketSecrets) -> Path:
        nonce = secrets.token_bytes(NONCE_BYTES)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(MAGIC)
        ciphertext, tag = cipher.encrypt_and_digest(_encode(market_secrets))
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, MAGIC + nonce + ciphertext + tag)
        log.info("vault: wrote %s (%d test samples)", path.name, len(market_secrets.samples))
        return path

    def _read(self, path: Path, expected_root: bytes | None) -> MarketSecrets:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise VaultError(f"no vault file {path}") from None
        if len(blob) < len(MAGIC) + NONCE_BYTES + TAG_BYTES or not blob.startswith(MAGIC):
            raise VaultIntegrityError(str(path), "not a vault file, or truncated")
        nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        ciphertext, tag = blob[len(MAGIC) + NONCE_BYTES : -TAG_BYTES], blob[-TAG_BYTES:]
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
        cipher.update(MAGIC)
        try:
            plaintext = cipher.decrypt_and_verify(ciphertext, tag)
        except ValueError:
            raise VaultIntegrityError(
                str(path), f"authentication failed: wrong {KEY_VARIABLE} or a modified file"
            ) from None
        market_secrets = _decode(plaintext, path)
        _check_root(market_secrets, expected_root, path)
        return market_secrets


def _encode(market_secrets: MarketSecrets) -> bytes:
    document = {
        "version": FORMAT_VERSION,
        "root": "0x" + market_secrets.root.hex(),
        "samples": [
            [s.index, "0x" + s.salt.hex(), list(s.features), s.label]
            for s in market_secrets.samples
        ],
        "tree": dict(market_secrets.tree),
    }
    return json.dumps(document, separators=(",", ":")).encode()


def _decode(plaintext: bytes, path: Path) -> MarketSecrets:
    try:
        document = json.loads(plaintext)
        if document["version"] != FORMAT_VERSION:
            raise ValueError(f"format version {document['version']}")
        samples = tuple(
            TestSample(
                int(index), bytes.fromhex(salt[2:]), tuple(int(f) for f in features), int(label)
            )
            for index, salt, features, label in document["samples"]
        )
        root = bytes.fromhex(document["root"][2:])
        tree = document["tree"]
    except (ValueError, KeyError, TypeError) as exc:
        # Authenticated yet unreadable: written by an incompatible version.
        raise VaultIntegrityError(str(path), f"unreadable contents ({exc})") from None
    return MarketSecrets(samples, root, tree)


def _check_root(market_secrets: MarketSecrets, expected: bytes | None, path: Path) -> None:
    computed = bytes(test_sample_tree(market_secrets.samples).root)
    stored = market_secrets.root
    try:
        dumped: bytes | None = bytes(StandardMerkleTree.load(dict(market_secrets.tree)).root)
    except ValueError as exc:  # the tree's own checks (market.merkle.InvalidTreeDump)
        raise VaultIntegrityError(str(path), f"the Merkle tree dump is invalid ({exc})") from None
    for what, root in (("stored", stored), ("tree dump", dumped), ("expected", expected)):
        if root is not None and root != computed:
            raise VaultIntegrityError(
                str(path),
                f"the test set hashes to root 0x{computed.hex()}, not the {what} root "
                f"0x{root.hex()}",
            )


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "KEY_VARIABLE",
    "MarketSecrets",
    "Vault",
    "generate_vault_key",
    "parse_vault_key",
]
