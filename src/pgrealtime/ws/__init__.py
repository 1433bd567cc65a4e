"""The WebSocket protocol: frames (pure), sessions (rules), and the aiohttp endpoint."""
