"""Globus Compute's public API, used as its documentation shows, against a running Ferry.

test/e2e/python-compat.test.ts runs this against a local stack with one agent. Each test is a
Globus Compute script pattern with only the import changed (globus_compute_sdk -> ferry_compute).
Needs FERRY_API_URL, FERRY_TOKEN, FERRY_ENDPOINT_ID and `python/` on PYTHONPATH; the MPI test runs
when FERRY_COMPAT_MPI=1 (the agent has a real mpiexec):

    PYTHONPATH=python FERRY_COMPAT_MPI=1 python3 python/tests/compat_globus.py
"""

import concurrent.futures
import os
import time
import unittest
import uuid

from ferry_compute import Client, ComputeFuture, Executor, MPIFunction, ShellFunction, ShellResult
from ferry_compute.errors import (
    ComputeError,
    DeserializationError,
    MaxResultSizeExceeded,
    SerdeError,
    SerializationError,
    TaskExecutionFailed,
    TaskPending,
    VersionMismatch,
)

ENDPOINT = os.environ["FERRY_ENDPOINT_ID"]
MPI = os.environ.get("FERRY_COMPAT_MPI") == "1"


def double(x):
    return x * 2


def add(a, b=0):
    """Adds two numbers."""
    return a + b


def raise_value_error(text):
    raise ValueError(text)


def nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def wait_for(client, task_ids, timeout=60):
    """The polling loop of Globus's docs: get_batch_result until nothing is pending."""
    deadline = time.monotonic() + timeout
    while True:
        results = client.get_batch_result(task_ids)
        if all(not r["pending"] for r in results.values()) and len(results) == len(task_ids):
            return results
        if time.monotonic() > deadline:
            raise AssertionError(f"tasks still pending: {results}")
        time.sleep(0.2)


class ExecutorPatterns(unittest.TestCase):
    def test_executor_as_context_manager_with_as_completed(self):
        with Executor(endpoint_id=ENDPOINT) as gce:
            futures = [gce.submit(double, i) for i in range(10)]
            results = [f.result() for f in concurrent.futures.as_completed(futures, timeout=60)]
        self.assertEqual(sorted(results), [i * 2 for i in range(10)])
        self.assertTrue(all(isinstance(f, ComputeFuture) and f.task_id for f in futures))

    def test_executor_with_wait(self):
        with Executor(endpoint_id=ENDPOINT) as gce:
            futures = [gce.submit(add, i, b=1) for i in range(5)]
            done, not_done = concurrent.futures.wait(futures, timeout=60, return_when=concurrent.futures.ALL_COMPLETED)
        self.assertEqual(len(done), 5)
        self.assertEqual(not_done, set())
        self.assertEqual([f.result() for f in futures], [1, 2, 3, 4, 5])

    def test_executor_positional_endpoint_and_client(self):
        gcc = Client()
        with Executor(ENDPOINT, gcc) as gce:
            self.assertIs(gce.client, gcc)
            self.assertEqual(str(gce.endpoint_id), ENDPOINT)
            self.assertEqual(gce.submit(add, 40, 2).result(timeout=60), 42)

    def test_submit_to_registered_function(self):
        with Executor(endpoint_id=ENDPOINT) as gce:
            fn_id = gce.register_function(add)
            futs = [gce.submit_to_registered_function(function_id=fn_id, args=(i,), kwargs={"b": 10}) for i in range(3)]
            self.assertEqual([f.result(timeout=60) for f in futs], [10, 11, 12])

    def test_reload_tasks_gives_every_task_of_the_group_in_submit_order(self):
        group = uuid.uuid4()
        gce = Executor(endpoint_id=ENDPOINT, task_group_id=group)
        finished = [gce.submit(double, i) for i in range(4)]
        self.assertEqual([f.result(timeout=60) for f in finished], [0, 2, 4, 6])
        running = gce.submit(nap, 3)
        while running.task_id is None:
            time.sleep(0.05)
        gce.shutdown(wait=False)
        # A later session reattaches to the task group.
        later = Executor(endpoint_id=ENDPOINT, task_group_id=str(group))
        futures = list(later.reload_tasks())
        self.assertEqual([f.task_id for f in futures], [f.task_id for f in finished] + [running.task_id])
        self.assertEqual([f.result(timeout=60) for f in futures[:4]], [0, 2, 4, 6])
        self.assertEqual(futures[4].result(timeout=60), 3)
        later.shutdown()

    def test_except_task_execution_failed_and_except_value_error(self):
        with Executor(endpoint_id=ENDPOINT) as gce:
            future = gce.submit(raise_value_error, "not a number")
            try:
                future.result(timeout=60)
            except TaskExecutionFailed as e:
                caught = e
            else:
                self.fail("no TaskExecutionFailed")
            self.assertIn("ValueError: not a number", caught.remote_data)
            self.assertIn("raise ValueError(text)", caught.remote_data)
            self.assertTrue(caught.completion_t)
            self.assertIn("ValueError: not a number", str(TaskExecutionFailed(caught.remote_data)))
            # The same future's exception is the original type too.
            try:
                future.result()
            except ValueError as e:
                self.assertEqual(str(e), "not a number")
                self.assertEqual(e.ferry_task_id, future.task_id)
            with self.assertRaises(ValueError):
                Client().get_result(future.task_id)

    def test_get_worker_hardware_details(self):
        with Executor(endpoint_id=ENDPOINT) as gce:
            report = gce.get_worker_hardware_details()
        self.assertIn("== Compute Endpoint worker == == python: python_runtime_host_info ==", report)
        self.assertIn("CPU core count", report)


class ClientPatterns(unittest.TestCase):
    def test_register_run_get_result(self):
        gcc = Client()
        func_uuid = gcc.register_function(add, "adds two numbers")
        self.assertEqual(gcc.get_function(func_uuid)["description"], "adds two numbers")
        # Registering again asks the API again, which answers the same id.
        self.assertEqual(gcc.register_function(add, "adds two numbers"), func_uuid)
        self.assertNotEqual(gcc.register_function(add, "another description"), func_uuid)
        task_id = gcc.run(5, endpoint_id=ENDPOINT, function_id=func_uuid, b=10)
        wait_for(gcc, [task_id])
        self.assertEqual(gcc.get_result(task_id), 15)
        task = gcc.get_task(task_id)
        self.assertEqual((task["pending"], task["status"], task["result"]), (False, "success", 15))
        self.assertTrue(task["completion_t"])

    def test_task_pending(self):
        gcc = Client()
        task_id = gcc.run(2, endpoint_id=ENDPOINT, function_id=gcc.register_function(nap))
        with self.assertRaises(TaskPending) as caught:
            gcc.get_result(task_id)
        self.assertTrue(caught.exception.reason)
        self.assertTrue(gcc.get_task(task_id)["pending"])
        wait_for(gcc, [task_id])
        self.assertEqual(gcc.get_result(task_id), 2)

    def test_batch_submit_and_get_batch_result(self):
        gcc = Client()
        fn_id = gcc.register_function(double)
        batch = gcc.create_batch()
        for x in range(6):
            batch.add(fn_id, args=(x,))
        batch_res = gcc.batch_run(ENDPOINT, batch)
        self.assertEqual(batch_res["endpoint_id"], ENDPOINT)
        self.assertTrue(batch_res["task_group_id"])
        task_ids = batch_res["tasks"][fn_id]
        self.assertEqual(len(task_ids), 6)
        results = wait_for(gcc, task_ids)
        self.assertEqual([results[t]["result"] for t in task_ids], [0, 2, 4, 6, 8, 10])
        self.assertEqual({results[t]["status"] for t in task_ids}, {"success"})

    def test_register_source_code(self):
        gcc = Client()
        fn_id = gcc.register_source_code("def triple(x):\n    return 3 * x\n", "triple", description="triples")
        task_id = gcc.run(7, endpoint_id=ENDPOINT, function_id=fn_id)
        wait_for(gcc, [task_id])
        self.assertEqual(gcc.get_result(task_id), 21)

    def test_delete_function(self):
        gcc = Client()
        fn_id = gcc.register_function(double, "to be deleted")
        out = gcc.delete_function(fn_id)
        self.assertEqual(out["function_id"], fn_id)
        with self.assertRaises(Exception) as caught:
            gcc.run(1, endpoint_id=ENDPOINT, function_id=fn_id)
        self.assertEqual(getattr(caught.exception, "status", None), 404)

    def test_allowed_functions(self):
        gcc = Client()
        self.assertEqual(gcc.get_allowed_functions(ENDPOINT), {"endpoint_id": ENDPOINT, "restricted": False, "functions": []})
        allowed = gcc.register_function(double, "allowed here")
        other = gcc.register_function(add, "not allowed here")
        ep = gcc.register_endpoint("restricted-compat", allowed_functions=[allowed])
        try:
            listed = gcc.get_allowed_functions(ep["endpoint_id"])
            self.assertEqual((listed["restricted"], listed["functions"]), (True, [allowed]))
            with self.assertRaises(Exception) as caught:
                gcc.run(1, 2, endpoint_id=ep["endpoint_id"], function_id=other)
            self.assertEqual((caught.exception.status, caught.exception.code), (403, "FunctionNotAllowed"))
        finally:
            gcc.delete_endpoint(ep["endpoint_id"])

    def test_client_get_worker_hardware_details(self):
        gcc = Client()
        task_id = gcc.get_worker_hardware_details(ENDPOINT)
        wait_for(gcc, [task_id])
        self.assertIn("python_runtime_host_info", gcc.get_result(task_id))

    def test_endpoint_status_and_metadata(self):
        gcc = Client()
        self.assertEqual(gcc.get_endpoint_status(ENDPOINT)["status"], "online")
        self.assertEqual(gcc.get_endpoint_metadata(ENDPOINT)["endpoint_id"], ENDPOINT)
        self.assertIn(ENDPOINT, [e["endpoint_id"] for e in gcc.get_endpoints()])


class ShellAndMpiPatterns(unittest.TestCase):
    def test_shell_function_success(self):
        bf = ShellFunction("echo '{message}'")
        with Executor(endpoint_id=ENDPOINT) as gce:
            future = gce.submit(bf, message="Hello")
            result = future.result(timeout=60)
        self.assertIsInstance(result, ShellResult)
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout, "Hello\n")
        self.assertEqual(result.cmd, "echo 'Hello'")
        self.assertIsNone(result.exception_name)
        self.assertIn("exit code: 0", str(result))

    def test_shell_function_non_zero_exit(self):
        bf = ShellFunction("echo to stdout; echo to stderr >&2; exit 3")
        with Executor(endpoint_id=ENDPOINT) as gce:
            result = gce.submit(bf).result(timeout=60)
        self.assertEqual(result.returncode, 3)
        self.assertEqual(result.stdout, "to stdout\n")
        self.assertEqual(result.stderr, "to stderr\n")
        self.assertEqual(result.exception_name, "subprocess.CalledProcessError")

    def test_shell_function_walltime_and_snippet_lines(self):
        with Executor(endpoint_id=ENDPOINT) as gce:
            slow = gce.submit(ShellFunction("sleep 20", walltime=1)).result(timeout=60)
            lines = gce.submit(ShellFunction("seq 1 50", snippet_lines=5)).result(timeout=60)
        self.assertEqual((slow.returncode, slow.exception_name), (124, "subprocess.TimeoutExpired"))
        self.assertEqual(lines.stdout, "46\n47\n48\n49\n50\n")

    def test_shell_function_template_errors(self):
        with Executor(endpoint_id=ENDPOINT) as gce:
            missing = gce.submit(ShellFunction("echo {name}"))
            positional = gce.submit(ShellFunction("echo hi"), "unexpected")
            with self.assertRaises(KeyError) as caught:
                missing.result(timeout=60)
            self.assertIsInstance(caught.exception, TaskExecutionFailed)
            with self.assertRaises(TaskExecutionFailed) as caught_positional:
                positional.result(timeout=60)
            self.assertIsInstance(caught_positional.exception, TypeError)

    @unittest.skipUnless(MPI, "FERRY_COMPAT_MPI=1: the agent has a real mpiexec")
    def test_mpi_function_with_two_ranks(self):
        func = MPIFunction("bash -c 'echo rank $PMI_RANK of $PMI_SIZE'")
        with Executor(endpoint_id=ENDPOINT) as gce:
            gce.resource_specification = {"num_nodes": 1, "ranks_per_node": 2}
            result = gce.submit(func).result(timeout=120)
        self.assertIsInstance(result, ShellResult)
        self.assertEqual(result.returncode, 0, str(result))
        self.assertEqual(sorted(result.stdout.split("\n")[:2]), ["rank 0 of 2", "rank 1 of 2"])


class ErrorNames(unittest.TestCase):
    def test_globus_error_classes(self):
        self.assertTrue(issubclass(SerializationError, SerdeError))
        self.assertTrue(issubclass(DeserializationError, SerdeError))
        self.assertTrue(issubclass(SerdeError, ComputeError))
        self.assertTrue(issubclass(TaskPending, ComputeError))
        self.assertTrue(issubclass(VersionMismatch, ComputeError))
        self.assertEqual(str(MaxResultSizeExceeded(2, 1)), "Task result of 2B exceeded current limit of 1B")


if __name__ == "__main__":
    unittest.main(verbosity=2)
