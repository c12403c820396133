"""Arguments, results and exceptions as bytes: the `python-pickle` codec the worker's runtime speaks."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from .errors import ChecksumMismatch, DeserializationError, FerryError, TaskExecutionFailed

CODEC = "python-pickle"
# Protocol 4 reads on every python >= 3.4, so a worker older than the client still decodes it.
PICKLE_PROTOCOL = 4
# Larger encoded arguments go to S3 by presigned PUT instead of inline in the submit body (as the TS SDK).
UPLOAD_THRESHOLD = 256 * 1024

Fetch = Callable[[str], bytes]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_args(args: Sequence[Any], kwargs: Mapping[str, Any], codec: str = CODEC) -> bytes:
    """What the runtime decodes: pickle.dumps((args_tuple, kwargs_dict)), or JSON {"args", "kwargs"} for node functions."""
    try:
        if codec == "json":
            return json.dumps({"args": list(args), "kwargs": dict(kwargs)}, allow_nan=False, separators=(",", ":")).encode()
        return pickle.dumps((tuple(args), dict(kwargs)), protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        what = "encoded as JSON (the function runs on node)" if codec == "json" else "pickled"
        raise TypeError(f"the arguments cannot be {what}: {exc}") from exc


def payload_bytes(view: Mapping[str, Any], fetch: Fetch) -> bytes:
    """The bytes of a payload view (inline base64, or a presigned GET URL), checked against size and SHA-256."""
    if view.get("data") is not None:
        data = base64.b64decode(view["data"])
    elif view.get("url"):
        data = fetch(view["url"])
    else:
        raise FerryError("the payload has neither data nor url")
    if len(data) != view.get("size") or sha256_hex(data) != view.get("sha256"):
        raise ChecksumMismatch(f"the payload does not match its checksum (expected {view.get('size')} bytes, sha256 {view.get('sha256')})")
    return data


def decode_value(data: bytes, codec: str) -> Any:
    """A result by its codec: unpickled, parsed JSON, or the raw bytes for codecs Python cannot read (node-v8)."""
    if codec == CODEC:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise DeserializationError(
                f"the result cannot be unpickled here: {exc} (return builtin types, or classes from a module installed on both sides)"
            ) from exc
    if codec == "json":
        return json.loads(data.decode("utf-8"))
    return data


def decode_result(view: Mapping[str, Any], fetch: Fetch) -> Any:
    if "value" in view and view.get("codec") == "json" and view.get("data") is None and view.get("url") is None:
        return view["value"]
    return decode_value(payload_bytes(view, fetch), view["codec"])


def remote_exception(exception: Mapping[str, Any], task_id: Optional[str], fetch: Fetch, completion_t: Optional[str] = None) -> BaseException:
    """The exception to raise in the client for a failed task.

    When its pickle came back and its class is importable here (builtins such as ZeroDivisionError,
    or a module installed on both sides), an instance of a subclass of *both* that class and
    TaskExecutionFailed, so ``except ZeroDivisionError`` and ``except TaskExecutionFailed`` both
    catch it; ``str()`` is the original's. Otherwise a plain TaskExecutionFailed. Either way the
    remote traceback is attached: as ``remote_data`` / ``remote_traceback``, and as a note (shown
    under the client's traceback).
    """
    remote_type = str(exception.get("type") or "Exception")
    message = str(exception.get("message") or "")
    tb = str(exception.get("traceback") or "")
    remote_data = tb if tb.strip() else f"{remote_type}: {message}\n"
    exc: Optional[BaseException] = None
    payload = exception.get("payload")
    if payload and payload.get("codec") == CODEC:
        try:
            candidate = pickle.loads(payload_bytes(payload, fetch))
        except Exception:  # noqa: BLE001 - a class not importable here, a checksum mismatch: fall back to the description
            candidate = None
        # SystemExit or KeyboardInterrupt raised here would stop the client itself, not report a failed task.
        if isinstance(candidate, Exception):
            exc = as_task_execution_failed(candidate)
    if exc is None:
        exc = _builtin_exception(remote_type, message)
    if exc is None:
        return TaskExecutionFailed(remote_data, completion_t, remote_type=remote_type, message=message, task_id=task_id)
    attrs = {
        "remote_data": remote_data,
        "remote_traceback": tb,
        "remote_type": remote_type,
        "message": message,
        "completion_t": completion_t or str(time.time()),
        "task_details": None,
        "task_id": task_id,
        "ferry_task_id": task_id,
    }
    for name, value in attrs.items():
        try:
            setattr(exc, name, value)
        except Exception:  # noqa: BLE001 - a read-only attribute of the remote class keeps its own value
            pass
    if tb and hasattr(exc, "add_note"):
        exc.add_note(f"\nRemote traceback (Ferry task {task_id}):\n{tb.rstrip()}")
    return exc


def _builtin_exception(remote_type: str, message: str) -> Optional[BaseException]:
    """A remote exception without a usable pickle whose type is a Python builtin (the KeyError of a
    shell command's missing field, say): rebuilt from its name and message."""
    import builtins

    cls = getattr(builtins, remote_type, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return None
    if cls is KeyError and len(message) >= 2 and message[0] == message[-1] and message[0] in "'\"":
        message = message[1:-1]  # str(KeyError('x')) is "'x'"
    try:
        return as_task_execution_failed(cls(message))
    except Exception:  # noqa: BLE001 - a builtin with another constructor (UnicodeDecodeError...)
        return None


# One subclass per remote exception class (None: that class cannot be combined with TaskExecutionFailed).
_REMOTE_CLASSES: Dict[type, Optional[type]] = {}
_REMOTE_CLASSES_LOCK = threading.Lock()


def _remote_class(cls: type) -> Optional[type]:
    with _REMOTE_CLASSES_LOCK:
        if cls in _REMOTE_CLASSES:
            return _REMOTE_CLASSES[cls]
    sub: Optional[type]
    try:
        namespace = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "_ferry_remote_class": cls,
            # The remote class's text, not Globus's traceback dump: `print(exc)` shows "division by zero".
            "__str__": cls.__str__,
            "__repr__": cls.__repr__,
            "__reduce__": _reduce_remote,
            "__reduce_ex__": lambda self, protocol: _reduce_remote(self),
        }
        sub = type(cls)(cls.__name__, (cls, TaskExecutionFailed), namespace)
    except Exception:  # noqa: BLE001 - a layout conflict, a metaclass or __init_subclass__ that refuses
        sub = None
    with _REMOTE_CLASSES_LOCK:
        return _REMOTE_CLASSES.setdefault(cls, sub)


def _reduce_remote(exc: BaseException) -> Any:
    # Pickles as the remote class, with Ferry's attributes in its state: rebuilt again on loading.
    cls = type(exc)._ferry_remote_class  # type: ignore[attr-defined]
    return (_unpickle_remote, (cls, exc.args, dict(getattr(exc, "__dict__", {}))))


def _unpickle_remote(cls: type, args: tuple, state: Dict[str, Any]) -> BaseException:
    base = cls(*args)
    if state:
        base.__dict__.update(state)
    return as_task_execution_failed(base)


def as_task_execution_failed(exc: BaseException) -> Optional[BaseException]:
    """`exc` as an instance of its own class and of TaskExecutionFailed; None when that cannot be built.

    Built the way pickle rebuilt it (the class called with ``__reduce_ex__``'s arguments, then its
    state), so the copy has the same args and attributes.
    """
    if isinstance(exc, TaskExecutionFailed):
        return exc
    if not isinstance(exc, Exception):
        return None
    cls = type(exc)
    sub = _remote_class(cls)
    if sub is None:
        return None
    try:
        reduced = exc.__reduce_ex__(PICKLE_PROTOCOL)
        if not isinstance(reduced, tuple) or len(reduced) < 2 or reduced[0] is not cls:
            return None
        copy = sub(*reduced[1])
        state = reduced[2] if len(reduced) > 2 else None
        if state:
            if hasattr(copy, "__setstate__"):
                copy.__setstate__(state)
            else:
                copy.__dict__.update(state)
        copy.args = exc.args
    except Exception:  # noqa: BLE001 - a constructor that will not take its own args twice
        return None
    copy.__traceback__ = exc.__traceback__
    copy.__cause__ = exc.__cause__
    copy.__context__ = exc.__context__
    return copy


def inline_payload(data: bytes, codec: str) -> Dict[str, Any]:
    return {"codec": codec, "data": base64.b64encode(data).decode("ascii")}
