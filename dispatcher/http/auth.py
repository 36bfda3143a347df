"""API tokens: parsing `DISPATCHER_API_TOKENS` and checking a presented token (pure).

An entry is `TOKEN` (every scope) or `TOKEN:SCOPE+SCOPE`; entries are comma-separated, so
several tokens can be valid at once while one is rotated out. Tokens are compared in
constant time, and no token ever appears in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

from dispatcher.errors import ConfigurationError

Scope = Literal["enqueue", "read", "ops"]
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)

SETTING: Final = "DISPATCHER_API_TOKENS"
# Short tokens can be guessed; 16 characters of a random token is already 80+ bits.
MIN_TOKEN_LENGTH: Final = 16
BEARER: Final = "bearer"


@dataclass(frozen=True, slots=True)
class ApiToken:
    secret: bytes
    scopes: frozenset[Scope]

    def __repr__(self) -> str:  # never the secret, even in a traceback
        return f"ApiToken(scopes={sorted(self.scopes)})"


def parse_tokens(text: str | None) -> tuple[ApiToken, ...]:
    """The tokens of the setting; empty when it is unset. Raises `ConfigurationError`
    naming the entry by its position, never by its text."""
    if text is None or not text.strip():
        return ()
    tokens: list[ApiToken] = []
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        where = f"{SETTING}: entry {position}"
        if not entry:
            raise ConfigurationError(f"{where}: is empty")
        secret, colon, scope_text = entry.partition(":")
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(
                f"{where}: the token is shorter than {MIN_TOKEN_LENGTH} characters"
            )
        if any(ch.isspace() for ch in secret):
            raise ConfigurationError(f"{where}: the token contains white space")
        if colon:
            names = [name.strip() for name in scope_text.split("+")]
            unknown = [name for name in names if name not in SCOPES]
            if unknown or not names:
                raise ConfigurationError(
                    f"{where}: unknown scope {unknown[0] if unknown else ''!r} "
                    f"(scopes: {', '.join(SCOPES)})"
                )
            scopes = frozenset(cast(Scope, name) for name in names)
        else:
            scopes = frozenset(SCOPES)
        tokens.append(ApiToken(secret.encode(), scopes))
    return tuple(tokens)


def find_token(tokens: Iterable[ApiToken], presented: str | None) -> ApiToken | None:
    """The configured token equal to `presented`. Every token is compared, each in constant
    time, so the answer takes as long whichever matches, or none."""
    if presented is None:
        return None
    given = presented.encode("utf-8", "surrogateescape")
    found: ApiToken | None = None
    for token in tokens:
        if hmac.compare_digest(given, token.secret):
            found = token
    return found


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if header is None:
        return None
    kind, _, value = header.strip().partition(" ")
    if kind.lower() != BEARER or not value.strip():
        return None
    return value.strip()


def csrf_token(key: bytes) -> str:
    """The value the console's forms carry: derived from the caller's own API token (or the
    process key when no tokens are set), so another site cannot forge it."""
    return hmac.new(key, b"dispatcher-console-csrf", hashlib.sha256).hexdigest()


def same_csrf(key: bytes, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), csrf_token(key).encode())
