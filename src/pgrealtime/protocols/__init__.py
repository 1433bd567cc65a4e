"""Wire protocols: each turns its frames into session calls and engine output into bytes."""
