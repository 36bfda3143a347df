"""Create many users at once, under the account's shared rate limit.

Resumable by construction: a user that exists already is skipped, not failed, so running an
interrupted import again creates only what is missing. Transient failures (`429`, `5xx`, no
answer) are retried with backoff; a row Catapush refuses is reported with its field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dispatcher.backoff import backoff_delay_ms
from dispatcher.catapush.userfile import RowError, UserRow
from dispatcher.catapush.users import User, generate_password
from dispatcher.errors import (
    CatapushRejected,
    CatapushUnreachable,
    SlotUnavailable,
    TokenUnavailable,
    UserExists,
)
from dispatcher.logs import get_logger
from dispatcher.outcome import is_transient

log = get_logger(__name__)

DEFAULT_IMPORT_CONCURRENCY = 32
DEFAULT_IMPORT_ATTEMPTS = 5
RETRY_MIN_MS = 200
RETRY_MAX_MS = 10_000
_FIELDS = ("identifier", "password")


class UserCreator(Protocol):
    async def create(self, identifier: str, password: str) -> User: ...


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    skipped: int = 0
    generated_passwords: int = 0
    failed: list[RowError] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.created + self.skipped + len(self.failed)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "generated_passwords": self.generated_passwords,
            "errors": [error.to_dict() for error in sorted(self.failed, key=lambda e: e.row)],
        }


ProgressCallback = Callable[[ImportReport], None]
PasswordSink = Callable[[str, str], None]


def _row_error(row: int, exc: CatapushRejected) -> RowError:
    # Catapush's detail may name the field first (`identifier: ...`); otherwise the row.
    name, sep, _ = exc.detail.partition(":")
    at = name.strip() if sep and name.strip() in _FIELDS else "row"
    return RowError(row, at, f"Catapush answered {exc}")


async def _create_one(
    row: UserRow,
    users: UserCreator,
    report: ImportReport,
    passwords: PasswordSink | None,
    max_attempts: int,
) -> None:
    password = row.password
    if password is None:
        password = generate_password()
    attempt = 1
    while True:
        try:
            await users.create(row.identifier, password)
        except SlotUnavailable:
            continue  # waiting for the rate limit is not a failed attempt
        except UserExists:
            report.skipped += 1
            return
        except TokenUnavailable:
            raise
        except (CatapushRejected, CatapushUnreachable) as exc:
            status = exc.status_code if isinstance(exc, CatapushRejected) else None
            transient = status is None or is_transient(status)
            if not transient or attempt >= max_attempts:
                if isinstance(exc, CatapushRejected):
                    report.failed.append(_row_error(row.row, exc))
                else:
                    report.failed.append(RowError(row.row, "row", f"no answer: {exc}"))
                return
            retry_after = exc.retry_after_s if isinstance(exc, CatapushRejected) else None
            delay = backoff_delay_ms(attempt, RETRY_MIN_MS, RETRY_MAX_MS, retry_after_s=retry_after)
            attempt += 1
            await asyncio.sleep(delay / 1000)
            continue
        report.created += 1
        if row.password is None:
            report.generated_passwords += 1
            if passwords is not None:
                passwords(row.identifier, password)
        return


async def import_users(
    rows: Iterable[UserRow | RowError],
    users: UserCreator,
    *,
    concurrency: int = DEFAULT_IMPORT_CONCURRENCY,
    max_attempts: int = DEFAULT_IMPORT_ATTEMPTS,
    progress: ProgressCallback | None = None,
    passwords: PasswordSink | None = None,
    report: ImportReport | None = None,
) -> ImportReport:
    """Create every valid row (`users` paces itself under the rate limit); returns the
    counts and the rows that failed. `report` (when given) is filled in place, so a caller
    that is interrupted still holds the counts. Raises `TokenUnavailable` when the
    credentials are refused: no row could go."""
    report = report if report is not None else ImportReport()
    queue: asyncio.Queue[UserRow | None] = asyncio.Queue(maxsize=concurrency * 2)

    async def work() -> None:
        while (row := await queue.get()) is not None:
            await _create_one(row, users, report, passwords, max_attempts)
            if progress is not None:
                progress(report)

    workers = [asyncio.create_task(work()) for _ in range(concurrency)]
    try:
        for item in rows:
            if isinstance(item, RowError):
                report.failed.append(item)
                if progress is not None:
                    progress(report)
                continue
            # Waiting on the queue also surfaces a worker that died (credentials refused).
            put = asyncio.create_task(queue.put(item))
            done, _ = await asyncio.wait([put, *workers], return_when=asyncio.FIRST_COMPLETED)
            if put not in done:
                put.cancel()
                for task in done:
                    task.result()
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    log.info(
        "users.imported",
        created=report.created,
        skipped=report.skipped,
        failed=len(report.failed),
    )
    return report
