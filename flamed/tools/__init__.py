"""flamed.tools: flamepy's `flamepy.tools` (Sandbox over the built-in `flmexec`)."""

from flamed.tools.sandbox import Sandbox, SandboxAttr, SandboxOutput

__all__ = ["Sandbox", "SandboxAttr", "SandboxOutput"]
