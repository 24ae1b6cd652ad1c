"""
Hostile messages against a live node (see `tests.integration.hostile`):
well-formed frames whose message the node must drop: stamped too old or too
far ahead, a sender that is no node ID, and malformed peers, requests and
responses (which must not make the node dial anything).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, task

from tests.integration.hostile import (
    MAX_OUTGOING,
    PEERS_LOG,
    Arena,
    Case,
    Send,
    catalogue_test,
    matches,
    message,
    now,
)
from tests.support import MESH, RawPeer, wait_for
from twisted_mesh import flags
from twisted_mesh._ids import b58encode_int, new_node_id


def valid_entry(arena: Arena, index: int = 0) -> list[Any]:
    """A well-formed peers entry naming one of the arena's sinks."""
    host, port = arena.sink_addresses()[index % len(arena.sink_ports)]
    return [[host, port], b58encode_int(10_000 + index).encode()]


def peers(build: Callable[[Arena], list[Any]]) -> Send:
    """A case that whispers a peers payload built from the arena."""

    async def send(peer: RawPeer, arena: Arena) -> None:
        peer.send(flags.whisper, flags.peers, *build(arena))

    return send


async def nothing_dialled(arena: Arena, peer: RawPeer) -> None:
    """The node dialled none of the sinks."""
    assert not arena.node._node.exchange.dialing, "the node is dialling"
    await task.deferLater(reactor, 0.3)
    assert arena.sunk == [], "the node dialled an address of a malformed message"


async def dials_bounded(arena: Arena, peer: RawPeer) -> None:
    """The node dialled at most max_outgoing of the sinks, and at least one."""
    await wait_for(lambda: len(arena.sunk) >= 1, 10, "a dial")
    for _ in range(10):
        assert arena.node._node.outgoing_count() <= MAX_OUTGOING
        await task.deferLater(reactor, 0.03)
    assert 1 <= len(arena.sunk) <= MAX_OUTGOING, f"{len(arena.sunk)} dials from one peers message"


TARGET = new_node_id(MESH)


def response(build: Callable[[bytes | str, Arena], list[Any]]) -> Send:
    """
    A case that makes the node ask the mesh for TARGET's address (a reply
    to a node it is not connected to), then answers with a response built
    from the request ID.
    """

    async def send(peer: RawPeer, arena: Arena) -> None:
        arena.node._node.reply(TARGET, ("hello",))
        await wait_for(lambda: peer.requests(), 10, "the node's request")
        request_id = peer.requests()[-1].payload[1]
        peer.send(flags.broadcast, flags.response, *build(request_id, arena))

    return send


async def request_still_pending(arena: Arena, peer: RawPeer) -> None:
    """The request was not answered: nothing dialled, still waiting."""
    await nothing_dialled(arena, peer)
    assert any(pending.target == TARGET for pending in arena.node._node.replies.requests.values())


def _cases() -> dict[str, Case]:
    c: dict[str, Case] = {}
    # -- after a good handshake: messages that are dropped --
    c["broadcast-an-hour-old"] = Case(
        message(flags.broadcast, flags.broadcast, "old", stamp=now() - 3600),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("older than"),
    )
    c["broadcast-time-zero"] = Case(
        message(flags.broadcast, flags.broadcast, "old", stamp=0),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("older than"),
    )
    c["broadcast-time-most-negative"] = Case(
        message(flags.broadcast, flags.broadcast, "old", stamp=-(2**63)),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("older than"),
    )
    c["broadcast-an-hour-ahead"] = Case(
        message(flags.broadcast, flags.broadcast, "ahead", stamp=now() + 3600),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("stamped ahead"),
    )
    c["broadcast-time-most-positive"] = Case(
        message(flags.broadcast, flags.broadcast, "ahead", stamp=2**64 - 1),
        closed=False,
        counters={"dropped.expired": 1},
        log=matches("stamped ahead"),
    )
    c["broadcast-sender-longer-than-an-id"] = Case(
        message(flags.broadcast, flags.broadcast, "who am I", sender="2" * 200), closed=None, counted=True
    )
    c["broadcast-non-base58-sender"] = Case(
        message(flags.broadcast, flags.broadcast, "who am I", sender="0OIl-not-base58!"), closed=None, counted=True
    )
    c["whisper-non-base58-sender"] = Case(
        message(flags.whisper, flags.whisper, "who am I", sender="0OIl-not-base58!"), closed=None, counted=True
    )
    c["peers-10000-entries"] = Case(
        peers(lambda a: [[valid_entry(a, i) for i in range(10_000)]]),
        closed=False,
        counters={"limit_hits.max_peers_per_message": 1},
        log=matches("max_peers_per_message"),
        check=dials_bounded,
    )
    bad_peers: dict[str, Callable[[Arena], list[Any]]] = {
        "no-list": lambda a: [],
        "str": lambda a: ["127.0.0.1:1"],
        "map": lambda a: [{"127.0.0.1": 1}],
        "extra-field": lambda a: [[valid_entry(a)], "extra"],
        "entry-str": lambda a: [[valid_entry(a, 0), valid_entry(a, 1), "127.0.0.1:1"]],
        "entry-short": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 1]]]],
        "entry-long": lambda a: [[valid_entry(a, 0), [*valid_entry(a, 1), "x"]]],
        "port-str": lambda a: [[valid_entry(a, 0), [["127.0.0.1", "1"], b"abc"]]],
        "port-70000": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 70000], b"abc"]]],
        "host-int": lambda a: [[valid_entry(a, 0), [[127, 1], b"abc"]]],
        "id-int": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 1], 7]]],
        "id-empty": lambda a: [[valid_entry(a, 0), [["127.0.0.1", 1], b""]]],
    }
    for name, build in bad_peers.items():
        c[f"peers-{name}"] = Case(peers(build), closed=False, counted=True, log=PEERS_LOG, check=nothing_dialled)
    bad_requests: dict[str, Send] = {
        "whisper-alone": message(flags.whisper, flags.request),
        "whisper-int": message(flags.whisper, flags.request, 5),
        "whisper-list": message(flags.whisper, flags.request, [b"*"]),
        "broadcast-target-int": message(flags.broadcast, flags.request, b"rid", 12345),
        "broadcast-id-map": message(flags.broadcast, flags.request, {"a": 1}, [1]),
    }
    for name, send in bad_requests.items():
        c[f"request-{name}"] = Case(send, closed=False, counted=True, log=matches("request"))
    bad_responses: dict[str, Callable[[bytes | str, Arena], list[Any]]] = {
        "no-info": lambda rid, a: [rid],
        "info-str": lambda rid, a: [rid, "127.0.0.1:1"],
        "port-str": lambda rid, a: [rid, [["127.0.0.1", "1"], TARGET.encode()]],
        "target-int": lambda rid, a: [rid, [list(a.sink_addresses()[0]), 7]],
        "info-long": lambda rid, a: [rid, [list(a.sink_addresses()[0]), TARGET.encode(), b"x"]],
    }
    for name, build in bad_responses.items():
        c[f"response-{name}"] = Case(
            response(build), closed=False, counted=True, log=matches("response"), check=request_still_pending
        )
    return c
    return c


CASES = _cases()


#: The node refuses each of the messages the node must drop and goes on, as `.hostile_input` says.
test_hostile_message = catalogue_test(CASES)
