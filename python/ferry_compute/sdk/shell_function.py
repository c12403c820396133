"""``globus_compute_sdk.sdk.shell_function``'s names, from ferry_compute."""

from ..shell_function import ShellFunction, ShellResult

__all__ = ["ShellFunction", "ShellResult"]
