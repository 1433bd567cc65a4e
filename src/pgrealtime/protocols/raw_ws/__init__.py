"""The raw WebSocket protocol (docs/protocol.md): JSON text frames over one socket."""
