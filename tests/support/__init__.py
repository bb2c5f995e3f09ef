"""What every test may lean on, in one place (tests as a specification, issue 15).

- `waiting`: `wait_for`, the one way a test waits: on a condition, with a deadline.
- `daemons`: real processes (session manager, executor managers, object cache) and a raw
  protocol client; every factory cleans up what it built and finds leftovers by a marker.
- `fixtures`: the pytest fixtures built on them (`daemons`, `cluster`, `journal_cluster`, ...),
  loaded for the whole suite by tests/conftest.py. Each fixture name is defined once.
- `guards`: the rules the suite checks about itself: a test that starts a process carries the
  `integration` mark (the fast lane is `-m "not integration"`).
"""
