"""
The node core: a mesh node's state and rules, with no I/O.

One concern a module, each importing only those above it here:

- `twisted_mesh._core.seen`: the seen-set, and how long a broadcast lives;
- `twisted_mesh._core.peerbook`: the addresses heard of, to tell newcomers;
- `twisted_mesh._core.link`: the `.Link` interface and `.Address`;
- `twisted_mesh._core.context`: what the parts share;
- `twisted_mesh._core.routing`: the routing table, link conflicts, congestion;
- `twisted_mesh._core.outbox`: the node's own messages;
- `twisted_mesh._core.exchange`: peer exchange, the number of peers;
- `twisted_mesh._core.replies`: replies to nodes that are not peers;
- `twisted_mesh._core.inbox`: delivery to the user: handlers, queue, events;
- `twisted_mesh._core.relay`: the hot path, each message a link reads;
- `twisted_mesh._core.node`: `.MeshNode`, which composes them.

(This file imports none of them: each module names what it needs.)
"""
