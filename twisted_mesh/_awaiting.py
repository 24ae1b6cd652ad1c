"""
What a node hands to ``async for`` and ``async with``, where its user holds
no Deferred to adapt: a Deferred for a coroutine that Twisted runs, an
asyncio future for one that an asyncio task runs.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable
from types import FrameType
from typing import TypeVar

from twisted.internet.defer import Deferred

_T = TypeVar("_T")

# The frames of a chain of awaits: coroutines, and generators (Deferred's
# __await__, inlineCallbacks).
_SUSPENDABLE = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


def _driver(frame: FrameType | None) -> FrameType | None:
    """
    The frame that runs the coroutine ``frame`` is in (or the first
    coroutine among its callers): the caller of the outermost coroutine of
    its chain of awaits.
    """
    while frame is not None and not frame.f_code.co_flags & _SUSPENDABLE:
        frame = frame.f_back
    while frame is not None and frame.f_code.co_flags & _SUSPENDABLE:
        frame = frame.f_back
    return frame


def awaitable(d: Deferred[_T]) -> Awaitable[_T]:
    """
    ``d``, to be awaited by the coroutine that asks for it: as it is when
    Twisted runs the coroutine (`~twisted.internet.defer.Deferred.fromCoroutine`,
    ``react``...), even from within an asyncio task; as an `asyncio.Future`
    of the running loop when an asyncio task runs it (a task cannot await a
    Deferred).
    """
    driver = _driver(sys._getframe(1))
    if driver is not None and driver.f_globals.get("__name__") == "twisted.internet.defer":
        return d
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return d
    return d if asyncio.current_task(loop) is None else d.asFuture(loop)
