"""SQLite: the schema, its migrations, and connections with safe defaults.

One database file per project (``newsletter.db`` by default). Migrations are numbered and
applied in order inside a transaction; ``PRAGMA user_version`` records the last one applied.
Every change elsewhere happens inside ``with connection:`` so that a failure leaves nothing
half-written.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import locks
from .clock import now, timestamp
from .errors import StoreError
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
)


BUSY_SECONDS = 30  # how long a command waits for another one's write to finish


def busy(exc: BaseException) -> bool:
    """Whether an SQLite error means that another connection holds the database for writing."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def urgent(database: Path):
    """Around a write that people wait for (an unsubscribe, a signup): long jobs give way to it."""
    return locks.urgent(database.parent, f"{database.name}-urgent")


def give_way(database: Path) -> None:
    """Between the steps of a long job (an import, a send): let waiting urgent writes go first."""
    locks.give_way(database.parent, f"{database.name}-urgent")


def explain(path: Path, exc: sqlite3.Error) -> str:
    """One line for a database error that reached a command."""
    if busy(exc):
        return _("{path}: the database is busy (another command is writing to it); try again in a minute.", path=path)
    return _(
        "{path}: cannot use the database ({exc}); check the file (NEWSLETTER_DATABASE) or restore a backup.",
        path=path,
        exc=exc,
    )


def connect(path: Path, timeout: float | None = None) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``. Writes wait up to
    ``timeout`` seconds (BUSY_SECONDS) for another connection's write to finish."""
    timeout = BUSY_SECONDS if timeout is None else timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
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


@contextmanager
def database(path: Path) -> Iterator[sqlite3.Connection]:
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
    """Bring a PostgreSQL database to this program's schema: (version before, version now). An
    empty database gets the whole schema in one transaction; one at this version is left as it is;
    one that is newer, or older (later migrations are not written for PostgreSQL yet), is refused."""
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
            if before:
                raise StoreError(
                    _(
                        "the PostgreSQL database has schema version {version} and this program {count}; upgrading an existing PostgreSQL database is not built yet (issue 16).",
                        version=before,
                        count=len(MIGRATIONS),
                    )
                )
            for statement in postgres_schema():
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (%s, to_char(now() AT TIME ZONE 'UTC',"
                ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\'))',
                (len(MIGRATIONS),),
            )
            return 0, len(MIGRATIONS)
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


def _pg_row_factory(cursor: Any) -> Any:
    names = tuple(column.name for column in cursor.description or ())
    kind = type("Row", (PgRow,), {"names": names})
    return lambda values: kind(values)


def _primary_keys() -> dict[str, str]:
    """Each table's primary key columns, from the migrations (for INSERT OR REPLACE)."""
    return _current_schema()[1]


_IDENTITY = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)


def pg_sql(sql: str, keys: dict[str, str] | None = None) -> str:
    """SQLite's SQL as the stages write it, for PostgreSQL: '?' -> '%s' outside quotes, '%' -> '%%'
    everywhere, INSERT OR IGNORE -> ON CONFLICT DO NOTHING, INSERT OR REPLACE -> ON CONFLICT (key)
    DO UPDATE, BEGIN IMMEDIATE -> BEGIN."""
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


class PgConnection:
    """A psycopg connection behind the part of sqlite3.Connection's API that the stages use:
    ``execute``/``executemany`` with '?' placeholders, rows by name and position, ``with conn:``
    as one transaction (or an explicit BEGIN ... COMMIT), and sqlite3's IntegrityError and
    OperationalError for a broken constraint or a lock that timed out, so callers stay as they are."""

    def __init__(self, url: str, timeout: float = BUSY_SECONDS, lock_dir: Path | None = None) -> None:
        import tempfile

        import psycopg

        # The lock files that order writers on one machine (urgent, give_way) live here; across
        # machines PostgreSQL's own row locks do that work.
        self.lock_dir = lock_dir or Path(tempfile.gettempdir()) / "newsletter-postgres"

        self.raw = psycopg.connect(url, autocommit=True, connect_timeout=10, row_factory=_pg_row_factory)
        self.raw.execute(f"SET lock_timeout = '{int(timeout * 1000)}ms'")
        self.keys = _primary_keys()
        self.identity = {table for table, sql in self.keys.items() if sql == "id"}
        self.explicit = False  # inside a BEGIN the caller wrote

    def execute(self, sql: str, params: tuple | list = ()) -> PgCursor:
        import psycopg

        pragma = re.match(r"^\s*PRAGMA\s+(\w+)\s*(=.*)?$", sql, re.IGNORECASE)
        if pragma:  # SQLite's own settings: the file for the lock files, the rest means nothing here
            name = pragma[1].lower()
            if name not in ("database_list", "synchronous", "journal_mode", "foreign_keys", "busy_timeout"):
                raise StoreError(f"PRAGMA {name} has no meaning on PostgreSQL; this statement needs a PostgreSQL form.")
            rows = [(0, "main", str(self.lock_dir / "postgres.db"))] if name == "database_list" else []
            rows = [(2,)] if name == "synchronous" and not pragma[2] else rows
            return _Fixed(rows)  # type: ignore[return-value]
        text = pg_sql(sql, self.keys)
        upper = text.strip().upper()
        if upper == "BEGIN":
            self.explicit = True
        elif upper in ("COMMIT", "ROLLBACK"):
            self.explicit = False
        table = _IDENTITY.match(text)
        wants_id = bool(table and table[1] in self.identity and "RETURNING" not in upper)
        try:
            cursor = self.raw.execute(text + (" RETURNING id" if wants_id else ""), tuple(params))
        except psycopg.IntegrityError as exc:
            raise sqlite3.IntegrityError(str(exc)) from exc
        except psycopg.errors.LockNotAvailable as exc:
            raise sqlite3.OperationalError(f"database is locked ({exc})") from exc
        lastrowid = None
        if wants_id and cursor.description:
            row = cursor.fetchone()
            lastrowid = row[0] if row else None
        return PgCursor(cursor, lastrowid)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def executemany(self, sql: str, rows: Iterable) -> None:
        for params in rows:
            self.execute(sql, params)

    def __enter__(self) -> PgConnection:
        if not self.explicit:
            self.raw.execute("BEGIN")
        return self

    def __exit__(self, kind: Any, value: Any, trace: Any) -> None:
        if self.explicit:
            return
        self.raw.execute("ROLLBACK" if kind else "COMMIT")

    def close(self) -> None:
        self.raw.close()
