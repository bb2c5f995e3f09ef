"""A core-API service for the tests whose session common data is an ObjectRef: each task
answers with facts about the object it reads through it, as pickle bytes."""

from __future__ import annotations

import os
import pickle

from flamed.client.cache import ObjectRef, get_object, local_copies
from flamed.service import FlameService, SessionContext, TaskContext, run


class ReadsCommonObject(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        data = context.common_data()
        assert data is not None
        self.ref = ObjectRef.decode(data)

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        obj = get_object(self.ref)
        local = local_copies()
        return pickle.dumps(
            {
                "pid": os.getpid(),
                "name": obj["name"],
                "sum": float(obj["array"].sum()),
                "writeable": bool(obj["array"].flags.writeable),
                "local_hits": local.hits if local else -1,
                "endpoint": os.environ.get("FLAME_CACHE_ENDPOINT"),
            }
        )

    def on_session_leave(self) -> None:
        pass


if __name__ == "__main__":
    run(ReadsCommonObject())
