"""
Hostile handshakes against a live node (see `tests.integration.hostile`):
messages before the handshake, handshakes of another network, of the node's
own ID, malformed in each field, and a second handshake that changes things.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.hostile import (
    BAD_HANDSHAKE,
    HANDSHAKE_LOG,
    Arena,
    Case,
    Send,
    catalogue_test,
    handshake_payload,
    hs,
    matches,
    message,
)
from tests.support import MESH, RawPeer
from twisted_mesh import Network, flags
from twisted_mesh._ids import new_node_id


def _handshake_as_the_node() -> Send:
    async def send(peer: RawPeer, arena: Arena) -> None:
        peer.handshake(node_id=arena.node.id)

    return send


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    # -- instead of a handshake --
    c["message-before-handshake"] = Case(
        message(flags.broadcast, flags.broadcast, "too early"),
        counters=BAD_HANDSHAKE,
        log=matches("before the handshake"),
        handshake=False,
    )
    c["whisper-before-handshake"] = Case(
        message(flags.whisper, flags.whisper, "too early"),
        counters=BAD_HANDSHAKE,
        log=matches("before the handshake"),
        handshake=False,
    )
    c["handshake-other-subnet"] = Case(
        handshake_payload(lambda p: hs(p, protocol=Network("other").id.encode())),
        counters={"handshake_failures.protocol_mismatch": 1},
        log=matches("protocol"),
        handshake=False,
    )
    c["handshake-other-transport"] = Case(
        handshake_payload(lambda p: hs(p, protocol=Network("mesh", "SSL").id)),
        counters={"handshake_failures.protocol_mismatch": 1},
        log=matches("protocol"),
        handshake=False,
    )
    c["handshake-as-broadcast"] = Case(
        message(flags.broadcast, flags.handshake, b"x", MESH.id.encode(), ["127.0.0.1", 1], []),
        counters=BAD_HANDSHAKE,
        log=matches("before the handshake"),
        handshake=False,
    )
    c["handshake-own-id"] = Case(
        _handshake_as_the_node(),
        counters={"handshake_failures.self": 1},
        log=matches("itself"),
        handshake=False,
    )
    bad_handshakes: dict[str, Callable[[RawPeer], list[Any]]] = {
        "only-flag": lambda p: [flags.handshake],
        "too-short": lambda p: hs(p, drop=True),
        "too-long": lambda p: hs(p, extra=[1]),
        "id-int": lambda p: hs(p, id=5),
        "id-empty": lambda p: hs(p, id=b""),
        "id-non-base58": lambda p: hs(p, id=b"0OIl0OIl"),
        "id-non-ascii": lambda p: hs(p, id="\u00e9\u00e9\u00e9"),
        "id-list": lambda p: hs(p, id=[p.id]),
        "protocol-int": lambda p: hs(p, protocol=7),
        "protocol-none": lambda p: hs(p, protocol=None),
        "address-str": lambda p: hs(p, address="127.0.0.1:1"),
        "address-short": lambda p: hs(p, address=["127.0.0.1"]),
        "address-map": lambda p: hs(p, address={"host": "127.0.0.1", "port": 1}),
        "port-str": lambda p: hs(p, address=["127.0.0.1", "1"]),
        "port-70000": lambda p: hs(p, address=["127.0.0.1", 70000]),
        "port-negative": lambda p: hs(p, address=["127.0.0.1", -1]),
        "port-float": lambda p: hs(p, address=["127.0.0.1", 1.0]),
        "host-int": lambda p: hs(p, address=[127, 1]),
        "host-empty": lambda p: hs(p, address=["", 1]),
        "codes-int": lambda p: hs(p, codes=flags.zlib),
        "codes-str": lambda p: hs(p, codes=["zlib"]),
        "codes-none": lambda p: hs(p, codes=None),
        "codes-float": lambda p: hs(p, codes=[19.0]),
        "codes-nested": lambda p: hs(p, codes=[[flags.zlib]]),
    }
    for name, build in bad_handshakes.items():
        c[f"handshake-{name}"] = Case(
            handshake_payload(build), counters=BAD_HANDSHAKE, log=HANDSHAKE_LOG, handshake=False
        )

    # -- after a good handshake --
    c["renegotiate-codes-str"] = Case(
        message(flags.renegotiate, flags.compression, "zlib"), log=matches("renegotiation")
    )
    c["second-handshake-other-id"] = Case(
        handshake_payload(lambda p: hs(p, id=new_node_id(MESH).encode())), counters={}, log=matches("changed its ID")
    )
    return c


CASES = _cases()


#: The node refuses each of the bad handshakes, and messages in their place and goes on, as `.hostile_input` says.
test_hostile_handshake = catalogue_test(CASES)
