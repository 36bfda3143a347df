"""`dispatcher token status|revoke`: the fleet's shared Catapush token, never shown."""

from __future__ import annotations

from contextlib import closing
from typing import Annotated

import orjson
import typer

from dispatcher.commands import exits
from dispatcher.commands.common import (
    EXIT_INTERRUPTED,
    Interrupted,
    configure_logs,
    failures,
    run_interruptible,
    settings_or_exit,
)

token_app = typer.Typer(
    epilog=exits.GROUP,
    help="The shared Catapush access token: its status, and revoking it.",
    no_args_is_help=True,
)

AccountOption = Annotated[
    str | None,
    typer.Option("--account", help="Account of the accounts file (default: the default app's)."),
]


@token_app.command("status", epilog=exits.TOKEN)
def token_status(
    account: AccountOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Whether a token is cached for the fleet, its age and what is known of its expiry."""
    from dispatcher.catapush.accounts import accounts_from
    from dispatcher.catapush.tokenops import token_status as read_status
    from dispatcher.store.connection import sync_redis

    settings = settings_or_exit()
    with failures(settings):
        chosen = accounts_from(settings).named(account)
        with closing(sync_redis(settings)) as client:
            status = read_status(client, settings, chosen)
    if as_json:
        typer.echo(orjson.dumps(status.to_dict()).decode())
        return
    for line in status.lines():
        typer.echo(line)


@token_app.command("revoke", epilog=exits.TOKEN)
def token_revoke(account: AccountOption = None) -> None:
    """Revoke every access token of the account at Catapush (DELETE /auth/oauth), then drop
    the cached one: the next sends fetch exactly one new token for the whole fleet."""
    from dispatcher.catapush.accounts import accounts_from
    from dispatcher.catapush.tokenops import revoke
    from dispatcher.store.connection import async_redis

    settings = settings_or_exit()
    configure_logs(settings)

    async def main() -> str:
        chosen = accounts_from(settings).named(account)
        redis = async_redis(settings, max_connections=2)
        try:
            await revoke(settings, chosen, redis)
        finally:
            await redis.aclose()
        return chosen.name

    with failures(settings):
        try:
            name = run_interruptible(main())
        except Interrupted:
            raise typer.Exit(EXIT_INTERRUPTED) from None
    typer.echo(f"revoked every access token of account {name}; the next send fetches a new one")
