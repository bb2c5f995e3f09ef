"""flame-tui: a Textual dashboard of a Flame cluster."""
