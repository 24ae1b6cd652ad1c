"""Run one py2p (the reference Python implementation) mesh node under JSON-line control.

This is a child process of ``tests/reference``; it is not imported by the tests.

Protocol (one JSON object per line, UTF-8):

* parent -> child on stdin: ``{"seq": n, "cmd": "connect", "host": h, "port": p}``,
  ``{"seq": n, "cmd": "send", "packets": [...]}``,
  ``{"seq": n, "cmd": "reply", "to": hex-or-null, "packets": [...]}``,
  ``{"seq": n, "cmd": "peers"}`` (the routing table's keys as they are, bytes or str),
  ``{"seq": n, "cmd": "stop"}``.
* child -> parent on stdout: ``{"event": "ready", "port": p, "id": str}`` once,
  ``{"event": "message", "packets": [...], "sender": s, "id": hex}`` for every user
  message, ``{"event": "result", "seq": n, "value": v}`` or
  ``{"event": "error", "seq": n, "error": str}`` for every command.

Packets are JSON with two tagged objects: ``{"hex": "..."}`` is a byte string and
``{"map": [[key, value], ...]}`` a msgpack map; everything else is plain JSON. Node IDs
(``sender``, the ``peers`` keys) come in the same form, so bytes and str stay apart.
The child exits after ``stop`` or when its stdin closes.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, BinaryIO

# py2p prints its own diagnostics with print(): keep fd 1 for the JSON lines only.
_OUT: BinaryIO = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)
sys.stdout = sys.stderr

from packets_json import from_json, to_json  # noqa: E402 - beside this script
from ssl_compat import install  # noqa: E402 - beside this script

install()  # before py2p: its SSL mode needs ssl.wrap_socket

from py2p import flags, mesh  # noqa: E402 - after the stdout swap above
from py2p.base import Protocol  # noqa: E402

POLL_INTERVAL = 0.005
KEEP_MESSAGES = 1000

_write_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    """Write one JSON line to the parent."""
    data = json.dumps(obj).encode("utf-8") + b"\n"
    with _write_lock:
        _OUT.write(data)


def ident(value: Any) -> str:
    """A node ID as text, whichever form py2p holds it in."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def free_port(host: str) -> int:
    """A port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def make_socket(host: str, port: int, prot: Protocol) -> mesh.MeshSocket:
    """Start a MeshSocket on ``port``, or on a free port when ``port`` is 0."""
    if port:
        return mesh.MeshSocket(host, port, prot)
    for _ in range(50):
        try:
            return mesh.MeshSocket(host, free_port(host), prot)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free port found")


class Node:
    """One py2p MeshSocket and the bookkeeping the parent needs."""

    def __init__(self, sock: mesh.MeshSocket) -> None:
        self.sock = sock
        self.messages: OrderedDict[str, Any] = OrderedDict()
        self.last: Any = None
        self.lock = threading.Lock()
        self.running = True
        self.poller = threading.Thread(target=self.poll, name="recv-poller", daemon=True)

    def poll(self) -> None:
        """Push every received message to the parent, in order."""
        while self.running:
            msg = self.sock.recv()
            if msg is None:
                time.sleep(POLL_INTERVAL)
                continue
            mid = bytes(msg.id).hex()
            with self.lock:
                self.messages[mid] = msg
                self.last = msg
                while len(self.messages) > KEEP_MESSAGES:
                    self.messages.popitem(last=False)
            emit(
                {
                    "event": "message",
                    "packets": to_json(list(msg.packets)),
                    "sender": to_json(msg.sender),
                    "id": mid,
                }
            )

    def handle(self, cmd: dict[str, Any]) -> Any:
        """Run one command and return its JSON result."""
        name = cmd["cmd"]
        if name == "connect":
            return self.sock.connect(cmd["host"], int(cmd["port"])) is not False
        if name == "send":
            if cmd.get("whisper"):
                whisper = flags.whisper
                self.sock.send(*from_json(cmd["packets"]), flag=whisper, type=whisper)
            else:
                self.sock.send(*from_json(cmd["packets"]))
            return None
        if name == "reply":
            with self.lock:
                msg = self.messages.get(cmd["to"]) if cmd.get("to") else self.last
            if msg is None:
                raise LookupError(f"no received message to reply to (to={cmd.get('to')!r})")
            msg.reply(*from_json(cmd["packets"]))
            return None
        if name == "peers":
            return to_json(list(self.sock.routing_table))
        if name == "stop":
            self.close()
            return None
        raise ValueError(f"unknown command {name!r}")

    def close(self) -> None:
        """Stop polling and close the MeshSocket (once)."""
        if not self.running:
            return
        self.running = False
        try:
            self.sock.close()
        except Exception:  # noqa: BLE001 - report it, then exit all the same
            traceback.print_exc()


def main() -> None:
    """Parse arguments, start the node and serve commands until stop or EOF."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--subnet", default="mesh")
    parser.add_argument("--encryption", default="Plaintext", choices=("Plaintext", "SSL"))
    args = parser.parse_args()

    node = Node(make_socket(args.host, args.port, Protocol(args.subnet, args.encryption)))
    node.poller.start()
    emit({"event": "ready", "port": node.sock.out_addr[1], "id": ident(node.sock.id)})
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            emit({"event": "result", "seq": cmd.get("seq"), "value": node.handle(cmd)})
        except Exception as e:  # noqa: BLE001 - any failure goes back to the parent
            traceback.print_exc()
            emit(
                {
                    "event": "error",
                    "seq": cmd.get("seq"),
                    "error": f"{type(e).__name__}: {e}",
                }
            )
        if cmd.get("cmd") == "stop":
            break
    node.close()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
