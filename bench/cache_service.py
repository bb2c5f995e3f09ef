"""The service of bench/cache_bench.py: each task reads the session's common object.

Input b"" reads it as any service would (this process's copy if current); b"fresh" forces a
full read (ObjectRef version 0), from the node-local copy when there is one, else the cache.
"""

from __future__ import annotations

from flamed.client.cache import ObjectRef, get_object
from flamed.service import FlameService, SessionContext, TaskContext, run


class ReadsCommonObject(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        self.ref = ObjectRef.decode(context.common_data() or b"")

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        ref = ObjectRef(self.ref.endpoint, self.ref.key, 0) if context.input == b"fresh" else self.ref
        obj = get_object(ref)
        return str(len(obj)).encode()

    def on_session_leave(self) -> None:
        pass


if __name__ == "__main__":
    run(ReadsCommonObject())
