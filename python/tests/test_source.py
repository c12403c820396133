import functools
import math
import os
import sys
import types
import unittest
from unittest import mock

from ferry_compute._source import LAMBDA_ENTRYPOINT, function_source
from ferry_compute.errors import FunctionNotPortable, FunctionSourceUnavailable


def run_remotely(fn, *args, **kwargs):
    """What workers/runtime/python_runner.py does: exec the source as a fresh module, call the entrypoint."""
    fs = function_source(fn)
    module = types.ModuleType("__ferry_function__")
    exec(compile(fs.source, "<ferry function>", "exec"), module.__dict__)
    return fs, module.__dict__[fs.entrypoint](*args, **kwargs)


def plain(a, b=2):
    return a * b


def tag(*labels, sep=","):
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            return sep.join(labels) + ":" + str(fn(*args, **kwargs))

        return inner

    return wrap


@tag(
    "one",
    "two",
)
@staticmethod
def decorated(x):
    return x + 1


def loud(fn):
    return lambda *a: str(fn(*a)).upper()


@loud
def decorated_without_wraps(word):
    return word


def with_odd_string():
    text = """
first line
"""
    return text.strip()


def uses_import_inside():
    import json

    return json.dumps({"ok": True})


class SourceTests(unittest.TestCase):
    def test_a_plain_function_travels_as_its_source(self):
        fs, result = run_remotely(plain, 21)
        self.assertEqual(result, 42)
        self.assertEqual(fs.entrypoint, "plain")
        self.assertTrue(fs.source.startswith("def plain(a, b=2):"))

    def test_decorators_are_dropped(self):
        fs, result = run_remotely(decorated, 1)
        self.assertNotIn("@", fs.source)
        self.assertNotIn("one", fs.source)
        self.assertEqual(result, 2)
        self.assertTrue(fs.source.startswith("def decorated(x):"))

    def test_a_decorator_without_wraps_hides_the_function(self):
        # loud returns a lambda defined in loud's body; it closes over fn, so it cannot travel.
        with self.assertRaises(FunctionNotPortable):
            function_source(decorated_without_wraps)

    def test_nested_functions_are_dedented(self):
        class Holder:
            @staticmethod
            def method_like(n):
                return n + 100

        def nested(n):
            return n - 1

        fs, result = run_remotely(nested, 5)
        self.assertEqual(result, 4)
        self.assertTrue(fs.source.startswith("def nested(n):"))
        fs, result = run_remotely(Holder.method_like, 1)
        self.assertEqual(result, 101)
        self.assertTrue(fs.source.startswith("def method_like(n):"))

    def test_a_string_less_indented_than_the_def_still_parses(self):
        class Holder:
            def odd(self):
                text = """
kept
"""
                return text.strip()

        fs, result = run_remotely(Holder.odd, None)
        self.assertEqual(result, "kept")
        _, result = run_remotely(with_odd_string)
        self.assertEqual(result, "first line")

    def test_imports_inside_the_body(self):
        self.assertEqual(run_remotely(uses_import_inside)[1], '{"ok": true}')

    def test_recursion_in_a_nested_function_is_fine(self):
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        self.assertEqual(run_remotely(fact, 5)[1], 120)

    def test_closures_are_refused_clearly(self):
        factor = 3

        def scaled(x):
            return x * factor

        with self.assertRaises(FunctionNotPortable) as caught:
            function_source(scaled)
        self.assertIn("factor", str(caught.exception))

    def test_lambdas_are_bound_to_a_name(self):
        double = lambda x: x * 2  # noqa: E731
        fs, result = run_remotely(double, 21)
        self.assertEqual(result, 42)
        self.assertEqual(fs.entrypoint, LAMBDA_ENTRYPOINT)
        self.assertEqual(fs.source, f"{LAMBDA_ENTRYPOINT} = (lambda x: x * 2)\n")

    def test_the_right_lambda_of_a_line_is_picked(self):
        inc, square = (lambda x: x + 1), (lambda y: y**2)  # noqa: E731
        self.assertEqual(run_remotely(inc, 1)[1], 2)
        self.assertEqual(run_remotely(square, 3)[1], 9)
        pairs = list(map(lambda a, b=1: a - b, [5]))
        self.assertEqual(pairs, [4])

    def test_a_lambda_inside_a_call_over_several_lines(self):
        captured = []
        submit = lambda fn, *args: captured.append(fn)  # noqa: E731
        submit(lambda s: s.upper(),
               "ignored")
        fs, result = run_remotely(captured[0], "abc")
        self.assertEqual(result, "ABC")

    def test_builtins_and_c_functions_are_imported_by_name(self):
        self.assertEqual(run_remotely(len, [1, 2, 3])[1], 3)
        self.assertEqual(run_remotely(math.sqrt, 16)[1], 4.0)
        self.assertEqual(run_remotely(os.getcwd)[1], os.getcwd())

    def test_bound_methods_are_refused(self):
        class Thing:
            def go(self):
                return 1

        with self.assertRaises(FunctionNotPortable):
            function_source(Thing().go)

    def test_the_same_source_has_the_same_key(self):
        self.assertEqual(function_source(plain).key, function_source(plain).key)
        self.assertNotEqual(function_source(plain).key, function_source(decorated).key)


class InteractiveSourceTests(unittest.TestCase):
    def define_at_prompt(self):
        namespace = {}
        exec(compile("def f(x):\n    return x + 1\n", "<stdin>", "exec"), namespace)
        return namespace["f"]

    def test_a_function_typed_at_the_prompt_without_dill(self):
        f = self.define_at_prompt()
        with mock.patch.dict(sys.modules, {"dill": None, "dill.source": None}):
            with self.assertRaises(FunctionSourceUnavailable) as caught:
                function_source(f)
        self.assertEqual(
            str(caught.exception),
            "cannot find the source of 'f' (defined at the interactive prompt?); define it in a file, or install dill",
        )

    def test_dill_is_asked_when_present(self):
        f = self.define_at_prompt()
        dill = types.ModuleType("dill")
        dill.source = types.ModuleType("dill.source")
        dill.source.getsource = lambda fn: "def f(x):\n    return x + 1\n"
        with mock.patch.dict(sys.modules, {"dill": dill, "dill.source": dill.source}):
            fs, result = run_remotely(f, 1)
        self.assertEqual(result, 2)

    def test_dill_failing_too_is_said(self):
        f = self.define_at_prompt()
        dill = types.ModuleType("dill")
        dill.source = types.ModuleType("dill.source")

        def fail(fn):
            raise OSError("could not extract source code")

        dill.source.getsource = fail
        with mock.patch.dict(sys.modules, {"dill": dill, "dill.source": dill.source}):
            with self.assertRaises(FunctionSourceUnavailable) as caught:
                function_source(f)
        self.assertIn("dill could not find it either", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
