"""ferry_compute: the Globus Compute SDK's API for Ferry, a self-hosted function-as-a-service.

    from ferry_compute import Executor, Client

Standard library only; dill is used, when installed, to find the source of functions typed at
the interactive prompt. Configuration: arguments, else FERRY_API_URL / FERRY_TOKEN, else the
credentials file (FERRY_CREDENTIALS, ./.ferry/credentials.json, ~/.ferry/credentials.json).
"""

from ._output import TaskOutput
from .client import Client
from .errors import (
    ChecksumMismatch,
    FerryApiError,
    FerryConfigError,
    FerryError,
    FunctionNotPortable,
    FunctionSourceUnavailable,
    TaskExecutionFailed,
    TaskPending,
)
from .executor import ComputeFuture, Executor

__version__ = "0.1.0"

__all__ = [
    "ChecksumMismatch",
    "Client",
    "ComputeFuture",
    "Executor",
    "FerryApiError",
    "FerryConfigError",
    "FerryError",
    "FunctionNotPortable",
    "FunctionSourceUnavailable",
    "TaskExecutionFailed",
    "TaskOutput",
    "TaskPending",
    "__version__",
]
