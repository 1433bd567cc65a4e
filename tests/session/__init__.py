"""Session rules that need no particular wire protocol: token refresh in place."""
