"""Where webhooks may go: the outbound URL and address policy (pure, no I/O).

A webhook URL is chosen by whoever configures a channel, and the server sends to it
from inside the network it runs in. Without limits that is server-side request
forgery: a URL can aim at the cloud metadata service, the database, or an admin port
on loopback. So a URL must be plain http(s) without credentials, and the address it
finally connects to must be globally routable, unless an operator opts out for all
hosts (`webhook_allow_private_networks`) or for named hosts (`webhook_allowed_hosts`).

The address check is applied to every address a connection is actually opened to
(see `transport.py`), not to the host name, so DNS rebinding cannot get around it.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = frozenset({"http", "https"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _split(url: object) -> tuple[SplitResult | None, str | None]:
    """Parse and check the shape of a URL; (parts, None) or (None, error)."""
    if not isinstance(url, str):
        return None, "webhook URL must be a string"
    if not url:
        return None, "webhook URL must not be empty"
    if len(url) > MAX_URL_LENGTH:
        return None, f"webhook URL must be at most {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return None, "webhook URL must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        return None, f"webhook URL is malformed: {exc}"
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        return None, "webhook URL must use http or https"
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None, "webhook URL must not contain credentials"
    if not parts.hostname:
        return None, "webhook URL must have a host"
    if port == 0:
        return None, "webhook URL port must be between 1 and 65535"
    return parts, None


def validate_webhook_url(url: object) -> str | None:
    """Why a URL can never be a webhook target (bad scheme, credentials, no host,
    too long...), or None when it may be stored. For channel create/update: these
    URLs would fail on every delivery, so they are refused up front with a 400.
    Address rules are not applied here: they depend on the server's opt-outs and on
    DNS at send time."""
    return _split(url)[1]


# The one rule for a webhook URL's host, written out rather than left to urlsplit (whose
# details vary between Python versions), so that `realtime.webhook_url_host` in SQL
# (db/functions/webhook_url_host.sql) can follow it step by step; a test holds the two
# equal over tricky URLs (tests/webhooks/test_url_host_sql.py):
#   1. the URL starts with a scheme and `//`, else there is no host;
#   2. the authority runs to the first `/`, `?` or `#`;
#   3. userinfo, up to the last `@`, is dropped;
#   4. with a `[` (IPv6, IPvFuture) the host is what lies between the first `[` and the
#      next `]` (none: no host), as urlsplit has it; otherwise it runs to the first `:`;
#   5. ASCII letters are lower-cased (PostgreSQL's lower() depends on the database's
#      locale beyond ASCII), percent-escapes are kept as written, trailing dots dropped.
# For every URL that `validate_webhook_url` accepts it gives urlsplit's hostname up to
# case (which signing and the allowed-hosts match ignore).
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def url_host(url: str) -> str:
    """The host of a webhook URL by the one rule above ('' when there is none): the
    per-host key the database stores, the host that is signed and that the address
    policy's allowed hosts are matched against."""
    found = _AUTHORITY.match(url)
    if found is None:
        return ""
    authority = found.group(1).rpartition("@")[2]
    _, opening, bracketed = authority.partition("[")
    if opening:
        host, closing, _ = bracketed.partition("]")
        if not closing:
            return ""
    else:
        host = authority.partition(":")[0]
    return host.translate(_ASCII_LOWER).rstrip(".")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any:
    such addresses reach that IPv4 host, so they are judged as it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_block_reason(address: str | IPAddress) -> str | None:
    """Why connecting to this IP address is refused, or None when it is a public
    unicast address. Covers IPv4 and IPv6, including IPv4-mapped IPv6."""
    try:
        ip: IPAddress = (
            address
            if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
            else ipaddress.ip_address(address.split("%", 1)[0])
        )
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = address_block_reason(embedded)
            return f"{reason} (embedded in {ip.compressed})" if reason else None
        if ip.is_site_local:
            return "site-local address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address (includes cloud metadata services)"
    if ip.is_multicast:
        return "multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space (CGNAT 100.64.0.0/10)"
    if ip.is_reserved:
        return "reserved address"
    if ip.is_private:
        return "private address"
    if not ip.is_global:
        return "address is not globally routable"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _normalize_host(host: str) -> str:
    return host.strip().lower().strip("[]").rstrip(".")


@dataclass(frozen=True)
class UrlPolicy:
    """The operator's choices: private networks allowed everywhere, or for some hosts."""

    allow_private_networks: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def create(
        cls, allow_private_networks: bool, allowed_hosts: Iterable[str] | str | None
    ) -> UrlPolicy:
        if isinstance(allowed_hosts, str):  # "a.example,b.example" as in the environment
            allowed_hosts = allowed_hosts.split(",")
        hosts = frozenset(_normalize_host(h) for h in allowed_hosts or () if h and h.strip())
        return cls(allow_private_networks=allow_private_networks, allowed_hosts=hosts)

    def trusts(self, host: str) -> bool:
        """Whether connections for this host skip the address check."""
        return self.allow_private_networks or _normalize_host(host) in self.allowed_hosts

    def check_url(self, url: str) -> str | None:
        """Why this URL is refused before any connection is tried, or None. A literal
        IP is judged here; a host name is judged by its resolved addresses on connect."""
        parts, error = _split(url)
        if error is not None or parts is None:
            return error
        host = parts.hostname or ""
        if self.trusts(host):
            return None
        ip = _literal_ip(host)
        if ip is not None:
            reason = address_block_reason(ip)
            if reason:
                return f"blocked address {ip.compressed}: {reason}"
        return None

    def check_address(self, host: str, address: str) -> str | None:
        """Why connecting to `address` (resolved from `host`) is refused, or None."""
        if self.trusts(host):
            return None
        reason = address_block_reason(address)
        return f"blocked address {address.split('%', 1)[0]}: {reason}" if reason else None
