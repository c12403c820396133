"""``globus_compute_sdk.sdk.batch``'s names, from ferry_compute."""

from ..batch import Batch

__all__ = ["Batch"]
