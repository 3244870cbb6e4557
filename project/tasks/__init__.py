"""The demo task list: the smallest reactive app (a list, create, toggle, remove)."""
