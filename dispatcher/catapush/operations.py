"""Users operations from settings: which account and app, then the call. What both the CLI
and `dispatcher.import_users` use."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dispatcher.catapush.accounts import Account, accounts_from
from dispatcher.catapush.importer import (
    DEFAULT_IMPORT_CONCURRENCY,
    ImportReport,
    PasswordSink,
    ProgressCallback,
    import_users,
)
from dispatcher.catapush.session import account_session
from dispatcher.catapush.userfile import read_rows
from dispatcher.catapush.users import Users
from dispatcher.errors import ConfigurationError
from dispatcher.settings import ENV_PREFIX, Settings


def target(settings: Settings, app_id: int | None, account: str | None) -> tuple[Account, int]:
    """The account and app a users command works on: `--app` (or the default app), sent with
    `--account` (or the account that lists the app). Raises `ConfigurationError`."""
    accounts = accounts_from(settings)
    app = app_id if app_id is not None else settings.catapush_mobile_app_id
    if app is None:
        raise ConfigurationError(
            f"--app: required unless {ENV_PREFIX}CATAPUSH_MOBILE_APP_ID is set"
        )
    if account is not None:
        return accounts.named(account), app
    chosen = accounts.for_app(app)
    if chosen is None:
        raise ConfigurationError(
            f"--app: no account lists app {app} in its mobile_app_ids "
            f"({', '.join(accounts.names)}); name one with --account"
        )
    return chosen, app


async def import_file(
    settings: Settings,
    path: Path,
    *,
    app_id: int | None = None,
    account: str | None = None,
    concurrency: int = DEFAULT_IMPORT_CONCURRENCY,
    progress: ProgressCallback | None = None,
    passwords: PasswordSink | None = None,
    report: ImportReport | None = None,
) -> ImportReport:
    chosen, app = target(settings, app_id, account)
    rows = read_rows(path)
    async with account_session(settings, chosen, concurrency=concurrency) as session:
        return await import_users(
            rows,
            Users(session.api, app, limiter=session.limiter),
            concurrency=concurrency,
            progress=progress,
            passwords=passwords,
            report=report,
        )


def import_users_file(
    path: str | Path,
    *,
    settings: Settings,
    app_id: int | None = None,
    account: str | None = None,
    concurrency: int = DEFAULT_IMPORT_CONCURRENCY,
    passwords: PasswordSink | None = None,
) -> ImportReport:
    """Blocking: runs the import on an event loop of its own."""
    return asyncio.run(
        import_file(
            settings,
            Path(path),
            app_id=app_id,
            account=account,
            concurrency=concurrency,
            passwords=passwords,
        )
    )
