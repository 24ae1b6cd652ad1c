"""
`.Replies`, through `.MeshNode` with fake links and a fake clock: replies
to peers and to nodes that are not peers, requests and responses.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.python.failure import Failure

from tests.support import MESH
from tests.unit.node_support import START, FakeLink, add_link, again, arriving, broadcast, capture, make_node
from twisted_mesh import flags
from twisted_mesh._core.link import Address
from twisted_mesh._core.node import MeshNode
from twisted_mesh._core.seen import MESSAGE_LIFETIME
from twisted_mesh._frames import WireMessage
from twisted_mesh._ids import new_node_id
from twisted_mesh.errors import MeshClosed
from twisted_mesh.limits import Limits
from twisted_mesh.message import Message, SendResult

# -- replies -------------------------------------------------------------------


def test_reply_to_a_connected_sender() -> None:
    """A reply to a peer is a [whisper, *packets] whisper on its link (which writes it in the peer's form)."""
    node, _, _ = make_node()
    a = add_link(node, ids_as_bin=False)
    b = add_link(node)
    assert a.peer_id is not None
    node.message_received(a, broadcast(a.peer_id, "ping", as_bin=False))
    b.take()
    msg = node.recv()
    assert isinstance(msg, Message)
    msg.reply("pong", 1)
    (sent,) = a.take()
    assert sent.msg_type == flags.whisper
    assert sent.sender == node.id
    assert sent.payload == (flags.whisper, "pong", 1)
    assert b.take() == []


def unreachable_reply(node: MeshNode, links: list[FakeLink], target: str) -> str:
    """Reply to a broadcast of ``target``, a node not connected: return the request ID."""
    node.message_received(links[0], broadcast(target, "ping"))
    for link in links:
        link.take()
    msg = node.recv()
    assert isinstance(msg, Message)
    msg.reply("pong")
    requests = [link.take() for link in links]
    assert all(len(sent) == 1 for sent in requests)
    request = requests[0][0]
    assert all(sent[0] is request for sent in requests)
    assert request.msg_type == flags.broadcast and request.sender == node.id
    assert request.payload[0] == flags.request and request.payload[2] == target.encode()
    request_id = request.payload[1]
    assert isinstance(request_id, str) and request_id
    # It is in the seen-set: coming back, it is dropped.
    node.message_received(links[1], again(request, True))
    assert all(link.take() == [] for link in links)
    return request_id


def response(sender: str, request_id: Any, address: Address, target: str, *, time: int = START) -> WireMessage:
    """A response broadcast naming ``target``'s address."""
    return arriving(flags.broadcast, sender, (flags.response, request_id, [list(address), target.encode()]), time=time)


def test_reply_through_a_request_and_response() -> None:
    """Unknown sender: request broadcast, response, dial, then the reply on the new link."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)

    address = ("10.6.0.1", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert dialer.calls == [address]
    assert len(links[0].take()) == 1  # the response is relayed on

    new = FakeLink(target, addr=address, outgoing=True)
    node.link_ready(new)
    peers, sent = new.take()
    assert peers.payload[0] == flags.peers
    assert sent.msg_type == flags.whisper and sent.payload == (flags.whisper, "pong")
    dialer.pending[address].callback(target)
    assert new.take() == []
    assert all(link.take() == [] for link in links)

    # The request is answered once only: a second response is just relayed.
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert [m.payload[0] for m in new.take()] == [flags.response]
    assert dialer.calls == [address]


def test_two_replies_to_one_unconnected_sender_both_arrive() -> None:
    """A second reply whose response comes while the first one's dial is under way goes on the same link."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    first = unreachable_reply(node, links, target)
    node.reply(target, ("pong",))
    (request,) = links[0].take()
    second = request.payload[1]
    assert request.payload[0] == flags.request and second != first
    address = ("10.6.0.9", 6000)
    for request_id in (first, second):
        node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert dialer.calls == [address]
    new = FakeLink(target, addr=address, outgoing=True)
    node.link_ready(new)
    dialer.pending[address].callback(target)
    replies = [m.payload for m in new.take() if m.payload[0] == flags.whisper]
    assert replies == [(flags.whisper, "pong"), (flags.whisper, "pong")]


def test_a_reply_expires_with_its_request() -> None:
    """A response that comes after the message lifetime dials no one and sends nothing."""
    node, clock, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    clock.advance(MESSAGE_LIFETIME + 1)
    address = ("10.6.0.7", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target, time=int(clock.seconds())))
    assert dialer.calls == []
    assert not node.replies.requests and not node.replies.waiting


def test_a_reply_waiting_for_a_link_expires() -> None:
    """A reply whose dial never ends is not sent on a link that comes after the lifetime."""
    node, clock, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    address = ("10.6.0.8", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert dialer.calls == [address]
    clock.advance(MESSAGE_LIFETIME + 1)
    new = FakeLink(target, addr=address, outgoing=True)
    node.link_ready(new)
    dialer.pending[address].callback(target)
    assert [m.payload[0] for m in new.take()] == [flags.peers]


def test_reply_dial_reaching_another_node_drops_the_reply() -> None:
    """The dialled address turning out to be another node: no reply is sent."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    address = ("10.6.0.2", 6000)
    node.message_received(links[0], response(new_node_id(MESH), request_id, address, target))
    impostor = add_link(node, outgoing=True)
    assert impostor.peer_id is not None
    dialer.pending[address].callback(impostor.peer_id)
    assert impostor.take() == []


def test_reply_dial_failing_sends_nothing() -> None:
    """A failed dial for a reply is logged and nothing is sent."""
    node, _, dialer = make_node()
    events = capture(node)
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    address = ("10.6.0.3", 6000)
    node.message_received(links[0], response(new_node_id(MESH), request_id, address, target))
    links[1].take()
    dialer.pending[address].errback(ConnectionError("refused"))
    assert all(link.take() == [] for link in links)
    assert any("could not reach" in event.get("log_format", "") for event in events)


def test_reply_when_the_target_connected_meanwhile() -> None:
    """The target connected before the response: the reply goes straight to it."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    new = add_link(node, peer_id=target)
    node.message_received(links[0], response(new_node_id(MESH), request_id, ("10.6.0.4", 1), target))
    assert dialer.calls == []
    sent = [m for m in new.take() if m.msg_type == flags.whisper]
    assert [m.payload for m in sent] == [(flags.whisper, "pong")]


def reply_to(node: MeshNode, links: list[FakeLink], target: str) -> tuple[SendResult, str]:
    """Reply to a broadcast of ``target``, a node not connected: the reply's result and its request ID."""
    node.message_received(links[0], broadcast(target, "ping"))
    msg = node.recv()
    assert isinstance(msg, Message)
    for link in links:
        link.take()
    result = msg.reply("pong")
    (request,) = links[0].take()
    return result, request.payload[1]


def settled(result: SendResult) -> list[SendResult]:
    """What the result's settled() fired with so far."""
    fired: list[SendResult] = []
    result.settled().addCallback(fired.append)
    return fired


def test_a_reply_to_a_peer_says_where_it_went() -> None:
    """A reply to a peer is queued, or skipped with the link's reason; either way it is settled at once."""
    node, _, _ = make_node()
    peer = add_link(node)
    assert peer.peer_id is not None
    node.message_received(peer, broadcast(peer.peer_id, "ping"))
    msg = node.recv()
    assert isinstance(msg, Message)
    result = msg.reply("pong")
    assert result.queued == [peer.peer_id] and result and settled(result) == [result]
    peer.refusal = "the send buffer is full"
    refused = msg.reply("pong again")
    assert refused.skipped == {peer.peer_id: "the send buffer is full"} and not refused


def test_a_reply_with_no_peer_to_ask_is_skipped() -> None:
    """With no peer at all, a reply to a node not connected is skipped at once, and says why."""
    node, _, _ = make_node()
    target = new_node_id(MESH)
    result = node.reply(target, ("pong",))
    assert not result.pending and "nor to any node to ask" in result.skipped[target]


def test_a_reply_that_goes_once_its_target_is_reached_settles_queued() -> None:
    """A pending reply, sent on the link dialled for it: its result moves the target to queued."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, request_id = reply_to(node, links, target)
    assert result.pending == (target,) and not result
    fired = settled(result)
    address = ("10.6.1.1", 6000)
    node.message_received(links[1], response(new_node_id(MESH), request_id, address, target))
    assert fired == []
    node.link_ready(FakeLink(target, addr=address, outgoing=True))
    assert fired == [result] and result.queued == [target] and not result.pending


def test_a_reply_no_node_answers_for_is_given_up_after_the_lifetime() -> None:
    """No response within the message lifetime: the result settles with the target skipped, and the log says so."""
    node, clock, _ = make_node()
    events = capture(node)
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, _ = reply_to(node, links, target)
    fired = settled(result)
    clock.advance(MESSAGE_LIFETIME - 1)
    assert fired == []
    clock.advance(1)
    assert fired == [result] and "no node gave the address" in result.skipped[target]
    assert not node.replies.requests and not clock.getDelayedCalls()
    assert any("was given up" in event.get("log_format", "") for event in events)


def test_a_reply_whose_dial_fails_is_given_up_with_the_reason() -> None:
    """The dial for a reply fails: its result settles with the target skipped, naming the address."""
    node, clock, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, request_id = reply_to(node, links, target)
    fired = settled(result)
    node.message_received(links[0], response(new_node_id(MESH), request_id, ("10.6.1.2", 6000), target))
    dialer.pending["10.6.1.2", 6000].errback(ConnectionError("refused"))
    assert fired == [result] and "could not connect to 10.6.1.2:6000" in result.skipped[target]
    clock.advance(0)  # the turn ends
    assert not clock.getDelayedCalls()


def test_the_oldest_pending_reply_past_the_limit_is_given_up() -> None:
    """Past max_pending_replies, the oldest waiting reply is given up, and its result says so."""
    node, _, _ = make_node(limits=Limits(max_pending_replies=1))
    links = [add_link(node), add_link(node)]
    first, _ = reply_to(node, links, new_node_id(MESH))
    second, _ = reply_to(node, links, new_node_id(MESH))
    assert not first.pending and "max_pending_replies (1)" in next(iter(first.skipped.values()))
    assert second.pending


def test_closing_the_node_gives_up_waiting_replies_and_receivers() -> None:
    """Closing: waiting replies settle as skipped, next_message() fails, send() and reply() raise."""
    node, clock, _ = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    result, _ = reply_to(node, links, target)
    waiting = node.next_message()
    failures: list[Failure] = []
    waiting.addErrback(failures.append)
    node.close("the node is closed")
    clock.advance(0)  # the turn ends
    assert "the node closed" in result.skipped[target] and not clock.getDelayedCalls()
    assert len(failures) == 1 and failures[0].check(MeshClosed)
    with pytest.raises(MeshClosed):
        node.send(("x",))
    with pytest.raises(MeshClosed):
        node.reply(target, ("x",))
    node.open()
    assert node.send(("back",))


def test_response_for_an_unknown_request_does_nothing() -> None:
    """A response to no request of ours: relayed, but no dial and no reply."""
    node, _, dialer = make_node()
    a, b = add_link(node), add_link(node)
    target = new_node_id(MESH)
    node.message_received(a, response(new_node_id(MESH), "NoSuchRequest", ("10.6.0.5", 1), target))
    assert dialer.calls == []
    assert [m.payload[0] for m in b.take()] == [flags.response]
    assert a.take() == [] and not node.queue


def test_response_naming_another_target_is_ignored() -> None:
    """A response whose target is not the one asked for: no dial."""
    node, _, dialer = make_node()
    links = [add_link(node), add_link(node)]
    target = new_node_id(MESH)
    request_id = unreachable_reply(node, links, target)
    node.message_received(links[0], response(new_node_id(MESH), request_id, ("10.6.0.6", 1), new_node_id(MESH)))
    assert dialer.calls == []


def test_request_is_answered_by_a_node_with_the_target() -> None:
    """A node connected to the target answers a request with the target's address."""
    node, _, _ = make_node()
    requester_side = add_link(node)
    target_link = add_link(node)
    assert target_link.peer_id is not None and target_link.peer_addr is not None
    requester = new_node_id(MESH)
    request = arriving(flags.broadcast, requester, (flags.request, "Req1", target_link.peer_id.encode()))
    node.message_received(requester_side, request)
    to_requester = requester_side.take()
    to_target = target_link.take()
    assert to_target[0] is request  # relayed on
    (answer,) = to_requester
    assert to_target[1:] == [answer]
    assert answer.msg_type == flags.broadcast and answer.sender == node.id
    assert answer.payload == (flags.response, "Req1", [list(target_link.peer_addr), target_link.peer_id.encode()])
    assert not node.queue
    # The answer is recorded: it is dropped when it comes back.
    node.message_received(target_link, again(answer, False))
    assert requester_side.take() == []


def test_request_names_only_an_address_of_the_askers_transport() -> None:
    """A bridge does not answer with a TCP address a WebSocket peer cannot dial."""
    node, _, _ = make_node()
    asker = add_link(node)
    asker.encryption = "ws"
    target = add_link(node)
    assert target.peer_id is not None
    request = arriving(flags.broadcast, new_node_id(MESH), (flags.request, "R", target.peer_id.encode()))
    node.message_received(asker, request)
    assert asker.take() == []
    assert [m.payload[0] for m in target.take()] == [flags.request]


def test_request_for_an_unknown_target_is_not_answered() -> None:
    """A node without the target relays the request and answers nothing."""
    node, _, _ = make_node()
    a, b = add_link(node), add_link(node)
    node.message_received(a, arriving(flags.broadcast, new_node_id(MESH), (flags.request, "R", b"Unknown")))
    assert [m.payload[0] for m in b.take()] == [flags.request]
    assert a.take() == []
