"""flame-tui: the terminal dashboard."""
