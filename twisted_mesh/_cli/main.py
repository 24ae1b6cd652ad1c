"""
``twisted-mesh COMMAND ...`` and ``python -m twisted_mesh COMMAND ...``:
the commands, dispatched.  With no command, or options first, the command
is ``node``, so that ``python -m twisted_mesh --port 4444`` runs a node.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from twisted.internet.defer import ensureDeferred
from twisted.python import usage

from twisted_mesh._cli import client
from twisted_mesh._cli.node import node_options, run_node
from twisted_mesh._cli.options import (
    ClientOptions,
    KeyOptions,
    ListenOptions,
    PeersOptions,
    SendOptions,
    print_version,
    usage_error,
)
from twisted_mesh.keys import NodeKey

Run = Callable[[dict[str, Any], Any], Coroutine[Any, Any, None]]

#: The clients: their options, and what they do.
CLIENTS: dict[str, tuple[type[ClientOptions], Run]] = {
    "send": (SendOptions, client.send),
    "listen": (ListenOptions, client.listen),
    "peers": (PeersOptions, client.peers),
}

HELP = """\
Usage: {prog} [COMMAND] [options] ...

Commands:
  node     run a mesh node, with the options of `twistd mesh` (below);
           the command when none is given
  send     join the mesh through a node, and send a message (or one for
           each line of standard input)
  listen   join the mesh through a node, and print each message
  peers    ask a node for its peers
  key      print the node ID of a key file, making the key when missing

`{prog} COMMAND --help` tells of each.  The options of node:
"""


def main(argv: Sequence[str] | None = None, prog: str = "twisted-mesh") -> NoReturn:
    """Run the command of ``argv`` (by default, the process's arguments)."""
    args = list(sys.argv[1:] if argv is None else argv)
    first = args[0] if args else None
    if first in ("-h", "--help"):
        print(HELP.format(prog=prog))
        print(node_options(f"{prog} node")().getUsage().removeprefix("Options:\n"), end="")
        sys.exit(0)
    if first == "--version":
        print_version()
    if first == "node":
        run_node(f"{prog} node", args[1:])
    if first is None or first.startswith("-"):
        run_node(prog, args, f"{prog} node")
    if first == "key":
        run_key(f"{prog} key", args[1:])
    if first not in CLIENTS:
        usage_error(prog, f"unknown command {first!r}: use node, send, listen, peers or key")
    make_options, run = CLIENTS[first]
    command = f"{prog} {first}"
    options = make_options(command)
    try:
        options.parseOptions(args[1:])
    except usage.UsageError as e:
        usage_error(command, e)
    run_client(command, run, options)


def run_key(command: str, args: list[str]) -> NoReturn:
    """
    ``key FILE``: print the node ID of the Ed25519 key in ``FILE``, made
    (mode 0600) when there is no such file; what an allow-list lists.
    """
    options = KeyOptions(command)
    try:
        options.parseOptions(args)
    except usage.UsageError as e:
        usage_error(command, e)
    try:
        key, made = NodeKey.load_or_create(options["file"])
    except (OSError, ValueError) as e:
        print(f"{command}: {e}", file=sys.stderr)
        sys.exit(1)
    if made:
        print(f"{command}: made a new key in {options['file']}", file=sys.stderr)
    print(key.node_id)
    sys.exit(0)


def run_client(command: str, run: Run, options: ClientOptions) -> NoReturn:
    """Run a client until it is done (exit status 0), fails (1, with one line saying why) or is stopped (0)."""
    from twisted.internet import reactor as _reactor
    from twisted.internet import task
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    reactor: Any = _reactor
    level = LogLevel.info if options["verbose"] else LogLevel.critical
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(level)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    def stop_on_signals() -> None:
        # (Also when the shell that started it ignores SIGINT, as it does
        # for a background job: the reactor leaves an ignored SIGINT be.)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: reactor.callFromThread(reactor.stop))

    reactor.callWhenRunning(stop_on_signals)

    async def main(reactor: Any) -> None:
        try:
            await run(options, reactor)
        except client.CommandFailed as e:
            print(f"{command}: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    task.react(lambda reactor: ensureDeferred(main(reactor)), _reactor=reactor)
