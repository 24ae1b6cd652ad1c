"""
The protocol's flags, as p2p-today 0.7 numbers them.

A message's first field is its main flag (``broadcast``, ``renegotiate``,
``whisper``, ``ping``, ``pong``); the first packet of its payload is its
sub-flag (``broadcast``, ``whisper``, ``handshake``, ``peers``, ...).  The
values ``0x00``-``0x2F`` are reserved for the protocol: applications that
define their own sub-flags use other values.

The compression codes name the methods a node lists in its handshake.
"""

from typing import Final

reserved: Final = tuple(range(0x30))

# Main flags.  ``broadcast`` and ``whisper`` are sub-flags too.
broadcast: Final = 0x00
renegotiate: Final = 0x01
whisper: Final = 0x02
ping: Final = 0x03
pong: Final = 0x04

# Sub-flags.
compression: Final = 0x01
handshake: Final = 0x05
notify: Final = 0x06
peers: Final = 0x07
request: Final = 0x08
resend: Final = 0x09
response: Final = 0x0A
store: Final = 0x0B
retrieve: Final = 0x0C
retrieved: Final = 0x0D
forward: Final = 0x0E
new_paths: Final = 0x0F
revoke_paths: Final = 0x10
delta: Final = 0x11

# Compression codes.
bz2: Final = 0x10
gzip: Final = 0x11
lzma: Final = 0x12
zlib: Final = 0x13
snappy: Final = 0x20
