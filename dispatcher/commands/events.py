"""`dispatcher events tail`: the events stream (dead identifiers) as it grows."""

from __future__ import annotations

from contextlib import closing
from typing import Annotated, Any

import orjson
import redis
import typer

from dispatcher.commands import exits
from dispatcher.commands.common import failures, settings_or_exit

events_app = typer.Typer(
    epilog=exits.GROUP,
    help="Events producers act on (identifiers Catapush cannot deliver to).",
    no_args_is_help=True,
)

# XREAD blocks this long at a time, so SIGINT is never kept waiting for long.
BLOCK_MS = 1_000


def _show(entry: dict[str, str], as_json: bool) -> None:
    if as_json:
        typer.echo(orjson.dumps(entry).decode())
        return
    typer.echo(
        f"{entry['id']:<18} {entry.get('type', '-'):<22} {entry.get('status', '-'):<26} "
        f"{entry.get('identifier', '-'):<30} intent={entry.get('intent_id') or '-'} "
        f"message={entry.get('messageId', '-')}"
    )


@events_app.command("tail", epilog=exits.EVENTS)
def events_tail(
    last: Annotated[int, typer.Option("--last", "-n", min=0, help="Entries to show first.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep showing new entries until Ctrl-C.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The latest events, oldest first; with --follow, new ones as they come."""
    from dispatcher.catapush.events import decode_entry
    from dispatcher.store.connection import sync_redis
    from dispatcher.store.keys import Keys

    settings = settings_or_exit()
    stream = Keys(settings.namespace).events
    with failures(settings), closing(sync_redis(settings)) as client:
        latest: Any = client.xrevrange(stream, count=last) if last else []
        cursor = "$"
        for entry_id, fields in reversed(latest):
            _show(decode_entry(entry_id, fields), as_json)
        if latest:
            cursor = decode_entry(*latest[0])["id"]
        elif follow:
            # Start from the stream's end as it is now, not from what arrives meanwhile.
            info: Any = client.xrevrange(stream, count=1)
            cursor = decode_entry(*info[0])["id"] if info else "0-0"
        try:
            while follow:
                try:
                    answer: Any = client.xread({stream: cursor}, block=BLOCK_MS)
                except redis.TimeoutError:
                    continue
                for _, entries in answer or []:
                    for entry_id, fields in entries:
                        entry = decode_entry(entry_id, fields)
                        cursor = entry["id"]
                        _show(entry, as_json)
        except KeyboardInterrupt:
            return
