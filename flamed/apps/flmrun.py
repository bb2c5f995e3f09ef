"""The `flmrun` service (`python -m flamed.apps.flmrun`): the Runner's template application.

A Runner registers an application cloned from `flmrun` with its package as `url`; the executor
manager installs the package (installer `python`) and starts this module in the package's
environment. The service itself is flamed/runner/runpy.py (flamepy's `flamepy.runner.runpy`).
"""

from __future__ import annotations

from flamed.runner.runpy import main

if __name__ == "__main__":
    main()
