"""A small async client for the singleuser-profiles HTTP API (httpx).

Retries with exponential backoff when the service cannot be reached or answers 502/503/504
(a rolling update, the service not ready yet); every other answer is final. Errors carry the
service's stable `code` and its human `message`, which says what to fix.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import httpx

__all__ = ["ProfilesClient", "ServiceError", "ServiceUnavailable"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})
# Answers that are final even with a retryable status: the service waited for the cluster for
# the whole timeout the profile allows, and removed it; asking again would wait all over again.
FINAL_CODES = frozenset({"cluster_not_ready"})


class ServiceError(Exception):
    """The service refused a request (4xx) or failed (5xx).

    `message` is the service's human message; `code` its stable machine-readable code.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: str = "error",
        field: Optional[str] = None,
        configmap: Optional[str] = None,
        key: Optional[str] = None,
        line: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.configmap = configmap
        self.key = key
        self.line = line

    @property
    def is_client_error(self) -> bool:
        """True for the caller's mistakes (4xx): retrying the same request will not help."""
        return self.status is not None and 400 <= self.status < 500

    def __str__(self) -> str:
        return self.message


class ServiceUnavailable(ServiceError):
    """The service could not be reached (connection refused, timeout) or stayed unavailable."""


@dataclass
class ProfilesClient:
    """Calls the singleuser-profiles API.

    `url` is the service's base URL (e.g. `http://singleuser-profiles.opendatahub.svc:8080`);
    `token` is sent as `Authorization: token <token>` when set.
    """

    url: str
    token: str = ""
    timeout: float = 30.0
    spawn_timeout: float = 660.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 10.0
    logger: logging.Logger | logging.LoggerAdapter[Any] = field(default=log)
    transport: Optional[httpx.AsyncBaseTransport] = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "singleuser-profiles-hub"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Optional[Mapping[str, Any]] = None,
        params: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """One API call with retries; returns the decoded JSON answer or raises ServiceError."""
        url = self.url.rstrip("/") + path
        read_timeout = timeout if timeout is not None else self.timeout
        limits = httpx.Timeout(read_timeout, connect=min(self.timeout, 10.0))
        attempts = max(0, self.retries) + 1
        last: Optional[ServiceError] = None
        async with httpx.AsyncClient(
            timeout=limits, headers=self._headers(), transport=self.transport
        ) as client:
            for attempt in range(attempts):
                if attempt:
                    delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                    self.logger.warning(
                        "singleuser-profiles: %s %s failed (%s); retry %d/%d in %.1f s",
                        method, path, last, attempt, attempts - 1, delay,
                    )
                    await asyncio.sleep(delay)
                try:
                    response = await client.request(method, url, json=json, params=params)
                except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                        httpx.ReadError, httpx.WriteError, httpx.PoolTimeout) as err:
                    last = ServiceUnavailable(
                        f"the Ray cluster service at {self.url} cannot be reached ({_describe(err)})",
                        code="unreachable",
                    )
                    continue
                except httpx.TimeoutException as err:
                    # A read timeout: the service took the request and is still working on it
                    # (e.g. waiting for the cluster). Retrying would wait all over again.
                    raise ServiceUnavailable(
                        f"the Ray cluster service at {self.url} did not answer within "
                        f"{read_timeout:.0f} s ({_describe(err)})",
                        code="timeout",
                    ) from None
                if response.status_code in RETRY_STATUSES:
                    last = _error_from(response, ServiceUnavailable)
                    if last.code in FINAL_CODES:
                        raise last
                    continue
                if response.status_code >= 400:
                    raise _error_from(response, ServiceError)
                try:
                    return response.json()
                except ValueError:
                    raise ServiceError(
                        f"the Ray cluster service answered {method} {path} with something that "
                        "is not JSON",
                        status=response.status_code,
                        code="bad_answer",
                    ) from None
        assert last is not None
        raise last

    async def spawn(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /api/v1/spawn`; may wait for the cluster (up to `spawn_timeout`)."""
        answer = await self.request("POST", "/api/v1/spawn", json=body, timeout=self.spawn_timeout)
        return dict(answer)

    async def render(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /api/v1/render`: what a spawn would apply, writing nothing."""
        return dict(await self.request("POST", "/api/v1/render", json=body))

    async def stop(self, user: str, server: str = "", namespace: str = "") -> dict[str, Any]:
        """`POST /api/v1/stop`: deletes everything rendered for that user's server."""
        body: dict[str, Any] = {"user": user, "server": server}
        if namespace:
            body["namespace"] = namespace
        return dict(await self.request("POST", "/api/v1/stop", json=body))

    async def profiles(
        self,
        user: str,
        groups: Optional[list[str]] = None,
        image: str = "",
        kubespawner: bool = False,
    ) -> Any:
        """`GET /api/v1/profiles`: `{profiles, sizes}`, or a KubeSpawner `profile_list`."""
        params = {"user": user}
        if groups:
            params["groups"] = ",".join(groups)
        if image:
            params["image"] = image
        if kubespawner:
            params["format"] = "kubespawner"
        return await self.request("GET", "/api/v1/profiles", params=params)

    async def clusters(self, user: str, namespace: str = "") -> dict[str, Any]:
        """`GET /api/v1/users/{user}/clusters`: the status of that user's clusters."""
        params = {"namespace": namespace} if namespace else None
        return dict(
            await self.request("GET", f"/api/v1/users/{_quote(user)}/clusters", params=params)
        )


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _describe(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _error_from(response: httpx.Response, cls: type[ServiceError]) -> ServiceError:
    """A ServiceError from the service's JSON error body (or the bare status)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        line = body.get("line")
        return cls(
            body["message"],
            status=response.status_code,
            code=str(body.get("code") or "error"),
            field=body.get("field"),
            configmap=body.get("configmap"),
            key=body.get("key"),
            line=line if isinstance(line, int) else None,
        )
    return cls(
        f"the Ray cluster service answered HTTP {response.status_code} "
        f"{response.reason_phrase}".rstrip(),
        status=response.status_code,
        code="http_%d" % response.status_code,
    )
