"""How many WebSocket connections the process holds, in all and per client address.

Checked before the upgrade, so a refused client costs one HTTP answer and no session:
503 when the process is full, 429 when one address holds its share. The address is
the socket's peer (`request.remote`); behind a proxy every client shares the proxy's,
so raise or turn off the per-address cap there.
"""

from __future__ import annotations


class Admission:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        """0 turns a cap off."""
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}  # only addresses with a connection open

    def admit(self, ip: str) -> tuple[int, str, str] | None:
        """Count a new connection from `ip`, or say why not: (HTTP status, code, message)."""
        if 0 < self.max_total <= self.total:
            return (
                503,
                "TOO_MANY_CONNECTIONS",
                (f"The server holds its maximum of {self.max_total} connections; retry later"),
            )
        held = self.per_ip.get(ip, 0)
        if 0 < self.max_per_ip <= held:
            return (
                429,
                "TOO_MANY_CONNECTIONS",
                (f"At most {self.max_per_ip} connections per client address; close one first"),
            )
        self.total += 1
        self.per_ip[ip] = held + 1
        return None

    def release(self, ip: str) -> None:
        self.total -= 1
        held = self.per_ip[ip] - 1
        if held:
            self.per_ip[ip] = held
        else:
            del self.per_ip[ip]
