"""Settings from DISPATCHER_* variables: contract defaults and one-line configuration errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatcher.errors import ConfigurationError
from dispatcher.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited DISPATCHER_* variable and no stray .env: each test sets what it needs."""
    for name in list(os.environ):
        if name.startswith("DISPATCHER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_match_the_contract() -> None:
    """With nothing set, every setting has the contract table's default."""
    settings = load_settings()
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.namespace == "dispatcher"
    assert settings.queue == "notifications"
    assert settings.catapush_url == "https://api.catapush.com/1"
    assert settings.catapush_client_id is None
    assert settings.catapush_client_secret is None
    assert settings.catapush_access_token is None
    assert settings.catapush_mobile_app_id is None
    assert settings.rate_limit == 20
    assert settings.rate_burst == 20
    assert settings.max_attempts == 12
    assert settings.backoff_min_ms == 1_000
    assert settings.backoff_max_ms == 600_000
    assert settings.http_timeout_s == 10
    assert settings.templates_dir is None
    assert settings.callback_url is None
    assert settings.callback_secret is None
    assert settings.log_format == "json"


def test_redis_and_memory_bounds_have_their_defaults() -> None:
    """Redis connect and reply timeouts of 5 s and 10 s, and 64 MiB of bodies in flight."""
    settings = load_settings()
    assert settings.redis_connect_timeout_s == 5
    assert settings.redis_socket_timeout_s == 10
    assert settings.max_in_flight_bytes == 64 * 1024 * 1024


def test_redis_and_memory_bounds_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """DISPATCHER_REDIS_CONNECT_TIMEOUT_S, _SOCKET_TIMEOUT_S and MAX_IN_FLIGHT_BYTES are read."""
    monkeypatch.setenv("DISPATCHER_REDIS_CONNECT_TIMEOUT_S", "0.5")
    monkeypatch.setenv("DISPATCHER_REDIS_SOCKET_TIMEOUT_S", "2.5")
    monkeypatch.setenv("DISPATCHER_MAX_IN_FLIGHT_BYTES", "1048576")
    settings = load_settings()
    assert settings.redis_connect_timeout_s == 0.5
    assert settings.redis_socket_timeout_s == 2.5
    assert settings.max_in_flight_bytes == 1_048_576


def test_every_contract_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each DISPATCHER_* variable of the contract reaches its setting."""
    values = {
        "DISPATCHER_REDIS_URL": "rediss://cache.internal:6380/2",
        "DISPATCHER_NAMESPACE": "shop:prod",
        "DISPATCHER_QUEUE": "push",
        "DISPATCHER_CATAPUSH_BASE_URL": "http://127.0.0.1:8099/1/",
        "DISPATCHER_CATAPUSH_CLIENT_ID": "client",
        "DISPATCHER_CATAPUSH_CLIENT_SECRET": "s3cret",
        "DISPATCHER_CATAPUSH_ACCESS_TOKEN": "t0ken",
        "DISPATCHER_CATAPUSH_MOBILE_APP_ID": "123",
        "DISPATCHER_RATE_LIMIT": "2.5",
        "DISPATCHER_RATE_BURST": "5",
        "DISPATCHER_MAX_ATTEMPTS": "3",
        "DISPATCHER_BACKOFF_MIN_MS": "10",
        "DISPATCHER_BACKOFF_MAX_MS": "20",
        "DISPATCHER_HTTP_TIMEOUT_S": "1.5",
        "DISPATCHER_TEMPLATES_DIR": "/srv/templates",
        "DISPATCHER_CALLBACK_URL": "https://push.example.com/callbacks",
        "DISPATCHER_CALLBACK_SECRET": "cb-secret",
        "DISPATCHER_LOG_FORMAT": "console",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.redis_url == "rediss://cache.internal:6380/2"
    assert (settings.namespace, settings.queue) == ("shop:prod", "push")
    assert settings.catapush_url == "http://127.0.0.1:8099/1"
    assert settings.catapush_client_id == "client"
    assert settings.catapush_client_secret is not None
    assert settings.catapush_client_secret.get_secret_value() == "s3cret"
    assert settings.catapush_access_token is not None
    assert settings.catapush_access_token.get_secret_value() == "t0ken"
    assert settings.catapush_mobile_app_id == 123
    assert (settings.rate_limit, settings.rate_burst, settings.max_attempts) == (2.5, 5, 3)
    assert (settings.backoff_min_ms, settings.backoff_max_ms) == (10, 20)
    assert settings.http_timeout_s == 1.5
    assert settings.templates_dir == Path("/srv/templates")
    assert str(settings.callback_url) == "https://push.example.com/callbacks"
    assert settings.callback_secret is not None
    assert settings.callback_secret.get_secret_value() == "cb-secret"
    assert settings.log_format == "console"


def test_secrets_are_not_shown_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secret settings print masked, so logging the settings leaks nothing."""
    monkeypatch.setenv("DISPATCHER_CATAPUSH_CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("DISPATCHER_CATAPUSH_ACCESS_TOKEN", "t0ken-value")
    monkeypatch.setenv("DISPATCHER_CALLBACK_SECRET", "cb-value")
    text = repr(load_settings())
    for secret in ("s3cret-value", "t0ken-value", "cb-value"):
        assert secret not in text


def test_dot_env_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Variables in ./.env are read, and the environment wins over the file."""
    (tmp_path / ".env").write_text("DISPATCHER_QUEUE=from-file\nDISPATCHER_MAX_ATTEMPTS=4\n")
    monkeypatch.setenv("DISPATCHER_MAX_ATTEMPTS", "5")
    settings = load_settings()
    assert settings.queue == "from-file"
    assert settings.max_attempts == 5


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword overrides given to load_settings take precedence over variables."""
    monkeypatch.setenv("DISPATCHER_QUEUE", "from-env")
    assert load_settings(queue="explicit").queue == "explicit"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DISPATCHER_REDIS_URL", "localhost:6379"),
        ("DISPATCHER_REDIS_URL", "http://localhost:6379"),
        ("DISPATCHER_NAMESPACE", "has space"),
        ("DISPATCHER_NAMESPACE", ""),
        ("DISPATCHER_NAMESPACE", "x" * 65),
        ("DISPATCHER_QUEUE", "a/b"),
        ("DISPATCHER_CATAPUSH_BASE_URL", "not a url"),
        ("DISPATCHER_CATAPUSH_BASE_URL", "ftp://api.catapush.com/1"),
        ("DISPATCHER_CATAPUSH_MOBILE_APP_ID", "abc"),
        ("DISPATCHER_CATAPUSH_MOBILE_APP_ID", "1.5"),
        ("DISPATCHER_RATE_LIMIT", "0"),
        ("DISPATCHER_RATE_LIMIT", "-1"),
        ("DISPATCHER_RATE_LIMIT", "fast"),
        ("DISPATCHER_RATE_LIMIT", "nan"),
        ("DISPATCHER_RATE_BURST", "0"),
        ("DISPATCHER_RATE_BURST", "2.5"),
        ("DISPATCHER_MAX_ATTEMPTS", "0"),
        ("DISPATCHER_MAX_ATTEMPTS", "many"),
        ("DISPATCHER_BACKOFF_MIN_MS", "-1"),
        ("DISPATCHER_BACKOFF_MAX_MS", "-5"),
        ("DISPATCHER_BACKOFF_MAX_MS", "soon"),
        ("DISPATCHER_HTTP_TIMEOUT_S", "0"),
        ("DISPATCHER_HTTP_TIMEOUT_S", "ten"),
        ("DISPATCHER_REDIS_CONNECT_TIMEOUT_S", "0"),
        ("DISPATCHER_REDIS_CONNECT_TIMEOUT_S", "-1"),
        ("DISPATCHER_REDIS_CONNECT_TIMEOUT_S", "inf"),
        ("DISPATCHER_REDIS_CONNECT_TIMEOUT_S", "nan"),
        ("DISPATCHER_REDIS_SOCKET_TIMEOUT_S", "0"),
        ("DISPATCHER_REDIS_SOCKET_TIMEOUT_S", "inf"),
        ("DISPATCHER_REDIS_SOCKET_TIMEOUT_S", "nan"),
        ("DISPATCHER_REDIS_SOCKET_TIMEOUT_S", "soon"),
        ("DISPATCHER_MAX_IN_FLIGHT_BYTES", "0"),
        ("DISPATCHER_MAX_IN_FLIGHT_BYTES", "-1"),
        ("DISPATCHER_MAX_IN_FLIGHT_BYTES", "1.5"),
        ("DISPATCHER_MAX_IN_FLIGHT_BYTES", "64MiB"),
        ("DISPATCHER_CALLBACK_URL", "callbacks"),
        ("DISPATCHER_CALLBACK_URL", "ftp://push.example.com/cb"),
        ("DISPATCHER_LOG_FORMAT", "xml"),
        ("DISPATCHER_LOG_FORMAT", "JSON"),
    ],
)
def test_malformed_variable_is_named_first(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    """A malformed variable stops loading with one line that starts with the variable's name."""
    message = config_error(monkeypatch, **{variable: value})
    assert message.startswith(f"{variable}: ")
    assert len(message) > len(variable) + 2


def test_malformed_non_secret_value_is_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    """For an ordinary setting the message shows the offending value, to help fix it."""
    message = config_error(monkeypatch, DISPATCHER_LOG_FORMAT="xml")
    assert message == "DISPATCHER_LOG_FORMAT: Input should be 'json' or 'console' (got 'xml')"


def test_backoff_bounds_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A maximum below the minimum is reported against DISPATCHER_BACKOFF_MAX_MS."""
    message = config_error(
        monkeypatch, DISPATCHER_BACKOFF_MIN_MS="5000", DISPATCHER_BACKOFF_MAX_MS="4999"
    )
    assert message == "DISPATCHER_BACKOFF_MAX_MS: must be at least DISPATCHER_BACKOFF_MIN_MS (5000)"
    monkeypatch.setenv("DISPATCHER_BACKOFF_MAX_MS", "5000")
    assert load_settings().backoff_max_ms == 5000


def test_only_the_first_problem_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several bad variables still produce a single line naming one of them."""
    message = config_error(monkeypatch, DISPATCHER_RATE_LIMIT="0", DISPATCHER_LOG_FORMAT="xml")
    assert message.startswith(("DISPATCHER_RATE_LIMIT: ", "DISPATCHER_LOG_FORMAT: "))
    assert "; " not in message


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"catapush_client_secret": 12345}, "DISPATCHER_CATAPUSH_CLIENT_SECRET"),
        ({"catapush_access_token": ["t0ken-value"]}, "DISPATCHER_CATAPUSH_ACCESS_TOKEN"),
        ({"callback_secret": {"v": "cb-value"}}, "DISPATCHER_CALLBACK_SECRET"),
    ],
)
def test_malformed_secret_value_is_never_shown(override: dict[str, object], variable: str) -> None:
    """A malformed secret is named, but its value is not echoed into the message."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**override)
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    for secret in ("12345", "t0ken-value", "cb-value"):
        assert secret not in message


def test_password_inside_a_malformed_redis_url_is_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A malformed Redis URL is named without echoing the password it carries."""
    message = config_error(monkeypatch, DISPATCHER_REDIS_URL="redis:/:hunter2@cache:6379/0")
    assert message.startswith("DISPATCHER_REDIS_URL: ")
    assert "hunter2" not in message


# -- require_credentials -----------------------------------------------------------------------


def test_access_token_alone_is_enough() -> None:
    """A permanent access token satisfies the credential check without OAuth credentials."""
    load_settings(catapush_access_token="t0ken").require_credentials()


def test_client_id_and_secret_are_enough() -> None:
    """OAuth client credentials satisfy the credential check."""
    load_settings(catapush_client_id="id", catapush_client_secret="secret").require_credentials()


def test_no_credentials_names_client_id() -> None:
    """With no credentials at all, the error names DISPATCHER_CATAPUSH_CLIENT_ID first."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings().require_credentials()
    message = str(caught.value)
    assert message.startswith("DISPATCHER_CATAPUSH_CLIENT_ID: ")
    assert "DISPATCHER_CATAPUSH_ACCESS_TOKEN" in message


def test_empty_client_id_counts_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty DISPATCHER_CATAPUSH_CLIENT_ID is treated as not set."""
    monkeypatch.setenv("DISPATCHER_CATAPUSH_CLIENT_ID", "")
    monkeypatch.setenv("DISPATCHER_CATAPUSH_CLIENT_SECRET", "secret")
    with pytest.raises(ConfigurationError, match=r"^DISPATCHER_CATAPUSH_CLIENT_ID: "):
        load_settings().require_credentials()


def test_client_id_without_secret_names_secret() -> None:
    """A client id without its secret names DISPATCHER_CATAPUSH_CLIENT_SECRET."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings(catapush_client_id="id").require_credentials()
    assert str(caught.value).startswith("DISPATCHER_CATAPUSH_CLIENT_SECRET: ")


@pytest.mark.parametrize(
    "variables",
    [
        {"DISPATCHER_CATAPUSH_ACCESS_TOKEN": ""},
        {"DISPATCHER_CATAPUSH_CLIENT_ID": "id", "DISPATCHER_CATAPUSH_CLIENT_SECRET": ""},
    ],
    ids=["empty-access-token", "empty-client-secret"],
)
def test_empty_secret_counts_as_missing(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    """An empty token or secret (e.g. `KEY=` left in a .env) fails the credential check."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError):
        load_settings().require_credentials()


def test_settings_are_frozen() -> None:
    """Settings are built once and cannot be changed afterwards."""
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.queue = "other"  # type: ignore[misc]
