"""In-memory state of the sandbox Catapush API: tokens, fault rules, request log, counters.

Pure: no I/O. Time comes from injectable clocks so that expiry can be tested without sleeping.
Everything here runs on the event loop thread, so nothing needs a lock.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from dispatcher.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PERMANENT_TOKEN
from dispatcher.sandbox.users import UserDirectory

Clock = Callable[[], float]
TokenCheck = Literal["ok", "unknown", "expired"]


# A benchmark at a few thousand requests/s would otherwise grow the log without bound; the
# counters stay exact past this limit, only the oldest entries are forgotten.
DEFAULT_LOG_LIMIT = 250_000


@dataclass(slots=True)
class FaultRule:
    """One injected misbehaviour of `POST /messages`.

    `count` is how many more matching sends the rule affects (None = until cleared).
    """

    status: int | None = None
    count: int | None = None
    retry_after: float | None = None
    identifier: str | None = None
    latency_ms: int | None = None
    drop: bool = False
    title: str | None = None
    detail: str | None = None

    def matches(self, identifiers: Sequence[str]) -> bool:
        return self.identifier is None or self.identifier in identifiers

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SandboxState:
    """Everything the sandbox remembers between requests."""

    def __init__(
        self,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        permanent_token: str = DEFAULT_PERMANENT_TOKEN,
        token_ttl_s: float | None = None,
        latency_ms: int = 0,
        log_bodies: bool = True,
        log_limit: int = DEFAULT_LOG_LIMIT,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        token_factory: Callable[[], str] = lambda: secrets.token_urlsafe(24),
    ) -> None:
        if log_limit < 1:
            raise ValueError("log_limit must be at least 1")
        self.client_id = client_id
        self.client_secret = client_secret
        self._initial_credentials = (client_id, client_secret)
        self.permanent_token = permanent_token
        self.log_bodies = log_bodies
        self._initial_token_ttl_s = token_ttl_s
        self._initial_latency_ms = latency_ms
        self._log_limit = log_limit
        self._clock = clock
        self._wall_clock = wall_clock
        self._token_factory = token_factory
        self._started = clock()
        # Tokens map to the clock reading when they were issued.
        self._tokens: dict[str, float] = {}
        # Which client (account) each temporary token was issued to.
        self._token_clients: dict[str, str] = {}
        # More accounts besides the primary one, and which account owns which app: a token
        # of one account may not send for another account's app.
        self._extra_clients: dict[str, str] = {}
        self._app_owners: dict[int, str] = {}
        self.users = UserDirectory(wall_clock)
        # Kept apart from unknown tokens so that a 401 can say which of the two it was.
        self._expired: set[str] = set()
        self.faults: list[FaultRule] = []
        self._log: list[dict[str, Any]] = []
        self._first_seq = 1
        self._next_seq = 1
        self._reset_tunables()
        self._reset_counters()

    def _reset_tunables(self) -> None:
        self.token_ttl_s = self._initial_token_ttl_s
        self.latency_ms = self._initial_latency_ms

    def _reset_counters(self) -> None:
        self.oauth_requests = 0
        self.tokens_issued = 0
        self.messages_total = 0
        self.messages_by_status: dict[int, int] = {}
        self.messages_dropped = 0
        self.accepted = 0
        self.duplicates = 0
        self._accepted_refs: set[str] = set()

    # -- tokens ------------------------------------------------------------------------------

    def issue_token(self, client_id: str | None = None) -> str:
        token = self._token_factory()
        self._tokens[token] = self._clock()
        self._token_clients[token] = client_id or self.client_id
        self.tokens_issued += 1
        return token

    def credentials_valid(self, client_id: str, client_secret: str) -> bool:
        if client_id == self.client_id:
            return client_secret == self.client_secret
        return self._extra_clients.get(client_id) == client_secret

    def add_client(self, client_id: str, client_secret: str, app_ids: Iterable[int]) -> None:
        """Another account: its own credentials, its own tokens, the apps it owns."""
        if client_id != self.client_id:
            self._extra_clients[client_id] = client_secret
        for app_id in app_ids:
            self._app_owners[app_id] = client_id

    def client_of(self, token: str) -> str:
        """The account a valid token belongs to (the permanent token: the primary one)."""
        return self._token_clients.get(token, self.client_id)

    def may_send_for(self, token: str, app_id: object) -> bool:
        """False when the app belongs to another account than the token's."""
        if not self._app_owners or not isinstance(app_id, int):
            return True
        owner = self._app_owners.get(app_id)
        return owner is None or owner == self.client_of(token)

    def check_token(self, token: str) -> TokenCheck:
        if token == self.permanent_token:
            return "ok"
        issued = self._tokens.get(token)
        if issued is None:
            return "expired" if token in self._expired else "unknown"
        ttl = self.token_ttl_s
        if ttl is not None and self._clock() - issued >= ttl:
            del self._tokens[token]
            self._expired.add(token)
            return "expired"
        return "ok"

    def expire_tokens(self) -> int:
        """Expire every temporary token issued so far; returns how many were live."""
        live = len(self._tokens)
        self._expired.update(self._tokens)
        self._tokens.clear()
        return live

    def revoke_tokens(self, client_id: str | None = None) -> int:
        """What `DELETE /auth/oauth` does to the caller's account (every account when
        `client_id` is None): afterwards those tokens are simply unknown."""
        doomed = [
            token
            for token in self._tokens
            if client_id is None or self._token_clients.get(token) == client_id
        ]
        for token in doomed:
            del self._tokens[token]
            self._token_clients.pop(token, None)
        if client_id is None:
            self._expired.clear()
        return len(doomed)

    def set_credentials(self, client_id: str, client_secret: str) -> None:
        """Rotate the client credentials: only these get a token from now on. Tokens issued
        to the old ones stay valid, as they do at Catapush until they expire."""
        self.client_id = client_id
        self.client_secret = client_secret

    def set_token_ttl(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError("token TTL must not be negative")
        # Applies to tokens already issued too: expiry is computed when a token is checked.
        self.token_ttl_s = seconds

    # -- faults ------------------------------------------------------------------------------

    def add_fault(self, rule: FaultRule) -> None:
        if rule.count is not None and rule.count < 1:
            raise ValueError("count must be at least 1 (or null for unlimited)")
        self.faults.append(rule)

    def clear_faults(self) -> None:
        self.faults.clear()

    def take_fault(self, identifiers: Sequence[str]) -> FaultRule | None:
        """The first rule (in the order added) matching a send; it uses up one of its count."""
        for index, rule in enumerate(self.faults):
            if not rule.matches(identifiers):
                continue
            if rule.count is not None:
                rule.count -= 1
                if rule.count <= 0:
                    del self.faults[index]
            return rule
        return None

    # -- request log and counters ------------------------------------------------------------

    def log(self, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Append an entry (adding `seq`, `kind` and `ts`) and return it."""
        entry["seq"] = self._next_seq
        entry["kind"] = kind
        entry["ts"] = self._wall_clock()
        self._next_seq += 1
        self._log.append(entry)
        # Trimming in large chunks keeps the cost amortised O(1) per request.
        if len(self._log) > self._log_limit:
            cut = len(self._log) - self._log_limit // 2
            del self._log[:cut]
            self._first_seq += cut
        return entry

    def requests(self, kind: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        """Logged entries with `seq` greater than `since`, oldest first."""
        # Sequence numbers are contiguous, so the start index is arithmetic, not a search.
        start = max(0, since - self._first_seq + 1)
        entries: Iterable[dict[str, Any]] = self._log[start:]
        if kind is not None:
            entries = (entry for entry in entries if entry["kind"] == kind)
        return list(entries)

    def clear_requests(self) -> None:
        # Sequence numbers keep increasing so a reader's `since` stays meaningful.
        self._first_seq = self._next_seq
        self._log.clear()

    def count_oauth(self) -> None:
        self.oauth_requests += 1

    def count_message(self, status: int | None, message_ref: str | None = None) -> None:
        """Count one `/messages` answer; `None` means the connection was dropped."""
        self.messages_total += 1
        if status is None:
            self.messages_dropped += 1
            return
        self.messages_by_status[status] = self.messages_by_status.get(status, 0) + 1
        if status == 201:
            self.accepted += 1
            if message_ref is not None:
                if message_ref in self._accepted_refs:
                    self.duplicates += 1
                else:
                    self._accepted_refs.add(message_ref)

    def stats(self) -> dict[str, Any]:
        return {
            "oauth_requests": self.oauth_requests,
            "tokens_issued": self.tokens_issued,
            "tokens_live": len(self._tokens),
            "messages_total": self.messages_total,
            "messages_by_status": {
                str(status): count for status, count in sorted(self.messages_by_status.items())
            },
            "messages_dropped": self.messages_dropped,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "faults_active": len(self.faults),
            "latency_ms": self.latency_ms,
            "token_ttl_s": self.token_ttl_s,
            "log_entries": len(self._log),
            "users": self.users.counts(),
            "users_created": self.users.created,
            "uptime_s": self._clock() - self._started,
        }

    def reset(self) -> None:
        """Back to the state at start: no faults, start-up latency and TTL, no log, no tokens."""
        self.faults.clear()
        self._tokens.clear()
        self._expired.clear()
        self._token_clients.clear()
        self._extra_clients.clear()
        self._app_owners.clear()
        self.users.clear()
        self.clear_requests()
        self._reset_tunables()
        self._reset_counters()
        self.client_id, self.client_secret = self._initial_credentials
