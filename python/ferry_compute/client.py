"""`Client`: the Globus Compute SDK's Client, for Ferry: register, run, read tasks and endpoints."""

from __future__ import annotations

import concurrent.futures
import threading
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from . import _http
from ._config import resolve_credentials
from ._output import TaskOutput, task_output
from ._payload import CODEC, UPLOAD_THRESHOLD, decode_result, encode_args, inline_payload, remote_exception, sha256_hex
from ._source import FunctionSource, function_source
from .errors import FerryApiError, TaskPending

FINAL_STATES = ("success", "failed", "cancelled")
# The API takes at most 500 tasks per submit and 1,000 ids per batch read.
MAX_TASKS_PER_SUBMIT = 500
MAX_IDS_PER_READ = 1000
# Globus Compute options that mean nothing to Ferry: accepted, so scripts run, and ignored with a warning.
_GLOBUS_ONLY_OPTIONS = frozenset(
    {"environment", "funcx_service_address", "local_compute_services", "do_version_check", "login_manager", "code_serialization_strategy", "data_serialization_strategy", "app", "authorizer"}
)


def _warn_ignored(cls: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    known = frozenset(known)
    unknown = sorted(k for k in options if k not in known)
    if unknown:
        raise TypeError(f"{cls}() got unexpected keyword arguments: {', '.join(unknown)}")
    ignored = sorted(k for k, v in options.items() if v is not None)
    if ignored:
        warnings.warn(f"{cls}: {', '.join(ignored)} is a Globus Compute option that Ferry ignores", stacklevel=3)


class Client:
    """The Ferry API for Python, shaped like ``globus_compute_sdk.Client``.

    Credentials come from the arguments, else FERRY_API_URL / FERRY_TOKEN, else the credentials
    file (FERRY_CREDENTIALS, ./.ferry/credentials.json, ~/.ferry/credentials.json).
    """

    def __init__(self, api_url: Optional[str] = None, token: Optional[str] = None, *, http: Optional[_http.Http] = None, fetch: Optional[Callable[[str], bytes]] = None, upload: Optional[Callable[[str, bytes], None]] = None, **globus_options: Any):
        _warn_ignored("Client", globus_options, _GLOBUS_ONLY_OPTIONS)
        if http is None:
            url, tok = resolve_credentials(api_url, token)
            http = _http.Http(url, tok)
        self.http = http
        self._fetch = fetch or (lambda url: _http.transfer("GET", url))
        self._upload = upload or _put
        self._runtimes: Dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return self.http.api_url

    # --- functions ---------------------------------------------------------------------------

    def register_function(self, function: Callable, function_name: Optional[str] = None, description: Optional[str] = None, **globus_options: Any) -> str:
        """Register `function` by its source; the same source gives the same id. Returns the function id."""
        _warn_ignored("register_function", globus_options, {"public", "group", "searchable", "container_uuid"})
        return self._register(function_source(function), function_name)

    def _register(self, fs: FunctionSource, name: Optional[str] = None) -> str:
        label = (name or fs.name).strip()[:128] or fs.entrypoint
        out = self.http.request("POST", "/v1/functions", {"name": label, "runtime": "python", "source": fs.source, "entrypoint": fs.entrypoint})
        with self._lock:
            self._runtimes[out["function_id"]] = "python"
        return out["function_id"]

    def get_function(self, function_id: str) -> Dict[str, Any]:
        return self.http.request("GET", f"/v1/functions/{function_id}")

    def _runtime_of(self, function_id: str) -> str:
        """A registered function's runtime decides how its arguments are encoded; looked up once."""
        with self._lock:
            known = self._runtimes.get(function_id)
        if known is None:
            known = self.get_function(function_id)["runtime"]
            with self._lock:
                self._runtimes[function_id] = known
        return known

    # --- tasks -------------------------------------------------------------------------------

    def run(self, *args: Any, endpoint_id: str, function_id: str, **kwargs: Any) -> str:
        """Run a registered function once; returns the task id at once."""
        spec = self._task_spec(endpoint_id, function_id, args, kwargs)
        return self._submit(endpoint_id, [spec])["task_ids"][0]

    def _task_spec(self, endpoint_id: str, function_id: str, args: Sequence[Any], kwargs: Mapping[str, Any], walltime_ms: Optional[int] = None, encoded: Optional[bytes] = None) -> Dict[str, Any]:
        """One task of a submit body: arguments inline, or uploaded first when large (claim check)."""
        codec = "json" if self._runtime_of(function_id) == "node" else CODEC
        data = encoded if encoded is not None else encode_args(args, kwargs, codec)
        spec: Dict[str, Any] = {"function_id": function_id, "payload": self._payload(endpoint_id, data, codec)}
        if walltime_ms is not None:
            spec["walltime_ms"] = walltime_ms
        return spec

    def _payload(self, endpoint_id: str, data: bytes, codec: str) -> Dict[str, Any]:
        if len(data) <= UPLOAD_THRESHOLD:
            return inline_payload(data, codec)
        digest = sha256_hex(data)
        slot = self.http.request("POST", "/v1/payloads", {"endpoint_id": endpoint_id, "codec": codec, "size": len(data), "sha256": digest})
        self._upload(slot["url"], data)
        return {"codec": codec, "ref": slot["ref"], "size": len(data), "sha256": digest}

    def _submit(self, endpoint_id: str, tasks: List[Dict[str, Any]], task_group_id: Optional[str] = None) -> Dict[str, Any]:
        body: Dict[str, Any] = {"tasks": tasks}
        if task_group_id:
            body["task_group_id"] = task_group_id
        # One key per request, the same on each retry: a retried submit never queues twice.
        return self.http.request("POST", f"/v1/endpoints/{endpoint_id}/submit", body, idempotency_key=self.http.new_idempotency_key())

    def _views(self, task_ids: Sequence[str]) -> Dict[str, Any]:
        tasks: List[Dict[str, Any]] = []
        unknown: List[str] = []
        ids = list(task_ids)
        for i in range(0, len(ids), MAX_IDS_PER_READ):
            out = self.http.request("POST", "/v1/tasks/batch", {"task_ids": ids[i : i + MAX_IDS_PER_READ]})
            tasks.extend(out.get("tasks", []))
            unknown.extend(out.get("unknown", []))
        return {"tasks": tasks, "unknown": unknown}

    def _cancel(self, task_id: str) -> Dict[str, Any]:
        return self.http.request("POST", f"/v1/tasks/{task_id}/cancel")

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not finished; True if it is cancelled now."""
        return self._cancel(task_id).get("status") == "cancelled"

    def _outcome(self, view: Mapping[str, Any]) -> Dict[str, Any]:
        """A task view as Globus Compute's get_task shows it: pending, status, result or exception."""
        status = view["status"]
        task: Dict[str, Any] = {
            "task_id": view["task_id"],
            "pending": status not in FINAL_STATES,
            "status": status,
            "task_group_id": view.get("task_group_id"),
            "function_id": view.get("function_id"),
            "endpoint_id": view.get("endpoint_id"),
            "created_at": view.get("created_at"),
            "completion_t": view.get("completed_at"),
            "transitions": view.get("transitions", []),
        }
        if status == "success" and view.get("result") is not None:
            task["result"] = decode_result(view["result"], self._fetch)
        elif status == "failed":
            task["exception"] = remote_exception(view.get("exception") or {}, view["task_id"], self._fetch)
        output = task_output(view)
        if output is not None:
            task["output"] = output
            if "exception" in task:
                _attach_output(task["exception"], output)
        elif status == "cancelled":
            task["exception"] = concurrent.futures.CancelledError(f"task {view['task_id']} was cancelled")
        return task

    def get_task(self, task_id: str) -> Dict[str, Any]:
        """The task's state; with its decoded `result`, or its `exception` object, once finished."""
        return self._outcome(self.http.request("GET", f"/v1/tasks/{task_id}"))

    def get_output(self, task_id: str) -> Optional[TaskOutput]:
        """What a finished task printed (a TaskOutput with stdout and stderr, capped by its endpoint), or None."""
        return task_output(self.http.request("GET", f"/v1/tasks/{task_id}"))

    def get_result(self, task_id: str) -> Any:
        """The task's result; raises its exception if it failed, TaskPending if it has not finished."""
        task = self.get_task(task_id)
        if task["pending"]:
            raise TaskPending(task_id, task["status"])
        if "exception" in task:
            raise task["exception"]
        return task.get("result")

    def get_batch_result(self, task_id_list: Iterable[str]) -> Dict[str, Dict[str, Any]]:
        """{task_id: {pending, status, result | exception}} for many tasks, read 1,000 per request."""
        ids = list(task_id_list)
        views = self._views(ids)
        out = {v["task_id"]: self._outcome(v) for v in views["tasks"]}
        for tid in views["unknown"]:
            out[tid] = {"task_id": tid, "pending": False, "status": "unknown", "exception": FerryApiError(404, "NotFound", f"task {tid} not found")}
        return {tid: out[tid] for tid in ids if tid in out}

    # --- endpoints ---------------------------------------------------------------------------

    def get_endpoint_status(self, endpoint_id: str) -> Dict[str, Any]:
        """Ferry's status, plus Globus Compute's `details` keys (total_workers, outstanding_tasks...)."""
        st = self.http.request("GET", f"/v1/endpoints/{endpoint_id}/status")
        st["details"] = {
            "total_workers": st.get("workers", 0),
            "idle_workers": st.get("idle_workers", 0),
            "pending_tasks": st.get("queued", 0),
            "outstanding_tasks": st.get("queued", 0) + st.get("running", 0),
            "managers": st.get("agents", 0),
        }
        return st

    def get_endpoints(self) -> List[Dict[str, Any]]:
        """Every endpoint this user may use: their own, shared with them, and public ones."""
        endpoints: List[Dict[str, Any]] = []
        cursor: Optional[str] = None
        while True:
            page = self.http.request("GET", "/v1/endpoints" + (f"?cursor={_quote(cursor)}" if cursor else ""))
            endpoints.extend(page.get("endpoints", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return endpoints

    def get_endpoint_metadata(self, endpoint_id: str) -> Dict[str, Any]:
        return self.http.request("GET", f"/v1/endpoints/{endpoint_id}")


def _put(url: str, data: bytes) -> None:
    _http.transfer("PUT", url, data)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _attach_output(exc: BaseException, output: TaskOutput) -> None:
    """The task's output rides on its exception as `ferry_output`, like `ferry_task_id`."""
    try:
        exc.ferry_output = output  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an exception class with __slots__ goes without it
        pass
