"""What a task printed, as Ferry returns it with the task's result or exception."""

from typing import Any, Mapping, NamedTuple, Optional


class TaskOutput(NamedTuple):
    """A finished task's stdout and stderr, capped by its endpoint (64 KiB each by default).

    Where bytes were cut, the head and the tail are kept with a
    ``[ferry: N bytes of output cut]`` marker between them, and ``truncated`` is true;
    ``stdout_bytes`` and ``stderr_bytes`` count everything the task printed. Globus Compute
    returns no output at all; this is Ferry's addition.
    """

    stdout: str
    stderr: str
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    truncated: bool = False


def task_output(view: Mapping[str, Any]) -> Optional[TaskOutput]:
    """The output of a task view, or None when the task printed nothing (or has not finished)."""
    out = view.get("output")
    if not out:
        return None
    return TaskOutput(
        stdout=str(out.get("stdout") or ""),
        stderr=str(out.get("stderr") or ""),
        stdout_bytes=int(out.get("stdout_bytes") or 0),
        stderr_bytes=int(out.get("stderr_bytes") or 0),
        truncated=bool(out.get("truncated")),
    )
