"""The error classes of ferry_compute: Globus Compute's (same names, constructors and attributes) and Ferry's own.

Mirrors ``globus_compute_sdk.errors.error_types``, so ``from ferry_compute.errors import
TaskExecutionFailed`` is the one line to change in a Globus Compute script.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import time
from typing import Any, Dict, Optional

# --- Globus Compute's errors -----------------------------------------------------------------


class ComputeError(Exception):
    """Base class of Globus Compute's errors; ``str()`` is the ``repr()``, as there."""

    def __str__(self) -> str:
        return self.__repr__()


class VersionMismatch(ComputeError):
    """The client and the service (or an endpoint) do not speak the same version."""

    def __init__(self, version_message: str):
        super().__init__(version_message)
        self.version_message = version_message

    def __repr__(self) -> str:
        return f"Globus Compute Versioning Issue: {self.version_message}"

    def __str__(self) -> str:
        return self.__repr__()


class SerdeError(ComputeError):
    """Base class of SerializationError and DeserializationError."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return str(self.reason)

    def __str__(self) -> str:
        return self.__repr__()


class SerializationError(SerdeError):
    """Arguments (or a function) could not be serialized."""

    def __repr__(self) -> str:
        return f"Serialization failed: {self.reason}"


class MaxResultSizeExceeded(Exception):
    """A task's result is larger than the endpoint accepts."""

    def __init__(self, result_size: int, result_size_limit: int):
        super().__init__(result_size, result_size_limit)
        self.result_size = result_size
        self.result_size_limit = result_size_limit

    def __str__(self) -> str:
        return f"Task result of {self.result_size}B exceeded current limit of {self.result_size_limit}B"


# --- Ferry's errors ------------------------------------------------------------------------------


class FerryError(ComputeError):
    """Base class of the errors ferry_compute raises itself (a ComputeError, so ``except ComputeError`` catches it).

    Unlike Globus's ComputeError, ``str()`` is the message.
    """

    __str__ = Exception.__str__
    __repr__ = Exception.__repr__


class DeserializationError(SerdeError, FerryError):
    """A result (or exception) came back that cannot be deserialized here."""

    def __repr__(self) -> str:
        return f"Deserialization failed: {self.reason}"

    def __str__(self) -> str:
        return self.__repr__()


class FerryConfigError(FerryError):
    """No API URL or token could be found."""


class FerryApiError(FerryError):
    """The API answered with an error: ``{"error": {"code", "message", ...}}`` and an HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: Optional[Dict[str, Any]] = None):
        super().__init__(f"{code} (HTTP {status}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    def __reduce__(self):
        return (type(self), (self.status, self.code, self.message, self.details))


class ResultsUnavailable(FerryError):
    """The Executor could not read its tasks' results, so it fails the outstanding futures rather than hang them.

    Either ``polls`` polls in a row failed (each after the client's own retries), or the API refused
    the read in a way no retry changes (a 4xx such as a revoked token); ``__cause__`` is the last
    error. The tasks may still finish: read them later with ``Client.get_batch_result``.
    """

    def __init__(self, polls: int, last_error: BaseException):
        super().__init__(f"could not read task results: {polls} poll{'s' if polls != 1 else ''} in a row failed; last error: {last_error}")
        self.polls = polls
        self.last_error = last_error

    def __reduce__(self):
        return (type(self), (self.polls, self.last_error))


class FunctionSourceUnavailable(FerryError):
    """The function's source cannot be found, so it cannot travel to the worker."""


class FunctionNotPortable(FerryError):
    """The function cannot run from its source alone (it closes over local variables, or it is not a function)."""


class ChecksumMismatch(FerryError):
    """Downloaded bytes do not match the size and SHA-256 the API announced: never silent data."""


class TaskPending(FerryError):
    """A result was asked for before the task finished: ``TaskPending(reason)``, as in Globus Compute.

    ``reason`` is the task's status (``waiting-for-endpoint``, ``running``...); Ferry adds ``task_id``
    and ``status``.
    """

    def __init__(self, reason: str, task_id: Optional[str] = None):
        super().__init__(reason)
        self.reason = reason
        self.status = reason
        self.task_id = task_id

    def __repr__(self) -> str:
        return f"Task is pending due to {self.reason}"

    def __str__(self) -> str:
        return self.__repr__() + (f" (task {self.task_id})" if self.task_id else "")

    def __reduce__(self):
        return (type(self), (self.reason, self.task_id))


_SERDE_HELP = """

This appears to be an error with serialization. Ferry sends functions as source and arguments and
results as pickles (protocol 4): return builtin types, or classes from a module installed on both
the client and the endpoint.
"""


class TaskExecutionFailed(FerryError):
    """A task failed on the endpoint: ``TaskExecutionFailed(remote_data, completion_t=None, task_details=None)``.

    ``remote_data`` is the remote traceback as text, as Globus Compute gives it. A remote exception
    whose class can be rebuilt here is raised as an instance of *both* that class and
    TaskExecutionFailed (``except ValueError`` and ``except TaskExecutionFailed`` both catch it);
    otherwise (classes not importable here, platform failures such as ``TaskTimeout`` or
    ``WorkerLost``, ``SystemExit``) as a plain TaskExecutionFailed.

    Ferry's attributes: ``remote_type``, ``message``, ``remote_traceback`` (= ``remote_data``),
    ``task_id`` / ``ferry_task_id``, and ``ferry_output`` (what the task printed) when it printed.
    """

    SERDE_REGEX = re.compile("dill|pickle|serializ", re.IGNORECASE)
    WORKER_LOST_REGEX = re.compile(r"\s*parsl\.\S+\.WorkerLost:")

    # Set on the subclasses made for remote exception types (see ferry_compute._payload).
    _ferry_remote_class: Optional[type] = None

    def __init__(self, *args: Any, **kwargs: Any):
        if type(self)._ferry_remote_class is not None:
            # A rebuilt remote exception: its own class's __init__ called super().__init__(...),
            # and those arguments belong to Exception, not to Globus's constructor.
            Exception.__init__(self, *args)
            return
        self._init_globus(*args, **kwargs)

    def _init_globus(
        self,
        remote_data: Any = "",
        completion_t: Optional[str] = None,
        task_details: Optional[dict] = None,
        *,
        remote_type: Optional[str] = None,
        message: Optional[str] = None,
        task_id: Optional[str] = None,
    ) -> None:
        remote_data = "" if remote_data is None else str(remote_data)
        Exception.__init__(self, remote_data)
        self.remote_type = remote_type or _last_type(remote_data) or "Exception"
        self.message = message if message is not None else _last_message(remote_data)
        if not remote_data.strip() and (remote_type or message):
            remote_data = f"{self.remote_type}: {self.message}\n"
        self.remote_data = remote_data
        self.remote_traceback = remote_data
        self.completion_t = completion_t or str(time.time())
        self.task_details = task_details
        self.task_id = task_id
        self.ferry_task_id = task_id

    def __str__(self) -> str:
        remote_data = textwrap.indent(str(getattr(self, "remote_data", "")), " ")
        message = "\n" + remote_data
        if self.SERDE_REGEX.search(remote_data):
            message += _SERDE_HELP
        return message

    def reraise(self) -> None:
        """Raise this exception (the old funcx SDK's ``task["exception"].reraise()``)."""
        raise self

    def __reduce__(self):
        return (
            _rebuild_task_execution_failed,
            (type(self), self.remote_data, self.completion_t, self.task_details, self.remote_type, self.message, self.task_id),
        )


def _rebuild_task_execution_failed(cls, remote_data, completion_t, task_details, remote_type, message, task_id):
    exc = cls(remote_data, completion_t, task_details, remote_type=remote_type, message=message, task_id=task_id)
    return exc


try:
    TaskExecutionFailed.__init__.__signature__ = inspect.signature(TaskExecutionFailed._init_globus)  # type: ignore[attr-defined]
except (TypeError, ValueError):  # pragma: no cover
    pass


def _last_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _last_type(text: str) -> str:
    line = _last_line(text)
    head = line.split(":", 1)[0].strip()
    return head if head and " " not in head else ""


def _last_message(text: str) -> str:
    line = _last_line(text)
    if ":" in line and _last_type(text):
        return line.split(":", 1)[1].strip()
    return line


__all__ = [
    "ChecksumMismatch",
    "ComputeError",
    "DeserializationError",
    "FerryApiError",
    "FerryConfigError",
    "FerryError",
    "FunctionNotPortable",
    "FunctionSourceUnavailable",
    "MaxResultSizeExceeded",
    "ResultsUnavailable",
    "SerdeError",
    "SerializationError",
    "TaskExecutionFailed",
    "TaskPending",
    "VersionMismatch",
]
