"""Socket.IO v4 (Engine.IO 4, WebSocket transport) for the official InsForge SDK."""
