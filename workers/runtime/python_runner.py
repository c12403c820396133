"""Ferry's python runtime: a long-lived process, spawned by RuntimePool, that runs one task at a time.

Stdlib only. Protocol (see frames.ts): requests arrive on fd 3, replies leave on fd 4; each frame is
a u32be length, a u32be header length, a JSON header and the raw body. fd 1 and 2 belong to the user.
"""

import asyncio
import builtins
import inspect
import json
import linecache
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import traceback
import types

try:
    import resource as _resource
except ImportError:  # not Unix
    _resource = None

REQUEST_FD = 3
REPLY_FD = 4
MODULE_NAME = "__ferry_function__"
FUNCTION_FILENAME = "<ferry function>"
# Protocol 4 reads on every python >= 3.4; 5 would shut out older clients for no gain here.
PICKLE_PROTOCOL = 4
OWN_GROUP = "--own-group" in sys.argv
# Taken before any task runs: a task that patches json, struct or os must not break the protocol.
_json_dumps, _json_loads = json.dumps, json.loads
_pack, _unpack = struct.pack, struct.unpack
_os_read, _os_write = os.read, os.write

# Without cgroups the pool finds a task's processes by walking /proc from this one: as a child
# subreaper (prctl PR_SET_CHILD_SUBREAPER), orphaned grandchildren (a double fork, setsid) are
# re-parented here rather than to init, so none escapes the walk. The pool replaces this process
# after killing them, so their zombies go with it.
if "--subreaper" in sys.argv:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001 - not Linux, or no libc: the /proc walk still finds direct children
        pass

# A subprocess of the task must not hold the channel open after this process dies.
for _fd in (REQUEST_FD, REPLY_FD):
    os.set_inheritable(_fd, False)


def die():
    """The pool is gone (its end of the pipe closed): stop at once, even in the middle of a task."""
    if OWN_GROUP:
        try:
            os.killpg(os.getpid(), signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)


def read_exact(n):
    chunks = []
    while n:
        chunk = _os_read(REQUEST_FD, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_requests(inbox):
    # A thread, so the parent's death is noticed while user code holds the main thread.
    try:
        while True:
            prefix = read_exact(4)
            if prefix is None:
                break
            frame = read_exact(_unpack(">I", prefix)[0])
            if frame is None:
                break
            head_length = _unpack(">I", frame[:4])[0]
            inbox.put((_json_loads(frame[4 : 4 + head_length]), frame[4 + head_length :]))
    finally:
        die()


def send(header, body=b""):
    head = _json_dumps(header).encode()
    data = memoryview(_pack(">II", 4 + len(head) + len(body), len(head)) + head + body)
    while data:
        written = _os_write(REPLY_FD, data)
        data = data[written:]


class FerryTaskError(Exception):
    """A failure of the runtime rather than of the user's code: reported by type and message."""

    def __init__(self, type_name, message):
        super().__init__(message)
        self.type_name = type_name


def decode_args(codec, body):
    try:
        if codec == "python-pickle":
            args, kwargs = pickle.loads(body) if body else ((), {})
        elif codec == "json":
            decoded = _json_loads(body) if body else {}
            args, kwargs = decoded.get("args") or [], decoded.get("kwargs") or {}
        else:
            raise ValueError(f"the python runtime cannot read the {codec} codec; use python-pickle or json")
        if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
            raise ValueError("arguments must be (args sequence, kwargs dict)")
        return tuple(args), kwargs
    except Exception as exc:
        raise FerryTaskError("DeserializationError", f"the arguments cannot be decoded with the {codec} codec: {exc}") from exc


def encode_result(codec, result):
    try:
        if codec == "python-pickle":
            return pickle.dumps(result, protocol=PICKLE_PROTOCOL)
        # allow_nan=False: NaN and Infinity are not JSON, and a JS client could not parse them.
        return _json_dumps(result, allow_nan=False, separators=(",", ":")).encode()
    except Exception as exc:
        what = "pickled" if codec == "python-pickle" else "encoded as JSON"
        hint = ""
        if MODULE_NAME in str(exc):
            hint = "; a class defined in the function's source cannot be unpickled by the client, so return builtin types or classes from an importable module"
        raise FerryTaskError("SerializationError", f"the result ({type(result).__name__}) cannot be {what}: {exc}{hint}") from exc


def type_name(exc):
    cls = type(exc)
    if cls.__module__ in ("builtins", MODULE_NAME, "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def format_traceback(exc):
    # Skip the runner's own frames; they say nothing about the user's code.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def exception_payload(exc):
    """The pickled exception, so a client can re-raise the same type; None when it will not round-trip."""
    try:
        data = pickle.dumps(exc, protocol=PICKLE_PROTOCOL)
        pickle.loads(data)
        return data
    except Exception:
        return None


def set_data_limit(limit):
    """Without cgroups the pool sends each task's cap (bytes): this process lowers its own RLIMIT_DATA
    soft limit to it before the task runs (never above the hard limit it was started with), and
    main() raises it back to the hard limit after the reply, so the next request is read uncapped."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0 or _resource is None:
        return
    try:
        _soft, hard = _resource.getrlimit(_resource.RLIMIT_DATA)
        if hard != _resource.RLIM_INFINITY:
            limit = min(limit, hard)
        _resource.setrlimit(_resource.RLIMIT_DATA, (limit, hard))
    except (OSError, ValueError) as exc:
        raise FerryTaskError("MemoryLimitUnavailable", f"the task's memory cap of {limit >> 20} MB could not be set ({exc}); the task did not run") from None


def reset_data_limit():
    if _resource is None:
        return
    try:
        _soft, hard = _resource.getrlimit(_resource.RLIMIT_DATA)
        _resource.setrlimit(_resource.RLIMIT_DATA, (hard, hard))
    except (OSError, ValueError):
        pass


def call(header, body):
    set_data_limit(header.get("dataLimit"))
    codec = header["codec"]
    args, kwargs = decode_args(codec, body)
    source = header["source"]
    entrypoint = header.get("entrypoint")
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = FUNCTION_FILENAME
    module.__builtins__ = builtins
    # linecache, so tracebacks show the user's lines; sys.modules while the code runs, as some
    # library code (dataclasses, typing) looks a class's module up there.
    linecache.cache[FUNCTION_FILENAME] = (len(source), None, source.splitlines(True), FUNCTION_FILENAME)
    sys.modules[MODULE_NAME] = module
    try:
        exec(compile(source, FUNCTION_FILENAME, "exec"), module.__dict__)
        fn = module.__dict__.get(entrypoint)
        if not callable(fn):
            raise FerryTaskError("EntrypointNotFound", f"the source defines no function named {entrypoint!r}")
        result = fn(*args, **kwargs)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    finally:
        # Gone before anything is pickled: a class defined in the source would pickle by a
        # reference to this module, which no client can import.
        sys.modules.pop(MODULE_NAME, None)
    return encode_result(codec, result)


def run_task(header, body):
    codec = header.get("codec")
    try:
        return {"ok": True, "codec": codec}, call(header, body)
    except FerryTaskError as exc:
        message = str(exc)
        return {"ok": False, "error": {"type": exc.type_name, "message": message, "traceback": f"{exc.type_name}: {message}\n"}}, b""
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are the task's failure too
        reply = {"ok": False, "error": {"type": type_name(exc), "message": str(exc), "traceback": format_traceback(exc)}}
        payload = exception_payload(exc) if codec == "python-pickle" else None
        if payload is not None:
            reply["payloadCodec"] = "python-pickle"
            return reply, payload
        return reply, b""
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def end_output(mark):
    """Marks the end of the task's output in fd 1 and 2, after all it wrote there (see node_runner.js)."""
    if not mark:
        return
    data = mark.encode()
    for fd in (1, 2):
        try:
            view = memoryview(data)
            while view:
                view = view[_os_write(fd, view) :]
        except OSError:
            pass  # the task closed it: the pool stops waiting after a moment


def main():
    inbox = queue.Queue()
    threading.Thread(target=read_requests, args=(inbox,), name="ferry-requests", daemon=True).start()
    send({"op": "ready", "pid": os.getpid(), "runtime": "python", "version": sys.version.split()[0], "executable": sys.executable})
    while True:
        header, body = inbox.get()
        reply, payload = run_task(header, body)
        end_output(header.get("endMark"))
        reply.update(op="reply", id=header.get("id"))
        send(reply, payload)
        reset_data_limit()


if __name__ == "__main__":
    main()
