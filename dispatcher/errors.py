"""Every exception the dispatcher raises, in one tree.

    DispatcherError
    ├── ConfigurationError       a setting is missing or malformed (exit status 2)
    │   └── RedisRefused         Redis refused DISPATCHER_REDIS_URL: password, user or database
    ├── IntentRefused            an intent can never be sent (`problems`: `<field>: <reason>`)
    ├── CallbackRefused          a status callback that is not a valid MessageStatus
    ├── SlotUnavailable          no rate-limit slot within the longest wait (not a failure)
    ├── RedisUnavailable         Redis did not answer: down, unreachable, timed out, loading,
    │                            or a read-only replica after a failover (exit status 1)
    └── CatapushError            talking to Catapush failed
        ├── CatapushRejected     Catapush answered with an error status (status, title, detail)
        │   ├── UserExists       a user to create exists already (409, or 400 titled so)
        │   └── UserNotFound     no such user in the app (404)
        ├── CatapushUnreachable  no answer: timeout or connection error
        │   └── CatapushTimeout
        └── TokenUnavailable     no OAuth token could be obtained

Foreign exceptions (httpx, redis) are translated at the edge with `raise ... from exc`, so
callers only ever handle this tree. Any other error answer from Redis (a command it refused,
say) is raised as a plain `DispatcherError`.

Kept free of imports: `import dispatcher` loads this module and nothing heavier.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Base of every error the dispatcher raises on purpose."""


class ConfigurationError(DispatcherError):
    """A setting is missing or malformed; the message names the variable."""


class RedisRefused(ConfigurationError):
    """Redis turned the configured URL away (wrong password or user, no such database):
    retrying cannot help. The message starts with `DISPATCHER_REDIS_URL: ` and shows the URL
    with its password replaced by `***`."""


class RedisUnavailable(DispatcherError):
    """Redis did not answer, or cannot take writes now; the same call may work later. The
    message shows the URL with its password replaced by `***`."""


class IntentRefused(DispatcherError, ValueError):
    """An intent that can never be sent; `problems` lists each `<field>: <reason>`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class CallbackRefused(DispatcherError, ValueError):
    """A callback that is not a valid `MessageStatus`; `key` names the offending key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class SlotUnavailable(DispatcherError):
    """No rate-limit slot within the longest wait allowed; ask again in `retry_in_s`."""

    def __init__(self, retry_in_s: float) -> None:
        super().__init__(f"no rate-limit slot for {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s


class CatapushError(DispatcherError):
    """Talking to Catapush failed."""


class CatapushRejected(CatapushError):
    """Catapush answered with an error status.

    `title` is Catapush's stable error name and may be matched on; `detail` is prose.
    `retry_after_s` is the server's `Retry-After`, when it sent one.
    """

    def __init__(
        self,
        status_code: int,
        title: str,
        detail: str,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {title}: {detail}" if detail else f"{status_code} {title}")
        self.status_code = status_code
        self.title = title
        self.detail = detail
        self.retry_after_s = retry_after_s


class UserExists(CatapushRejected):
    """The user to create exists already: Catapush said so with `409`, or with `400` and a
    title saying it exists."""


class UserNotFound(CatapushRejected):
    """No user with that identifier in the app (`404`)."""


class CatapushUnreachable(CatapushError):
    """No answer from Catapush: the connection failed or broke."""


class CatapushTimeout(CatapushUnreachable):
    """Catapush did not answer within the configured timeout."""


class TokenUnavailable(CatapushError):
    """No OAuth token could be obtained (credentials refused or the token endpoint failed)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
