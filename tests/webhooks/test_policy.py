"""The URL and address policy, as pure functions."""

from __future__ import annotations

import pytest

from pgrealtime.webhooks.policy import (
    MAX_URL_LENGTH,
    UrlPolicy,
    address_block_reason,
    url_host,
    validate_webhook_url,
)

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/webhook",
        "http://example.com:8080/a?b=c#d",
        "https://[2606:4700::1111]/hook",
        "https://hooks.example.com/services/T000/B000/XXXX",
        "http://127.0.0.1:9000/",  # private literals depend on the server's opt-outs
    ],
)
def test_valid_urls(url: str) -> None:
    assert validate_webhook_url(url) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("example.com/hook", "http or https"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://user@example.com/", "credentials"),
        ("https://@example.com/", "credentials"),
        ("http://evil.com\\@127.0.0.1/", "credentials"),
        ("http:///path", "must have a host"),
        ("https://", "must have a host"),
        ("https://example.com:0/", "between 1 and 65535"),
        ("https://example.com:99999/", "malformed"),
        ("https://example.com:abc/", "malformed"),
        ("https://exa mple.com/", "spaces or control"),
        ("https://example.com/\r\nX-Injected: 1", "spaces or control"),
        ("", "empty"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, "at most"),
    ],
)
def test_invalid_urls(url: str, expected: str) -> None:
    error = validate_webhook_url(url)
    assert error is not None and expected in error


def test_non_string_url() -> None:
    assert validate_webhook_url(None) == "webhook URL must be a string"
    assert validate_webhook_url(["https://example.com"]) == "webhook URL must be a string"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("0.1.2.3", "private"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.10", "private"),  # documentation range
        ("198.18.0.1", "private"),  # benchmarking range
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:100.64.1.1", "CGNAT"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible
        ("not-an-ip", "not an IP"),
    ],
)
def test_blocked_addresses(address: str, reason: str) -> None:
    found = address_block_reason(address)
    assert found is not None and reason in found


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.1",
        "172.32.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    ],
)
def test_public_addresses(address: str) -> None:
    assert address_block_reason(address) is None


def test_policy_checks_literal_ips_unless_opted_out() -> None:
    strict = UrlPolicy.create(False, [])
    assert (
        strict.check_url("http://127.0.0.1:8080/") == "blocked address 127.0.0.1: loopback address"
    )
    error = strict.check_url("http://[::ffff:a9fe:a9fe]/")
    assert error is not None and "link-local" in error
    assert strict.check_url("https://example.com/") is None  # names are judged on connect
    assert strict.check_url("ftp://example.com/") == "webhook URL must use http or https"
    assert UrlPolicy.create(True, []).check_url("http://127.0.0.1:8080/") is None


def test_allowed_hosts_are_normalized() -> None:
    policy = UrlPolicy.create(False, [" Internal.Example. ", "10.0.0.5", "[fd00::1]", ""])
    assert policy.check_url("http://internal.example/hook") is None
    assert policy.check_address("INTERNAL.example", "10.1.1.1") is None
    assert policy.check_url("http://10.0.0.5/") is None
    assert policy.check_url("http://[fd00::1]/") is None
    assert policy.check_url("http://10.0.0.6/") is not None
    assert policy.check_address("other.example", "10.1.1.1") == (
        "blocked address 10.1.1.1: private address"
    )
    assert policy.check_address("other.example", "93.184.216.34") is None


def test_url_host() -> None:
    assert url_host("https://Example.COM.:8443/x") == "example.com"
    assert url_host("http://[::1]:80/") == "::1"
    assert url_host("not a url") == ""
