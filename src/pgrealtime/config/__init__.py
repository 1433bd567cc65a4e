"""Settings from one options table: flags, PGREALTIME_* variables, ranges and docs.

The package's API; see options.py for the table itself.
"""

from pgrealtime.config.concerns import FeedSettings, WebhookSettings
from pgrealtime.config.flags import (
    add_connection_flags,
    add_flags,
    add_server_flags,
    settings_from_args,
)
from pgrealtime.config.options import (
    ANON_KEY_PREFIX,
    API_KEY_PREFIX,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PUBLISH_BATCH_BYTES,
    GROUPS,
    OPTIONS,
    Option,
)
from pgrealtime.config.settings import SECRETS_FILE, Settings, ensure_secrets
from pgrealtime.config.validate import limits_error

__all__ = [
    "ANON_KEY_PREFIX",
    "API_KEY_PREFIX",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_PUBLISH_BATCH_BYTES",
    "GROUPS",
    "OPTIONS",
    "SECRETS_FILE",
    "FeedSettings",
    "Option",
    "Settings",
    "WebhookSettings",
    "add_connection_flags",
    "add_flags",
    "add_server_flags",
    "ensure_secrets",
    "limits_error",
    "settings_from_args",
]
