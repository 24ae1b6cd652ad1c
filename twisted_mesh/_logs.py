"""
How twisted_mesh logs: its public namespaces, node IDs that log text shows
short while the events keep them whole, and `.NodeLogger`, whose events
each name their node.

docs/twistd.rst lists the namespaces and the fields for operators.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.logger import ILogObserver, Logger, LogLevel

#: How many characters of a node ID log text shows (as the web page does).
SHORT_ID = 10

#: The namespaces of twisted_mesh's events.
NODE = "twisted_mesh.node"
LINK = "twisted_mesh.link"
SERVICE = "twisted_mesh.service"
TLS = "twisted_mesh.tls"
WEBSOCKET = "twisted_mesh.websocket"
WEB = "twisted_mesh.web"
TWISTD = "twisted_mesh.twistd"


class LoggedID(str):
    """
    A node ID as a log event holds it: the whole ID (an observer reads it,
    and JSON holds it, as a `str`), that the event's text (`format`, `str`)
    shows as its first `SHORT_ID` characters.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return str.__str__(self)[:SHORT_ID]

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


#: A node ID (or a request's) in text: a long run of base58.
_ID_IN_TEXT = re.compile(r"[1-9A-HJ-NP-Za-km-z]{40,}")


class LoggedText(str):
    """
    Text that may hold node IDs (an error's message, say) as a log event
    holds it: whole in the field, its IDs shown as their first `SHORT_ID`
    characters in the event's text.
    """

    __slots__ = ()

    def __str__(self) -> str:
        return _ID_IN_TEXT.sub(lambda found: found[0][:SHORT_ID], str.__str__(self))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def logged(peer: str | None) -> LoggedID | None:
    """``peer``, a node ID or None, as a log event field."""
    return None if peer is None else LoggedID(peer)


class NodeLogger(Logger):
    """
    A logger of one node: each event carries the node's ID in its ``node``
    field, and its text starts with "node <short ID>: " unless its format
    places ``{node}`` itself.

    :param namespace: one of this module's namespaces.
    :param node_id: the node's ID.
    :param source: the object that logs, the event's ``log_source``.
    :param observer: where the events go; by default, the global log.
    """

    def __init__(
        self, namespace: str, node_id: str, source: object = None, observer: ILogObserver | None = None
    ) -> None:
        super().__init__(namespace, source, observer)
        self.node_id = LoggedID(node_id)

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if format is not None and "{node}" not in format:
            format = "node {node}: " + format
        super().emit(level, format, node=self.node_id, **kwargs)
