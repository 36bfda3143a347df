"""Catapush users (`/apps/{appId}/users`): list every page, get, create, change the
password, delete.

Catapush delivers only to identifiers that exist as users of the app. The seed does not say
how a create of an existing identifier is answered, so both shapes seen in practice count as
"exists": `409`, and `400` whose title says the user exists (titles are stable and meant to be
matched on; details are not).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from dispatcher.catapush.api import Answer, CatapushApi, path_segment
from dispatcher.errors import CatapushRejected, UserExists, UserNotFound

# The seed's JSON schema patterns for a user.
IDENTIFIER_PATTERN = r"^[!-~]{1,100}$"
PASSWORD_PATTERN = r"^[a-zA-Z0-9+\-*_@]{3,20}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_PASSWORD = re.compile(PASSWORD_PATTERN)

# Catapush does not document a largest page; 100 keeps a listing of 200,000 users at 2,000
# calls without asking for pages a server might refuse.
DEFAULT_PAGE_SIZE = 100
GENERATED_PASSWORD_LENGTH = 20
_PASSWORD_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_EXISTS_TITLE = re.compile(r"exist", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class User:
    identifier: str
    created_at: str | None
    platform: str | None

    @classmethod
    def from_wire(cls, data: Any) -> User:
        if not isinstance(data, dict) or not isinstance(data.get("identifier"), str):
            raise CatapushRejected(200, "Unexpected answer", f"not a user: {data!r}"[:300])
        created, platform = data.get("createdAt"), data.get("platform")
        return cls(
            data["identifier"],
            created if isinstance(created, str) else None,
            platform if isinstance(platform, str) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "createdAt": self.created_at,
            "platform": self.platform,
        }


def identifier_problem(identifier: str) -> str | None:
    if _IDENTIFIER.fullmatch(identifier) is None:
        return f"does not match {IDENTIFIER_PATTERN} (1 to 100 printable ASCII, no space)"
    return None


def password_problem(password: str) -> str | None:
    if _PASSWORD.fullmatch(password) is None:
        return f"does not match {PASSWORD_PATTERN} (3 to 20 of a-z A-Z 0-9 + - * _ @)"
    return None


def generate_password() -> str:
    """A password Catapush takes: letters and digits that are not easily confused."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def means_exists(status: int, title: str) -> bool:
    return status == 409 or (status == 400 and _EXISTS_TITLE.search(title) is not None)


def _raise_for(answer: Answer) -> None:
    rejection = answer.rejection()
    if means_exists(answer.status, rejection.title):
        raise UserExists(answer.status, rejection.title, rejection.detail)
    if answer.status == 404:
        raise UserNotFound(answer.status, rejection.title, rejection.detail)
    raise rejection


class Limiter(Protocol):
    async def acquire(self) -> None: ...


class Users:
    """The users of one app. With a `limiter`, every call first waits for a slot of the
    account's shared rate limit (and may raise `SlotUnavailable`)."""

    def __init__(self, api: CatapushApi, app_id: int, *, limiter: Limiter | None = None) -> None:
        self._api = api
        self.app_id = app_id
        self._path = f"apps/{app_id}/users"
        self._limiter = limiter

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str | int] | None = None,
    ) -> Answer:
        if self._limiter is not None:
            await self._limiter.acquire()
        return await self._api.call(method, path, json=json, params=params)

    def _user_path(self, identifier: str) -> str:
        return f"{self._path}/{path_segment(identifier)}"

    async def pages(self, size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[tuple[int, list[User]]]:
        """`(total_count, users)` page after page, until every user was seen."""
        page, seen = 1, 0
        while True:
            answer = await self._call("GET", self._path, params={"page": page, "size": size})
            if answer.status != 200:
                _raise_for(answer)
            body = answer.json()
            if not isinstance(body, dict):
                raise CatapushRejected(200, "Unexpected answer", "the user list is not an object")
            total = body.get("total_count")
            embedded = body.get("_embedded") or {}
            items = embedded.get("AppUser") if isinstance(embedded, dict) else None
            users = [User.from_wire(item) for item in items or []]
            if users:
                yield (total if isinstance(total, int) else seen + len(users)), users
            seen += len(users)
            # Three ways to end, so a server that repeats its last page past the end (some
            # paginators do) or miscounts cannot keep this going for ever.
            if not users or len(users) < size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    async def all(self, size: int = DEFAULT_PAGE_SIZE) -> AsyncIterator[User]:
        async for _, users in self.pages(size):
            for user in users:
                yield user

    async def get(self, identifier: str) -> User:
        answer = await self._call("GET", self._user_path(identifier))
        if answer.status != 200:
            _raise_for(answer)
        return User.from_wire(answer.json())

    async def create(self, identifier: str, password: str) -> User:
        """The new user; raises `UserExists` when the identifier is taken."""
        answer = await self._call(
            "POST", self._path, json={"identifier": identifier, "password": password}
        )
        if answer.status not in (200, 201):
            _raise_for(answer)
        return User.from_wire(answer.json())

    async def set_password(self, identifier: str, password: str) -> User:
        answer = await self._call("PATCH", self._user_path(identifier), json={"password": password})
        if answer.status != 200:
            _raise_for(answer)
        return User.from_wire(answer.json())

    async def delete(self, identifier: str) -> None:
        answer = await self._call("DELETE", self._user_path(identifier))
        if answer.status not in (200, 204):
            _raise_for(answer)
