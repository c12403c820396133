"""`Executor` and `ComputeFuture`: Globus Compute's Executor, for Ferry.

`submit` returns a future at once. Submissions made close together leave in one request (up to
`batch_size` tasks); each function's source is registered once per executor; background threads
wait for the outstanding tasks by long poll (POST /v1/tasks/wait, up to four waits of 1,000 tasks
under way at once) and settle the futures as their tasks finish.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import threading
import time
import uuid
import warnings
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ._output import TaskOutput, task_output
from ._source import FunctionSource, function_source
from .batch import as_optional_uuid
from .client import DEFAULT_WAIT_MS, FINAL_STATES, MAX_IDS_PER_READ, MAX_TASKS_PER_SUBMIT, Client, _warn_ignored, _warn_unknown
from .errors import FerryApiError, FerryError, ResultsUnavailable
from .shell_function import ShellFunction

# Stays under the API's 5 MB submit body (Lambda takes 6 MB) with room for JSON and base64.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# The longest a submission waits for others to share its request.
MAX_LINGER = 0.1
# Long polls under way at once: tasks submitted while one waits are waited for at once too.
MAX_WAITS = 4
# Tasks left out of every wait for max_poll_interval (the waits under way name long tasks) get waits of their own, up to this many in all.
MAX_WAITS_OVERFLOW = 16


class ComputeFuture(concurrent.futures.Future):
    """A concurrent.futures.Future for one Ferry task; `task_id` is set once the task is submitted."""

    def __init__(self, task_id: Optional[str] = None):
        super().__init__()
        self.task_id: Optional[str] = task_id
        self._metadata: Dict[str, Any] = {}
        # The last state the API reported: received, waiting-for-endpoint, running, success...
        self.ferry_status: str = "unsubmitted" if task_id is None else "unknown"
        self._executor: Optional["Executor"] = None
        self._output: Optional[TaskOutput] = None
        self._return_dict: Optional[bool] = None

    def output(self, timeout: Optional[float] = None) -> Optional[TaskOutput]:
        """What the task printed: a TaskOutput (stdout, stderr, capped by the endpoint), or None.

        Waits for the task like ``exception(timeout)``; a Ferry addition (Globus Compute has none).
        """
        if not self.cancelled():
            self.exception(timeout)
        return self._output

    def cancel(self) -> bool:
        """Cancel the task: before it is submitted, here; after, on the service (a finished task stays finished)."""
        if self.done():
            return self.cancelled()
        ex = self._executor
        if self.task_id is None or ex is None:
            return self._cancel_here()
        try:
            view = ex.client._cancel(self.task_id)
        except FerryError:
            return False
        if view.get("status") != "cancelled":
            ex._settle(view)  # it finished first: its result or exception stands
            return False
        with ex._cond:
            ex._outstanding.pop(self.task_id, None)
        return self._cancel_here()

    def _cancel_here(self) -> bool:
        # The base class only flags the future; waiters (wait, as_completed) hear of it from
        # set_running_or_notify_cancel, once: the user's cancel and the poller may both get here.
        if not super().cancel():
            return False
        with self._condition:
            if self._state == concurrent.futures._base.CANCELLED:
                self.set_running_or_notify_cancel()
        return True

    def __repr__(self) -> str:
        base = super().__repr__()
        return base[:-1] + f" task_id={self.task_id}>" if self.task_id else base


class _Pending:
    """A submission waiting for its request: arguments already encoded, so later mutation cannot change them."""

    __slots__ = ("future", "function_id", "args")

    def __init__(self, future: ComputeFuture, function_id: str, args: Tuple[str, bytes]):
        self.future = future
        self.function_id = function_id
        self.args = args


class Executor(concurrent.futures.Executor):
    """Runs functions on a Ferry endpoint, like ``globus_compute_sdk.Executor``.

        with Executor(endpoint_id=ep) as ex:          # or Executor(ep, client)
            future = ex.submit(pow, 2, 10)
            print(future.result())

    Globus's options are kept as attributes: ``resource_specification`` goes with MPIFunction
    tasks; ``label`` and ``batch_size`` are used; ``user_endpoint_config``, ``amqp_port``,
    ``api_burst_limit`` / ``api_burst_window_s``, ``serializer`` and ``result_serializers`` are
    accepted and ignored (with a warning when set). Ferry's own, keyword-only: ``api_url``,
    ``token``, ``walltime_ms``, ``memory_mb``, ``batch_delay``, ``wait_ms`` (how long one long
    poll for results may wait, default 10,000, at most 20,000), ``status_interval`` (seconds
    between reads of the tasks not yet seen running, so ``ferry_status`` follows them; default 3),
    ``poll_interval`` and ``max_poll_interval`` (the polling of an older API without the wait
    route, and the pause after a failed wait), ``poll_failure_limit`` (polls in a row that may
    fail, each after the client's own retries, before the outstanding futures fail with
    ResultsUnavailable; waits that fail together count once; default 5).
    """

    # As in Globus Compute: the task group of the last executor that had one, for the next one.
    _default_task_group_id: Optional[uuid.UUID] = None

    def __init__(
        self,
        endpoint_id: Any = None,
        client: Optional[Client] = None,
        task_group_id: Any = None,
        resource_specification: Optional[Dict[str, Any]] = None,
        user_endpoint_config: Optional[Dict[str, Any]] = None,
        label: str = "",
        batch_size: int = 128,
        amqp_port: Optional[int] = None,
        api_burst_limit: int = 4,
        api_burst_window_s: int = 16,
        serializer: Any = None,
        result_serializers: Optional[Iterable[Any]] = None,
        *,
        api_url: Optional[str] = None,
        token: Optional[str] = None,
        walltime_ms: Optional[int] = None,
        memory_mb: Optional[int] = None,
        batch_delay: float = 0.005,
        wait_ms: int = DEFAULT_WAIT_MS,
        status_interval: float = 3.0,
        poll_interval: float = 0.02,
        max_poll_interval: float = 1.0,
        poll_failure_limit: int = 5,
        **kwargs: Any,
    ):
        old_funcx = {k: kwargs.pop(k) for k in ("container_id", "funcx_client") if k in kwargs}
        if kwargs:
            raise TypeError(f"{next(iter(kwargs))!r} is an invalid argument for {type(self).__name__}")
        ignored = {
            "user_endpoint_config": user_endpoint_config,
            "amqp_port": amqp_port,
            "api_burst_limit": None if api_burst_limit == 4 else api_burst_limit,
            "api_burst_window_s": None if api_burst_window_s == 16 else api_burst_window_s,
            "serializer": serializer,
            "result_serializers": result_serializers,
            **old_funcx,
        }
        _warn_ignored("Executor", {k: v for k, v in ignored.items() if v is not None})
        self.client = client or Client(api_url=api_url, token=token)
        self.endpoint_id = endpoint_id or os.environ.get("FERRY_ENDPOINT_ID") or None
        self._task_group_id: Optional[uuid.UUID] = None
        self.task_group_id = task_group_id or Executor._default_task_group_id
        self.resource_specification = resource_specification
        self.user_endpoint_config = user_endpoint_config
        self.label = label
        self.batch_size = max(1, min(int(batch_size), MAX_TASKS_PER_SUBMIT))
        self.amqp_port = amqp_port
        self.api_burst_limit = min(8, max(1, api_burst_limit))
        self.api_burst_window_s = min(32, max(1, api_burst_window_s))
        self._serializer = serializer
        self.result_serializers = result_serializers
        self.container_id = old_funcx.get("container_id")
        self.walltime_ms = walltime_ms
        # Each task's memory cap (MB); the endpoint's default otherwise, and its maximum caps it.
        self.memory_mb = memory_mb
        self.batch_delay = batch_delay
        self.wait_ms = wait_ms
        self.status_interval = status_interval
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.poll_failure_limit = max(1, int(poll_failure_limit))
        self.task_count_submitted = 0
        # Requests made, to see the batching at work.
        self.stats = {"submit_requests": 0, "registrations": 0, "polls": 0}
        self._cond = threading.Condition()
        self._pending: List[_Pending] = []
        self._outstanding: Dict[str, ComputeFuture] = {}
        self._futures: "set[ComputeFuture]" = set()
        self._function_ids: Dict[str, str] = {}
        self._function_registry: Dict[Any, str] = {}
        self._sources: "weakref.WeakKeyDictionary[Callable, tuple[Any, FunctionSource]]" = weakref.WeakKeyDictionary()
        self._register_lock = threading.RLock()
        self._submitter: Optional[threading.Thread] = None
        self._poller: Optional[threading.Thread] = None
        # Long polls: the ids some wait under way names, how many are under way, whether the API has the route.
        self._waiting: "set[str]" = set()
        self._waits = 0
        self._wait_unsupported = False
        self._wait_failures = 0
        self._last_wait_failure = 0.0
        self._status_reader: Optional[threading.Thread] = None
        self._overflow_timer: Optional[threading.Timer] = None
        self._overflow = False
        self._shutdown = False

    # --- Globus's attributes -----------------------------------------------------------------

    @property
    def endpoint_id(self) -> Optional[uuid.UUID]:
        """Where tasks go; a UUID (set it as a UUID or a string), as in Globus Compute."""
        return self._endpoint_id

    @endpoint_id.setter
    def endpoint_id(self, endpoint_id: Any) -> None:
        self._endpoint_id = as_optional_uuid(endpoint_id, "endpoint_id")

    @property
    def task_group_id(self) -> Optional[uuid.UUID]:
        """The task group new tasks join (a UUID); made at the first submit when not given, and
        then the default of the executors made after this one, as in Globus Compute."""
        return self._task_group_id

    @task_group_id.setter
    def task_group_id(self, task_group_id: Any) -> None:
        tg = as_optional_uuid(task_group_id, "task_group_id")
        self._task_group_id = tg
        if tg:
            Executor._default_task_group_id = tg

    @property
    def resource_specification(self) -> Optional[Dict[str, Any]]:
        """``{"num_nodes", "ranks_per_node", "num_ranks"}``: sent with each MPIFunction task."""
        return self._resource_specification

    @resource_specification.setter
    def resource_specification(self, val: Optional[Dict[str, Any]]) -> None:
        _check_json_dict("Resource specification", val)
        self._resource_specification = val

    @property
    def user_endpoint_config(self) -> Optional[Dict[str, Any]]:
        """Accepted and kept; Ferry endpoints have no per-user configuration templates."""
        return self._user_endpoint_config

    @user_endpoint_config.setter
    def user_endpoint_config(self, val: Optional[Dict[str, Any]]) -> None:
        _check_json_dict("Config", val)
        self._user_endpoint_config = val

    @property
    def serializer(self) -> Any:
        """Accepted and kept; Ferry's codecs are fixed (pickle protocol 4 for Python, JSON otherwise)."""
        return self._serializer

    @serializer.setter
    def serializer(self, s: Any) -> None:
        self._serializer = s

    # --- submitting --------------------------------------------------------------------------

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> ComputeFuture:
        """Run ``fn(*args, **kwargs)`` on the endpoint. `fn` travels as its source: imports go inside its body.

        A ShellFunction or MPIFunction runs as a command on the endpoint (keyword arguments fill
        its ``{name}`` fields) and its future's result is a ShellResult.
        """
        self._check_open()
        function_id = self._function_id(fn)
        future = self._enqueue(function_id, self.client._encode_for(function_id, args, kwargs))
        if isinstance(fn, ShellFunction):
            future._return_dict = bool(fn.return_dict)
        return future

    def submit_to_registered_function(self, function_id: str, args: Optional[Sequence[Any]] = None, kwargs: Optional[Dict[str, Any]] = None) -> ComputeFuture:
        """Run a function registered earlier (by this or another client, in any runtime) by its id."""
        self._check_open()
        function_id = str(function_id)
        return self._enqueue(function_id, self.client._encode_for(function_id, tuple(args or ()), dict(kwargs or {})))

    def register_function(self, fn: Callable, function_id: Optional[str] = None, **func_register_kwargs: Any) -> str:
        """Register `fn` with the API and this executor's cache, as Globus Compute's; returns its id.

        ``submit`` does this by itself. Registering a function this executor already knows raises
        ValueError (unless `function_id` names the same id); `function_id` associates a known id
        without a request; other keyword arguments go to ``Client.register_function``.
        """
        if self._shutdown:
            raise RuntimeError(f"{self!r} is shutdown; refusing to register function")
        with self._register_lock:
            known = self._registry_get(fn)
            if known is not None:
                msg = f"Function already registered as function id: {known}"
                if function_id and str(function_id) == known:
                    return known
                if function_id:
                    msg += f" (attempted id: {function_id})"
                raise ValueError(msg)
            if function_id:
                self._registry_set(fn, str(function_id))
                return str(function_id)
            if func_register_kwargs:
                fid = self.client.register_function(fn, **func_register_kwargs)
                self.stats["registrations"] += 1
                self._registry_set(fn, fid)
                return fid
            return self._function_id(fn)

    def register_source_code(self, source: str, function_name: str, **registration_kwargs: Any) -> str:
        """Register Python source defining `function_name`; then ``submit_to_registered_function`` runs it."""
        if self._shutdown:
            raise RuntimeError(f"{self!r} is shutdown; refusing to register function")
        key = ("source", hash(source))
        with self._register_lock:
            if key in self._function_registry:
                raise ValueError(f"Function already registered as function id: {self._function_registry[key]}")
            fid = self.client.register_source_code(source, function_name, **registration_kwargs)
            self._function_registry[key] = fid
            self.stats["registrations"] += 1
        return fid

    def _registry_get(self, fn: Any) -> Optional[str]:
        try:
            return self._function_registry.get(fn)
        except TypeError:  # unhashable callable
            return None

    def _registry_set(self, fn: Any, fid: str) -> None:
        try:
            self._function_registry[fn] = fid
        except TypeError:
            pass

    def _function_id(self, fn: Callable) -> str:
        """The function's id, registering it the first time this executor sees it."""
        with self._register_lock:
            known = self._registry_get(fn)
            if known is not None:
                return known
            if isinstance(fn, ShellFunction):
                fid = self.client.register_function(fn)
                self.stats["registrations"] += 1
                self._registry_set(fn, fid)
                return fid
        # Reading and parsing the source once per function keeps a loop of submits quick; keyed by
        # the function (wrappers made by one decorator share a code object), checked against its code.
        code = getattr(fn, "__code__", None)
        try:
            cached = self._sources.get(fn)
        except TypeError:  # not weak-referenceable (a builtin): no cache
            cached = None
        if cached is not None and cached[0] is code:
            fs = cached[1]
        else:
            fs = function_source(fn)
            try:
                self._sources[fn] = (code, fs)
            except TypeError:
                pass
        with self._register_lock:
            fid = self._function_ids.get(fs.key)
            if fid is None:
                import inspect

                fid = self.client._register(fs, None, inspect.getdoc(fn) if callable(fn) and getattr(fn, "__doc__", None) else None)
                self._function_ids[fs.key] = fid
                self.stats["registrations"] += 1
            if getattr(fn, "__code__", None) is not None:
                self._registry_set(fn, fid)
        return fid

    # --- reattaching -------------------------------------------------------------------------

    def reload_tasks(self, task_group_id: Any = None) -> List[ComputeFuture]:
        """Futures for every task of the task group (this executor's, or `task_group_id`), in submit order.

        Finished tasks have their result or exception already; the others are watched like
        submitted ones. A task this executor is already watching keeps its future.
        """
        if task_group_id is not None:
            self.task_group_id = task_group_id
        if self.task_group_id is None:
            raise ValueError("must specify a task_group_id in order to reload tasks")
        group = str(self.task_group_id)
        try:
            views = self.client._group_views(group)
        except FerryApiError as exc:
            if exc.status != 404:
                raise
            warnings.warn(f"Received no tasks for Task Group ID: {group}", stacklevel=2)
            return []
        futures: List[ComputeFuture] = []
        for view in views:
            task_id = view["task_id"]
            with self._cond:
                existing = self._outstanding.get(task_id)
            if existing is not None:
                futures.append(existing)
                continue
            future = ComputeFuture(task_id)
            future._executor = self
            future.ferry_status = view["status"]
            futures.append(future)
            if view["status"] in FINAL_STATES:
                self._finish(future, view)
                continue
            with self._cond:
                self._futures.add(future)
                future.add_done_callback(self._forget_future)
            self._watch(future, task_id)
        return futures

    def get_worker_hardware_details(self) -> str:
        """A text report of the hardware of one of the endpoint's workers (runs a task and waits for it)."""
        from .hardware_report import run_hardware_report

        return self.submit(run_hardware_report, "Compute Endpoint worker").result()

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not self.endpoint_id:
            raise ValueError(
                "No endpoint_id set.  Did you forget to set it at construction?\n"
                "  Hint:\n\n"
                "    gce = Executor(endpoint_id=<ep_id>)\n"
                "    gce.endpoint_id = <ep_id>    # alternative\n"
                "  (or set FERRY_ENDPOINT_ID)"
            )

    def _enqueue(self, function_id: str, args: Tuple[str, bytes]) -> ComputeFuture:
        future = ComputeFuture()
        future._executor = self
        with self._cond:
            self._check_open()
            if self.task_group_id is None:
                self.task_group_id = uuid.uuid4()
            self.task_count_submitted += 1
            self._pending.append(_Pending(future, function_id, args))
            self._futures.add(future)
            future.add_done_callback(self._forget_future)
            if self._submitter is None:
                self._submitter = threading.Thread(target=self._submit_loop, name="ferry-submit", daemon=True)
                self._submitter.start()
            elif len(self._pending) >= self.batch_size:
                self._cond.notify_all()
        return future

    def _forget_future(self, future: ComputeFuture) -> None:
        with self._cond:
            self._futures.discard(future)
            self._cond.notify_all()

    def _submit_loop(self) -> None:
        """Gathers what was submitted within `batch_delay` (or a full batch) and sends it; ends when idle."""
        while True:
            with self._cond:
                # Linger while submissions keep coming (a loop of submits), up to a full batch or MAX_LINGER.
                # (Other notifications, such as futures finishing, may wake the wait early: deadlines decide.)
                started = time.monotonic()
                seen, deadline = len(self._pending), started + self.batch_delay
                while len(self._pending) < self.batch_size and not self._shutdown:
                    now = time.monotonic()
                    if now >= deadline:
                        if len(self._pending) == seen or now - started > MAX_LINGER:
                            break
                        seen, deadline = len(self._pending), now + self.batch_delay
                    self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
                batch = [p for p in self._pending[: self.batch_size] if not p.future.done()]
                del self._pending[: self.batch_size]
                if not batch and not self._pending:
                    self._submitter = None
                    self._cond.notify_all()
                    return
            try:
                self._send(batch)
            except BaseException as exc:  # noqa: BLE001 - a bug here must fail futures, never leave them waiting
                for p in batch:
                    _fail(p.future, exc)

    def _send(self, batch: List[_Pending]) -> None:
        specs: List[Dict[str, Any]] = []
        items: List[_Pending] = []
        for p in batch:
            try:
                spec = self.client._task_spec(
                    str(self.endpoint_id), p.function_id, (), {}, self.walltime_ms, encoded=p.args, resource_specification=self.resource_specification
                )
                if self.memory_mb is not None:
                    spec["memory_mb"] = self.memory_mb
                specs.append(spec)
                items.append(p)
            except Exception as exc:  # noqa: BLE001 - a failed upload fails its own future, not the batch
                _fail(p.future, exc)
        # Split further only if the encoded arguments would not fit in one request body.
        start = 0
        while start < len(items):
            end, size = start, 0
            while end < len(items) and (end == start or size + _spec_size(specs[end]) <= MAX_REQUEST_BYTES):
                size += _spec_size(specs[end])
                end += 1
            self._submit_slice(items[start:end], specs[start:end])
            start = end

    def _submit_slice(self, items: List[_Pending], specs: List[Dict[str, Any]]) -> None:
        self.stats["submit_requests"] += 1
        try:
            out = self.client._submit(str(self.endpoint_id), specs, str(self.task_group_id))
            ids, not_queued, error = out["task_ids"], set(), None
        except FerryApiError as exc:
            # A partial failure names the tasks that were not queued; the others are live.
            ids = exc.details.get("task_ids") or [None] * len(items)
            not_queued = set(exc.details.get("not_queued") or ids)
            error = exc
        except Exception as exc:  # noqa: BLE001
            ids, not_queued, error = [None] * len(items), set(), exc
        for p, task_id in zip(items, ids):
            if task_id is None or task_id in not_queued:
                _fail(p.future, error)
            else:
                self._track(p.future, task_id)

    def _track(self, future: ComputeFuture, task_id: str) -> None:
        future.task_id = task_id
        future.ferry_status = "waiting-for-endpoint"
        if future.cancelled():
            # Cancelled while its submit was in flight: cancel the task it became.
            try:
                self.client._cancel(task_id)
            except FerryError:
                pass
            return
        self._watch(future, task_id)

    def _watch(self, future: ComputeFuture, task_id: str) -> None:
        with self._cond:
            self._outstanding[task_id] = future
            self._pump()

    # --- results -----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Keep up to MAX_WAITS waits under way over the outstanding tasks, oldest first (or one
        poller, where the API cannot wait). A wait ends when one of its tasks finishes, and the next
        takes in what was left out; tasks left out for max_poll_interval, because the waits under
        way name only long tasks, get more waits (up to MAX_WAITS_OVERFLOW). Called holding ``self._cond``."""
        if self._wait_unsupported:
            if self._poller is None and self._outstanding:
                self._poller = threading.Thread(target=self._poll_loop, name="ferry-poll", daemon=True)
                self._poller.start()
            return
        left_out = False
        while True:
            ids = list(itertools.islice((t for t in self._outstanding if t not in self._waiting), MAX_IDS_PER_READ))
            left_out = bool(ids)
            if not left_out or self._waits >= (MAX_WAITS_OVERFLOW if self._overflow else MAX_WAITS):
                break
            self._waits += 1
            self._waiting.update(ids)
            threading.Thread(target=self._wait_once, args=(ids,), name="ferry-wait", daemon=True).start()
        self._overflow = False
        if left_out and self._overflow_timer is None and self._waits < MAX_WAITS_OVERFLOW:
            self._overflow_timer = threading.Timer(self.max_poll_interval, self._overflow_pump)
            self._overflow_timer.daemon = True
            self._overflow_timer.start()
        if self._status_reader is None and self._outstanding:
            self._status_reader = threading.Thread(target=self._status_loop, name="ferry-status", daemon=True)
            self._status_reader.start()

    def _overflow_pump(self) -> None:
        with self._cond:
            self._overflow_timer = None
            self._overflow = True
            self._pump()

    def _wait_once(self, ids: List[str]) -> None:
        """One long poll: settles the futures of the tasks it answers as finished."""
        started = time.monotonic()
        try:
            self.stats["polls"] += 1
            out = self.client._wait(ids, self.wait_ms)
            with self._cond:
                self._wait_failures = 0
            for view in out.get("tasks", []):
                self._settle(view)
            self._forget(out.get("unknown", []))
        except Exception as exc:  # noqa: BLE001 - the client already retried this wait
            if isinstance(exc, FerryApiError) and exc.status == 404:
                # An API without the route (an older deployment): poll it as before.
                with self._cond:
                    self._wait_unsupported = True
                return
            with self._cond:
                # Waits that failed together count once: one outage is one failure.
                if started >= self._last_wait_failure:
                    self._wait_failures += 1
                    self._last_wait_failure = time.monotonic()
                failures = self._wait_failures
            if _refused(exc) or failures >= self.poll_failure_limit:
                self._fail_outstanding(ResultsUnavailable(failures, exc), exc)
                with self._cond:
                    self._wait_failures = 0
            else:
                time.sleep(min(self.max_poll_interval, self.poll_interval * 2**failures))
        finally:
            with self._cond:
                self._waits -= 1
                self._waiting.difference_update(ids)
                self._pump()

    def _status_loop(self) -> None:
        """Now and then, the status of the tasks not yet seen running: a wait answers only finished ones."""
        while True:
            time.sleep(self.status_interval)
            with self._cond:
                if not self._outstanding or self._wait_unsupported:
                    self._status_reader = None
                    return
                ids = [t for t, f in self._outstanding.items() if f.ferry_status != "running"]
            if not ids:
                continue
            try:
                self.stats["polls"] += 1
                self.client._views(ids, lambda page: [self._settle(v) for v in page])
            except Exception:  # noqa: BLE001 - the waits report what fails; a status read is only a courtesy
                pass

    def _forget(self, unknown: Iterable[str]) -> None:
        for task_id in unknown:
            with self._cond:
                future = self._outstanding.pop(task_id, None)
            if future is not None:
                _fail(future, FerryApiError(404, "NotFound", f"task {task_id} is no longer known"))

    def _fail_outstanding(self, error: ResultsUnavailable, cause: BaseException) -> None:
        error.__cause__ = cause
        with self._cond:
            lost = list(self._outstanding.values())
            self._outstanding.clear()
        for future in lost:
            _fail(future, error)

    def _poll_loop(self) -> None:
        """Where the API cannot wait, one loop for every outstanding future: quick while results arrive, slower while none do."""
        delay, last_activity = self.poll_interval, time.monotonic()
        failures = 0
        while True:
            with self._cond:
                ids = list(self._outstanding)
                if not ids:
                    self._poller = None
                    return
            time.sleep(delay)
            finished, failed_read = 0, False
            try:
                self.stats["polls"] += 1

                def settle_page(page: List[Dict[str, Any]]) -> None:
                    # Views settle as each response arrives: a large poll reads its views over several requests.
                    nonlocal finished
                    for view in page:
                        finished += self._settle(view)

                views = self.client._views(ids, settle_page)
                self._forget(views["unknown"])
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the client already retried this poll
                failed_read = True
                failures += 1
                # A refusal no retry changes (a revoked token), or a failure that persists, fails the
                # futures rather than hang them; a transient one is tried again, slower.
                if _refused(exc) or failures >= self.poll_failure_limit:
                    self._fail_outstanding(ResultsUnavailable(failures, exc), exc)
                    failures = 0
            now = time.monotonic()
            if finished:
                last_activity = now
            if failed_read or now - last_activity > 0.25:
                delay = min(self.max_poll_interval, delay * (2 if failed_read else 1.5))
            else:
                delay = self.poll_interval

    def _settle(self, view: Dict[str, Any]) -> bool:
        """Apply a task view to its future; True if that finished it."""
        task_id = view["task_id"]
        future = self._outstanding.get(task_id)
        if future is None:
            return False
        status = view["status"]
        future.ferry_status = status
        if status not in FINAL_STATES:
            return False
        with self._cond:
            if self._outstanding.pop(task_id, None) is None:
                return False  # settled by another thread meanwhile
        self._finish(future, view)
        return True

    def _finish(self, future: ComputeFuture, view: Dict[str, Any]) -> None:
        """Settle a future from its task's final view: result, exception or cancelled."""
        if view["status"] == "cancelled":
            future._cancel_here()
            return
        future._output = task_output(view)
        try:
            outcome = self.client._outcome(view, future._return_dict)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be read or unpickled fails its future
            _fail(future, exc)
            return
        if "exception" in outcome:
            _fail(future, outcome["exception"])
        else:
            _resolve(future, outcome.get("result"))

    # --- shutting down -----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking submissions. `wait` waits for every future; `cancel_futures` cancels the unfinished ones."""
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
            futures = list(self._futures)
        if cancel_futures:
            for f in futures:
                f.cancel()
        if wait:
            with self._cond:
                self._cond.wait_for(lambda: self._submitter is None)
            concurrent.futures.wait(futures)

    def __repr__(self) -> str:
        label = f"{self.label}; " if self.label else ""
        ep_id = f"ep_id:{self.endpoint_id}; " if self.endpoint_id else ""
        return f"{type(self).__name__}<{label}{ep_id}tg_id:{self.task_group_id}; bs:{self.batch_size}>"


def _check_json_dict(what: str, val: Any) -> None:
    if val is None:
        return
    if not isinstance(val, dict):
        raise TypeError(f"{what} must be of type dict, not {type(val).__name__}")
    try:
        json.dumps(val)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"{what} must be JSON-serializable") from exc


def _spec_size(spec: Dict[str, Any]) -> int:
    return len(spec["payload"].get("data") or "") + 300


def _refused(exc: BaseException) -> bool:
    """A 4xx that another attempt cannot change (429 and 409 are the API asking to come back later)."""
    return isinstance(exc, FerryApiError) and 400 <= exc.status < 500 and exc.status not in (408, 409, 429)


def _fail(future: ComputeFuture, exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile


def _resolve(future: ComputeFuture, value: Any) -> None:
    try:
        future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass
