"""The `dispatcher` command. Exit status: 0 success, 1 an operation failed, 2 usage or
configuration error.

A Redis failure is one line on stderr, the URL's password shown as `***`: exit 1 when Redis
did not answer, 2 when it refused `DISPATCHER_REDIS_URL` (a wrong password or database).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import redis
import typer

from dispatcher import __version__
from dispatcher.commands import exits
from dispatcher.commands.events import events_app
from dispatcher.commands.token import token_app
from dispatcher.commands.users import users_app
from dispatcher.errors import ConfigurationError, DispatcherError, IntentRefused, RedisRefused
from dispatcher.settings import DEFAULT_CONCURRENCY, Settings, load_settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# Intents written to Redis in one round trip by `dispatcher enqueue`.
ENQUEUE_BATCH = 500

app = typer.Typer(
    name="dispatcher",
    help="Deliver push notifications through Catapush.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=exits.ROOT,
)
dlq_app = typer.Typer(
    help="Inspect, replay and purge dead letters.", no_args_is_help=True, epilog=exits.GROUP
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(users_app, name="users")
app.add_typer(token_app, name="token")
app.add_typer(events_app, name="events")


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigurationError as exc:
        _fail(str(exc), EXIT_USAGE)


@contextmanager
def _redis_failures(settings: Settings) -> Iterator[None]:
    """Ends the command on a Redis failure, with one line and the right exit status."""
    from dispatcher.store.connection import translate_for

    try:
        yield
    except redis.RedisError as exc:
        error = translate_for(exc, settings)
    except DispatcherError as exc:
        # Only what was translated from a Redis error; anything else is not ours to end.
        if not isinstance(exc.__cause__, redis.RedisError):
            raise
        error = exc
    else:
        return
    _fail(str(error), EXIT_USAGE if isinstance(error, RedisRefused) else EXIT_FAILED)


def _configure_logs(settings: Settings) -> None:
    from dispatcher.logs import configure_logging

    configure_logging(settings.log_format)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"catapush-dispatcher {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Deliver push notifications through Catapush."""


# -- enqueue ---------------------------------------------------------------------------------


def _json_lines(source: str) -> Iterator[tuple[int, str]]:
    if source == "-":
        yield from enumerate(sys.stdin, start=1)
        return
    path = Path(source)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {source}: {exc.strerror}", EXIT_USAGE)
    with handle:
        try:
            yield from enumerate(handle, start=1)
        except UnicodeDecodeError as exc:
            _fail(f"{source} is not UTF-8 text: {exc.reason} at byte {exc.start}", EXIT_FAILED)


@contextmanager
def _enqueue_progress(source: str) -> Iterator[Any]:
    """A progress bar over the lines of a file, on a terminal only (stdin has no end to
    measure, and a pipe or log gets the ids alone)."""
    from dispatcher.commands.progress import Progress

    if source == "-" or not sys.stderr.isatty():
        yield None
        return
    try:
        with Path(source).open("rb") as handle:
            total = sum(1 for _ in handle)
    except OSError:
        yield None  # _json_lines reports it
        return
    with Progress("enqueue", total) as progress:
        yield progress
        progress.update(total)


@app.command(epilog=exits.ENQUEUE)
def enqueue(
    source: Annotated[
        str, typer.Argument(help="A file of JSON lines, one intent each, or - for stdin.")
    ],
) -> None:
    """Validate intents and put them on the queue; prints each accepted id.

    A bad line is reported on stderr as `line N: <field>: <reason>`; the other lines are
    still enqueued, and the exit status is 1 if any line was refused. A file shows a
    progress bar on a terminal.
    """
    from dispatcher.intents import Intent, parse_intent
    from dispatcher.producer import Producer

    settings = _settings()
    _configure_logs(settings)
    try:
        producer = Producer.from_settings(settings)
    except ConfigurationError as exc:
        _fail(str(exc), EXIT_USAGE)
    refused = 0
    batch: list[Intent] = []

    def flush() -> None:
        for intent_id in producer.enqueue_many(batch, checked=True):
            typer.echo(intent_id)
        batch.clear()

    with _redis_failures(settings), closing(producer), _enqueue_progress(source) as progress:
        for number, line in _json_lines(source):
            if progress is not None and number % ENQUEUE_BATCH == 0:
                progress.update(number, f"{refused} refused" if refused else "")
            if not line.strip():
                continue
            try:
                batch.append(producer.check(parse_intent(orjson.loads(line))))
            except orjson.JSONDecodeError as exc:
                typer.echo(f"line {number}: not valid JSON: {exc}", err=True)
                refused += 1
            except IntentRefused as exc:
                for problem in exc.problems:
                    typer.echo(f"line {number}: {problem}", err=True)
                refused += 1
            if len(batch) >= ENQUEUE_BATCH:
                flush()
        flush()
    if refused:
        typer.echo(f"{refused} line(s) refused", err=True)
        raise typer.Exit(EXIT_FAILED)


# -- worker, sandbox, demo -------------------------------------------------------------------


@app.command(epilog=exits.WORKER)
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    threads: Annotated[
        int, typer.Option(min=1, help="Sends in flight per process (on one event loop).")
    ] = DEFAULT_CONCURRENCY,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve /healthz and /metrics on this port (process i: port + i).",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "0.0.0.0",
    lanes: Annotated[
        list[str] | None,
        typer.Option(
            "--lanes",
            metavar="LANE",
            help="Serve only these lanes (transactional, bulk; repeat or comma-separate). "
            "Default: both.",
        ),
    ] = None,
) -> None:
    """Consume the queues and send each intent to Catapush, until SIGTERM or SIGINT."""
    from dispatcher.lanes import parse_lanes
    from dispatcher.worker.supervisor import Probe, run_workers

    try:
        served = parse_lanes(lanes or [])
    except ValueError as exc:
        _fail(f"--lanes: {exc}", EXIT_USAGE)
    settings = _settings()
    probe = None if metrics_port is None else Probe(metrics_host, metrics_port)
    try:
        code = run_workers(
            settings, processes=processes, threads=threads, probe=probe, lanes=served
        )
    except ConfigurationError as exc:
        _fail(str(exc), EXIT_USAGE)
    raise typer.Exit(code)


@app.command(epilog=exits.SANDBOX)
def sandbox(
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8710,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    token_ttl: Annotated[
        float | None, typer.Option(help="Seconds an OAuth token lives; unset: for ever.")
    ] = None,
    latency_ms: Annotated[int, typer.Option(min=0, help="Delay before each answer.")] = 0,
) -> None:
    """Run a local Catapush API (OAuth, POST /messages, fault injection) for trials and tests."""
    from dispatcher.sandbox import serve

    try:
        serve(host, port, token_ttl_s=token_ttl, latency_ms=latency_ms)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


@app.command(epilog=exits.SERVE)
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = 8000,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve without DISPATCHER_API_TOKENS on an address that is not loopback.",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API, Catapush status callbacks, the ops console, /healthz, /readyz and
    /metrics until SIGTERM."""
    from dispatcher.http.app import check_exposure, run_server
    from dispatcher.listening import bind_listener

    settings = _settings()
    _configure_logs(settings)
    try:
        tokens = check_exposure(settings, host, insecure=insecure)
    except ConfigurationError as exc:
        _fail(str(exc), EXIT_USAGE)
    try:
        sock = bind_listener(host, port)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        code = run_server(settings, sock, tokens)
    except ConfigurationError as exc:
        sock.close()
        _fail(str(exc), EXIT_USAGE)
    raise typer.Exit(code)


@app.command(epilog=exits.DEMO)
def demo(
    count: Annotated[int, typer.Option(min=1, max=10_000, help="Sample intents to send.")] = 12,
    rate: Annotated[
        float,
        typer.Option(
            min=1, max=5_000, help="The demo's own rate limit, sends per second (all workers)."
        ),
    ] = 200.0,
) -> None:
    """Run the whole pipeline on this machine (own Redis, sandbox, worker) and show outcomes.

    The wait for outcomes follows from --count and --rate; progress shows as a bar on a
    terminal, as a line every 5 s otherwise.
    """
    from dispatcher.demo import run_demo

    raise typer.Exit(run_demo(count=count, rate=rate))


# -- status and dead letters -----------------------------------------------------------------


def _redis(settings: Settings) -> redis.Redis:
    from dispatcher.store.connection import sync_redis

    return sync_redis(settings)


@app.command(epilog=exits.STATUS)
def status(
    intent_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="An intent id; none: the overview.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What happened to an intent: sent (with Catapush messageId), dead, or not known here,
    and the status callbacks Catapush sent for it. Without an ID, the overview: each lane's
    depth, the age of its oldest message, scheduled and retrying counts, and dead letters
    by reason."""
    from dispatcher.store.status import format_status, intent_status, is_known

    settings = _settings()
    if intent_id is None:
        _overview(settings, as_json=as_json)
        return
    with _redis_failures(settings), closing(_redis(settings)) as client:
        report = intent_status(client, settings, intent_id)
    if as_json:
        typer.echo(orjson.dumps(report).decode())
    else:
        for line in format_status(report):
            typer.echo(line)
    # Callbacks alone are still news about the intent, so only nothing at all is a failure.
    if not is_known(report):
        raise typer.Exit(EXIT_FAILED)


@app.command(epilog=exits.CANCEL)
def cancel(
    intent_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Intent ids.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object a line.")] = False,
) -> None:
    """Stop intents that have not gone out: queued, scheduled, retrying, or the unsent parts
    of a split one. They are never sent, and `status` says cancelled. An id not enqueued
    yet is cancelled too."""
    from dispatcher.store.cancels import cancel_intents

    settings = _settings()
    with _redis_failures(settings):
        answers = cancel_intents(intent_ids, settings)
    for answer in answers:
        typer.echo(orjson.dumps(answer.to_json()).decode() if as_json else answer.describe())
    if not all(answer.stopped for answer in answers):
        raise typer.Exit(EXIT_FAILED)


def _overview(settings: Settings, *, as_json: bool) -> None:
    import asyncio

    from dispatcher.store.connection import async_redis
    from dispatcher.store.keys import Keys
    from dispatcher.store.overview import format_overview, read_overview

    async def read() -> Any:
        client = async_redis(settings)
        try:
            return await read_overview(client, Keys(settings.namespace), settings.queue)
        finally:
            await client.aclose()

    with _redis_failures(settings):
        overview = asyncio.run(read())
    if as_json:
        typer.echo(orjson.dumps(overview.to_dict()).decode())
    else:
        for line in format_overview(overview):
            typer.echo(line)


ReasonOption = Annotated[
    str | None,
    typer.Option("--reason", help="Only dead letters with this reason.", metavar="REASON"),
]


def _reason(value: str | None) -> Any:
    from dispatcher.store.deadletters import REASONS

    if value is not None and value not in REASONS:
        _fail(f"--reason: must be one of {', '.join(REASONS)}, not {value!r}", EXIT_USAGE)
    return value


def _dead_letters(client: redis.Redis, settings: Settings) -> Any:
    from dispatcher.store.deadletters import DeadLetters
    from dispatcher.store.keys import Keys

    return DeadLetters(client, Keys(settings.namespace))


@dlq_app.command("list", epilog=exits.DLQ_LIST)
def dlq_list(
    reason: ReasonOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead letters, oldest first."""
    chosen = _reason(reason)
    settings = _settings()
    with _redis_failures(settings), closing(_redis(settings)) as client:
        entries = _dead_letters(client, settings).list(chosen)
    if as_json:
        for entry in entries:
            typer.echo(entry.to_json().decode())
        return
    if not entries:
        typer.echo("no dead letters", err=True)
        return
    typer.echo(f"{'ID':<40} {'REASON':<10} {'STATUS':<6} {'ATTEMPTS':<8} {'DEAD AT':<24} TITLE")
    for entry in entries:
        status_code = "-" if entry.status_code is None else str(entry.status_code)
        typer.echo(
            f"{entry.id:<40} {entry.reason:<10} {status_code:<6} {entry.attempts:<8} "
            f"{entry.dead_at:<24} {entry.title}"
        )


@dlq_app.command("show", epilog=exits.DLQ_SHOW)
def dlq_show(entry_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one dead letter in full, the intent included."""
    settings = _settings()
    with _redis_failures(settings), closing(_redis(settings)) as client:
        entry = _dead_letters(client, settings).get(entry_id)
    if entry is None:
        _fail(f"no dead letter {entry_id!r}")
    typer.echo(orjson.dumps(entry.to_dict(), option=orjson.OPT_INDENT_2).decode())


def _select(store: Any, ids: list[str], every: bool, reason: str | None) -> tuple[list[Any], int]:
    """The entries named (or every one), and how many named ids are not in the store: each
    of those is reported on stderr, and the others are still handled."""
    if every == bool(ids):
        _fail("give dead letter ids, or --all", EXIT_USAGE)
    if every:
        return list(store.list(reason)), 0
    if reason is not None:
        _fail("--reason goes with --all", EXIT_USAGE)
    entries, unknown = [], 0
    for entry_id in ids:
        entry = store.get(entry_id)
        if entry is None:
            typer.echo(f"error: no dead letter {entry_id!r}: skipped", err=True)
            unknown += 1
        else:
            entries.append(entry)
    return entries, unknown


@dlq_app.command("replay", epilog=exits.DLQ_REPLAY)
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    reason: ReasonOption = None,
) -> None:
    """Put dead letters back on the queue with a fresh attempt count.

    An entry is removed only once its intent is on the queue. An intent that was sent
    already (it has a receipt) is not sent again. Prints what it did with each id; an
    unknown id does not stop the others. A progress bar shows on a terminal.
    """
    from dispatcher.commands.progress import Progress
    from dispatcher.producer import Producer

    chosen = _reason(reason)
    settings = _settings()
    # Replays go back as they were checked the first time: no template check again.
    producer = Producer.from_settings(settings, check_templates=False)
    with _redis_failures(settings), closing(producer), closing(_redis(settings)) as client:
        store = _dead_letters(client, settings)
        entries, failed = _select(store, ids or [], every, chosen)
        replayed = 0
        with Progress("replay", len(entries)) as progress:
            for entry in entries:
                if not isinstance(entry.intent, dict):
                    progress.echo(f"cannot replay {entry.id}: its message was not an intent")
                    failed += 1
                else:
                    producer.requeue(entry.intent, attempt=1, delay_ms=0)
                    store.remove([entry.id])
                    typer.echo(f"replayed {entry.id}")
                    replayed += 1
                progress.advance(note=f"{failed} failed" if failed else "")
    if failed:
        typer.echo(f"replayed {replayed}, {failed} failed", err=True)
        raise typer.Exit(EXIT_FAILED)


@dlq_app.command("purge", epilog=exits.DLQ_PURGE)
def dlq_purge(
    ids: Annotated[list[str] | None, typer.Argument(metavar="ID...")] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every dead letter; asks for confirmation first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Purge --all without asking.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be purged.")
    ] = False,
) -> None:
    """Delete dead letters for good. An unknown id is reported and the others still purged."""
    settings = _settings()
    with _redis_failures(settings), closing(_redis(settings)) as client:
        store = _dead_letters(client, settings)
        entries, unknown = _select(store, ids or [], every, None)
        if dry_run:
            for entry in entries:
                typer.echo(f"would purge {entry.id} ({entry.reason})")
            typer.echo(f"would purge {len(entries)}")
        else:
            if every and entries and not yes:
                _confirm_purge(len(entries))
            removed = store.remove(entry.id for entry in entries)
            typer.echo(f"purged {removed}")
    if unknown:
        raise typer.Exit(EXIT_FAILED)


def _confirm_purge(count: int) -> None:
    """Asks on a terminal; anywhere else only --yes purges everything."""
    if not sys.stdin.isatty():
        _fail(
            f"dlq purge --all would delete {count} dead letter(s): pass --yes to confirm "
            "(no terminal to ask on), or --dry-run to list them",
            EXIT_USAGE,
        )
    if not typer.confirm(f"Delete {count} dead letter(s) for good?", default=False):
        typer.echo("nothing purged", err=True)
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    app()
