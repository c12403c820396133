"""A function as source plus entrypoint, so it runs on a worker whose Python differs from the client's.

The worker (workers/runtime/python_runner.py) executes the source as a fresh module and calls the
entrypoint. So the source must define the function at its top level and need nothing of the
client's module: imports go inside the body, as Globus Compute asks too.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import textwrap
import types
from typing import Callable, List, Optional, Tuple

from .errors import FunctionNotPortable, FunctionSourceUnavailable

# The name a lambda is bound to in the source sent to the worker.
LAMBDA_ENTRYPOINT = "_ferry_lambda"
# Where code typed at the prompt, or run by exec, says it comes from; there is no file to read.
INTERACTIVE_FILENAMES = ("<stdin>", "<string>", "<console>", "<input>")


class FunctionSource:
    """What POST /v1/functions takes for a python function."""

    __slots__ = ("name", "source", "entrypoint")

    def __init__(self, name: str, source: str, entrypoint: str):
        self.name = name
        self.source = source
        self.entrypoint = entrypoint

    @property
    def key(self) -> str:
        """Identifies the registration: the same source and entrypoint give the same function id."""
        return hashlib.sha256(f"{self.entrypoint}\0{self.source}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"FunctionSource(name={self.name!r}, entrypoint={self.entrypoint!r}, {len(self.source)} chars)"


def function_source(fn: Callable) -> FunctionSource:
    """The source of `fn`, dedented, decorators dropped, with the name to call it by."""
    if isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType)) or (
        not isinstance(fn, (types.FunctionType, types.MethodType)) and _importable(fn)
    ):
        return _import_shim(fn)
    if isinstance(fn, types.MethodType):
        raise FunctionNotPortable(f"{fn.__qualname__} is a bound method; submit a plain function and pass the object as an argument")
    if not isinstance(fn, types.FunctionType):
        raise FunctionNotPortable(f"{fn!r} is not a function; Ferry runs functions defined with def (or lambda)")
    fn = inspect.unwrap(fn)
    _check_closure(fn)
    raw = _raw_source(fn)
    if fn.__name__ == "<lambda>":
        return _lambda_source(fn, raw)
    return _def_source(fn, raw)


def _importable(fn: Callable) -> bool:
    """A callable the worker can import by name (a builtin, a C function): no source needed."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return False
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return False
    return obj is fn


def _import_shim(fn: Callable) -> FunctionSource:
    module, qualname = fn.__module__ or "builtins", fn.__qualname__
    if not _importable(fn):
        raise FunctionNotPortable(f"{fn!r} has no source and cannot be imported by name on the worker")
    entry = "_ferry_" + qualname.replace(".", "_")
    source = (
        f"def {entry}(*args, **kwargs):\n"
        f"    import importlib\n"
        f"    target = importlib.import_module({module!r})\n"
        f"    for part in {qualname!r}.split('.'):\n"
        f"        target = getattr(target, part)\n"
        f"    return target(*args, **kwargs)\n"
    )
    return FunctionSource(qualname, source, entry)


def _check_closure(fn: types.FunctionType) -> None:
    # A nested function that refers to itself (recursion) has its own name as a free variable: fine.
    free = [name for name in fn.__code__.co_freevars if name != fn.__name__]
    if free:
        names = ", ".join(free)
        raise FunctionNotPortable(
            f"{fn.__qualname__!r} uses variables of the function around it ({names}); they do not travel with the "
            f"source: pass them as arguments, or define the function at the top level of a module"
        )


def _raw_source(fn: types.FunctionType) -> str:
    filename = fn.__code__.co_filename
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError) as exc:
        first_error = exc
    try:
        import dill.source  # type: ignore[import-not-found]  # optional: reads the interactive session's history
    except ImportError:
        dill_note = "install dill"
    else:
        try:
            return dill.source.getsource(fn)
        except Exception as exc:  # noqa: BLE001 - dill raises several kinds; all mean the same here
            dill_note = f"dill could not find it either: {exc}"
    if filename in INTERACTIVE_FILENAMES:
        where = "defined at the interactive prompt?"
    else:
        where = f"defined in {filename}: {first_error}"
    raise FunctionSourceUnavailable(f"cannot find the source of {fn.__name__!r} ({where}); define it in a file, or {dill_note}") from None


def _parse(raw: str) -> Tuple[str, ast.Module]:
    """Dedented source and its tree; a body whose strings are less indented than the def is wrapped instead."""
    source = textwrap.dedent(raw)
    try:
        return source, ast.parse(source)
    except SyntaxError:
        pass
    # `if True:` keeps the original indentation legal and still defines the name at module level.
    source = "if True:\n" + raw
    try:
        return source, ast.parse(source)
    except SyntaxError as exc:
        raise FunctionSourceUnavailable(f"the source found for the function does not parse: {exc}") from None


def _def_source(fn: types.FunctionType, raw: str) -> FunctionSource:
    source, tree = _parse(raw)
    body = tree.body
    if len(body) == 1 and isinstance(body[0], ast.If):
        body = body[0].body
    defs = [n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    node = next((n for n in defs if n.name == fn.__name__), defs[0] if defs else None)
    if node is None:
        raise FunctionSourceUnavailable(f"the source found for {fn.__name__!r} defines no function")
    if node.decorator_list:
        # The decorators run in the client's module, with its names; the worker gets the plain function.
        lines = source.splitlines(keepends=True)
        first = min(d.lineno for d in node.decorator_list) - 1
        del lines[first : node.lineno - 1]
        source = "".join(lines)
        if source.startswith("if True:\n"):
            source = _reindent(source)
    if not source.endswith("\n"):
        source += "\n"
    return FunctionSource(fn.__name__, source, node.name)


def _reindent(source: str) -> str:
    """Try to drop the `if True:` wrapper once the decorators are gone; keep it if dedenting breaks the code."""
    inner = textwrap.dedent(source[len("if True:\n") :])
    try:
        ast.parse(inner)
        return inner
    except SyntaxError:
        return source


def _lambda_source(fn: types.FunctionType, raw: str) -> FunctionSource:
    """`getsource` of a lambda gives its whole line(s); pick out the lambda that is `fn` and bind it to a name."""
    candidates: List[Tuple[str, Optional[types.CodeType]]] = []
    start = raw.find("lambda")
    while start >= 0:
        segment = _longest_lambda(raw, start)
        if segment is not None:
            candidates.append(segment)
        start = raw.find("lambda", start + 1)
    code = fn.__code__
    arity = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    signature = code.co_varnames[:arity]
    same_args = [(s, c) for s, c in candidates if c is not None and c.co_varnames[:arity] == signature and c.co_argcount == code.co_argcount]
    exact = [(s, c) for s, c in same_args if c.co_code == code.co_code and c.co_consts == code.co_consts]
    chosen = exact or same_args
    texts = list(dict.fromkeys(s for s, _ in chosen))
    if len(texts) != 1:
        problem = "finds no lambda" if not texts else "finds several lambdas that could be it"
        raise FunctionSourceUnavailable(f"the source line of this lambda {problem}; define the function with def")
    return FunctionSource("<lambda>", f"{LAMBDA_ENTRYPOINT} = ({texts[0]})\n", LAMBDA_ENTRYPOINT)


def _longest_lambda(raw: str, start: int) -> Optional[Tuple[str, Optional[types.CodeType]]]:
    """The longest text from `start` that parses as a lambda expression (the line goes on after it)."""
    for end in range(len(raw), start, -1):
        text = raw[start:end].strip()
        if not text.startswith("lambda"):
            continue
        try:
            tree = ast.parse(f"({text})", mode="eval")
        except SyntaxError:
            continue
        if not isinstance(tree.body, ast.Lambda):
            continue
        compiled = compile(tree, "<lambda>", "eval")
        inner = next((c for c in compiled.co_consts if isinstance(c, types.CodeType)), None)
        return text, inner
    return None


__all__ = ["FunctionSource", "function_source", "LAMBDA_ENTRYPOINT"]
