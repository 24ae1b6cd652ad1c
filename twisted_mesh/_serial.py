"""
The serial of a message: msgpack, ``bytes`` as bin and ``str`` as str,
read with bounds on nesting and on the lists and maps a value may hold.

Pure: no I/O, no reactor.
"""

from __future__ import annotations

from typing import Any

import msgpack

from twisted_mesh.limits import Limits

#: The default depth to which lists and maps may nest in a message.
MAX_DEPTH = Limits.max_depth

#: The default most items of one list or map in a message.
MAX_ITEMS = Limits.max_items


class FrameError(ValueError):
    """A frame that cannot be accepted: its text says why."""


#: The types of what msgpack reads that _check_structure looks into.
_NESTED = frozenset((list, dict, msgpack.Timestamp))


def _reject_ext(code: int, data: bytes) -> Any:
    raise FrameError(f"msgpack extension type {code} is not allowed")


def _check_structure(value: Any, max_depth: int) -> None:
    """
    Refuse lists and maps nested deeper than ``max_depth``, and the timestamp
    extension, which msgpack decodes itself without asking ``ext_hook``.
    """
    # Level by level, so that the scalars of a level are looked at in C
    # (msgpack makes exact lists, dicts and Timestamps, never subclasses).
    # A message is a list: start with its items, at depth 1.
    if type(value) is list and max_depth > 0:
        level, depth = value, 1
    else:
        level, depth = [value], 0
    while not _NESTED.isdisjoint(map(type, level)):
        children: list[Any] = []
        for item in level:
            kind = type(item)
            if kind is list:
                children += item
            elif kind is dict:
                children += item
                children += item.values()
            elif kind is msgpack.Timestamp:
                raise FrameError("msgpack extension type -1 is not allowed")
        if depth >= max_depth:
            raise FrameError(f"lists and maps nest deeper than {max_depth}")
        level = children
        depth += 1


def pack(obj: Any) -> bytes:
    """
    Serialize ``obj`` with msgpack, ``bytes`` as bin and ``str`` as str.

    :raise TypeError: when ``obj`` holds a value msgpack cannot write.
    """
    packed: bytes = _packer.pack(obj)
    return packed


#: The packer of every message: making one per message (as ``msgpack.packb``
#: does) costs more than the packing.  Its buffer grows to the largest
#: message this process packed, and stays.
_packer = msgpack.Packer(use_bin_type=True, buf_size=4096)


class _ContainerBudget:
    """
    Counts the lists and maps msgpack makes for one value (as its
    ``list_hook`` and ``object_hook``), and stops it past ``most``.
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self.left = most

    def __call__(self, container: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise FrameError(f"more than {self.most} lists and maps in one message")
        return container


def unpack(data: bytes, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """
    Read one msgpack value, keeping bin (``bytes``) and str (``str``) apart.

    :param max_depth: how deeply lists and maps may nest, the outermost
        being at depth 0.
    :param max_items: the most items a list or map may hold, and the most
        lists and maps the whole value may hold.
    :raise FrameError: on malformed or trailing data, an extension type,
        nesting deeper than ``max_depth``, or more than ``max_items`` items.
    """
    # Each byte can be a list (an empty one, which takes some 80 bytes of
    # memory): the lists and maps of data longer than max_items are counted.
    budget = _ContainerBudget(max_items) if len(data) > max_items else None
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            ext_hook=_reject_ext,
            max_array_len=max_items,
            max_map_len=max_items,
            list_hook=budget,
            object_hook=budget,
        )
    except FrameError:
        raise
    except Exception as e:
        raise FrameError(f"bad msgpack: {e}") from None
    if type(value) is list:
        for item in value:
            if type(item) in _NESTED:
                break
        else:
            return value  # a list of scalars, as most messages are
    _check_structure(value, max_depth)
    return value
