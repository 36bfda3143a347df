"""A synchronous client of the sandbox's `/_sandbox` API, for tests and benchmarks."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx


class SandboxAdminError(RuntimeError):
    """The sandbox refused an admin request (a bad fault rule, for instance)."""


class SandboxAdmin:
    """Steers a running sandbox: `SandboxAdmin("http://127.0.0.1:8710/_sandbox")`."""

    def __init__(self, admin_url: str, *, timeout_s: float = 10.0) -> None:
        self.admin_url = admin_url.rstrip("/")
        # The sandbox is local: a proxy configured in the environment must not be used.
        self._client = httpx.Client(base_url=self.admin_url, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str | int] | None = None,
    ) -> Any:
        response = self._client.request(method, path, json=json, params=params)
        if response.is_error:
            raise SandboxAdminError(
                f"{method} {self.admin_url}{path}: {response.status_code} {response.text}"
            )
        return response.json()

    def add_fault(
        self,
        status: int | None = None,
        count: int | None = None,
        retry_after: float | None = None,
        identifier: str | None = None,
        latency_ms: int | None = None,
        drop: bool = False,
        title: str | None = None,
        detail: str | None = None,
    ) -> dict[str, Any]:
        """Add a fault rule for `POST /messages`; returns the rule as the sandbox stored it."""
        rule: dict[str, Any] = {
            "status": status,
            "count": count,
            "retry_after": retry_after,
            "identifier": identifier,
            "latency_ms": latency_ms,
            "drop": drop,
            "title": title,
            "detail": detail,
        }
        answer = self._call("POST", "/faults", json=rule)
        stored: dict[str, Any] = answer["rule"]
        return stored

    def faults(self) -> list[dict[str, Any]]:
        """The rules still active, each with the count it has left."""
        rules: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return rules

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_latency(self, ms: int) -> None:
        self._call("PUT", "/latency", json={"ms": ms})

    def expire_tokens(self) -> int:
        """Expire every temporary token issued so far; returns how many were live."""
        expired: int = self._call("POST", "/tokens/expire")["expired"]
        return expired

    def set_token_ttl(self, seconds: float | None) -> None:
        self._call("PUT", "/token-ttl", json={"seconds": seconds})

    def set_credentials(self, client_id: str, client_secret: str) -> None:
        """Rotate the OAuth client credentials; `reset()` restores those it started with."""
        self._call(
            "PUT", "/credentials", json={"client_id": client_id, "client_secret": client_secret}
        )

    def add_client(
        self, client_id: str, client_secret: str, mobile_app_ids: list[int] | None = None
    ) -> None:
        """Another account with its own credentials; a token of one account is refused
        (403) for the apps of another."""
        body = {
            "client_id": client_id,
            "client_secret": client_secret,
            "mobile_app_ids": mobile_app_ids or [],
        }
        self._call("POST", "/clients", json=body)

    def seed_users(self, app_id: int, identifiers: list[str]) -> int:
        """Create users in an app without going through the API; returns how many were new."""
        created: int = self._call(
            "POST", f"/apps/{app_id}/users", json={"identifiers": identifiers}
        )["created"]
        return created

    def set_users_exists_status(self, status: int) -> None:
        """How a create of an existing user is answered: 409 (default) or 400."""
        self._call("PUT", "/users-exists-status", json={"status": status})

    def requests(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Logged requests with `seq` greater than `since`; `kind` is `messages`, `oauth` or
        `users`."""
        params: dict[str, str | int] = {"since": since}
        if kind is not None:
            params["kind"] = kind
        entries: list[dict[str, Any]] = self._call("GET", "/requests", params=params)["requests"]
        return entries

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def stats(self) -> dict[str, Any]:
        counters: dict[str, Any] = self._call("GET", "/stats")
        return counters

    def reset(self) -> None:
        """Faults, latency, token TTL, request log, counters and tokens back to the start."""
        self._call("POST", "/reset")

    def health(self) -> bool:
        return bool(self._call("GET", "/health").get("ok"))
