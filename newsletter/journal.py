"""The delivery journal: the only SQL on deliveries and their recipients.

A delivery is one issue to one audience. It is 'scheduled' (a time, nobody recorded yet),
'blocked' (a scheduled one that run-due refused, with the reason), 'starting' (its recipients
being recorded, in short steps; nothing has left), 'running' (every recipient recorded, before
the first message leaves), 'done' or 'cancelled'. Each recipient is
'pending', 'sending' (handed to a connection: after a crash it may or may not have arrived),
'sent', 'failed' or 'skipped' (unsubscribed meanwhile). Functions that change rows expect the
caller's transaction (``with conn:``) unless they say they commit.

Several senders (processes, or machines sharing PostgreSQL) can work on one delivery: each is
registered in ``senders`` and alive while it holds its lock; it claims recipients in batches
(``claim``: FOR UPDATE SKIP LOCKED on PostgreSQL), and the recipients of a sender that died are
claimed again by the others at once (``recover``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .clock import now, parse_timestamp, timestamp
from .language import _
from .store import concurrently, immediate, skip_locked

ACTIVE = ("scheduled", "blocked", "starting", "running")  # not finished


def by_key_only(column: str) -> str:
    """``column`` as an expression no index serves (``status || ''``), in SQLite and PostgreSQL
    alike: a statement that names its rows by primary key (delivery, subscriber IN ...) is then
    planned on that key, never on an index of status or claimed_by, which would visit every
    pending row of the delivery (the cost of a claim grew with the delivery's size)."""
    return f"{column} || ''"


@dataclass(frozen=True)
class Delivery:
    """One row of the journal."""

    id: int
    issue: str
    segment: str
    content_hash: str
    status: str
    scheduled_at: datetime | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    first_sent_at: datetime | None
    transport: str | None
    forced: bool
    blocked_reason: str | None


def _delivery(row: sqlite3.Row | None) -> Delivery | None:
    if row is None:
        return None
    return Delivery(
        id=row["id"],
        issue=row["issue"],
        segment=row["segment"],
        content_hash=row["content_hash"],
        status=row["status"],
        scheduled_at=parse_timestamp(row["scheduled_at"]),
        created_at=parse_timestamp(row["created_at"]),
        started_at=parse_timestamp(row["started_at"]),
        finished_at=parse_timestamp(row["finished_at"]),
        first_sent_at=parse_timestamp(row["first_sent_at"]),
        transport=row["transport"],
        forced=bool(row["forced"]),
        blocked_reason=row["blocked_reason"],
    )


def get(conn: sqlite3.Connection, delivery: int) -> Delivery:
    """The delivery with this number."""
    found = _delivery(conn.execute("SELECT * FROM deliveries WHERE id = ?", (delivery,)).fetchone())
    assert found is not None, delivery
    return found


def active(conn: sqlite3.Connection, issue: str) -> Delivery | None:
    """The issue's delivery that is not cancelled (there is at most one), if any."""
    return _delivery(
        conn.execute("SELECT * FROM deliveries WHERE issue = ? AND status != 'cancelled'", (issue,)).fetchone()
    )


def latest(conn: sqlite3.Connection, issue: str) -> Delivery | None:
    """The issue's newest delivery, cancelled ones included."""
    return _delivery(
        conn.execute("SELECT * FROM deliveries WHERE issue = ? ORDER BY id DESC LIMIT 1", (issue,)).fetchone()
    )


def unfinished(conn: sqlite3.Connection) -> list[Delivery]:
    """Scheduled, blocked and running deliveries, soonest first."""
    marks = ",".join("?" * len(ACTIVE))
    rows = conn.execute(
        f"SELECT * FROM deliveries WHERE status IN ({marks}) ORDER BY COALESCE(scheduled_at, created_at), id", ACTIVE
    ).fetchall()
    return [d for d in map(_delivery, rows) if d is not None]


def due(conn: sqlite3.Connection, moment: datetime) -> list[Delivery]:
    """Scheduled deliveries whose time has come, and running ones with recipients left."""
    rows = conn.execute(
        "SELECT * FROM deliveries WHERE (status = 'scheduled' AND scheduled_at <= ?) OR status = 'starting'"
        " OR (status = 'running'"
        " AND EXISTS (SELECT 1 FROM delivery_recipients r WHERE r.delivery = deliveries.id"
        " AND r.status IN ('pending', 'sending'))) ORDER BY id",
        (timestamp(moment),),
    ).fetchall()
    return [d for d in map(_delivery, rows) if d is not None]


def smtp_targets(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """(transport, since) of deliveries that went (or started to go) by SMTP."""
    return [
        (row[0], row[1])
        for row in conn.execute(
            "SELECT transport, MIN(COALESCE(started_at, created_at)) FROM deliveries WHERE transport LIKE 'smtp %'"
            " GROUP BY transport ORDER BY 2"
        )
    ]


# --- starting, scheduling, blocking ---------------------------------------------------------------


def create(
    conn: sqlite3.Connection,
    issue: str,
    segment: str,
    fingerprint: str,
    *,
    forced: bool = False,
    scheduled_at: datetime | None = None,
) -> int:
    """A new delivery: scheduled (with ``scheduled_at``) or about to start (``start`` adds its
    recipients in the same transaction)."""
    moment = timestamp(now())
    cursor = conn.execute(
        "INSERT INTO deliveries (issue, segment, content_hash, status, scheduled_at, created_at, forced)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (issue, segment, fingerprint, "scheduled" if scheduled_at else "starting",
         timestamp(scheduled_at) if scheduled_at else None, moment, int(forced)),
    )  # fmt: skip
    return cursor.lastrowid  # type: ignore[return-value]


def starting(conn: sqlite3.Connection, delivery: int, fingerprint: str, forced: bool) -> None:
    """Its recipients are about to be recorded (in short steps, ``add_recipients``): any recorded
    by a start that was cut short go, and the issue's fingerprint is the one starting now."""
    conn.execute("DELETE FROM delivery_recipients WHERE delivery = ?", (delivery,))
    conn.execute(
        "UPDATE deliveries SET status = 'starting', content_hash = ?, forced = ?, blocked_reason = NULL WHERE id = ?",
        (fingerprint, int(forced), delivery),
    )


def add_recipients(conn: sqlite3.Connection, delivery: int, recipients: Iterable[tuple[int, str]]) -> None:
    """Record recipients (subscriber id, address) of a starting delivery."""
    conn.executemany(
        "INSERT INTO delivery_recipients (delivery, subscriber, email, status) VALUES (?, ?, ?, 'pending')",
        [(delivery, subscriber, email) for subscriber, email in recipients],
    )


def start(conn: sqlite3.Connection, delivery: int, transport: str) -> None:
    """Every recipient is recorded: the delivery is running."""
    conn.execute(
        "UPDATE deliveries SET status = 'running', started_at = ?, transport = ?, blocked_reason = NULL WHERE id = ?",
        (timestamp(now()), transport, delivery),
    )


def untouched(conn: sqlite3.Connection, delivery: int) -> bool:
    """Whether a started delivery has had no message accepted, and none that might have been
    (a wrong SMTP password, a server that could not be reached): it can start again or be cancelled."""
    return (
        conn.execute(
            "SELECT 1 FROM deliveries WHERE id = ? AND first_sent_at IS NULL AND NOT EXISTS (SELECT 1 FROM"
            " delivery_recipients r WHERE r.delivery = deliveries.id AND (r.status IN ('sent', 'sending')"
            " OR r.uncertain = 1))",
            (delivery,),
        ).fetchone()
        is not None
    )


def block(conn: sqlite3.Connection, delivery: int, reason: str) -> None:
    """A scheduled delivery that cannot go as it is: it waits, with the reason, to be approved or cancelled."""
    conn.execute(
        "UPDATE deliveries SET status = 'blocked', blocked_reason = ? WHERE id = ? AND status IN ('scheduled', 'blocked')",
        (reason, delivery),
    )


def approve(
    conn: sqlite3.Connection, delivery: int, fingerprint: str, forced: bool, scheduled_at: datetime | None = None
) -> None:
    """Schedule a blocked (or scheduled) delivery again, for the issue as it is now."""
    conn.execute(
        "UPDATE deliveries SET status = 'scheduled', blocked_reason = NULL, content_hash = ?, forced = ?,"
        " scheduled_at = COALESCE(?, scheduled_at) WHERE id = ? AND status IN ('scheduled', 'blocked')",
        (fingerprint, int(forced), timestamp(scheduled_at) if scheduled_at else None, delivery),
    )


def cancel(conn: sqlite3.Connection, delivery: int) -> None:
    """Cancel a delivery that has not started, or an untouched one (see ``untouched``)."""
    conn.execute("UPDATE deliveries SET status = 'cancelled' WHERE id = ? AND status IN ('scheduled', 'blocked',"
                 " 'starting', 'running')", (delivery,))  # fmt: skip


# --- running ----------------------------------------------------------------------------------------


def sender_lock(sender: str) -> str:
    """The lock a sender holds while it lives (see ``store.exclusive``); a name any file system takes."""
    return "sender-" + hashlib.sha256(sender.encode()).hexdigest()[:24]


def register(conn: sqlite3.Connection, delivery: int, sender: str, host: str, pid: int) -> None:
    """A sender starts on the delivery (it holds its lock already). Commits."""
    with conn:
        conn.execute(
            "INSERT INTO senders (id, delivery, host, pid, started_at) VALUES (?, ?, ?, ?, ?)",
            (sender, delivery, host, pid, timestamp(now())),
        )


def unregister(conn: sqlite3.Connection, delivery: int, sender: str) -> None:
    """A sender stops: the recipients it claimed and did not hand over go back. Commits."""
    with conn:
        conn.execute(
            "UPDATE delivery_recipients SET claimed_by = NULL WHERE delivery = ? AND claimed_by = ? AND status = 'pending'",
            (delivery, sender),
        )
        conn.execute("DELETE FROM senders WHERE id = ?", (sender,))


def senders(conn: sqlite3.Connection, delivery: int) -> list[tuple[str, str, int]]:
    """The senders registered on a delivery: (id, host, pid)."""
    return [
        (r[0], r[1], r[2]) for r in conn.execute("SELECT id, host, pid FROM senders WHERE delivery = ?", (delivery,))
    ]


def recover(conn: sqlite3.Connection, delivery: int, alive: Callable[[str], bool], me: str | None = None) -> int:
    """After a crash: messages marked 'sending' by a sender that is gone (its lock is free) may or
    may not have left. Send them again (nobody is lost) and mark them uncertain (they may get two
    copies); the recipients it had claimed go back. Rows of senders still alive are theirs.
    Commits. Returns how many senders were gone."""
    gone = [sender for sender, _host, _pid in senders(conn, delivery) if sender != me and not alive(sender)]
    with conn:
        for sender in gone:
            conn.execute(
                "UPDATE delivery_recipients SET status = 'pending', uncertain = 1, next_attempt = '', claimed_by = NULL"
                " WHERE delivery = ? AND claimed_by = ? AND status = 'sending'",
                (delivery, sender),
            )
            conn.execute(
                "UPDATE delivery_recipients SET claimed_by = NULL WHERE delivery = ? AND claimed_by = ?",
                (delivery, sender),
            )
            conn.execute("DELETE FROM senders WHERE id = ?", (sender,))
        # rows of a sender with no record (a run from before senders were recorded, a killed start)
        conn.execute(
            "UPDATE delivery_recipients SET status = 'pending', uncertain = 1, next_attempt = '', claimed_by = NULL"
            " WHERE delivery = ? AND status = 'sending' AND (claimed_by IS NULL OR claimed_by NOT IN"
            " (SELECT id FROM senders))",
            (delivery,),
        )
        conn.execute(
            "UPDATE delivery_recipients SET claimed_by = NULL WHERE delivery = ? AND status = 'pending'"
            " AND claimed_by IS NOT NULL AND claimed_by NOT IN (SELECT id FROM senders)",
            (delivery,),
        )
    return len(gone)


def lost(conn: sqlite3.Connection, delivery: int, sender: str) -> None:
    """This sender's process that was handing messages over died: what it had may or may not
    have left (pending again, uncertain). Commits."""
    with conn:
        conn.execute(
            "UPDATE delivery_recipients SET status = 'pending', uncertain = 1, next_attempt = '', claimed_by = NULL"
            " WHERE delivery = ? AND claimed_by = ? AND status = 'sending'",
            (delivery, sender),
        )


def resume(conn: sqlite3.Connection, delivery: int, transport: str, retry_failed: bool = False) -> None:
    """Mark a started delivery running again (with ``retry_failed``: temporary failures that gave
    up are pending once more)."""
    if retry_failed:
        conn.execute(
            "UPDATE delivery_recipients SET status = 'pending', attempts = 0, next_attempt = ''"
            " WHERE delivery = ? AND status = 'failed' AND permanent = 0",
            (delivery,),
        )
    conn.execute(
        "UPDATE deliveries SET status = 'running', finished_at = NULL, transport = ? WHERE id = ?",
        (transport, delivery),
    )


def left(conn: sqlite3.Connection, delivery: int, retry_failed: bool = False) -> int:
    """Recipients still to send (with ``retry_failed``: and the temporary failures that gave up)."""
    extra = " OR (status = 'failed' AND permanent = 0)" if retry_failed else ""
    return conn.execute(
        f"SELECT COUNT(*) FROM delivery_recipients WHERE delivery = ? AND (status IN ('pending', 'sending'){extra})",
        (delivery,),
    ).fetchone()[0]


Job = tuple[int, str, str, str | None]  # subscriber, address, name, municipality


def claim(conn: sqlite3.Connection, delivery: int, sender: str, want: int) -> list[Job]:
    """Claim up to ``want`` recipients due now that no sender has claimed, for ``sender``. Those
    who are no longer confirmed subscribers (unsubscribed, bounced, forgotten meanwhile) are
    marked skipped on the way, however many there are. A claim records no attempt: a crash now
    loses no one and doubles no one (``recover`` gives the claims back). Index order: no sort of
    the whole delivery."""
    jobs: list[Job] = []
    while len(jobs) < want:
        limit = want - len(jobs)
        with concurrently(conn):  # PostgreSQL: other senders claim other rows at the same time
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT subscriber FROM delivery_recipients WHERE delivery = ? AND status = 'pending'"
                    " AND claimed_by IS NULL AND next_attempt <= ? ORDER BY next_attempt LIMIT ?" + skip_locked(conn),
                    (delivery, timestamp(now()), limit),
                ).fetchall()
            ]
            if ids:
                marks = ",".join("?" * len(ids))
                conn.execute(  # only what is still unclaimed and pending: a claim never takes another's
                    f"UPDATE delivery_recipients SET claimed_by = ? WHERE delivery = ? AND subscriber IN ({marks})"
                    f" AND {by_key_only('status')} = 'pending' AND claimed_by IS NULL",
                    (sender, delivery, *ids),
                )
        if not ids:
            break
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            "SELECT r.subscriber, r.email, s.name, s.municipality, s.status FROM delivery_recipients r"
            f" LEFT JOIN subscribers s ON s.id = r.subscriber WHERE r.delivery = ? AND r.subscriber IN ({marks})"
            f" AND {by_key_only('r.claimed_by')} = ? AND {by_key_only('r.status')} = 'pending'",
            (delivery, *ids, sender),
        ).fetchall()
        gone = [row["subscriber"] for row in rows if row["status"] != "confirmed"]
        if gone:
            with conn:
                conn.executemany(
                    "UPDATE delivery_recipients SET status = 'skipped' WHERE delivery = ? AND subscriber = ?"
                    " AND status = 'pending'",
                    [(delivery, subscriber) for subscriber in gone],
                )
        jobs.extend(
            (row["subscriber"], row["email"], row["name"] or "", row["municipality"])
            for row in rows
            if row["status"] == "confirmed"
        )
        if len(ids) < limit:
            break  # no more due rows
    return jobs


def claimed_elsewhere(conn: sqlite3.Connection, delivery: int, sender: str) -> bool:
    """Whether other senders hold recipients of the delivery that are still to send."""
    return (
        conn.execute(
            "SELECT 1 FROM delivery_recipients WHERE delivery = ? AND status IN ('pending', 'sending')"
            " AND claimed_by IS NOT NULL AND claimed_by != ? LIMIT 1",
            (delivery, sender),
        ).fetchone()
        is not None
    )


def next_attempt(conn: sqlite3.Connection, delivery: int) -> datetime | None:
    """When the next pending recipient nobody has claimed is due (now, for those never tried), or
    None if there is none."""
    value = conn.execute(
        "SELECT MIN(next_attempt) FROM delivery_recipients WHERE delivery = ? AND status = 'pending'"
        " AND claimed_by IS NULL",
        (delivery,),
    ).fetchone()[0]
    if value is None:
        return None
    return parse_timestamp(value) or now()


def leaving(conn: sqlite3.Connection, delivery: int, sender: str, subscribers: list[int]) -> list[int]:
    """Mark these (claimed by ``sender``) as handed over, before they are (after a crash they
    are resent, as uncertain), and return them; those who stopped being confirmed subscribers
    since they were read are marked skipped instead, and any no longer this sender's pending
    claim are left out. Only rows this sender holds are touched (``concurrently`` is enough)."""
    marks = ",".join("?" * len(subscribers))
    going = {
        row[0]
        for row in conn.execute(
            "UPDATE delivery_recipients SET status = CASE WHEN subscriber IN (SELECT id FROM subscribers WHERE"
            f" id IN ({marks}) AND status = 'confirmed') THEN 'sending' ELSE 'skipped' END WHERE delivery = ?"
            f" AND subscriber IN ({marks}) AND {by_key_only('claimed_by')} = ? AND {by_key_only('status')} = 'pending'"
            " RETURNING subscriber, status",
            (*subscribers, delivery, *subscribers, sender),
        ).fetchall()
        if row[1] == "sending"
    }
    return [subscriber for subscriber in subscribers if subscriber in going]


def requeue(conn: sqlite3.Connection, delivery: int, subscriber: int) -> None:
    """Back in the queue with no attempt counted: the run stopped, not for this recipient's sake."""
    conn.execute(
        "UPDATE delivery_recipients SET status = 'pending', claimed_by = NULL WHERE delivery = ? AND subscriber = ?"
        " AND status = 'sending'",
        (delivery, subscriber),
    )


def sent(conn: sqlite3.Connection, delivery: int, subscriber: int, message_id: str, first_known: bool = False) -> bool:
    """The transport accepted the message. Returns True if it is the delivery's first (the issue
    is published from then on); ``first_known``: the caller knows a first was recorded already."""
    moment = timestamp(now())
    conn.execute(
        "UPDATE delivery_recipients SET status = 'sent', attempts = attempts + 1, sent_at = ?, message_id = ?,"
        " last_error = NULL WHERE delivery = ? AND subscriber = ?",
        (moment, message_id, delivery, subscriber),
    )
    if first_known:
        return False
    first = conn.execute(
        "UPDATE deliveries SET first_sent_at = ? WHERE id = ? AND first_sent_at IS NULL", (moment, delivery)
    )
    return first.rowcount == 1


def failed(
    conn: sqlite3.Connection,
    delivery: int,
    subscriber: int,
    *,
    permanent: bool,
    error: str,
    uncertain: bool,
    max_attempts: int,
    retry_seconds: int,
) -> bool:
    """A failed attempt: retried later with a doubling wait, or failed for good (a permanent
    failure, or the last attempt). Returns True when it failed for good."""
    attempts = conn.execute(
        "SELECT attempts + 1 FROM delivery_recipients WHERE delivery = ? AND subscriber = ?", (delivery, subscriber)
    ).fetchone()[0]
    if permanent or attempts >= max_attempts:
        conn.execute(
            "UPDATE delivery_recipients SET status = 'failed', permanent = ?, attempts = ?, last_error = ?,"
            " uncertain = MAX(uncertain, ?) WHERE delivery = ? AND subscriber = ?",
            (int(permanent), attempts, error, int(uncertain), delivery, subscriber),
        )
        return True
    wait = retry_seconds * 2 ** (attempts - 1)
    conn.execute(
        "UPDATE delivery_recipients SET status = 'pending', attempts = ?, last_error = ?, next_attempt = ?,"
        " uncertain = MAX(uncertain, ?), claimed_by = NULL WHERE delivery = ? AND subscriber = ?",
        (attempts, error, timestamp(now() + timedelta(seconds=wait)), int(uncertain), delivery, subscriber),
    )
    return False


def finish(conn: sqlite3.Connection, delivery: int) -> None:
    """Nobody is left: the delivery is done (unless it was cancelled, or someone is to be tried again)."""
    conn.execute(
        "UPDATE deliveries SET status = 'done', finished_at = ? WHERE id = ? AND status = 'running' AND NOT EXISTS"
        " (SELECT 1 FROM delivery_recipients r WHERE r.delivery = deliveries.id AND r.status IN ('pending', 'sending'))",
        (timestamp(now()), delivery),
    )


def going_on(conn: sqlite3.Connection, delivery: int, fingerprint: str) -> str:
    """'running' while the delivery runs with this content; 'done' once another sender finished
    it; 'changed' when it was cancelled or started again meanwhile."""
    row = conn.execute("SELECT status, content_hash FROM deliveries WHERE id = ?", (delivery,)).fetchone()
    if row is None or row[0] not in ("running", "done") or row[1] != fingerprint:
        return "changed"
    return row[0]


# --- rate limits shared by every sender -------------------------------------------------------------

TICKS = 10  # per second: messages are counted per tenth of a second


def take_sends(
    conn: sqlite3.Connection, want: int, per_second: int, per_hour: int, moment: float | None = None
) -> tuple[int, float]:
    """Let up to ``want`` messages go under the limits (0: none) counted over every sender of
    the project: (how many may go now, seconds to wait before asking again when none may).
    A window counts the tenths it touches in full, so the limits are never exceeded; counts
    older than an hour go. ``moment``: the time (seconds since the epoch), for tests. Commits."""
    tick = int((time.time() if moment is None else moment) * TICKS)
    with immediate(conn):  # the counts read and the new one written with nobody between
        granted, wait = want, 0.0
        if per_second:
            used = conn.execute(
                "SELECT COALESCE(SUM(sent), 0) FROM send_rate WHERE tick >= ?", (tick - TICKS,)
            ).fetchone()[0]
            granted = min(granted, per_second - int(used))
            wait = 1 / TICKS
        if per_hour and granted > 0:
            used = conn.execute(
                "SELECT COALESCE(SUM(sent), 0) FROM send_rate WHERE tick >= ?", (tick - 3600 * TICKS,)
            ).fetchone()[0]
            if per_hour - int(used) < granted:
                granted, wait = per_hour - int(used), 5.0
        if granted <= 0:
            return 0, wait
        conn.execute(
            "INSERT INTO send_rate (tick, sent) VALUES (?, ?) ON CONFLICT (tick) DO UPDATE SET sent = send_rate.sent"
            " + excluded.sent",
            (tick, granted),
        )
        conn.execute("DELETE FROM send_rate WHERE tick < ?", (tick - 3600 * TICKS,))
        return granted, 0.0


# --- reading -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """A delivery's counts after a run, and what the run has to say."""

    delivery: int
    issue: str
    status: str
    total: int
    sent: int
    failed: int  # permanently: the server refused the address, or it cannot be carried
    gave_up: int  # temporary failures, retried until max_attempts; --retry-failed tries again
    pending: int
    skipped: int
    uncertain: int
    failures: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()  # e.g. the archive was published, or could not be
    scheduled_at: datetime | None = None
    blocked_reason: str | None = None

    @property
    def trouble(self) -> str | None:
        """What a person must look at after a run (the CLI exits 1, run-due reports it), or None:
        temporary failures that gave up, or a delivery nobody received."""
        if self.pending:
            return None  # the next run goes on
        if self.gave_up:
            return _(
                "{issue}: {gave_up} recipient(s) gave up after repeated temporary failures (see 'newsletter status {issue}'); 'newsletter send {issue} --retry-failed' tries them again.",
                issue=self.issue,
                gave_up=self.gave_up,
            )
        if self.failed and not self.sent:
            return _(
                "{issue}: nobody received it: all {failed} failed permanently; see 'newsletter status {issue}'.",
                issue=self.issue,
                failed=self.failed,
            )
        return None

    @property
    def line(self) -> str:
        """The one-line summary printed at the end of a send."""
        gave_up = _(", {gave_up} gave up after retries", gave_up=self.gave_up) if self.gave_up else ""
        return _(
            "{issue}: {sent:,} sent, {failed:,} failed permanently{gave_up}, {pending:,} left for retry, {uncertain:,} uncertain, {skipped:,} skipped (unsubscribed meanwhile) of {total:,}.",
            issue=self.issue,
            sent=self.sent,
            failed=self.failed,
            gave_up=gave_up,
            pending=self.pending,
            uncertain=self.uncertain,
            skipped=self.skipped,
            total=self.total,
        )


def summary(conn: sqlite3.Connection, delivery: int, notes: tuple[str, ...] = ()) -> Summary:
    """Counts and failures of a delivery."""
    row = get(conn, delivery)
    counts = dict.fromkeys(("pending", "sending", "sent", "failed", "skipped"), 0)
    for status, n in conn.execute(
        "SELECT status, COUNT(*) FROM delivery_recipients WHERE delivery = ? GROUP BY status", (delivery,)
    ):
        counts[status] = n
    uncertain, permanent = conn.execute(
        "SELECT COALESCE(SUM(uncertain), 0), COALESCE(SUM(CASE WHEN status = 'failed' AND permanent = 1 THEN 1 ELSE 0 END), 0)"
        " FROM delivery_recipients WHERE delivery = ?",
        (delivery,),
    ).fetchone()
    failures = tuple(
        (r[0], _("permanent: {error}", error=r[2]) if r[1] else _("temporary, gave up: {error}", error=r[2]))
        for r in conn.execute(
            "SELECT email, permanent, last_error FROM delivery_recipients WHERE delivery = ? AND status = 'failed'"
            " ORDER BY email",
            (delivery,),
        )
    )
    return Summary(
        delivery=delivery,
        issue=row.issue,
        status=row.status,
        total=sum(counts.values()),
        sent=counts["sent"],
        failed=permanent,
        gave_up=counts["failed"] - permanent,
        pending=counts["pending"] + counts["sending"],
        skipped=counts["skipped"],
        uncertain=uncertain,
        failures=failures,
        notes=notes,
        scheduled_at=row.scheduled_at,
        blocked_reason=row.blocked_reason,
    )


def published(conn: sqlite3.Connection) -> dict[str, str]:
    """Issues the transport has accepted a message of (the archive shows them), with the time of
    the first one (stored text, UTC)."""
    return {
        row[0]: row[1]
        for row in conn.execute(
            "SELECT issue, MIN(first_sent_at) FROM deliveries WHERE first_sent_at IS NOT NULL"
            " AND status IN ('running', 'done') GROUP BY issue"
        )
    }


def sent_fingerprint(conn: sqlite3.Connection, issue: str) -> str | None:
    """The fingerprint the issue was sent with (its newest delivery that started), if it was."""
    row = conn.execute(
        "SELECT content_hash FROM deliveries WHERE issue = ? AND status IN ('running', 'done') ORDER BY id DESC",
        (issue,),
    ).fetchone()
    return row[0] if row else None


def ever_started(conn: sqlite3.Connection) -> bool:
    """Whether any delivery has started (its messages carry signed links)."""
    return conn.execute("SELECT 1 FROM deliveries WHERE started_at IS NOT NULL LIMIT 1").fetchone() is not None


def newest_issue(conn: sqlite3.Connection) -> str | None:
    """The issue of the newest delivery of all, if any."""
    row = conn.execute("SELECT issue FROM deliveries ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row else None


def last_sent_to(conn: sqlite3.Connection, subscriber: int) -> int | None:
    """The newest delivery whose message to ``subscriber`` was accepted, if any."""
    row = conn.execute(
        "SELECT MAX(delivery) FROM delivery_recipients WHERE subscriber = ? AND status = 'sent'", (subscriber,)
    ).fetchone()
    return row[0] if row else None


def forget_address(conn: sqlite3.Connection, address: str) -> None:
    """Erase an address from the journal (the counts stay right): inside the caller's transaction."""
    conn.execute("UPDATE delivery_recipients SET email = 'forgotten', last_error = NULL WHERE email = ?", (address,))
