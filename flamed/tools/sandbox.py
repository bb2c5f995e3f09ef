"""flamepy's `Sandbox` (flamepy.tools): a session of the built-in `flmexec` application that
runs Python or shell scripts. The sandbox's id is its session's id; its `SandboxAttr` is the
session's common data (JSON), so `Sandbox.open(id)` finds it again from another process."""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from flamed.client import (
    FlameError,
    FlameErrorCode,
    ResourceRequirement,
    Session,
    SessionState,
    create_session,
    open_session,
)

log = logging.getLogger("flamed.tools")

_FLMEXEC_APP = "flmexec"
_SUPPORTED_LANGUAGES = frozenset({"python", "shell"})


@dataclass(frozen=True)
class SandboxAttr:
    """What a Sandbox runs: `language` ("python" or "shell"), `runtime` (a Python version, or a
    shell such as "bash"), and its session's instances and resources."""

    language: str
    runtime: str | None = None
    min_instances: int = 0
    max_instances: int | None = None
    resreq: ResourceRequirement | None = None


@dataclass
class SandboxOutput:
    """A script's standard output."""

    data: bytes

    def text(self, encoding: str = "utf-8") -> str:
        return self.data.decode(encoding)


def _normalize_language(language: str) -> str:
    if not isinstance(language, str) or not language.strip():
        raise FlameError(FlameErrorCode.INVALID_ARGUMENT, "language must be 'python' or 'shell'")
    normalized = language.strip().lower()
    if normalized not in _SUPPORTED_LANGUAGES:
        raise FlameError(FlameErrorCode.INVALID_ARGUMENT, f"language must be 'python' or 'shell', got {language!r}")
    return normalized


def _normalize_attr(attr: SandboxAttr) -> SandboxAttr:
    if not isinstance(attr, SandboxAttr):
        raise FlameError(FlameErrorCode.INVALID_ARGUMENT, "attr must be a SandboxAttr")
    resreq = attr.resreq
    return SandboxAttr(
        language=_normalize_language(attr.language),
        runtime=attr.runtime,
        min_instances=attr.min_instances,
        max_instances=attr.max_instances,
        resreq=None if resreq is None else ResourceRequirement(cpu=resreq.cpu, memory=resreq.memory, gpu=resreq.gpu),
    )


def _encode_attr(attr: SandboxAttr) -> bytes:
    resreq = None
    if attr.resreq is not None:
        resreq = {"cpu": attr.resreq.cpu, "memory": attr.resreq.memory, "gpu": attr.resreq.gpu}
    return json.dumps(
        {
            "language": attr.language,
            "runtime": attr.runtime,
            "min_instances": attr.min_instances,
            "max_instances": attr.max_instances,
            "resreq": resreq,
        }
    ).encode()


def _decode_attr(raw: bytes | None) -> SandboxAttr:
    if not raw:
        raise FlameError(FlameErrorCode.INVALID_ARGUMENT, "sandbox attr is missing from session common_data")
    try:
        payload = json.loads(raw.decode())
        data = payload.get("resreq")
        resreq = None
        if data is not None:
            resreq = ResourceRequirement(cpu=data.get("cpu", 0), memory=data.get("memory", 0), gpu=data.get("gpu", 0))
        return _normalize_attr(
            SandboxAttr(
                language=payload["language"],
                runtime=payload.get("runtime"),
                min_instances=payload.get("min_instances", 0),
                max_instances=payload.get("max_instances"),
                resreq=resreq,
            )
        )
    except FlameError:
        raise
    except Exception as exc:
        raise FlameError(FlameErrorCode.INVALID_ARGUMENT, "session common_data is not a Sandbox attr") from exc


def _encode_script(language: str, runtime: str | None, code: str, input_data: bytes | None) -> bytes:
    if input_data is not None and not isinstance(input_data, bytes):
        raise FlameError(FlameErrorCode.INVALID_ARGUMENT, "input must be bytes or None")
    payload: dict[str, Any] = {
        "language": language,
        "code": code,
        "input": None if input_data is None else list(input_data),
    }
    if runtime is not None:
        payload["runtime"] = runtime
    return json.dumps(payload).encode()


def _decode_output(raw: bytes | None) -> SandboxOutput:
    if raw is None:
        return SandboxOutput(data=b"")
    try:
        return SandboxOutput(data=bytes(json.loads(raw.decode())["data"]))
    except Exception as exc:
        raise FlameError(FlameErrorCode.INTERNAL, "response is not valid flmexec output JSON") from exc


class Sandbox:
    """Run scripts remotely: `run_code` (wait), `submit_code` (a Future), `close`."""

    def __init__(self, session: Session, attr: SandboxAttr) -> None:
        self._session: Session | None = session
        self._attr = attr
        self._closed = False

    @classmethod
    def create(cls, attr: SandboxAttr) -> Sandbox:
        attr = _normalize_attr(attr)
        session = create_session(
            _FLMEXEC_APP,
            common_data=_encode_attr(attr),
            min_instances=attr.min_instances,
            max_instances=attr.max_instances,
            resreq=attr.resreq,
        )
        return cls(session, attr)

    @classmethod
    def open(cls, sandbox_id: str) -> Sandbox:
        """The open sandbox `sandbox_id` (FlameError INVALID_ARGUMENT if it is not open)."""
        try:
            session = open_session(sandbox_id)
        except FlameError as exc:
            raise FlameError(
                FlameErrorCode.INVALID_ARGUMENT, f"sandbox {sandbox_id!r} is not open: {exc.message}"
            ) from None
        if session.state is not SessionState.Open:
            raise FlameError(FlameErrorCode.INVALID_ARGUMENT, f"sandbox {sandbox_id!r} is not open (it was closed)")
        if session.application != _FLMEXEC_APP:
            raise FlameError(FlameErrorCode.INVALID_ARGUMENT, f"sandbox {sandbox_id!r} is not a script sandbox")
        return cls(session, _decode_attr(session.common_data()))

    @property
    def attr(self) -> SandboxAttr:
        return self._attr

    @property
    def sandbox_id(self) -> str:
        if self._session is None:
            raise FlameError(FlameErrorCode.INVALID_STATE, "sandbox is closed")
        return self._session.id

    def run_code(self, code: str, input: bytes | None = None) -> SandboxOutput:
        session = self._open_session()
        return _decode_output(session.invoke(_encode_script(self._attr.language, self._attr.runtime, code, input)))

    def submit_code(self, code: str, input: bytes | None = None) -> Future[SandboxOutput]:
        session = self._open_session()
        raw = session.run(_encode_script(self._attr.language, self._attr.runtime, code, input))
        mapped: Future[SandboxOutput] = Future()

        def complete(done: Future[bytes | None]) -> None:
            try:
                mapped.set_result(_decode_output(done.result()))
            except Exception as exc:
                mapped.set_exception(exc)

        raw.add_done_callback(complete)
        return mapped

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def _open_session(self) -> Session:
        if self._closed or self._session is None:
            raise FlameError(FlameErrorCode.INVALID_STATE, "sandbox is closed")
        return self._session

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
