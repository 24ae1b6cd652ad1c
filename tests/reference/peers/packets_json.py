"""
Packets across the JSON-lines pipe between the tests and a reference node:
``{"hex": ...}`` stands for a byte string, ``{"map": [[key, value], ...]}`` for
a msgpack map; lists and tuples both become lists.
"""

from __future__ import annotations

from typing import Any


def to_json(value: Any) -> Any:
    """Encode packets: bytes as ``{"hex"}``, dicts as ``{"map"}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {"map": [[to_json(k), to_json(v)] for k, v in value.items()]}
    return value


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def from_json(value: Any) -> Any:
    """Decode packets: ``{"hex"}`` to bytes, ``{"map"}`` to a dict."""
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if "hex" in value:
            return bytes.fromhex(value["hex"])
        if "map" in value:
            return {_hashable(from_json(k)): from_json(v) for k, v in value["map"]}
        raise ValueError(f"untagged JSON object in packets: {value!r}")
    return value
