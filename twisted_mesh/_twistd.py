"""
A node as ``twistd mesh`` runs it: its process, and what it does with the
messages nobody reads.

twistd runs the services and stops them; three things it does not do are
done here, each covered by tests/integration/test_twistd*.py:

- SIGTERM and SIGINT end the process with status 0.  twistd stops cleanly,
  then kills itself with the signal again (so its status says "killed by
  SIGTERM"), and offers no way to exit otherwise.
- A node or web site that cannot listen ends the process with status 1;
  twistd always exits with 0 once its reactor stopped.
- Run as a daemon, a listener that fails at once is reported by twistd's
  launcher (it prints what `.NodeProcess.startService` raises, and exits
  with 1); the daemon's own copy of the error leaves no traceback in the
  log, which says why already.
- ``--log-format json``: twistd writes its log as text, unless the
  application it runs has a log observer (its ``ILogObserver``
  component), which `.NodeProcess` sets as twistd adds it.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, Any

from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.defer import CancelledError
from twisted.internet.error import ReactorNotRunning
from twisted.logger import ILogObserver, jsonFileLogObserver
from twisted.python.components import Componentized
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from twisted_mesh._logs import TWISTD, LoggedID, NodeLogger
from twisted_mesh.message import Message
from twisted_mesh.service import MeshService
from twisted_mesh.web import WebService


class NodeProcess(MultiService):
    """
    The services of a ``twistd mesh`` process: the node, and its web site.
    SIGTERM and SIGINT stop it as a clean exit (status 0).  When the node or
    its web site cannot listen, the process stops once its reactor runs and
    exits with status 1 (after twistd's own shutdown, as the last thing the
    process does).

    :param node: the node.
    :param daemon: whether twistd runs the process as a daemon, its
        launcher waiting for word of the start: then a listener that fails
        at once makes `.startService` raise, for twistd to pass the error
        on to the launcher, which prints it and exits with status 1.
    :param log_observer: the observer of the process's log, in place of
        twistd's text (see `.json_log_observer`).
    """

    def __init__(self, node: MeshService, daemon: bool = False, log_observer: ILogObserver | None = None) -> None:
        super().__init__()
        self._log = NodeLogger(TWISTD, node.id, self)
        self._daemon = daemon
        self._log_observer = log_observer
        self._failure: Failure | None = None
        node.setServiceParent(self)

    def setServiceParent(self, parent: IServiceCollection | Componentized) -> None:
        # twistd adds the process to its application, and logs to the
        # application's observer, if it has one, as it starts.
        if self._log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self._log_observer)
        super().setServiceParent(parent)

    def startService(self) -> None:
        from twisted.internet import reactor as _reactor

        reactor: Any = _reactor
        super().startService()

        def stop_on_signals() -> None:
            # The reactor installs its own handlers as it starts, hence
            # once it runs.  A second signal, while the node stops, changes
            # nothing.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: reactor.callFromThread(_stop, reactor))

        reactor.callWhenRunning(stop_on_signals)
        # twistd starts the services before it runs the reactor, so a
        # listener that fails at once fails before the reactor can stop.
        for service in self:
            if isinstance(service, (MeshService, WebService)):
                service.listening.addErrback(self._could_not_listen, reactor)
        if self._daemon and self._failure is not None:
            # (A builtin exception: the launcher shows 100 bytes of
            # "RuntimeError: ...", and a module path would take many.)
            error = RuntimeError(self._failure.getErrorMessage())
            _no_traceback_for(error)
            raise error

    def _could_not_listen(self, failure: Failure, reactor: Any) -> None:
        if self._failure is not None or failure.check(CancelledError):
            # (Cancelled: the process stopped before it listened.)
            return
        self._failure = failure
        self._log.critical("cannot run without every listener: stopping, with exit status 1")
        atexit.register(_exit_failed)
        reactor.callWhenRunning(_stop, reactor)


def _no_traceback_for(error: BaseException) -> None:
    """
    Let ``error``, if it ends the process, end it without a traceback in the
    log: why is logged already.
    """
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if value is not error:
            previous(kind, value, traceback)

    sys.excepthook = excepthook


def _stop(reactor: Any) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # stopping already


def _exit_failed() -> None:
    """End the process with status 1, after twistd and the other exit handlers."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    os._exit(1)


#: The forms of ``--log-format``.
LOG_FORMATS = ("text", "json")


def json_log_observer(twistd: Mapping[str, Any] | None) -> ILogObserver:
    """
    Twisted's `~twisted.logger.jsonFileLogObserver`, one event a line, on
    the output twistd would log to: stdout with ``-n`` (or ``--logfile
    -``), else ``--logfile`` (by default ``twistd.log``).

    :param twistd: twistd's options, if it runs the node.
    """
    options = twistd or {}
    name = options.get("logfile") or ""
    if name == "-" or (options.get("nodaemon", True) and not name):
        stream: IO[Any] = sys.stdout
    else:
        stream = LogFile.fromFullPath(name or "twistd.log")
    return jsonFileLogObserver(stream, recordSeparator="")


def message_logger(node_id: str) -> Callable[[Message, object], bool]:
    """A handler for the node ``node_id`` that takes each message, and logs it with its packets."""
    log = NodeLogger(TWISTD, node_id)

    def log_message(message: Message, link: object) -> bool:
        log.info("message from {sender}: {packets!r}", sender=LoggedID(message.sender), packets=message.packets)
        return True

    return log_message


def take_message(message: Message, link: object) -> bool:
    """A handler that takes each message, so that none waits in the queue."""
    return True
