import concurrent.futures
import functools
import unittest

from ferry_compute import Client, ComputeFuture, Executor, FerryApiError, TaskOutput
from ferry_compute._payload import UPLOAD_THRESHOLD

from .fake_api import FakeApi, partial_failure

EP = "00000000-0000-4000-8000-000000000001"


def square(x):
    return x * x


def chatty(x):
    import sys

    print(f"squaring {x}")
    print("a warning", file=sys.stderr)
    if x == 0:
        raise ValueError("zero")
    return x * x


def divide(a, b):
    return a / b


def echo(*args, **kwargs):
    return args, kwargs


def size_of(blob):
    return len(blob)


def passthrough(fn):
    @functools.wraps(fn)
    def inner(*args):
        return fn(*args)

    return inner


@passthrough
def plus_one(x):
    return x + 1


@passthrough
def minus_one(x):
    return x - 1


class ExecutorTests(unittest.TestCase):
    def executor(self, run=True, no_wait_route=False, full_waits=False, **opts):
        self.api = FakeApi(run=run, no_wait_route=no_wait_route, full_waits=full_waits)
        client = Client(http=self.api, upload=self.api.upload, fetch=lambda url: self.fail(f"fetch {url}"))
        ex = Executor(endpoint_id=EP, client=client, poll_interval=0.001, **opts)
        self.addCleanup(ex.shutdown, wait=False, cancel_futures=True)
        return ex

    def test_submissions_are_batched_and_functions_registered_once(self):
        ex = self.executor(batch_size=100)
        futures = [ex.submit(square, i) for i in range(250)]
        self.assertEqual([f.result(timeout=10) for f in futures], [i * i for i in range(250)])
        sizes = [len(r[2]["tasks"]) for r in self.api.submits()]
        self.assertEqual(sum(sizes), 250)
        self.assertLessEqual(max(sizes), 100)
        self.assertLessEqual(len(sizes), 6)
        self.assertEqual(len(self.api.calls("POST", "/v1/functions")), 1)
        self.assertTrue(all(isinstance(f, ComputeFuture) and f.task_id for f in futures))
        # Every request names the executor's task group and carries its own Idempotency-Key.
        self.assertEqual({r[2]["task_group_id"] for r in self.api.submits()}, {str(ex.task_group_id)})
        keys = [r[3] for r in self.api.submits()]
        self.assertEqual(len(set(keys)), len(keys))
        self.assertTrue(all(keys))

    def test_results_are_awaited_by_long_poll_in_batches(self):
        ex = self.executor()
        futures = [ex.submit(square, i) for i in range(30)]
        self.assertEqual([f.result(timeout=10) for f in futures], [i * i for i in range(30)])
        waits = self.api.calls("POST", "/v1/tasks/wait")
        self.assertLess(len(waits), 30)
        self.assertTrue(all(len(r[2]["task_ids"]) <= 1000 and r[2]["wait_ms"] == 10_000 for r in waits))
        self.assertEqual(self.api.calls("POST", "/v1/tasks/batch"), [])

    def test_an_api_without_the_wait_route_is_polled_in_batches(self):
        ex = self.executor(no_wait_route=True)
        futures = [ex.submit(square, i) for i in range(30)]
        self.assertEqual([f.result(timeout=10) for f in futures], [i * i for i in range(30)])
        reads = self.api.calls("POST", "/v1/tasks/batch")
        self.assertLess(len(reads), 30)
        self.assertTrue(all(len(r[2]["task_ids"]) <= 1000 for r in reads))
        # The route is asked once (or once per wait under way when the first answer came).
        self.assertLessEqual(len(self.api.calls("POST", "/v1/tasks/wait")), 4)

    def test_a_task_gets_more_waits_when_the_waits_under_way_name_only_long_tasks(self):
        ex = self.executor(run=False, full_waits=True, wait_ms=3000, max_poll_interval=0.02)
        # Four tasks submitted one after another: each is tracked alone, and four waits name them.
        for i in range(4):
            f = ex.submit(square, i)
            while len(self.api.calls("POST", "/v1/tasks/wait")) < i + 1:
                concurrent.futures.wait([f], timeout=0.01)
        short = ex.submit(square, 5)
        while not short.task_id:
            concurrent.futures.wait([short], timeout=0.01)
        self.api.execute(short.task_id)
        # Sooner than any of the 3 s waits under way ends: a wait of its own answered it.
        self.assertEqual(short.result(timeout=2.5), 25)

    def test_the_status_of_a_waiting_task_follows_the_service(self):
        ex = self.executor(run=False, status_interval=0.01)
        f = ex.submit(square, 3)
        while not f.task_id:
            concurrent.futures.wait([f], timeout=0.01)
        self.api.tasks[f.task_id]["status"] = "running"
        for _ in range(500):
            if f.ferry_status == "running":
                break
            concurrent.futures.wait([f], timeout=0.01)
        self.assertEqual(f.ferry_status, "running")

    def test_args_kwargs_and_the_remote_exception(self):
        ex = self.executor()
        self.assertEqual(ex.submit(echo, 1, b"two", three=3).result(timeout=10), ((1, b"two"), {"three": 3}))
        with self.assertRaises(ZeroDivisionError) as caught:
            ex.submit(divide, 1, 0).result(timeout=10)
        self.assertIn("in divide", caught.exception.remote_traceback)

    def test_what_a_task_printed_comes_back_with_its_result_or_exception(self):
        ex = self.executor()
        ok = ex.submit(chatty, 2)
        self.assertEqual(ok.result(timeout=10), 4)
        self.assertEqual(ok.output(timeout=10), TaskOutput(stdout="squaring 2\n", stderr="a warning\n", stdout_bytes=11, stderr_bytes=10))
        failed = ex.submit(chatty, 0)
        with self.assertRaises(ValueError) as caught:
            failed.result(timeout=10)
        self.assertEqual(failed.output().stdout, "squaring 0\n")
        self.assertEqual(caught.exception.ferry_output.stderr, "a warning\n")
        self.assertIsNone(ex.submit(square, 3).output(timeout=10))
        # The client reads it too, from any session.
        self.assertEqual(ex.client.get_output(ok.task_id).stdout, "squaring 2\n")
        self.assertEqual(ex.client.get_task(ok.task_id)["output"].stderr, "a warning\n")

    def test_large_arguments_are_uploaded_first(self):
        ex = self.executor()
        blob = b"\x07" * (UPLOAD_THRESHOLD + 1)
        self.assertEqual(ex.submit(size_of, blob).result(timeout=10), len(blob))
        (payload_call,) = self.api.calls("POST", "/v1/payloads")
        self.assertEqual(payload_call[2]["endpoint_id"], EP)
        (spec,) = self.api.submits()[0][2]["tasks"]
        self.assertIn("ref", spec["payload"])
        self.assertNotIn("data", spec["payload"])
        self.assertEqual(spec["payload"]["size"], payload_call[2]["size"])

    def test_a_batch_too_big_for_one_request_body_is_split(self):
        ex = self.executor()
        blob = b"\x01" * (UPLOAD_THRESHOLD - 100)
        futures = [ex.submit(size_of, blob) for _ in range(20)]
        self.assertEqual({f.result(timeout=10) for f in futures}, {len(blob)})
        self.assertGreaterEqual(len(self.api.submits()), 2)
        for r in self.api.submits():
            self.assertLess(sum(len(t["payload"]["data"]) for t in r[2]["tasks"]), 5 * 1024 * 1024)

    def test_a_partial_submit_failure_fails_only_the_tasks_not_queued(self):
        ex = self.executor(batch_delay=0.05)
        self.api.fail_next_submit = partial_failure(1)
        futures = [ex.submit(square, i) for i in range(3)]
        for f in futures:
            concurrent.futures.wait([f], timeout=10)
        errors = [f.exception(timeout=0) for f in futures]
        self.assertIsInstance(errors[1], FerryApiError)
        self.assertEqual(errors[1].code, "PartialSubmitFailure")

    def test_cancel_before_and_after_submission(self):
        ex = self.executor(run=False, batch_delay=0.3)
        early = ex.submit(square, 1)
        self.assertTrue(early.cancel())
        self.assertTrue(early.cancelled())
        later = ex.submit(square, 2)
        for _ in range(200):
            if later.task_id:
                break
            concurrent.futures.wait([later], timeout=0.01)
        self.assertIsNotNone(later.task_id)
        self.assertTrue(later.cancel())
        done, _ = concurrent.futures.wait([early, later], timeout=5)
        self.assertEqual(len(done), 2)
        self.assertEqual(self.api.tasks[later.task_id]["status"], "cancelled")
        self.assertEqual(sum(len(r[2]["tasks"]) for r in self.api.submits()), 1)

    def test_a_task_cancelled_on_the_service_cancels_its_future(self):
        ex = self.executor(run=False)
        f = ex.submit(square, 3)
        while not f.task_id:
            concurrent.futures.wait([f], timeout=0.01)
        self.api.tasks[f.task_id]["status"] = "cancelled"
        done, _ = concurrent.futures.wait([f], timeout=5)
        self.assertEqual(done, {f})
        self.assertTrue(f.cancelled())

    def test_shutdown_cancels_or_waits(self):
        ex = self.executor(run=False)
        f = ex.submit(square, 3)
        ex.shutdown(wait=True, cancel_futures=True)
        self.assertTrue(f.cancelled())
        with self.assertRaises(RuntimeError):
            ex.submit(square, 4)

    def test_functions_wrapped_by_one_decorator_stay_apart(self):
        # Both wrappers share one code object; each must still travel as its own source.
        ex = self.executor()
        self.assertEqual(ex.submit(plus_one, 1).result(timeout=10), 2)
        self.assertEqual(ex.submit(minus_one, 1).result(timeout=10), 0)
        self.assertEqual(ex.submit(plus_one, 5).result(timeout=10), 6)
        self.assertEqual(ex.stats["registrations"], 2)

    def test_map(self):
        ex = self.executor()
        self.assertEqual(list(ex.map(divide, [1, 9], [2, 3])), [0.5, 3.0])

    def test_a_registered_node_function_gets_json_arguments(self):
        ex = self.executor(run=False)
        node = "00000000-0000-4000-8000-00000000000f"
        self.api.functions[node] = {"runtime": "node", "source": "(a, b) => a + b"}
        ex.submit_to_registered_function(node, args=(40, 2))
        ex.shutdown(wait=False)
        while not self.api.submits():
            concurrent.futures.wait([], timeout=0.01)
        (spec,) = self.api.submits()[0][2]["tasks"]
        self.assertEqual(spec["payload"]["codec"], "json")

    def test_an_unknown_task_fails_its_future(self):
        ex = self.executor(run=False)
        f = ex.submit(square, 3)
        while not f.task_id:
            concurrent.futures.wait([f], timeout=0.01)
        del self.api.tasks[f.task_id]
        with self.assertRaises(FerryApiError) as caught:
            f.result(timeout=5)
        self.assertEqual(caught.exception.status, 404)

    def test_the_client_waits_for_the_finished_tasks_among_those_asked(self):
        ex = self.executor(run=False)
        open_, done = ex.submit(square, 2), ex.submit(square, 3)
        while not (open_.task_id and done.task_id):
            concurrent.futures.wait([open_, done], timeout=0.01)
        self.assertEqual(ex.client.wait_for_tasks([open_.task_id], timeout=0.01), {})
        self.api.execute(done.task_id)
        unknown = "00000000-0000-4000-8000-0000000000ff"
        out = ex.client.wait_for_tasks([open_.task_id, done.task_id, unknown])
        self.assertEqual(list(out), [done.task_id, unknown])
        self.assertEqual((out[done.task_id]["status"], out[done.task_id]["result"]), ("success", 9))
        self.assertEqual(out[unknown]["status"], "unknown")
        (last,) = self.api.calls("POST", "/v1/tasks/wait")[-1:]
        self.assertEqual(last[2]["wait_ms"], 10_000)


if __name__ == "__main__":
    unittest.main()
