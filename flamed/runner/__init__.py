"""flamed.runner: flamepy's `flamepy.runner` (Runner, ObjectFuture, RunnerService, ...).

from flamed.runner import Runner

def square(x: int) -> int:
    return x * x

with Runner("squares") as rr:              # packages the working directory
    sq = rr.service(square)                # a session of the built-in `flmrun` template
    print(rr.get([sq(i) for i in range(10)]))
"""

from flamed.client import FlamePackage
from flamed.runner.helper import ErrorType, RunnerError, get_data
from flamed.runner.runner import ObjectFuture, ObjectFutureIterator, Runner, RunnerService
from flamed.runner.runpy import FlameRunpyService
from flamed.runner.types import RunnerContext, RunnerRequest, SessionContext

__all__ = [
    "ErrorType",
    "FlamePackage",
    "FlameRunpyService",
    "ObjectFuture",
    "ObjectFutureIterator",
    "Runner",
    "RunnerContext",
    "RunnerError",
    "RunnerRequest",
    "RunnerService",
    "SessionContext",
    "get_data",
]
