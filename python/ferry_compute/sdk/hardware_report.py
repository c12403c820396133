"""``globus_compute_sdk.sdk.hardware_report``'s names, from ferry_compute."""

from ..hardware_report import run_hardware_report

__all__ = ["run_hardware_report"]
