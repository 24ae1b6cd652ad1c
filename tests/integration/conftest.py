"""Fixtures of the integration layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import LogEvent

from tests.integration.hostile import Arena, ArenaFactory, open_arena
from tests.integration.twistd import Launcher, Venv, build_venv
from tests.support import MeshNodes


@pytest.fixture
def make_arena(mesh: MeshNodes, log_events: list[LogEvent]) -> Iterator[ArenaFactory]:
    """
    A factory of hostile tests' arenas (`tests.integration.hostile.open_arena`),
    their raw peers and sinks closed at teardown, their nodes stopped.
    """
    made: list[Arena] = []

    async def make(**kwargs: Any) -> Arena:
        return await open_arena(mesh, log_events, made, **kwargs)

    yield make
    pytest_twisted.blockon(defer.gatherResults([defer.ensureDeferred(arena.close()) for arena in made]))


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A virtualenv with the wheel of this checkout installed (`tests.integration.twistd.build_venv`)."""
    return build_venv(tmp_path_factory)


@pytest.fixture
def launch(venv: Venv, tmp_path: Path) -> Iterator[Launcher]:
    """Starts twistd processes; kills those still running at teardown."""
    launcher = Launcher(venv, tmp_path)
    yield launcher
    launcher.kill_all()


@pytest.fixture
def ports() -> Iterator[list[IListeningPort]]:
    """Listening ports (of the WebSocket tests), stopped at teardown."""
    started: list[IListeningPort] = []
    yield started
    pytest_twisted.blockon(defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in started]))
