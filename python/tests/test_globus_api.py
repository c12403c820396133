"""The public surface of globus_compute_sdk, in ferry_compute, against the in-memory API (no server)."""

import concurrent.futures
import inspect
import pickle
import unittest
import uuid
import warnings

import ferry_compute
from ferry_compute import Batch, Client, ComputeFuture, Executor, MPIFunction, ShellFunction, ShellResult
from ferry_compute import errors
from ferry_compute._payload import as_task_execution_failed, remote_exception
from ferry_compute.errors import TaskExecutionFailed, TaskPending

from .fake_api import FakeApi, _view

EP = "00000000-0000-4000-8000-000000000001"
GLOBUS_ERRORS = ("ComputeError", "TaskExecutionFailed", "MaxResultSizeExceeded", "SerdeError", "SerializationError", "DeserializationError", "TaskPending", "VersionMismatch")


def square(x):
    return x * x


def described(x):
    """Adds one."""
    return x + 1


def fails(x):
    raise ValueError(f"bad value {x}")


class TwoArgError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class CodeError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self):
        return f"{self.code}: {self.detail}"


class SlotsError(Exception):
    __slots__ = ()


class RefusesSubclasses(Exception):
    def __init_subclass__(cls, **kwargs):
        raise TypeError("final")


def make(api):
    return Client(http=api, upload=api.upload, fetch=lambda url: (_ for _ in ()).throw(AssertionError(url)))


class ErrorsTests(unittest.TestCase):
    def test_every_globus_error_name_is_in_ferry_compute_errors(self):
        for name in GLOBUS_ERRORS:
            self.assertTrue(hasattr(errors, name), name)
            self.assertIn(name, errors.__all__)
        from ferry_compute.errors import error_types

        self.assertIs(error_types.TaskPending, TaskPending)
        # Ferry's names still work.
        for name in ("FerryError", "FerryApiError", "FerryConfigError", "FunctionNotPortable", "FunctionSourceUnavailable", "ChecksumMismatch"):
            self.assertTrue(hasattr(ferry_compute, name), name)
        self.assertTrue(issubclass(errors.FerryError, errors.ComputeError))

    def test_globus_constructors_and_texts(self):
        pending = TaskPending("waiting-for-endpoint")
        self.assertEqual(pending.reason, "waiting-for-endpoint")
        self.assertEqual(repr(pending), "Task is pending due to waiting-for-endpoint")
        self.assertEqual(str(errors.VersionMismatch("too old")), "Globus Compute Versioning Issue: too old")
        self.assertEqual(str(errors.SerializationError("nope")), "Serialization failed: nope")
        self.assertEqual(str(errors.DeserializationError("nope")), "Deserialization failed: nope")
        self.assertEqual(str(errors.MaxResultSizeExceeded(20, 10)), "Task result of 20B exceeded current limit of 10B")
        tef = TaskExecutionFailed("Traceback...\nValueError: x\n", "1700000000.0")
        self.assertEqual(tef.remote_data, "Traceback...\nValueError: x\n")
        self.assertEqual(tef.completion_t, "1700000000.0")
        self.assertIsNone(tef.task_details)
        self.assertEqual(str(tef), "\n Traceback...\n ValueError: x\n")
        self.assertEqual((tef.remote_type, tef.message), ("ValueError", "x"))
        self.assertTrue(TaskExecutionFailed("x").completion_t)
        self.assertEqual(list(inspect.signature(TaskExecutionFailed).parameters)[:3], ["remote_data", "completion_t", "task_details"])
        again = pickle.loads(pickle.dumps(tef))
        self.assertEqual((again.remote_data, again.completion_t), (tef.remote_data, tef.completion_t))

    def test_a_remote_exception_is_both_its_type_and_task_execution_failed(self):
        exc = remote_exception({"type": "ValueError", "message": "bad", "traceback": "tb\nValueError: bad\n", "payload": _view(pickle.dumps(ValueError("bad")))}, "t-1", None, "12.5")
        self.assertIsInstance(exc, ValueError)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual(type(exc).__name__, "ValueError")
        self.assertEqual(str(exc), "bad")
        self.assertEqual(repr(exc), "ValueError('bad')")
        self.assertEqual((exc.remote_data, exc.completion_t, exc.ferry_task_id), ("tb\nValueError: bad\n", "12.5", "t-1"))
        # One subclass per remote type.
        other = remote_exception({"type": "ValueError", "message": "b", "payload": _view(pickle.dumps(ValueError("b")))}, "t-2", None)
        self.assertIs(type(other), type(exc))
        # It pickles, and comes back the same way.
        back = pickle.loads(pickle.dumps(exc))
        self.assertIsInstance(back, ValueError)
        self.assertIsInstance(back, TaskExecutionFailed)
        self.assertEqual(back.remote_data, exc.remote_data)

    def test_classes_with_their_own_constructor_and_attributes(self):
        exc = as_task_execution_failed(pickle.loads(pickle.dumps(CodeError(7, "broken"))))
        self.assertIsInstance(exc, CodeError)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual((exc.code, exc.detail, str(exc)), (7, "broken", "7: broken"))
        missing = as_task_execution_failed(FileNotFoundError(2, "No such file or directory", "/nope"))
        self.assertIsInstance(missing, FileNotFoundError)
        self.assertEqual((missing.errno, missing.filename), (2, "/nope"))
        key = as_task_execution_failed(KeyError("k"))
        self.assertEqual(str(key), "'k'")
        with self.assertRaises(TaskExecutionFailed):
            raise key

    def test_a_builtin_type_without_a_pickle_is_rebuilt_from_its_name(self):
        exc = remote_exception({"type": "KeyError", "message": "'name'", "traceback": "KeyError: 'name'\n"}, "t", None)
        self.assertIsInstance(exc, KeyError)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual((str(exc), exc.remote_type), ("'name'", "KeyError"))
        self.assertIs(type(remote_exception({"type": "TaskTimeout", "message": "late"}, "t", None)), TaskExecutionFailed)

    def test_what_cannot_be_rebuilt_is_a_plain_task_execution_failed(self):
        self.assertIsNone(as_task_execution_failed(SystemExit(3)))
        self.assertIsNone(as_task_execution_failed(RefusesSubclasses("x")))
        # A class whose pickle does not load (its __init__ wants other arguments than its args).
        odd = remote_exception({"type": "TwoArgError", "message": "7: broken", "traceback": "tb", "payload": _view(pickle.dumps(TwoArgError(7, "broken")))}, "t", None)
        self.assertIs(type(odd), TaskExecutionFailed)
        self.assertEqual((odd.remote_type, odd.message), ("TwoArgError", "7: broken"))
        exc = remote_exception({"type": "SystemExit", "message": "3", "traceback": "tb", "payload": _view(pickle.dumps(SystemExit(3)))}, "t", None)
        self.assertIs(type(exc), TaskExecutionFailed)
        slotted = as_task_execution_failed(SlotsError("s"))
        self.assertTrue(slotted is None or isinstance(slotted, SlotsError))


class ClientTests(unittest.TestCase):
    def setUp(self):
        self.api = FakeApi()
        self.client = make(self.api)

    def test_unknown_and_globus_only_arguments_warn(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            c = Client(environment="production", funcx_service_address="x", http=self.api)
        texts = " | ".join(str(w.message) for w in caught)
        self.assertIn("'funcx_service_address' argument is unrecognized", texts)
        self.assertIn("environment", texts)
        self.assertEqual(c.environment, "production")
        self.assertIsNone(c.version_check())
        with self.assertRaises(NotImplementedError) as caught_auth:
            c.logout()
        self.assertIn("Globus Auth", str(caught_auth.exception))
        with self.assertRaises(NotImplementedError):
            c.get_result_amqp_url()

    def test_container_methods_say_what_to_use_instead(self):
        calls = [
            lambda: self.client.register_container("docker://python:3.12", "docker"),
            lambda: self.client.get_container("0c5f7d2e-0000-4000-8000-000000000000", "docker"),
            lambda: self.client.get_containers("ep"),
            lambda: self.client.build_container(object()),
            lambda: self.client.get_container_build_status("0c5f7d2e-0000-4000-8000-000000000000"),
        ]
        for call in calls:
            with self.assertRaises(NotImplementedError) as caught:
                call()
            self.assertIn("worker_init", str(caught.exception))
        self.assertEqual(self.api.calls("POST", "/v1/functions"), [])

    def test_register_function_takes_the_description_second_and_registers_every_time(self):
        fid = self.client.register_function(square, "squares a number")
        self.assertEqual(self.client.register_function(square, "squares a number"), fid)
        self.assertEqual(len(self.api.calls("POST", "/v1/functions")), 2)
        body = self.api.calls("POST", "/v1/functions")[0][2]
        self.assertEqual((body["name"], body["description"]), ("square", "squares a number"))
        self.assertNotEqual(self.client.register_function(square, "another description"), fid)
        # The docstring is the default description, as in Globus Compute.
        self.client.register_function(described)
        self.assertEqual(self.api.calls("POST", "/v1/functions")[-1][2]["description"], "Adds one.")
        uuid.UUID(fid)

    def test_register_source_code_and_delete_function(self):
        fid = self.client.register_source_code("def triple(x):\n    return 3 * x", "triple")
        self.assertEqual(self.api.functions[fid]["entrypoint"], "triple")
        tid = self.client.run(5, endpoint_id=EP, function_id=fid)
        self.assertEqual(self.client.get_result(tid), 15)
        self.assertEqual(self.client.delete_function(fid), {"function_id": fid, "deleted": True})
        self.assertNotIn(fid, self.api.functions)

    def test_batch_run_and_get_batch_result(self):
        fid = self.client.register_function(square)
        batch = self.client.create_batch()
        self.assertIsInstance(batch, Batch)
        self.assertFalse(batch)
        for x in range(3):
            batch.add(fid, args=(x,))
        with self.assertRaises(TypeError):
            batch.add(fid, args=1)
        with self.assertRaises(TypeError):
            batch.add(fid, kwargs={1: 2})
        self.assertEqual(len(batch), 3)
        prepared = batch.prepare()
        self.assertEqual(list(prepared["tasks"]), [fid])
        self.assertEqual(len(prepared["tasks"][fid]), 3)
        out = self.client.batch_run(EP, batch)
        self.assertEqual(set(out), {"request_id", "task_group_id", "endpoint_id", "tasks"})
        self.assertEqual(out["endpoint_id"], EP)
        tids = out["tasks"][fid]
        self.assertEqual(len(tids), 3)
        results = self.client.get_batch_result(tids)
        self.assertEqual([results[t]["result"] for t in tids], [0, 1, 4])
        self.assertEqual({results[t]["pending"] for t in tids}, {False})
        self.assertEqual({results[t]["status"] for t in tids}, {"success"})
        with self.assertRaises(ValueError):
            self.client.batch_run(EP, self.client.create_batch())

    def test_a_failed_task_raises_from_get_task_and_get_result(self):
        fid = self.client.register_function(fails)
        tid = self.client.run(3, endpoint_id=EP, function_id=fid)
        with self.assertRaises(TaskExecutionFailed) as caught:
            self.client.get_task(tid)
        self.assertIsInstance(caught.exception, ValueError)
        with self.assertRaises(ValueError):
            self.client.get_result(tid)
        self.assertIsInstance(self.client.get_batch_result([tid])[tid]["exception"], TaskExecutionFailed)

    def test_arguments_that_cannot_be_pickled(self):
        fid = self.client.register_function(square)
        import threading

        with self.assertRaises(errors.SerializationError) as caught:
            self.client.run(threading.Lock(), endpoint_id=EP, function_id=fid)
        self.assertIsInstance(caught.exception, TypeError)
        self.assertIn("cannot be pickled", str(caught.exception))

    def test_task_pending(self):
        self.api.run = False
        tid = self.client.run(2, endpoint_id=EP, function_id=self.client.register_function(square))
        with self.assertRaises(TaskPending) as caught:
            self.client.get_result(tid)
        self.assertEqual(caught.exception.reason, "waiting-for-endpoint")
        self.assertTrue(self.client.get_task(tid)["pending"])

    def test_allowed_functions(self):
        self.assertEqual(self.client.get_allowed_functions(EP), {"endpoint_id": EP, "restricted": False, "functions": []})
        self.api.allowed[EP] = ["f1"]
        self.assertEqual(self.client.get_allowed_functions(EP)["functions"], ["f1"])

    def test_worker_hardware_details(self):
        tid = self.client.get_worker_hardware_details(EP)
        report = self.client.get_result(tid)
        self.assertIn("== Compute Endpoint worker == == python: python_runtime_host_info ==", report)

    def test_a_shell_function_through_the_client(self):
        fid = self.client.register_function(ShellFunction("echo {word}", name="say"))
        body = self.api.functions[fid]
        self.assertEqual((body["runtime"], body["source"], body["name"]), ("shell", "echo {word}", "say"))
        result = self.client.get_result(self.client.run(endpoint_id=EP, function_id=fid, word="hi"))
        self.assertIsInstance(result, ShellResult)
        self.assertEqual((result.stdout, result.returncode, result.cmd), ("hi\n", 0, "echo hi"))


class ExecutorTests(unittest.TestCase):
    def setUp(self):
        self.api = FakeApi()
        self.client = make(self.api)

    def executor(self, *args, **kwargs):
        kwargs.setdefault("poll_interval", 0.001)
        ex = Executor(*args, **kwargs)
        self.addCleanup(ex.shutdown, wait=False, cancel_futures=True)
        return ex

    def test_positional_endpoint_and_client_and_globus_attributes(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ex = self.executor(EP, self.client, amqp_port=443, user_endpoint_config={"a": 1}, label="mine")
        self.assertIn("amqp_port", str(caught[0].message))
        self.assertEqual(ex.endpoint_id, uuid.UUID(EP))
        self.assertIs(ex.client, self.client)
        self.assertEqual((ex.amqp_port, ex.user_endpoint_config, ex.label, ex.batch_size), (443, {"a": 1}, "mine", 128))
        self.assertEqual((ex.api_burst_limit, ex.api_burst_window_s), (4, 16))
        self.assertIn("mine; ep_id:", repr(ex))
        with self.assertRaises(TypeError):
            Executor(EP, self.client, not_an_option=1)
        with self.assertRaises(TypeError):
            ex.resource_specification = "4 ranks"
        params = list(inspect.signature(Executor).parameters)
        self.assertEqual(params[:12], ["endpoint_id", "client", "task_group_id", "resource_specification", "user_endpoint_config", "label", "batch_size", "amqp_port", "api_burst_limit", "api_burst_window_s", "serializer", "result_serializers"])

    def test_context_manager_as_completed_and_wait(self):
        with self.executor(EP, self.client) as ex:
            futures = [ex.submit(square, i) for i in range(5)]
            self.assertTrue(all(isinstance(f, ComputeFuture) for f in futures))
            done = {f.result() for f in concurrent.futures.as_completed(futures, timeout=10)}
            concurrent.futures.wait(futures, timeout=10)
        self.assertEqual(done, {0, 1, 4, 9, 16})
        self.assertTrue(all(f.task_id for f in futures))

    def test_register_function_as_globus(self):
        ex = self.executor(EP, self.client)
        fid = ex.register_function(square)
        with self.assertRaises(ValueError):
            ex.register_function(square)
        self.assertEqual(ex.register_function(square, function_id=fid), fid)
        self.assertEqual(ex.submit(square, 4).result(timeout=10), 16)
        self.assertEqual(len(self.api.calls("POST", "/v1/functions")), 1)
        src = ex.register_source_code("def hello(name):\n    return 'hi ' + name\n", "hello")
        self.assertEqual(ex.submit_to_registered_function(src, args=("ferry",)).result(timeout=10), "hi ferry")

    def test_reload_tasks_returns_every_task_of_the_group_in_submit_order(self):
        ex = self.executor(EP, self.client, batch_size=2)
        futures = [ex.submit(square, i) for i in range(5)]
        concurrent.futures.wait(futures, timeout=10)
        self.api.run = False
        late = ex.submit(square, 9)
        while not late.task_id:
            concurrent.futures.wait([late], timeout=0.01)
        other = self.executor(EP, self.client, task_group_id=ex.task_group_id)
        reloaded = other.reload_tasks()
        self.assertEqual([f.task_id for f in reloaded], [f.task_id for f in futures] + [late.task_id])
        self.assertEqual([f.result(timeout=5) for f in reloaded[:5]], [0, 1, 4, 9, 16])
        self.assertFalse(reloaded[5].done())
        self.api.execute(late.task_id)
        self.assertEqual(reloaded[5].result(timeout=10), 81)
        with self.assertWarns(UserWarning):
            self.assertEqual(other.reload_tasks(str(uuid.uuid4())), [])

    def test_a_new_executor_reuses_the_last_task_group(self):
        ex = self.executor(EP, self.client)
        ex.submit(square, 1).result(timeout=10)
        self.assertIsInstance(ex.task_group_id, uuid.UUID)
        self.assertEqual(self.executor(EP, self.client).task_group_id, ex.task_group_id)

    def test_shell_function_result_and_non_zero_exit(self):
        ex = self.executor(EP, self.client)
        ok = ex.submit(ShellFunction("echo hello {name}"), name="world").result(timeout=10)
        self.assertIsInstance(ok, ShellResult)
        self.assertEqual((ok.returncode, ok.stdout, ok.cmd, ok.exception_name), (0, "hello world\n", "echo hello world", None))
        bad = ex.submit(ShellFunction("echo oops >&2; exit 3")).result(timeout=10)
        self.assertEqual((bad.returncode, bad.stderr, bad.exception_name), (3, "oops\n", "subprocess.CalledProcessError"))
        as_dict = ex.submit(ShellFunction("echo {n} {flag}", return_dict=True), n=2, flag=True).result(timeout=10)
        self.assertEqual(as_dict["stdout"], "2 True\n")

    def test_mpi_function_sends_the_resource_specification(self):
        ex = self.executor(EP, self.client)
        ex.resource_specification = {"num_nodes": 1, "ranks_per_node": 2}
        # Only MPI tasks carry it: the API refuses it for other runtimes.
        self.assertEqual(ex.submit(square, 3).result(timeout=10), 9)
        result = ex.submit(MPIFunction("echo ranks"), ).result(timeout=10)
        self.assertEqual(result.cmd, "$PARSL_MPI_PREFIX echo ranks")
        fid = next(f for f, b in self.api.functions.items() if b["runtime"] == "mpi")
        specs = [t for r in self.api.submits() for t in r[2]["tasks"]]
        self.assertEqual([t.get("resource_specification") for t in specs if t["function_id"] == fid], [{"num_nodes": 1, "ranks_per_node": 2}])
        self.assertTrue(all("resource_specification" not in t for t in specs if t["function_id"] != fid))

    def test_get_worker_hardware_details(self):
        ex = self.executor(EP, self.client)
        self.assertIn("CPU core count", ex.get_worker_hardware_details())

    def test_no_endpoint_is_globus_value_error(self):
        ex = self.executor(None, self.client)
        import os

        if not os.environ.get("FERRY_ENDPOINT_ID"):
            with self.assertRaises(ValueError):
                ex.submit(square, 1)


class ModulePathTests(unittest.TestCase):
    def test_globus_module_paths_and_top_level_names(self):
        for name in ("Client", "Executor", "MPIFunction", "ShellFunction", "ShellResult"):
            self.assertIn(name, ferry_compute.__all__)
        from ferry_compute.sdk.asynchronous.compute_future import ComputeFuture as CF
        from ferry_compute.sdk.batch import Batch as B
        from ferry_compute.sdk.client import Client as C
        from ferry_compute.sdk.executor import Executor as E
        from ferry_compute.sdk.hardware_report import run_hardware_report
        from ferry_compute.sdk.mpi_function import MPIFunction as M
        from ferry_compute.sdk.shell_function import ShellFunction as S, ShellResult as R

        self.assertEqual((CF, B, C, E, M, S, R), (ComputeFuture, Batch, Client, Executor, MPIFunction, ShellFunction, ShellResult))
        self.assertTrue(callable(run_hardware_report))

    def test_serialization_strategies_are_accepted_and_ignored(self):
        from ferry_compute.serialize import CombinedCode, ComputeSerializer

        serde = ComputeSerializer(strategy_code=CombinedCode())
        with self.assertRaises(NotImplementedError):
            serde.serialize(1)
        api = FakeApi()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ex = Executor(EP, make(api), serializer=serde)
        self.assertIs(ex.serializer, serde)
        self.assertIn("serializer", str(caught[0].message))
        self.assertEqual(ex.submit(square, 5).result(timeout=10), 25)
        ex.shutdown()


class ShellTests(unittest.TestCase):
    def test_shell_function_options_and_text(self):
        sf = ShellFunction("sleep {t}", stdout="out.txt", walltime=1.5, snippet_lines=20, name="nap")
        self.assertEqual(sf.__name__, "nap")
        reg = sf._ferry_registration("naps")
        self.assertEqual(reg, {"name": "nap", "runtime": "shell", "source": "sleep {t}", "shell": {"walltime_ms": 1500, "snippet_lines": 20, "stdout": "out.txt"}, "description": "naps"})
        self.assertEqual(repr(sf), "ShellFunction(name='nap', walltime=1.5, stdout='out.txt', snippet_lines=20, cmd='sleep {t}')")
        self.assertIn("   command: sleep {t}", str(sf))
        with self.assertRaises(ValueError):
            ShellFunction("true", name="not valid")
        self.assertEqual(MPIFunction("hostname")._ferry_registration()["runtime"], "mpi")

    def test_shell_result_text(self):
        r = ShellResult("false", "", "went wrong\n", 1, "subprocess.CalledProcessError")
        self.assertEqual(str(r), "exit code: 1\n   stdout:\n\n\n   stderr:\nwent wrong\n\nexception: subprocess.CalledProcessError")
        self.assertEqual(repr(r), "ShellResult(returncode=1, cmd='false', exception_name='subprocess.CalledProcessError', stdout='', stderr='went wrong\\n')")
        self.assertEqual(str(ShellResult("echo", "a\n", "", 0)), "exit code: 0\n   stdout:\na")

    def test_a_shell_function_runs_locally_too(self):
        out = ShellFunction("echo {x}; exit 2")(x="local")
        self.assertEqual((out.stdout, out.returncode), ("local\n", 2))
        slow = ShellFunction("sleep 5", walltime=0.2)()
        self.assertEqual((slow.returncode, slow.exception_name), (124, "subprocess.TimeoutExpired"))


if __name__ == "__main__":
    unittest.main()
