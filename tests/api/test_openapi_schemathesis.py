"""schemathesis against the served OpenAPI document, on a live in-process server.

For every documented operation, schemathesis generates requests from the document
(valid ones, and invalid ones that break it) and sends them with the admin API key.
The server must never answer 5xx, every status code must be one the document lists
for the operation, and every JSON body must match the documented schema.

schemathesis speaks `requests` (blocking), and the server runs on the test's event
loop, so the generated calls run in a worker thread while the loop serves them.

The last tests pin down, deterministically, the 500s and mismatches this kind of input
found (timestamps at the edge of the datetime range, lenient integers, U+0000 and
invalid UTF-8 in bodies, `30.0` for an integer).
"""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from tests.conftest import API_KEY, Server

MAX_EXAMPLES = 25  # per operation and mode: the whole test stays well under a minute
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ADMIN = {"Authorization": f"Bearer {API_KEY}"}


def valid_data_is_accepted(ctx: schemathesis.CheckContext, response: schemathesis.Response,
                           case: schemathesis.Case) -> bool | None:  # fmt: skip
    """What the document calls valid is not a 400, except for the rules it states in
    words (pattern rules, the webhook URL policy, `schema.table` names)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code != 400:
        return True
    body = response.json()
    documented = (
        body["error"] == "REALTIME_INVALID_CHANNEL_PATTERN"
        or body["message"].startswith("webhook URL")
        or "/tables/" in case.operation.path
    )
    assert documented, f"valid data refused: {case.body!r} -> {body}"
    return True


def _run(base: str, mode: GenerationMode, extra_checks: list) -> list[str]:
    """Every documented operation, `MAX_EXAMPLES` generated calls each; the failures."""
    schema = schemathesis.openapi.from_url(f"{base}/api/realtime/openapi.json", timeout=10)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case, data: st.DataObject) -> None:
            response = case.call(base_url=base, headers=ADMIN, timeout=10)
            case.validate_response(
                response, checks=CHECKS + extra_checks, headers=ADMIN,
                transport_kwargs={"base_url": base, "headers": ADMIN},
            )  # fmt: skip

        try:
            check()
        except Exception as exc:  # one report per operation, then the next operation
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 12, operations  # the document is not empty or half-loaded
    return failures


@pytest.mark.parametrize(
    ("mode", "extra_checks"),
    [
        (GenerationMode.POSITIVE, [valid_data_is_accepted]),
        (GenerationMode.NEGATIVE, [negative_data_rejection]),
    ],
    ids=["positive", "negative"],
)
async def test_rest_api_conforms_to_its_openapi_document(
    server: Server, mode: GenerationMode, extra_checks: list
) -> None:
    await server.create_channel("order:*", description="seed")
    await server.db.execute(
        "SELECT realtime.publish('order:1', 'order.created', '{\"n\": 1}'::jsonb)"
    )
    failures = await asyncio.to_thread(_run, server.base, mode, extra_checks)
    assert failures == [], "\n\n".join(failures)


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("GET", "/messages/stats?since=9999-12-31T23:59:59-23:59"),  # past year 9999 in UTC
        ("GET", "/messages/stats?since=0001-01-01T00:00:00%2B23:59"),  # before year 1 in UTC
        ("DELETE", "/messages?before=9999-12-31T23:59:59-01:00"),
        ("DELETE", "/messages?before=0001-01-01T00:30:00%2B01:00"),
        ("GET", "/messages?limit=1_0"),
        ("GET", "/messages?limit=%EF%BC%95"),  # a fullwidth 5
        ("GET", "/messages?offset=%201"),
        ("GET", "/messages?limit=" + "9" * 5000),
    ],
)
async def test_query_values_at_the_edges_are_a_400(server: Server, method: str, query: str) -> None:
    await server.db.execute("SELECT realtime.publish('x', 'e', '{}'::jsonb)")
    status, body = await server.api(method, "/api/realtime" + query)
    assert (status, body["error"]) == (400, "INVALID_INPUT"), body
    name = query.split("?")[1].split("=")[0]
    assert body["message"].startswith(name), body


async def test_an_integral_float_is_an_integer_as_the_document_says(server: Server) -> None:
    """The document's JSON Schema `integer` includes 30.0; 30.5 is still refused."""
    status, body = await server.api("PATCH", "/api/realtime/config", json={"retentionDays": 30.0})
    assert (status, body) == (200, {"retentionDays": 30})
    for value in (30.5, 1e300, 0.0, True, "30"):
        status, body = await server.api("PATCH", "/api/realtime/config",
                                        json={"retentionDays": value})  # fmt: skip
        assert (status, body["error"]) == (400, "INVALID_INPUT"), value


async def test_bodies_that_cannot_be_stored_or_read_are_a_400(server: Server) -> None:
    channel = await server.create_channel("body:*")
    json_type = {**server.admin, "Content-Type": "application/json"}
    cases = [
        ("POST", "/channels", b'{"pattern": "a:*", "description": "a\\u0000b"}'),
        ("PUT", f"/channels/{channel['id']}", b'{"description": "\\u0000"}'),
        ("POST", "/channels", b'{"pattern": "a:*", "description": "\xff\xfe"}'),  # not UTF-8
        ("PUT", f"/channels/{channel['id']}", b'{"description": "\xc3"}'),
        ("PATCH", "/config", b'{"retentionDays": 3\xff}'),
    ]
    for method, path, body in cases:
        status, error = await server.api(method, "/api/realtime" + path, data=body,
                                         headers=json_type)  # fmt: skip
        assert status == 400, (path, body, error)
        assert error["error"] in {"REALTIME_INVALID_CHANNEL_REQUEST", "INVALID_INPUT"}
    assert await server.db.fetchval("SELECT count(*) FROM realtime.channels") == 1
