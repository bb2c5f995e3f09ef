"""Flame in Python: session manager, executor managers, SDK and CLIs."""

__version__ = "0.1.0"
