"""session_manager."""
