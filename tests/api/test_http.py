"""One error schema in the served OpenAPI document (src/pgrealtime/api/http.py)."""

from __future__ import annotations

import pytest

from pgrealtime.api.http import ERROR_SCHEMA
from pgrealtime.api.openapi import document
from pgrealtime.api.webhooks import OPENAPI_PATHS

pytestmark = pytest.mark.pure


def test_the_document_and_the_webhook_fragment_share_the_error_schema() -> None:
    doc = document(OPENAPI_PATHS)
    assert doc["components"]["schemas"]["Error"] is ERROR_SCHEMA
    listing = OPENAPI_PATHS["/api/realtime/messages/{id}/deliveries"]["get"]
    assert listing["responses"]["404"]["content"]["application/json"]["schema"] is ERROR_SCHEMA
