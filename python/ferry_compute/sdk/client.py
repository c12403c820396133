"""``globus_compute_sdk.sdk.client``'s names, from ferry_compute."""

from ..client import Client

__all__ = ["Client"]
