"""
The ``ws:`` and ``wss:`` endpoint strings of `.twisted_mesh.websocket`, for
`.serverFromString` and `.clientFromString`.
"""

from twisted_mesh.websocket import WebSocketClientParser, WebSocketServerParser

wsServer = WebSocketServerParser()
wssServer = WebSocketServerParser(secure=True)
wsClient = WebSocketClientParser()
wssClient = WebSocketClientParser(secure=True)
