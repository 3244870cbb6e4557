"""The demo chat: channels, their members and messages, all live over one WebSocket."""
