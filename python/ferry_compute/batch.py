"""`Batch`: many task submissions in one request, as ``globus_compute_sdk``'s Batch.

    batch = client.create_batch()
    for x in range(10):
        batch.add(function_id, args=(x,))
    out = client.batch_run(endpoint_id, batch)   # {"tasks": {function_id: [task ids]}, ...}
"""

from __future__ import annotations

import base64
import platform
import sys
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any, DefaultDict, Dict, List, Optional, Tuple

from ._payload import CODEC, encode_args

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client


def as_uuid(value: Any, what: str = "id") -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"{what} must be a UUID (or a UUID string), not {value!r}") from None


def as_optional_uuid(value: Any, what: str = "id") -> Optional[uuid.UUID]:
    return None if value is None or value == "" else as_uuid(value, what)


def user_runtime() -> Dict[str, Any]:
    """What Globus calls the user runtime: versions of this client and of Python."""
    from . import __version__

    return {
        "globus_compute_sdk_version": None,
        "ferry_compute_version": __version__,
        "python_version": sys.version,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "platform": {"machine": platform.machine(), "platform": platform.platform()},
    }


class _Item:
    """One added task: its arguments encoded at add() time, so later mutation changes nothing."""

    __slots__ = ("codec", "data")

    def __init__(self, codec: str, data: bytes):
        self.codec = codec
        self.data = data


class Batch:
    """Tasks to submit together with ``Client.batch_run``. Made by ``Client.create_batch()``."""

    def __init__(
        self,
        task_group_id: Any = None,
        resource_specification: Optional[Dict[str, Any]] = None,
        user_endpoint_config: Optional[Dict[str, Any]] = None,
        request_queue: bool = False,
        serializer: Any = None,
        user_runtime: Optional[Dict[str, Any]] = None,
        result_serializers: Optional[List[str]] = None,
        *,
        client: Optional["Client"] = None,
    ):
        self.task_group_id = task_group_id
        self.resource_specification = resource_specification
        self.user_endpoint_config = user_endpoint_config
        self.request_queue = request_queue
        self.serializer = serializer
        self.user_runtime = user_runtime
        self.result_serializers = result_serializers
        self.tasks: DefaultDict[uuid.UUID, List[_Item]] = defaultdict(list)
        self._client = client

    @property
    def task_group_id(self) -> Optional[uuid.UUID]:
        return self._task_group_id

    @task_group_id.setter
    def task_group_id(self, new_id: Any) -> None:
        self._task_group_id = as_optional_uuid(new_id, "task_group_id")

    def add(self, function_id: Any, args: Optional[Tuple[Any, ...]] = None, kwargs: Optional[Dict[str, Any]] = None) -> None:
        """Add one call of a registered function: ``batch.add(function_id, args=(1, 2), kwargs={"x": 3})``."""
        if args is None:
            args = ()
        if not isinstance(args, (list, tuple)):
            raise TypeError(f"args: expected `tuple`, got: {type(args).__name__}")
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs: expected dict, got: {type(kwargs).__name__}")
        bad = next((k for k in kwargs if not isinstance(k, str)), None)
        if bad is not None:
            raise TypeError(f"kwargs: expected kwargs with `str` keys, got: {type(bad).__name__}")
        fid = as_uuid(function_id, "function_id")
        if self._client is not None:
            codec, data = self._client._encode_for(str(fid), tuple(args), kwargs)
        else:
            # No client to ask the function's runtime: a pickled snapshot, re-encoded at batch_run if need be.
            codec, data = CODEC, encode_args(tuple(args), kwargs, CODEC)
        self.tasks[fid].append(_Item(codec, data))

    def prepare(self) -> Dict[str, Any]:
        """The request as a dict, shaped like Globus's (``tasks``: function id -> encoded arguments, base64)."""
        data: Dict[str, Any] = {
            "create_queue": self.request_queue,
            "tasks": {str(fid): [base64.b64encode(item.data).decode("ascii") for item in items] for fid, items in self.tasks.items()},
        }
        if self.task_group_id:
            data["task_group_id"] = str(self.task_group_id)
        if self.resource_specification:
            data["resource_specification"] = self.resource_specification
        if self.user_endpoint_config:
            data["user_endpoint_config"] = self.user_endpoint_config
        if self.user_runtime:
            data["user_runtime"] = self.user_runtime
        if self.result_serializers:
            data["result_serializers"] = self.result_serializers
        return data

    def __repr__(self) -> str:
        return str(self.prepare())

    def __bool__(self) -> bool:
        """True when every function in the batch has at least one task (and there is one)."""
        return bool(self.tasks) and all(bool(items) for items in self.tasks.values())

    def __len__(self) -> int:
        return sum(len(items) for items in self.tasks.values())


__all__ = ["Batch"]
