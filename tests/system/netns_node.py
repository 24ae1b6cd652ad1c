"""
A mesh node in a process of its own, driven through its standard streams:
the partition tests run it inside network namespaces.

    python netns_node.py --listen tcp:0:interface=10.231.0.1 \\
        --connect tcp:host=10.231.0.2:port=4444 [--connect ...]

It writes one JSON object a line to stdout:

- ``{"event": "listening", "id": ..., "host": ..., "port": ...}`` once up;
- ``{"event": "connect"}`` / ``{"event": "disconnect"}`` when it gets its first
  peer or loses its last one;
- ``{"event": "message", "sender": ..., "packets": [...]}`` for each message;
- ``{"event": "status", "tag": ..., "status": {...}}``, the node's ``/status``
  document, when asked;
- ``{"event": "sent", "tag": ..., "queued": [...]}`` after a broadcast;

each with ``"t"``, the time (``time.time()``) it happened.  It reads commands,
one JSON object a line, from stdin:

- ``{"cmd": "send", "tag": ..., "packets": [...]}``: broadcast the packets;
- ``{"cmd": "status", "tag": ...}``: write the status.

End of input, SIGTERM or SIGINT stops it.  The log goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from twisted.internet import stdio
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols.basic import LineReceiver

from twisted_mesh import MeshService, Message, Network


def emit(event: str, **fields: Any) -> None:
    """Write one event line to stdout."""
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


class Commands(LineReceiver):
    """Reads commands from stdin."""

    delimiter = b"\n"

    def __init__(self, node: MeshService, reactor: Any) -> None:
        self.node = node
        self.reactor = reactor

    def lineReceived(self, line: bytes) -> None:
        command = json.loads(line)
        tag = command.get("tag")
        if command["cmd"] == "send":
            result = self.node.send(*command["packets"])
            emit("sent", tag=tag, queued=result.queued)
        elif command["cmd"] == "status":
            emit("status", tag=tag, status=self.node.status())

    def connectionLost(self, reason: object = None) -> None:
        if self.reactor.running:
            self.reactor.stop()


def main(argv: list[str]) -> None:
    """Run a node until stdin closes or a signal comes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, help="an endpoint string to listen on")
    parser.add_argument("--connect", action="append", default=[], help="an endpoint string to dial (repeatable)")
    parser.add_argument("--max-outgoing", type=int, default=4)
    args = parser.parse_args(argv)

    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    node = MeshService(
        Network("mesh", "Plaintext"), listen=[args.listen], connect=args.connect, max_outgoing=args.max_outgoing
    )

    def on_message(message: Message, link: object) -> bool:
        emit("message", sender=message.sender, packets=list(message.packets))
        return True

    node.register_handler(on_message)
    node.on("connect", lambda _: emit("connect"))
    node.on("disconnect", lambda _: emit("disconnect"))

    def listening(ports: object) -> None:
        host, port = node.out_addr
        emit("listening", id=node.id, host=host, port=port)

    def failed(failure: Any) -> None:
        emit("failed", error=failure.getErrorMessage())
        reactor.stop()

    node.listening.addCallbacks(listening, failed)
    stdio.StandardIO(Commands(node, reactor))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: reactor.callFromThread(reactor.stop))
    reactor.callWhenRunning(node.startService)
    reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main(sys.argv[1:])
