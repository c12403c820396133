"""`Executor` and `ComputeFuture`: Globus Compute's Executor, for Ferry.

`submit` returns a future at once. Submissions made close together leave in one request (up to
`batch_size` tasks); each function's source is registered once per executor; one background
thread reads the state of every outstanding task in batched requests and settles the futures.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence

from ._output import TaskOutput, task_output
from ._payload import CODEC, encode_args
from ._source import FunctionSource, function_source
from .client import FINAL_STATES, MAX_TASKS_PER_SUBMIT, Client, _warn_ignored
from .errors import FerryApiError, FerryError

# Stays under the API's 5 MB submit body (Lambda takes 6 MB) with room for JSON and base64.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# The longest a submission waits for others to share its request.
MAX_LINGER = 0.1
_GLOBUS_EXECUTOR_OPTIONS = frozenset({"container_id", "resource_specification", "user_endpoint_config", "amqp_port", "api_burst_limit", "api_burst_window_s", "label"})


class ComputeFuture(concurrent.futures.Future):
    """A concurrent.futures.Future for one Ferry task; `task_id` is set once the task is submitted."""

    def __init__(self, executor: Optional["Executor"] = None):
        super().__init__()
        self.task_id: Optional[str] = None
        # The last state the API reported: received, waiting-for-endpoint, running, success...
        self.ferry_status: str = "unsubmitted"
        self._executor = executor
        self._output: Optional[TaskOutput] = None

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

    def __init__(self, future: ComputeFuture, function_id: str, args: bytes):
        self.future = future
        self.function_id = function_id
        self.args = args


class Executor(concurrent.futures.Executor):
    """Runs Python functions on a Ferry endpoint, like ``globus_compute_sdk.Executor``.

        with Executor(endpoint_id=ep) as ex:
            future = ex.submit(pow, 2, 10)
            print(future.result())
    """

    def __init__(
        self,
        endpoint_id: Optional[str] = None,
        *,
        client: Optional[Client] = None,
        task_group_id: Optional[str] = None,
        batch_size: int = 128,
        api_url: Optional[str] = None,
        token: Optional[str] = None,
        walltime_ms: Optional[int] = None,
        memory_mb: Optional[int] = None,
        batch_delay: float = 0.005,
        poll_interval: float = 0.02,
        max_poll_interval: float = 1.0,
        **globus_options: Any,
    ):
        _warn_ignored("Executor", {k: v for k, v in globus_options.items() if k != "label" or v}, _GLOBUS_EXECUTOR_OPTIONS)
        self.client = client or Client(api_url, token)
        self.endpoint_id = endpoint_id or os.environ.get("FERRY_ENDPOINT_ID") or None
        self.task_group_id = task_group_id or str(uuid.uuid4())
        self.batch_size = max(1, min(int(batch_size), MAX_TASKS_PER_SUBMIT))
        self.walltime_ms = walltime_ms
        # Each task's memory cap (MB); the endpoint's default otherwise, and its maximum caps it.
        self.memory_mb = memory_mb
        self.batch_delay = batch_delay
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        # Requests made, to see the batching at work.
        self.stats = {"submit_requests": 0, "registrations": 0, "polls": 0}
        self._cond = threading.Condition()
        self._pending: List[_Pending] = []
        self._outstanding: Dict[str, ComputeFuture] = {}
        self._futures: "set[ComputeFuture]" = set()
        self._function_ids: Dict[str, str] = {}
        self._sources: "weakref.WeakKeyDictionary[Callable, tuple[Any, FunctionSource]]" = weakref.WeakKeyDictionary()
        self._register_lock = threading.Lock()
        self._submitter: Optional[threading.Thread] = None
        self._poller: Optional[threading.Thread] = None
        self._shutdown = False

    # --- submitting --------------------------------------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> ComputeFuture:
        """Run ``fn(*args, **kwargs)`` on the endpoint. `fn` travels as its source: imports go inside its body."""
        self._check_open()
        function_id = self.register_function(fn)
        return self._enqueue(function_id, encode_args(args, kwargs, CODEC))

    def submit_to_registered_function(self, function_id: str, args: Optional[Sequence[Any]] = None, kwargs: Optional[Dict[str, Any]] = None) -> ComputeFuture:
        """Run a function registered earlier (by this or another client, in any runtime) by its id."""
        self._check_open()
        codec = "json" if self.client._runtime_of(function_id) == "node" else CODEC
        return self._enqueue(function_id, encode_args(tuple(args or ()), dict(kwargs or {}), codec))

    def register_function(self, fn: Callable, **kwargs: Any) -> str:
        """The function's id, registering its source the first time this executor sees it."""
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
                fid = self.client._register(fs, kwargs.get("function_name"))
                self._function_ids[fs.key] = fid
                self.stats["registrations"] += 1
        return fid

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if not self.endpoint_id:
            raise FerryError("no endpoint_id: pass Executor(endpoint_id=...) or set FERRY_ENDPOINT_ID")

    def _enqueue(self, function_id: str, args: bytes) -> ComputeFuture:
        future = ComputeFuture(self)
        with self._cond:
            self._check_open()
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
                spec = self.client._task_spec(self.endpoint_id, p.function_id, (), {}, self.walltime_ms, encoded=p.args)
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
            out = self.client._submit(self.endpoint_id, specs, self.task_group_id)
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
        with self._cond:
            self._outstanding[task_id] = future
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll_loop, name="ferry-poll", daemon=True)
                self._poller.start()

    # --- results -----------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        """One loop for every outstanding future: quick while results arrive, slower while none do."""
        delay, last_activity = self.poll_interval, time.monotonic()
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
                views = self.client._views(ids)
                for view in views["tasks"]:
                    finished += self._settle(view)
                for task_id in views["unknown"]:
                    future = self._outstanding.pop(task_id, None)
                    if future is not None:
                        _fail(future, FerryApiError(404, "NotFound", f"task {task_id} is no longer known"))
            except FerryApiError as exc:
                if exc.status in (401, 403, 404):
                    # The token was revoked or expired: no later poll will do better.
                    for task_id in ids:
                        future = self._outstanding.pop(task_id, None)
                        if future is not None:
                            _fail(future, exc)
                failed_read = True
            except Exception:  # noqa: BLE001 - the client already retried; keep polling, slower
                failed_read = True
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
        if status == "cancelled":
            future._cancel_here()
            return True
        future._output = task_output(view)
        try:
            outcome = self.client._outcome(view)
        except Exception as exc:  # noqa: BLE001 - a result that cannot be read or unpickled fails its future
            _fail(future, exc)
            return True
        if "exception" in outcome:
            _fail(future, outcome["exception"])
        else:
            _resolve(future, outcome.get("result"))
        return True

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
        return f"Executor(endpoint_id={self.endpoint_id!r}, task_group_id={self.task_group_id!r})"


def _spec_size(spec: Dict[str, Any]) -> int:
    return len(spec["payload"].get("data") or "") + 300


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
