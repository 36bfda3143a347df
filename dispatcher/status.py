"""Where an intent stands, read from the receipts and the dead-letter store."""

from __future__ import annotations

from typing import Any

import redis

from dispatcher.deadletters import DeadLetters
from dispatcher.keys import Keys
from dispatcher.receipts import ReceiptReader
from dispatcher.settings import Settings


def intent_status(client: redis.Redis, settings: Settings, intent_id: str) -> dict[str, Any]:
    keys = Keys(settings.namespace)
    receipt = ReceiptReader(client, keys).get(intent_id)
    if receipt is not None:
        return {
            "id": intent_id,
            "state": "sent",
            "message_id": receipt.message_id,
            "sent_at": receipt.sent_at,
            "attempts": receipt.attempts,
        }
    entry = DeadLetters(client, keys).get(intent_id)
    if entry is not None:
        return {
            "id": intent_id,
            "state": "dead",
            "reason": entry.reason,
            "status_code": entry.status_code,
            "title": entry.title,
            "detail": entry.detail,
            "dead_at": entry.dead_at,
        }
    if client.exists(keys.claim(intent_id)):
        return {"id": intent_id, "state": "sending"}
    return {"id": intent_id, "state": "unknown"}
