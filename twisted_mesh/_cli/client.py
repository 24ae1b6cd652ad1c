"""
The clients: each joins the mesh through one node, as a node of its own
that listens nowhere and dials nobody else, then sends, listens or asks the
node for its peers.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from twisted.internet import error
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.python.failure import Failure

from twisted_mesh import flags
from twisted_mesh._cli import render
from twisted_mesh._cli.options import parse_json_packet
from twisted_mesh.errors import MeshError, ProtocolMismatch
from twisted_mesh.message import Message
from twisted_mesh.service import MeshService

_T = TypeVar("_T")

#: How much of standard input ``send --stdin`` reads ahead of what it sent.
STDIN_READ_AHEAD = 1 << 20


class CommandFailed(Exception):
    """What stops a client: one line for the user (the exit status is 1)."""


def _reason(failure: BaseException, timeout: float) -> str:
    """Why a dial, or a wait, failed: a few words."""
    if isinstance(failure, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(failure, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(failure, error.DNSLookupError):
        return "no such host"
    if isinstance(failure, (error.ConnectionLost, error.ConnectionDone)):
        return "the node closed the connection"
    if isinstance(failure, MeshError):
        return str(failure)
    return str(failure) or type(failure).__name__


async def _within(d: Deferred[_T], options: dict[str, Any], reactor: Any, doing: str) -> _T:
    """Wait for ``d`` at most ``--timeout`` seconds; a failure is a `.CommandFailed` saying what was being done."""
    try:
        return await d.addTimeout(options["timeout"], reactor)
    except ProtocolMismatch as e:
        network = options["network"]
        signed = "signed, " if network.signed else ""
        ours = f"subnet {network.subnet!r}, {signed}transport {network.encryption}"
        raise CommandFailed(f"{doing}: the node is of another network than this one ({ours}): {e}") from None
    except Exception as e:
        reason = _reason(e, options["timeout"])
        if "certificate required" in reason and options["tls"] is None:
            reason += " (the node verifies its peers: give --tls-cert and --tls-ca)"
        raise CommandFailed(f"{doing}: {reason}") from None


class Client:
    """
    A client's node, joined to the mesh through the node of ``--options``.

    :ivar service: the client's node.
    :ivar peer_id: the ID of the node it joined through, once joined.
    """

    def __init__(self, options: dict[str, Any], reactor: Any) -> None:
        self.options = options
        self.reactor = reactor
        self.service = MeshService(
            options["network"], max_outgoing=0, key=options["key"], tls=options["tls"], reactor=reactor
        )
        self.peer_id = ""
        self.stopping = False

    async def join(self) -> None:
        """Start the node, and dial the node given; stop it when the process stops."""
        self.service.startService()

        def stop() -> Deferred[None] | None:
            self.stopping = True
            return self.service.stopService() if self.service.running else None

        self.reactor.addSystemEventTrigger("before", "shutdown", stop)
        endpoint = self.options["endpoint"]
        dialled = self.service.connect(self.options["peer"])
        self.peer_id = await _within(dialled, self.options, self.reactor, f"cannot join through {endpoint}")

    async def drained(self) -> None:
        """Wait until what was sent is written to the node."""
        await _within(self.service.drained(), self.options, self.reactor, "the node does not read what was sent")

    def send(self, packets: list[Any], what: str = "the message") -> None:
        """
        Send one message of ``packets``: a broadcast, or with ``--whisper`` a
        whisper to the node.
        """
        flag = flags.whisper if self.options.get("whisper") else flags.broadcast
        try:
            result = self.service.send(*packets, flag=flag, type=flag)
        except (TypeError, ValueError, MeshError) as e:
            raise CommandFailed(f"cannot send {what}: {e}") from None
        if not result:
            why = "; ".join(result.skipped.values()) or "the node closed the connection"
            raise CommandFailed(f"cannot send {what}: {why}")

    async def close(self) -> None:
        """Close the connection, once what was sent is written."""
        self.stopping = True
        await self.service.stopService()


async def send(options: dict[str, Any], reactor: Any) -> None:
    """``send``: one message of the PACKETs, or one for each line of standard input."""
    client = Client(options, reactor)
    await client.join()
    if options["stdin"]:
        number = 0
        async for line in read_lines(reactor):
            number += 1
            client.send(_line_packets(line, number, options["json"]), f"line {number}")
            await client.drained()
    else:
        client.send(options["packets"])
    await client.drained()
    await client.close()


def _line_packets(line: bytes, number: int, as_json: bool) -> list[Any]:
    """The packets of a line of ``send --stdin``: the line (a string), or a JSON list of packets."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandFailed(f"line {number} of standard input is not UTF-8") from None
    if not as_json:
        return [text]
    try:
        packets = parse_json_packet(text)
    except Exception as e:
        raise CommandFailed(f"line {number}: {e}") from None
    if not isinstance(packets, list):
        raise CommandFailed(f"line {number}: with --json, a line is a JSON list of packets")
    return packets


async def listen(options: dict[str, Any], reactor: Any) -> None:
    """``listen``: print each message as it arrives, until the process is stopped."""
    client = Client(options, reactor)
    lines: Callable[[Message], str] = (
        (lambda message: render.json_line(render.message_json(message))) if options["json"] else render.message_text
    )
    ended: Deferred[None] = Deferred()

    def show(message: Message, link: object) -> bool:
        try:
            sys.stdout.write(lines(message) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # (Read by a command that is done, as `head -1`: so is this one.)
            if not ended.called:
                ended.callback(None)
        return True

    def lost(_: object) -> None:
        if not client.stopping and not ended.called:
            ended.errback(CommandFailed(f"{options['endpoint']} closed the connection"))

    client.service.register_handler(show)
    client.service.on("disconnect", lost)
    await client.join()
    await ended
    await client.close()


async def peers(options: dict[str, Any], reactor: Any) -> None:
    """``peers``: ask the node for its peers, and print them."""
    client = Client(options, reactor)
    await client.join()
    asked = client.service.peers_of(client.peer_id)
    told = await _within(asked, options, reactor, f"{options['endpoint']} did not tell of its peers")
    await client.close()
    if options["json"]:
        print(render.json_line(render.peers_json(told)))
    else:
        print(render.peers_table(told))


class _Input(Protocol):
    """Standard input, read ahead up to `.STDIN_READ_AHEAD` bytes."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.ended = False
        self._waiting: Deferred[None] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        transport: Any = self.transport
        if len(self.buffer) >= STDIN_READ_AHEAD:
            transport.pauseProducing()
        self._wake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    def more(self) -> Deferred[None]:
        """A Deferred that fires once more is read, or the input ended."""
        transport: Any = self.transport
        transport.resumeProducing()
        self._waiting = Deferred()
        return self._waiting


async def read_lines(reactor: Any) -> AsyncIterator[bytes]:
    """The lines of standard input, without their line ends (``\\n`` or ``\\r\\n``)."""
    source = _Input()
    StandardIO(source, reactor=reactor)
    while True:
        end = source.buffer.find(b"\n")
        if end >= 0:
            line = bytes(source.buffer[:end])
            del source.buffer[: end + 1]
            yield line.removesuffix(b"\r")
        elif not source.ended:
            await source.more()
        elif source.buffer:
            line = bytes(source.buffer)
            source.buffer.clear()
            yield line.removesuffix(b"\r")
        else:
            return
