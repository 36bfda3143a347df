"""Small helpers the integration tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import redis

from dispatcher.producer import Producer
from dispatcher.sandbox.process import SandboxProcess
from dispatcher.settings import Settings
from dispatcher.store.deadletters import DeadLetters
from dispatcher.store.keys import Keys
from dispatcher.store.receipts import ReceiptReader


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def accepted_refs(sandbox: SandboxProcess) -> Counter[str]:
    """How many times Catapush accepted (201) each messageRef."""
    return Counter(
        entry["messageRef"]
        for entry in sandbox.admin.requests(kind="messages")
        if entry["status"] == 201
    )


def enqueue_many(
    settings: Settings, count: int, prefix: str = "intent", recipient: str = "user"
) -> list[str]:
    producer = Producer.from_settings(settings)
    try:
        return [
            producer.enqueue(
                {"id": f"{prefix}-{n:05d}", "recipients": [f"{recipient}{n}"], "text": f"hi {n}"}
            )
            for n in range(count)
        ]
    finally:
        producer.close()


def sent_count(client: redis.Redis, settings: Settings, ids: list[str]) -> int:
    reader = ReceiptReader(client, Keys(settings.namespace))
    return sum(reader.get(intent_id) is not None for intent_id in ids)


def all_sent(client: redis.Redis, settings: Settings, ids: list[str]) -> bool:
    return sent_count(client, settings, ids) == len(ids)


def dead_letters(client: redis.Redis, settings: Settings) -> DeadLetters:
    return DeadLetters(client, Keys(settings.namespace))
