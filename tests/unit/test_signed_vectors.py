"""
The browser client's vectors of signed networks (``js/test/signed-vectors.json``,
made by ``js/testing/make-signed-vectors.py`` from the wire's description)
hold for twisted_mesh too, byte for byte: IDs, a proof, and signed messages,
so that the browser and the Python nodes keep speaking the same wire.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from twisted_mesh import Network
from twisted_mesh._frames import WireMessage
from twisted_mesh._link.handshake import ProofTerms, proof
from twisted_mesh._signing import Signer, Verifier
from twisted_mesh.keys import NodeKey

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "js" / "test" / "signed-vectors.json").read_text())
KEY = NodeKey(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["seed"])))


def packets(value: Any) -> Any:
    """A vector's payload as msgpack reads it: ``{"bin": hex}`` as bytes."""
    if isinstance(value, list):
        return [packets(item) for item in value]
    if isinstance(value, dict):
        return bytes.fromhex(value["bin"]) if "bin" in value else {k: packets(v) for k, v in value.items()}
    return value


def test_ids_and_proof() -> None:
    assert KEY.public_key.hex() == VECTORS["public_key"]
    assert KEY.node_id == VECTORS["node_id"]
    for vector in VECTORS["protocol_ids"]:
        assert Network(vector["subnet"], vector["encryption"], vector["signed"]).id == vector["id"]
    vector = VECTORS["proof"]
    terms = ProofTerms(
        vector["protocol_id"],
        signer_dialled=vector["role"] == "dialled",
        signer_id=vector["signer_id"],
        checker_id=vector["checker_id"],
        signer_address=tuple(vector["signer_address"]),
        signer_nonce=bytes.fromhex(vector["own_nonce"]),
        checker_nonce=bytes.fromhex(vector["peer_nonce"]),
        binding=b"",
    )
    assert terms.signed().hex() == vector["signed_data"]
    assert proof(KEY, terms).hex() == vector["signature"]


@pytest.mark.parametrize("vector", VECTORS["messages"], ids=lambda vector: vector["what"])
def test_signed_messages(vector: dict[str, Any]) -> None:
    payload = tuple(packets(vector["payload"]))
    frame = bytes.fromhex(vector["frame"])
    read = WireMessage.from_body(frame[4:], ())
    assert Verifier(vector["subnet"]).check(read) is None
    assert read.sender == KEY.node_id and tuple(read.payload) == payload
    made = Signer(KEY, vector["subnet"]).create(vector["msg_type"], vector["time"], payload)
    assert made.frame(read.sender_is_bin, None) == frame
