"""Errors of ferry_compute, under the names ``globus_compute_sdk.errors`` uses, plus Ferry's own.

Globus Compute's: ComputeError, TaskExecutionFailed, MaxResultSizeExceeded, SerdeError,
SerializationError, DeserializationError, TaskPending, VersionMismatch.
Ferry's: FerryError (a ComputeError; every error the client raises itself is one), FerryConfigError,
FerryApiError, FunctionSourceUnavailable, FunctionNotPortable, ChecksumMismatch, ResultsUnavailable.
"""

from .error_types import (
    ChecksumMismatch,
    ComputeError,
    DeserializationError,
    FerryApiError,
    FerryConfigError,
    FerryError,
    FunctionNotPortable,
    FunctionSourceUnavailable,
    MaxResultSizeExceeded,
    ResultsUnavailable,
    SerdeError,
    SerializationError,
    TaskExecutionFailed,
    TaskPending,
    VersionMismatch,
)

__all__ = (
    "ComputeError",
    "TaskExecutionFailed",
    "MaxResultSizeExceeded",
    "SerdeError",
    "SerializationError",
    "DeserializationError",
    "TaskPending",
    "VersionMismatch",
    "ChecksumMismatch",
    "FerryApiError",
    "FerryConfigError",
    "FerryError",
    "FunctionNotPortable",
    "FunctionSourceUnavailable",
    "ResultsUnavailable",
)
