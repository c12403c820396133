import base64
import hashlib
import json
import pickle
import unittest

from ferry_compute._payload import decode_result, decode_value, encode_args, payload_bytes, remote_exception
from ferry_compute.errors import ChecksumMismatch, FerryError, TaskExecutionFailed


def view_of(data, codec="python-pickle", **extra):
    return {"codec": codec, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "data": base64.b64encode(data).decode(), **extra}


def no_fetch(url):
    raise AssertionError(f"unexpected fetch of {url}")


class Unimportable(Exception):
    pass


class ArgsTests(unittest.TestCase):
    def test_args_are_what_the_runtime_decodes(self):
        data = encode_args((1, "two", b"\x00"), {"k": [3]})
        # python_runner.decode_args: args, kwargs = pickle.loads(body)
        args, kwargs = pickle.loads(data)
        self.assertEqual((args, kwargs), ((1, "two", b"\x00"), {"k": [3]}))
        self.assertEqual(data[1], 4)  # protocol 4: readable by older workers

    def test_json_args_for_node_functions(self):
        self.assertEqual(json.loads(encode_args([40, 2], {}, "json")), {"args": [40, 2], "kwargs": {}})

    def test_unpicklable_arguments_fail_at_once(self):
        import threading

        with self.assertRaises(TypeError) as caught:
            encode_args((threading.Lock(),), {})
        self.assertIn("cannot be pickled", str(caught.exception))


class PayloadTests(unittest.TestCase):
    def test_inline_bytes_are_checked(self):
        data = pickle.dumps({"a": 1})
        self.assertEqual(payload_bytes(view_of(data), no_fetch), data)
        bad = dict(view_of(data), sha256="0" * 64)
        with self.assertRaises(ChecksumMismatch):
            payload_bytes(bad, no_fetch)

    def test_url_payloads_are_fetched_and_checked(self):
        data = b"x" * 1000
        view = {"codec": "python-pickle", "size": 1000, "sha256": hashlib.sha256(data).hexdigest(), "url": "http://s3/presigned"}
        self.assertEqual(payload_bytes(view, lambda url: data), data)
        with self.assertRaises(ChecksumMismatch):
            payload_bytes(view, lambda url: data[:-1] + b"y")

    def test_results_by_codec(self):
        self.assertEqual(decode_result(view_of(pickle.dumps([1, 2])), no_fetch), [1, 2])
        self.assertEqual(decode_value(b'{"a": 1}', "json"), {"a": 1})
        self.assertEqual(decode_value(b"\xff\x0d", "node-v8"), b"\xff\x0d")
        self.assertEqual(decode_result({"codec": "json", "size": 2, "sha256": "x", "value": 42}, no_fetch), 42)

    def test_a_result_that_cannot_be_unpickled_says_why(self):
        with self.assertRaises(FerryError) as caught:
            decode_value(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x04nope\x94\x8c\x01X\x94\x93\x94.", "python-pickle")
        self.assertIn("cannot be unpickled", str(caught.exception))


class RemoteExceptionTests(unittest.TestCase):
    TB = 'Traceback (most recent call last):\n  File "<ferry function>", line 2, in divide\n    return a / b\nZeroDivisionError: division by zero\n'

    def test_a_builtin_exception_is_reraised_as_itself_with_the_remote_traceback(self):
        view = {"type": "ZeroDivisionError", "message": "division by zero", "traceback": self.TB, "payload": view_of(pickle.dumps(ZeroDivisionError("division by zero")))}
        exc = remote_exception(view, "t-1", no_fetch)
        # Both `except ZeroDivisionError` and `except TaskExecutionFailed` catch it.
        self.assertIsInstance(exc, ZeroDivisionError)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual(type(exc).__name__, "ZeroDivisionError")
        self.assertEqual(str(exc), "division by zero")
        self.assertEqual(exc.args, ("division by zero",))
        self.assertEqual(exc.remote_data, self.TB)
        self.assertEqual((exc.remote_type, exc.message), ("ZeroDivisionError", "division by zero"))
        self.assertEqual(exc.remote_traceback, self.TB)
        self.assertEqual(exc.ferry_task_id, "t-1")
        if hasattr(exc, "add_note"):  # Python 3.11+
            self.assertIn("return a / b", exc.__notes__[0])
            self.assertIn("Remote traceback (Ferry task t-1)", exc.__notes__[0])

    def test_no_payload_gives_task_execution_failed(self):
        exc = remote_exception({"type": "TaskTimeout", "message": "over 1000 ms", "traceback": "TaskTimeout: over 1000 ms\n"}, "t-2", no_fetch)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual((exc.remote_type, exc.message, exc.task_id), ("TaskTimeout", "over 1000 ms", "t-2"))
        # Globus's str(): the remote data, indented, after a newline.
        self.assertEqual(str(exc), "\n TaskTimeout: over 1000 ms\n")
        self.assertEqual(exc.remote_data, "TaskTimeout: over 1000 ms\n")
        self.assertEqual(pickle.loads(pickle.dumps(exc)).remote_type, "TaskTimeout")

    def test_a_class_the_client_cannot_import_gives_task_execution_failed(self):
        data = pickle.dumps(Unimportable("boom"))
        data = data.replace(Unimportable.__module__.encode(), b"not_a_module_here")
        exc = remote_exception({"type": "Unimportable", "message": "boom", "traceback": "tb", "payload": view_of(data)}, "t-3", no_fetch)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual((exc.remote_type, exc.message, exc.remote_traceback), ("Unimportable", "boom", "tb"))

    def test_a_corrupt_payload_falls_back_to_the_description(self):
        payload = dict(view_of(pickle.dumps(ValueError("x"))), sha256="0" * 64)
        exc = remote_exception({"type": "ValueError", "message": "x", "traceback": "tb", "payload": payload}, "t-4", no_fetch)
        self.assertIsInstance(exc, TaskExecutionFailed)

    def test_system_exit_is_not_raised_in_the_client(self):
        payload = view_of(pickle.dumps(SystemExit(3)))
        exc = remote_exception({"type": "SystemExit", "message": "3", "traceback": "tb", "payload": payload}, "t-5", no_fetch)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual(exc.remote_type, "SystemExit")

    def test_an_exception_payload_by_url(self):
        data = pickle.dumps(KeyError("k"))
        payload = {"codec": "python-pickle", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "url": "http://s3/exc"}
        exc = remote_exception({"type": "KeyError", "message": "'k'", "traceback": "tb", "payload": payload}, "t-6", lambda url: data)
        self.assertIsInstance(exc, KeyError)
        self.assertIsInstance(exc, TaskExecutionFailed)
        self.assertEqual(str(exc), "'k'")


if __name__ == "__main__":
    unittest.main()
