"""Secret masking in log events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.logs import MASK, mask_secrets


def mask(event: dict[str, Any]) -> dict[str, Any]:
    result = mask_secrets(None, "info", event)
    assert result is event
    return dict(result)


@pytest.mark.parametrize(
    "key",
    [
        "secret",
        "client_secret",
        "CALLBACK_SECRET",
        "token",
        "access_token",
        "refreshToken",
        "password",
        "redis_password",
        "authorization",
        "Authorization",
        "proxy-authorization",
    ],
)
def test_keys_naming_a_secret_are_masked(key: str) -> None:
    """A value under a key containing secret/token/password/authorization becomes ***."""
    assert mask({"event": "token.refreshed", key: "Bearer abc"})[key] == MASK


def test_other_keys_are_kept() -> None:
    """Ordinary keys and the event name are left untouched."""
    event = {"event": "delivery.sent", "intent_id": "order-1234", "status_code": 201, "attempt": 2}
    assert mask(dict(event)) == event


def test_mask_replaces_any_value_type() -> None:
    """Masking applies whatever the value is: None, numbers, structures."""
    masked = mask({"token": None, "password": 1234, "secret": {"nested": "x"}, "n": 1})
    assert masked == {"token": MASK, "password": MASK, "secret": MASK, "n": 1}


@settings(max_examples=100, deadline=None, database=None)
@given(
    prefix=st.text(alphabet="abcdefxyz_-", max_size=8),
    part=st.sampled_from(["secret", "token", "password", "authorization"]),
    suffix=st.text(alphabet="abcdefxyz_-", max_size=8),
    upper=st.booleans(),
    value=st.text(max_size=20),
)
def test_secret_key_property(prefix: str, part: str, suffix: str, upper: bool, value: str) -> None:
    """Any key containing one of the secret words, in any case, is masked."""
    key = prefix + (part.upper() if upper else part) + suffix
    assert mask({key: value, "event": "x"}) == {key: MASK, "event": "x"}
