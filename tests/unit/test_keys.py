"""
`.NodeKey`: node IDs made from keys, and keys kept in files.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from twisted_mesh._ids import is_node_id
from twisted_mesh.keys import NodeKey, node_id_of, verify


def test_a_key_makes_an_id_as_long_as_a_random_one() -> None:
    key = NodeKey.generate()
    assert is_node_id(key.node_id) and 64 <= len(key.node_id) <= 66
    assert key.node_id == node_id_of(key.public_key)
    assert len(key.public_key) == 32
    assert NodeKey.generate().node_id != key.node_id


def test_a_key_round_trips_through_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    key, path = NodeKey.generate(), tmp_path / "node.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = NodeKey.load(path)
    assert again.node_id == key.node_id
    signature = again.sign(b"data")
    assert verify(key.public_key, signature, b"data")
    assert not verify(key.public_key, signature, b"other data")


def test_a_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    NodeKey.generate().save(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        NodeKey.generate().save(path)
    assert path.read_bytes() == before


def test_load_or_create_makes_the_key_once(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    key, made = NodeKey.load_or_create(path)
    assert made and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, made_again = NodeKey.load_or_create(path)
    assert not made_again and again.node_id == key.node_id


def test_a_file_that_is_not_a_key_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match="cert.pem holds no unencrypted PEM private key"):
        NodeKey.load(path)


def test_a_key_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rsa.pem"
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(rsa.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(ValueError, match="not an Ed25519 key"):
        NodeKey.load(path)


def test_verify_refuses_what_is_not_a_key_or_a_signature() -> None:
    key = NodeKey.generate()
    signature = key.sign(b"data")
    assert not verify(key.public_key[:31], signature, b"data")
    assert not verify(key.public_key, signature[:63], b"data")
    assert not verify(b"\xff" * 32, signature, b"data")
