"""
The options of the clients (``send``, ``listen``, ``peers``), and the one
line a usage error prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from twisted.python import usage

import twisted_mesh
from twisted_mesh._cli.render import from_json
from twisted_mesh._ids import ENCRYPTIONS, Network
from twisted_mesh._service.arguments import parse_peers
from twisted_mesh.keys import NodeKey
from twisted_mesh.tls import TLSOptions

#: The exit status of a usage error, as argparse's.
USAGE_STATUS = 2

#: How long a client waits, by default, to join and for an answer.
DEFAULT_TIMEOUT = 10.0


def usage_error(command: str, error: object, help_command: str | None = None) -> NoReturn:
    """
    Print one line: what is wrong, and how to see the help (of
    ``help_command``, by default ``command``); exit with `.USAGE_STATUS`.
    """
    text = str(error).rstrip(".").replace("\n", " ").removeprefix("Parameter type enforcement failed: ")
    print(f"{command}: error: {text} (see {help_command or command} --help)", file=sys.stderr)
    sys.exit(USAGE_STATUS)


def print_version() -> NoReturn:
    """Print twisted_mesh's version, and exit."""
    print(f"twisted_mesh {twisted_mesh.__version__}")
    sys.exit(0)


def _seconds(text: str) -> float:
    """The type of ``--timeout``: its error names the option."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--timeout takes a number of seconds, not {text!r}") from None


class CommandOptions(usage.Options):
    """
    The options of a command of ``twisted-mesh`` (but ``node``, which are
    ``twistd mesh``'s): its name in its help, and ``--version``.

    :ivar command: the command's name, as the user typed it, for its help
        and its errors (``twisted-mesh send``).
    """

    #: What follows the options in the synopsis.
    arguments = ""

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command

    def getSynopsis(self) -> str:
        return f"Usage: {self.command} [options] {self.arguments}"

    def opt_version(self) -> None:
        """Print twisted_mesh's version, and exit."""
        print_version()


class ClientOptions(CommandOptions):
    """What every client takes: the node to join through, and the network."""

    optParameters: list[list[Any]] = [
        ["subnet", "s", "mesh", "The subnet of the node."],
        ["transport", "t", "Plaintext", "The node's transport: " + ", ".join(ENCRYPTIONS) + "."],
        [
            "key",
            None,
            None,
            "PEM file of this client's Ed25519 key (made, mode 0600, when missing): its node ID, which a "
            "--signed node with an allow-list checks. Without it, a new ID each run.",
        ],
        ["timeout", None, DEFAULT_TIMEOUT, "Seconds to wait to join, and for each answer.", _seconds],
        [
            "tls-cert",
            None,
            None,
            "PEM certificate (with its key, or see --tls-key) this client shows over SSL or wss: for a node that "
            "verifies its peers (one run with --tls-ca).",
        ],
        ["tls-key", None, None, "PEM private key of --tls-cert, when it is a file of its own."],
        [
            "tls-ca",
            None,
            None,
            "PEM certificate of the authority that signed the node's certificate: verify the node with it "
            "(needs --tls-cert). Without it, the node's certificate is not verified.",
        ],
    ]
    optFlags: list[list[str | None]] = [
        ["signed", None, "Join the signed network of the subnet (a node run with --signed)."],
        ["verbose", "v", "Log what the client's node does, to stderr."],
    ]
    arguments = "ENDPOINT"

    def parseArgs(self, endpoint: str | None = None, *rest: str) -> None:
        if endpoint is None:
            raise usage.UsageError("give the ENDPOINT of a node: HOST:PORT or an endpoint string")
        self["endpoint"] = endpoint
        self.parse_rest(rest)

    def parse_rest(self, rest: tuple[str, ...]) -> None:
        """The arguments after ENDPOINT: none, unless a command takes them."""
        if rest:
            raise usage.UsageError(f"unexpected argument {rest[0]!r}")

    def postOptions(self) -> None:
        if self["transport"] not in ENCRYPTIONS:
            raise usage.UsageError(f"--transport must be one of {', '.join(ENCRYPTIONS)}")
        if not self["timeout"] > 0:
            raise usage.UsageError("--timeout must be a positive number of seconds")
        if not self["subnet"]:
            raise usage.UsageError("--subnet must not be empty")
        self["network"] = Network(self["subnet"], self["transport"], bool(self["signed"]))
        [self["peer"]] = parse_peers([self["endpoint"]])
        self["tls"] = None
        if self["tls-ca"] and not self["tls-cert"]:
            raise usage.UsageError("--tls-ca needs --tls-cert: this client's certificate, signed by that authority")
        if self["tls-key"] and not self["tls-cert"]:
            raise usage.UsageError("--tls-key needs --tls-cert: the certificate of that key")
        if self["tls-cert"]:
            try:
                self["tls"] = TLSOptions.from_files(self["tls-cert"], self["tls-key"], self["tls-ca"])
            except ValueError as e:
                raise usage.UsageError(f"cannot load the TLS files: {e}") from None
        if self["key"] is not None:
            try:
                self["key"], _ = NodeKey.load_or_create(self["key"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--key: {e}") from None


class SendOptions(ClientOptions):
    """The options of ``send``."""

    optFlags = [
        *ClientOptions.optFlags,
        ["whisper", "w", "Whisper to the node only (its user gets it), instead of a broadcast to the whole mesh."],
        ["stdin", None, "Send one message per line of standard input (instead of PACKETs), until its end."],
        [
            "json",
            "j",
            'Read each PACKET as JSON (bytes as {"base64": ...}); with --stdin, each line is a JSON list of packets.',
        ],
    ]
    arguments = "ENDPOINT PACKET..."
    longdesc = (
        "Join the mesh through the node at ENDPOINT, send one message whose packets are the PACKETs (strings), "
        "wait until the node has it, and exit."
    )

    def parse_rest(self, rest: tuple[str, ...]) -> None:
        self["packets"] = list(rest)

    def postOptions(self) -> None:
        if self["stdin"] and self["packets"]:
            raise usage.UsageError("--stdin sends the lines of standard input: give no PACKET with it")
        if not self["stdin"] and not self["packets"]:
            raise usage.UsageError("give at least one PACKET to send (or --stdin)")
        if self["json"] and not self["stdin"]:
            self["packets"] = [parse_json_packet(text) for text in self["packets"]]
        super().postOptions()


def parse_json_packet(text: str) -> Any:
    """
    One packet given as JSON (see `twisted_mesh._cli.render`).

    :raise usage.UsageError: when it is not JSON, or not a packet.
    """
    try:
        return from_json(json.loads(text))
    except ValueError as e:
        raise usage.UsageError(f"--json: {text!r} is not a packet: {e}") from None


class ListenOptions(ClientOptions):
    """The options of ``listen``."""

    optFlags = [
        *ClientOptions.optFlags,
        ["json", "j", "Print each message as one line of JSON (see the docs for its fields)."],
    ]
    longdesc = (
        "Join the mesh through the node at ENDPOINT and print each message that reaches this client (the "
        "mesh's broadcasts, and whispers to it), one a line, until Ctrl-C."
    )


class PeersOptions(ClientOptions):
    """The options of ``peers``."""

    optFlags = [
        *ClientOptions.optFlags,
        ["json", "j", "Print a JSON list: id, host and port of each."],
    ]
    longdesc = (
        "Ask the node at ENDPOINT for its peers, over the mesh protocol, and print them (node ID and the "
        "address to dial)."
    )


class KeyOptions(CommandOptions):
    """The options of ``key FILE``: none but ``--version``."""

    arguments = "FILE"

    def parseArgs(self, path: str | None = None, *rest: str) -> None:
        if path is None:
            raise usage.UsageError("give the FILE of a key (PEM): it is made when missing")
        if rest:
            raise usage.UsageError(f"unexpected argument {rest[0]!r}")
        self["file"] = path
