"""Redis memory per stored item, measured, and what that makes for a sizing.

    .venv/bin/python benchmarks/sizing.py            # 10,000 items of each kind (about a minute)
    .venv/bin/python benchmarks/sizing.py --n 2000   # quicker, a little less exact

For each kind of item the dispatcher keeps in Redis it starts from an empty private
`redis-server`, writes N items the way the dispatcher writes them, and divides the growth of
`used_memory` (INFO memory) by N; `MEMORY USAGE` of one sample key is printed beside it. Then
it prints the memory a deployment needs for 1,000,000 intents queued at once and for
10,000,000 sent a month (receipts and status callbacks kept for the retention days).

Kinds: a queued intent (short text to one recipient; 100 recipients; a 64 KiB attachment),
a receipt, a dead letter (of a short intent), and the status callbacks of one message
(three: enqueued, delivered, read).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from dispatcher.callbacks import CallbackEvent
from dispatcher.producer import Producer
from dispatcher.settings import DEFAULT_QUEUE, DEFAULT_RECEIPT_TTL_DAYS
from dispatcher.store.callbacks import store_callback
from dispatcher.store.deadletters import DeadLetterEntry, DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.localredis import LocalRedis
from dispatcher.store.receipts import Receipt

NAMESPACE = "dispatcher"
DEFAULT_N = 10_000
ATTACHMENT_BYTES = 64 * 1024
CALLBACKS_PER_MESSAGE = ("enqueued", "delivered", "read")
BATCH = 1_000
# Messages whose callbacks are stored concurrently (three writes each, one connection each).
CALLBACK_BATCH = 100
# The sizing's assumptions: what a month of 10M sends leaves in Redis.
QUEUED_AT_ONCE = 1_000_000
SENT_PER_MONTH = 10_000_000
DEAD_SHARE = 0.01
RETENTION_DAYS = DEFAULT_RECEIPT_TTL_DAYS
DAYS_PER_MONTH = 30.0
# Redis needs room beyond the data: fragmentation, AOF rewrite buffers, replication backlog.
HEADROOM = 1.5
MIB = 1024 * 1024
# The callbacks' duplicate markers live a day, not the retention: measured without them.
STATUS_KIND = "status callbacks of one message (3), without the 1-day duplicate markers"


def short_intent(n: int) -> dict[str, Any]:
    return {
        "id": f"order-{n:08d}-shipped",
        "recipients": [f"user{n}"],
        "text": "Your order has shipped",
    }


def wide_intent(n: int) -> dict[str, Any]:
    return {
        "id": f"promo-{n:08d}",
        "recipients": [f"customer-{n}-{r:03d}" for r in range(100)],
        "text": "Spring sale: 20% off everything until Sunday",
    }


def attachment_intent(n: int) -> dict[str, Any]:
    return {
        "id": f"invoice-{n:08d}",
        "recipients": [f"user{n}"],
        "text": "Your invoice is attached",
        "attachment": {
            "filename": "invoice.pdf",
            "contentType": "application/pdf",
            "data": base64.b64encode(os.urandom(ATTACHMENT_BYTES)).decode(),
        },
    }


@dataclass
class Measured:
    kind: str
    count: int
    bytes_per_item: float
    sample_key: str
    sample_bytes: int


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(
    kind: str,
    count: int,
    write: Callable[[LocalRedis, int], None],
    sample_key: str,
    *,
    drop: str | None = None,
) -> Measured:
    """`drop`: a key pattern removed before the second reading, to leave out keys that expire
    long before the retention (the callbacks' one-day duplicate markers)."""
    with LocalRedis() as server:
        client = redis.Redis.from_url(server.url)
        try:
            before = used_memory(client)
            write(server, count)
            if drop is not None:
                for key in list(client.scan_iter(match=drop, count=1000)):
                    client.unlink(key)
            after = used_memory(client)
            sample = client.memory_usage(sample_key) or 0
        finally:
            client.close()
    return Measured(kind, count, (after - before) / count, sample_key, int(sample))


def enqueue(make: Callable[[int], dict[str, Any]]) -> Callable[[LocalRedis, int], None]:
    def write(server: LocalRedis, count: int) -> None:
        producer = Producer(server.url, NAMESPACE, DEFAULT_QUEUE)
        try:
            for start in range(0, count, BATCH):
                producer.enqueue_many(make(n) for n in range(start, min(count, start + BATCH)))
        finally:
            producer.close()

    return write


def receipts(server: LocalRedis, count: int) -> None:
    keys = Keys(NAMESPACE)
    client = redis.Redis.from_url(server.url)
    ttl_s = int(RETENTION_DAYS * 86400)
    try:
        for start in range(0, count, BATCH):
            with client.pipeline(transaction=False) as pipe:
                for n in range(start, min(count, start + BATCH)):
                    receipt = Receipt(
                        f"order-{n:08d}-shipped", f"{10_000_000 + n}", "2026-03-01T12:00:00.000Z", 1
                    )
                    pipe.set(keys.receipt(receipt.intent_id), receipt.to_json(), ex=ttl_s)
                pipe.execute()
    finally:
        client.close()


def dead_letters(server: LocalRedis, count: int) -> None:
    client = redis.Redis.from_url(server.url)
    store = DeadLetters(client, Keys(NAMESPACE))
    try:
        for n in range(count):
            store.add(
                DeadLetterEntry.create(
                    intent_id=f"order-{n:08d}-shipped",
                    reason="rejected",
                    status_code=400,
                    title="Bad Request",
                    detail="recipients.0.identifier: unknown user",
                    attempts=1,
                    intent=short_intent(n),
                )
            )
    finally:
        client.close()


def callbacks(server: LocalRedis, count: int) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(server.url, max_connections=4 * CALLBACK_BATCH)
        keys = Keys(NAMESPACE)
        try:
            for start in range(0, count, CALLBACK_BATCH):
                writes = []
                for n in range(start, min(count, start + CALLBACK_BATCH)):
                    for step, status in enumerate(CALLBACKS_PER_MESSAGE):
                        event = CallbackEvent(
                            status=status,  # type: ignore[arg-type]
                            timestamp=f"2026-03-01T12:00:0{step}.000Z",
                            application_id="app-1",
                            message_id=f"{10_000_000 + n}",
                            recipient=f"user{n}",
                            message_ref=f"order-{n:08d}-shipped",
                        )
                        writes.append(store_callback(client, keys, event))
                await asyncio.gather(*writes)
        finally:
            await client.aclose()

    asyncio.run(run())


def sizing_table(per: dict[str, Measured]) -> str:
    queued = per["queued intent, short text"].bytes_per_item
    receipt = per["receipt"].bytes_per_item
    dead = per["dead letter"].bytes_per_item
    status = per[STATUS_KIND].bytes_per_item
    kept = SENT_PER_MONTH * RETENTION_DAYS / DAYS_PER_MONTH
    wide = per["queued intent, 100 recipients"].bytes_per_item
    days = f"kept {RETENTION_DAYS:g} days"
    rows = [
        ("1,000,000 intents queued at once (short text)", QUEUED_AT_ONCE * queued),
        ("1,000,000 queued, 100 recipients each", QUEUED_AT_ONCE * wide),
        (f"receipts of 10M sent a month, {days}", kept * receipt),
        (f"status callbacks of 10M sent a month (3 each), {days}", kept * status),
        (
            f"dead letters, {DEAD_SHARE:.0%} of 10M (never expire)",
            SENT_PER_MONTH * DEAD_SHARE * dead,
        ),
    ]
    data = rows[0][1] + rows[2][1] + rows[3][1] + rows[4][1]
    lines = ["| what | Redis memory |", "|---|---|"]
    lines += [f"| {what} | {size / MIB:,.0f} MiB |" for what, size in rows]
    lines.append(
        f"| 1M short intents queued + a month of 10M sent | {data / MIB:,.0f} MiB of data, "
        f"`maxmemory` {data * HEADROOM / MIB:,.0f} MiB with {HEADROOM:g}x headroom |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="items of each kind")
    args = parser.parse_args()
    n = args.n
    keys = Keys(NAMESPACE)
    queue_hash = f"{NAMESPACE}:{DEFAULT_QUEUE}.msgs"
    first = "order-00000000-shipped"
    few = max(1, n // 10)
    cases = [
        ("queued intent, short text", n, enqueue(short_intent), queue_hash),
        ("queued intent, 100 recipients", n, enqueue(wide_intent), queue_hash),
        ("queued intent, 64 KiB attachment", few, enqueue(attachment_intent), queue_hash),
        ("receipt", n, receipts, keys.receipt(first)),
        ("dead letter", n, dead_letters, keys.dead_letters),
        (STATUS_KIND, n, callbacks, keys.callbacks(first)),
    ]
    results: dict[str, Measured] = {}
    print("| item | items written | Redis memory per item | MEMORY USAGE of one sample key |")
    print("|---|---|---|---|")
    markers = f"{NAMESPACE}:callback.seen:*"
    for kind, count, write, sample in cases:
        dropped = markers if kind == STATUS_KIND else None
        measured = measure(kind, count, write, sample, drop=dropped)
        results[kind] = measured
        print(
            f"| {kind} | {count:,} | {measured.bytes_per_item:,.0f} B | "
            f"`{sample}`: {measured.sample_bytes:,} B |",
            flush=True,
        )
    print()
    print(sizing_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
