"""The WebSocket adapters behind `.twisted_mesh.websocket`."""
