"""
What the ``twistd mesh`` tests share: a virtualenv with the wheel of this
checkout installed (`.build_venv`), the processes they start (`.Process`,
`.Launcher`), and checks of how those end and what they serve.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, error, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.python.failure import Failure

from tests.reference import ReferenceNode
from tests.support import LOOPBACK, wait_for, within
from twisted_mesh import MeshSocket

REPO = Path(__file__).resolve().parents[2]
Reference = Callable[..., Awaitable[ReferenceNode]]

#: How long a twistd process may take to start, or to stop, on a loaded box.
START_TIMEOUT = 60.0
PIP_TIMEOUT = 900.0

LISTENING = re.compile(
    r"node \S+ listening on (?P<bound>.*?), "
    r"advertised as \[?(?P<host>[^\s\]]*)\]?:(?P<port>\d+) \(node ID (?P<id>\S+), "
)
_SITE = re.compile(r"web site starting on (\d+)")
REDIAL = re.compile(r"again in (\d+(?:\.\d+)?) s")
MESH_PORT = re.compile(r"listening on \S+:(\d+) \(")
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


def build_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """
    Build a wheel of the checkout and install it into a fresh venv: once a
    session, for a few minutes at most (pip fetches Twisted and the rest).

    The wheel is built from a copy of the source, so that a stale ``build/``
    or ``*.egg-info`` of the checkout cannot slip into it and the build
    writes nothing into the checkout.
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
    return Venv(bin_dir, wheel, _clean_env(bin_dir))


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
            return bool(LISTENING.search(self.stdout)) and (not web or bool(_SITE.search(self.stdout)))

        await wait_for(ready, timeout, "the node to listen")
        listening = LISTENING.search(self.stdout)
        assert self.running and listening, f"the node did not start:\n{self.output}"
        site = _SITE.search(self.stdout)
        web_port = int(site[1]) if web and site else None
        return Started(listening["id"], listening["host"], int(listening["port"]), web_port)

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

    def kill_all(self) -> None:
        """Kill the processes still running, and wait for their end."""
        alive = [p for p in self.processes if p.running]
        for process in alive:
            process.terminate("KILL")
        pytest_twisted.blockon(defer.gatherResults([within(p.ended, 30) for p in alive]))

    async def node(self, *args: str) -> tuple[Process, Started]:
        """A running ``twistd -n mesh`` on loopback (plus ARGS), once it listens."""
        process = self.twistd("--listen", LOOPBACK, *args)
        return process, await process.started(web="--web" in args)


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


async def dial(port: int) -> None:
    """Connect to ``port`` of loopback, and hang up."""
    protocol = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol())
    assert protocol.transport is not None
    protocol.transport.loseConnection()


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
