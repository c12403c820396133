"""The module paths of ``globus_compute_sdk.sdk``, for scripts that import from them:
``from ferry_compute.sdk.executor import ComputeFuture`` and so on. Each re-exports ferry_compute's."""
