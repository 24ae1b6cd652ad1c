"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.logger import LogEvent, globalLogPublisher

from tests.reference import Reference, ReferenceNode, start_reference, stop_all
from tests.support import MeshNodes

# --- mesh nodes on loopback ----------------------------------------------------------------


@pytest.fixture
def mesh() -> Iterator[MeshNodes]:
    """
    A factory of twisted_mesh nodes on loopback (see `tests.support.MeshNodes`),
    all stopped at teardown.

    Usage: ``node = mesh(max_outgoing=0)`` for a `.MeshSocket` on port 0,
    ``service = mesh.service(listen=["tcp:0:interface=127.0.0.1"])`` for a
    started `.MeshService`.
    """
    nodes = MeshNodes()
    yield nodes
    pytest_twisted.blockon(defer.ensureDeferred(nodes.close()))


# --- reference nodes: py2p / js2p in child processes (see tests/reference) -------------


@pytest.fixture
def reference() -> Iterator[Reference]:
    """A factory of reference mesh nodes, all stopped at teardown.

    Usage: ``node = await reference("py2p", encryption="Plaintext")``; the keyword
    arguments are those of `tests.reference.start_reference`. js2p nodes skip the test when
    npm is not installed.
    """
    started: list[ReferenceNode] = []

    async def start(kind: str, **kwargs: Any) -> ReferenceNode:
        node = await start_reference(kind, **kwargs)
        started.append(node)
        return node

    yield start
    pytest_twisted.blockon(defer.ensureDeferred(stop_all(started)))


# --- end of reference nodes ----------------------------------------------------------------


# --- logs ----------------------------------------------------------------------------------


@pytest.fixture
def log_events() -> Iterator[list[LogEvent]]:
    """Every log event emitted during the test."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
