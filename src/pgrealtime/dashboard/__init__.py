"""The admin dashboard at /dashboard: hand-written static files (no build step, no CDN:
a server may have no internet) and the figures its live view polls.

`pages` serves the three files; `figures` gathers one snapshot of the server's state
from counters the parts already keep. The page itself talks only to public routes:
the REST API (api/dashboard.py for the snapshot) and the /realtime WebSocket.
"""
