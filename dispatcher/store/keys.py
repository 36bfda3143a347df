"""Names of every Redis key the dispatcher owns, all under `DISPATCHER_NAMESPACE`.

The queue keys are dramatiq's, so dramatiq producers and this worker share queues; only
the worker registry (`__workers__`) is the dispatcher's own.
"""

from __future__ import annotations

from dataclasses import dataclass

DELAY_SUFFIX = ".DQ"
DEAD_LETTER_SUFFIX = ".XQ"
# The dispatcher's own: scheduled intents, held until their `sendAt` (not dramatiq's).
SCHEDULE_SUFFIX = ".SQ"


def delay_queue_name(queue_name: str) -> str:
    """dramatiq's name of the delay queue of `queue_name` (itself if it is one)."""
    base = canonical_queue_name(queue_name)
    return base + DELAY_SUFFIX


def canonical_queue_name(queue_name: str) -> str:
    """The queue a delay (`.DQ`) or dead-letter (`.XQ`) queue belongs to."""
    if queue_name.endswith((DELAY_SUFFIX, DEAD_LETTER_SUFFIX)):
        return queue_name[: -len(DELAY_SUFFIX)]
    return queue_name


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    def token(self, fingerprint: str) -> str:
        """The shared OAuth token of the credentials `fingerprint` names (never the secret)."""
        return f"{self.namespace}:token:{fingerprint}"

    def token_lock(self, fingerprint: str) -> str:
        return f"{self.namespace}:token.lock:{fingerprint}"

    def token_meta(self, fingerprint: str) -> str:
        """When the shared token was fetched (JSON), for `dispatcher token status`."""
        return f"{self.namespace}:token.meta:{fingerprint}"

    def receipt(self, intent_id: str) -> str:
        return f"{self.namespace}:receipt:{intent_id}"

    def claim(self, intent_id: str) -> str:
        return f"{self.namespace}:claim:{intent_id}"

    @property
    def dead_letters(self) -> str:
        """Hash of dead letter id -> entry (JSON)."""
        return f"{self.namespace}:deadletters"

    @property
    def dead_letter_index(self) -> str:
        """Sorted set of dead letter ids by the time they died."""
        return f"{self.namespace}:deadletters.index"

    @property
    def rate_limit(self) -> str:
        return f"{self.namespace}:ratelimit"

    @property
    def pause(self) -> str:
        """Set while Catapush asked every worker to hold off (`Retry-After`)."""
        return f"{self.namespace}:pause"

    def rate_limit_of(self, account: str | None) -> str:
        """The rate limit of one account of an accounts file (None: the single account's)."""
        return self.rate_limit if account is None else f"{self.rate_limit}:{account}"

    def pause_of(self, account: str | None) -> str:
        return self.pause if account is None else f"{self.pause}:{account}"

    @property
    def events(self) -> str:
        """Capped stream of events producers act on (dead identifiers)."""
        return f"{self.namespace}:events"

    def event_seen(self, digest: str) -> str:
        """Set once an event went on the stream, so a repeated callback adds nothing."""
        return f"{self.namespace}:events.seen:{digest}"

    def queue(self, queue_name: str) -> str:
        """dramatiq's list of message ids for a queue (its messages live in `<queue>.msgs`)."""
        return f"{self.namespace}:{queue_name}"

    def queue_messages(self, queue_name: str) -> str:
        """dramatiq's hash of message id -> body for a queue (or a delay queue)."""
        return f"{self.queue(queue_name)}.msgs"

    def delay_queue(self, queue_name: str) -> str:
        """dramatiq's delay queue for `queue_name`: retries waiting for their eta."""
        return self.queue(delay_queue_name(queue_name))

    def delay_queue_messages(self, queue_name: str) -> str:
        return self.queue_messages(delay_queue_name(queue_name))

    def schedule(self, queue_name: str) -> str:
        """Sorted set of intent id -> `sendAt` (epoch ms): intents held until then.

        Unlike the delay queue, nobody takes these into memory: a due one is moved onto
        `queue_name` by one script, so a month of schedule costs no worker anything.
        """
        return self.queue(canonical_queue_name(queue_name) + SCHEDULE_SUFFIX)

    def schedule_messages(self, queue_name: str) -> str:
        """Hash of intent id -> message id, a line break, message body: the messages of
        `schedule(queue_name)`."""
        return f"{self.schedule(queue_name)}.msgs"

    @property
    def cancelled(self) -> str:
        """Sorted set of cancelled intent ids -> when (epoch ms); none of them is sent."""
        return f"{self.namespace}:cancelled"

    def parts(self, intent_id: str) -> str:
        """How an intent was split into parts (JSON), for `dispatcher status`."""
        return f"{self.namespace}:parts:{intent_id}"

    def acks(self, worker_id: str, queue_name: str) -> str:
        """dramatiq's set of ids a worker took from a queue and has not acknowledged yet."""
        return f"{self.namespace}:__acks__.{worker_id}.{queue_name}"

    @property
    def heartbeats(self) -> str:
        """dramatiq's sorted set of worker id -> time of its last beat (ms)."""
        return f"{self.namespace}:__heartbeats__"

    @property
    def workers(self) -> str:
        """Hash of worker id -> JSON list of the queues it takes messages from.

        It names a dead worker's ack sets, so sweeping them needs no scan of the keyspace.
        """
        return f"{self.namespace}:__workers__"

    def callbacks(self, message_ref: str) -> str:
        """List of Catapush status callbacks for an intent (its id is the `messageRef`)."""
        return f"{self.namespace}:callbacks:{message_ref}"

    def callbacks_by_message_id(self, message_id: str) -> str:
        """List of status callbacks that came without a `messageRef`, by Catapush messageId.

        A `messageRef` cannot contain ':', so these never collide with `callbacks()`.
        """
        return f"{self.namespace}:callbacks:msgid:{message_id}"

    def throughput(self, kind: str, minute: int) -> str:
        """Counter of `kind` events (sent, dead-lettered) in one minute (epoch // 60)."""
        return f"{self.namespace}:throughput:{kind}:{minute}"

    def callback_seen(self, fingerprint: str) -> str:
        """Set while a status callback with this content fingerprint is stored: a second
        delivery of the same callback is then recognised and not stored again."""
        return f"{self.namespace}:callback.seen:{fingerprint}"
