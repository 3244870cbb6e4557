"""Stage 4, results -> clients: the per-process hub, the WebSocket consumer speaking PROTOCOL.md,
and the HTTP API."""
