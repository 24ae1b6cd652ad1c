"""
What the clients print (pure): a message as a line of text or of JSON, the
JSON form of packets both ways, a table of peers.

Packets in JSON: a string, a number, ``true``, ``false`` and ``null`` are
themselves, a list is a list of packets; bytes are ``{"base64": "..."}``
and a map is ``{"map": [[key, value], ...]}`` (msgpack keys need not be
strings).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from twisted_mesh import flags
from twisted_mesh._core.link import Address
from twisted_mesh._logs import SHORT_ID
from twisted_mesh.message import Message

#: The names of the flags a user's message has, for people and for JSON.
FLAG_NAMES = {flags.broadcast: "broadcast", flags.whisper: "whisper"}


def to_json(packet: Any) -> Any:
    """The JSON form of a packet (see the module's docstring)."""
    if isinstance(packet, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(packet)).decode("ascii")}
    if isinstance(packet, (list, tuple)):
        return [to_json(item) for item in packet]
    if isinstance(packet, dict):
        return {"map": [[to_json(key), to_json(value)] for key, value in packet.items()]}
    if isinstance(packet, float) and not math.isfinite(packet):
        return {"float": repr(packet)}
    return packet


def from_json(value: Any) -> Any:
    """
    The packet of a JSON form (see the module's docstring).

    :raise ValueError: when ``value`` is an object of no known form.
    """
    if isinstance(value, list):
        return [from_json(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {"base64"} and isinstance(value["base64"], str):
            try:
                return base64.b64decode(value["base64"], validate=True)
            except binascii.Error:
                raise ValueError(f"{value['base64']!r} is not base64") from None
        if set(value) == {"map"} and isinstance(value["map"], list):
            pairs = value["map"]
            if all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
                return {_key(from_json(key)): from_json(item) for key, item in pairs}
        if set(value) == {"float"} and value["float"] in ("nan", "inf", "-inf"):
            return float(value["float"])
        raise ValueError(f'{json.dumps(value)} is not a packet: an object is {{"base64": ...}} or {{"map": [...]}}')
    return value


def _key(key: Any) -> Any:
    """A map key, hashable: a list is made a tuple."""
    return tuple(_key(item) for item in key) if isinstance(key, list) else key


def flag_name(flag: object) -> object:
    """``"broadcast"`` or ``"whisper"``; any other flag as it is."""
    return FLAG_NAMES.get(flag, flag) if isinstance(flag, int) else flag


def message_json(message: Message) -> dict[str, Any]:
    """
    The JSON form of a message: ``sender`` (its node ID), ``id`` (the
    message ID, in hex), ``time`` (the sender's UTC second), ``msg_type``
    and ``sub_flag`` (``"broadcast"``, ``"whisper"`` or a number), and the
    ``packets`` after the sub-flag.
    """
    sub_flag, *packets = message.packets or (None,)
    return {
        "sender": message.sender,
        "id": message.id.hex(),
        "time": message.time,
        "msg_type": flag_name(message.msg_type),
        "sub_flag": flag_name(sub_flag),
        "packets": to_json(packets),
    }


def json_line(value: Any) -> str:
    """``value`` as one line of JSON."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def message_text(message: Message) -> str:
    """
    A message as a line for people: the sender's short ID, the sub-flag,
    then each packet (a string as it is; anything else as its JSON form).
    """
    sub_flag, *packets = message.packets or (None,)
    words = [packet if isinstance(packet, str) else json_line(to_json(packet)) for packet in packets]
    text = " ".join(word.replace("\n", "\\n") for word in words)
    return f"{message.sender[:SHORT_ID]} {flag_name(sub_flag)}: {text}"


def peers_json(peers: list[tuple[Address, str]]) -> list[dict[str, Any]]:
    """Peers as JSON: ``id``, ``host`` and ``port`` each."""
    return [{"id": peer_id, "host": host, "port": port} for (host, port), peer_id in peers]


def peers_table(peers: list[tuple[Address, str]]) -> str:
    """Peers as a table for people: their full node IDs and addresses."""
    rows = [("NODE ID", "ADDRESS")]
    rows += [(peer_id, f"[{host}]:{port}" if ":" in host else f"{host}:{port}") for (host, port), peer_id in peers]
    width = max(len(peer_id) for peer_id, _ in rows)
    return "\n".join(f"{peer_id:<{width}}  {address}" for peer_id, address in rows)
