"""Settings from the environment (prefix `DISPATCHER_`, also read from `.env`).

Built once at an entry point with `load_settings()` and passed down; there is no global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, FilePath, HttpUrl, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dispatcher.admission import (
    DEFAULT_MAX_INTENT_RECIPIENTS,
    DEFAULT_MAX_RECIPIENTS,
    DEFAULT_MAX_SCHEDULE_DAYS,
    Limits,
)
from dispatcher.errors import ConfigurationError
from dispatcher.lanes import DEFAULT_BULK_SHARE

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
# How long a receipt keeps a resent or replayed intent from going out twice, and how long the
# status callbacks of a message are kept; both bound what Redis holds per message sent.
DEFAULT_RECEIPT_TTL_DAYS = 30.0

DEFAULT_STATUS_TTL_DAYS = 30.0
SECONDS_PER_DAY = 24 * 3600

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
KeyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
PositiveDays = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# `host:port` pairs, comma-separated (spaces allowed around the commas).
SentinelList = Annotated[str, Field(pattern=r"^\s*[^\s,:]+:\d{1,5}\s*(,\s*[^\s,:]+:\d{1,5}\s*)*$")]


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
    # The part of the rate limit bulk keeps while transactional intents wait too.
    bulk_share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = DEFAULT_BULK_SHARE
    max_attempts: Annotated[int, Field(ge=1)] = DEFAULT_MAX_ATTEMPTS
    backoff_min_ms: Annotated[int, Field(ge=1)] = DEFAULT_BACKOFF_MIN_MS
    backoff_max_ms: Annotated[int, Field(ge=1)] = DEFAULT_BACKOFF_MAX_MS
    http_timeout_s: PositiveSeconds = DEFAULT_HTTP_TIMEOUT_S
    templates_dir: Path | None = None
    # Several Catapush accounts, each with its apps (TOML); see `dispatcher.catapush.accounts`.
    accounts_file: Path | None = None
    callback_url: HttpUrl | None = None
    callback_secret: SecretStr | None = None
    # `TOKEN` or `TOKEN:SCOPE+SCOPE` entries, comma-separated; parsed by `dispatcher.http.auth`.
    api_tokens: SecretStr | None = None
    log_format: Literal["json", "console"] = "json"
    shutdown_grace_s: PositiveSeconds = DEFAULT_SHUTDOWN_GRACE_S
    redis_connect_timeout_s: PositiveSeconds = DEFAULT_REDIS_CONNECT_TIMEOUT_S
    redis_socket_timeout_s: PositiveSeconds = DEFAULT_REDIS_SOCKET_TIMEOUT_S
    max_in_flight_bytes: Annotated[int, Field(gt=0)] = DEFAULT_MAX_IN_FLIGHT_BYTES
    # TLS (with a `rediss://` URL) and Sentinel; see `dispatcher.store.connection`.
    redis_ca_file: FilePath | None = None
    redis_cert_file: FilePath | None = None
    redis_key_file: FilePath | None = None
    redis_sentinels: SentinelList | None = None
    redis_sentinel_master: KeyName | None = None
    redis_sentinel_password: SecretStr | None = None
    receipt_ttl_days: PositiveDays = DEFAULT_RECEIPT_TTL_DAYS
    status_ttl_days: PositiveDays = DEFAULT_STATUS_TTL_DAYS
    # Recipients per Catapush message: a larger intent is sent as parts of this size.
    max_recipients: Annotated[int, Field(ge=1)] = DEFAULT_MAX_RECIPIENTS
    # Recipients one intent may carry at all; intake refuses more.
    max_intent_recipients: Annotated[int, Field(ge=1)] = DEFAULT_MAX_INTENT_RECIPIENTS
    max_schedule_days: PositiveDays = DEFAULT_MAX_SCHEDULE_DAYS

    @model_validator(mode="after")
    def _backoff_bounds_are_ordered(self) -> Self:
        if self.backoff_max_ms < self.backoff_min_ms:
            raise ValueError(
                "backoff_max_ms: must be at least "
                f"{ENV_PREFIX}BACKOFF_MIN_MS ({self.backoff_min_ms})"
            )
        return self

    @model_validator(mode="after")
    def _redis_options_fit_together(self) -> Self:
        tls = self.redis_url.startswith("rediss://")
        for name in ("redis_ca_file", "redis_cert_file", "redis_key_file"):
            if getattr(self, name) is not None and not tls:
                raise ValueError(
                    f"{name}: needs a rediss:// {ENV_PREFIX}REDIS_URL (TLS); the URL is not one"
                )
        if (self.redis_cert_file is None) != (self.redis_key_file is None):
            raise ValueError(
                "redis_cert_file: a client certificate needs both "
                f"{ENV_PREFIX}REDIS_CERT_FILE and {ENV_PREFIX}REDIS_KEY_FILE"
            )
        if self.redis_sentinels is not None:
            for host, port in self.redis_sentinel_addresses:
                if not 0 < port < 65536:
                    raise ValueError(f"redis_sentinels: {host}:{port} has no valid port")
            if self.redis_sentinel_master is None:
                raise ValueError(
                    f"redis_sentinel_master: required with {ENV_PREFIX}REDIS_SENTINELS "
                    "(the name the sentinels monitor the master under)"
                )
            if self.redis_url.startswith("unix://"):
                raise ValueError(
                    f"redis_sentinels: needs a redis:// or rediss:// {ENV_PREFIX}REDIS_URL "
                    "(it gives the database, user and password)"
                )
        elif self.redis_sentinel_master is not None:
            raise ValueError(
                f"redis_sentinels: required with {ENV_PREFIX}REDIS_SENTINEL_MASTER "
                "(host:port of each sentinel, comma-separated)"
            )
        return self

    @property
    def redis_sentinel_addresses(self) -> tuple[tuple[str, int], ...]:
        """The sentinels as (host, port) pairs; empty without Sentinel."""
        if self.redis_sentinels is None:
            return ()
        pairs = []
        for item in self.redis_sentinels.split(","):
            host, _, port = item.strip().rpartition(":")
            pairs.append((host, int(port)))
        return tuple(pairs)

    @property
    def limits(self) -> Limits:
        """What intake admits beyond the intent's own schema."""
        return Limits(
            max_recipients=self.max_recipients,
            max_intent_recipients=self.max_intent_recipients,
            max_schedule_ms=round(self.max_schedule_days * SECONDS_PER_DAY * 1000),
        )

    @property
    def receipt_ttl_s(self) -> int:
        return max(1, round(self.receipt_ttl_days * SECONDS_PER_DAY))

    @property
    def status_ttl_s(self) -> int:
        return max(1, round(self.status_ttl_days * SECONDS_PER_DAY))

    @property
    def catapush_url(self) -> str:
        return str(self.catapush_base_url).rstrip("/")

    def require_credentials(self) -> None:
        """Fail fast, before a worker starts, when no way to authenticate is configured."""
        if secret_value(self.catapush_access_token) is not None or self.accounts_file:
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
    "redis_sentinel_password",
    "api_tokens",
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
