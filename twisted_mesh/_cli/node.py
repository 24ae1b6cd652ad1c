"""
``twisted-mesh node``: the node of ``twistd -n mesh``, with its options,
under the command's own name, and with one line for a usage error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

from twisted.application.service import ServiceMaker
from twisted.python import usage

from twisted_mesh import tap
from twisted_mesh._cli.options import usage_error

#: What ``twistd`` is given before the node's options: the node runs in the
#: foreground, with no pid file.
TWISTD_ARGS = ["--nodaemon", "--pidfile=", "mesh"]


def node_options(command: str) -> type[tap.Options]:
    """The options of ``twistd mesh``, whose help names ``command``."""

    class NodeOptions(tap.Options):
        def getSynopsis(self) -> str:
            return f"Usage: {command} [options]"

    return NodeOptions


#: The ``mesh`` plugin of twistd, as twisted/plugins/mesh.py makes it.
MESH = ServiceMaker("twisted_mesh", "twisted_mesh.tap", "A node of a p2p-today mesh network.", "mesh")


def run_node(command: str, args: list[str], help_command: str | None = None) -> NoReturn:
    """
    Run ``twistd -n mesh ARGS``: a usage error is one line, and exits with
    status 2.

    :param command: the command, as the help and the errors name it.
    :param help_command: the command whose ``--help`` a usage error points
        to, when not ``command``.
    """
    from twisted.scripts import twistd
    from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

    options = node_options(command)

    class NodeServerOptions(ServerOptions):
        @property
        def subCommands(self) -> Iterator[tuple[str, None, Any, str]]:
            self.loadedPlugins = {"mesh": MESH}
            yield ("mesh", None, options, MESH.description)

    config = NodeServerOptions()
    try:
        config.parseOptions([*TWISTD_ARGS, *args])
    except usage.UsageError as e:
        usage_error(command, e, help_command)
    twistd.runApp(config)
    raise SystemExit(0)
