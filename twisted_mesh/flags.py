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

#: The values reserved for the protocol: applications use others.
reserved: Final = tuple(range(0x30))

# Main flags.  ``broadcast`` and ``whisper`` are sub-flags too.
#: Main flag and sub-flag: relayed to the whole mesh.
broadcast: Final = 0x00
#: Main flag: a link renegotiates its compression, or asks for a resend.
renegotiate: Final = 0x01
#: Main flag and sub-flag: to one peer, never relayed.
whisper: Final = 0x02
#: Main flag, reserved.
ping: Final = 0x03
#: Main flag, reserved.
pong: Final = 0x04

# Sub-flags.
#: Sub-flag of renegotiate: the sender's compression list.
compression: Final = 0x01
#: Sub-flag: a node's ID, protocol ID, address and compression list.
handshake: Final = 0x05
#: Sub-flag, reserved.
notify: Final = 0x06
#: Sub-flag: the sender's peers, as ``[[host, port], id]`` pairs.
peers: Final = 0x07
#: Sub-flag: a request for peers (``"*"``) or for a node's address.
request: Final = 0x08
#: Sub-flag of renegotiate: send the last message again.
resend: Final = 0x09
#: Sub-flag: the answer to a request for a node's address.
response: Final = 0x0A
#: Sub-flag, reserved.
store: Final = 0x0B
#: Sub-flag, reserved.
retrieve: Final = 0x0C
#: Sub-flag, reserved.
retrieved: Final = 0x0D
#: Sub-flag, reserved.
forward: Final = 0x0E
#: Sub-flag, reserved.
new_paths: Final = 0x0F
#: Sub-flag, reserved.
revoke_paths: Final = 0x10
#: Sub-flag, reserved.
delta: Final = 0x11
#: Sub-flag of renegotiate, twisted_mesh's own: on a signed network, the
#: sender's proof that it holds its key.
proof: Final = 0x12
#: Sub-flag of renegotiate, twisted_mesh's own: the sender speaks lazy push
#: (see `.twisted_mesh._core.tree`), and so understands the three below.
lazy_push: Final = 0x13
#: Sub-flag of renegotiate, twisted_mesh's own: the sender has the
#: broadcasts of this link by another way: announce them, do not send them.
prune: Final = 0x14
#: Sub-flag of renegotiate, twisted_mesh's own: ``[ihave, [[time, key], ...]]``,
#: the broadcasts the sender got lately, announced by stamp and checksum.
ihave: Final = 0x15
#: Sub-flag of renegotiate, twisted_mesh's own: ``[graft, [[time, key], ...]]``,
#: send the sender these broadcasts, and send it broadcasts again.
graft: Final = 0x16

# Compression codes.
#: Compression: bzip2.
bz2: Final = 0x10
#: Compression: deflate in the gzip container.
gzip: Final = 0x11
#: Compression: xz.
lzma: Final = 0x12
#: Compression: deflate in the zlib container.
zlib: Final = 0x13
#: Compression: snappy (when python-snappy is installed).
snappy: Final = 0x20
