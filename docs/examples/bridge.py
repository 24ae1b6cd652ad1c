"""
Endpoint strings and a bridge: one node listens on TCP and on WebSocket, so
it is in both networks and relays broadcasts between them.
"""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IReactorTime

from twisted_mesh import MeshService, MeshSocket, Network


async def main(reactor: IReactorTime) -> None:
    # The prefix of each string names its transport: tcp: is 'Plaintext',
    # ws: is 'ws'.  The node's own protocol names its main transport.
    bridge = MeshService(
        Network("mesh", "Plaintext"),
        listen=["tcp:0:interface=127.0.0.1", "ws:0:interface=127.0.0.1"],
    )
    bridge.startService()
    addresses = [port.getHost() for port in await bridge.listening]
    tcp_port, ws_port = (address.port for address in addresses if isinstance(address, IPv4Address))
    print("the bridge's addresses:", sorted(bridge.status()["out_addrs"]))

    tcp_node = MeshSocket("127.0.0.1", 0, prot=Network("mesh", "Plaintext"))
    ws_node = MeshSocket("127.0.0.1", 0, prot=Network("mesh", "ws"))
    try:
        # A (host, port) pair is dialled over the node's own transport ...
        await tcp_node.connect("127.0.0.1", tcp_port)
        # ... an endpoint string over the transport its prefix names.
        await ws_node.connect(f"ws:host=127.0.0.1:port={ws_port}")

        tcp_node.send("from TCP")
        msg = await ws_node.next_message().addTimeout(10, reactor)
        print("the WebSocket node got", msg.packets)
        print("from the TCP node:", msg.sender == tcp_node.id)

        ws_node.send("from WebSocket")
        msg = await tcp_node.next_message().addTimeout(10, reactor)
        print("the TCP node got", msg.packets)
        print("from the WebSocket node:", msg.sender == ws_node.id)

        links = sorted(peer["transport"] for peer in bridge.status()["peers"])
        print("the bridge's links:", links)
    finally:
        closing = [tcp_node.close(), ws_node.close(), bridge.stopService()]
        await defer.gatherResults(closing)


task.react(main)
