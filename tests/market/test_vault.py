"""The vault: encrypted round trips, loud failures, atomic writes, pending names."""

from __future__ import annotations

import base64
import errno
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from market import merkle
from market.config import Settings, load_settings
from market.errors import VaultError, VaultIntegrityError, VaultKeyMissing
from market.types import TestSample
from market.vault import (
    MAGIC,
    NONCE_BYTES,
    MarketSecrets,
    Vault,
    generate_vault_key,
    parse_vault_key,
)

MARKET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_MARKET = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
KEY = bytes(range(32))


def samples(n: int, seed: int = 1) -> list[TestSample]:
    rng = random.Random(seed)
    return [
        TestSample(i, rng.randbytes(32), tuple(sorted(rng.sample(range(1000), 5))), i % 2)
        for i in range(n)
    ]


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault(tmp_path / "vault", KEY)


def test_round_trip(vault: Vault) -> None:
    # given a salted test set and its tree
    test_set = samples(50)
    secrets = MarketSecrets.create(test_set)
    # when it is saved and loaded with the on-chain root
    path = vault.save(MARKET, secrets)
    loaded = vault.load(MARKET.upper().replace("0X", "0x"), expected_root=secrets.root)
    # then everything comes back, and the root is the tree's
    assert loaded.samples == tuple(test_set)
    assert loaded.root == merkle.test_sample_tree(test_set).root
    assert dict(loaded.tree) == dict(secrets.tree)
    # and the file is private, encrypted, and named by the market
    assert path.name == f"{MARKET.lower()}.vault"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = path.read_bytes()
    assert blob.startswith(MAGIC)
    assert all(s.salt not in blob and s.salt.hex() not in blob.decode("latin-1") for s in test_set)
    assert "salt" not in repr(loaded) and test_set[0].salt.hex() not in repr(loaded)


def test_every_write_draws_a_fresh_nonce(vault: Vault) -> None:
    secrets = MarketSecrets.create(samples(4))
    first = vault.save(MARKET, secrets).read_bytes()
    second = vault.save(MARKET, secrets).read_bytes()
    nonce = slice(len(MAGIC), len(MAGIC) + NONCE_BYTES)
    assert first[nonce] != second[nonce]
    assert first != second
    assert vault.load(MARKET).samples == secrets.samples


def test_wrong_key_is_an_integrity_error(vault: Vault) -> None:
    vault.save(MARKET, MarketSecrets.create(samples(8)))
    other = Vault(vault.directory, bytes(32))
    with pytest.raises(VaultIntegrityError, match="MARKET_VAULT_KEY") as caught:
        other.load(MARKET)
    assert caught.value.path == str(vault.path_for(MARKET))


@pytest.mark.parametrize("where", ["magic", "nonce", "ciphertext", "tag"])
def test_a_tampered_byte_is_an_integrity_error(vault: Vault, where: str) -> None:
    path = vault.save(MARKET, MarketSecrets.create(samples(8)))
    blob = bytearray(path.read_bytes())
    position = {
        "magic": 3,
        "nonce": len(MAGIC) + 5,
        "ciphertext": len(blob) // 2,
        "tag": len(blob) - 1,
    }[where]
    blob[position] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(VaultIntegrityError):
        vault.load(MARKET)


def test_a_truncated_file_is_an_integrity_error(vault: Vault) -> None:
    path = vault.save(MARKET, MarketSecrets.create(samples(8)))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(VaultIntegrityError, match="truncated"):
        vault.load(MARKET)


def test_test_set_not_matching_its_root_is_refused(vault: Vault) -> None:
    # given a file that decrypts but whose samples do not hash to the stored root
    good = MarketSecrets.create(samples(8))
    changed = list(good.samples)
    changed[3] = TestSample(3, changed[3].salt, changed[3].features, 1 - changed[3].label)
    vault.save(MARKET, MarketSecrets(tuple(changed), good.root, good.tree))
    with pytest.raises(VaultIntegrityError, match="stored root"):
        vault.load(MARKET)


def test_a_root_other_than_the_chains_is_refused(vault: Vault) -> None:
    secrets = MarketSecrets.create(samples(8))
    vault.save(MARKET, secrets)
    with pytest.raises(VaultIntegrityError, match="expected root"):
        vault.load(MARKET, expected_root=bytes(32))


def test_missing_key_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(VaultKeyMissing) as caught:
        Vault.from_settings(Settings(vault_dir=tmp_path, vault_key=None))
    assert caught.value.variable == "MARKET_VAULT_KEY"
    assert "MARKET_VAULT_KEY" in str(caught.value)
    with pytest.raises(VaultKeyMissing):
        Vault.from_settings(load_settings({"MARKET_VAULT_DIR": str(tmp_path)}))


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "11" * 31,  # 31 bytes of hex
        "zz" * 32,  # 64 characters, not hex
        base64.b64encode(bytes(16)).decode(),  # base64 of the wrong length
        base64.b64encode(bytes(32)).decode() + "!",
    ],
)
def test_malformed_key_names_the_variable_not_the_value(value: str) -> None:
    with pytest.raises(VaultError, match="MARKET_VAULT_KEY is malformed") as caught:
        parse_vault_key(value)
    assert value not in str(caught.value)


def test_key_forms_agree() -> None:
    key = os.urandom(32)
    forms = [
        key.hex(),
        "0x" + key.hex().upper(),
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode(),
        f"  {key.hex()}\n",
    ]
    assert {parse_vault_key(form) for form in forms} == {key}
    assert len(parse_vault_key(generate_vault_key())) == 32


def test_pending_file_is_renamed_to_the_market(vault: Vault) -> None:
    # given secrets written before the market's address is known
    secrets = MarketSecrets.create(samples(16))
    pending = vault.save_pending(secrets)
    assert pending.name == f"pending-{secrets.root.hex()}.vault"
    assert vault.load_pending(secrets.root).samples == secrets.samples
    # when the deployment is mined, the file takes the market's name
    final = vault.promote(secrets.root, MARKET)
    assert not pending.exists()
    assert final == vault.path_for(MARKET)
    assert vault.load(MARKET, expected_root=secrets.root).samples == secrets.samples
    # and a retried promotion is harmless, an unknown one an error
    assert vault.promote(secrets.root, MARKET) == final
    with pytest.raises(VaultError, match="no pending vault file"):
        vault.promote(bytes(32), OTHER_MARKET)
    # a market's file is never replaced by another test set's
    other = MarketSecrets.create(samples(16, seed=2))
    vault.save_pending(other)
    with pytest.raises(VaultIntegrityError, match="expected root"):
        vault.promote(other.root, MARKET)
    assert vault.load(MARKET).root == secrets.root


_FAILING_WRITE = """
import random, resource, signal, sys
from market.types import TestSample
from market.vault import MarketSecrets, Vault

directory, address, key = sys.argv[1:4]
rng = random.Random(7)
big = MarketSecrets.create(
    [TestSample(i, rng.randbytes(32), (i % 997, 1000 + i % 13), i % 2) for i in range(2000)]
)
# The file size limit makes the write fail half-way, like a full disk: EFBIG, not a signal.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    Vault(directory, bytes.fromhex(key)).save(address, big)
except OSError as exc:
    print(exc.errno)
    sys.exit(3)
"""


def _fail_a_write(vault: Vault) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _FAILING_WRITE, str(vault.directory), MARKET, KEY.hex()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 3, child.stderr
    assert int(child.stdout) == errno.EFBIG


def test_failed_write_keeps_the_old_file_and_leaves_no_partial_one(vault: Vault) -> None:
    # given a market whose secrets are saved
    old = MarketSecrets.create(samples(4))
    vault.save(MARKET, old)
    # when a rewrite fails half-way
    _fail_a_write(vault)
    # then the old file is intact and nothing else is in the directory
    assert [p.name for p in vault.directory.iterdir()] == [f"{MARKET.lower()}.vault"]
    assert vault.load(MARKET).samples == old.samples


def test_failed_first_write_leaves_no_file(vault: Vault) -> None:
    vault.directory.mkdir()
    _fail_a_write(vault)
    assert list(vault.directory.iterdir()) == []
    assert not vault.exists(MARKET)
