"""
The pure parts of the ``twisted-mesh`` command: its arguments, its usage
errors, and the forms it prints messages and peers in.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.python.usage import UsageError

from tests.support import MESH
from tests.unit.node_support import arriving
from twisted_mesh import Network, NodeKey, __version__, flags
from twisted_mesh._cli import render
from twisted_mesh._cli.main import main
from twisted_mesh._cli.options import ListenOptions, PeersOptions, SendOptions
from twisted_mesh._ids import new_node_id
from twisted_mesh.message import Message, SendResult


def message(msg_type: int, *packets: Any) -> Message:
    """A message as a client gets it."""
    return Message(arriving(msg_type, new_node_id(MESH), packets, time=1700000000), lambda *_: SendResult())


# -- arguments -----------------------------------------------------------------------------


def test_send_takes_an_endpoint_and_packets() -> None:
    options = SendOptions("twisted-mesh send")
    options.parseOptions(["--subnet", "chat", "--whisper", "127.0.0.1:4444", "hello", "mesh"])
    assert options["peer"] == ("127.0.0.1", 4444)
    assert options["packets"] == ["hello", "mesh"] and options["whisper"]
    assert options["network"] == Network("chat", "Plaintext")


@pytest.mark.parametrize(
    "endpoint", ["tcp:host=127.0.0.1:port=4444", "tcp:127.0.0.1:4444", "ws:127.0.0.1:4444", "unix:/run/mesh"]
)
def test_an_endpoint_string_is_kept_as_it_is(endpoint: str) -> None:
    options = ListenOptions("twisted-mesh listen")
    options.parseOptions([endpoint])
    assert options["peer"] == endpoint


def test_ipv6_host_port() -> None:
    options = PeersOptions("twisted-mesh peers")
    options.parseOptions(["--json", "--signed", "[::1]:4444"])
    assert options["peer"] == ("::1", 4444) and options["json"]
    assert options["network"] == Network("mesh", "Plaintext", signed=True)


def test_send_json_packets() -> None:
    options = SendOptions("twisted-mesh send")
    options.parseOptions(["--json", "127.0.0.1:1", '"text"', "42", '{"base64": "AAEC"}', '[1, {"map": [["k", null]]}]'])
    assert options["packets"] == ["text", 42, b"\x00\x01\x02", [1, {"k": None}]]


BAD = [
    (SendOptions, [], "give the ENDPOINT"),
    (SendOptions, ["127.0.0.1:1"], "give at least one PACKET"),
    (SendOptions, ["--stdin", "127.0.0.1:1", "x"], "give no PACKET"),
    (SendOptions, ["--json", "127.0.0.1:1", "{nope"], "not a packet"),
    (SendOptions, ["--json", "127.0.0.1:1", '{"other": 1}'], "not a packet"),
    (ListenOptions, ["nohost"], "'nohost' is not HOST:PORT"),
    (ListenOptions, ["bogus:1:x=y"], "bogus"),
    (ListenOptions, ["127.0.0.1:1", "extra"], "unexpected argument 'extra'"),
    (ListenOptions, ["--transport", "TCP", "127.0.0.1:1"], "--transport must be one of"),
    (ListenOptions, ["--subnet", "", "127.0.0.1:1"], "--subnet must not be empty"),
    (PeersOptions, ["--timeout", "0", "127.0.0.1:1"], "--timeout"),
    (PeersOptions, ["--key", "/nonexistent/key.pem", "127.0.0.1:1"], "--key: "),
    (PeersOptions, ["--tls-ca", "ca.pem", "127.0.0.1:1"], "--tls-ca needs --tls-cert"),
    (PeersOptions, ["--tls-key", "key.pem", "127.0.0.1:1"], "--tls-key needs --tls-cert"),
    (PeersOptions, ["--tls-cert", "/nonexistent/cert.pem", "127.0.0.1:1"], "cannot read /nonexistent/cert.pem"),
]


@pytest.mark.parametrize(("kind", "args", "error"), BAD, ids=[" ".join(args) or "nothing" for _, args, _ in BAD])
def test_bad_arguments(kind: type[SendOptions], args: list[str], error: str) -> None:
    with pytest.raises(UsageError, match=error):
        kind("twisted-mesh x").parseOptions(args)


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["key"], "twisted-mesh key: error: give the FILE of a key"),
        (["key", "a.pem", "b.pem"], "twisted-mesh key: error: unexpected argument 'b.pem'"),
        (["send", "127.0.0.1:1"], "twisted-mesh send: error: give at least one PACKET to send (or --stdin) "),
        (["listen", "--nope"], "twisted-mesh listen: error: option --nope not recognized (see twisted-mesh listen"),
        (["frob"], "twisted-mesh: error: unknown command 'frob'"),
        (["--max-outgoing", "-1"], "twisted-mesh: error: --max-outgoing must not be negative (see twisted-mesh node"),
        (["node", "--transport", "x"], "twisted-mesh node: error: --transport must be one of"),
        (["--port", "x"], "twisted-mesh: error: --port takes a whole number, not 'x' (see twisted-mesh node --help)"),
        (["peers", "--timeout", "soon", "127.0.0.1:1"], "twisted-mesh peers: error: --timeout takes a number"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_status_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(line) and err.endswith(" --help)\n") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "argv", [["--version"], ["send", "--version"], ["node", "--version"], ["--port", "1", "--version"]]
)
def test_version(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"twisted_mesh {__version__}\n"


@pytest.mark.parametrize(("argv", "usage"), [(["--help"], "[COMMAND]"), (["node", "--help"], "node [options]")])
def test_help_names_the_command_and_the_node_options(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv, prog="python -m twisted_mesh")
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Usage: python -m twisted_mesh {usage}") and "--listen=" in text


def test_key_makes_a_key_once_and_prints_its_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``key FILE`` prints the ID an allow-list lists: of a new key (mode 0600) the first time, the same after."""
    path = tmp_path / "node.pem"
    for made in (True, False):
        with pytest.raises(SystemExit) as exit:
            main(["key", str(path)])
        assert exit.value.code == 0
        out, err = capsys.readouterr()
        assert out == NodeKey.load(path).node_id + "\n"
        assert (err == f"twisted-mesh key: made a new key in {path}\n") is made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_names_a_file_that_holds_no_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a key")
    with pytest.raises(SystemExit) as exit:
        main(["key", str(path)])
    assert exit.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"twisted-mesh key: {path} holds no unencrypted PEM private key")


# -- what the clients print ----------------------------------------------------------------


def test_the_json_form_of_a_message() -> None:
    msg = message(flags.broadcast, flags.broadcast, "hi", b"\xff\x00", 7, [1.5, None], {"k": b"v"})
    form = json.loads(render.json_line(render.message_json(msg)))
    assert form == {
        "sender": msg.sender,
        "id": msg.id.hex(),
        "time": 1700000000,
        "msg_type": "broadcast",
        "sub_flag": "broadcast",
        "packets": ["hi", {"base64": "/wA="}, 7, [1.5, None], {"map": [["k", {"base64": "dg=="}]]}],
    }
    assert [render.from_json(packet) for packet in form["packets"]] == ["hi", b"\xff\x00", 7, [1.5, None], {"k": b"v"}]


def test_the_json_form_names_a_whisper_and_numbers_other_flags() -> None:
    form = render.message_json(message(flags.whisper, 0x40, "x"))
    assert form["msg_type"] == "whisper" and form["sub_flag"] == 0x40 and form["packets"] == ["x"]


def test_json_without_nan() -> None:
    packet = render.to_json(float("nan"))
    assert json.loads(render.json_line(packet)) == {"float": "nan"}
    assert render.from_json({"float": "-inf"}) == float("-inf")


def test_a_message_as_text() -> None:
    msg = message(flags.broadcast, flags.broadcast, "hello", "two\nlines", b"\x01", 3)
    assert render.message_text(msg) == f'{msg.sender[:10]} broadcast: hello two\\nlines {{"base64":"AQ=="}} 3'


def test_peers_as_a_table_and_json() -> None:
    a, b = new_node_id(MESH), new_node_id(MESH)
    peers = [(("127.0.0.1", 4444), a), (("::1", 5), b)]
    lines = render.peers_table(peers).splitlines()
    assert lines[0].split() == ["NODE", "ID", "ADDRESS"]
    assert lines[1].split() == [a, "127.0.0.1:4444"] and lines[2].split() == [b, "[::1]:5"]
    assert render.peers_json(peers) == [
        {"id": a, "host": "127.0.0.1", "port": 4444},
        {"id": b, "host": "::1", "port": 5},
    ]
