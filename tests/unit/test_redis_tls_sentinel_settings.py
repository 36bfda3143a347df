"""TLS and Sentinel settings, and how TLS failures and failovers are classified (no I/O)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from redis import exceptions as rex

from dispatcher.errors import ConfigurationError, RedisRefused, RedisUnavailable
from dispatcher.settings import load_settings
from dispatcher.store.connection import RedisTarget, classify, translate

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


def _file(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def test_sentinels_are_parsed_into_pairs() -> None:
    settings = load_settings(
        redis_url=f"redis://:{PASSWORD}@ignored/3",
        redis_sentinels=" s1.internal:26379, 10.0.0.2:26380 ,s3:26381",
        redis_sentinel_master="mymaster",
    )
    assert settings.redis_sentinel_addresses == (
        ("s1.internal", 26379),
        ("10.0.0.2", 26380),
        ("s3", 26381),
    )
    target = RedisTarget.of(settings)
    assert PASSWORD not in target.describe()
    assert "mymaster" in target.describe()
    assert target._credentials() == {"db": 3, "password": PASSWORD}


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"redis_sentinels": "s1:26379"}, "DISPATCHER_REDIS_SENTINEL_MASTER"),
        ({"redis_sentinel_master": "m"}, "DISPATCHER_REDIS_SENTINELS"),
        ({"redis_sentinels": "s1", "redis_sentinel_master": "m"}, "DISPATCHER_REDIS_SENTINELS"),
        ({"redis_sentinels": "s1:0", "redis_sentinel_master": "m"}, "DISPATCHER_REDIS_SENTINELS"),
        (
            {"redis_sentinels": "s1:1", "redis_sentinel_master": "m", "redis_url": "unix:///s"},
            "DISPATCHER_REDIS_SENTINELS",
        ),
        ({"redis_ca_file": "/nonexistent/ca.pem"}, "DISPATCHER_REDIS_CA_FILE"),
        ({"receipt_ttl_days": 0}, "DISPATCHER_RECEIPT_TTL_DAYS"),
        ({"status_ttl_days": -1}, "DISPATCHER_STATUS_TTL_DAYS"),
    ],
)
def test_inconsistent_redis_settings_name_the_variable(
    overrides: dict[str, object], variable: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"^{variable}: "):
        load_settings(**overrides)


def test_tls_files_need_a_rediss_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^DISPATCHER_REDIS_CA_FILE: needs a rediss://"):
        load_settings(redis_url="redis://cache:6379/0", redis_ca_file=_file(tmp_path, "ca.pem"))


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="DISPATCHER_REDIS_KEY_FILE"):
        load_settings(
            redis_url="rediss://cache:6380/0", redis_cert_file=_file(tmp_path, "client.pem")
        )


def test_tls_files_reach_the_target(tmp_path: Path) -> None:
    settings = load_settings(
        redis_url="rediss://cache:6380/0",
        redis_ca_file=_file(tmp_path, "ca.pem"),
        redis_cert_file=_file(tmp_path, "c.pem"),
        redis_key_file=_file(tmp_path, "k.pem"),
    )
    options = RedisTarget.of(settings)._tls_options()
    assert options == {
        "ssl_ca_certs": str(tmp_path / "ca.pem"),
        "ssl_certfile": str(tmp_path / "c.pem"),
        "ssl_keyfile": str(tmp_path / "k.pem"),
    }


def test_retention_defaults_to_thirty_days() -> None:
    settings = load_settings()
    assert settings.receipt_ttl_s == settings.status_ttl_s == 30 * 24 * 3600
    assert load_settings(receipt_ttl_days=0.5).receipt_ttl_s == 12 * 3600


def _wrapped(reason: str) -> rex.ConnectionError:
    """A redis-py connection error raised while handling an SSL error, as redis-py does."""
    cause = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()} (_ssl.c:1006)")
    exc = rex.ConnectionError(f"Error 1 connecting to cache:6380. {cause}.")
    exc.__context__ = cause
    return exc


@pytest.mark.parametrize(
    ("reason", "variable"),
    [
        ("CERTIFICATE_VERIFY_FAILED", "DISPATCHER_REDIS_CA_FILE"),
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "DISPATCHER_REDIS_CERT_FILE"),
        ("TLSV1_ALERT_UNKNOWN_CA", "DISPATCHER_REDIS_CERT_FILE"),
        ("WRONG_VERSION_NUMBER", "DISPATCHER_REDIS_URL"),
    ],
)
def test_tls_failures_that_cannot_heal_are_refusals_naming_the_setting(
    reason: str, variable: str
) -> None:
    exc = _wrapped(reason)
    assert classify(exc) == "refused"
    error = translate(exc, f"rediss://:{PASSWORD}@cache:6380/0", ca_file="/etc/ca.pem")
    assert isinstance(error, RedisRefused)
    assert str(error).startswith(f"{variable}")
    assert PASSWORD not in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped("UNEXPECTED_EOF_WHILE_READING"),
        rex.ConnectionError("The previous master is now a slave"),
        rex.ReadOnlyError("You can't write against a read only replica."),
        rex.ResponseError("READONLY You can't write against a read only replica."),
        rex.ConnectionError("No master found for 'mymaster'"),
    ],
    ids=["tls-eof", "demoted-master", "readonly", "readonly-text", "no-master"],
)
def test_a_failover_and_a_cut_handshake_are_outages(exc: rex.RedisError) -> None:
    assert classify(exc) == "unavailable"
    assert isinstance(translate(exc, "rediss://cache:6380/0"), RedisUnavailable)
