"""pgrealtime: a self-hosted realtime server for PostgreSQL applications."""

__version__ = "0.1.0"
