"""Database change notifications for `db:<table>` channels: a logical replication
reader, a pgoutput decoder, value conversion, filters and row visibility (RLS).

The server uses `ChangeFeed` (feed.py) and the routing helpers in visibility.py.
"""

from pgrealtime.changes.feed import (
    ChangeFeed,
    ReplicaIdentityRequired,
    replica_identity,
    set_replica_identity_full,
)
from pgrealtime.changes.filters import ChangeFilter, FilterError, matches, parse_filter
from pgrealtime.changes.model import RowChange
from pgrealtime.changes.payload import build_payload
from pgrealtime.changes.visibility import (
    SubscriptionDenied,
    TableBusy,
    TableNotAllowed,
    TableNotFound,
    TableNotPublishable,
    authorize_subscription,
    publish_table,
)

__all__ = [
    "ChangeFeed",
    "ChangeFilter",
    "FilterError",
    "ReplicaIdentityRequired",
    "RowChange",
    "SubscriptionDenied",
    "TableBusy",
    "TableNotAllowed",
    "TableNotFound",
    "TableNotPublishable",
    "authorize_subscription",
    "build_payload",
    "matches",
    "parse_filter",
    "publish_table",
    "replica_identity",
    "set_replica_identity_full",
]
