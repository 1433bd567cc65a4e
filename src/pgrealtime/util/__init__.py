"""Small helpers with no home of their own: shared by the engine, api, webhooks and CLI,
and importing nothing of pgrealtime, so any layer may use them."""
