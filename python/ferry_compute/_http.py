"""JSON over HTTP with retries, on urllib alone; and the plain transfers to and from presigned S3 URLs."""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Dict, Optional

from .errors import FerryApiError, FerryError

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Connection-level failures worth another attempt: refused, reset, timed out, cut short.
NETWORK_ERRORS = (urllib.error.URLError, ConnectionError, socket.timeout, http.client.HTTPException, TimeoutError)
USER_AGENT = "ferry-compute-python/0.1"


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped at 5 s (as the TypeScript SDK)."""
    return random.random() * min(5.0, 0.1 * 2**attempt)


def _retry_after(headers: Any) -> Optional[float]:
    try:
        value = float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def api_error(status: int, text: str) -> FerryApiError:
    """The error a failed answer describes: ``{"error": {"code", "message", ...details}}``."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        details = dict(body["error"])
        code = str(details.pop("code", "HttpError"))
        message = str(details.pop("message", ""))
        return FerryApiError(status, code, message, details)
    return FerryApiError(status, "Unauthorized" if status == 401 else "HttpError", (text or f"HTTP {status}")[:500])


class Http:
    """One Ferry API: Bearer token, JSON bodies, retries on 429, 5xx and connection errors.

    A request given an Idempotency-Key sends the same key on every attempt, so a submit whose
    answer was lost is never queued twice.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        max_attempts: int = 5,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.max_attempts = max_attempts
        self.timeout = timeout
        self._sleep = sleep

    def request(self, method: str, path: str, body: Any = None, *, idempotency_key: Optional[str] = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        attempt = 0
        while True:
            attempt += 1
            req = urllib.request.Request(self.api_url + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as res:
                    text = res.read().decode("utf-8")
                return json.loads(text) if text else None
            except urllib.error.HTTPError as err:
                text = err.read().decode("utf-8", "replace")
                # A partial submit is not retried whole: the answer names the tasks that were not queued.
                # 409 RequestInProgress: an earlier attempt of this very request is still being served.
                retryable = (err.code in RETRYABLE_STATUSES and "PartialSubmitFailure" not in text) or (
                    err.code == 409 and "RequestInProgress" in text
                )
                retry = retryable and attempt < self.max_attempts
                if not retry:
                    raise api_error(err.code, text) from None
                self._sleep(_retry_after(err.headers) or backoff(attempt))
            except NETWORK_ERRORS as err:
                if attempt >= self.max_attempts:
                    reason = getattr(err, "reason", err)
                    raise FerryError(f"cannot reach the Ferry API at {self.api_url}: {reason}") from err
                self._sleep(backoff(attempt))

    @staticmethod
    def new_idempotency_key() -> str:
        return str(uuid.uuid4())


def transfer(method: str, url: str, data: Optional[bytes] = None, *, attempts: int = 4, timeout: float = 300.0, sleep: Callable[[float], None] = time.sleep) -> bytes:
    """A plain PUT or GET of a presigned S3 URL; the signature is the authorization, so no token is sent."""
    headers: Dict[str, str] = {"User-Agent": USER_AGENT}
    if data is not None:
        headers["Content-Type"] = "application/octet-stream"
    attempt = 0
    while True:
        attempt += 1
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as res:
                return res.read()
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace")[:300]
            if err.code not in RETRYABLE_STATUSES or attempt >= attempts:
                what = "upload to" if method == "PUT" else "download from"
                raise FerryError(f"could not {what} the payload store (HTTP {err.code}): {text}") from None
            sleep(_retry_after(err.headers) or backoff(attempt))
        except NETWORK_ERRORS as err:
            if attempt >= attempts:
                raise FerryError(f"cannot reach the payload store: {getattr(err, 'reason', err)}") from err
            sleep(backoff(attempt))
