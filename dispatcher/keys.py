"""Names of every Redis key the dispatcher owns, all under `DISPATCHER_NAMESPACE`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    def token(self, fingerprint: str) -> str:
        """The shared OAuth token of the credentials `fingerprint` names (never the secret)."""
        return f"{self.namespace}:token:{fingerprint}"

    def token_lock(self, fingerprint: str) -> str:
        return f"{self.namespace}:token.lock:{fingerprint}"

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

    def queue(self, queue_name: str) -> str:
        """dramatiq's list of message ids for a queue (its messages live in `<queue>.msgs`)."""
        return f"{self.namespace}:{queue_name}"

    def delay_queue(self, queue_name: str) -> str:
        """dramatiq's delay queue for `queue_name`: retries waiting for their eta."""
        return f"{self.namespace}:{queue_name}.DQ"

    def callbacks(self, message_ref: str) -> str:
        """List of Catapush status callbacks for an intent (its id is the `messageRef`)."""
        return f"{self.namespace}:callbacks:{message_ref}"

    def callbacks_by_message_id(self, message_id: str) -> str:
        """List of status callbacks that came without a `messageRef`, by Catapush messageId.

        A `messageRef` cannot contain ':', so these never collide with `callbacks()`.
        """
        return f"{self.namespace}:callbacks:msgid:{message_id}"
