"""Orphans in a live worker's ack set: given back only when seen twice, never when held."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.worker.orphans import OrphanAudit

ids = st.frozensets(st.sampled_from([f"id{n}" for n in range(12)]))


def test_an_id_is_an_orphan_only_on_its_second_sighting() -> None:
    audit = OrphanAudit()
    assert audit.observe({"a", "b"}, {"b"}) == []
    assert audit.observe({"a", "b"}, {"b"}) == ["a"]
    # Given back once: not again, unless seen twice more.
    assert audit.observe({"a"}, set()) == []
    assert audit.observe({"a"}, set()) == ["a"]


def test_an_id_held_in_between_is_not_an_orphan() -> None:
    """A fetch answer that landed after the first audit: held at the second, kept."""
    audit = OrphanAudit()
    assert audit.observe({"a"}, set()) == []
    assert audit.observe({"a"}, {"a"}) == []
    assert audit.observe({"a"}, set()) == []


@given(st.lists(st.tuples(ids, ids), max_size=6))
def test_never_gives_back_what_is_held_now_or_was_not_taken_before(
    rounds: list[tuple[frozenset[str], frozenset[str]]],
) -> None:
    audit = OrphanAudit()
    previous_stale: frozenset[str] = frozenset()
    for taken, held in rounds:
        orphans = set(audit.observe(taken, held))
        assert not orphans & held
        assert orphans <= taken
        assert orphans <= previous_stale
        previous_stale = (taken - held) - orphans
