"""API tokens, the exposure check, the OpenAPI document and the throughput plot (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from dispatcher.errors import ConfigurationError
from dispatcher.http.app import check_exposure, openapi_document, operations
from dispatcher.http.auth import (
    SCOPES,
    bearer,
    csrf_token,
    find_token,
    parse_tokens,
    same_csrf,
)
from dispatcher.http.plot import bar_plot
from dispatcher.settings import Settings

A = "a" * 20
B = "b" * 20


def test_tokens_carry_every_scope_or_the_ones_named() -> None:
    """`TOKEN` has every scope, `TOKEN:read+ops` only those; entries are comma-separated."""
    every, some = parse_tokens(f" {A} , {B}:read+ops")
    assert every.scopes == frozenset(SCOPES)
    assert some.scopes == {"read", "ops"}
    assert find_token([every, some], B) is some
    assert find_token([every, some], "c" * 20) is None
    assert find_token([every, some], None) is None
    assert parse_tokens(None) == parse_tokens("  ") == ()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("short", "entry 1: the token is shorter than 16 characters"),
        (f"{A},", "entry 2: is empty"),
        (f"{A}:read+admin", "entry 1: unknown scope 'admin'"),
    ],
)
def test_a_bad_entry_is_named_by_position_never_by_its_text(text: str, error: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_tokens(text)
    assert str(caught.value).startswith(f"DISPATCHER_API_TOKENS: {error}")
    assert A not in str(caught.value)
    assert A not in repr(parse_tokens(A))


@given(st.text(max_size=40))
def test_no_presented_text_but_the_token_itself_matches(presented: str) -> None:
    tokens = parse_tokens(A)
    assert (find_token(tokens, presented) is not None) == (presented == A)


def test_bearer_header_and_csrf() -> None:
    assert bearer(f"Bearer {A}") == A
    assert bearer(f"bearer  {A} ") == A
    assert bearer(f"Basic {A}") is None
    assert bearer("Bearer ") is None
    assert same_csrf(b"key", csrf_token(b"key"))
    assert not same_csrf(b"other", csrf_token(b"key"))
    assert not same_csrf(b"key", None)


def test_an_open_server_is_refused_off_loopback() -> None:
    """No tokens: loopback only, unless --insecure; with tokens, any address."""
    open_settings = Settings()
    assert check_exposure(open_settings, "127.0.0.1", insecure=False) == ()
    assert check_exposure(open_settings, "::1", insecure=False) == ()
    with pytest.raises(ConfigurationError, match=r"^DISPATCHER_API_TOKENS: required to serve on"):
        check_exposure(open_settings, "0.0.0.0", insecure=False)
    assert check_exposure(open_settings, "0.0.0.0", insecure=True) == ()
    locked = Settings(api_tokens=SecretStr(A))
    assert len(check_exposure(locked, "0.0.0.0", insecure=False)) == 1


def test_the_document_covers_every_api_route_from_the_models() -> None:
    """OpenAPI 3.1, one operation per documented route, schemas from the pydantic models,
    public operations marked so, every other one naming its scope."""
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    documented = {(op.method.lower(), op.path) for op in operations() if op.documented}
    listed = {(m, p) for p, methods in document["paths"].items() for m in methods}
    assert listed == documented
    schemas = document["components"]["schemas"]
    assert {"Intent", "IntentBatch", "Errors", "NotificationStatus", "DeadLetterPage"} <= set(
        schemas
    )
    assert schemas["Intent"]["properties"]["recipients"]["minItems"] == 1
    post = document["paths"]["/v1/notifications"]["post"]
    assert post["x-scope"] == "enqueue"
    assert set(post["responses"]) >= {"202", "400", "401", "403", "413", "415", "422"}
    assert document["paths"]["/healthz"]["get"]["security"] == []


def test_the_plot_scales_bars_to_the_busiest_minute() -> None:
    plot = bar_plot([0, 5, 10], first_minute=0, width=300, height=100)
    assert plot.peak == 10
    assert [(bar.value, bar.height) for bar in plot.bars] == [(5, 50.0), (10, 100.0)]
    assert plot.bars[0].label == "00:01 UTC"
    assert bar_plot([0] * 60, first_minute=0).bars == []
