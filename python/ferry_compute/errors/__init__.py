"""Errors of the Ferry Python client. Every error the client raises itself is a FerryError."""

from __future__ import annotations

from typing import Any, Dict, Optional


class FerryError(Exception):
    """Base class of the errors raised by ferry_compute (not of remote exceptions it re-raises)."""


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


class FunctionSourceUnavailable(FerryError):
    """The function's source cannot be found, so it cannot travel to the worker."""


class FunctionNotPortable(FerryError):
    """The function cannot run from its source alone (it closes over local variables, or it is not a function)."""


class ChecksumMismatch(FerryError):
    """Downloaded bytes do not match the size and SHA-256 the API announced: never silent data."""


class TaskPending(FerryError):
    """A result was asked for before the task finished."""

    def __init__(self, task_id: str, status: str):
        super().__init__(f"task {task_id} is {status}")
        self.task_id = task_id
        self.status = status


class TaskExecutionFailed(FerryError):
    """The function failed on the worker, with an exception that cannot be re-raised as itself here.

    That is the case for exceptions whose class the client cannot import, for failures of the
    platform rather than of the function (``TaskTimeout``, ``WorkerProcessDied``, ``WorkerLost``,
    ``SerializationError``...), and for ``SystemExit`` / ``KeyboardInterrupt`` raised remotely.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "", task_id: Optional[str] = None):
        super().__init__(remote_type, message, remote_traceback)
        self.remote_type = remote_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.task_id = task_id

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.message}"

    def __reduce__(self):
        return (type(self), (self.remote_type, self.message, self.remote_traceback, self.task_id))
