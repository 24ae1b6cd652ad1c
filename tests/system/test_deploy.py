"""
docs/deploy.rst, run as an operator would: three network namespaces stand
for its three hosts (10.232.0.1 to .3, on one bridge), each with a node
started by the ExecStart of examples/twisted-mesh.service, its keys made
with ``twisted-mesh key`` and the allow-list of their IDs; then
``twisted-mesh listen`` on host-3 prints what ``twisted-mesh send`` on
host-1 sends.  The commands are the guide's own, found in its text; only
the paths move (the venv for /opt/twisted-mesh, a folder of each host for
/var/lib and /etc, one for the operator's home).

The unit file is checked with ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.twistd import Venv, build_venv
from tests.support import unavailable
from tests.system.netns import add_namespace, delete_namespace, ip_command, run_ip

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.rst"
UNIT = ROOT / "examples" / "twisted-mesh.service"

#: The hosts of the guide, and their addresses on the bridge.
HOSTS = {"host-1": "10.232.0.1", "host-2": "10.232.0.2", "host-3": "10.232.0.3"}
SEED = "10.232.0.1:4444"

#: The guide's commands that this test runs, as the guide writes them.
MAKE_NODE_KEY = "/opt/twisted-mesh/bin/twisted-mesh key /var/lib/twisted-mesh/node.pem"
MAKE_OPERATOR_KEY = "twisted-mesh key ~/.config/twisted-mesh/me.pem"
MAKE_LISTENER_KEY = "twisted-mesh key ~/.config/twisted-mesh/listener.pem"
LISTEN = "twisted-mesh listen --transport SSL --signed --key ~/.config/twisted-mesh/listener.pem --json 10.232.0.3:4444"
SEND = (
    'twisted-mesh send --transport SSL --signed --key ~/.config/twisted-mesh/me.pem 10.232.0.1:4444 "hello from host-1"'
)
#: Host-2's environment file, as the guide shows it.
HOST_2_ENV = "PUBLIC_ADDR=10.232.0.2:4444\n   SEED=10.232.0.1:4444"

#: Seconds to wait: for a node to answer, for the three to mesh, for a message.
START_TIMEOUT = 60.0
MESSAGE_TIMEOUT = 30.0


def exec_start() -> list[str]:
    """The unit's ExecStart, its continuation lines joined, split as systemd splits it."""
    text = UNIT.read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_guide_shows_the_commands_this_test_runs() -> None:
    """What the guide tells an operator to type is what the test below runs."""
    guide = GUIDE.read_text()
    for command in (MAKE_NODE_KEY, MAKE_OPERATOR_KEY, MAKE_LISTENER_KEY, LISTEN, SEND, HOST_2_ENV):
        assert command in guide, command
    assert "literalinclude:: ../examples/twisted-mesh.service" in guide
    assert exec_start()[:2] == ["/opt/twisted-mesh/bin/twisted-mesh", "node"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A venv with the wheel of this checkout, as /opt/twisted-mesh in the guide."""
    return build_venv(tmp_path_factory)


def test_the_unit_file_verifies(venv: Venv, tmp_path: Path) -> None:
    """``systemd-analyze verify`` finds nothing to say of the unit, its command being the installed one."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is missing: it comes with Debian's systemd package")
    unit = tmp_path / "twisted-mesh.service"
    unit.write_text(UNIT.read_text().replace("/opt/twisted-mesh/bin/twisted-mesh", venv.exe("twisted-mesh")))
    done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


class Host:
    """One host of the guide: a namespace on the bridge, and its folders."""

    def __init__(self, name: str, namespace: str, address: str, folder: Path, venv: Venv) -> None:
        self.name = name
        self.namespace = namespace
        self.address = address
        self.folder = folder
        self.venv = venv
        for part in ("var/lib/twisted-mesh", "etc/twisted-mesh", "home/.config/twisted-mesh"):
            (folder / part).mkdir(parents=True)

    def localize(self, text: str) -> str:
        """A path or a command of the guide, with this host's folders for the system's."""
        text = text.replace("/opt/twisted-mesh/bin/", f"{self.venv.bin}/")
        text = re.sub(r"^twisted-mesh ", f"{self.venv.bin}/twisted-mesh ", text)
        for system in ("/var/lib/twisted-mesh", "/etc/twisted-mesh"):
            text = text.replace(system, f"{self.folder}{system}")
        return text.replace("~/.config/twisted-mesh", f"{self.folder}/home/.config/twisted-mesh")

    def argv(self, command: str | list[str]) -> list[str]:
        """``command`` (the guide's), to run in this host's namespace."""
        words = shlex.split(self.localize(command)) if isinstance(command, str) else [self.localize(w) for w in command]
        return ["ip", "netns", "exec", self.namespace, *words]

    def run(self, command: str) -> str:
        """Run ``command`` here to its end; its standard output."""
        done = subprocess.run(self.argv(command), env=self.venv.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command} on {self.name}: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self, command: str | list[str], log: str) -> subprocess.Popen[str]:
        """Start ``command`` here, its output to the file ``log`` of this host's folder."""
        out = open(self.folder / log, "w")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(self.argv(command), env=self.venv.env, stdout=out, stderr=subprocess.STDOUT, text=True)

    def status(self) -> dict[str, Any] | None:
        """The node's /mesh/status, from inside the host; None while it does not answer."""
        url = "http://127.0.0.1:8080/mesh/status"
        script = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=5).read().decode())"
        done = subprocess.run(
            self.argv([self.venv.exe("python"), "-c", script]),
            env=self.venv.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return json.loads(done.stdout) if done.returncode == 0 else None


class Lan:
    """The three hosts' namespaces, and a fourth with the bridge between them."""

    def __init__(self, tmp: Path, venv: Venv) -> None:
        self.ip = ip_command()
        tag = f"{os.getpid() % 100000}"
        self.switch = f"tmd-{tag}-sw"
        self.made: list[str] = []
        self.hosts = [
            Host(name, f"tmd-{tag}-{n}", address, tmp / name, venv)
            for n, (name, address) in enumerate(HOSTS.items(), 1)
        ]
        self.processes: list[subprocess.Popen[str]] = []

    def create(self) -> None:
        ip = self.ip
        for name in (self.switch, *(host.namespace for host in self.hosts)):
            add_namespace(ip, name)
            self.made.append(name)
            run_ip(ip, "-n", name, "link", "set", "lo", "up")
        run_ip(ip, "-n", self.switch, "link", "add", "br0", "type", "bridge")
        run_ip(ip, "-n", self.switch, "link", "set", "br0", "up")
        for n, host in enumerate(self.hosts, 1):
            run_ip(
                ip,
                "link",
                "add",
                "eth0",
                "netns",
                host.namespace,
                "type",
                "veth",
                "peer",
                "name",
                f"port{n}",
                "netns",
                self.switch,
            )
            run_ip(ip, "-n", self.switch, "link", "set", f"port{n}", "master", "br0", "up")
            run_ip(ip, "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            run_ip(ip, "-n", host.namespace, "link", "set", "eth0", "up")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        for name in self.made:
            delete_namespace(self.ip, name)


@pytest.fixture
def lan(tmp_path: Path, venv: Venv) -> Iterator[Lan]:
    network = Lan(tmp_path, venv)
    try:
        network.create()
        yield network
    finally:
        network.stop()


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_guide_on_three_hosts(lan: Lan) -> None:
    host_1, host_2, host_3 = lan.hosts
    # Keys, and the allow-list of every ID, on every host.
    ids = [host.run(MAKE_NODE_KEY).strip() for host in lan.hosts]
    ids.append(host_1.run(MAKE_OPERATOR_KEY).strip())
    ids.append(host_3.run(MAKE_LISTENER_KEY).strip())
    for host in lan.hosts:
        key = Path(host.localize("/var/lib/twisted-mesh/node.pem"))
        assert oct(key.stat().st_mode & 0o777) == "0o600"
        Path(host.localize("/etc/twisted-mesh/members")).write_text("\n".join(ids) + "\n")
    # The nodes, as systemd starts them.
    for host in lan.hosts:
        env = {"PUBLIC_ADDR": f"{host.address}:4444", "SEED": SEED}
        command = [re.sub(r"\$\{(\w+)\}", lambda m, env=env: env[m[1]], word) for word in exec_start()]
        lan.processes.append(host.start(command, "node.log"))
    wait_for(
        lambda: all((status := host.status()) is not None and len(status["peers"]) == 2 for host in lan.hosts),
        START_TIMEOUT,
        "the three nodes to mesh",
    )
    for host, node_id in zip(lan.hosts, ids, strict=False):
        status = host.status()
        assert status is not None and status["id"] == node_id and status["protocol"]["signed"] is True
    # host-3 listens, host-1 sends.
    listener = host_3.start(LISTEN, "listen.log")
    lan.processes.append(listener)
    wait_for(lambda: len((host_3.status() or {"peers": []})["peers"]) == 3, START_TIMEOUT, "the listener to join")
    host_1.run(SEND)
    log = host_3.folder / "listen.log"
    wait_for(lambda: "hello from host-1" in log.read_text(), MESSAGE_TIMEOUT, "the message at the listener")
    (line,) = [line for line in log.read_text().splitlines() if line.startswith("{")]
    message = json.loads(line)
    assert message["packets"] == ["hello from host-1"] and message["sender"] == ids[3]
    # Ctrl-C stops the listener, SIGTERM the nodes: each with status 0.
    listener.send_signal(signal.SIGINT)
    assert listener.wait(timeout=30) == 0, log.read_text()
    for host, process in zip(lan.hosts, lan.processes, strict=False):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (host.folder / "node.log").read_text()
        assert "Traceback" not in (host.folder / "node.log").read_text()
