"""`dispatcher users`: the Catapush users of an app (list, get, create, passwd, delete,
import)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Annotated, Any, TypeVar

import orjson
import typer

from dispatcher.commands import exits
from dispatcher.commands.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Interrupted,
    configure_logs,
    fail,
    failures,
    run_interruptible,
    settings_or_exit,
)

users_app = typer.Typer(
    epilog=exits.GROUP,
    help="Catapush users: Catapush delivers only to identifiers that are users of the app.",
    no_args_is_help=True,
)

AppOption = Annotated[
    int | None,
    typer.Option(
        "--app", min=1, help="Mobile app id (default: DISPATCHER_CATAPUSH_MOBILE_APP_ID)."
    ),
]
AccountOption = Annotated[
    str | None,
    typer.Option("--account", help="Account of the accounts file (default: the app's)."),
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from stdin instead of generating one."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]

# Plain progress lines when stderr is not a terminal: at most one every few seconds.
PLAIN_PROGRESS_EVERY_S = 5.0

T = TypeVar("T")


def _call(
    app_id: int | None,
    account: str | None,
    work: Callable[[Any], Awaitable[T]],
) -> T:
    """Run `work(users)` for the chosen app, every call under the account's rate limit."""
    from dispatcher.catapush.operations import target
    from dispatcher.catapush.session import account_session
    from dispatcher.catapush.users import Users

    settings = settings_or_exit()
    configure_logs(settings)

    async def main() -> T:
        chosen, app = target(settings, app_id, account)
        async with account_session(settings, chosen) as session:
            return await work(Users(session.api, app, limiter=session.limiter))

    with failures(settings):
        try:
            return run_interruptible(main())
        except Interrupted:
            raise typer.Exit(EXIT_INTERRUPTED) from None
    raise AssertionError("unreachable")  # failures() ends the command on an error


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password and whether it was generated (and so must be shown once)."""
    from dispatcher.catapush.users import generate_password, password_problem

    if not from_stdin:
        return generate_password(), True
    password = sys.stdin.readline().rstrip("\r\n")
    problem = password_problem(password)
    if problem is not None:
        fail(f"password: {problem}", EXIT_USAGE)
    return password, False


def _print_user(user: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(orjson.dumps(user.to_dict()).decode())
    else:
        typer.echo(f"{user.identifier:<40} {user.platform or '-':<8} {user.created_at or '-'}")


@users_app.command("list", epilog=exits.USERS)
def users_list(
    app: AppOption = None, account: AccountOption = None, as_json: JsonOption = False
) -> None:
    """Every user of the app, page after page as they come."""

    async def work(users: Any) -> int:
        count = 0
        async for _, page in users.pages():
            for user in page:
                _print_user(user, as_json)
            count += len(page)
        return count

    count = _call(app, account, work)
    if not as_json:
        typer.echo(f"{count} user(s)", err=True)


@users_app.command("get", epilog=exits.USERS)
def users_get(
    identifier: str,
    app: AppOption = None,
    account: AccountOption = None,
    as_json: JsonOption = False,
) -> None:
    """One user; exit 1 when there is none."""
    from dispatcher.errors import UserNotFound

    async def work(users: Any) -> Any:
        try:
            return await users.get(identifier)
        except UserNotFound:
            return None

    user = _call(app, account, work)
    if user is None:
        fail(f"no user {identifier!r} in app {app or 'default'}")
    _print_user(user, as_json)


@users_app.command("create", epilog=exits.USERS)
def users_create(
    identifier: str,
    app: AppOption = None,
    account: AccountOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user. Without --password-stdin a password is generated and printed once."""
    from dispatcher.catapush.users import identifier_problem
    from dispatcher.errors import UserExists

    problem = identifier_problem(identifier)
    if problem is not None:
        fail(f"identifier: {problem}", EXIT_USAGE)
    password, generated = _password(password_stdin)

    async def work(users: Any) -> bool:
        try:
            await users.create(identifier, password)
        except UserExists:
            return False
        return True

    if not _call(app, account, work):
        fail(f"user {identifier!r} exists already")
    typer.echo(f"created {identifier}")
    if generated:
        # The only time it is shown: Catapush never gives a password back.
        typer.echo(f"password: {password}")


@users_app.command("passwd", epilog=exits.USERS)
def users_passwd(
    identifier: str,
    app: AppOption = None,
    account: AccountOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Set a user's password. Without --password-stdin one is generated and printed once."""
    from dispatcher.errors import UserNotFound

    password, generated = _password(password_stdin)

    async def work(users: Any) -> bool:
        try:
            await users.set_password(identifier, password)
        except UserNotFound:
            return False
        return True

    if not _call(app, account, work):
        fail(f"no user {identifier!r}")
    typer.echo(f"password changed for {identifier}")
    if generated:
        typer.echo(f"password: {password}")


@users_app.command("delete", epilog=exits.USERS)
def users_delete(identifier: str, app: AppOption = None, account: AccountOption = None) -> None:
    """Delete a user; exit 1 when there is none."""
    from dispatcher.errors import UserNotFound

    async def work(users: Any) -> bool:
        try:
            await users.delete(identifier)
        except UserNotFound:
            return False
        return True

    if not _call(app, account, work):
        fail(f"no user {identifier!r}")
    typer.echo(f"deleted {identifier}")


# -- import ----------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar with rate and ETA on a terminal, plain lines otherwise."""

    def __init__(self, total: int | None, *, fancy: bool) -> None:
        self._total = total
        self._started = time.monotonic()
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None
        if fancy:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("users"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[counts]}"),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("import", total=total, rate="-", counts="")
            self._bar.start()

    def __call__(self, report: Any) -> None:
        now = time.monotonic()
        elapsed = max(now - self._started, 1e-6)
        rate = report.done / elapsed
        counts = f"created {report.created} skipped {report.skipped} failed {len(report.failed)}"
        if self._bar is not None:
            self._bar.update(self._task, completed=report.done, rate=f"{rate:.0f}", counts=counts)
            return
        if now - self._last_line < PLAIN_PROGRESS_EVERY_S:
            return
        self._last_line = now
        of = f"/{self._total}" if self._total is not None else ""
        eta = ""
        if self._total and rate > 0:
            eta = f", ETA {max(0.0, (self._total - report.done) / rate):.0f} s"
        typer.echo(f"users: {report.done}{of} rows, {counts}, {rate:.0f} rows/s{eta}", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _password_file(path: Path | None) -> tuple[Callable[[str, str], None] | None, IO[str] | None]:
    if path is None:
        return None, None
    try:
        # Only the owner may read generated passwords.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        fail(f"--passwords-out: cannot write {path}: {exc.strerror or exc}", EXIT_USAGE)
    handle = os.fdopen(fd, "w", encoding="utf-8")

    def write(identifier: str, password: str) -> None:
        handle.write(f"{identifier},{password}\n")
        handle.flush()

    return write, handle


@users_app.command("import", epilog=exits.USERS_IMPORT)
def users_import(
    file: Annotated[Path, typer.Argument(help="CSV (identifier,password) or JSON lines.")],
    app: AppOption = None,
    account: AccountOption = None,
    concurrency: Annotated[int, typer.Option(min=1, max=512, help="Creates in flight.")] = 32,
    passwords_out: Annotated[
        Path | None,
        typer.Option(
            "--passwords-out",
            help="Append identifier,password for each generated password here (mode 0600).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Create the users of a file, concurrently under the account's rate limit.

    Resumable: a user that exists is skipped, so run it again after an interruption. Rows
    that fail are reported as `row N: FIELD: reason` (N is the line in the file); the exit
    status is 1 if any failed.
    """
    from dispatcher.catapush.importer import ImportReport
    from dispatcher.catapush.operations import import_file
    from dispatcher.catapush.userfile import count_rows

    settings = settings_or_exit()
    configure_logs(settings)
    if not file.is_file():
        fail(f"{file}: no such file", EXIT_USAGE)
    progress = _Progress(count_rows(file), fancy=sys.stderr.isatty() and not as_json)
    passwords, handle = _password_file(passwords_out)
    report = ImportReport()
    interrupted = False
    try:
        with failures(settings):
            try:
                run_interruptible(
                    import_file(
                        settings,
                        file,
                        app_id=app,
                        account=account,
                        concurrency=concurrency,
                        progress=progress,
                        passwords=passwords,
                        report=report,
                    )
                )
            except Interrupted:
                interrupted = True
    finally:
        progress.close()
        if handle is not None:
            handle.close()
    _summary(report, as_json=as_json, passwords_kept=passwords_out is not None)
    if interrupted:
        typer.echo(
            "interrupted: run the same command again to finish (existing users are skipped)",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def _summary(report: Any, *, as_json: bool, passwords_kept: bool) -> None:
    if as_json:
        typer.echo(orjson.dumps(report.to_dict()).decode())
    else:
        for error in sorted(report.failed, key=lambda e: e.row):
            typer.echo(str(error), err=True)
        typer.echo(
            f"created {report.created}, skipped {report.skipped} (existed), "
            f"failed {len(report.failed)}"
        )
    if report.generated_passwords and not passwords_kept:
        typer.echo(
            f"{report.generated_passwords} password(s) generated and not kept "
            "(--passwords-out keeps them)",
            err=True,
        )
