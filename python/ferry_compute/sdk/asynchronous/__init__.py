"""``globus_compute_sdk.sdk.asynchronous``'s module path."""
