"""
``twistd mesh`` and ``python -m twisted_mesh`` as a user runs them: from a wheel
of this checkout installed into a fresh virtualenv, as real processes on
loopback, meshed with in-process twisted_mesh nodes and py2p.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, error, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol, ServerFactory, connectionDone
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone

from tests.reference import ReferenceNode
from tests.support import MESH, RawWebSocket, wait_for, within
from twisted_mesh import MeshService, MeshSocket, flags

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "tcp:0:interface=127.0.0.1"
Reference = Callable[..., Awaitable[ReferenceNode]]

#: How long a twistd process may take to start, or to stop, on a loaded box.
START_TIMEOUT = 60.0
PIP_TIMEOUT = 900.0

_LISTENING = re.compile(r"node (\S+) of Protocol\(.*?\) listening at \('([^']*)', (\d+)\)")
_SITE = re.compile(r"Site starting on (\d+)")
_REDIAL = re.compile(r"again in (\d+(?:\.\d+)?) s")
_MESH_PORT = re.compile(r"MeshFactory starting on (\d+)")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: -?\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


# --- the installed package ---------------------------------------------------------------


@dataclass
class Venv:
    """A fresh virtualenv with the wheel of this checkout installed."""

    bin: Path
    wheel: Path
    env: dict[str, str]

    def exe(self, name: str) -> str:
        """The path of a script of the venv."""
        return str(self.bin / name)


def _clean_env(venv_bin: Path | None = None) -> dict[str, str]:
    """The environment, pip's proxy and CA settings included, without anything that leaks a source tree in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONUNBUFFERED"] = "1"
    if venv_bin is not None:
        env["VIRTUAL_ENV"] = str(venv_bin.parent)
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """
    Build a wheel of the checkout and install it into a fresh venv: once a
    session, for a few minutes at most (pip fetches Twisted and the rest).

    The wheel is built from a copy of the source, so that a stale ``build/``
    or ``*.egg-info`` of the checkout cannot slip into it and the build
    writes nothing into the checkout others are editing.
    """
    root = tmp_path_factory.mktemp("twistd-venv")
    source = root / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "tests", ".tox", "__pycache__", "node_modules", ".*cache*"
        ),
    )
    # (A dropin.cache of the checkout's twisted/plugins goes along, as it would for `pip install .`.)
    env = _clean_env()
    cwd = root / "cwd"
    cwd.mkdir()
    wheels = root / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(source)], cwd, env)
    (wheel,) = wheels.glob("twisted_mesh-*.whl")
    _run([sys.executable, "-m", "venv", str(root / "venv")], cwd, env)
    bin_dir = root / "venv" / "bin"
    _run([str(bin_dir / "pip"), "install", str(wheel)], cwd, env)
    yield Venv(bin_dir, wheel, _clean_env(bin_dir))


# --- twistd processes --------------------------------------------------------------------


@dataclass
class Started:
    """What a started node logged about itself."""

    id: str
    host: str
    port: int
    web: int | None = None


class Process(ProcessProtocol):
    """A child process: its stdout and stderr, and a Deferred for its end."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred[None] = Deferred()
        self.exit_code: int | None = None
        self.signal: int | None = None

    @property
    def stdout(self) -> str:
        return self.out.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        """Both streams, for assertion messages and searches."""
        return f"{' '.join(self.argv)}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"

    @property
    def running(self) -> bool:
        return not self.ended.called

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.signal = getattr(reason.value, "signal", None)
        self.ended.callback(None)

    def terminate(self, how: str = "TERM") -> None:
        """Send a signal, unless the process is gone."""
        if self.running and self.transport is not None:
            try:
                self.transport.signalProcess(how)
            except error.ProcessExitedAlready:
                pass

    async def wait_for_end(self, timeout: float = START_TIMEOUT) -> int | None:
        """Wait until the process exits; return its exit code."""
        if self.running:
            try:
                await within(self.ended, timeout)
            except defer.TimeoutError:
                raise AssertionError(f"still running after {timeout} s:\n{self.output}") from None
        return self.exit_code

    async def started(self, web: bool = False, timeout: float = START_TIMEOUT) -> Started:
        """Wait for the node's "listening at" line (and the web site's), and parse them."""

        def ready() -> bool:
            if not self.running:
                return True
            return bool(_LISTENING.search(self.stdout)) and (not web or bool(_SITE.search(self.stdout)))

        await wait_for(ready, timeout, "the node to listen")
        listening = _LISTENING.search(self.stdout)
        assert self.running and listening, f"the node did not start:\n{self.output}"
        site = _SITE.search(self.stdout)
        return Started(listening[1], listening[2], int(listening[3]), int(site[1]) if web and site else None)

    async def wait_for_text(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` shows in stdout."""
        await wait_for(lambda: text in self.stdout or not self.running, timeout, repr(text))
        assert text in self.stdout, f"{text!r} never logged:\n{self.output}"


@dataclass
class Launcher:
    """Starts processes in fresh working directories, and kills them at teardown."""

    venv: Venv
    tmp: Path
    processes: list[Process] = field(default_factory=list)

    def spawn(self, argv: list[str]) -> tuple[Process, Path]:
        """Start ``argv`` (a venv script and its arguments) in a directory of its own."""
        cwd = self.tmp / f"run{len(self.processes)}"
        cwd.mkdir()
        process = Process(argv)
        reactor.spawnProcess(process, argv[0], argv, env=self.venv.env, path=str(cwd))
        self.processes.append(process)
        return process, cwd

    def twistd(self, *args: str) -> Process:
        """``twistd -n mesh ARGS``."""
        return self.spawn([self.venv.exe("twistd"), "-n", "mesh", *args])[0]

    async def node(self, *args: str) -> tuple[Process, Started]:
        """A running ``twistd -n mesh`` on loopback (plus ARGS), once it listens."""
        process = self.twistd("--listen", LOOPBACK, *args)
        return process, await process.started(web="--web" in args)


@pytest.fixture
def launch(venv: Venv, tmp_path: Path) -> Iterator[Launcher]:
    """Starts twistd processes; kills those still running at teardown."""
    launcher = Launcher(venv, tmp_path)
    yield launcher
    alive = [p for p in launcher.processes if p.running]
    for process in alive:
        process.terminate("KILL")
    pytest_twisted.blockon(defer.gatherResults([within(p.ended, 30) for p in alive]))


@pytest.fixture
def mesh() -> Iterator[Callable[..., MeshSocket]]:
    """A factory of in-process MeshSockets on loopback, closed at teardown."""
    sockets: list[MeshSocket] = []

    def make(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> MeshSocket:
        kwargs.setdefault("max_outgoing", 0)
        sock = MeshSocket(host, port, MESH, **kwargs)
        sockets.append(sock)
        return sock

    yield make
    pytest_twisted.blockon(defer.gatherResults([sock.close() for sock in sockets]))


async def undiallable(sock: MeshSocket) -> None:
    """
    Stop ``sock`` listening: nobody can dial it any more, so what reaches it
    crosses the links it dialled itself.
    """
    for port in sock.ports:
        await port.stopListening()


async def pause(seconds: float) -> None:
    """Let the other processes work."""
    await task.deferLater(reactor, seconds)


def assert_clean(process: Process) -> None:
    """No traceback in either stream."""
    assert "Traceback" not in process.stdout and "Traceback" not in process.stderr, process.output
    assert "Unhandled Error" not in process.stdout, process.output


async def terminate(process: Process) -> None:
    """SIGTERM ``process`` and wait for its end: a tidy shutdown, with no traceback."""
    process.terminate("TERM")
    await process.wait_for_end()
    assert_clean(process)
    assert "Server Shut Down" in process.stdout, process.output


def assert_exited_0(process: Process) -> None:
    """The process exited with code 0 (not, say, killed by the signal that stopped it)."""
    assert process.exit_code == 0 and process.signal is None, (
        f"exit code {process.exit_code}, killed by signal {process.signal}: SIGTERM must end the node "
        f"with exit code 0\n{process.output}"
    )


# --- the package as installed ------------------------------------------------------------


def test_wheel_ships_the_plugin_and_nothing_of_twisted(venv: Venv) -> None:
    """
    The wheel carries the plugin module, but no ``twisted/__init__.py`` or
    ``twisted/plugins/__init__.py`` (which would shadow Twisted's own) and
    no ``dropin.cache`` (which would be stale, or overwrite Twisted's).
    """
    names = set(zipfile.ZipFile(venv.wheel).namelist())
    assert "twisted/plugins/mesh.py" in names
    assert "twisted_mesh/tap.py" in names and "twisted_mesh/__main__.py" in names
    assert "twisted_mesh/web/__init__.py" in names and "twisted_mesh/web/status.py" in names
    assert not {"twisted/__init__.py", "twisted/plugins/__init__.py"} & names
    assert not [name for name in names if name.endswith("dropin.cache")]


@pytest_twisted.ensureDeferred
async def test_plugin_is_found_from_the_install(venv: Venv, tmp_path: Path) -> None:
    """``twistd --help`` lists ``mesh``, and twisted_mesh imports from the venv, not the checkout."""
    out, err, code = await getProcessOutputAndValue(venv.exe("twistd"), ["--help"], env=venv.env, path=str(tmp_path))
    assert code == 0, (out, err)
    assert re.search(rb"^\s+mesh\s+A node of a p2p-today mesh", out, re.M), out.decode()
    assert b"Traceback" not in out + err

    out, err, code = await getProcessOutputAndValue(
        venv.exe("python"),
        ["-c", "import twisted_mesh, twisted.plugins.mesh as p; print(twisted_mesh.__file__); print(p.__file__)"],
        env=venv.env,
        path=str(tmp_path),
    )
    assert code == 0, err
    site_packages = str(venv.bin.parent / "lib")
    for line in out.decode().split():
        assert line.startswith(site_packages) and "site-packages" in line, out
        assert not line.startswith(str(REPO)), out


@pytest_twisted.ensureDeferred
async def test_plugin_survives_uninstall_and_reinstall(venv: Venv, tmp_path: Path) -> None:
    """
    Twisted's dropin cache, written while twisted_mesh is installed, does
    not keep a removed plugin alive or hide a reinstalled one.
    """

    async def help_text() -> bytes:
        out, err, code = await getProcessOutputAndValue(
            venv.exe("twistd"), ["--help"], env=venv.env, path=str(tmp_path)
        )
        assert code == 0 and b"Traceback" not in out + err, (out, err)
        return out

    async def pip(*args: str) -> None:
        out, err, code = await getProcessOutputAndValue(venv.exe("pip"), args, env=venv.env, path=str(tmp_path))
        assert code == 0, (out, err)

    assert b" mesh " in await help_text()  # the cache now holds it
    await pip("uninstall", "-y", "twisted_mesh")
    assert not re.search(rb"^\s+mesh\s", await help_text(), re.M)
    await pip("install", "--no-deps", "--no-index", str(venv.wheel))
    assert re.search(rb"^\s+mesh\s+A node", await help_text(), re.M)


# --- messages across a twistd node ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_messages_cross_a_twistd_node(
    launch: Launcher, mesh: Callable[..., MeshSocket], reference: Reference
) -> None:
    """
    Nodes that dial only the twistd node, and cannot be dialled, exchange
    broadcasts through it: twisted_mesh with twisted_mesh, and py2p with
    twisted_mesh both ways.
    """
    _, node = await launch.node()
    left, right = mesh(), mesh()
    assert await within(left.connect("127.0.0.1", node.port)) == node.id
    assert await within(right.connect("127.0.0.1", node.port)) == node.id
    await undiallable(left)
    await undiallable(right)

    left.send("across", b"\x00twistd", 7)
    msg = await within(right.next_message())
    assert msg.packets == (flags.broadcast, "across", b"\x00twistd", 7)
    assert msg.sender == left.id
    assert set(right.routing_table) == {node.id} and set(left.routing_table) == {node.id}

    ref = await reference("py2p")
    assert await ref.connect("127.0.0.1", node.port)
    assert node.id in await ref.wait_for_peers(1)
    await pause(0.5)  # py2p's peer requests land, and its dials to the others fail
    await ref.send("from py2p", b"\xffbin")
    for sock in (left, right):
        got = await within(sock.next_message())
        assert got.packets == (flags.broadcast, "from py2p", b"\xffbin")
        assert got.sender == ref.id
    await pause(0.02)  # py2p's frame reader breaks on bursts
    right.send("from twisted_mesh", 3)
    theirs = await ref.next_message()
    assert theirs["packets"] == [flags.broadcast, "from twisted_mesh", 3]
    assert theirs["sender"] == right.id
    assert (await within(left.next_message())).packets == (flags.broadcast, "from twisted_mesh", 3)
    await pause(0.02)
    left.send("again")
    again = await ref.next_message()
    assert again["packets"] == [flags.broadcast, "again"] and again["sender"] == left.id
    assert (await within(right.next_message())).packets == (flags.broadcast, "again")
    # Nobody could dial anybody but the twistd node: it all went through it.
    assert await ref.peers() == [node.id]
    assert set(left.routing_table) == set(right.routing_table) == {node.id}
    await pause(0.3)
    assert left.recv() is None and right.recv() is None and ref.pending_messages() == 0


# --- the web face ------------------------------------------------------------------------


class _Body(Protocol):
    """Collects a response body (readBody warns about Agent's transports)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone):
            self.done.callback(bytes(self.data))
        else:
            self.done.errback(reason)


async def get(url: str) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """GET ``url``: its code, headers (lower-case names) and body."""
    response = await within(Agent(reactor).request(b"GET", url.encode()))
    body = _Body()
    response.deliverBody(body)
    data = await within(body.done)
    headers = {name.lower(): values for name, values in response.headers.getAllRawHeaders()}
    return response.code, headers, data


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """
    Prometheus' text format, strictly: every line a comment or
    ``name{labels} value``; every sample of a family HELPed and TYPEd first.
    """
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped"), line
            typed[name] = kind
            continue
        assert line and not line.startswith("#"), f"stray line {line!r}"
        match = _SAMPLE.match(line)
        assert match, f"not a sample: {line!r}"
        name, label_text, value = match[1], match[2], match[3]
        assert name in typed and name in helped, f"{name} has no HELP or TYPE before its samples"
        labels: list[tuple[str, str]] = []
        if label_text:
            found = _LABEL.findall(label_text)
            assert ",".join(f'{k}="{v}"' for k, v in found) == label_text.rstrip(","), line
            labels = found
        number = float(value)  # raises on a bad value
        assert not math.isnan(number), line
        key = (name, frozenset(labels))
        assert key not in samples, f"repeated sample {line!r}"
        samples[key] = number
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pass
    else:
        names = {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
        assert names == {name for name, _ in samples}
    return samples


@pytest_twisted.ensureDeferred
async def test_status_metrics_and_page(launch: Launcher, mesh: Callable[..., MeshSocket]) -> None:
    """``--web``: ``/status`` and ``/metrics`` tell the truth about the node and its peers; ``/`` is a page."""
    _, node = await launch.node("--web", LOOPBACK)
    assert node.web
    base = f"http://127.0.0.1:{node.web}"
    left, right = mesh(), mesh()
    await within(left.connect("127.0.0.1", node.port))
    await within(right.connect("127.0.0.1", node.port))
    left.send("counted")
    assert (await within(right.next_message())).packets == (flags.broadcast, "counted")

    code, headers, body = await get(f"{base}/status")
    assert code == 200 and headers[b"content-type"] == [b"application/json"]
    status = json.loads(body)
    assert status["id"] == node.id
    assert status["protocol"] == {"subnet": "mesh", "encryption": "Plaintext", "id": MESH.id}
    assert status["out_addr"] == ["127.0.0.1", node.port]
    assert 0 < status["uptime"] < 600
    peers = {peer["id"]: peer for peer in status["peers"]}
    assert set(peers) == {left.id, right.id}
    for sock in (left, right):
        peer = peers[sock.id]
        assert peer["address"] == list(sock.out_addr)
        assert peer["direction"] == "in"
        assert peer["compression"] is None or isinstance(peer["compression"], str)
        assert peer["frames_in"] >= 1 and peer["frames_out"] >= 1
        assert peer["bytes_in"] > 0 and peer["bytes_out"] > 0
    assert status["connections"] == 2
    assert status["pending"] == 0
    assert status["seen"] >= 1  # the broadcast
    assert status["relayed"] >= 1  # ... relayed to the right
    assert status["frames_in"] >= sum(p["frames_in"] for p in peers.values())
    assert status["bytes_in"] >= sum(p["bytes_in"] for p in peers.values())
    assert status["connections_made"] == {"in": 2}
    assert status["handshake_failures"] == {}

    code, headers, body = await get(f"{base}/metrics")
    assert code == 200 and headers[b"content-type"][0].startswith(b"text/plain")
    metrics = parse_metrics(body.decode("utf-8"))

    def sample(name: str, **labels: str) -> float:
        return metrics[(name, frozenset(labels.items()))]

    assert sample("mesh_peers") == 2
    assert sample("mesh_connections") == 2
    assert sample("mesh_pending_connections") == 0
    assert sample("mesh_connections_total", direction="in") == 2
    assert sample("mesh_frames_received_total") >= status["frames_in"] >= 4
    assert sample("mesh_frames_sent_total") >= status["frames_out"] >= 3
    assert sample("mesh_bytes_received_total") >= status["bytes_in"] > 0
    assert sample("mesh_bytes_sent_total") >= status["bytes_out"] > 0
    assert sample("mesh_relayed_total") >= 1
    assert sample("mesh_seen_messages") >= 1
    assert sample("mesh_uptime_seconds") >= status["uptime"]
    assert sample("mesh_queued_messages") == 0  # the plugin takes what it gets

    code, headers, body = await get(f"{base}/")
    assert code == 200 and headers[b"content-type"][0].startswith(b"text/html")
    assert b"<html" in body and b"/status" in body and b"/metrics" in body
    code, _, _ = await get(f"{base}/nothing-here")
    assert code == 404


# --- stopping ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sigterm_stops_cleanly(launch: Launcher) -> None:
    """SIGTERM: exit 0, no traceback, and the port is closed."""
    process, node = await launch.node("--web", LOOPBACK)
    await terminate(process)
    assert node.web
    for port in (node.port, node.web):  # nothing listens there any more
        with pytest.raises(error.ConnectionRefusedError):
            await within(defer.ensureDeferred(_dial(port)))
    assert_exited_0(process)


async def _dial(port: int) -> None:
    protocol = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
    assert protocol.transport is not None
    protocol.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_sigterm_with_peers(launch: Launcher, mesh: Callable[..., MeshSocket], reference: Reference) -> None:
    """SIGTERM with a twisted_mesh and a py2p peer: exit 0, and both see the node leave."""
    process, node = await launch.node()
    sock = mesh()
    ref = await reference("py2p")
    await within(sock.connect("127.0.0.1", node.port))
    await undiallable(sock)  # or py2p would dial it, and they would stay peers
    assert await ref.connect("127.0.0.1", node.port)
    assert node.id in await ref.wait_for_peers(1)
    await terminate(process)
    await wait_for(lambda: not sock.routing_table, 30, "the twisted_mesh node to see the twistd node leave")

    async def py2p_alone() -> None:
        for _ in range(300):
            if node.id not in await ref.peers():
                return
            await pause(0.1)
        raise AssertionError(f"py2p still lists the twistd node:\n{ref.log[-2000:]}")

    await py2p_alone()
    assert_exited_0(process)


@pytest.mark.parametrize("listener", ["--listen", "--web"])
@pytest_twisted.ensureDeferred
async def test_a_listener_that_fails_stops_the_process(launch: Launcher, listener: str) -> None:
    """
    A node, or its web site, that cannot listen (the port is taken) logs
    why and stops the process, which exits with status 1.
    """
    taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
    try:
        busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        args = ["--listen", busy] if listener == "--listen" else ["--listen", LOOPBACK, "--web", busy]
        process = launch.twistd(*args)
        code = await process.wait_for_end()
    finally:
        await taken.stopListening()
    assert code == 1 and process.signal is None, f"exit code {code}, signal {process.signal}\n{process.output}"
    assert "Address already in use" in process.stdout, process.output
    assert "stopping, with exit status 1" in process.stdout, process.output
    assert "Server Shut Down" in process.stdout, process.output
    assert_clean(process)


# --- options -----------------------------------------------------------------------------


BAD_OPTIONS = [
    (["--transport", "nope"], "--transport must be one of"),
    (["--port", "notanumber"], "notanumber"),
    (["--port", "70000"], "between 0 and 65535"),
    (["--max-outgoing", "-1"], "--max-outgoing"),
    (["--listen", "ssl:0"], "ssl:0"),  # no certificate
    (["--tls-ca", "x.pem"], "--tls-ca needs --tls-cert"),
    (["--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
    (["--tls-cert", "missing.pem"], "missing.pem"),
    (["--out-addr", "nohost"], "nohost"),
    (["--out-addr", "host:0"], "host:0"),
    (["--connect", "host:notaport"], "host:notaport"),
    (["--no-such-option"], "no-such-option"),
    # Not an endpoint string, nor HOST:PORT.
    (["--connect", "bad"], "bad"),
    (["--connect", "tcp:host=127.0.0.1"], "tcp:host=127.0.0.1"),
    (["--listen", "bogus:0"], "bogus"),
    (["--listen", "tcp:notaport"], "notaport"),
    (["--web", "notanendpoint"], "notanendpoint"),
    (["--web", "70000"], "70000"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
@pytest_twisted.ensureDeferred
async def test_bad_options_give_a_usage_error(launch: Launcher, args: list[str], message: str) -> None:
    """A bad option stops twistd at once with a usage error naming it: no traceback, no node."""
    process = launch.twistd("--listen", LOOPBACK, *args)

    def decided() -> bool:
        return not process.running or "listening at" in process.stdout or "Traceback" in process.stdout

    await wait_for(decided, START_TIMEOUT, "twistd to refuse the options")
    if process.running:
        await pause(0.5)  # let it log what it will
        process.terminate("KILL")
        await process.wait_for_end()
        raise AssertionError(f"twistd started a node despite {' '.join(args)}:\n{process.output}")
    assert process.exit_code not in (0, None), process.output
    assert_clean(process)
    assert message in process.stdout + process.stderr, process.output


# --- bootstrap and re-dialling ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["HOST:PORT", "endpoint"])
@pytest_twisted.ensureDeferred
async def test_connect_bootstraps_and_redials(launch: Launcher, mesh: Callable[..., MeshSocket], form: str) -> None:
    """
    ``--connect``: the node dials the peer at start; when it loses it and has
    no peer left, it dials it again within two seconds, then with a growing
    delay until it is back.
    """
    first = mesh()
    port = first.out_addr[1]
    peer = f"127.0.0.1:{port}" if form == "HOST:PORT" else f"tcp:host=127.0.0.1:port={port}"
    process, node = await launch.node("--connect", peer)
    await wait_for(lambda: node.id in first.routing_table, 30, "the twistd node to dial in")
    assert first.routing_table[node.id].outgoing is False

    assert not _REDIAL.findall(process.stdout)
    await first.close()
    # Two retries find nobody, each after a longer delay than the last; the third finds the peer back.
    await wait_for(lambda: len(_REDIAL.findall(process.stdout)) >= 2, 30, "two re-dial attempts")
    second = mesh("127.0.0.1", port)
    await wait_for(lambda: node.id in second.routing_table, 60, "the twistd node to dial again")
    delays = [float(delay) for delay in _REDIAL.findall(process.stdout)]
    assert delays[0] <= 2.0 and delays[0] < delays[1], delays
    assert process.running
    assert_clean(process)


@pytest_twisted.ensureDeferred
async def test_connect_endpoint_strings_without_keywords(
    launch: Launcher, mesh: Callable[..., MeshSocket], tmp_path: Path
) -> None:
    """
    ``--connect`` takes endpoint strings with positional parts only
    (``tcp:HOST:PORT``, ``ws:HOST:PORT``, ``unix:PATH``), and dials them over
    their transports.
    """
    tcp_peer = mesh()
    ws_peer = MeshService(MESH, listen=["ws:0:interface=127.0.0.1"])
    path = tmp_path / "peer.sock"
    unix_peer = MeshService(MESH, listen=[f"unix:{path}"])
    services = [ws_peer, unix_peer]
    for service in services:
        service.startService()
    try:
        (ws_port,) = await within(ws_peer.listening)
        await within(unix_peer.listening)
        process, node = await launch.node(
            *("--connect", f"tcp:127.0.0.1:{tcp_peer.out_addr[1]}"),
            *("--connect", f"ws:127.0.0.1:{ws_port.getHost().port}"),
            *("--connect", f"unix:{path}"),
        )
        peers = [tcp_peer, ws_peer, unix_peer]
        await wait_for(
            lambda: all(node.id in peer.routing_table for peer in peers) or not process.running,
            30,
            "the twistd node to dial its three peers",
        )
        assert all(node.id in peer.routing_table for peer in peers), process.output
        assert ws_peer.routing_table[node.id].encryption == "ws"
        assert_clean(process)
    finally:
        await defer.gatherResults([service.stopService() for service in services])


@pytest_twisted.ensureDeferred
async def test_connect_ipv6_host_port(launch: Launcher, mesh: Callable[..., MeshSocket]) -> None:
    """``--connect [::1]:PORT``, the bracketed HOST:PORT of IPv6, dials that peer."""
    try:
        sock = mesh("::1", 0)
    except error.CannotListenError:
        pytest.skip("no IPv6 loopback")
    process, node = await launch.node("--connect", f"[::1]:{sock.out_addr[1]}")
    await wait_for(
        lambda: node.id in sock.routing_table or not process.running or "Traceback" in process.stdout,
        30,
        "the twistd node to dial [::1]",
    )
    assert node.id in sock.routing_table, process.output


@pytest_twisted.ensureDeferred
async def test_out_addr_is_what_peers_are_told(launch: Launcher, mesh: Callable[..., MeshSocket]) -> None:
    """``--out-addr``: the node tells its peers (and /status) to dial that address, not its listener's."""
    process = launch.twistd("--listen", LOOPBACK, "--out-addr", "192.0.2.7:4444", "--web", LOOPBACK)
    node = await process.started(web=True)
    assert (node.host, node.port) == ("192.0.2.7", 4444)
    real = _MESH_PORT.search(process.stdout)
    assert real, process.output
    sock = mesh()
    assert await within(sock.connect("127.0.0.1", int(real[1]))) == node.id
    assert sock.routing_table[node.id].peer_addr == ("192.0.2.7", 4444)
    _, _, body = await get(f"http://127.0.0.1:{node.web}/status")
    assert json.loads(body)["out_addr"] == ["192.0.2.7", 4444]
    assert_clean(process)


# --- --verbose -----------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [True, False], ids=["verbose", "quiet"])
@pytest_twisted.ensureDeferred
async def test_verbose_logs_received_messages(launch: Launcher, mesh: Callable[..., MeshSocket], verbose: bool) -> None:
    """``--verbose`` logs each message the node receives, with its packets; the default does not."""
    process, node = await launch.node(*(["--verbose"] if verbose else []))
    sender, receiver = mesh(), mesh()
    await within(sender.connect("127.0.0.1", node.port))
    await within(receiver.connect("127.0.0.1", node.port))
    token = f"probe-{uuid.uuid4().hex}"
    sender.send(token, 42)
    assert (await within(receiver.next_message())).packets == (flags.broadcast, token, 42)
    if verbose:
        await process.wait_for_text(token)
        (line,) = [line for line in process.stdout.splitlines() if token in line]
        assert sender.id in line and f"(0, '{token}', 42)" in line
    else:
        await pause(1.0)
        assert token not in process.stdout
    assert_clean(process)


# --- the daemon and python -m --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_daemon_with_port(launch: Launcher, mesh: Callable[..., MeshSocket]) -> None:
    """``twistd mesh --port N`` (no ``-n``): it daemonizes, serves, and stops on SIGTERM."""
    process, cwd = launch.spawn(
        [launch.venv.exe("twistd"), "--logfile", "mesh.log", "--pidfile", "mesh.pid", "mesh", "--port", "0"]
    )
    assert await process.wait_for_end() == 0, process.output
    log, pidfile = cwd / "mesh.log", cwd / "mesh.pid"
    await wait_for(pidfile.exists, 30, "the pid file")
    pid = int(pidfile.read_text())
    try:
        await wait_for(lambda: log.exists() and _LISTENING.search(log.read_text()), 30, "the daemon to listen")
        listening = _LISTENING.search(log.read_text())
        assert listening
        sock = mesh()
        assert await within(sock.connect("127.0.0.1", int(listening[3]))) == listening[1]
        os.kill(pid, signal.SIGTERM)
        await wait_for(lambda: not pidfile.exists(), 30, "the daemon to stop")
        await wait_for(lambda: "Server Shut Down" in log.read_text(), 30, "the daemon to log its end")
        await wait_for(lambda: not sock.routing_table, 30, "the peer to see the daemon leave")
        assert "Traceback" not in log.read_text()
    finally:
        if pidfile.exists():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest_twisted.ensureDeferred
async def test_daemon_that_cannot_listen_exits_1(launch: Launcher) -> None:
    """
    ``twistd mesh`` (no ``-n``) whose port is taken: the command itself says
    why and exits with status 1, and the daemon's log tells it without a
    traceback.
    """
    taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
    try:
        busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        process, cwd = launch.spawn(
            [launch.venv.exe("twistd"), "--logfile", "mesh.log", "--pidfile", "mesh.pid", "mesh", "--listen", busy]
        )
        code = await process.wait_for_end()
        log = cwd / "mesh.log"
        await wait_for(lambda: log.exists() and "exit status 1" in log.read_text(), 30, "the daemon's log")
    finally:
        await taken.stopListening()
    assert code == 1, process.output
    assert "An error has occurred" in process.stderr and "Address already in use" in process.stderr, process.output
    assert_clean(process)
    await wait_for(lambda: not (cwd / "mesh.pid").exists(), 30, "the daemon to end")
    text = log.read_text()
    assert "could not listen" in text and "Traceback" not in text, text


@pytest_twisted.ensureDeferred
async def test_a_second_signal_while_stopping(launch: Launcher) -> None:
    """
    Ctrl-C twice, while the node waits for a WebSocket peer that does not
    answer its close: the node stops as after one, with status 0.
    """
    process, node = await launch.node("--web", LOOPBACK)
    assert node.web
    client = RawWebSocket()
    await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", node.web), client))
    client.upgrade()
    try:
        await wait_for(lambda: b" 101 " in client.received, 30, "the WebSocket to open")
        process.terminate("INT")
        await process.wait_for_text("is stopping")
        process.terminate("INT")
        await process.wait_for_end()
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
    assert_clean(process)
    assert "ReactorNotRunning" not in process.stdout, process.output
    assert_exited_0(process)


@pytest_twisted.ensureDeferred
async def test_python_m_help(venv: Venv, tmp_path: Path) -> None:
    """``python -m twisted_mesh --help`` shows the mesh options."""
    out, err, code = await getProcessOutputAndValue(
        venv.exe("python"), ["-m", "twisted_mesh", "--help"], env=venv.env, path=str(tmp_path)
    )
    assert code == 0, (out, err)
    text = out.decode()
    for option in ("--listen", "--connect", "--port", "--transport", "--subnet", "--web", "--verbose", "--tls-cert"):
        assert option in text, text
    assert "Traceback" not in text + err.decode()


@pytest_twisted.ensureDeferred
async def test_python_m_runs_a_node(launch: Launcher, mesh: Callable[..., MeshSocket]) -> None:
    """``python -m twisted_mesh --listen ...`` runs a node in the foreground, without a pid file; SIGTERM ends it."""
    process, cwd = launch.spawn([launch.venv.exe("python"), "-m", "twisted_mesh", "--listen", LOOPBACK])
    node = await process.started()
    sock = mesh()
    assert await within(sock.connect("127.0.0.1", node.port)) == node.id
    assert list(cwd.iterdir()) == []  # --pidfile= : no twistd.pid
    await terminate(process)
    await wait_for(lambda: not sock.routing_table, 30, "the peer to see the node leave")
    assert_exited_0(process)


@pytest_twisted.ensureDeferred
async def test_python_m_bad_option(launch: Launcher) -> None:
    """``python -m twisted_mesh`` gives the same usage errors."""
    process, _ = launch.spawn([launch.venv.exe("python"), "-m", "twisted_mesh", "--transport", "nope"])
    assert await process.wait_for_end() not in (0, None), process.output
    assert "--transport must be one of" in process.stdout + process.stderr
    assert_clean(process)
