"""
The C{ws:} and C{wss:} endpoint strings of L{twisted_mesh.websocket}, for
L{serverFromString} and L{clientFromString}.
"""

from twisted_mesh.websocket import WebSocketClientParser, WebSocketServerParser

wsServer = WebSocketServerParser()
wssServer = WebSocketServerParser(secure=True)
wsClient = WebSocketClientParser()
wssClient = WebSocketClientParser(secure=True)
