"""Settings from the environment (prefix `DISPATCHER_`, also read from `.env`).

Built once at an entry point with `load_settings()` and passed down; there is no global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, HttpUrl, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.errors import ConfigurationError

ENV_PREFIX = "DISPATCHER_"

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_NAMESPACE = "dispatcher"
DEFAULT_QUEUE = "notifications"
DEFAULT_CATAPUSH_BASE_URL = "https://api.catapush.com/1"
DEFAULT_RATE_LIMIT = 20.0
DEFAULT_RATE_BURST = 20
DEFAULT_MAX_ATTEMPTS = 12
DEFAULT_BACKOFF_MIN_MS = 1_000
DEFAULT_BACKOFF_MAX_MS = 600_000
DEFAULT_HTTP_TIMEOUT_S = 10.0
DEFAULT_SHUTDOWN_GRACE_S = 30.0
# Redis must accept a connection within the first and answer each command within the second;
# past them a call fails with `RedisUnavailable` instead of waiting without end.
DEFAULT_REDIS_CONNECT_TIMEOUT_S = 5.0
DEFAULT_REDIS_SOCKET_TIMEOUT_S = 10.0
# Message bodies one worker process holds at once; bounds its memory whatever the queue holds.
DEFAULT_MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024
# Sends in flight per worker process (`dispatcher worker --threads`).
DEFAULT_CONCURRENCY = 128

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
KeyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


def secret_value(secret: SecretStr | None) -> str | None:
    """The secret's text, or None when it is unset or empty (an empty variable sets nothing)."""
    if secret is None:
        return None
    return secret.get_secret_value() or None


class Settings(BaseSettings):
    """Every `DISPATCHER_*` variable of the contract, validated."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    redis_url: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://")] = DEFAULT_REDIS_URL
    namespace: KeyName = DEFAULT_NAMESPACE
    queue: KeyName = DEFAULT_QUEUE
    catapush_base_url: HttpUrl = HttpUrl(DEFAULT_CATAPUSH_BASE_URL)
    catapush_client_id: str | None = None
    catapush_client_secret: SecretStr | None = None
    catapush_access_token: SecretStr | None = None
    catapush_mobile_app_id: int | None = None
    rate_limit: Annotated[float, Field(gt=0, allow_inf_nan=False)] = DEFAULT_RATE_LIMIT
    rate_burst: Annotated[int, Field(ge=1)] = DEFAULT_RATE_BURST
    max_attempts: Annotated[int, Field(ge=1)] = DEFAULT_MAX_ATTEMPTS
    backoff_min_ms: Annotated[int, Field(ge=1)] = DEFAULT_BACKOFF_MIN_MS
    backoff_max_ms: Annotated[int, Field(ge=1)] = DEFAULT_BACKOFF_MAX_MS
    http_timeout_s: PositiveSeconds = DEFAULT_HTTP_TIMEOUT_S
    templates_dir: Path | None = None
    callback_url: HttpUrl | None = None
    callback_secret: SecretStr | None = None
    log_format: Literal["json", "console"] = "json"
    shutdown_grace_s: PositiveSeconds = DEFAULT_SHUTDOWN_GRACE_S
    redis_connect_timeout_s: PositiveSeconds = DEFAULT_REDIS_CONNECT_TIMEOUT_S
    redis_socket_timeout_s: PositiveSeconds = DEFAULT_REDIS_SOCKET_TIMEOUT_S
    max_in_flight_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_IN_FLIGHT_BYTES

    @model_validator(mode="after")
    def _backoff_bounds_are_ordered(self) -> Self:
        if self.backoff_max_ms < self.backoff_min_ms:
            raise ValueError(
                "backoff_max_ms: must be at least "
                f"{ENV_PREFIX}BACKOFF_MIN_MS ({self.backoff_min_ms})"
            )
        return self

    @property
    def catapush_url(self) -> str:
        return str(self.catapush_base_url).rstrip("/")

    def require_credentials(self) -> None:
        """Fail fast, before a worker starts, when no way to authenticate is configured."""
        if secret_value(self.catapush_access_token) is not None:
            return
        if not self.catapush_client_id:
            raise ConfigurationError(
                f"{ENV_PREFIX}CATAPUSH_CLIENT_ID: required (with "
                f"{ENV_PREFIX}CATAPUSH_CLIENT_SECRET) unless "
                f"{ENV_PREFIX}CATAPUSH_ACCESS_TOKEN is set"
            )
        if secret_value(self.catapush_client_secret) is None:
            raise ConfigurationError(
                f"{ENV_PREFIX}CATAPUSH_CLIENT_SECRET: required with {ENV_PREFIX}CATAPUSH_CLIENT_ID"
            )


# Values never echoed in an error: secrets, and URLs, which may carry a password.
_UNSHOWN_FIELDS = {
    "catapush_client_secret",
    "catapush_access_token",
    "callback_secret",
    "redis_url",
    "callback_url",
    "catapush_base_url",
}


def load_settings(**overrides: object) -> Settings:
    """Read the settings, or raise `ConfigurationError` naming the first bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        location = tuple(error["loc"])
        if location:
            field, reason = str(location[0]), message
            value = error.get("input")
            if field not in _UNSHOWN_FIELDS and isinstance(value, str):
                reason = f"{reason} (got {value!r})"
        else:
            # Checks across fields name their field at the start of the message.
            field, _, reason = message.partition(": ")
        raise ConfigurationError(f"{ENV_PREFIX}{field.upper()}: {reason}") from exc
