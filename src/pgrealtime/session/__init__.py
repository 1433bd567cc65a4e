"""The rules of one client session, independent of the wire protocol that carries it."""
