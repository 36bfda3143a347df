"""What the command groups share: exit statuses, one-line failures, running a coroutine
that SIGINT and SIGTERM interrupt."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import redis
import typer

from dispatcher.errors import (
    CatapushError,
    ConfigurationError,
    DispatcherError,
    RedisRefused,
    TokenUnavailable,
)
from dispatcher.settings import Settings, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# What a shell reports for a command SIGINT ended.
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)


def configure_logs(settings: Settings) -> None:
    from dispatcher.logs import configure_logging

    configure_logging(settings.log_format)


@contextmanager
def failures(settings: Settings) -> Iterator[None]:
    """Ends the command with one line: a setting (2), Redis or Catapush failing (1)."""
    from dispatcher.store.connection import translate_for

    try:
        yield
    except redis.RedisError as exc:
        error: DispatcherError = translate_for(exc, settings)
    except TokenUnavailable as exc:
        error = ConfigurationError(f"credentials refused: {exc}") if exc.permanent else exc
    except (ConfigurationError, CatapushError) as exc:
        error = exc
    except DispatcherError as exc:
        if not isinstance(exc.__cause__, redis.RedisError):
            raise
        error = exc
    else:
        return
    code = EXIT_USAGE if isinstance(error, ConfigurationError | RedisRefused) else EXIT_FAILED
    fail(str(error), code)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the coroutine ran."""


def run_interruptible(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine`; SIGINT or SIGTERM cancels it and raises `Interrupted`."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop)
        try:
            return await coroutine
        except asyncio.CancelledError:
            if stopped:
                raise Interrupted from None
            raise
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    return asyncio.run(main())
