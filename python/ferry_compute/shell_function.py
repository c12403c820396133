"""ShellFunction, ShellResult and MPIFunction, with the signatures of ``globus_compute_sdk``'s.

Submitted to an Executor (or registered with ``Client.register_function``), a ShellFunction is
registered as a Ferry function of runtime ``shell`` (an MPIFunction: ``mpi``) whose source is the
command template; the endpoint's agent runs it with ``/bin/bash -c`` in a fresh directory, with no
Python on the endpoint needed, and the result comes back as a ShellResult. ``{name}`` fields of
the command are filled from the task's keyword arguments, as ``str.format`` does.
"""

from __future__ import annotations

import keyword
import math
from typing import Any, Dict, Optional, Union

SHELL_RESULT_KEYS = frozenset({"cmd", "stdout", "stderr", "returncode", "exception_name"})


class ShellResult:
    """What a ShellFunction returns: the formatted ``cmd``, its ``returncode``, the last
    ``snippet_lines`` of ``stdout`` and ``stderr``, and ``exception_name`` (None, or
    ``"subprocess.CalledProcessError"`` for a non-zero exit, ``"subprocess.TimeoutExpired"`` when
    the walltime passed, with returncode 124).
    """

    def __init__(self, cmd: str, stdout: str, stderr: str, returncode: int, exception_name: Optional[str] = None):
        self.cmd = cmd
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode
        self.exception_name = exception_name

    @classmethod
    def _from_dict(cls, value: Dict[str, Any]) -> "ShellResult":
        return cls(
            cmd=str(value.get("cmd") or ""),
            stdout=str(value.get("stdout") or ""),
            stderr=str(value.get("stderr") or ""),
            returncode=int(value.get("returncode") or 0),
            exception_name=value.get("exception_name"),
        )

    def _as_dict(self) -> Dict[str, Any]:
        return {"cmd": self.cmd, "stdout": self.stdout, "stderr": self.stderr, "returncode": self.returncode, "exception_name": self.exception_name}

    def __str__(self) -> str:
        rc = self.returncode
        msg = f"exit code: {rc}\n   stdout:\n{_tail(self.stdout, 'stdout')}"
        if rc != 0:
            msg += f"\n\n   stderr:\n{_tail(self.stderr, 'stderr')}"
            if self.exception_name:
                msg += f"\n\nexception: {self.exception_name}"
        return msg

    def __repr__(self) -> str:
        parts = [f"returncode={self.returncode!r}", f"cmd={self.cmd!r}"]
        if self.exception_name is not None:
            parts.append(f"exception_name={self.exception_name!r}")
        parts += [f"stdout={self.stdout!r}", f"stderr={self.stderr!r}"]
        return f"{type(self).__name__}({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShellResult) and self._as_dict() == other._as_dict()

    __hash__ = None  # type: ignore[assignment]


def _tail(text: str, name: str) -> str:
    """The last 10 lines (within the last 1,024 characters), saying so when that is not all of it."""
    whole = text.lstrip("\n").rstrip()
    tail = "\n".join(whole[-1024:].splitlines()[-10:])
    if tail != whole:
        tail = f"[... truncated; see .{name} for full output ...]\n{tail}"
    return tail


class ShellFunction:
    """A command line to run on the endpoint: ``ShellFunction("echo {message}")``.

    ``stdout`` / ``stderr``: files (relative to the task's directory, or absolute) to which the
    streams are also written; ``walltime``: seconds after which the command is stopped
    (returncode 124, ``exception_name`` ``"subprocess.TimeoutExpired"``); ``snippet_lines``: how
    many trailing lines of each stream the result carries; ``name``: the registered function's
    name; ``return_dict``: return a plain dict instead of a ShellResult.
    """

    _ferry_runtime = "shell"

    def __init__(
        self,
        cmd: str,
        stdout: Optional[str] = None,
        stderr: Optional[str] = None,
        walltime: Optional[float] = None,
        snippet_lines: int = 1000,
        name: Optional[str] = None,
        return_dict: bool = False,
    ):
        if not isinstance(cmd, str):
            raise TypeError(f"cmd must be a str, not {type(cmd).__name__}")
        self.cmd = cmd
        self.stdout = stdout
        self.stderr = stderr
        if walltime is not None and walltime < 0:
            raise ValueError(f"Negative walltime={walltime} is not allowed")
        self.walltime = walltime
        self.snippet_lines = snippet_lines
        name = name or type(self).__name__
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        self.__name__ = self.valid_function_name(name)
        self.return_dict = return_dict

    def valid_function_name(self, v: str) -> str:
        if not (v.isidentifier() and not keyword.iskeyword(v)):
            raise ValueError("Function name must be valid python name")
        return v

    def _ferry_shell_options(self) -> Dict[str, Any]:
        """The `shell` options of POST /v1/functions."""
        options: Dict[str, Any] = {}
        if self.walltime:
            options["walltime_ms"] = max(1, int(math.ceil(float(self.walltime) * 1000)))
        if self.snippet_lines is not None and self.snippet_lines != 1000:
            options["snippet_lines"] = int(self.snippet_lines)
        if self.stdout is not None:
            options["stdout"] = str(self.stdout)
        if self.stderr is not None:
            options["stderr"] = str(self.stderr)
        return options

    def _ferry_registration(self, description: Optional[str] = None) -> Dict[str, Any]:
        body: Dict[str, Any] = {"name": self.__name__, "runtime": self._ferry_runtime, "source": self.cmd}
        options = self._ferry_shell_options()
        if options:
            body["shell"] = options
        if description:
            body["description"] = str(description)[:1024]
        return body

    def __str__(self) -> str:
        parts = []
        if self.walltime is not None:
            parts.append(f" wall time: {self.walltime}")
        if self.stdout is not None:
            parts.append(f"    stdout: {self.stdout!r}")
        if self.stderr is not None:
            parts.append(f"    stderr: {self.stderr!r}")
        parts.append(f"     lines: {self.snippet_lines!r}")
        header = "   command: "
        whole = self.cmd.strip()
        cmd = "\n".join(whole[:1024].splitlines()[:10])
        if cmd != whole:
            cmd += "\n[... truncated; see .cmd for full script ...]"
        if "\n" in cmd:
            indent = "\n" + len(header) * " "
            cmd = cmd.strip().replace("\n", indent)
            cmd = f"-----{indent}{cmd}{indent}-----"
        parts.append(f"{header}{cmd}")
        return f"{self.__name__}\n" + "\n".join(parts)

    def __repr__(self) -> str:
        parts = []
        if self.__name__ != type(self).__name__:
            parts.append(f"name={self.__name__!r}")
        if self.walltime is not None:
            parts.append(f"walltime={self.walltime!r}")
        if self.stdout is not None:
            parts.append(f"stdout={self.stdout!r}")
        if self.stderr is not None:
            parts.append(f"stderr={self.stderr!r}")
        parts.append(f"snippet_lines={self.snippet_lines}")
        parts.append(f"cmd={self.cmd!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _command_line(self, **kwargs: Any) -> str:
        return self.cmd.format(**kwargs)

    def __call__(self, **kwargs: Any) -> Union[ShellResult, Dict[str, Any]]:
        """Run the command here, as the endpoint would (for trying a ShellFunction out locally)."""
        return self.execute_cmd_line(self._command_line(**kwargs))

    def execute_cmd_line(self, cmd: str) -> Union[ShellResult, Dict[str, Any]]:
        import os
        import subprocess
        import tempfile

        exception_name = None
        with tempfile.TemporaryDirectory(prefix="ferry-shell-") as scratch:
            out_path = self.stdout or os.path.join(scratch, "stdout")
            err_path = self.stderr or os.path.join(scratch, "stderr")
            for path in (out_path, err_path):
                if os.path.dirname(path):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(out_path, "a+") as out, open(err_path, "a+") as err:
                proc = subprocess.Popen(cmd, shell=True, executable="/bin/bash", stdin=subprocess.DEVNULL, stdout=out, stderr=err)
                try:
                    returncode = proc.wait(timeout=self.walltime)
                    if returncode != 0:
                        exception_name = "subprocess.CalledProcessError"
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    returncode = 124
                    exception_name = "subprocess.TimeoutExpired"
                stdout, stderr = self._snippet(out), self._snippet(err)
        result = {"cmd": cmd, "stdout": stdout, "stderr": stderr, "returncode": returncode, "exception_name": exception_name}
        return result if self.return_dict else ShellResult(**result)

    def _snippet(self, file_obj: Any) -> str:
        file_obj.seek(0, 0)
        return "".join(file_obj.readlines()[-self.snippet_lines :])

    # Globus's helpers of the same names (used when the command runs here).
    get_snippet = _snippet

    def open_std_fd(self, fname: Optional[str], mode: str = "a+") -> Any:
        import os

        if fname is None:
            return None
        if os.path.dirname(fname):
            os.makedirs(os.path.dirname(fname), exist_ok=True)
        return open(fname, mode)

    def get_and_close_streams(self, stdout: Any, stderr: Any) -> "tuple[str, str]":
        snippets = self._snippet(stdout), self._snippet(stderr)
        stdout.close()
        stderr.close()
        return snippets


class MPIFunction(ShellFunction):
    """A ShellFunction run under the endpoint's MPI launcher (``$PARSL_MPI_PREFIX <cmd>``).

    The ranks come from the Executor's ``resource_specification``
    (``{"num_nodes": 1, "ranks_per_node": 2}``, or ``num_ranks``); the launcher is ``mpiexec``
    on a plain machine, ``srun`` inside a Slurm block.
    """

    _ferry_runtime = "mpi"

    def _command_line(self, **kwargs: Any) -> str:
        return "$PARSL_MPI_PREFIX " + self.cmd.format(**kwargs)


def shell_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Keyword arguments of a shell task as JSON: strings and integers as they are, anything else
    as Python's ``str()`` of it (what ``str.format`` would insert), so ``True`` stays ``True``."""
    out: Dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


__all__ = ["MPIFunction", "ShellFunction", "ShellResult"]
