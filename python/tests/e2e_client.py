"""End-to-end tests of ferry_compute against a running Ferry (test/e2e/python-client.test.ts runs them).

Needs FERRY_API_URL, FERRY_TOKEN and FERRY_ENDPOINT_ID, and `python/` on PYTHONPATH:

    PYTHONPATH=python python3 python/tests/e2e_client.py
"""

import concurrent.futures
import functools
import hashlib
import os
import subprocess
import sys
import textwrap
import unittest

from ferry_compute import Client, Executor, TaskExecutionFailed, TaskPending

ENDPOINT = os.environ["FERRY_ENDPOINT_ID"]
MB = 1024 * 1024


def divide(a, b):
    return a / b


def greet(name, greeting="Hello", punctuation="."):
    return f"{greeting}, {name}{punctuation}"


def year_today():
    from datetime import date
    import platform

    return date.today().year, platform.python_version()


def echo(text):
    import os

    return os.popen(f"echo {text}").read()


def pi(num_points):
    from random import random

    inside = 0
    for _ in range(num_points):
        x, y = random(), random()
        if x**2 + y**2 < 1:
            inside += 1
    return inside * 4 / num_points


def digest(blob):
    import hashlib

    return len(blob), hashlib.sha256(blob).hexdigest()


def big_bytes(n):
    return bytes(range(256)) * (n // 256)


def own_error():
    class LocalOnly(Exception):
        pass

    raise LocalOnly("a class the client cannot import")


def nap(seconds):
    import time

    time.sleep(seconds)
    return "woke"


def shout(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs).upper()

    return wrapper


@shout
def decorated(word):
    return f"{word}!"


class ExecutorTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ex = Executor(endpoint_id=ENDPOINT)

    @classmethod
    def tearDownClass(cls):
        cls.ex.shutdown()

    def test_zero_division_is_reraised_as_itself_with_the_remote_traceback(self):
        future = self.ex.submit(divide, 1, 0)
        with self.assertRaises(ZeroDivisionError) as caught:
            future.result(timeout=30)
        exc = caught.exception
        self.assertEqual(str(exc), "division by zero")
        self.assertIn("return a / b", exc.remote_traceback)
        self.assertIn("ZeroDivisionError", exc.remote_traceback)
        self.assertTrue(any("Remote traceback" in note for note in exc.__notes__))
        self.assertIsNotNone(future.task_id)

    def test_args_and_kwargs(self):
        self.assertEqual(self.ex.submit(greet, "Ferry").result(timeout=30), "Hello, Ferry.")
        self.assertEqual(self.ex.submit(greet, "Ferry", greeting="Hi", punctuation="!").result(timeout=30), "Hi, Ferry!")

    def test_imports_inside_the_body(self):
        year, version = self.ex.submit(year_today).result(timeout=30)
        self.assertGreaterEqual(year, 2024)
        self.assertRegex(version, r"^3\.")

    def test_runs_an_external_program(self):
        self.assertEqual(self.ex.submit(echo, "Hello from popen").result(timeout=30), "Hello from popen\n")

    def test_a_hundred_monte_carlo_tasks_in_one_request(self):
        ex = Executor(endpoint_id=ENDPOINT)
        with ex:
            futures = [ex.submit(pi, 20_000) for _ in range(100)]
            estimates = [f.result(timeout=60) for f in futures]
        self.assertEqual(len(estimates), 100)
        self.assertAlmostEqual(sum(estimates) / len(estimates), 3.14159, delta=0.03)
        self.assertLessEqual(ex.stats["submit_requests"], 3)  # 100 tasks, batched (batch_size 128)
        self.assertEqual(ex.stats["registrations"], 1)
        self.assertEqual(len({f.task_id for f in futures}), 100)

    def test_twenty_megabytes_each_way_through_presigned_urls(self):
        client = Client()
        transfers = []
        upload, fetch = client._upload, client._fetch
        client._upload = lambda url, data: (transfers.append(("PUT", len(data))), upload(url, data))[1]
        client._fetch = lambda url: (transfers.append(("GET", url)), fetch(url))[1]
        with Executor(endpoint_id=ENDPOINT, client=client) as ex:
            blob = os.urandom(20 * MB)
            size, sha = ex.submit(digest, blob).result(timeout=60)
            self.assertEqual((size, sha), (len(blob), hashlib.sha256(blob).hexdigest()))
            result = ex.submit(big_bytes, 20 * MB).result(timeout=60)
        self.assertEqual(len(result), 20 * MB)
        self.assertEqual(result[:4], b"\x00\x01\x02\x03")
        self.assertEqual(result, bytes(range(256)) * (20 * MB // 256))
        self.assertIn("PUT", [t[0] for t in transfers])
        self.assertIn("GET", [t[0] for t in transfers])

    def test_an_exception_the_client_cannot_import_becomes_task_execution_failed(self):
        with self.assertRaises(TaskExecutionFailed) as caught:
            self.ex.submit(own_error).result(timeout=30)
        self.assertEqual(caught.exception.remote_type, "own_error.<locals>.LocalOnly")
        self.assertIn("a class the client cannot import", caught.exception.message)
        self.assertIn("raise LocalOnly", caught.exception.remote_traceback)

    def test_map_lambda_and_decorated_functions(self):
        self.assertEqual(list(self.ex.map(pow, [2, 3], [10, 2])), [1024, 9])
        self.assertEqual(self.ex.submit(lambda x: x * 2, 21).result(timeout=30), 42)
        # Decorators are dropped: the worker runs the function as defined.
        self.assertEqual(self.ex.submit(decorated, "ferry").result(timeout=30), "ferry!")

    def test_cancel_and_as_completed(self):
        slow = self.ex.submit(nap, 5)
        quick = self.ex.submit(greet, "again")
        done = [f.result() for f in concurrent.futures.as_completed([quick], timeout=30)]
        self.assertEqual(done, ["Hello, again."])
        self.assertTrue(slow.cancel())
        self.assertTrue(slow.cancelled())
        with self.assertRaises(concurrent.futures.CancelledError):
            slow.result(timeout=5)
        self.assertEqual(Client().get_task(slow.task_id)["status"], "cancelled")


class ClientTests(unittest.TestCase):
    def test_register_run_and_read(self):
        gcc = Client()
        fid = gcc.register_function(greet)
        self.assertEqual(gcc.register_function(greet), fid)
        task_id = gcc.run("Globus", endpoint_id=ENDPOINT, function_id=fid, greeting="Hi")
        task = gcc.get_task(task_id)
        self.assertIn(task["status"], ("waiting-for-endpoint", "running", "success"))
        import time

        deadline = time.monotonic() + 30
        while True:
            try:
                result = gcc.get_result(task_id)
                break
            except TaskPending:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.1)
        self.assertEqual(result, "Hi, Globus.")
        failing = gcc.run(1, 0, endpoint_id=ENDPOINT, function_id=gcc.register_function(divide))
        # As in Globus Compute, get_task raises a failed task's exception; get_batch_result lists it.
        while gcc.get_batch_result([failing])[failing]["pending"]:
            time.sleep(0.1)
        with self.assertRaises(ZeroDivisionError):
            gcc.get_task(failing)
        batch = gcc.get_batch_result([task_id, failing])
        self.assertEqual(batch[task_id]["result"], "Hi, Globus.")
        self.assertIsInstance(batch[failing]["exception"], ZeroDivisionError)
        with self.assertRaises(ZeroDivisionError):
            gcc.get_result(failing)

    def test_endpoints(self):
        gcc = Client()
        self.assertIn(ENDPOINT, [e["endpoint_id"] for e in gcc.get_endpoints()])
        self.assertEqual(gcc.get_endpoint_metadata(ENDPOINT)["endpoint_id"], ENDPOINT)
        status = gcc.get_endpoint_status(ENDPOINT)
        self.assertEqual(status["status"], "online")
        self.assertEqual(status["details"]["total_workers"], 2)


class InteractiveTests(unittest.TestCase):
    def test_a_function_typed_at_the_prompt_gets_a_clear_error(self):
        # What `python3` with code typed at `>>>` does: the function's file is <stdin>, with no source to read.
        program = textwrap.dedent(
            """
            import os
            from ferry_compute import Executor
            src = "def f(x):\\n    return x + 1\\n"
            exec(compile(src, "<stdin>", "exec"))
            with Executor(endpoint_id=os.environ["FERRY_ENDPOINT_ID"]) as ex:
                ex.submit(f, 1)
            """
        )
        out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn(
            "FunctionSourceUnavailable: cannot find the source of 'f' (defined at the interactive prompt?); define it in a file, or install dill",
            out.stderr,
        )


if __name__ == "__main__":
    unittest.main(verbosity=2)
