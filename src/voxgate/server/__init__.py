"""voxgate's own server: HTTP/1.1 (h11) and WebSocket (websockets) connections under plain asyncio protocols."""
