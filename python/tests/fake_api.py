"""An in-memory Ferry API for unit tests: runs each submitted python function at once, in-process."""

import base64
import contextlib
import io
import hashlib
import itertools
import json
import pickle
import re
import subprocess
import threading
import time
import traceback
import types
import uuid

from ferry_compute.errors import FerryApiError


class FakeApi:
    api_url = "http://fake"

    def __init__(self, run=True, no_wait_route=False, full_waits=False):
        self.run = run
        # Waits last their whole wait_ms (otherwise at most 50 ms, so tests end soon).
        self.full_waits = full_waits
        # An older deployment: POST /v1/tasks/wait answers 404, and the executor polls /v1/tasks/batch.
        self.no_wait_route = no_wait_route
        self.lock = threading.Lock()
        self.functions = {}
        self.tasks = {}
        self.requests = []
        self.uploads = {}
        self.fail_next_submit = None
        self.groups = {}
        self.allowed = {}
        self.ids = itertools.count(1)
        self.keys = itertools.count(1)

    def new_idempotency_key(self):
        return f"key-{next(self.keys)}"

    def calls(self, method, prefix):
        return [r for r in self.requests if r[0] == method and r[1].startswith(prefix)]

    def submits(self):
        return [r for r in self.requests if r[0] == "POST" and r[1].endswith("/submit")]

    def request(self, method, path, body=None, *, idempotency_key=None):
        with self.lock:
            self.requests.append((method, path, body, idempotency_key))
        if method == "POST" and path == "/v1/functions":
            # As the API: the id derives from everything stored, so the same registration gives the same id.
            fid = str(uuid.UUID(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]))
            self.functions[fid] = body
            return {"function_id": fid, "name": body["name"], "runtime": body["runtime"]}
        m = re.match(r"^/v1/functions/([^/]+)$", path)
        if method == "GET" and m:
            fid = m.group(1)
            if fid not in self.functions:
                raise FerryApiError(404, "NotFound", f"function {fid} not found")
            return {"function_id": fid, **self.functions[fid]}
        if method == "DELETE" and m:
            if self.functions.pop(m.group(1), None) is None:
                raise FerryApiError(404, "NotFound", "function not found")
            return {"function_id": m.group(1), "deleted": True}
        m = re.match(r"^/v1/endpoints/([^/]+)/allowed_functions$", path)
        if method == "GET" and m:
            fns = self.allowed.get(m.group(1))
            return {"endpoint_id": m.group(1), "restricted": fns is not None, "functions": list(fns or [])}
        m = re.match(r"^/v1/task-groups/([^/?]+)(?:\?cursor=(.*))?$", path)
        if method == "GET" and m:
            ids = self.groups.get(m.group(1))
            if not ids:
                raise FerryApiError(404, "NotFound", f"task group {m.group(1)} not found")
            start = int(m.group(2) or 0)
            page = ids[start : start + 2]  # small pages, so paging is exercised
            with self.lock:
                views = [dict(self.tasks[t]) for t in page]
            nxt = str(start + 2) if start + 2 < len(ids) else None
            return {"task_group_id": m.group(1), "tasks": views, "next_cursor": nxt}
        if method == "POST" and path == "/v1/payloads":
            ref = f"payloads/{body['endpoint_id']}/uploads/u/{len(self.uploads)}"
            return {"ref": ref, "url": "http://s3/" + ref}
        if method == "POST" and path.endswith("/submit"):
            return self.submit(body)
        if method == "POST" and path == "/v1/tasks/batch":
            with self.lock:
                views = [dict(self.tasks[t]) for t in body["task_ids"] if t in self.tasks]
            return {"tasks": views, "unknown": [t for t in body["task_ids"] if t not in self.tasks]}
        if method == "POST" and path == "/v1/tasks/wait":
            if self.no_wait_route:
                raise FerryApiError(404, "HttpError", "Not Found")
            return self.wait(body)
        m = re.match(r"^/v1/tasks/([^/]+)$", path)
        if method == "GET" and m:
            with self.lock:
                return dict(self.tasks[m.group(1)])
        m = re.match(r"^/v1/tasks/([^/]+)/cancel$", path)
        if method == "POST" and m:
            with self.lock:
                view = self.tasks[m.group(1)]
                if view["status"] not in ("success", "failed", "cancelled"):
                    view["status"] = "cancelled"
                return dict(view)
        raise AssertionError(f"unexpected {method} {path}")

    def wait(self, body):
        """As the API's long poll: the finished tasks asked for, once there is one, or none after wait_ms (at most 50 ms here, so tests end soon)."""
        ids = body["task_ids"]
        wait_ms = body.get("wait_ms", 10_000)
        deadline = time.monotonic() + (wait_ms if self.full_waits else min(wait_ms, 50)) / 1000
        while True:
            with self.lock:
                known = [dict(self.tasks[t]) for t in ids if t in self.tasks]
            done = [v for v in known if v["status"] in ("success", "failed", "cancelled")]
            if done or time.monotonic() >= deadline:
                return {"tasks": done, "unknown": [t for t in ids if t not in self.tasks], "unread": [], "pending": len(known) - len(done)}
            time.sleep(0.002)

    def submit(self, body):
        ids = [str(uuid.UUID(int=next(self.ids))) for _ in body["tasks"]]
        if self.fail_next_submit:
            failure, self.fail_next_submit = self.fail_next_submit, None
            raise failure(ids)
        for spec in body["tasks"]:
            fn = self.functions.get(spec["function_id"])
            if fn is None:
                raise FerryApiError(404, "NotFound", f"function {spec['function_id']} not found")
            if (fn["runtime"] == "mpi") != ("resource_specification" in spec):
                raise FerryApiError(400, "BadRequest", "resource_specification applies to mpi functions (and they need one)")
        group = body.get("task_group_id") or str(uuid.uuid4())
        self.groups.setdefault(group, []).extend(ids)
        for task_id, spec in zip(ids, body["tasks"]):
            view = {"task_id": task_id, "status": "waiting-for-endpoint", "function_id": spec["function_id"], "task_group_id": group, "spec": spec}
            if "resource_specification" in spec:
                view["resource_specification"] = spec["resource_specification"]
            with self.lock:
                self.tasks[task_id] = view
            if self.run:
                self.execute(task_id)
        return {"task_group_id": group, "task_ids": ids}

    def execute(self, task_id):
        view = self.tasks[task_id]
        spec = view["spec"]
        fn = self.functions[spec["function_id"]]
        payload = spec["payload"]
        data = base64.b64decode(payload["data"]) if "data" in payload else self.uploads[payload["ref"]]
        if fn["runtime"] in ("shell", "mpi"):
            return self.execute_shell(view, fn, json.loads(data))
        args, kwargs = pickle.loads(data)
        module = types.ModuleType("__ferry_function__")
        exec(compile(fn["source"], "<ferry function>", "exec"), module.__dict__)
        # What the function prints comes back with its outcome, as the API returns it.
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                result = pickle.dumps(module.__dict__[fn["entrypoint"]](*args, **kwargs), protocol=4)
            update = {"status": "success", "result": _view(result)}
        except Exception as exc:  # noqa: BLE001
            update = {
                "status": "failed",
                "exception": {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), "payload": _view(pickle.dumps(exc))},
            }
        if out.getvalue() or err.getvalue():
            update["output"] = {"stdout": out.getvalue(), "stderr": err.getvalue(), "stdout_bytes": len(out.getvalue().encode()), "stderr_bytes": len(err.getvalue().encode())}
        with self.lock:
            if view["status"] != "cancelled":
                view.update(update)

    def execute_shell(self, view, fn, arguments):
        """As the agent runs shell/mpi tasks: the command from the template, run by bash, a JSON result."""
        cmd = fn["source"].format(**arguments["kwargs"])
        if fn["runtime"] == "mpi":
            cmd = "$PARSL_MPI_PREFIX " + cmd
        env = {"PATH": "/usr/bin:/bin", "PARSL_MPI_PREFIX": "", "PARSL_NUM_RANKS": str(view["resource_specification"].get("num_ranks", 1)) if fn["runtime"] == "mpi" else ""}
        out = subprocess.run(["/bin/bash", "-c", cmd], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
        value = {
            "cmd": cmd,
            "returncode": out.returncode,
            "stdout": out.stdout,
            "stderr": out.stderr,
            "exception_name": None if out.returncode == 0 else "subprocess.CalledProcessError",
        }
        data = json.dumps(value).encode()
        result = {"codec": "json", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data": base64.b64encode(data).decode()}
        with self.lock:
            view.update({"status": "success", "result": result, "completed_at": "2026-01-01T00:00:00.000Z"})

    def upload(self, url, data):
        self.uploads[url[len("http://s3/") :]] = data


def _view(data):
    return {"codec": "python-pickle", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data": base64.b64encode(data).decode()}


def partial_failure(not_queued_index):
    def make(ids):
        return FerryApiError(503, "PartialSubmitFailure", "1 task could not be queued", {"task_group_id": "g", "task_ids": ids, "not_queued": [ids[not_queued_index]]})

    return make
