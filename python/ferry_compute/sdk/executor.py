"""``globus_compute_sdk.sdk.executor``'s names, from ferry_compute."""

from ..executor import ComputeFuture, Executor

__all__ = ["ComputeFuture", "Executor"]
