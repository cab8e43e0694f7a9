"""What is due when: scheduled deliveries, and ``run_due``, the cron entry point.

A schedule records the time (stored in UTC), the audience segment, whether the check was
overridden and a fingerprint of the built issue. ``run_due`` is safe to run every minute: one
run at a time (a lock), silent when there is nothing to do. It hands each due delivery to
``delivery``, which does the sending, the gate and the publishing; here is only the when. A
scheduled issue that can no longer go as it was scheduled (changed, errors found, nobody left
in its audience, its folder gone) becomes 'blocked' with the reason, until it is approved
again or cancelled; problems of this machine (no transport, no key, SMTP down) leave it
scheduled and are reported until they are fixed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from . import delivery, journal, keys
from .clock import now, oslo, parse_when
from .config import Settings
from .content import find_issue, issue_name
from .errors import (
    BusyError,
    ConfigError,
    Finding,
    GateError,
    NewsletterError,
    ScheduleError,
    StoreError,
    TransportError,
)
from .feeds import unrecord_used
from .language import _, translate
from .locks import hold
from .store import database, explain

RETRY_WAIT = 50.0  # seconds run-due waits for a retry that is due soon; later ones are the next run's
# Problems of this machine, not of the issue: a scheduled delivery stays scheduled.
NOT_THE_ISSUE = (ConfigError, StoreError, BusyError, TransportError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scheduled:
    """One scheduled, blocked or unfinished delivery."""

    delivery: int
    issue: str
    at: datetime | None
    status: str
    segment: str
    reason: str | None = None  # why it is blocked
    warnings: tuple[Finding, ...] = ()  # what building it now warned about (schedule, approve)

    @classmethod
    def of(cls, row: journal.Delivery) -> Scheduled:
        return cls(row.id, row.issue, row.scheduled_at, row.status, row.segment, row.blocked_reason)


def schedule(
    settings: Settings, ref: str | None, at: str, segment: str | None = None, *, force: bool = False
) -> Scheduled:
    """Schedule an issue: it must pass the check (unless ``force``), have an audience and a
    transport; records time, segment and fingerprint."""
    when = parse_when(at)
    keys.check(settings)  # run-due signs the links with it: it must be there now
    planned = delivery.plan(settings, ref, segment, force=force)
    with delivery.issue_lock(settings, planned.issue), database(settings.database) as conn, conn:
        existing = journal.active(conn, planned.issue)
        if existing is not None:
            if existing.scheduled_at:
                already = _("{issue} is already {status} for {time}", issue=planned.issue,
                            status=translate(existing.status), time=oslo(existing.scheduled_at))  # fmt: skip
            else:
                already = _("{issue} is already {status}", issue=planned.issue, status=translate(existing.status))
            raise ScheduleError(
                already + _("; cancel it first with 'newsletter schedule cancel {issue}'.", issue=planned.issue)
            )
        number = journal.create(conn, planned.issue, segment or "", planned.prepared.fingerprint, forced=force,
                                scheduled_at=when)  # fmt: skip
    warned = planned.warnings
    return Scheduled(number, planned.issue, when, "scheduled", segment or "", warnings=warned)


def approve(settings: Settings, ref: str, *, at: str | None = None, force: bool = False) -> Scheduled:
    """Schedule a blocked (or scheduled) delivery again, for the issue as it is now: it must
    pass the check (unless ``force``) and have an audience. ``at`` gives it a new time; without
    it the old time stands (a time passed means: at the next run-due)."""
    issue = issue_name(settings, ref)
    when = parse_when(at) if at else None
    with database(settings.database) as conn:
        if journal.active(conn, issue) is None:
            if not (settings.issues_dir / issue).is_dir():
                find_issue(settings, ref)  # no such issue at all: say so, with a guess
            raise ScheduleError(
                _("{issue} is not scheduled; schedule it with 'newsletter schedule {issue} --at ...'.", issue=issue)
            )
    keys.check(settings)
    planned = delivery.plan(settings, issue, force=force, purpose=delivery.APPROVE)  # the check, the audience
    with delivery.issue_lock(settings, issue), database(settings.database) as conn:
        existing = journal.active(conn, issue)
        if existing is None or existing.id != planned.resuming or existing.status not in ("scheduled", "blocked"):
            raise ScheduleError(
                _("{issue} was cancelled or started meanwhile; see 'newsletter schedule list'.", issue=issue)
            )
        with conn:
            journal.approve(conn, existing.id, planned.prepared.fingerprint, force, when)
        warned = planned.warnings
        return replace(Scheduled.of(journal.get(conn, existing.id)), warnings=warned)


def listing(settings: Settings) -> list[Scheduled]:
    """Scheduled and blocked deliveries, and started ones that are not finished."""
    with database(settings.database) as conn:
        return [Scheduled.of(row) for row in journal.unfinished(conn)]


def cancel(settings: Settings, ref: str | None) -> Scheduled:
    """Cancel a scheduled (or blocked) delivery that has not started, or a started one of which
    no message was accepted (its news counts as unused again)."""
    issue = issue_name(settings, ref)
    with delivery.issue_lock(settings, issue), database(settings.database) as conn:
        row = journal.active(conn, issue)
        if row is not None and row.status == "running":
            delivery.refuse_while_sending(conn, row)
        return _cancel(settings, ref, conn, issue, row)


def _cancel(
    settings: Settings, ref: str | None, conn: sqlite3.Connection, issue: str, row: journal.Delivery | None
) -> Scheduled:
    with conn:
        untouched = row is not None and row.status in ("starting", "running") and journal.untouched(conn, row.id)
        if row is None and not (settings.issues_dir / issue).is_dir():
            find_issue(settings, ref)  # no such issue and no delivery of that name: say so, with a guess
        if row is None or (row.status not in ("scheduled", "blocked") and not untouched):
            state = (
                _("not scheduled")
                if row is None
                else _("{status} (messages have gone out)", status=translate(row.status))
            )
            raise ScheduleError(
                _(
                    "{issue} is {state}; only a delivery that has not sent anything can be cancelled.",
                    issue=issue,
                    state=state,
                )
            )
        journal.cancel(conn, row.id)
        if untouched:
            unrecord_used(conn, issue)
    return Scheduled(row.id, issue, row.scheduled_at, "cancelled", row.segment)


@dataclass(frozen=True)
class DueResult:
    """What one run of run-due did: summary lines, notes (the archive), and problems (which
    make cron report)."""

    lines: tuple[str, ...]
    problems: tuple[str, ...]
    busy: bool = False


def run_due(
    settings: Settings, moment: datetime | None = None, stop: threading.Event | None = None, *, alone: bool = True
) -> DueResult:
    """Start the deliveries that are due and resume interrupted ones. Safe to run every minute.
    ``alone``: one run-due at a time on this machine (cron's runs must not pile up); a worker
    (``work``) sends beside the others instead."""
    moment = moment or now()
    if not settings.database.exists():
        return DueResult((), ())
    if not alone:
        return _run_due(settings, moment, stop)
    try:
        with hold(settings.build_dir, "run-due"):
            return _run_due(settings, moment, stop)
    except BusyError:
        return DueResult((), (), busy=True)  # another run-due is at work


def work(settings: Settings, stop: threading.Event, interval: float, report: Callable[[DueResult], None]) -> None:
    """Keep sending until ``stop`` is set: every ``interval`` seconds, start the deliveries that
    are due and help send the running ones, beside any other workers (on this machine, or on
    others sharing the PostgreSQL database). A round that fails is reported; the next one goes on."""
    while not stop.is_set():
        try:
            result = run_due(settings, stop=stop, alone=False)
        except NewsletterError as exc:
            result = DueResult((), (str(exc),))
        except sqlite3.Error as exc:  # busy past the wait: the next round tries again
            result = DueResult((), (explain(settings.database, exc),))
        except Exception as exc:  # a fault: said, and the next round tries again (the worker lives on)
            log.exception("a round of the worker failed")
            result = DueResult((), (_("the round failed unexpectedly ({exc}); see the log.", exc=exc),))
        report(result)
        stop.wait(interval)


def _run_due(settings: Settings, moment: datetime, stop: threading.Event | None) -> DueResult:
    lines: list[str] = []
    problems: list[str] = []
    with database(settings.database) as conn:
        due = journal.due(conn, moment)
    for row in due:
        try:
            planned = delivery.plan(settings, row.issue, purpose=delivery.DUE)
        except NOT_THE_ISSUE as exc:
            problems.append(_("{issue}: not sent: {exc}", issue=row.issue, exc=exc))
            continue
        except NewsletterError as exc:
            if row.status != "scheduled":  # started: it cannot be blocked, only finished as it began
                problems.append(f"{row.issue}: {exc}")
                continue
            reason = str(exc)
            with database(settings.database) as conn, conn:
                journal.block(conn, row.id, reason)
            problems.append(
                _(
                    "{issue}: not sent: {reason} It is blocked until approved ('newsletter schedule approve {issue}') or cancelled.",
                    issue=row.issue,
                    reason=reason,
                )
            )
            if isinstance(exc, GateError):
                problems.extend(f"  {finding.line}" for finding in exc.findings)
            continue
        try:
            result = delivery.send(settings, planned, stop=stop, max_wait=RETRY_WAIT)
        except BusyError:
            continue  # a 'send' of the same issue is at work: it finishes the delivery
        except NewsletterError as exc:
            problems.append(f"{row.issue}: {exc}")
            continue
        lines.append(result.line)
        lines.extend(result.notes)
        if result.pending:
            lines.append(
                _(
                    "{issue}: {pending} left for retry; the next run-due goes on.",
                    issue=row.issue,
                    pending=result.pending,
                )
            )
        if result.trouble:
            problems.append(result.trouble)
    return DueResult(tuple(lines), tuple(problems))
