"""ferry_compute: the Globus Compute SDK's API for Ferry, a self-hosted function-as-a-service.

    from ferry_compute import Executor, Client

Standard library only; dill is used, when installed, to find the source of functions typed at
the interactive prompt. Configuration: arguments, else FERRY_API_URL / FERRY_TOKEN, else the
credentials file (FERRY_CREDENTIALS, ./.ferry/credentials.json, ~/.ferry/credentials.json).
"""

from ._output import TaskOutput
from .batch import Batch
from .client import Client
from .errors import (
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
from .executor import ComputeFuture, Executor
from .shell_function import MPIFunction, ShellFunction, ShellResult

__version__ = "0.2.0"

__all__ = [
    "Batch",
    "ChecksumMismatch",
    "Client",
    "ComputeError",
    "ComputeFuture",
    "DeserializationError",
    "Executor",
    "FerryApiError",
    "FerryConfigError",
    "FerryError",
    "FunctionNotPortable",
    "FunctionSourceUnavailable",
    "MPIFunction",
    "MaxResultSizeExceeded",
    "ResultsUnavailable",
    "SerdeError",
    "SerializationError",
    "ShellFunction",
    "ShellResult",
    "TaskExecutionFailed",
    "TaskOutput",
    "TaskPending",
    "VersionMismatch",
    "__version__",
]
