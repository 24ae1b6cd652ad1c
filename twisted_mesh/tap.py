"""
The ``twistd mesh`` command: its options, and the service they make.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from twisted_mesh._core.exchange import DEFAULT_MAX_OUTGOING
from twisted_mesh._ids import ENCRYPTIONS, Network, is_node_id
from twisted_mesh._logs import TWISTD, NodeLogger
from twisted_mesh._service.arguments import check_endpoints, parse_host_port, parse_peers
from twisted_mesh._service.endpoints import encryption_of
from twisted_mesh._twistd import LOG_FORMATS, NodeProcess, json_log_observer, message_logger, take_message
from twisted_mesh.keys import NodeKey
from twisted_mesh.service import MeshService
from twisted_mesh.tls import TLSOptions
from twisted_mesh.web import WebService, site_prefix

#: The port a node listens on without --port or --listen.
_DEFAULT_PORT = 4444


def _whole_number(option: str) -> Callable[[str], int]:
    """
    The type of the option ``--option``, a whole number: its error names
    the option (Twisted's own says ``invalid literal for int()``).
    """

    def coerce(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--{option} takes a whole number, not {text!r}") from None

    return coerce


def _check_tls_folder(description: str) -> None:
    """
    Twisted's ``tls:`` server string takes a folder of PEM files first, and
    ``port=`` (443 by default): ``tls:4444`` would listen on port 443 with a
    folder named ``4444``.
    """
    kind, _, rest = description.partition(":")
    if kind.lower() != "tls":
        return
    args = rest.split(":")
    paths = [arg[len("path=") :] for arg in args if arg.startswith("path=")]
    folder = (paths or [arg for arg in args if "=" not in arg] or [""])[0]
    if not os.path.isdir(folder):
        raise usage.UsageError(
            f"bad endpoint {description!r}: tls: listens with a folder of PEM files (certificate and key) first, "
            f"then port= (443 by default), as in tls:/etc/mesh/pems:port=4444; {folder!r} is not a folder"
        )


def _allow_list(path: str) -> frozenset[str]:
    """The node IDs of an --allow file: one a line; blank lines and ``#`` comments skipped."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise usage.UsageError(f"--allow: cannot read {path}: {e}") from None
    ids = []
    for number, line in enumerate(lines, 1):
        text = line.partition("#")[0].strip()
        if not text:
            continue
        if not is_node_id(text):
            raise usage.UsageError(f"--allow: {path}, line {number}: {text!r} is not a node ID")
        ids.append(text)
    return frozenset(ids)


class Options(usage.Options):
    """The options of ``twistd mesh``."""

    synopsis = "[options]"
    longdesc = (
        "Run a mesh node of the p2p-today protocol 0.7, which meshes with "
        "twisted_mesh, py2p and js2p nodes of the same subnet and transport."
    )

    optParameters = [
        [
            "port",
            "p",
            None,
            f"The port to listen on, on every interface, over --transport (TCP, TLS or WebSocket), when no --listen "
            f"is given (default: {_DEFAULT_PORT}).",
            _whole_number("port"),
        ],
        ["subnet", "s", "mesh", "The subnet: only nodes of the same subnet and transport mesh."],
        ["transport", "t", "Plaintext", "The transport: " + ", ".join(ENCRYPTIONS) + "."],
        [
            "out-addr",
            None,
            None,
            "HOST:PORT other nodes should dial (default: the address of the first listener, the LAN address when "
            "it listens on every interface).",
        ],
        [
            "max-outgoing",
            None,
            DEFAULT_MAX_OUTGOING,
            "How many connections peer exchange may dial.",
            _whole_number("max-outgoing"),
        ],
        [
            "max-incoming",
            None,
            None,
            "How many peers that dialled it the node keeps; past it, newcomers get other peers to dial and are let "
            "go (default: three times --max-outgoing, at least 12).",
            _whole_number("max-incoming"),
        ],
        [
            "tls-cert",
            None,
            None,
            "PEM certificate (with its key, or see --tls-key) for the SSL/wss links of --port, of HOST:PORT peers and "
            "of the peers found through them; an ssl:, tls: or wss: endpoint string names its own.",
        ],
        ["tls-key", None, None, "PEM private key of --tls-cert, when it is a file of its own (needs --tls-cert)."],
        [
            "key",
            None,
            None,
            "PEM file of the node's Ed25519 key, made (mode 0600) when missing: the node's ID is the key's, the "
            "same across restarts, and on a --signed network the node proves it.",
        ],
        [
            "web-prefix",
            None,
            "/",
            "The path --web serves its page, /status, /metrics and the browsers' WebSocket under, for a reverse "
            "proxy that forwards that path (e.g. /mesh/); nodes still dial the WebSocket at /.",
        ],
        [
            "allow",
            None,
            None,
            "File of the node IDs let in, one a line ('#' starts a comment): anyone else is refused at the "
            "handshake (needs --signed).",
        ],
        [
            "tls-ca",
            None,
            None,
            "PEM certificate of the authority that signs every node's certificate: verify peers with it "
            "(needs --tls-cert). Without it, SSL/wss links verify nobody, and use --tls-cert or a self-signed "
            "certificate.",
        ],
        [
            "log-format",
            None,
            "text",
            "How the log is written, to stdout (-n) or twistd's log file: text, or json (one JSON object a line).",
        ],
    ]
    optFlags = [
        ["verbose", "v", "Also log each message this node receives, with its packets."],
        [
            "signed",
            None,
            "Join the signed network of the subnet: each node proves its key at the handshake and signs every "
            "message; only twisted_mesh nodes with --signed join it.",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["connect"] = []
        self["web"] = None

    def opt_web(self, endpoint: str) -> None:
        if self["web"] is not None:
            raise usage.UsageError("--web is given twice: a node serves one web site")
        self["web"] = endpoint

    # (--help shows a docstring as it is, line breaks and indentation included.)
    opt_web.__doc__ = (
        "Serve a status page, /status, /metrics, the browser client and the mesh over WebSocket on this port "
        "(or endpoint string; ssl: or tls: for https and wss)."
    )

    def opt_version(self) -> None:
        """Print twisted_mesh's version, and exit."""
        import twisted_mesh

        print(f"twisted_mesh {twisted_mesh.__version__}")
        sys.exit(0)

    def opt_listen(self, endpoint: str) -> None:
        """An endpoint string to listen on, such as tcp:4444 (repeatable)."""
        self["listen"].append(endpoint)

    def opt_connect(self, peer: str) -> None:
        """A peer to dial at start: HOST:PORT or an endpoint string (repeatable)."""
        self["connect"].append(peer)

    def postOptions(self) -> None:
        if self["transport"] not in ENCRYPTIONS:
            raise usage.UsageError(f"--transport must be one of {', '.join(ENCRYPTIONS)}")
        if self["port"] is not None and not 0 <= self["port"] < 65536:
            raise usage.UsageError("--port must be between 0 and 65535")
        if self["port"] is not None and self["listen"]:
            raise usage.UsageError("--port is for a node without --listen: give --listen tcp:PORT (or ssl:, ws:...)")
        if self["max-outgoing"] < 0:
            raise usage.UsageError("--max-outgoing must not be negative")
        if self["max-incoming"] is not None and self["max-incoming"] < 0:
            raise usage.UsageError("--max-incoming must not be negative")
        if self["out-addr"] is not None:
            self["out-addr"] = parse_host_port(self["out-addr"])
        self["protocol"] = Network(self["subnet"], self["transport"], bool(self["signed"]))
        if self["allow"] is not None:
            if not self["signed"]:
                raise usage.UsageError("--allow needs --signed: only on a signed network do peers prove their IDs")
            self["allow"] = _allow_list(self["allow"])
        self["key-made"], self["key-path"] = False, self["key"]
        if self["key"] is not None:
            try:
                self["key"], self["key-made"] = NodeKey.load_or_create(self["key"])
            except (OSError, ValueError) as e:
                raise usage.UsageError(f"--key: {e}") from None
        web = self["web"]
        if web is not None and web.isdigit():
            if not 0 <= int(web) < 65536:
                raise usage.UsageError(f"--web {web}: a port must be between 0 and 65535")
            self["web"] = f"tcp:{web}"
        try:
            self["web-prefix"] = site_prefix(self["web-prefix"])
        except ValueError as e:
            raise usage.UsageError(f"--web-prefix: {e}") from None
        if self["web-prefix"] != "/" and web is None:
            raise usage.UsageError("--web-prefix needs --web: the site it puts under a path")
        servers = [*self["listen"], *([self["web"]] if web is not None else [])]
        check_endpoints(serverFromString, servers)
        for description in servers:
            _check_tls_folder(description)
        self["connect"] = parse_peers(self["connect"])
        if self["tls-ca"] and not self["tls-cert"]:
            raise usage.UsageError("--tls-ca needs --tls-cert: this node's certificate, signed by that authority")
        if self["tls-key"] and not self["tls-cert"]:
            raise usage.UsageError("--tls-key needs --tls-cert: the certificate of that key")
        self["tls"] = None
        if self["tls-cert"] or self["tls-ca"]:
            try:
                self["tls"] = TLSOptions.from_files(self["tls-cert"], self["tls-key"], self["tls-ca"])
            except Exception as e:
                raise usage.UsageError(f"cannot load the TLS files: {e}") from None
            if not self._has_tls_links():
                raise usage.UsageError(
                    "--tls-cert, --tls-key and --tls-ca secure SSL and wss links, and this node has none: "
                    "give --transport SSL or wss, or an ssl:, tls: or wss: endpoint"
                )
        if not self["listen"]:
            self["listen"] = [_DEFAULT_PORT if self["port"] is None else self["port"]]
        if self["log-format"] not in LOG_FORMATS:
            raise usage.UsageError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        if self["log-format"] == "json" and (getattr(self, "parent", None) or {}).get("syslog"):
            raise usage.UsageError("--log-format json writes to stdout or the log file, not to syslog")

    def _has_tls_links(self) -> bool:
        """
        Whether the node may have SSL or wss links, whose TLS the --tls
        options make: links of its own transport, or of a TLS listener,
        web site or peer (and of the peers found through them).
        """
        main = self["transport"]
        transports = {main}
        transports |= {encryption_of(description, main) for description in self["listen"]}
        transports |= {encryption_of(peer, main) for peer in self["connect"] if isinstance(peer, str)}
        if self["web"] is not None:
            transports.add(encryption_of(self["web"], "Plaintext"))
        return bool(transports & {"SSL", "wss"})


def makeService(options: Options) -> NodeProcess:
    """Make the node ``options`` describe, with its web face if asked."""
    node = MeshService(
        options["protocol"],
        listen=options["listen"],
        connect=options["connect"],
        tls=options["tls"],
        out_addr=options["out-addr"],
        max_outgoing=options["max-outgoing"],
        max_incoming=options["max-incoming"],
        key=options["key"],
        allow=options["allow"],
    )
    if options["key"] is not None:
        made = "made now" if options["key-made"] else "loaded"
        log = NodeLogger(TWISTD, node.id)
        log.info("node key {path} ({made}): node ID {node_id}", path=options["key-path"], made=made, node_id=node.id)
    json_log = json_log_observer(getattr(options, "parent", None)) if options["log-format"] == "json" else None
    top = NodeProcess(node, daemon=_daemonizing(options), log_observer=json_log)
    # Nobody reads this node's queue: take every message, logging it if asked.
    node.register_handler(message_logger(node.id) if options["verbose"] else take_message)
    if options["web"] is not None:
        WebService(node, options["web"], prefix=options["web-prefix"]).setServiceParent(top)
    return top


def _daemonizing(options: Options) -> bool:
    """
    Whether twistd (the parent command of ``options``) runs the node as a
    daemon, its launcher waiting for word of the start (POSIX only).
    """
    twistd = getattr(options, "parent", None)
    return os.name == "posix" and twistd is not None and not twistd.get("nodaemon", True)
