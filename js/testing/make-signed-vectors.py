"""
Write js/test/signed-vectors.json: what a signed network's wire holds for a
fixed key, made from the description of its wire alone with `cryptography`,
msgpack and hashlib (not with twisted_mesh), so that the browser client is
checked against an implementation other than its own.
Ed25519 signatures are deterministic: the same key and data give the same
bytes.

    python js/testing/make-signed-vectors.py   # a Python with cryptography and msgpack
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

OUT = Path(__file__).resolve().parent.parent / "test" / "signed-vectors.json"
ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
PROOF_CONTEXT = b"twisted-mesh/0.7 handshake proof\x00"
MESSAGE_CONTEXT = b"twisted-mesh/0.7 message\x00"
PROOF = 0x12


def b58(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 58)
        digits = ALPHABET[digit] + digits
        if not number:
            return digits


def protocol_id(subnet: str, encryption: str, signed: bool) -> str:
    text = subnet + encryption + "0.7" + ("+signed" if signed else "")
    return b58(int.from_bytes(hashlib.sha256(text.encode()).digest(), "big"))


def node_id(public: bytes) -> str:
    return b58(int.from_bytes(hashlib.sha384(public).digest(), "big"))


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def signed_frame(
    key: Ed25519PrivateKey, subnet: str, fields: list[object], *, str_sender: bool = False
) -> dict[str, str]:
    """A signed message of ``fields`` ([msg_type, sender, time, *payload], sender as str)."""
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    msg_type, sender, time, *payload = fields
    serial = pack([msg_type, sender.encode(), time, *payload, public, bytes(64)])
    data = MESSAGE_CONTEXT + pack(subnet) + serial[:-64]
    signature = key.sign(data)
    serial = serial[:-64] + signature
    if str_sender:
        # As a node may write it to a peer that speaks str IDs: the signature is the same.
        serial = pack([msg_type, sender, time, *payload, public, signature])
    body = hashlib.sha256(serial).digest() + serial
    frame = len(body).to_bytes(4, "big") + body
    return {"signed_data": data.hex(), "signature": signature.hex(), "frame": frame.hex()}


def main() -> None:
    seed = bytes(range(1, 33))
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    me = node_id(public)
    peer_seed = bytes(range(101, 133))
    peer_key = Ed25519PrivateKey.from_private_bytes(peer_seed)
    peer = node_id(peer_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    subnet, encryption = "mesh", "ws"
    signed_id = protocol_id(subnet, encryption, True)
    own_nonce, peer_nonce = bytes([7]) * 32, bytes(range(32))
    time = 1_700_000_000
    # The proof of the node whose key this is, the dialler, to the peer (the
    # node dialled), whose handshake gave no address ([host, 0]).
    signer_address = ["198.51.100.7", 4444]
    terms = [signed_id, "dialler", me, peer, signer_address, own_nonce, peer_nonce, b""]
    proof_data = PROOF_CONTEXT + pack(terms)
    vectors = {
        "made_by": "js/testing/make-signed-vectors.py, with cryptography " + __import__("cryptography").__version__,
        "seed": seed.hex(),
        "public_key": public.hex(),
        "node_id": me,
        "peer": {"seed": peer_seed.hex(), "node_id": peer},
        "protocol_ids": [
            {
                "subnet": subnet,
                "encryption": encryption,
                "signed": signed,
                "id": protocol_id(subnet, encryption, signed),
            }
            for signed in (False, True)
        ]
        + [{"subnet": "chat", "encryption": "wss", "signed": True, "id": protocol_id("chat", "wss", True)}],
        "proof": {
            "protocol_id": signed_id,
            "role": "dialler",
            "signer_id": me,
            "checker_id": peer,
            "signer_address": signer_address,
            "own_nonce": own_nonce.hex(),
            "peer_nonce": peer_nonce.hex(),
            "signed_data": proof_data.hex(),
            "signature": key.sign(proof_data).hex(),
            "frame_payload": pack([PROOF, key.sign(proof_data)]).hex(),
        },
        "messages": [
            {
                "what": "a broadcast",
                "subnet": subnet,
                "msg_type": 0,
                "time": time,
                "payload": [0, "hello", {"bin": "0102ff"}],
                **signed_frame(key, subnet, [0, me, time, 0, "hello", b"\x01\x02\xff"]),
            },
            {
                "what": "the broadcast with its sender as str, as a node may relay it to a browser",
                "subnet": subnet,
                "msg_type": 0,
                "time": time,
                "payload": [0, "hello", {"bin": "0102ff"}],
                **signed_frame(key, subnet, [0, me, time, 0, "hello", b"\x01\x02\xff"], str_sender=True),
            },
            {
                "what": "a whisper",
                "subnet": subnet,
                "msg_type": 2,
                "time": time + 1,
                "payload": [2, "psst", [1, -2, 3.5, None, True], {"k": "v"}],
                **signed_frame(key, subnet, [2, me, time + 1, 2, "psst", [1, -2, 3.5, None, True], {"k": "v"}]),
            },
        ],
    }
    OUT.write_text(json.dumps(vectors, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
