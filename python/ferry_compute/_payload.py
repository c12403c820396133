"""Arguments, results and exceptions as bytes: the `python-pickle` codec the worker's runtime speaks."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from .errors import ChecksumMismatch, FerryError, TaskExecutionFailed

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
            raise FerryError(
                f"the result cannot be unpickled here: {exc} (return builtin types, or classes from a module installed on both sides)"
            ) from exc
    if codec == "json":
        return json.loads(data.decode("utf-8"))
    return data


def decode_result(view: Mapping[str, Any], fetch: Fetch) -> Any:
    if "value" in view and view.get("codec") == "json" and view.get("data") is None and view.get("url") is None:
        return view["value"]
    return decode_value(payload_bytes(view, fetch), view["codec"])


def remote_exception(exception: Mapping[str, Any], task_id: Optional[str], fetch: Fetch) -> BaseException:
    """The exception to raise in the client for a failed task.

    The same type as on the worker when its pickle came back and its class is importable here
    (builtins such as ZeroDivisionError, or a module installed on both sides); otherwise a
    TaskExecutionFailed. Either way the remote traceback is attached: as a note (shown under the
    client's traceback) and as the attribute `remote_traceback`.
    """
    remote_type = str(exception.get("type") or "Exception")
    message = str(exception.get("message") or "")
    tb = str(exception.get("traceback") or "")
    exc: Optional[BaseException] = None
    payload = exception.get("payload")
    if payload and payload.get("codec") == CODEC:
        try:
            candidate = pickle.loads(payload_bytes(payload, fetch))
        except Exception:  # noqa: BLE001 - a class not importable here, a checksum mismatch: fall back to the description
            candidate = None
        # SystemExit or KeyboardInterrupt raised here would stop the client itself, not report a failed task.
        if isinstance(candidate, Exception):
            exc = candidate
    if exc is None:
        return TaskExecutionFailed(remote_type, message, tb, task_id)
    try:
        exc.remote_traceback = tb  # type: ignore[attr-defined]
        exc.ferry_task_id = task_id  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an exception class with __slots__ keeps only the note
        pass
    if tb and hasattr(exc, "add_note"):
        exc.add_note(f"\nRemote traceback (Ferry task {task_id}):\n{tb.rstrip()}")
    return exc


def inline_payload(data: bytes, codec: str) -> Dict[str, Any]:
    return {"codec": codec, "data": base64.b64encode(data).decode("ascii")}
