"""The storage layer: the schema, its migrations, and connections with safe defaults, on
SQLite (one file per project, ``newsletter.db`` by default) or PostgreSQL (shared by several
machines, ``NEWSLETTER_DATABASE_URL``).

Migrations are numbered and applied in order inside a transaction; on SQLite ``PRAGMA
user_version`` records the last one applied, on PostgreSQL the table ``schema_version``. The
stages write SQLite's SQL; ``PgConnection`` carries it to PostgreSQL, so no stage holds
backend-specific SQL. Every change elsewhere happens inside ``with connection:`` so that a
failure leaves nothing half-written.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import locks
from .clock import now, timestamp
from .errors import BusyError, StoreError
from .language import _

MIGRATIONS: tuple[str, ...] = (
    # 1: news feeds and their items, the per-issue choices, and what sent issues used.
    """
    CREATE TABLE feeds (
        name TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        etag TEXT,
        last_modified TEXT,
        last_fetched TEXT,
        last_ok TEXT,
        last_status TEXT,
        last_error TEXT
    );
    CREATE TABLE feed_items (
        id INTEGER PRIMARY KEY,
        feed TEXT NOT NULL REFERENCES feeds(name) ON DELETE CASCADE,
        guid TEXT NOT NULL,
        title TEXT NOT NULL,
        link TEXT,
        published TEXT,
        first_seen TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        backlog INTEGER NOT NULL DEFAULT 0,
        UNIQUE (feed, guid)
    );
    CREATE INDEX feed_items_first_seen ON feed_items(first_seen);
    CREATE TABLE issue_news (
        issue TEXT NOT NULL,
        item INTEGER NOT NULL REFERENCES feed_items(id) ON DELETE CASCADE,
        choice TEXT NOT NULL CHECK (choice IN ('pick', 'skip')),
        chosen_at TEXT NOT NULL,
        PRIMARY KEY (issue, item)
    );
    CREATE TABLE sent_issues (
        issue TEXT PRIMARY KEY,
        sent_at TEXT NOT NULL
    );
    CREATE TABLE used_items (
        item INTEGER NOT NULL REFERENCES feed_items(id) ON DELETE CASCADE,
        issue TEXT NOT NULL REFERENCES sent_issues(issue) ON DELETE CASCADE,
        PRIMARY KEY (item, issue)
    );
    """,
    # 2: emission releases, summed per municipality, year and sector.
    """
    CREATE TABLE emission_releases (
        label TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        imported_at TEXT NOT NULL,
        numbering TEXT NOT NULL,
        rows INTEGER NOT NULL
    );
    CREATE TABLE emission_municipalities (
        release TEXT NOT NULL REFERENCES emission_releases(label) ON DELETE CASCADE,
        number TEXT NOT NULL,
        name TEXT NOT NULL,
        county TEXT NOT NULL,
        PRIMARY KEY (release, number)
    );
    CREATE TABLE emissions (
        release TEXT NOT NULL REFERENCES emission_releases(label) ON DELETE CASCADE,
        municipality TEXT NOT NULL,
        year INTEGER NOT NULL,
        sector TEXT NOT NULL,
        tonnes REAL NOT NULL,
        PRIMARY KEY (release, municipality, year, sector)
    );
    """,
    # 3: subscribers and their consent; keyed hashes of forgotten addresses.
    """
    CREATE TABLE subscribers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: old links must not reach a new person
        email TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL DEFAULT '',
        municipality TEXT,
        language TEXT NOT NULL DEFAULT 'nb' CHECK (language IN ('nb', 'en')),
        topics TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed', 'bounced', 'blocked')),
        consent_source TEXT NOT NULL,
        consent_at TEXT NOT NULL,
        confirmed_at TEXT,
        unsubscribed_at TEXT,
        hard_bounces INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX subscribers_status ON subscribers(status);
    CREATE TABLE forgotten (
        hash TEXT PRIMARY KEY,
        forgotten_at TEXT NOT NULL
    );
    """,
    # 4: deliveries of issues, with every recipient recorded before the first message leaves.
    """
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        issue TEXT NOT NULL,
        segment TEXT NOT NULL DEFAULT '',
        content_hash TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('scheduled', 'running', 'done', 'cancelled')),
        scheduled_at TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE UNIQUE INDEX deliveries_active ON deliveries(issue) WHERE status != 'cancelled';
    CREATE TABLE delivery_recipients (
        delivery INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
        subscriber INTEGER NOT NULL,
        email TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
        permanent INTEGER NOT NULL DEFAULT 0,
        uncertain INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT NOT NULL DEFAULT '',
        last_error TEXT,
        message_id TEXT,
        sent_at TEXT,
        PRIMARY KEY (delivery, subscriber)
    );
    CREATE INDEX delivery_recipients_status ON delivery_recipients(delivery, status, next_attempt);
    """,
    # 5: the archive: each issue's web version and images, stored when its delivery starts.
    """
    CREATE TABLE archive_issues (
        issue TEXT PRIMARY KEY,
        language TEXT NOT NULL,
        title TEXT NOT NULL,
        subject TEXT NOT NULL,
        preheader TEXT NOT NULL,
        issue_date TEXT NOT NULL,
        html TEXT NOT NULL,
        feed_html TEXT NOT NULL,
        hidden INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE archive_files (
        issue TEXT NOT NULL REFERENCES archive_issues(issue) ON DELETE CASCADE,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (issue, name)
    );
    """,
    # 6: a delivery remembers its transport, when the first message was accepted (the archive
    # publishes it from then), whether its check was overridden, and why a schedule is blocked.
    # An archived issue remembers whether a test send published its images.
    # 'seen' remembers the signing keys and SMTP servers a project has used, so that a lost .env
    # is noticed instead of quietly replaced.
    """
    CREATE TABLE deliveries_new (
        id INTEGER PRIMARY KEY,
        issue TEXT NOT NULL,
        segment TEXT NOT NULL DEFAULT '',
        content_hash TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('scheduled', 'blocked', 'starting', 'running', 'done', 'cancelled')),
        scheduled_at TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        first_sent_at TEXT,
        transport TEXT,
        forced INTEGER NOT NULL DEFAULT 0,
        blocked_reason TEXT
    );
    INSERT INTO deliveries_new (id, issue, segment, content_hash, status, scheduled_at, created_at, started_at,
        finished_at, first_sent_at)
        SELECT id, issue, segment, content_hash, status, scheduled_at, created_at, started_at, finished_at,
        CASE WHEN status = 'done' OR EXISTS (SELECT 1 FROM delivery_recipients r WHERE r.delivery = deliveries.id
            AND r.status = 'sent') THEN COALESCE(started_at, created_at) END
        FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_new RENAME TO deliveries;
    CREATE UNIQUE INDEX deliveries_active ON deliveries(issue) WHERE status != 'cancelled';
    ALTER TABLE archive_issues ADD COLUMN test_images INTEGER NOT NULL DEFAULT 0;
    UPDATE archive_issues SET test_images = 1
        WHERE issue NOT IN (SELECT issue FROM deliveries WHERE status IN ('running', 'done'));
    CREATE TABLE seen (
        what TEXT NOT NULL,
        value TEXT NOT NULL,
        first_at TEXT NOT NULL,
        PRIMARY KEY (what, value)
    );
    """,
    # 7: when an address was last sent a confirmation email (one per confirm_interval); an
    # import applied in short steps, with the rows as they were before each change, so that a
    # killed import can be undone without holding the database for its whole run.
    """
    ALTER TABLE subscribers ADD COLUMN confirm_sent_at TEXT;
    CREATE TABLE imports (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        lock TEXT NOT NULL,
        started_at TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('applying', 'done', 'undone'))
    );
    CREATE TABLE import_undo (
        import INTEGER NOT NULL REFERENCES imports(id) ON DELETE CASCADE,
        subscriber INTEGER NOT NULL,
        before TEXT,
        after TEXT NOT NULL,
        PRIMARY KEY (import, subscriber)
    );
    """,
    # 8: signups from other websites: proof-of-work challenges that have been used (each once,
    # kept until they expire); when a subscriber was welcomed (once), and when they were last
    # sent a link to their preferences page (one per confirm_interval). Subscribers confirmed
    # before welcome mails existed count as welcomed.
    """
    CREATE TABLE used_challenges (
        signature TEXT PRIMARY KEY,
        expires_at TEXT NOT NULL
    );
    ALTER TABLE subscribers ADD COLUMN welcomed_at TEXT;
    ALTER TABLE subscribers ADD COLUMN link_sent_at TEXT;
    UPDATE subscribers SET welcomed_at = confirmed_at WHERE status = 'confirmed';
    """,
    # 9: bounces and complaints that arrive after the SMTP conversation: every report read once
    # (by the hash of its message), each subscriber's events (erased with the subscriber), and
    # the webhook calls of the last half hour (a replay is refused).
    """
    CREATE TABLE bounce_reports (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        seen_at TEXT NOT NULL
    );
    CREATE TABLE subscriber_events (
        id INTEGER PRIMARY KEY,
        subscriber INTEGER NOT NULL REFERENCES subscribers(id) ON DELETE CASCADE,
        delivery INTEGER,
        kind TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        at TEXT NOT NULL
    );
    CREATE INDEX subscriber_events_by_subscriber ON subscriber_events (subscriber, kind, at);
    CREATE INDEX subscriber_events_by_delivery ON subscriber_events (delivery);
    CREATE TABLE webhook_calls (
        key TEXT PRIMARY KEY,
        at TEXT NOT NULL
    );
    """,
    # 10: several senders on one delivery: which sender has claimed a recipient, the senders at
    # work (each alive while it holds the lock 'sender-<id>'), and the messages let go per tenth
    # of a second, for rate limits that hold across senders.
    # From 10 on, every migration is written for both backends: PostgreSQL runs it through
    # _postgres_sql (no table rebuilds, no SQLite-only functions).
    """
    ALTER TABLE delivery_recipients ADD COLUMN claimed_by TEXT;
    CREATE INDEX delivery_recipients_claimed ON delivery_recipients (claimed_by);
    CREATE TABLE senders (
        id TEXT PRIMARY KEY,
        delivery INTEGER NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL
    );
    CREATE TABLE send_rate (
        tick INTEGER PRIMARY KEY,
        sent INTEGER NOT NULL
    );
    """,
)
POSTGRES_FROM = 9  # the first version PostgreSQL databases were made at; later ones are migrated


BUSY_SECONDS = 30  # how long a command waits for another one's write to finish


def busy(exc: BaseException) -> bool:
    """Whether an SQLite error means that another connection holds the database for writing."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


@dataclass(frozen=True)
class Database:
    """Where the project's data lives: the SQLite ``file``, or the PostgreSQL database ``url``
    (then ``file`` only names this machine's place for lock files and unsubscribes kept aside
    while the database was busy: beside the SQLite file, never inside it)."""

    file: Path
    url: str | None = None

    @property
    def local(self) -> Path:
        """The path this machine's side files are named after (``<local>.unsubscribes``, locks)."""
        return self.file.with_name(self.file.stem + "-postgres") if self.url else self.file

    def exists(self) -> bool:
        """Whether there is data to read: the file exists (PostgreSQL: always; it is reached when used)."""
        return bool(self.url) or self.file.is_file()

    def __str__(self) -> str:
        return shown_url(self.url) if self.url else str(self.file)


def shown_url(url: str) -> str:
    """A PostgreSQL address as people may see it: without its password or options."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def local_path(database: Database | Path) -> Path:
    return database.local if isinstance(database, Database) else database


def urgent(database: Database | Path):
    """Around a write that people wait for (an unsubscribe, a signup): long jobs give way to it."""
    path = local_path(database)
    return locks.urgent(path.parent, f"{path.name}-urgent")


def give_way(database: Database | Path) -> None:
    """Between the steps of a long job (an import, a send): let waiting urgent writes go first."""
    path = local_path(database)
    locks.give_way(path.parent, f"{path.name}-urgent")


def explain(path: Database | Path, exc: sqlite3.Error) -> str:
    """One line for a database error that reached a command."""
    if busy(exc):
        return _("{path}: the database is busy (another command is writing to it); try again in a minute.", path=path)
    return _(
        "{path}: cannot use the database ({exc}); check the file (NEWSLETTER_DATABASE) or restore a backup.",
        path=path,
        exc=exc,
    )


def connect(path: Database | Path, timeout: float | None = None) -> sqlite3.Connection:
    """Open the project's database. SQLite: the file at ``path`` (created if needed) and
    migrated. PostgreSQL: a pooled connection behind ``PgConnection``, refused with one line
    when its schema is not this program's ('newsletter db migrate'). Writes wait up to
    ``timeout`` seconds (BUSY_SECONDS) for another connection's write to finish."""
    timeout = BUSY_SECONDS if timeout is None else timeout
    if isinstance(path, Database):
        if path.url:
            return PgConnection(path.url, timeout, local=path.local)  # type: ignore[return-value]
        path = path.file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        _wal(conn, timeout)
        conn.execute("PRAGMA foreign_keys=ON")
        # WAL + NORMAL: a commit survives the process being killed; only a power cut can undo
        # the last commits, never corrupt the file. It saves an fsync per transaction.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise StoreError(explain(path, exc)) from exc
    conn.isolation_level = "DEFERRED"  # from now on, 'with conn:' is one transaction
    return conn


def _wal(conn: sqlite3.Connection, timeout: float) -> None:
    """WAL mode (kept in the file once set). Turning it on in a new file takes the file to itself,
    and SQLite answers 'locked' at once, without waiting, while another connection is creating or
    migrating it (two commands started together on a new project): asked again until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations not applied yet; return the schema version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            _(
                "the database has schema version {version}, newer than this program ({count}); upgrade newsletter.",
                version=version,
                count=len(MIGRATIONS),
            )
        )
    if version == len(MIGRATIONS):
        return version
    # Foreign keys off while tables are rebuilt (dropping the old table must not cascade); they
    # are checked before each migration commits.
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for number, script in enumerate(MIGRATIONS[version:], version + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                    conn.execute("ROLLBACK")  # another process migrated meanwhile
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise StoreError(
                        _("migration {number} left rows without their parent; restore a backup.", number=number)
                    )
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    return len(MIGRATIONS)


def remember(conn: sqlite3.Connection, what: str, value: str) -> None:
    """Note once that the project has used ``value`` (a signing key's fingerprint, an SMTP server)."""
    with conn:
        conn.execute(
            "INSERT INTO seen (what, value, first_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (what, value, timestamp(now())),
        )


def note(conn: sqlite3.Connection, what: str, value: str) -> None:
    """Keep ``value`` as the one current fact of a kind (e.g. whether the SMTP server offers
    SMTPUTF8), replacing the one before. Commits."""
    with conn:
        if conn.execute("SELECT 1 FROM seen WHERE what = ? AND value = ?", (what, value)).fetchone() is None:
            conn.execute("DELETE FROM seen WHERE what = ?", (what,))
            conn.execute("INSERT INTO seen (what, value, first_at) VALUES (?, ?, ?)", (what, value, timestamp(now())))


def recall(conn: sqlite3.Connection, what: str) -> list[tuple[str, str]]:
    """What the project has used of a kind, as (value, first used at), oldest first."""
    return [
        (row[0], row[1])
        for row in conn.execute("SELECT value, first_at FROM seen WHERE what = ? ORDER BY first_at, value", (what,))
    ]


def local_file(conn: sqlite3.Connection) -> Path:
    """The path this machine's side files of the connection's database are named after (the
    SQLite file itself; for PostgreSQL, ``Database.local``)."""
    return Path(conn.execute("PRAGMA database_list").fetchone()[2] or ".")


def lock_key(name: str) -> int:
    """The advisory lock number PostgreSQL knows the lock ``name`` by."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(
    where: Database | sqlite3.Connection, name: str, *, folder: Path | None = None, wait: bool = False, busy: str = ""
) -> Iterator[None]:
    """One holder of ``name`` at a time among all who use the database, released when the holder
    dies. SQLite (one machine): a lock file in ``folder`` (default: beside the database). PostgreSQL
    (every machine): an advisory lock held by the connection ``where`` (or by a connection of its
    own for a ``Database``). Without ``wait``, a lock held elsewhere raises BusyError(``busy``)."""
    if isinstance(where, Database) and where.url:
        conn = connect(where)
        try:
            with exclusive(conn, name, wait=wait, busy=busy):
                yield
        finally:
            conn.close()
        return
    if isinstance(where, PgConnection):
        key = lock_key(name)
        while not where.raw.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if not wait:
                raise BusyError(busy or _("{name} is in use by another run; wait for it to finish.", name=name))
            time.sleep(0.1)
        try:
            yield
        finally:
            if where.raw is not None and not where.raw.closed:
                where.raw.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return
    path = where.file if isinstance(where, Database) else local_file(where)  # type: ignore[arg-type]
    with locks.hold(folder or path.parent, name, wait=wait, busy=busy):
        yield


def is_held(conn: sqlite3.Connection, name: str) -> bool:
    """Whether someone else holds ``name`` (see ``exclusive``) right now: its holder is alive."""
    try:
        with exclusive(conn, name):
            return False
    except BusyError:
        return True


def skip_locked(conn: sqlite3.Connection) -> str:
    """What a SELECT that claims rows ends with: PostgreSQL's FOR UPDATE SKIP LOCKED (rows another
    worker is claiming are passed over, not waited for); nothing on SQLite, whose one writer at a
    time already keeps claims apart."""
    return " FOR UPDATE SKIP LOCKED" if isinstance(conn, PgConnection) else ""


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A transaction that takes the write lock at once, so that what it reads cannot change
    before it writes (SQLite's BEGIN IMMEDIATE; on PostgreSQL the one-writer lock at BEGIN)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def concurrently(conn: sqlite3.Connection) -> Iterator[None]:
    """A transaction written for row locks (claims with ``skip_locked``): on PostgreSQL it does not
    take the one-writer lock, so several workers claim at once; on SQLite, the write lock from
    its first read (``immediate``), since SQLite has no row locks."""
    if isinstance(conn, PgConnection):
        with conn:
            conn.writing = True  # row locks are enough here: no one-writer lock
            yield
    else:
        with immediate(conn):
            yield


@contextmanager
def database(path: Database | Path) -> Iterator[sqlite3.Connection]:
    """A migrated connection that is closed afterwards."""
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()


# --- PostgreSQL (issue 16: the schema and its version; the other stages still use SQLite) -------

POSTGRES_SCHEMES = ("postgresql", "postgres")


@functools.cache
def _current_schema() -> tuple[tuple[tuple[str, str, str], ...], dict[str, str]]:
    """The schema the migrations make, read back from an empty in-memory SQLite database once
    per process: (type, name, sql) of each table and index in creation order, and each table's
    primary key columns."""
    scratch = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS:
            scratch.executescript(script)
        entries = tuple(scratch.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        ).fetchall())  # fmt: skip
        keys = {}
        for kind, table, _sql in entries:
            if kind == "table":
                columns = sorted((r[5], r[1]) for r in scratch.execute(f'PRAGMA table_info("{table}")') if r[5])
                keys[table] = ", ".join(name for _order, name in columns)
        return entries, keys
    finally:
        scratch.close()


def postgres_schema() -> list[str]:
    """The schema of the current version for PostgreSQL, derived from the SQLite migrations
    themselves (applied to an empty in-memory database, then read back), so that both backends
    have one source: tables ordered so that every table comes after the ones it references,
    then the indexes. Types: INTEGER PRIMARY KEY (AUTOINCREMENT) -> BIGINT GENERATED BY DEFAULT AS
    IDENTITY (never reused either), INTEGER -> BIGINT, REAL -> DOUBLE PRECISION, BLOB -> BYTEA."""
    entries, _keys = _current_schema()
    tables = {name: sql for kind, name, sql in entries if kind == "table"}
    ordered: list[str] = []

    def place(name: str, trail: tuple[str, ...] = ()) -> None:
        if name in ordered or name in trail:
            return
        for referenced in re.findall(r"REFERENCES\s+(\w+)", tables[name]):
            if referenced in tables and referenced != name:
                place(referenced, (*trail, name))
        ordered.append(name)

    for name in tables:
        place(name)
    indexes = [sql for kind, _name, sql in entries if kind == "index"]
    return [_postgres_sql(tables[name]) for name in ordered] + [_postgres_sql(sql) for sql in indexes]


def _postgres_sql(sql: str) -> str:
    sql = re.sub(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    sql = re.sub(r"\bid INTEGER PRIMARY KEY\b", "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    return re.sub(r"\bBLOB\b", "BYTEA", sql)


def _unusable(exc: Exception) -> StoreError:
    """One line for a PostgreSQL error that reached a command."""
    return StoreError(
        _(
            "cannot use the PostgreSQL database ({reason}); check NEWSLETTER_DATABASE_URL.",
            reason=" ".join(str(exc).split())[:300],
        )
    )


def postgres_migrate(url: str) -> tuple[int, int]:
    """Bring a PostgreSQL database to this program's schema, in one transaction: (version before,
    version now). An empty database gets the whole schema; an older one the migrations after its
    version (from POSTGRES_FROM on they are written for both backends); a newer one is refused."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)"
            )
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            before = row[0] or 0
            if before == len(MIGRATIONS):
                return before, before
            if before > len(MIGRATIONS):
                raise StoreError(_("the database has schema version {version}, newer than this program ({count}); upgrade newsletter.", version=before, count=len(MIGRATIONS)))  # fmt: skip
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))  # one migrator; writers wait
            before = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0  # again, locked
            if before == len(MIGRATIONS):
                return before, before
            if before == 0:
                statements = postgres_schema()
            else:
                if before < POSTGRES_FROM:
                    raise StoreError(_("the PostgreSQL database has schema version {version}, older than any this program made; copy the data again with 'newsletter db copy'.", version=before))  # fmt: skip
                statements = [
                    _postgres_sql(statement)
                    for script in MIGRATIONS[before:]
                    for statement in script.split(";")
                    if statement.strip()
                ]
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, to_char(now() AT TIME ZONE 'UTC',"
                ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\'))',
                (len(MIGRATIONS),),
            )
            _CHECKED.discard(url)
            return before, len(MIGRATIONS)
    except psycopg.Error as exc:
        raise _unusable(exc) from exc


def postgres_version(url: str) -> int:
    """The schema version of a PostgreSQL database (0: none yet)."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            exists = conn.execute("SELECT to_regclass('schema_version')").fetchone()[0]
            return (conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0) if exists else 0
    except psycopg.Error as exc:
        raise _unusable(exc) from exc


def _canonical(value: object) -> bytes:
    """A value as both backends give it back, for the checksums."""
    if value is None:
        return b"\x00N"
    if isinstance(value, bytes | bytearray | memoryview):
        return b"\x00B" + bytes(value)
    if isinstance(value, bool):
        return b"\x00I" + str(int(value)).encode()
    if isinstance(value, int):
        return b"\x00I" + str(value).encode()
    if isinstance(value, float):
        return b"\x00F" + repr(value).encode()
    return b"\x00S" + str(value).encode("utf-8")


def _checksum(rows: Iterator[tuple]) -> tuple[int, str]:
    """(rows, SHA-256 over the sorted hashes of the rows): independent of the order the backends
    return them in (their collations differ)."""
    hashes = sorted(hashlib.sha256(b"\x01".join(_canonical(v) for v in row)).digest() for row in rows)
    return len(hashes), hashlib.sha256(b"".join(hashes)).hexdigest()


def copy_to_postgres(source: Path, url: str) -> list[tuple[str, int, str]]:
    """Copy the SQLite database ``source`` into an empty PostgreSQL database (given the schema
    first), table by table, in one transaction that commits only when every table's row count
    and checksum (every value of every row) are the same on both sides. The source is only
    read. Returns (table, rows, checksum) per table. Identity sequences continue after the
    highest id ever given (SQLite's AUTOINCREMENT counter included: a forgotten subscriber's
    number is never given to someone new)."""
    import psycopg

    if not source.is_file():
        raise StoreError(_("{path}: no such database to copy.", path=source))
    pending = source.with_name(source.name + ".unsubscribes")
    if pending.is_file() and pending.stat().st_size:
        raise StoreError(
            _(
                "{pending} holds unsubscribes not applied yet; run any command on the list first (e.g. 'newsletter subscribers count'), then copy.",
                pending=pending,
            )
        )
    reader = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    try:
        version = reader.execute("PRAGMA user_version").fetchone()[0]
        if version != len(MIGRATIONS):
            raise StoreError(
                _(
                    "{path} has schema version {version}, this program {count}: run 'newsletter db migrate' on it first.",
                    path=source,
                    version=version,
                    count=len(MIGRATIONS),
                )
            )
        if reader.execute("SELECT 1 FROM imports WHERE state = 'applying'").fetchone():
            raise StoreError(_("an import is being applied to {path}; let it finish, then copy.", path=source))
        postgres_migrate(url)
        tables = [
            re.match(r'CREATE TABLE "?(\w+)"?', sql)[1] for sql in postgres_schema() if sql.startswith("CREATE TABLE")
        ]  # type: ignore[index]
        results = []
        with psycopg.connect(url, connect_timeout=10) as target:
            for table in tables:
                if target.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():
                    raise StoreError(
                        _("the PostgreSQL database is not empty (table {table} has rows); copy into a new database.", table=table)
                    )  # fmt: skip
            for table in tables:
                columns = [row[1] for row in reader.execute(f'PRAGMA table_info("{table}")')]
                names = ", ".join(f'"{c}"' for c in columns)
                with target.cursor().copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                    for row in reader.execute(f'SELECT {names} FROM "{table}"'):
                        copy.write_row(row)
                here = _checksum(reader.execute(f'SELECT {names} FROM "{table}"'))
                there = _checksum(target.execute(f'SELECT {names} FROM "{table}"'))
                if here != there:
                    raise StoreError(
                        _(
                            "table {table} differs after the copy ({here} rows here, {there} there); nothing was kept in PostgreSQL.",
                            table=table,
                            here=here[0],
                            there=there[0],
                        )
                    )
                if (
                    "id" in columns
                    and target.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'"{table}"',)).fetchone()[0]
                ):
                    highest = reader.execute(f'SELECT MAX(id) FROM "{table}"').fetchone()[0] or 0
                    counter = reader.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
                    start = max(highest, counter[0] if counter else 0)
                    if start:
                        target.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (f'"{table}"', start))
                results.append((table, *here))
            target.commit()
        return results
    except psycopg.Error as exc:
        raise _unusable(exc) from exc
    finally:
        reader.close()


# --- the stages' SQL on PostgreSQL (issue 16: the adapter; the stages are not switched yet) -----


class PgRow(tuple):
    """A row by position and by name, as sqlite3.Row (``row[0]``, ``row["email"]``, ``dict(row)``)."""

    names: tuple[str, ...] = ()

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names.index(key))
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self.names)


@functools.lru_cache(maxsize=512)
def _row_kind(names: tuple[str, ...]) -> type:
    return type("Row", (PgRow,), {"names": names})


def _pg_row_factory(cursor: Any) -> Any:
    return _row_kind(tuple(column.name for column in cursor.description or ()))


@functools.cache
def _identity_tables() -> frozenset[str]:
    """Tables whose key is the number PostgreSQL gives (an INSERT returns it as lastrowid)."""
    return frozenset(table for table, key in _primary_keys().items() if key == "id")


def _primary_keys() -> dict[str, str]:
    """Each table's primary key columns, from the migrations (for INSERT OR REPLACE)."""
    return _current_schema()[1]


_IDENTITY = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)


def pg_sql(sql: str, keys: dict[str, str] | None = None) -> str:
    """SQLite's SQL as the stages write it, for PostgreSQL: '?' -> '%s' outside quotes, '%' -> '%%'
    everywhere, INSERT OR IGNORE -> ON CONFLICT DO NOTHING, INSERT OR REPLACE -> ON CONFLICT (key)
    DO UPDATE, BEGIN IMMEDIATE -> BEGIN, MAX(a, b) -> GREATEST(a, b), MIN(a, b) -> LEAST(a, b)."""
    out, quote = [], ""
    for char in sql:
        if quote:
            out.append("%%" if char == "%" else char)  # psycopg reads '%' in quotes too
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    text = re.sub(r"\browid\b", "ctid", "".join(out))  # SQLite's row number; PostgreSQL's row address
    # SQLite's two-argument MAX and MIN are PostgreSQL's GREATEST and LEAST
    text = re.sub(r"\bMAX\(([^(),]+),([^(),]+)\)", r"GREATEST(\1,\2)", text, flags=re.IGNORECASE)
    text = re.sub(r"\bMIN\(([^(),]+),([^(),]+)\)", r"LEAST(\1,\2)", text, flags=re.IGNORECASE)
    if re.match(r"^\s*BEGIN\s+IMMEDIATE\s*$", text, re.IGNORECASE):
        return "BEGIN"
    ignore = re.match(r"^\s*INSERT\s+OR\s+IGNORE\s+", text, re.IGNORECASE)
    if ignore:
        return "INSERT " + text[ignore.end() :] + " ON CONFLICT DO NOTHING"
    replace = re.match(r"^\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)\s*\(([^)]*)\)", text, re.IGNORECASE)
    if replace:
        table, columns = replace[1], [c.strip() for c in replace[2].split(",")]
        key = (keys or _primary_keys())[table]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key.split(", "))
        return (
            f"INSERT INTO {table} "
            + text[replace.end() - len(replace[2]) - 2 :]
            + f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
    return text


@functools.lru_cache(maxsize=1024)
def _translated(sql: str) -> str:
    """``pg_sql`` once per statement text (the stages use a few hundred)."""
    return pg_sql(sql)


class PgCursor:
    """What an execute returns: rows, rowcount and lastrowid (an INSERT into a table with an id
    returns it)."""

    def __init__(self, cursor: Any, lastrowid: int | None) -> None:
        self.cursor, self.lastrowid, self.rowcount = cursor, lastrowid, cursor.rowcount

    def fetchone(self) -> Any:
        return self.cursor.fetchone() if self.cursor.description else None

    def fetchall(self) -> list:
        return self.cursor.fetchall() if self.cursor.description else []

    def fetchmany(self, size: int) -> list:
        return self.cursor.fetchmany(size) if self.cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Fixed:
    """The answer to a PRAGMA on PostgreSQL."""

    def __init__(self, rows: list[tuple]) -> None:
        self.rows, self.rowcount, self.lastrowid = rows, 0, None

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple]:
        return self.rows


WRITE_LOCK = 0x6E6577736C657474  # 'newslett': the advisory lock that stands for SQLite's write lock
POOL_SIZE = 20  # connections kept per process and database (the web server's threads share them)
_WRITES = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)
_POOLS: dict[tuple[str, int], Any] = {}
_CHECKED: set[str] = set()
_POOLING: list[bool] = [False]  # on in a server (``use_pool``); a command opens a connection of its own


def use_pool() -> None:
    """Connections to PostgreSQL come from a pool from now on in this process: for a server,
    whose threads answer many short requests. A command keeps its own connections, and no pool
    threads (a send forks its workers, which a process with threads must not)."""
    _POOLING[0] = True


def _reset(raw: Any) -> None:
    """A connection going back to the pool lets go of what its user held."""
    raw.execute("SELECT pg_advisory_unlock_all()")


def _pool(url: str) -> Any:
    """This process's pool of connections to ``url`` (a forked child makes its own)."""
    import os

    from psycopg_pool import ConnectionPool

    key = (url, os.getpid())
    pool = _POOLS.get(key)
    if pool is None:
        pool = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True, "connect_timeout": 10, "row_factory": _pg_row_factory},
            reset=_reset,
            check=ConnectionPool.check_connection,  # a server restarted since: a new connection, not an error
            open=False,
            name="newsletter",
        )
        try:
            pool.open(wait=True, timeout=15)
        except BaseException:
            pool.close(timeout=1)  # its threads end here, not later in the collector (from one of them)
            raise
        _POOLS[key] = pool
    return pool


def close_pools() -> None:
    """Close this process's connection pools (their connections end; a later connect opens anew)."""
    for key in list(_POOLS):
        _POOLS.pop(key).close(timeout=1)


def _check_version(raw: Any, url: str) -> None:
    """Refuse a database whose schema is not this program's (once per process and database)."""
    if url in _CHECKED:
        return
    exists = raw.execute("SELECT to_regclass('schema_version')").fetchone()[0]
    version = (raw.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0) if exists else 0
    if version < len(MIGRATIONS):
        raise StoreError(
            _(
                "{url}: the PostgreSQL database has schema version {version} and this program needs {count}; run 'newsletter db migrate' (after a backup).",
                url=shown_url(url),
                version=version,
                count=len(MIGRATIONS),
            )
        )
    if version > len(MIGRATIONS):
        raise StoreError(_("the database has schema version {version}, newer than this program ({count}); upgrade newsletter.", version=version, count=len(MIGRATIONS)))  # fmt: skip
    _CHECKED.add(url)


class PgConnection:
    """A psycopg connection (pooled in a server) behind the part of sqlite3.Connection's API that the stages
    use: ``execute``/``executemany`` with '?' placeholders, rows by name and position, ``with
    conn:`` as one transaction (or an explicit BEGIN ... COMMIT), and sqlite3's IntegrityError
    and OperationalError for a broken constraint or a lock that timed out, so callers stay as
    they are.

    SQLite's promise, one writer at a time, is kept: a transaction takes a cluster-wide advisory
    lock at its first write (at once for BEGIN IMMEDIATE), held until it ends, so read-then-write
    code written for SQLite stays correct on every machine. Readers never wait. Writers wait up
    to ``timeout`` seconds, then get sqlite3's 'database is locked'."""

    def __init__(self, url: str, timeout: float, local: Path) -> None:
        import psycopg

        # This machine's side files (locks, unsubscribes kept aside) are named after ``local``.
        self.local = local
        self.url = url
        self.pool = _pool(url) if _POOLING[0] else None
        try:
            if self.pool is not None:
                self.raw = self.pool.getconn(timeout=max(timeout, 1))
            else:
                self.raw = psycopg.connect(url, autocommit=True, connect_timeout=10, row_factory=_pg_row_factory)
        except Exception as exc:  # psycopg.Error, or the pool's timeout: the server cannot be reached
            raise _unusable(exc) from exc
        try:
            # As SQLite's WAL with synchronous=NORMAL: a commit survives this process being killed;
            # only the server's crash can undo the last commits (never corrupt). 'PRAGMA
            # synchronous=FULL' (durable when answered: unsubscribes) turns it on again.
            self.raw.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'; SET synchronous_commit = off")
            _check_version(self.raw, url)
        except BaseException as exc:
            self._release()
            if isinstance(exc, psycopg.Error):
                raise _unusable(exc) from exc
            raise
        self.identity = _identity_tables()
        self.explicit = False  # inside a BEGIN the caller wrote
        self.writing = False  # this transaction holds the write lock

    def _write_lock(self) -> None:
        if not self.writing:
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self.writing = True

    def execute(self, sql: str, params: tuple | list = ()) -> PgCursor:
        import psycopg

        pragma = re.match(r"^\s*PRAGMA\s+(\w+)\s*(=.*)?$", sql, re.IGNORECASE)
        if pragma:  # SQLite's own settings: the file for the lock files, the rest means nothing here
            name = pragma[1].lower()
            if name not in ("database_list", "synchronous", "journal_mode", "foreign_keys", "busy_timeout"):
                raise StoreError(f"PRAGMA {name} has no meaning on PostgreSQL; this statement needs a PostgreSQL form.")
            rows = [(0, "main", str(self.local))] if name == "database_list" else []
            if name == "synchronous" and pragma[2]:
                durable = pragma[2].strip("= ").upper() in ("FULL", "EXTRA", "2", "3")
                self.raw.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
            elif name == "synchronous":
                rows = [(2 if self.raw.execute("SHOW synchronous_commit").fetchone()[0] == "on" else 1,)]
            return _Fixed(rows)  # type: ignore[return-value]
        immediate = bool(re.match(r"^\s*BEGIN\s+IMMEDIATE\s*$", sql, re.IGNORECASE))
        text = _translated(sql)
        upper = text.strip().upper()
        table = _IDENTITY.match(text)
        wants_id = bool(table and table[1] in self.identity and "RETURNING" not in upper)
        alone = False  # a write outside any transaction: a transaction of its own
        try:
            if upper == "BEGIN":
                self.raw.execute("BEGIN")
                self.explicit, self.writing = True, False
                if immediate:
                    try:
                        self._write_lock()
                    except BaseException:  # not begun after all: the connection stays usable
                        self._abandon()
                        self.explicit = False
                        raise
                return _Fixed([])  # type: ignore[return-value]
            if upper in ("COMMIT", "ROLLBACK"):
                self.explicit = self.writing = False
            elif _WRITES.match(text):
                if not self.in_transaction:
                    self.raw.execute("BEGIN")
                    alone = True
                self._write_lock()
            cursor = self.raw.execute(text + (" RETURNING id" if wants_id else ""), tuple(params))
            lastrowid = None
            if wants_id and cursor.description:
                row = cursor.fetchone()
                lastrowid = row[0] if row else None
            if alone:
                self.raw.execute("COMMIT")
                self.writing = False
            return PgCursor(cursor, lastrowid)
        except psycopg.Error as exc:
            if alone:
                self._abandon()
            raise self._translate_error(exc) from exc

    @staticmethod
    def _translate_error(exc: Exception) -> Exception:
        """psycopg's error as the stages expect it: sqlite3's, or one line (StoreError)."""
        import psycopg

        if isinstance(exc, psycopg.IntegrityError):
            return sqlite3.IntegrityError(str(exc))
        if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            return sqlite3.OperationalError(f"database is locked ({exc})")
        if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
            return sqlite3.OperationalError(f"database is busy ({exc})")
        if isinstance(exc, psycopg.OperationalError):  # the server went away, or the network
            return _unusable(exc)
        return exc

    def _abandon(self) -> None:
        from contextlib import suppress

        import psycopg

        with suppress(psycopg.Error):
            self.raw.execute("ROLLBACK")
        self.writing = False

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def executemany(self, sql: str, rows: Iterable) -> _Fixed:
        """Every row in one pipelined round (psycopg's executemany); the rows changed in all
        (``rowcount``), as sqlite3's."""
        import psycopg

        text = _translated(sql)
        total = _Fixed([])
        table = _IDENTITY.match(text)
        if not _WRITES.match(text) or (table and table[1] in self.identity and "RETURNING" not in text.upper()):
            for params in rows:  # a statement that returns an id, or no write: one at a time
                total.rowcount += max(self.execute(sql, params).rowcount, 0)
            return total
        params = [tuple(p) for p in rows]
        if not params:
            return total
        alone = not self.in_transaction
        try:
            if alone:
                self.raw.execute("BEGIN")
            self._write_lock()
            with self.raw.cursor() as cursor:
                cursor.executemany(text, params)
                total.rowcount = max(cursor.rowcount, 0)
            if alone:
                self.raw.execute("COMMIT")
                self.writing = False
            return total
        except psycopg.Error as exc:
            if alone:
                self._abandon()
            raise self._translate_error(exc) from exc

    def __enter__(self) -> PgConnection:
        if not self.explicit:
            self.raw.execute("BEGIN")
            self.writing = False
        return self

    def __exit__(self, kind: Any, value: Any, trace: Any) -> None:
        if self.explicit:
            return
        self.writing = False
        if kind:
            self._abandon()
        else:
            self.execute("COMMIT")

    def commit(self) -> None:
        """As sqlite3's: end the transaction the caller began, keeping its changes."""
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self._abandon()
        self.explicit = False

    def _release(self) -> None:
        if self.pool is not None:
            self.pool.putconn(self.raw)  # reset on its way back: its advisory locks go
        else:
            self.raw.close()
        self.raw = None

    def close(self) -> None:
        if self.raw is not None:
            if self.in_transaction and not self.raw.closed:
                self._abandon()
            self._release()
