"""Webhooks: durable, signed, policy-checked HTTP delivery of channel messages."""

from pgrealtime.webhooks.policy import UrlPolicy, validate_webhook_url
from pgrealtime.webhooks.signing import sign, verify
from pgrealtime.webhooks.worker import WebhookWorker

__all__ = ["UrlPolicy", "WebhookWorker", "sign", "validate_webhook_url", "verify"]
