"""Reading Catapush's error answers: Retry-After and the error body, from in-memory responses."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.client import parse_retry_after
from dispatcher.client import rejection_from as rejection_from_parts
from dispatcher.errors import CatapushRejected

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5), ("0.25", 0.25)],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    """A number of seconds, integer or decimal, is read as is."""
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize("value", ["-5", "-0.5"])
def test_negative_retry_after_is_zero(value: str) -> None:
    """A negative delay means 'now', never a negative wait."""
    assert parse_retry_after(value, now=NOW) == 0.0


def test_retry_after_http_date_is_relative_to_now() -> None:
    """An HTTP date is the number of seconds from `now` until then."""
    value = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(value, now=NOW) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    """An HTTP date already passed means retry now."""
    value = email.utils.formatdate(NOW - 3600, usegmt=True)
    assert parse_retry_after(value, now=NOW) == 0.0


def test_retry_after_fixed_http_date() -> None:
    """The RFC 9110 example date is read against an explicit `now`."""
    moment = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=moment - 90) == 90.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "Wed, 99 Foo 2015", "12 seconds"])
def test_retry_after_garbage_is_none(value: str | None) -> None:
    """A missing or unreadable Retry-After is None, not an error."""
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["inf", "1e999", "Infinity"])
def test_retry_after_infinity_is_refused(value: str) -> None:
    """A non-finite Retry-After is treated as unreadable rather than as an endless wait."""
    assert parse_retry_after(value, now=NOW) is None


@settings(max_examples=100, deadline=None, database=None)
@given(st.integers(min_value=0, max_value=10**7))
def test_retry_after_integer_seconds_property(seconds: int) -> None:
    """Any delay-seconds integer is read back exactly."""
    assert parse_retry_after(str(seconds), now=NOW) == float(seconds)


@settings(max_examples=100, deadline=None, database=None)
@given(st.text(max_size=30))
def test_retry_after_never_raises(value: str) -> None:
    """Any header text yields None or a non-negative number, never an exception."""
    result = parse_retry_after(value, now=NOW)
    assert result is None or result >= 0


def rejection_from(response: httpx.Response) -> CatapushRejected:
    return rejection_from_parts(
        response.status_code, response.reason_phrase, response.headers, response.content
    )


# -- rejection_from ------------------------------------------------------------------------------


def test_rejection_from_catapush_json_body() -> None:
    """Catapush's {status, title, detail} body becomes the rejection's title and detail."""
    response = httpx.Response(
        403,
        json={
            "status": 403,
            "title": "Forbidden - Wrong authentication / Bad OAuth request",
            "detail": "mobileAppId does not belong to this account",
        },
    )
    error = rejection_from(response)
    assert isinstance(error, CatapushRejected)
    assert error.status_code == 403
    assert error.title == "Forbidden - Wrong authentication / Bad OAuth request"
    assert error.detail == "mobileAppId does not belong to this account"
    assert error.retry_after_s is None
    assert str(error) == (
        "403 Forbidden - Wrong authentication / Bad OAuth request: "
        "mobileAppId does not belong to this account"
    )


def test_rejection_from_oauth_error_body() -> None:
    """An OAuth {"error": ...} body fills the detail; the title falls back to the reason."""
    error = rejection_from(httpx.Response(400, json={"error": "invalid_request"}))
    assert (error.status_code, error.title, error.detail) == (
        400,
        "Bad Request",
        "invalid_request",
    )


def test_rejection_from_non_json_body() -> None:
    """A non-JSON body (a proxy's HTML page) becomes the detail, truncated to 500 characters."""
    body = "<html>" + "x" * 1000 + "</html>"
    error = rejection_from(httpx.Response(502, text=body))
    assert error.status_code == 502
    assert error.title == "Bad Gateway"
    assert error.detail == body[:500]


def test_rejection_from_empty_body() -> None:
    """An empty body gives the reason phrase and no detail."""
    error = rejection_from(httpx.Response(503))
    assert (error.title, error.detail) == ("Service Unavailable", "")
    assert str(error) == "503 Service Unavailable"


@pytest.mark.parametrize("body", [[1, 2], "just a string", 42, None])
def test_rejection_from_json_that_is_not_an_object(body: object) -> None:
    """JSON that is not an object is ignored: reason phrase, no detail."""
    error = rejection_from(httpx.Response(500, json=body))
    assert (error.title, error.detail) == ("Internal Server Error", "")


def test_rejection_from_unknown_status_without_reason() -> None:
    """A status with no standard reason phrase is titled 'Error'."""
    error = rejection_from(httpx.Response(599, content=b""))
    assert (error.status_code, error.title) == (599, "Error")


def test_rejection_from_reads_retry_after_header() -> None:
    """The Retry-After header is parsed onto the rejection."""
    response = httpx.Response(
        429, headers={"Retry-After": "7"}, json={"title": "Too Many Requests", "detail": "slow"}
    )
    error = rejection_from(response)
    assert (error.status_code, error.title, error.detail) == (429, "Too Many Requests", "slow")
    assert error.retry_after_s == 7.0


def test_rejection_from_ignores_unreadable_retry_after() -> None:
    """A garbage Retry-After header leaves retry_after_s unset."""
    error = rejection_from(httpx.Response(429, headers={"Retry-After": "later"}))
    assert error.retry_after_s is None


def test_rejection_from_empty_title_falls_back_to_reason() -> None:
    """An empty title in the body falls back to the HTTP reason phrase."""
    error = rejection_from(httpx.Response(404, json={"title": "", "detail": "no such app"}))
    assert (error.title, error.detail) == ("Not Found", "no such app")
