"""`Client`: the Globus Compute SDK's Client, for Ferry: register, run, read tasks and endpoints."""

from __future__ import annotations

import concurrent.futures
import datetime
import inspect
import threading
import uuid
import warnings
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import _http
from ._config import resolve_credentials
from ._output import TaskOutput, task_output
from ._payload import CODEC, UPLOAD_THRESHOLD, decode_result, encode_args, inline_payload, remote_exception, sha256_hex
from ._source import FunctionSource, function_source
from .batch import Batch, as_uuid, user_runtime
from .errors import FerryApiError, FerryError, SerializationError, TaskPending
from .shell_function import SHELL_RESULT_KEYS, ShellFunction, ShellResult, shell_kwargs

FINAL_STATES = ("success", "failed", "cancelled")
# The API takes at most 500 tasks per submit and 1,000 ids per batch read.
MAX_TASKS_PER_SUBMIT = 500
MAX_IDS_PER_READ = 1000
# POST /v1/tasks/wait: the API waits at most 20 s (API Gateway answers within 30 s).
MAX_WAIT_MS = 20_000
DEFAULT_WAIT_MS = 10_000
# Runtimes whose arguments travel as JSON {"args", "kwargs"}; python's as a pickle.
JSON_RUNTIMES = ("node", "shell", "mpi")
SHELL_RUNTIMES = ("shell", "mpi")
MAX_DESCRIPTION = 1024

_NO_GLOBUS_AUTH = (
    "Ferry does not use Globus Auth: the client authenticates with a Ferry API token "
    "(FERRY_API_URL / FERRY_TOKEN, or the credentials file `npm start` and `ferry local login` write); "
    "an operator revokes tokens with `ferry token revoke`"
)


class ArgumentsNotSerializable(SerializationError, TypeError):
    """Arguments that cannot be encoded: Globus's SerializationError, and a TypeError as Ferry raised before."""

    def __init__(self, reason: str):
        SerializationError.__init__(self, reason)


def _warn_ignored(owner: str, options: Mapping[str, Any], stacklevel: int = 3) -> None:
    """Options Globus Compute accepts that mean nothing to Ferry: kept, and named in one warning."""
    names = sorted(options)
    if names:
        warnings.warn(f"{owner}: {', '.join(names)}: Globus Compute option(s) that Ferry accepts and ignores", stacklevel=stacklevel)


def _warn_unknown(owner: str, kwargs: Mapping[str, Any], stacklevel: int = 3) -> None:
    for name in kwargs:
        warnings.warn(f"{owner}: the {name!r} argument is unrecognized. (It might have been removed in a previous release.)", stacklevel=stacklevel)


class Client:
    """The Ferry API for Python, shaped like ``globus_compute_sdk.Client``.

    Credentials come from ``api_url`` / ``token``, else FERRY_API_URL / FERRY_TOKEN, else the
    credentials file (FERRY_CREDENTIALS, ./.ferry/credentials.json, ~/.ferry/credentials.json).
    Globus's arguments (environment, local_compute_services, do_version_check, serialization
    strategies, app, authorizer) are accepted and kept as attributes; those that would change
    something in Globus Compute are ignored with a warning.
    """

    def __init__(
        self,
        environment: Optional[str] = None,
        local_compute_services: bool = False,
        do_version_check: bool = True,
        *,
        code_serialization_strategy: Any = None,
        data_serialization_strategy: Any = None,
        app: Any = None,
        authorizer: Any = None,
        api_url: Optional[str] = None,
        token: Optional[str] = None,
        http: Optional[_http.Http] = None,
        fetch: Optional[Callable[[str], bytes]] = None,
        upload: Optional[Callable[[str, bytes], None]] = None,
        **kwargs: Any,
    ):
        # Ferry's earlier signature was Client(api_url, token): still understood.
        if isinstance(environment, str) and environment.startswith(("http://", "https://")) and api_url is None:
            api_url, environment = environment, None
            if isinstance(local_compute_services, str) and token is None:
                token, local_compute_services = local_compute_services, False
        _warn_unknown("Client", kwargs)
        ignored = {
            "environment": environment,
            "local_compute_services": local_compute_services or None,
            "code_serialization_strategy": code_serialization_strategy,
            "data_serialization_strategy": data_serialization_strategy,
            "app": app,
            "authorizer": authorizer,
        }
        _warn_ignored("Client", {k: v for k, v in ignored.items() if v is not None})
        self.environment = environment
        self.local_compute_services = local_compute_services
        self.do_version_check = do_version_check
        self.code_serialization_strategy = code_serialization_strategy
        self.data_serialization_strategy = data_serialization_strategy
        self.app = app
        self.authorizer = authorizer
        # Globus's serializer; Ferry's codecs are fixed (python-pickle protocol 4, or JSON).
        self.fx_serializer: Any = None
        if http is None:
            url, tok = resolve_credentials(api_url, token)
            http = _http.Http(url, tok)
        self.http = http
        self._fetch = fetch or (lambda url: _http.transfer("GET", url))
        self._upload = upload or _put
        self._runtimes: Dict[str, str] = {}
        self._return_dict: Dict[str, bool] = {}
        self._lock = threading.Lock()
        if do_version_check:
            self.version_check()

    @property
    def api_url(self) -> str:
        return self.http.api_url

    @property
    def web_service_address(self) -> str:
        return self.http.api_url

    @property
    def auth_client(self) -> Any:
        raise NotImplementedError(_NO_GLOBUS_AUTH)

    def version_check(self, endpoint_version: Optional[str] = None) -> None:
        """Globus checks the SDK's version against the service's minimum; Ferry's API is versioned by path
        (/v1), so there is nothing to check: returns None."""
        return None

    def logout(self) -> None:
        raise NotImplementedError(_NO_GLOBUS_AUTH)

    # --- functions ---------------------------------------------------------------------------

    def register_function(
        self,
        function: Callable,
        description: Optional[str] = None,
        metadata: Optional[dict] = None,
        public: bool = False,
        group: Optional[str] = None,
        ha_endpoint_id: Optional[str] = None,
        *,
        function_name: Optional[str] = None,
        **kwargs: Any,
    ) -> str:
        """Register `function` (a Python function, or a ShellFunction / MPIFunction); returns its id.

        Every call registers: the API answers the same id for the same name, description and
        source. ``description`` defaults to the function's docstring, as in Globus Compute.
        ``metadata`` is accepted and ignored; ``public``, ``group`` and ``ha_endpoint_id`` are ignored
        with a warning (Ferry shares endpoints, not functions).
        """
        self._ignore_sharing("register_function", public, group, ha_endpoint_id, kwargs)
        if description is None and not isinstance(function, ShellFunction):
            description = inspect.getdoc(function) or None
        if isinstance(function, ShellFunction):
            body = function._ferry_registration(description)
            if function_name:
                body["name"] = function_name
            fid = self._register_body(body)
            with self._lock:
                self._return_dict[fid] = bool(function.return_dict)
            return fid
        return self._register(function_source(function), function_name, description)

    def register_source_code(
        self,
        source: str,
        function_name: str,
        description: Optional[str] = None,
        metadata: Optional[dict] = None,
        public: bool = False,
        group: Optional[str] = None,
        ha_endpoint_id: Optional[str] = None,
    ) -> str:
        """Register Python source that defines `function_name` at its top level; returns the function id."""
        self._ignore_sharing("register_source_code", public, group, ha_endpoint_id, {})
        if not isinstance(source, str) or not source.strip():
            raise ValueError("source must be a non-empty str of Python code")
        if not isinstance(function_name, str) or not function_name.isidentifier():
            raise ValueError(f"function_name must be the name of a function the source defines, not {function_name!r}")
        if not source.endswith("\n"):
            source += "\n"
        return self._register(FunctionSource(function_name, source, function_name), function_name, description)

    def _ignore_sharing(self, owner: str, public: Any, group: Any, ha_endpoint_id: Any, kwargs: Mapping[str, Any]) -> None:
        old = {k: v for k, v in kwargs.items() if k in ("searchable", "container_uuid")}
        unknown = sorted(set(kwargs) - set(old))
        if unknown:
            raise TypeError(f"{owner}() got unexpected keyword arguments: {', '.join(unknown)}")
        options = {"public": public or None, "group": group, "ha_endpoint_id": ha_endpoint_id, **old}
        _warn_ignored(owner, {k: v for k, v in options.items() if v is not None}, stacklevel=4)

    def _register(self, fs: FunctionSource, name: Optional[str] = None, description: Optional[str] = None) -> str:
        label = (name or fs.name).strip()[:128] or fs.entrypoint
        body: Dict[str, Any] = {"name": label, "runtime": "python", "source": fs.source, "entrypoint": fs.entrypoint}
        if description:
            body["description"] = str(description)[:MAX_DESCRIPTION]
        return self._register_body(body)

    def _register_body(self, body: Dict[str, Any]) -> str:
        out = self.http.request("POST", "/v1/functions", body)
        with self._lock:
            self._runtimes[out["function_id"]] = body["runtime"]
        return out["function_id"]

    def get_function(self, function_id: Any) -> Dict[str, Any]:
        """The registered function: Ferry's view (function_id, name, runtime, source, entrypoint,
        description...), with Globus's names (function_uuid, function_name, function_code) added."""
        view = self.http.request("GET", f"/v1/functions/{function_id}")
        view.setdefault("function_uuid", view.get("function_id"))
        view.setdefault("function_name", view.get("name"))
        view.setdefault("function_code", view.get("source"))
        if view.get("runtime"):
            with self._lock:
                self._runtimes[view["function_id"]] = view["runtime"]
        return view

    def delete_function(self, function_id: Any) -> Dict[str, Any]:
        """Delete a function you registered: later submits of it fail (404); tasks already queued still run."""
        out = self.http.request("DELETE", f"/v1/functions/{function_id}")
        return out

    def _runtime_of(self, function_id: str) -> str:
        """A registered function's runtime decides how its arguments are encoded; looked up once."""
        function_id = str(function_id)
        with self._lock:
            known = self._runtimes.get(function_id)
        if known is None:
            known = self.http.request("GET", f"/v1/functions/{function_id}")["runtime"]
            with self._lock:
                self._runtimes[function_id] = known
        return known

    def _encode_for(self, function_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Tuple[str, bytes]:
        """The codec and bytes of a task's arguments, for its function's runtime."""
        runtime = self._runtime_of(function_id)
        try:
            if runtime in SHELL_RUNTIMES:
                return "json", encode_args(tuple(args), shell_kwargs(dict(kwargs)), "json")
            if runtime in JSON_RUNTIMES:
                return "json", encode_args(args, kwargs, "json")
            return CODEC, encode_args(args, kwargs, CODEC)
        except TypeError as exc:
            raise ArgumentsNotSerializable(str(exc)) from exc

    # --- tasks -------------------------------------------------------------------------------

    def create_batch(
        self,
        task_group_id: Any = None,
        resource_specification: Optional[Dict[str, Any]] = None,
        user_endpoint_config: Optional[Dict[str, Any]] = None,
        create_websocket_queue: bool = False,
        result_serializers: Optional[List[str]] = None,
    ) -> Batch:
        """A Batch to fill with ``batch.add(function_id, args, kwargs)`` and send with ``batch_run``.

        ``resource_specification`` goes with the batch's MPIFunction tasks; ``user_endpoint_config``
        and ``result_serializers`` are ignored with a warning.
        """
        _warn_ignored("create_batch", {k: v for k, v in {"user_endpoint_config": user_endpoint_config, "result_serializers": result_serializers}.items() if v})
        return Batch(
            task_group_id,
            resource_specification,
            user_endpoint_config,
            create_websocket_queue,
            result_serializers=result_serializers,
            user_runtime=user_runtime(),
            client=self,
        )

    def batch_run(self, endpoint_id: Any, batch: Batch) -> Dict[str, Any]:
        """Submit a Batch. Returns Globus's shape: ``{"request_id", "task_group_id", "endpoint_id",
        "tasks": {function_id: [task_id, ...]}}``, task ids in the order they were added."""
        if not batch:
            raise ValueError("No tasks specified for batch run")
        endpoint_id = str(as_uuid(endpoint_id, "endpoint_id"))
        group = str(batch.task_group_id or uuid.uuid4())
        specs: List[Dict[str, Any]] = []
        owners: List[str] = []
        for fid, items in batch.tasks.items():
            fid_s = str(fid)
            for item in items:
                specs.append(self._spec_from_item(endpoint_id, fid_s, item.codec, item.data, batch.resource_specification))
                owners.append(fid_s)
        tasks: Dict[str, List[str]] = {}
        request_ids: List[str] = []
        for start in range(0, len(specs), MAX_TASKS_PER_SUBMIT):
            out = self._submit(endpoint_id, specs[start : start + MAX_TASKS_PER_SUBMIT], group)
            group = out.get("task_group_id") or group
            request_ids.append(str(out.get("request_id") or ""))
            for fid_s, task_id in zip(owners[start : start + MAX_TASKS_PER_SUBMIT], out["task_ids"]):
                tasks.setdefault(fid_s, []).append(task_id)
        batch.task_group_id = group
        return {"request_id": next((r for r in request_ids if r), str(uuid.uuid4())), "task_group_id": group, "endpoint_id": endpoint_id, "tasks": tasks}

    def run(self, *args: Any, endpoint_id: Any, function_id: Any, **kwargs: Any) -> str:
        """Run a registered function once; returns the task id at once."""
        batch = self.create_batch()
        batch.add(function_id, args, kwargs)
        out = self.batch_run(endpoint_id, batch)
        return next(iter(out["tasks"].values()))[0]

    def _spec_from_item(self, endpoint_id: str, function_id: str, codec: str, data: bytes, resource_specification: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        runtime = self._runtime_of(function_id)
        if codec == CODEC and runtime in JSON_RUNTIMES:
            import pickle

            args, kwargs = pickle.loads(data)
            codec, data = self._encode_for(function_id, args, kwargs)
        spec: Dict[str, Any] = {"function_id": function_id, "payload": self._payload(endpoint_id, data, codec)}
        if runtime == "mpi" and resource_specification:
            spec["resource_specification"] = dict(resource_specification)
        return spec

    def _task_spec(
        self,
        endpoint_id: str,
        function_id: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        walltime_ms: Optional[int] = None,
        encoded: Optional[Tuple[str, bytes]] = None,
        resource_specification: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """One task of a submit body: arguments inline, or uploaded first when large (claim check)."""
        codec, data = encoded if encoded is not None else self._encode_for(function_id, args, kwargs)
        spec = self._spec_from_item(str(endpoint_id), str(function_id), codec, data, resource_specification)
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
            body["task_group_id"] = str(task_group_id)
        # One key per request, the same on each retry: a retried submit never queues twice.
        return self.http.request("POST", f"/v1/endpoints/{endpoint_id}/submit", body, idempotency_key=self.http.new_idempotency_key())

    def _views(self, task_ids: Sequence[str], on_page: Optional[Callable[[List[Dict[str, Any]]], Any]] = None) -> Dict[str, Any]:
        """Views of any number of tasks: up to 1,000 ids a request, and the ids a response names
        ``unread`` (those that did not fit in it) asked for again until every view is read."""
        tasks: List[Dict[str, Any]] = []
        unknown: List[str] = []
        ids = [str(t) for t in task_ids]
        for i in range(0, len(ids), MAX_IDS_PER_READ):
            ask = ids[i : i + MAX_IDS_PER_READ]
            while ask:
                out = self.http.request("POST", "/v1/tasks/batch", {"task_ids": ask})
                page = out.get("tasks", [])
                tasks.extend(page)
                unknown.extend(out.get("unknown", []))
                if on_page is not None:
                    on_page(page)
                unread = out.get("unread") or []
                # The API always answers at least one view: a page with none and ids left would never end.
                if unread and not page:
                    raise FerryError(f"the API read none of {len(unread)} tasks and named them unread")
                ask = unread
        return {"tasks": tasks, "unknown": unknown}

    def _wait(self, task_ids: Sequence[str], wait_ms: int = DEFAULT_WAIT_MS) -> Dict[str, Any]:
        """POST /v1/tasks/wait: views of the finished tasks among up to 1,000 ids, as soon as one is
        finished, or none when ``wait_ms`` passes first; ``unknown`` ids, ``unread`` finished ones that
        did not fit, and ``pending``, how many are open. An API without the route answers 404."""
        return self.http.request("POST", "/v1/tasks/wait", {"task_ids": [str(t) for t in task_ids], "wait_ms": int(wait_ms)})

    def wait_for_tasks(self, task_id_list: Iterable[Any], timeout: float = DEFAULT_WAIT_MS / 1000) -> Dict[str, Dict[str, Any]]:
        """The finished tasks among up to 1,000 ids, in ``get_batch_result``'s shape, as soon as one
        of them is finished; ``{}`` when ``timeout`` seconds (at most 20) pass first (a Ferry addition)."""
        ids = [str(t) for t in task_id_list]
        out = self._wait(ids, min(MAX_WAIT_MS, max(0, int(timeout * 1000))))
        found = {v["task_id"]: self._outcome(v) for v in out.get("tasks", [])}
        for tid in out.get("unknown", []):
            found[tid] = {"task_id": tid, "pending": False, "status": "unknown", "exception": FerryApiError(404, "NotFound", f"task {tid} not found")}
        return {tid: found[tid] for tid in ids if tid in found}

    def _group_views(self, task_group_id: str) -> List[Dict[str, Any]]:
        """Every task of a task group, in submit order (GET /v1/task-groups/{id}, all pages)."""
        views: List[Dict[str, Any]] = []
        cursor: Optional[str] = None
        while True:
            path = f"/v1/task-groups/{task_group_id}" + (f"?cursor={_quote(cursor)}" if cursor else "")
            page = self.http.request("GET", path)
            views.extend(page.get("tasks", []))
            cursor = page.get("next_cursor")
            if not cursor:
                return views

    def _cancel(self, task_id: str) -> Dict[str, Any]:
        return self.http.request("POST", f"/v1/tasks/{task_id}/cancel")

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not finished; True if it is cancelled now (a Ferry addition)."""
        return self._cancel(task_id).get("status") == "cancelled"

    def _shell_result(self, view: Mapping[str, Any], value: Any, return_dict: Optional[bool] = None) -> Any:
        """A shell/mpi function's JSON result as a ShellResult (or the dict, for return_dict=True)."""
        if not (isinstance(value, dict) and SHELL_RESULT_KEYS <= set(value)):
            return value
        fid = str(view.get("function_id") or "")
        try:
            runtime = self._runtime_of(fid) if fid else None
        except FerryError:
            runtime = None  # deleted meanwhile: the shape alone decides
        if runtime is not None and runtime not in SHELL_RUNTIMES:
            return value
        if return_dict is None:
            with self._lock:
                return_dict = self._return_dict.get(fid, False)
        return dict(value) if return_dict else ShellResult._from_dict(value)

    def _outcome(self, view: Mapping[str, Any], return_dict: Optional[bool] = None) -> Dict[str, Any]:
        """A task view as Globus Compute's get_task shows it: pending, status, result or exception."""
        status = view["status"]
        completion_t = _completion_t(view.get("completed_at"))
        task: Dict[str, Any] = {
            "task_id": view["task_id"],
            "pending": status not in FINAL_STATES,
            "status": status,
            "task_group_id": view.get("task_group_id"),
            "function_id": view.get("function_id"),
            "endpoint_id": view.get("endpoint_id"),
            "created_at": view.get("created_at"),
            "transitions": view.get("transitions", []),
        }
        if completion_t is not None:
            task["completion_t"] = completion_t
        if view.get("resource_specification") is not None:
            task["resource_specification"] = view["resource_specification"]
        if status == "success" and view.get("result") is not None:
            result = decode_result(view["result"], self._fetch)
            if view["result"].get("codec") == "json":
                result = self._shell_result(view, result, return_dict)
            task["result"] = result
        elif status == "success":
            task["result"] = None
        elif status == "failed":
            task["exception"] = remote_exception(view.get("exception") or {}, view["task_id"], self._fetch, completion_t)
        output = task_output(view)
        if output is not None:
            task["output"] = output
            if "exception" in task:
                _attach_output(task["exception"], output)
        if status == "cancelled":
            task["exception"] = concurrent.futures.CancelledError(f"task {view['task_id']} was cancelled")
        return task

    def get_task(self, task_id: Any) -> Dict[str, Any]:
        """The task's state: ``{"pending", "status", "result", "completion_t", ...}``.

        As in Globus Compute, a failed task raises its exception here (an instance of
        TaskExecutionFailed, and of the remote exception's own class where it can be rebuilt).
        """
        task = self._outcome(self.http.request("GET", f"/v1/tasks/{task_id}"))
        if task["status"] == "failed":
            raise task["exception"]
        return task

    def get_output(self, task_id: Any) -> Optional[TaskOutput]:
        """What a finished task printed (a TaskOutput with stdout and stderr, capped by its endpoint), or None."""
        return task_output(self.http.request("GET", f"/v1/tasks/{task_id}"))

    def get_result(self, task_id: Any) -> Any:
        """The task's result; raises its exception if it failed, TaskPending(status) if it has not finished."""
        task = self._outcome(self.http.request("GET", f"/v1/tasks/{task_id}"))
        if task["pending"]:
            raise TaskPending(task["status"], str(task_id))
        if "exception" in task:
            raise task["exception"]
        return task.get("result")

    def get_batch_result(self, task_id_list: Iterable[Any]) -> Dict[str, Dict[str, Any]]:
        """``{task_id: {"pending", "status", "result" | "exception", "completion_t"}}`` for many tasks, 1,000 per request.

        Unlike Globus Compute, which leaves failed tasks out (and logs them), a failed task is
        listed with its exception object under ``exception``; an unknown id with status ``unknown``.
        """
        ids = [str(t) for t in task_id_list]
        views = self._views(ids)
        out = {v["task_id"]: self._outcome(v) for v in views["tasks"]}
        for tid in views["unknown"]:
            out[tid] = {"task_id": tid, "pending": False, "status": "unknown", "exception": FerryApiError(404, "NotFound", f"task {tid} not found")}
        return {tid: out[tid] for tid in ids if tid in out}

    def get_worker_hardware_details(self, endpoint_id: Any) -> str:
        """Submit a function that reports the hardware of a worker of `endpoint_id`; returns its task id.

            task_id = gcc.get_worker_hardware_details(ep)
            print(gcc.get_result(task_id))   # once finished
        """
        from .hardware_report import run_hardware_report

        function_id = self.register_function(run_hardware_report)
        return self.run("Compute Endpoint worker", endpoint_id=endpoint_id, function_id=function_id)

    # --- endpoints ---------------------------------------------------------------------------

    def get_endpoint_status(self, endpoint_uuid: Any) -> Dict[str, Any]:
        """Ferry's status, plus Globus Compute's `details` keys (total_workers, outstanding_tasks...)."""
        st = self.http.request("GET", f"/v1/endpoints/{endpoint_uuid}/status")
        st["details"] = {
            "total_workers": st.get("workers", 0),
            "idle_workers": st.get("idle_workers", 0),
            "pending_tasks": st.get("queued", 0),
            "outstanding_tasks": st.get("queued", 0) + st.get("running", 0),
            "managers": st.get("agents", 0),
        }
        return st

    def get_endpoints(self, role: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every endpoint this user may use: their own, shared with them, and public ones
        (``role="owner"``: only their own)."""
        endpoints: List[Dict[str, Any]] = []
        cursor: Optional[str] = None
        while True:
            page = self.http.request("GET", "/v1/endpoints" + (f"?cursor={_quote(cursor)}" if cursor else ""))
            endpoints.extend(page.get("endpoints", []))
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if role == "owner":
            endpoints = [e for e in endpoints if e.get("owner")]  # the API names the owner to the owner only
        return endpoints

    def get_endpoint_metadata(self, endpoint_uuid: Any) -> Dict[str, Any]:
        return self.http.request("GET", f"/v1/endpoints/{endpoint_uuid}")

    def get_allowed_functions(self, endpoint_id: Any) -> Dict[str, Any]:
        """``{"endpoint_id", "restricted", "functions": [function ids]}``: the functions the endpoint runs
        (``restricted`` false: any function)."""
        return self.http.request("GET", f"/v1/endpoints/{endpoint_id}/allowed_functions")

    def register_endpoint(
        self,
        name: str,
        endpoint_id: Any = None,
        metadata: Optional[dict] = None,
        multi_user: Optional[bool] = None,
        display_name: Optional[str] = None,
        allowed_functions: Optional[List[Any]] = None,
        auth_policy: Any = None,
        subscription_id: Any = None,
        public: Optional[bool] = None,
        high_assurance: Optional[bool] = None,
        admins: Optional[List[Any]] = None,
    ) -> Dict[str, Any]:
        """Register an endpoint (``endpoint_id`` None) or update one you own (its ``public`` flag and
        ``allowed_functions``). A new endpoint's answer includes its ``endpoint_secret``: the agent
        (``ferry endpoint start``) needs it. Globus-only options are ignored with a warning."""
        _warn_ignored(
            "register_endpoint",
            {
                k: v
                for k, v in {
                    "metadata": metadata,
                    "multi_user": multi_user,
                    "display_name": display_name,
                    "auth_policy": auth_policy,
                    "subscription_id": subscription_id,
                    "high_assurance": high_assurance,
                    "admins": admins,
                }.items()
                if v
            },
        )
        allowed = [str(f) for f in allowed_functions] if allowed_functions else None
        if endpoint_id is None:
            body: Dict[str, Any] = {"name": name}
            if public is not None:
                body["public"] = public
            if allowed is not None:
                body["allowed_functions"] = allowed
            return self.http.request("POST", "/v1/endpoints", body)
        share: Dict[str, Any] = {}
        if public is not None:
            share["public"] = public
        if allowed is not None:
            share["allowed_functions"] = allowed
        if not share:
            return self.get_endpoint_metadata(endpoint_id)
        return self.http.request("POST", f"/v1/endpoints/{endpoint_id}/share", share)

    def delete_endpoint(self, endpoint_id: Any) -> Dict[str, Any]:
        """Delete an endpoint you own."""
        return self.http.request("DELETE", f"/v1/endpoints/{endpoint_id}")

    def stop_endpoint(self, endpoint_id: Any) -> Any:
        raise NotImplementedError(
            "Ferry cannot stop an endpoint from the client: stop its agent process (Ctrl-C / SIGTERM on "
            "`ferry endpoint start`), or delete the endpoint with Client.delete_endpoint"
        )

    def get_result_amqp_url(self) -> Dict[str, str]:
        raise NotImplementedError("Ferry has no AMQP result queue: results are read over HTTPS (the Executor polls GET /v1/tasks in batches)")

    # Globus Compute's container registry: Ferry runs functions in the endpoint's own environment.
    def register_container(self, location: str, container_type: str, name: str = "", description: str = "") -> str:
        raise NotImplementedError(_NO_CONTAINERS)

    def get_container(self, container_uuid: Any, container_type: str) -> Dict[str, Any]:
        raise NotImplementedError(_NO_CONTAINERS)

    def get_containers(self, name: str, description: Optional[str] = None) -> Any:
        raise NotImplementedError(_NO_CONTAINERS)

    def build_container(self, container_spec: Any) -> str:
        raise NotImplementedError(_NO_CONTAINERS)

    def get_container_build_status(self, container_id: Any) -> str:
        raise NotImplementedError(_NO_CONTAINERS)


_NO_CONTAINERS = (
    "Ferry has no container registry: a function runs in its endpoint's own environment. Install what it needs "
    "in the worker image (workers/Dockerfile) or the block's worker_init (endpoint.yaml), e.g. `module load`, "
    "`conda activate` or `apptainer exec` inside a ShellFunction"
)


def _put(url: str, data: bytes) -> None:
    _http.transfer("PUT", url, data)


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _completion_t(completed_at: Any) -> Optional[str]:
    """Globus's completion_t (unix time as a string) from Ferry's completed_at (ISO 8601)."""
    if not completed_at:
        return None
    try:
        text = str(completed_at).replace("Z", "+00:00")
        return str(datetime.datetime.fromisoformat(text).timestamp())
    except ValueError:
        return str(completed_at)


def _attach_output(exc: BaseException, output: TaskOutput) -> None:
    """The task's output rides on its exception as `ferry_output`, like `ferry_task_id`."""
    try:
        exc.ferry_output = output  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an exception class with __slots__ goes without it
        pass
