"""The bus between server processes: how a message stored by one reaches the others.

`base` names what the engine needs from it; `pg_notify` implements it with
PostgreSQL LISTEN/NOTIFY (the only bus today); `pg_leader` says which processes share
the database and elects the one that reads the replication slot.
"""
