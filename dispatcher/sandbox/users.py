"""The sandbox's Users API state: the users of each mobile app, in creation order.

Pure: no I/O. Paging is 1-based like Catapush's REST example (`?page=1&size=10`); a page
number below 1 is read as the first page, and a page past the end is empty.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# The seed's JSON schema patterns.
IDENTIFIER_PATTERN = re.compile(r"^[!-~]{1,100}$")
PASSWORD_PATTERN = re.compile(r"^[a-zA-Z0-9+\-*_@]{3,20}$")

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100

# How the sandbox answers a create for an identifier that exists. Catapush's documentation
# does not say; 409 is the HTTP way, 400 with a title saying so is the other shape seen in
# REST APIs of this family, and clients must take either.
EXISTS_TITLES = {
    409: "Conflict - User already exists",
    400: "Bad Request - User already exists",
}


@dataclass(slots=True)
class SandboxUser:
    identifier: str
    password: str
    created_at: str
    platform: str | None = None

    def public(self) -> dict[str, Any]:
        """The user as Catapush shows it: never the password."""
        return {
            "identifier": self.identifier,
            "createdAt": self.created_at,
            "platform": self.platform,
        }


def user_problems(body: Any, *, partial: bool = False) -> list[str]:
    """What is wrong with a create (or, `partial`, a PATCH) body, as `<field>: <reason>`."""
    if not isinstance(body, dict):
        return [f"body: must be a JSON object, not {type(body).__name__}"]
    problems: list[str] = []
    fields = ("password",) if partial else ("identifier", "password")
    patterns = {"identifier": IDENTIFIER_PATTERN, "password": PASSWORD_PATTERN}
    for field in fields:
        value = body.get(field)
        if value is None:
            problems.append(f"{field}: Field required")
        elif not isinstance(value, str):
            problems.append(f"{field}: must be a string")
        elif patterns[field].fullmatch(value) is None:
            problems.append(f"{field}: does not match {patterns[field].pattern}")
    return problems


def _created_at(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(now))


class UserDirectory:
    """Users per app id. Everything runs on the event loop thread: no lock."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._apps: dict[int, dict[str, SandboxUser]] = {}
        self._wall_clock = wall_clock
        self.exists_status = 409
        self.created = 0

    def create(self, app_id: int, identifier: str, password: str) -> SandboxUser | None:
        """The new user, or None when the identifier exists in that app already."""
        users = self._apps.setdefault(app_id, {})
        if identifier in users:
            return None
        user = SandboxUser(identifier, password, _created_at(self._wall_clock()))
        users[identifier] = user
        self.created += 1
        return user

    def seed(self, app_id: int, identifiers: Iterable[str]) -> int:
        """Create users with a fixed password (for tests); returns how many were new."""
        return sum(self.create(app_id, i, "sandbox") is not None for i in identifiers)

    def get(self, app_id: int, identifier: str) -> SandboxUser | None:
        return self._apps.get(app_id, {}).get(identifier)

    def delete(self, app_id: int, identifier: str) -> bool:
        return self._apps.get(app_id, {}).pop(identifier, None) is not None

    def page(self, app_id: int, page: int, size: int) -> tuple[int, list[SandboxUser]]:
        """`total_count` and the users on 1-based page `page` of `size`."""
        users = self._apps.get(app_id, {})
        start = (max(page, 1) - 1) * size
        if start >= len(users):
            return len(users), []
        # Dicts keep insertion order; slicing a list copy is fine at sandbox sizes.
        return len(users), list(users.values())[start : start + size]

    def counts(self) -> dict[str, int]:
        return {str(app_id): len(users) for app_id, users in sorted(self._apps.items())}

    def clear(self) -> None:
        self._apps.clear()
        self.exists_status = 409
        self.created = 0
