"""Run the reference mesh nodes, py2p and js2p, as child processes for interop tests.

Each reference node runs in its own process (``tests/reference/peers/py2p_node.py`` under this
interpreter, ``tests/reference/peers/js2p_node.js`` under ``node``) and is driven by JSON lines over
its stdin and stdout. `.start_reference` starts one and returns a
`.ReferenceNode` to steer it from Twisted code::

    node = await start_reference("py2p", encryption="SSL")
    await node.connect("127.0.0.1", other.port)
    node.send("hello")
    msg = await other.next_message()  # {"packets": [0, "hello"], "sender": ..., "id": ...}
    await node.stop()

Packets cross the pipe as JSON in which ``{"hex": "..."}`` stands for a byte string and
``{"map": [[key, value], ...]}`` for a msgpack map; this module converts them from and to
``bytes`` and ``dict``. Lists and tuples both arrive as lists.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet import defer, error
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from tests.reference.peers.packets_json import from_json, to_json

__all__ = [
    "ENCRYPTIONS",
    "JS2P_VERSION",
    "KINDS",
    "Reference",
    "ReferenceNode",
    "ReferenceNodeError",
    "js2p_path",
    "start_reference",
    "stop_all",
]

TESTS = Path(__file__).resolve().parent
PEERS = TESTS / "peers"
JS2P_DIR = TESTS / ".js2p"
JS2P_VERSION = "0.7.870"
JS2P_PACKAGES = (f"js2p@{JS2P_VERSION}", "nodejs-websocket", "node-forge")
NPM_TIMEOUT = 900.0

KINDS = ("py2p", "js2p")
#: The transports each reference can listen on. js2p cannot listen on ``wss``: it
#: creates its TLS WebSocket server without a certificate.
ENCRYPTIONS: dict[str, tuple[str, ...]] = {
    "py2p": ("Plaintext", "SSL"),
    "js2p": ("Plaintext", "SSL", "ws"),
}

_log = Logger()
_T = TypeVar("_T")


class ReferenceNodeError(Exception):
    """A reference node failed: it did not start, a command failed, or it died."""


# --- packets: Python values <-> the JSON form used on the pipes ---------------------------


def _text(node_id: Any) -> str:
    """A node ID as text, from the bytes or str form."""
    return node_id.decode("utf-8", "replace") if isinstance(node_id, bytes) else str(node_id)


# --- js2p installation ------------------------------------------------------------------


def _js2p_installed(modules: Path) -> bool:
    try:
        meta = json.loads((modules / "js2p" / "package.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("version") == JS2P_VERSION and all(
        (modules / name / "package.json").is_file() for name in ("node-forge", "nodejs-websocket")
    )


def js2p_path() -> str:
    """Install js2p and its optional transports once; return their ``node_modules`` path.

    The packages go to ``tests/.js2p`` (``npm install --prefix``), under a file lock so that
    parallel test processes install once. Skips the calling test when ``npm`` or ``node`` is
    not on PATH; raises `.ReferenceNodeError` when the installation fails.
    """
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: js2p interop tests need Node.js and npm")
    if shutil.which("node") is None:
        pytest.skip("node is not installed: js2p interop tests need Node.js and npm")
    modules = JS2P_DIR / "node_modules"
    if _js2p_installed(modules):
        return str(modules)
    JS2P_DIR.mkdir(parents=True, exist_ok=True)
    with open(JS2P_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _js2p_installed(modules):
            command = [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(JS2P_DIR),
                *JS2P_PACKAGES,
            ]
            _log.info("installing js2p: {command}", command=" ".join(command))
            try:
                done = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=NPM_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired as e:
                raise ReferenceNodeError(f"npm install timed out after {NPM_TIMEOUT}s") from e
            if done.returncode != 0 or not _js2p_installed(modules):
                raise ReferenceNodeError(
                    f"npm install of {' '.join(JS2P_PACKAGES)} failed "
                    f"(exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
                )
    return str(modules)


# --- the child process ------------------------------------------------------------------


def _default_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _within(d: Deferred[_T], timeout: float, reactor: Any, what: str) -> _T:
    """Await ``d``, cancelling it and raising `.TimeoutError` after ``timeout`` s."""
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except defer.TimeoutError as e:
        raise TimeoutError(f"{what}: nothing after {timeout} s") from e


class _ChildProtocol(ProcessProtocol):
    """Reads a reference child's JSON lines and keeps its stderr."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: Deferred[dict[str, Any]] = Deferred()
        self.messages: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.exited: Failure | None = None
        self._pending: dict[int, Deferred[Any]] = {}
        self._end_waiters: list[Deferred[None]] = []
        self._seq = 0
        self._stdout = b""
        self._stderr = bytearray()

    @property
    def log(self) -> str:
        return self._stderr.decode("utf-8", "replace")

    def outReceived(self, data: bytes) -> None:
        *lines, self._stdout = (self._stdout + data).split(b"\n")
        for line in lines:
            self._line(line)

    def errReceived(self, data: bytes) -> None:
        self._stderr += data

    def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            event = json.loads(line)
        except ValueError:
            self._stderr += b"[stdout] " + line + b"\n"
            return
        kind = event.get("event")
        if kind == "ready":
            if not self.ready.called:
                self.ready.callback(event)
        elif kind == "message":
            self.messages.put(event)
        elif kind in ("result", "error"):
            d = self._pending.pop(event.get("seq"), None)
            if d is None:
                _log.warn(
                    "{name}: answer to no pending command: {event}",
                    name=self.name,
                    event=event,
                )
            elif kind == "result":
                d.callback(event.get("value"))
            else:
                d.errback(ReferenceNodeError(f"{self.name}: {event.get('error')}"))
        else:
            _log.warn("{name}: unknown event {event}", name=self.name, event=event)

    def call(self, cmd: str, **fields: Any) -> Deferred[Any]:
        """Send a command; the Deferred fires with the child's answer."""
        if self.exited is not None:
            return defer.fail(ReferenceNodeError(f"{self.name} has exited; cannot {cmd}"))
        self._seq += 1
        seq = self._seq

        def forget(_: Deferred[Any]) -> None:
            self._pending.pop(seq, None)

        d: Deferred[Any] = Deferred(forget)
        self._pending[seq] = d
        assert self.transport is not None
        self.transport.write(json.dumps({"seq": seq, "cmd": cmd, **fields}).encode() + b"\n")
        return d

    def close_stdin(self) -> None:
        """Close the child's stdin (it exits on EOF)."""
        if self.exited is None and self.transport is not None:
            self.transport.closeStdin()

    def kill(self) -> None:
        """SIGKILL the child unless it has exited already."""
        if self.exited is None and self.transport is not None:
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

    def when_ended(self) -> Deferred[None]:
        """A new Deferred that fires once the process has exited."""
        d: Deferred[None] = Deferred()
        if self.exited is not None:
            d.callback(None)
        else:
            self._end_waiters.append(d)
        return d

    def processEnded(self, reason: Failure) -> None:
        self.exited = reason
        if self._stdout:
            self._line(self._stdout)
        problem = ReferenceNodeError(f"{self.name} exited ({reason.value}); its log:\n{self.log[-4000:]}")
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(problem)
        while self.messages.waiting:
            self.messages.waiting.pop(0).errback(problem)
        if not self.ready.called:
            self.ready.errback(problem)
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)


class ReferenceNode:
    """A running reference mesh node (py2p or js2p) in a child process.

    Attributes:
        kind: ``"py2p"`` or ``"js2p"``.
        encryption: its transport, e.g. ``"Plaintext"``.
        subnet: its subnet, e.g. ``"mesh"``.
        host: the address it listens on.
        port: the port it listens on.
        id: its node ID, base58 text.
    """

    def __init__(
        self,
        kind: str,
        encryption: str,
        subnet: str,
        host: str,
        port: int,
        node_id: str,
        protocol: _ChildProtocol,
        reactor: Any,
    ) -> None:
        self.kind = kind
        self.encryption = encryption
        self.subnet = subnet
        self.host = host
        self.port = port
        self.id = node_id
        self._protocol = protocol
        self._reactor = reactor
        self._last_id: str | None = None

    def __repr__(self) -> str:
        return f"<ReferenceNode {self.kind}/{self.encryption} {self.host}:{self.port}>"

    @property
    def log(self) -> str:
        """Everything the child wrote to stderr so far (the reference's own output)."""
        return self._protocol.log

    @property
    def running(self) -> bool:
        """Whether the child process is still alive."""
        return self._protocol.exited is None

    @property
    def pid(self) -> int | None:
        """The child's process ID (None once it has exited)."""
        return self._protocol.transport.pid if self._protocol.transport else None

    def _command(self, cmd: str, timeout: float, **fields: Any) -> Deferred[Any]:
        d = self._protocol.call(cmd, **fields)

        def timed_out(f: Failure) -> Failure:
            if not isinstance(f.value, defer.TimeoutError):
                return f
            raise TimeoutError(f"{self!r}: no answer to {cmd} after {timeout} s; log:\n{self.log[-4000:]}")

        d.addTimeout(timeout, self._reactor)
        d.addErrback(timed_out)
        return d

    async def connect(self, host: str, port: int, timeout: float = 30.0) -> bool:
        """Have the reference dial ``host:port``.

        Returns once the connection is up (True), or at once when the reference declined to
        dial because it believes it is connected already (False). Raises
        `.ReferenceNodeError` when the dial fails.
        """
        return bool(await self._command("connect", timeout, host=host, port=port))

    def send(self, *packets: Any, whisper: bool = False, timeout: float = 30.0) -> Deferred[None]:
        """Broadcast ``packets`` (the reference's ``send(*packets)``); with
        ``whisper``, send them to the direct peers only, as a whisper.

        Commands run in order, so awaiting the result is optional.
        """
        return self._command("send", timeout, packets=to_json(packets), whisper=whisper)

    def reply(self, *packets: Any, to: str | None = None, timeout: float = 30.0) -> Deferred[None]:
        """Reply to a received message (the reference's ``msg.reply(*packets)``).

        The message is the one with ID ``to`` (hex), by default the last one that
        `.next_message` returned, or, before any, the last one the child received.
        Awaiting the result is optional.
        """
        return self._command("reply", timeout, to=to or self._last_id, packets=to_json(packets))

    async def next_message(self, timeout: float = 30.0) -> dict[str, Any]:
        """The next user message the reference received, in arrival order.

        Returns ``{"packets": [...], "sender": str, "raw_sender": bytes | str, "id": hex}``
        where ``packets`` are as the reference's ``recv()`` gives them, subflag first
        (``[0, "hello"]`` for a broadcast of ``"hello"``, ``[2, ...]`` for a whisper or
        reply), ``sender`` is the sender's ID as text and ``raw_sender`` the sender field in
        the form the reference decoded it (bytes for msgpack bin, str for str).
        """
        queue = self._protocol.messages
        if not queue.pending and not self.running:
            raise ReferenceNodeError(f"{self!r} has exited; log:\n{self.log[-4000:]}")
        event = await _within(queue.get(), timeout, self._reactor, f"{self!r} waiting for a message")
        self._last_id = event["id"]
        raw_sender = from_json(event["sender"])
        return {
            "packets": from_json(event["packets"]),
            "sender": _text(raw_sender),
            "raw_sender": raw_sender,
            "id": event["id"],
        }

    def pending_messages(self) -> int:
        """How many received messages are buffered, not yet taken by next_message()."""
        return len(self._protocol.messages.pending)

    async def routing_table(self, timeout: float = 30.0) -> list[bytes | str]:
        """The keys of the reference's routing table as it holds them (bytes or str).

        A js2p node that got one peer's handshake in both forms holds it under two keys.
        """
        return list(from_json(await self._command("peers", timeout)))

    async def peers(self, timeout: float = 30.0) -> list[str]:
        """The node IDs in the reference's routing table, as text, each once."""
        return list(dict.fromkeys(_text(key) for key in await self.routing_table(timeout)))

    async def wait_for_peers(self, n: int, timeout: float = 30.0, interval: float = 0.1) -> list[str]:
        """Poll `.peers` until there are at least ``n``; return them."""
        deadline = self._reactor.seconds() + timeout
        while True:
            found = await self.peers()
            if len(found) >= n:
                return found
            if self._reactor.seconds() >= deadline:
                raise TimeoutError(
                    f"{self!r} has {len(found)} peers, not {n}, after {timeout} s; log:\n{self.log[-4000:]}"
                )
            await deferLater(self._reactor, interval, lambda: None)

    async def stop(self, timeout: float = 15.0) -> None:
        """Close the reference node and wait for its process to end; kill it if it lingers."""
        protocol = self._protocol
        if self.running:
            try:
                await self._command("stop", timeout)
            except (ReferenceNodeError, TimeoutError) as e:
                _log.warn("{node}: stop command failed: {e}", node=self, e=e)
        protocol.close_stdin()  # the child exits on EOF too
        try:
            await _within(protocol.when_ended(), timeout, self._reactor, f"{self!r} exiting")
            return
        except TimeoutError:
            _log.warn(
                "{node} did not exit within {timeout} s: killing it",
                node=self,
                timeout=timeout,
            )
        protocol.kill()
        await _within(protocol.when_ended(), timeout, self._reactor, f"{self!r} dying")


def _command_line(kind: str, host: str, port: int, subnet: str, encryption: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if kind == "py2p":
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, str(PEERS / "py2p_node.py")]
    else:
        env["NODE_PATH"] = js2p_path()
        node = shutil.which("node")
        assert node is not None  # js2p_path() skips otherwise
        argv = [node, str(PEERS / "js2p_node.js")]
    argv += [
        "--host",
        host,
        "--port",
        str(port),
        "--subnet",
        subnet,
        "--encryption",
        encryption,
    ]
    return argv, env


async def start_reference(
    kind: str,
    *,
    subnet: str = "mesh",
    encryption: str = "Plaintext",
    reactor: Any = None,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 60.0,
) -> ReferenceNode:
    """Start a reference mesh node in a child process and wait until it listens.

    :param kind: ``"py2p"`` or ``"js2p"``.
    :param subnet: the subnet of its protocol.
    :param encryption: its transport; see `ENCRYPTIONS`.
    :param reactor: the reactor to spawn with (default: the global one).
    :param host: the address to listen on.
    :param port: the port to listen on; 0 picks a free one.
    :param timeout: how long to wait for the node to be ready.
    :raise ReferenceNodeError: when the node does not start.
    """
    if kind not in ENCRYPTIONS:
        raise ValueError(f"unknown reference {kind!r}; expected one of {KINDS}")
    if encryption not in ENCRYPTIONS[kind]:
        raise ValueError(f"{kind} cannot listen on {encryption!r}; it can on {ENCRYPTIONS[kind]}")
    reactor = reactor if reactor is not None else _default_reactor()
    argv, env = _command_line(kind, host, port, subnet, encryption)
    protocol = _ChildProtocol(f"{kind}/{encryption}")
    reactor.spawnProcess(protocol, argv[0], argv, env=env, path=str(TESTS))
    try:
        ready = await _within(protocol.ready, timeout, reactor, f"{kind} starting")
    except Exception as e:
        protocol.kill()
        await _within(protocol.when_ended(), timeout, reactor, f"{kind} dying")
        raise ReferenceNodeError(f"{kind}/{encryption} did not start: {e}\nlog:\n{protocol.log[-4000:]}") from e
    node = ReferenceNode(
        kind,
        encryption,
        subnet,
        host,
        int(ready["port"]),
        str(ready["id"]),
        protocol,
        reactor,
    )
    _log.debug("{node} started, id {id}", node=node, id=node.id)
    return node


async def stop_all(nodes: Iterable[ReferenceNode]) -> None:
    """Stop several reference nodes at once."""
    await defer.gatherResults([defer.ensureDeferred(n.stop()) for n in nodes], consumeErrors=True)


#: What the ``reference`` fixture is: ``await reference(kind, **kwargs)`` starts a node as `start_reference` does.
Reference = Callable[..., Awaitable[ReferenceNode]]
