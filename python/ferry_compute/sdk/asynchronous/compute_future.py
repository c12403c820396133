"""``globus_compute_sdk.sdk.asynchronous.compute_future``'s names, from ferry_compute."""

from ...executor import ComputeFuture

__all__ = ["ComputeFuture"]
