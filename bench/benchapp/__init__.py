"""A bench-only app: a counter to bump and a table of items to write."""
