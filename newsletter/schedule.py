"""What is due when: scheduled deliveries, and the cron entry point that starts and resumes them.

A schedule records the time (in UTC), the audience segment and a fingerprint of the built
issue. ``run_due`` is safe to run every minute: one run at a time (a lock file), silent when
there is nothing to do, and it refuses to send an issue that changed after it was scheduled.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from .config import Settings
from .errors import NewsletterError
from .store import connect, now, parse_timestamp, timestamp

OSLO = ZoneInfo("Europe/Oslo")


class ScheduleError(NewsletterError):
    """A schedule cannot be made, changed or run."""


def parse_when(text: str, moment: datetime | None = None) -> datetime:
    """'2026-12-01 09:00' (Oslo time) or with a zone ('...T09:00+01:00', '...Z') -> UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" UTC", "+00:00"))
    except ValueError:
        raise ScheduleError(
            f"--at {text!r} is not a time; write it as 'YYYY-MM-DD HH:MM' (Oslo time), e.g. '2026-12-01 09:00'."
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=OSLO)
    value = value.astimezone(UTC)
    if value <= (moment or now()):
        raise ScheduleError(f"--at {text!r} is in the past; give a time to come.")
    return value


def oslo(value: datetime) -> str:
    """A time as Oslo people read it: '2026-12-01 09:00 (Oslo)'."""
    return value.astimezone(OSLO).strftime("%Y-%m-%d %H:%M (Oslo)")


@dataclass(frozen=True)
class Scheduled:
    """One scheduled or unfinished delivery."""

    delivery: int
    issue: str
    at: datetime | None
    status: str
    segment: str


def schedule(settings: Settings, ref: str | None, at: str, segment: str | None = None, gate=None) -> Scheduled:
    """Schedule an issue: checks it builds and has an audience, records time, segment and fingerprint.

    ``gate(prepared)`` may refuse the issue (the CLI's pre-send check), on the very build whose
    fingerprint is recorded."""
    from .send import _active, content_hash, plan_send

    plan, prepared = plan_send(settings, ref, segment)
    if gate is not None:
        gate(prepared)
    when = parse_when(at)
    conn = connect(settings.database)
    try:
        with conn:
            existing = _active(conn, plan.issue)
            if existing is not None:
                raise ScheduleError(
                    f"{plan.issue} is already {existing['status']}"
                    + (f" for {oslo(parse_timestamp(existing['scheduled_at']))}" if existing["scheduled_at"] else "")
                    + f"; cancel it first with 'newsletter schedule cancel {plan.issue}'."
                )
            cursor = conn.execute(
                "INSERT INTO deliveries (issue, segment, content_hash, status, scheduled_at, created_at)"
                " VALUES (?, ?, ?, 'scheduled', ?, ?)",
                (plan.issue, segment or "", content_hash(prepared.rendered), timestamp(when), timestamp(now())),
            )
        return Scheduled(cursor.lastrowid, plan.issue, when, "scheduled", segment or "")  # type: ignore[arg-type]
    finally:
        conn.close()


def listing(settings: Settings) -> list[Scheduled]:
    """Scheduled deliveries, and started ones that are not finished."""
    conn = connect(settings.database)
    try:
        rows = conn.execute(
            "SELECT * FROM deliveries WHERE status IN ('scheduled', 'running') ORDER BY COALESCE(scheduled_at, created_at)"
        ).fetchall()
    finally:
        conn.close()
    return [Scheduled(r["id"], r["issue"], parse_timestamp(r["scheduled_at"]), r["status"], r["segment"]) for r in rows]


def cancel(settings: Settings, ref: str | None) -> Scheduled:
    """Cancel a scheduled delivery that has not started."""
    from .content import find_issue
    from .errors import ProjectError

    try:
        issue = find_issue(settings, ref).name
    except ProjectError:
        if not ref:
            raise
        issue = ref  # the issue folder is gone: cancel its schedule by name
    conn = connect(settings.database)
    try:
        with conn:
            row = conn.execute(
                "SELECT * FROM deliveries WHERE issue = ? AND status != 'cancelled'", (issue,)
            ).fetchone()
            if row is None or row["status"] != "scheduled":
                state = "not scheduled" if row is None else f"{row['status']} (it has started)"
                raise ScheduleError(f"{issue} is {state}; only a delivery that has not started can be cancelled.")
            conn.execute("UPDATE deliveries SET status = 'cancelled' WHERE id = ?", (row["id"],))
        return Scheduled(row["id"], issue, parse_timestamp(row["scheduled_at"]), "cancelled", row["segment"])
    finally:
        conn.close()


@contextmanager
def _run_lock(settings: Settings) -> Iterator[bool]:
    folder = settings.build_dir / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "run-due.lock").open("a+") as handle:
        from .send import HELD_LOCKS

        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        HELD_LOCKS.add(handle.fileno())
        try:
            yield True
        finally:
            HELD_LOCKS.discard(handle.fileno())
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class DueResult:
    """What one run of run-due did: summary lines, and refusals (which make cron report)."""

    lines: tuple[str, ...]
    problems: tuple[str, ...]
    busy: bool = False


def run_due(settings: Settings, moment: datetime | None = None, stop=None, on_start=None) -> DueResult:
    """Start the deliveries that are due and resume interrupted ones. Safe to run every minute.
    ``on_start()`` is called before each delivery sends (a scheduled one just started, or one
    resumed after a crash); it must not raise."""
    from .archive import save_snapshot, snapshot
    from .build import prepare
    from .emissions import project_members
    from .send import content_hash, delivery_lock, run_delivery
    from .subscribers import audience, parse_segment

    moment = moment or now()
    lines: list[str] = []
    problems: list[str] = []
    if not settings.database.is_file():
        return DueResult((), ())
    with _run_lock(settings) as mine:
        if not mine:
            return DueResult((), (), busy=True)  # another run-due is at work
        conn = connect(settings.database)
        try:
            due = conn.execute(
                "SELECT * FROM deliveries WHERE (status = 'scheduled' AND scheduled_at <= ?) OR (status = 'running'"
                " AND EXISTS (SELECT 1 FROM delivery_recipients r WHERE r.delivery = deliveries.id"
                " AND r.status IN ('pending', 'sending'))) ORDER BY id",
                (timestamp(moment),),
            ).fetchall()
            for row in due:
                try:
                    prepared = prepare(settings, row["issue"])
                    if content_hash(prepared.rendered) != row["content_hash"]:
                        again = (
                            f"schedule it again ('newsletter schedule cancel {row['issue']}', then 'newsletter schedule')"
                            if row["status"] == "scheduled"
                            else "undo the change to finish the delivery (some recipients have the earlier version)"
                        )
                        problems.append(f"{row['issue']}: not sent: the issue changed after it was scheduled; {again}.")
                        continue
                    with delivery_lock(settings, row["issue"]):
                        row = conn.execute("SELECT * FROM deliveries WHERE id = ?", (row["id"],)).fetchone()
                        if row["status"] not in ("scheduled", "running"):
                            continue  # cancelled (or finished) since this run looked
                        if row["status"] == "scheduled":
                            members = project_members(settings)
                            people = audience(conn, parse_segment(row["segment"] or None, settings, members))
                            if not people:
                                problems.append(
                                    f"{row['issue']}: not sent: nobody is in its audience "
                                    f"({row['segment'] or 'all confirmed subscribers'}); it stays scheduled."
                                )
                                continue
                            page = snapshot(settings, prepared)
                            with conn:  # every recipient recorded before the first message
                                save_snapshot(conn, page)
                                conn.executemany(
                                    "INSERT INTO delivery_recipients (delivery, subscriber, email, status)"
                                    " VALUES (?, ?, ?, 'pending')",
                                    [(row["id"], p.id, p.email) for p in people],
                                )
                                conn.execute(
                                    "UPDATE deliveries SET status = 'running', started_at = ? WHERE id = ?",
                                    (timestamp(now()), row["id"]),
                                )
                            if prepared.news:
                                from .feeds import mark_sent

                                mark_sent(conn, row["issue"], tuple(item.id for item in prepared.news))
                        if on_start is not None:  # also on a resume: a crash may have come before it
                            on_start()
                        result = run_delivery(settings, conn, row["id"], prepared, stop=stop)
                    lines.append(result.line)
                    if result.pending:
                        lines.append(f"{row['issue']}: {result.pending} left for retry; the next run-due goes on.")
                except NewsletterError as exc:
                    problems.append(f"{row['issue']}: {exc}")
                except sqlite3.Error as exc:  # e.g. a manual 'send' started it meanwhile
                    problems.append(
                        f"{row['issue']}: the database refused a change ({exc}); the next run-due tries again."
                    )
        finally:
            conn.close()
    return DueResult(tuple(lines), tuple(problems))
