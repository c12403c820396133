"""``globus_compute_sdk.sdk.mpi_function``'s names, from ferry_compute."""

from ..shell_function import MPIFunction

__all__ = ["MPIFunction"]
