"""The fingerprint that ties the shared token's Redis key to the credentials it came from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.store.keys import Keys
from dispatcher.tokens import FINGERPRINT_HEX_CHARS, credentials_fingerprint

FAST = settings(max_examples=200, deadline=None, database=None)
URL = "https://api.catapush.com/1"

# Environment variables cannot hold NUL, so neither can a setting.
setting_text = st.text(st.characters(blacklist_characters="\0"), max_size=40)


@pytest.mark.timeout(10)
def test_the_same_credentials_give_the_same_short_hex_fingerprint() -> None:
    """Every worker with the same URL, id and secret finds the same key: 16 hex characters."""
    first = credentials_fingerprint(URL, "client", "secret")
    assert first == credentials_fingerprint(URL, "client", "secret")
    assert len(first) == FINGERPRINT_HEX_CHARS
    assert int(first, 16) >= 0


@pytest.mark.timeout(10)
def test_a_trailing_slash_on_the_url_names_the_same_api() -> None:
    """`.../1` and `.../1/` are one API, so one token."""
    assert credentials_fingerprint(URL + "/", "c", "s") == credentials_fingerprint(URL, "c", "s")


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("url", "client_id", "client_secret"),
    [
        (URL, "client", "rotated-secret"),
        (URL, "other-client", "secret"),
        ("http://127.0.0.1:8710/1", "client", "secret"),
        # The same characters split differently between the fields.
        (URL, "clients", "ecret"),
        (URL, "clientsecret", ""),
    ],
)
def test_a_change_of_secret_id_or_url_changes_the_fingerprint(
    url: str, client_id: str, client_secret: str
) -> None:
    """Rotated credentials or another API never find the token the old ones cached."""
    assert credentials_fingerprint(url, client_id, client_secret) != credentials_fingerprint(
        URL, "client", "secret"
    )


@pytest.mark.timeout(30)
@FAST
@given(url=setting_text, client_id=setting_text, client_secret=setting_text, split=st.integers())
def test_moving_text_between_fields_changes_the_fingerprint(
    url: str, client_id: str, client_secret: str, split: int
) -> None:
    """No two different (url, id, secret) join into the same hashed text."""
    whole = client_id + client_secret
    cut = split % (len(whole) + 1)
    moved = (whole[:cut], whole[cut:])
    if moved != (client_id, client_secret):
        assert credentials_fingerprint(url, *moved) != credentials_fingerprint(
            url, client_id, client_secret
        )


@pytest.mark.timeout(10)
def test_neither_the_fingerprint_nor_the_keys_contain_the_secret() -> None:
    """Anyone who can list the Redis keys learns which credentials, not what they are."""
    secret = "Zq7-secret-value-9f"
    fingerprint = credentials_fingerprint(URL, "client", secret)
    keys = Keys("dispatcher")
    for text in (fingerprint, keys.token(fingerprint), keys.token_lock(fingerprint)):
        assert secret not in text
        assert "client" not in text


@pytest.mark.timeout(10)
def test_token_and_lock_keys_differ_per_fingerprint() -> None:
    """Each set of credentials has a token key and a lock key of its own, in the namespace."""
    keys = Keys("ns")
    old, new = credentials_fingerprint(URL, "c", "old"), credentials_fingerprint(URL, "c", "new")
    assert keys.token(old) == f"ns:token:{old}"
    assert keys.token_lock(old) == f"ns:token.lock:{old}"
    assert len({keys.token(old), keys.token(new), keys.token_lock(old), keys.token_lock(new)}) == 4
