"""REST handlers for /api/realtime: thin, parse -> query -> JSON."""
