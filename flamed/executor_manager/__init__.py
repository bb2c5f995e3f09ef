"""executor_manager."""
