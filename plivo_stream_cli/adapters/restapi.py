"""The Plivo REST client: credentials, one generic request helper, retries and error mapping.

I/O lives in `PlivoClient` (httpx); everything else here is pure and tested without a network:
building account paths, parsing Retry-After, the retry delays, and turning an HTTP answer into the
right `PstreamError`. Any endpoint (Stream, Application, Call) goes through `PlivoClient.request`.

The auth token is only ever handed to httpx's Basic auth: it is kept out of reprs, log lines and
error messages (a message that somehow contains it is scrubbed before it is raised).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from plivo_stream_cli import __version__
from plivo_stream_cli.errors import (
    ApiFailedError,
    ApiRefusedError,
    ConfigError,
    NetworkError,
    PstreamError,
    UsageError,
)

# Each request and retry, at DEBUG: `pstream -v` shows them (`output.show_adapter_logs`).
log = logging.getLogger("pstream.rest")

DEFAULT_API_URL = "https://api.plivo.com"
AUTH_ID_ENV = "PLIVO_AUTH_ID"
AUTH_TOKEN_ENV = "PLIVO_AUTH_TOKEN"
API_URL_ENV = "PLIVO_API_URL"
USER_AGENT = f"pstream/{__version__}"
# Safe to send twice: a retry cannot start a second stream or place a second call.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_MAX_ERROR_TEXT = 200


@dataclass(frozen=True)
class Credentials:
    """A Plivo Auth ID and Auth Token; the token never appears in repr()."""

    auth_id: str
    auth_token: str = field(repr=False)

    @classmethod
    def resolve(
        cls,
        auth_id: str | None,
        auth_token: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> Credentials:
        """Flags first, then PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN; ConfigError naming what's missing."""
        env = os.environ if environ is None else environ
        auth_id = auth_id or env.get(AUTH_ID_ENV) or None
        auth_token = auth_token or env.get(AUTH_TOKEN_ENV) or None
        missing = [
            name
            for name, value in ((AUTH_ID_ENV, auth_id), (AUTH_TOKEN_ENV, auth_token))
            if not value
        ]
        if missing:
            raise ConfigError(
                f"missing Plivo credentials: set {' and '.join(missing)} "
                "(or pass --auth-id/--auth-token)"
            )
        assert auth_id is not None and auth_token is not None
        return cls(auth_id, auth_token)


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are retried after 429, 5xx and connection errors.

    `attempts` counts every try (1 = no retry). The wait doubles from `backoff`; a Retry-After from
    the server replaces it. Every wait is capped at `max_wait` so a server cannot park the CLI.
    """

    attempts: int = 4
    backoff: float = 0.5
    max_wait: float = 30.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        wait = parse_retry_after(retry_after) if retry_after else None
        if wait is None:
            wait = self.backoff * 2 ** (attempt - 1)
        return max(0.0, min(wait, self.max_wait))


def parse_retry_after(value: str, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date; None when unreadable."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def account_path(auth_id: str, *parts: str) -> str:
    """`/v1/Account/{auth_id}/Call/{uuid}/Stream/`: each part percent-quoted, trailing slash kept.

    Plivo's API answers a redirect (or 404) without the trailing slash, so it is always added.
    """
    segments = [quote(part, safe="") for part in (auth_id, *parts)]
    if any(not segment or segment in (".", "..") for segment in segments):
        raise UsageError(f"bad identifier in API path: {'/'.join(parts)!r}")
    return "/v1/Account/" + "/".join(segments) + "/"


def validate_api_url(url: str) -> str:
    """The API base URL without a trailing slash; UsageError unless http(s)://host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--api-url must be an http(s):// URL, got {url!r}")
    return url.rstrip("/")


def error_text(body: str) -> str:
    """The API's own words for an error: its `error` (or `message`) field, else the raw text."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("error", "message"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value
            if value:
                return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = " ".join(body.split())
    return text[:_MAX_ERROR_TEXT] + ("..." if len(text) > _MAX_ERROR_TEXT else "")


def api_error(
    status: int, body: str, *, not_found: str = "not found", attempts: int = 1
) -> PstreamError:
    """The PstreamError for a non-2xx answer (after any retries)."""
    detail = error_text(body)
    suffix = f": {detail}" if detail else ""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if status == 401:
        return ConfigError(f"bad credentials: Plivo refused the Auth ID / Auth Token (401){suffix}")
    if status == 404:
        return ApiRefusedError(f"{not_found} (404){suffix}")
    if status == 429:
        return ApiRefusedError(f"rate limited by the Plivo API (429){tries}{suffix}")
    if 400 <= status < 500:
        return ApiRefusedError(f"the Plivo API refused the request ({status}){suffix}")
    if status >= 500:
        return ApiFailedError(f"the Plivo API failed ({status}){tries}{suffix}")
    return ApiFailedError(f"unexpected answer from the Plivo API ({status}){suffix}")


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass(frozen=True)
class ApiResponse:
    """A successful answer: the status and the body exactly as the API sent it."""

    status_code: int
    text: str

    def json(self) -> Any:
        """The body parsed (None for an empty body such as a 204)."""
        if not self.text.strip():
            return None
        try:
            return json.loads(self.text)
        except ValueError:
            raise ApiFailedError(
                f"the Plivo API answered {self.status_code} with a body that is not JSON: "
                f"{error_text(self.text)}"
            ) from None


class PlivoClient:
    """A small synchronous client for Plivo's REST API (`/v1/Account/{auth_id}/...`)."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.credentials = credentials
        self.api_url = validate_api_url(api_url)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=self.api_url,
            auth=httpx.BasicAuth(credentials.auth_id, credentials.auth_token),
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
        )

    def __enter__(self) -> PlivoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        *parts: str,
        json: Mapping[str, Any] | None = None,
        not_found: str = "not found",
        retry: bool | None = None,
    ) -> ApiResponse:
        """Send `method` to the account path built from `parts`; return the 2xx answer.

        Retries (by default only for idempotent methods) on 429, 5xx and transport errors.
        Raises ConfigError (401), ApiRefusedError (4xx), ApiFailedError (5xx), NetworkError.
        """
        method = method.upper()
        path = account_path(self.credentials.auth_id, *parts)
        retrying = method in IDEMPOTENT_METHODS if retry is None else retry
        attempts = max(1, self.retry.attempts) if retrying else 1
        try:
            return self._send(method, path, json, attempts, not_found)
        except PstreamError as exc:
            raise type(exc)(self._scrub(exc.message), exit_code=exc.exit_code) from None

    def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        attempts: int,
        not_found: str,
    ) -> ApiResponse:
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                if last:
                    raise self._network_error(exc, attempts) from None
                self._pause(attempt, None, type(exc).__name__)
                continue
            log.debug(f"{method} {path} -> {response.status_code}")
            if response.is_success:
                return ApiResponse(response.status_code, response.text)
            if last or not is_retryable_status(response.status_code):
                raise api_error(
                    response.status_code, response.text, not_found=not_found, attempts=attempt
                )
            self._pause(attempt, response.headers.get("Retry-After"), str(response.status_code))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, attempt: int, retry_after: str | None, reason: str) -> None:
        wait = self.retry.delay(attempt, retry_after)
        log.debug(f"retrying in {wait:.2f}s after {reason} (attempt {attempt})")
        time.sleep(wait)

    def _network_error(self, exc: httpx.TransportError, attempts: int) -> NetworkError:
        host = urlsplit(self.api_url).netloc.rpartition("@")[2]
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        if isinstance(exc, httpx.TimeoutException):
            return NetworkError(f"timed out after {self.timeout:g}s talking to {host}{tries}")
        reason = str(exc) or type(exc).__name__
        return NetworkError(f"cannot reach the Plivo API at {host}{tries}: {reason}")

    def _scrub(self, message: str) -> str:
        token = self.credentials.auth_token
        return message.replace(token, "***") if token else message


# --- The Stream API (`/Call/{call_uuid}/Stream/`) -------------------------------------------

_NO_STREAM = "no such call or stream"


def stream_parts(call_uuid: str, stream_id: str | None = None) -> tuple[str, ...]:
    """Path parts of a call's stream collection, or of one stream."""
    parts = ("Call", call_uuid, "Stream")
    return (*parts, stream_id) if stream_id else parts


def stop_streams(client: PlivoClient, call_uuid: str, stream_id: str | None = None) -> ApiResponse:
    """DELETE one stream, or every stream of the call."""
    return client.request("DELETE", *stream_parts(call_uuid, stream_id), not_found=_NO_STREAM)


def get_streams(client: PlivoClient, call_uuid: str, stream_id: str | None = None) -> ApiResponse:
    """GET one stream object, or the call's list (`{"meta": ..., "objects": [...]}`)."""
    return client.request("GET", *stream_parts(call_uuid, stream_id), not_found=_NO_STREAM)


def start_stream(client: PlivoClient, call_uuid: str, body: Mapping[str, Any]) -> ApiResponse:
    """POST a new stream on a live call (never retried: it is not idempotent)."""
    return client.request("POST", *stream_parts(call_uuid), json=body, not_found="no such call")
