"""Catapush accounts: whose credentials, token and rate limit each app's sends use.

By default there is one account, made of the `DISPATCHER_CATAPUSH_*` settings, and it sends
for any app. With `DISPATCHER_ACCOUNTS_FILE` (TOML, one top-level table per account, named
after it) each account lists the apps it sends for, and has its own OAuth token (the cache is
keyed by a fingerprint of its credentials) and its own rate limit:

    [shop]
    client_id = "..."
    client_secret = "..."
    mobile_app_ids = [101]
    rate_limit = 20
    rate_burst = 20

    [courier]
    access_token = "..."
    mobile_app_ids = [202, 203]

Pure: reading the file is the only I/O, and it happens in `load_accounts`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    ValidationError,
    model_validator,
)

from dispatcher.errors import ConfigurationError
from dispatcher.settings import ENV_PREFIX, Settings, secret_value

ACCOUNTS_FILE_SETTING = f"{ENV_PREFIX}ACCOUNTS_FILE"
# The account made of the settings alone, when no accounts file is given.
SETTINGS_ACCOUNT = "default"
# Account names go into Redis keys and log lines: no ':' and nothing to quote.
ACCOUNT_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

_NAME_FIELD = Field(pattern=ACCOUNT_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Account:
    """One set of Catapush credentials and the apps it sends for."""

    name: str
    client_id: str | None
    client_secret: SecretStr | None
    access_token: SecretStr | None
    mobile_app_ids: tuple[int, ...]
    rate_limit: float
    rate_burst: int
    # The settings' account sends for any app, and keeps the rate-limit keys it always had.
    any_app: bool = False

    @property
    def rate_scope(self) -> str | None:
        """What names this account's rate limit in Redis; None: the fleet's single one."""
        return None if self.any_app else self.name

    def __repr__(self) -> str:
        # Never the secrets, whatever prints an account.
        return f"Account(name={self.name!r}, mobile_app_ids={list(self.mobile_app_ids)!r})"


class _AccountSpec(BaseModel):
    """One table of the accounts file, as written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: Annotated[str, Field(min_length=1)] | None = None
    client_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    mobile_app_ids: Annotated[list[Annotated[StrictInt, Field(gt=0)]], Field(min_length=1)]
    rate_limit: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    rate_burst: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        has_token = secret_value(self.access_token) is not None
        has_secret = secret_value(self.client_secret) is not None
        if has_token and (self.client_id or has_secret):
            raise ValueError(
                "access_token: give either access_token or client_id and client_secret"
            )
        if not has_token:
            if not self.client_id:
                raise ValueError(
                    "client_id: required (with client_secret) unless access_token is set"
                )
            if not has_secret:
                raise ValueError("client_secret: required with client_id")
        if len(set(self.mobile_app_ids)) != len(self.mobile_app_ids):
            raise ValueError("mobile_app_ids: lists an app more than once")
        return self


class _Name(BaseModel):
    name: Annotated[str, _NAME_FIELD]


@dataclass(frozen=True, slots=True)
class Accounts:
    """Every account of the fleet; `for_app` says which one sends for an app."""

    accounts: tuple[Account, ...]
    default_app_id: int | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        if not self.accounts:
            raise ValueError("at least one account is needed")

    @property
    def names(self) -> list[str]:
        return [account.name for account in self.accounts]

    def for_app(self, app_id: int | None) -> Account | None:
        """The account that sends for `app_id` (None: the default app), or None."""
        wanted = self.default_app_id if app_id is None else app_id
        for account in self.accounts:
            if wanted is not None and wanted in account.mobile_app_ids:
                return account
        for account in self.accounts:
            if account.any_app:
                return account
        return None

    def named(self, name: str | None) -> Account:
        """The account called `name`; without a name, the default app's account, or the only
        one. Raises `ConfigurationError` naming the choices."""
        if name is None:
            if len(self.accounts) == 1:
                return self.accounts[0]
            account = self.for_app(None) if self.default_app_id is not None else None
            if account is None:
                raise ConfigurationError(
                    "--account: required, several accounts are configured "
                    f"({', '.join(self.names)})"
                )
            return account
        for account in self.accounts:
            if account.name == name:
                return account
        raise ConfigurationError(
            f"--account: no account {name!r}; the accounts are {', '.join(self.names)}"
        )


def _problem(path: Path, where: str, message: str) -> ConfigurationError:
    return ConfigurationError(f"{ACCOUNTS_FILE_SETTING}: {path}: {where}{message}")


def parse_accounts(
    data: dict[str, Any], path: Path, *, default_rate: float, default_burst: int
) -> list[Account]:
    """The accounts of a decoded file; raises `ConfigurationError` naming the file, the
    account and the field."""
    if not data:
        raise _problem(path, "", "no account: add one table per account, like [shop]")
    accounts: list[Account] = []
    owners: dict[int, str] = {}
    for name, table in data.items():
        try:
            _Name(name=name)
        except ValidationError:
            raise _problem(
                path, f"[{name}] ", f"the account name must match {ACCOUNT_NAME_PATTERN}"
            ) from None
        if not isinstance(table, dict):
            raise _problem(
                path, "", f"{name}: must be a table ([{name}]) of one account, not a value"
            )
        try:
            spec = _AccountSpec.model_validate(table)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            message = str(error["msg"]).removeprefix("Value error, ")
            location = ".".join(str(part) for part in error["loc"])
            if location and not message.startswith(f"{location.split('.')[0]}: "):
                message = f"{location}: {message}"
            raise _problem(path, f"[{name}] ", message) from exc
        for app_id in spec.mobile_app_ids:
            if app_id in owners:
                raise _problem(
                    path,
                    f"[{name}] ",
                    f"mobile_app_ids: app {app_id} is already [{owners[app_id]}]'s",
                )
            owners[app_id] = name
        accounts.append(
            Account(
                name=name,
                client_id=spec.client_id,
                client_secret=spec.client_secret,
                access_token=spec.access_token,
                mobile_app_ids=tuple(spec.mobile_app_ids),
                rate_limit=default_rate if spec.rate_limit is None else spec.rate_limit,
                rate_burst=default_burst if spec.rate_burst is None else spec.rate_burst,
            )
        )
    return accounts


def load_accounts(path: Path, *, default_rate: float, default_burst: int) -> list[Account]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _problem(path, "", f"cannot be read ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _problem(path, "", f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _problem(path, "", f"is not valid TOML ({exc})") from exc
    return parse_accounts(data, path, default_rate=default_rate, default_burst=default_burst)


def settings_account(settings: Settings) -> Account:
    app_id = settings.catapush_mobile_app_id
    return Account(
        name=SETTINGS_ACCOUNT,
        client_id=settings.catapush_client_id,
        client_secret=settings.catapush_client_secret,
        access_token=settings.catapush_access_token,
        mobile_app_ids=() if app_id is None else (app_id,),
        rate_limit=settings.rate_limit,
        rate_burst=settings.rate_burst,
        any_app=True,
    )


def accounts_from(settings: Settings) -> Accounts:
    """The fleet's accounts: those of `DISPATCHER_ACCOUNTS_FILE` when it is set (they replace
    the settings' single account), else the settings' account."""
    accounts_file = settings.accounts_file
    if accounts_file is None:
        settings.require_credentials()
        return Accounts((settings_account(settings),), settings.catapush_mobile_app_id)
    accounts = load_accounts(
        accounts_file, default_rate=settings.rate_limit, default_burst=settings.rate_burst
    )
    found = Accounts(tuple(accounts), settings.catapush_mobile_app_id, accounts_file)
    default = settings.catapush_mobile_app_id
    if default is not None and found.for_app(default) is None:
        raise _problem(
            accounts_file,
            "",
            f"no account lists {ENV_PREFIX}CATAPUSH_MOBILE_APP_ID ({default}) "
            "in its mobile_app_ids",
        )
    return found
