"""Orphans: ids in a live worker's ack set that the worker no longer holds (pure).

A failover loses the writes the old master took after the replica was promoted. An ack is
one of them: the new master still lists the message as taken by a worker that finished it
and moved on. The worker is alive and beats, so no sweep ever gives it back; the worker
itself must. An id taken a moment ago may not be held yet (the fetch's answer is still on
its way), so an id is an orphan only when two audits in a row, an interval apart, find it
taken and not held.
"""

from __future__ import annotations

from collections.abc import Iterable

# Long enough for any fetch answer or ack in flight to land; short enough that an orphan
# waits under a minute.
AUDIT_INTERVAL_S = 15.0


class OrphanAudit:
    """Remembers the suspects of the last audit."""

    def __init__(self) -> None:
        self._suspects: frozenset[str] = frozenset()

    def observe(self, taken: Iterable[str], held: Iterable[str]) -> list[str]:
        """The ids to give back: taken and not held now and at the last audit."""
        stale = frozenset(taken) - frozenset(held)
        orphans = stale & self._suspects
        self._suspects = stale - orphans
        return sorted(orphans)
