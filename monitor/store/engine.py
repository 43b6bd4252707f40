"""Engine set-up and the base every part of the store shares (one engine, one clock, one tz)."""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    make_url,
    select,
    text,
)
from sqlalchemy import union as sa_union
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import StaticPool

from monitor.store import schema
from monitor.store.migrations import PG_LOCK_ID, migrate
from monitor.store.models import DEFAULT_CATEGORIES, InvalidValue, StoreError, TimezoneMismatch

Clock = Callable[[], datetime]
F = TypeVar("F", bound=Callable[..., Any])
ALL_SITES = "*"
SITE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# libpq connection parameters (seconds), each overridable in the URL's query string.
PG_DEFAULTS: dict[str, int] = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                               "keepalives_interval": 10, "keepalives_count": 3}


def make_engine(url: str, busy_timeout: float = 30.0) -> Engine:
    """SQLite: WAL, synchronous=FULL (committed = on disk), foreign keys, busy timeout and
    BEGIN IMMEDIATE so two writers queue on the lock instead of failing half-way through.
    PostgreSQL: psycopg 3 whatever driver the URL named, with libpq's ``PG_DEFAULTS`` unless
    the URL sets them: without a connect timeout, a server behind a firewall that drops packets
    holds the store thread (every queued write, every heartbeat) for the kernel's SYN retries
    (~2 min) per try; without keepalives, a connection whose server vanished (a failover, a
    cable) waits for an answer that never comes."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith("sqlite"):
        given = make_url(url).query
        defaults = {k: v for k, v in PG_DEFAULTS.items() if k not in given}
        return create_engine(url, pool_pre_ping=True, connect_args=defaults)
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False,
                                               "timeout": busy_timeout}}
    if url in ("sqlite://", "sqlite:///:memory:"):
        kwargs["poolclass"] = StaticPool  # one shared in-memory database, not one per connection
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                       f"busy_timeout={int(busy_timeout * 1000)}"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Reads take no write lock; writes take it up front (no deadlock upgrading a read lock).
        read = conn.get_execution_options().get("hallmon_read", False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    return engine


LEGACY_TZ_KEY = "timezone"  # the database's first zone: the fallback of a site without its own


def _tz_key(site: str) -> str:
    return f"timezone/{site}"


def _zones(conn: Connection) -> dict[str, str]:
    """The recorded zones: ``timezone`` and ``timezone/<site>`` keys of store_meta."""
    meta = schema.store_meta
    rows = conn.execute(select(meta.c.key, meta.c.value).where(
        (meta.c.key == LEGACY_TZ_KEY) | meta.c.key.startswith("timezone/")))
    return {str(k): str(v) for k, v in rows}


def site_zones(conn: Connection) -> tuple[dict[str, ZoneInfo], ZoneInfo | None]:
    """The zone each site recorded, and the database's first zone (that of a site without
    one; None before any zone was given)."""
    zones = _zones(conn)
    first = zones.get(LEGACY_TZ_KEY)
    return ({k.split("/", 1)[1]: _zone(v) for k, v in zones.items() if "/" in k},
            None if first is None else _zone(first))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidValue(f"unknown timezone {name!r} (use an IANA name)") from exc


def _checked_site(site: str) -> str:
    if site != ALL_SITES and not SITE_ID.fullmatch(site):
        raise InvalidValue(f"site {site!r}: a site id is lowercase ASCII letters, digits "
                           "and '-', '_', '.' (at most 64), or '*' for every site")
    return site


def alone(method: F) -> F:
    """Mark a store method that must never run inside a group commit (``Store.batch``): it
    uses connections of its own (a staged import), or keeps in memory what a rolled-back batch
    would make wrong. The write queue runs it in a transaction of its own."""
    method.hallmon_alone = True  # type: ignore[attr-defined]
    return method


def is_alone(fn: Callable[..., Any]) -> bool:
    """Whether a queued callable (a ``functools.partial`` of a method, or the method) is
    marked ``alone``."""
    return bool(getattr(getattr(fn, "func", fn), "hallmon_alone", False))


class _Batch(threading.local):
    """The store thread's group commit in progress: its connection and what to undo in memory
    if its transaction is rolled back."""
    conn: Connection | None = None
    undo: list[Callable[[], None]]

    def __init__(self) -> None:
        self.undo = []


def _redacted(url: str) -> str:
    """The URL without its password (never in errors or logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _missing_directory(engine: Engine) -> str | None:
    """Why a SQLite file cannot be opened when its directory is missing (SQLite itself only
    says "unable to open database file"): a technician running the CLI where no daemon ever
    ran, or a relative path read from the wrong directory."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    directory = os.path.dirname(database)
    if not directory or os.path.isdir(directory):
        return None
    return (f"no directory {directory!r} (a relative SQLite path starts from the current "
            "directory; the daemon keeps state/hallmon.db where it runs): run there, or give "
            "the daemon's database with --db, --storage.url or $HALLMON_DB")


class StoreBase:
    """Owns the engine; the mixins in tickets.py, incidents.py, ... add the operations."""

    def __init__(
        self,
        url: str,
        *,
        timezone: str | None = None,
        categories: list[str] | tuple[str, ...] | None = None,
        clock: Clock | None = None,
        change_timezone: bool = False,
        busy_timeout: float = 30.0,
        site: str = schema.DEFAULT_SITE,
    ) -> None:
        self.url = url
        # The hall whose rows this store reads and writes (issue 17); "*" reads every site's
        # (tallies, reports and lists across halls) and refuses to write.
        self.site = _checked_site(site)
        try:
            self.engine = make_engine(url, busy_timeout)
        except (ArgumentError, ImportError) as exc:  # a malformed URL or a missing driver
            raise StoreError(f"storage URL: {_redacted(url)}: {exc}") from None
        self.categories: tuple[str, ...] = tuple(categories or DEFAULT_CATEGORIES)
        self.clock: Clock = clock or _utcnow
        self._batch = _Batch()  # shared by the views ``for_site`` makes: one thread, one batch
        try:
            migrate(self.engine)
            self._change_timezone = change_timezone
            self.tz = self._settle_timezone(timezone)
        except OperationalError as exc:  # cannot open or create the database: say where
            self.engine.dispose()
            reason = _missing_directory(self.engine) or str(exc.orig)
            raise StoreError(f"cannot open the store {_redacted(url)}: {reason}") from None
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:  # the URL may carry a password
        return f"<Store {self.engine.dialect.name} site={self.site}>"

    def of_site(self, table: Table) -> list[ColumnElement[bool]]:
        """The WHERE terms that keep a query to this store's site (none for "*")."""
        return [] if self.site == ALL_SITES else [table.c.site == self.site]

    def for_site(self, site: str) -> Self:
        """This store seen from another site ("*": every site), sharing its engine and settings:
        what the API's ``site=`` parameter reads. Local days and periods are that site's (its
        recorded timezone). Close the store, never a view of it."""
        view = copy.copy(self)
        view.site = _checked_site(site)
        if view.site != self.site:
            with self.read() as conn:
                zones = _zones(conn)
            view.tz = _zone(zones.get(_tz_key(view.site)) or zones.get(LEGACY_TZ_KEY) or "UTC")
        return view

    def sites(self) -> list[str]:
        """The sites that hold incidents or tickets in this database (whatever this store's)."""
        with self.read() as conn:
            found = conn.execute(sa_union(select(schema.incidents.c.site).distinct(),
                                          select(schema.tickets.c.site).distinct())).scalars()
            return sorted(set(found))

    @property
    def write_site(self) -> str:
        """The site new rows get; a store opened for every site ("*") only reads."""
        if self.site == ALL_SITES:
            raise InvalidValue("a store opened for every site (site='*') only reads: "
                               "open it for one site to write")
        return self.site

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One short transaction (committed on exit, rolled back on error). Inside ``batch``
        on the same thread: a SAVEPOINT of the batch's transaction (released on exit, rolled
        back to on error: a write that fails takes back only its own statements, as its own
        transaction would have), committed with the batch."""
        conn = self._batch.conn
        if conn is None:
            with self.engine.begin() as conn:
                yield conn
        else:
            with conn.begin_nested():
                yield conn

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit: every ``tx()`` on this thread until the end of the block joins ONE
        transaction, committed once at the end (the write queue's, see aio.py). On an error the
        whole transaction is rolled back and the ``on_rollback`` undos run, newest first."""
        if self._batch.conn is not None:
            raise StoreError("store batches do not nest")
        self._batch.undo = []
        try:
            with self.engine.begin() as conn:
                self._batch.conn = conn
                try:
                    yield
                finally:
                    self._batch.conn = None
        except BaseException:
            for undo in reversed(self._batch.undo):
                undo()
            raise
        finally:
            self._batch.undo = []

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Inside ``batch``: run ``undo`` if the batch's transaction is rolled back (its writes
        are then tried again, so an in-memory effect of a write must not outlive it). Outside a
        batch the write has committed already: nothing to do."""
        if self._batch.conn is not None:
            self._batch.undo.append(undo)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (on SQLite a plain deferred BEGIN, no write lock). Inside
        ``batch``: the batch's own connection (a SAVEPOINT of it), so that a write reads what
        the writes before it in the batch wrote."""
        if self._batch.conn is not None:
            with self.tx() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            yield conn.execution_options(hallmon_read=True)

    @alone
    def backup(self, target: str) -> None:
        """SQLite only: a consistent copy through the online backup API while writers go on
        (PostgreSQL: use pg_dump)."""
        if self.engine.dialect.name != "sqlite":
            raise InvalidValue("backup() is for SQLite; back PostgreSQL up with pg_dump")
        import sqlite3

        raw = self.engine.raw_connection()
        try:
            dst = sqlite3.connect(target)
            try:
                raw.driver_connection.backup(dst)  # type: ignore[union-attr]
            finally:
                dst.close()
        finally:
            raw.close()

    def close(self) -> None:
        self.engine.dispose()

    def _now(self, at: datetime | None) -> datetime:
        if at is None:
            return self.clock()
        if at.tzinfo is None:
            raise InvalidValue(f"timezone-aware datetime required, got {at!r}")
        return at.astimezone(UTC)

    def _settle_timezone(self, wanted: str | None) -> ZoneInfo:
        """The database remembers the timezone each site's local days were computed in.

        Never changed silently: a site that holds tickets in another zone refuses a new one
        (TimezoneMismatch) unless ``change_timezone`` says the site really moved; then its local
        days are recomputed. Sites sharing a database may be in different zones (issue 17): each
        has its own key ``timezone/<site>``; the first zone the database got (``timezone``) is
        what a site that has none yet, or a store for every site ("*"), falls back to. A site
        opened with no zone works in that one (or UTC) and records nothing, so that its zone,
        given later, is not refused."""
        meta = schema.store_meta
        own = _tz_key(self.site)
        with self.tx() as conn:
            if conn.dialect.name == "postgresql":  # pollers starting together on a fresh database
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_ID})
            zones = _zones(conn)
            mine, first = zones.get(own), zones.get(LEGACY_TZ_KEY)
            stored = mine or first
            name = wanted or stored or "UTC"
            tz = _zone(name)
            self.timezone_recorded = stored is not None or wanted is not None
            if wanted is None or self.site == ALL_SITES:
                return tz
            if first is None:
                conn.execute(meta.insert().values(key=LEGACY_TZ_KEY, value=name))
            if stored is not None and stored != name:
                held = conn.execute(select(schema.tickets.c.id)
                                    .where(schema.tickets.c.site == self.site).limit(1)).first()
                if held is not None and not self._change_timezone:
                    raise TimezoneMismatch(stored, name)
            if mine is None:
                conn.execute(meta.insert().values(key=own, value=name))
            elif mine != name:
                conn.execute(meta.update().where(meta.c.key == own).values(value=name))
            if stored != name:
                self._relocalise(conn, tz, self.site)  # rows written in another zone, or none
        return tz

    def _relocalise(self, conn: Connection, tz: ZoneInfo, site: str | None = None) -> None:
        """Overridden by the tickets mixin: recompute local days and the tally table (of one
        site in ``tz``; ``None``: every site, each in its own zone)."""
