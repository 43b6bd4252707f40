"""Resolution counters of ticket_counts() (hallmon_tickets_resolved_total and
hallmon_ticket_resolution_seconds_total), on SQLite and on a real PostgreSQL, told as stories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from monitor.store import NewTicket, Store, schema
from monitor.store.tickets import CATEGORY_STATUS, RESOLVED, RESOLVED_DAYS, RESOLVED_SECS

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
H = timedelta(hours=1)




def ticket(category: str = "fault", **kw: object) -> NewTicket:
    return NewTicket(category=category, summary="kiosk screen black", reporter="li",
                     **kw)  # type: ignore[arg-type]


def resolved(store: Store, category: str = "fault") -> tuple[int, int]:
    c = store.ticket_counts()
    return c["resolved"][category], c["resolution_seconds"][category]


def test_every_category_is_listed_from_the_start(store: Store) -> None:
    counts = store.ticket_counts()
    assert set(counts) == {"open", "total", "resolved", "resolution_seconds"}
    for key in counts:
        assert counts[key] == {c: 0 for c in store.categories}


def test_a_reopened_ticket_counts_again_when_resolved_again(store: Store) -> None:
    t = store.create_ticket(ticket(), at=T0)
    store.transition(t.id, "in_progress", "wang", at=T0 + H)
    store.transition(t.id, "resolved", "wang", at=T0 + 2 * H)
    assert resolved(store) == (1, 7200)
    store.transition(t.id, "open", "li", at=T0 + 3 * H)  # the fix did not hold
    # Counters never go down: the first resolution stays counted while the ticket is open.
    assert resolved(store) == (1, 7200)
    assert store.ticket_counts()["open"]["fault"] == 1
    store.transition(t.id, "resolved", "wang", at=T0 + 5 * H)
    assert resolved(store) == (2, 7200 + 5 * 3600)
    store.transition(t.id, "closed", "li", at=T0 + 6 * H)
    counts = store.ticket_counts()
    assert resolved(store) == (2, 7200 + 5 * 3600)
    assert counts["open"]["fault"] == 0 and counts["total"]["fault"] == 1


def test_closed_without_resolving_is_not_a_resolution(store: Store) -> None:
    t = store.create_ticket(ticket(), at=T0)
    store.transition(t.id, "closed", "li", note="duplicate", at=T0 + H)
    counts = store.ticket_counts()
    assert resolved(store) == (0, 0)
    assert counts["open"]["fault"] == 0 and counts["total"]["fault"] == 1


def test_auto_resolved_and_imported_tickets_count(store: Store) -> None:
    store.auto_ticket("sw-2f|ping|down", ticket("line"), at=T0)
    store.resolve_auto_ticket("sw-2f|ping|down", "recovered", at=T0 + timedelta(minutes=7))
    # Imported after the fact: resolved 3 days and 5 seconds after it was opened.
    store.import_tickets([
        ticket("line", status="closed", opened_at=T0, resolved_at=T0 + timedelta(days=3, seconds=5),
               closed_at=T0 + timedelta(days=4)),
        ticket("line", status="open", opened_at=T0),
    ])
    assert resolved(store, "line") == (2, 420 + 3 * 86400 + 5)
    assert store.ticket_counts()["open"]["line"] == 1


def test_an_edited_category_keeps_its_earlier_resolutions(store: Store) -> None:
    t = store.create_ticket(ticket(), at=T0)
    store.transition(t.id, "resolved", "wang", at=T0 + H)
    store.update_ticket(t.id, "li", {"category": "line"}, at=T0 + 2 * H)
    counts = store.ticket_counts()
    assert resolved(store, "fault") == (1, 3600) and resolved(store, "line") == (0, 0)
    assert counts["total"] == {**counts["total"], "fault": 0, "line": 1}
    store.transition(t.id, "open", "li", at=T0 + 3 * H)
    assert store.ticket_counts()["open"]["line"] == 1
    store.transition(t.id, "resolved", "wang", at=T0 + 4 * H)
    assert resolved(store, "line") == (1, 4 * 3600)


def test_long_resolutions_never_overflow_a_32_bit_tally_row(store: Store) -> None:
    """800 tickets a month old resolved on one day: 2.07e9 s, near PostgreSQL's INTEGER limit;
    1000 would pass it. Stored as whole days + remaining seconds, no row comes close."""
    month = timedelta(days=31, seconds=1)
    store.import_tickets([ticket(status="resolved", opened_at=T0, resolved_at=T0 + month)
                          for _ in range(1000)])
    assert resolved(store) == (1000, 1000 * int(month.total_seconds()))


def test_a_rebuild_and_an_upgrade_recount_from_the_audit_trail(url: str) -> None:
    s = Store(url, timezone="Asia/Shanghai")
    a = s.create_ticket(ticket(), at=T0)
    s.transition(a.id, "resolved", "wang", at=T0 + H)
    s.transition(a.id, "open", "li", at=T0 + 2 * H)  # reopened: resolved_at cleared
    b = s.create_ticket(ticket("line"), at=T0)
    s.transition(b.id, "resolved", "wang", at=T0 + 3 * H)
    s.import_tickets([ticket(status="resolved", opened_at=T0, resolved_at=T0 + 4 * H)])
    before = s.ticket_counts()
    assert before["resolved"]["fault"] == 2 and before["resolution_seconds"]["fault"] == 5 * 3600
    s.rebuild_tally()
    assert s.ticket_counts() == before
    # A tally written by the hallmon before these counters: no new rows, no version mark.
    new_dims = (CATEGORY_STATUS, RESOLVED, RESOLVED_DAYS, RESOLVED_SECS)
    with s.tx() as conn:
        conn.execute(delete(schema.ticket_tally).where(schema.ticket_tally.c.dim.in_(new_dims)))
        conn.execute(delete(schema.store_meta).where(schema.store_meta.c.key == "tally_version"))
    assert s.ticket_counts()["resolved"]["fault"] == 0
    s.close()
    s = Store(url)  # opening it upgrades the tally once
    assert s.ticket_counts() == before
    s.close()
