"""The Flame wire contract: msgspec message types, codec and framing (see PROTOCOL.md).

This package imports nothing of ours; daemons, clients and the TUI share it. It re-exports
nothing either: import from its modules (`protocol.codec`, `protocol.frontend`, ...). Its
modules import each other (`from protocol import frontend`), which runs this file first; were
it to import them back, the package and `protocol.codec` would be an import cycle.
"""
