"""The executor manager: one per node. Registers the node with the session manager, keeps the
executors it is given, starts one instance process per bound executor and feeds it tasks.
See manager.py for the loop, converge.py for recovery, instances.py for process handling,
core.py and holding.py for the pure core of its executors (events in, effects.py out),
lifecycle.py for the shell that runs it, instance_window.py for the tasks instances hold, drain.py
for the graceful stop on SIGTERM, node.py for what the node reports about itself, link.py and
machines.py for the link to the session manager and the state tables, daemon.py for the entry
point.

The package module is kept empty on purpose: the daemon's entry point is in `daemon.py`, so
importing a part (`flamed.executor_manager.link`) never loads the manager, and no part imports
back what imports it (an import-linter contract keeps the package acyclic)."""
