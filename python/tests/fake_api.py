"""An in-memory Ferry API for unit tests: runs each submitted python function at once, in-process."""

import base64
import contextlib
import io
import hashlib
import itertools
import pickle
import re
import threading
import traceback
import types

from ferry_compute.errors import FerryApiError


class FakeApi:
    api_url = "http://fake"

    def __init__(self, run=True):
        self.run = run
        self.lock = threading.Lock()
        self.functions = {}
        self.tasks = {}
        self.requests = []
        self.uploads = {}
        self.fail_next_submit = None
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
            fid = "f-" + hashlib.sha256(body["source"].encode()).hexdigest()[:8]
            self.functions[fid] = body
            return {"function_id": fid}
        if method == "GET" and path.startswith("/v1/functions/"):
            fid = path.rsplit("/", 1)[1]
            return {"function_id": fid, "runtime": self.functions[fid]["runtime"]}
        if method == "POST" and path == "/v1/payloads":
            ref = f"payloads/{body['endpoint_id']}/uploads/u/{len(self.uploads)}"
            return {"ref": ref, "url": "http://s3/" + ref}
        if method == "POST" and path.endswith("/submit"):
            return self.submit(body)
        if method == "POST" and path == "/v1/tasks/batch":
            with self.lock:
                views = [dict(self.tasks[t]) for t in body["task_ids"] if t in self.tasks]
            return {"tasks": views, "unknown": [t for t in body["task_ids"] if t not in self.tasks]}
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

    def submit(self, body):
        ids = [f"t-{next(self.ids)}" for _ in body["tasks"]]
        if self.fail_next_submit:
            failure, self.fail_next_submit = self.fail_next_submit, None
            raise failure(ids)
        for task_id, spec in zip(ids, body["tasks"]):
            view = {"task_id": task_id, "status": "waiting-for-endpoint", "function_id": spec["function_id"], "spec": spec}
            with self.lock:
                self.tasks[task_id] = view
            if self.run:
                self.execute(task_id)
        return {"task_group_id": body.get("task_group_id"), "task_ids": ids}

    def execute(self, task_id):
        view = self.tasks[task_id]
        spec = view["spec"]
        fn = self.functions[spec["function_id"]]
        payload = spec["payload"]
        data = base64.b64decode(payload["data"]) if "data" in payload else self.uploads[payload["ref"]]
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
                "exception": {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(traceback.format_exception(exc)), "payload": _view(pickle.dumps(exc))},
            }
        if out.getvalue() or err.getvalue():
            update["output"] = {"stdout": out.getvalue(), "stderr": err.getvalue(), "stdout_bytes": len(out.getvalue().encode()), "stderr_bytes": len(err.getvalue().encode())}
        with self.lock:
            if view["status"] != "cancelled":
                view.update(update)

    def upload(self, url, data):
        self.uploads[url[len("http://s3/") :]] = data


def _view(data):
    return {"codec": "python-pickle", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data": base64.b64encode(data).decode()}


def partial_failure(not_queued_index):
    def make(ids):
        return FerryApiError(503, "PartialSubmitFailure", "1 task could not be queued", {"task_group_id": "g", "task_ids": ids, "not_queued": [ids[not_queued_index]]})

    return make
