"""The delivery of an issue: the one owner of a send, whoever calls it (the CLI, cron, Python).

- ``plan`` builds the issue, runs the pre-send check (the gate: errors refuse unless forced),
  chooses the transport (refusing rather than guessing) and says who would get it;
- ``send`` takes the issue's lock, records the delivery, every recipient and the archive's
  snapshot in one transaction before the first message leaves (``start_or_resume``), sends
  (``run``), and publishes the archive once the transport has accepted the first message;
- ``send_test`` sends to test addresses and records no delivery; ``status`` reports one.

A failure to make or send one recipient's message is that recipient's, recorded with its
reason; only the connection, the login or the sender address stop a run. Every recipient is
recorded before anything leaves, and each message is marked as leaving before it is handed
over, so a run stopped at any moment goes on where it stopped: nobody is lost, and only the
messages in flight at a crash (at most one per connection) may arrive twice, flagged uncertain.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import bounces, journal, keys, workers
from .archive import save_snapshot, shown_path, snapshot, write_archive
from .build import Prepared, prepare, same_content
from .check import DKIM, SPAM, spam_findings
from .check import findings as check_findings
from .clock import now, oslo
from .compose import Recipient
from .config import Settings
from .content import find_issue, issue_name
from .emissions import project_members
from .errors import (
    ERROR,
    WARNING,
    BusyError,
    ConnectFailed,
    Finding,
    GateError,
    NewsletterError,
    ProjectError,
    SendError,
    TransportError,
    Undeliverable,
)
from .feeds import record_used
from .language import _, translate
from .message import MessageFactory, dkim_key
from .store import busy, concurrently, connect, database, exclusive, give_way, is_held, note, recall, remember
from .subscribers import (
    apply_pending_unsubscribes,
    audience,
    importing,
    make_token,
    normalize_email,
    note_bounce,
    parse_segment,
    recipients,
    settle,
)
from .transport import SMTPUTF8_SEEN, Connection, Outbox, Transport, choose, smtputf8_fact
from .workers import ABORT, PERMANENT, Outcome, deliver

log = logging.getLogger(__name__)
FAULTS_IN_A_ROW = 5  # messages in a row that cannot be made, before any is sent: the run stops
RECORD_BATCH = 5000  # recipients recorded per transaction when a delivery starts
Progress = Callable[[journal.Summary], None]


@dataclass(frozen=True)
class Plan:
    """What a send would do, for the confirmation question and --dry-run. Made by ``plan``,
    which ran the gate on ``prepared``."""

    issue: str
    subject: str
    audience: int
    via: str  # the transport, as people read it
    resuming: int | None  # the delivery being resumed (or the scheduled one being started), if any
    prepared: Prepared
    segment: str
    forced: bool
    findings: tuple[Finding, ...]  # what the gate saw (errors only when forced)
    sample: tuple[str, ...] = ()
    other_language: int = 0  # recipients who chose the other language edition
    language: str = "nb"
    retry_failed: bool = False
    via_kind: str = "smtp"  # "smtp" or "outbox"
    gated: object = field(default=None, repr=False, compare=False)  # _GATED when ``plan`` ran the gate

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """The warnings a send or a schedule shows: the build's, and the gate's about signing
        (unsigned mail by SMTP) and a high spam score (when ``check`` scored this content);
        ``check`` lists the others."""
        built = tuple(f for f in self.prepared.findings if f.level == WARNING)
        return built + tuple(f for f in self.findings if f.level == WARNING and f.where in (DKIM, SPAM))


_GATED = object()  # the mark of a Plan made by ``plan``: one made by hand is checked again when it starts


def gate(settings: Settings, prepared: Prepared, force: bool = False) -> tuple[Finding, ...]:
    """The pre-send check (``check`` without the online link check; SpamAssassin's verdict only
    when ``check`` has scored this very content before, so a send never waits for it). Errors
    refuse (GateError, with the findings) unless ``force``. Returns the findings."""
    found = tuple(check_findings(settings, prepared)) + tuple(spam_findings(settings, prepared, cached_only=True))
    errors = tuple(f for f in found if f.level == ERROR)
    if errors and not force:
        raise GateError(
            _(
                "{count} error(s) found by 'newsletter check'; fix them, or add --force to send anyway.",
                count=len(errors),
            ),
            errors,
        )
    return found


def transport_for(settings: Settings, conn: sqlite3.Connection) -> Transport:
    """The transport the settings name, refusing the outbox where SMTP has been used before
    (a message accepted by SMTP, or a delivery started by SMTP)."""
    used = recall(conn, "smtp") + journal.smtp_targets(conn)
    return choose(settings, used)


SEND, DUE, APPROVE = "send", "due", "approve"  # who plans: a send, run-due starting a schedule, an approval


def plan(
    settings: Settings,
    ref: str | None = None,
    segment: str | None = None,
    *,
    retry_failed: bool = False,
    force: bool = False,
    purpose: str = SEND,
    prepared: Prepared | None = None,
) -> Plan:
    """Check that the issue can be sent to this audience and say to how many, without sending.

    Refuses (SendError) an issue that has been sent, is scheduled (unless ``purpose`` is DUE:
    run-due starting it, or APPROVE), is blocked (unless APPROVE), changed since its delivery
    started or was scheduled (unless APPROVE), or has nobody to go to; the gate refuses errors
    unless ``force`` (a schedule keeps the choice it was made with). ``prepared``: the issue
    already prepared by the caller."""
    prepared = prepared or prepare(settings, ref)
    issue = prepared.issue
    with database(settings.database) as conn:
        existing = journal.active(conn, issue.id)
        via = transport_for(settings, conn)
        restart = False
        if existing is not None:
            restart = existing.status in ("starting", "running") and journal.untouched(conn, existing.id)
            _check_existing(existing, prepared, segment, retry_failed, purpose, restart)
            force = force or (existing.forced and purpose != APPROVE)
            segment = existing.segment
        findings = gate(settings, prepared, force)
        if existing is None or existing.status in ("scheduled", "blocked") or restart:
            chosen = parse_segment(segment or None, settings, project_members(settings))
            if chosen.statuses != ("confirmed",):
                raise SendError(
                    _(
                        "--segment {segment!r}: an issue goes only to confirmed subscribers; leave 'status=' out (it is for 'newsletter subscribers list').",
                        segment=segment,
                    )
                )
            people = audience(conn, chosen)
            if not people:
                raise SendError(
                    _(
                        "nobody to send {id} to: the audience ({value}) is empty.",
                        id=issue.id,
                        value=segment or _("all confirmed subscribers"),
                    )
                )
            other = sum(p.language != issue.language for p in people)
            return Plan(
                issue.id, issue.subject, len(people), via.describe(), existing.id if existing else None, prepared,
                segment or "", force, findings, tuple(p.email for p in people[:5]), other, issue.language,
                via_kind=via.kind, gated=_GATED,
            )  # fmt: skip
        left = journal.left(conn, existing.id, retry_failed)
        return Plan(issue.id, issue.subject, left, via.describe(), existing.id, prepared, existing.segment, force,
                    findings, retry_failed=retry_failed, language=issue.language, via_kind=via.kind,
                    gated=_GATED)  # fmt: skip


def _check_existing(
    existing: journal.Delivery,
    prepared: Prepared,
    segment: str | None,
    retry_failed: bool,
    purpose: str,
    untouched: bool = False,
) -> None:
    """Whether the issue's delivery in the journal lets this plan go on. ``untouched``: a started
    delivery of which no message was accepted, which may start again with the issue as it is now."""
    issue = prepared.issue.id
    if existing.status == "scheduled" and purpose == SEND:
        raise SendError(
            _(
                "{issue} is scheduled for {scheduled_at}; cancel it with 'newsletter schedule cancel {issue}' first.",
                issue=issue,
                scheduled_at=oslo(existing.scheduled_at),
            )
        )
    if existing.status == "blocked" and purpose != APPROVE:
        raise SendError(
            _(
                "{issue} is scheduled but blocked ({blocked_reason}); approve it with 'newsletter schedule approve {issue}' or cancel it with 'newsletter schedule cancel {issue}'.",
                issue=issue,
                blocked_reason=existing.blocked_reason,
            )
        )
    if existing.status in ("starting", "running", "done") and purpose == APPROVE:
        raise SendError(
            _("{issue} has started; only a scheduled delivery that has not started can be approved.", issue=issue)
        )
    if existing.status == "done" and not retry_failed:
        raise SendError(
            _(
                "{issue} has been sent already (delivery {id}); 'newsletter status {issue}' shows the result, '--retry-failed' tries temporary failures again.",
                issue=issue,
                id=existing.id,
            )
        )
    if segment is not None and segment != existing.segment:
        raise SendError(
            _(
                "{issue} is being sent to the segment {value!r}; it cannot change to {segment!r} halfway.",
                issue=issue,
                value=existing.segment or _("(all confirmed)"),
                segment=segment,
            )
        )
    if purpose != APPROVE and not untouched and not same_content(prepared, existing.content_hash):
        if existing.status in ("scheduled", "blocked"):
            raise SendError(
                _(
                    "{issue} changed after it was scheduled; approve the issue as it is now ('newsletter schedule approve {issue}') or cancel it.",
                    issue=issue,
                )
            )
        raise SendError(
            _(
                "{issue} has changed since its delivery started; some recipients already have the earlier version. Undo the change to finish the delivery.",
                issue=issue,
            )
        )


def issue_lock(settings: Settings, issue: str):
    """The lock that makes one writer of an issue's delivery at a time (starting it, scheduling,
    approving, cancelling), on every machine that shares the database. Waits its turn."""
    return exclusive(
        settings.database,
        f"send-{issue}",
        folder=settings.build_dir,
        wait=True,
        busy=f"another send of {issue} is running right now; wait for it to finish (see 'newsletter status {issue}').",
    )


def send(
    settings: Settings,
    planned: Plan,
    *,
    limit: int | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    max_wait: float = 900.0,
) -> journal.Summary:
    """Start (or resume) the planned delivery and run it. One process starts a delivery (under
    the issue's lock, on every machine sharing the database); any number then send it together,
    each claiming its own recipients (see ``run``)."""
    with issue_lock(settings, planned.issue):
        delivery = start_or_resume(settings, planned)
    return run(settings, delivery, planned.prepared, limit=limit, stop=stop, progress=progress, max_wait=max_wait)


def start_or_resume(settings: Settings, planned: Plan) -> int:
    """Record the delivery, every recipient and the archive's snapshot before the first message
    (or mark an interrupted one running again); return its number. The caller holds the issue's
    lock; the journal is read again under it, so a schedule cancelled, approved or started since
    the plan was made is refused rather than sent. The recipients are recorded in short steps
    while the delivery is 'starting' (nothing leaves before it is 'running'); a start that is cut
    short starts again from the beginning."""
    keys.check(settings)  # before anything is signed: the key the links in sent mail were signed with
    prepared = planned.prepared
    if planned.gated is not _GATED:  # a Plan made by hand, not by ``plan``: the gate runs here
        gate(settings, prepared, planned.forced)
    news = tuple(item.id for item in prepared.news)
    with database(settings.database) as conn:
        existing = journal.active(conn, planned.issue)
        via = transport_for(settings, conn)
        joined = (  # another process started this very delivery since the plan was made: send it together
            existing is not None
            and planned.resuming is None
            and existing.status == "running"
            and existing.segment == planned.segment
            and same_content(prepared, existing.content_hash)
        )
        if (existing.id if existing else None) != planned.resuming and not joined:
            if existing is None:
                what = _(
                    "the delivery of {issue} was cancelled meanwhile; see 'newsletter status'.", issue=planned.issue
                )
            else:
                what = _("the delivery of {issue} was {status} by another command meanwhile; see 'newsletter status'.",
                         issue=planned.issue, status=translate(existing.status))  # fmt: skip
            raise SendError(what)
        changed = existing is not None and not same_content(prepared, existing.content_hash)
        untouched = (
            existing is not None and existing.status in ("starting", "running") and journal.untouched(conn, existing.id)
        )
        again = existing is not None and (existing.status == "starting" or (changed and untouched))
        if again and existing.status == "running":
            refuse_while_sending(conn, existing)  # its recipients are about to be recorded anew
        if existing is not None and (existing.status == "blocked" or (changed and not again)):
            raise SendError(
                _("{issue} was blocked or changed meanwhile; see 'newsletter status'.", issue=planned.issue)
            )
        if existing is not None and existing.status in ("running", "done") and not again:
            with conn:
                journal.resume(conn, existing.id, via.target, planned.retry_failed)
                record_used(conn, planned.issue, news)
            return existing.id
        settle(conn)  # a killed import undone, unsubscribes kept aside while the database was busy applied
        if importing(conn):  # the list is half imported right now: its audience would be too
            raise BusyError(
                _(
                    "a subscriber import is running; {issue} starts when it is done (try again in a minute).",
                    issue=planned.issue,
                )
            )
        people = recipients(conn, parse_segment(planned.segment or None, settings, project_members(settings)))
        if not people:
            raise SendError(_("nobody to send {issue} to: the audience is empty now.", issue=planned.issue))
        page = snapshot(settings, prepared)
        with conn:
            if existing is None:
                delivery = journal.create(conn, planned.issue, planned.segment, prepared.fingerprint,
                                          forced=planned.forced)  # fmt: skip
            else:
                delivery = existing.id
            journal.starting(conn, delivery, prepared.fingerprint, planned.forced)
        for start in range(0, len(people), RECORD_BATCH):  # short steps: the public pages never wait long
            give_way(settings.database)
            with conn:
                journal.add_recipients(conn, delivery, people[start : start + RECORD_BATCH])
        with conn:  # running, with the archive's copy and the news it uses, before the first message
            journal.start(conn, delivery, via.target)
            save_snapshot(conn, page)
            record_used(conn, planned.issue, news)
    keys.record(settings)  # links signed with it are about to go out
    return delivery


def publish(settings: Settings, test: bool = False) -> str:
    """Write the archive now; a line that says what happened. A failure never stops a delivery.
    ``test``: for a test send, which publishes only the issue's images."""
    try:
        result = write_archive(settings)
    except Exception as exc:  # the delivery goes on whatever happens here
        log.debug("archive not written", exc_info=True)
        reason = (
            str(exc)
            if isinstance(exc, NewsletterError)
            else _("{name}: {exc} (--verbose shows more)", name=type(exc).__name__, exc=exc)
        )
        return _("Warning: {text}", text=_("the archive was not updated: {reason}", reason=reason))
    if test:
        return _(
            "The test's images are published in {out_dir} (the issue is not archived).",
            out_dir=shown_path(result.out_dir),
        )
    return _(
        "Archive updated: {out_dir} ({count} issue(s)).", out_dir=shown_path(result.out_dir), count=len(result.issues)
    )


def run(
    settings: Settings,
    delivery: int,
    prepared: Prepared,
    *,
    limit: int | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    max_wait: float = 900.0,
) -> journal.Summary:
    """Send what is due in a delivery over several persistent connections, with the rate limit,
    retries with backoff, and a record of every outcome. Safe to call again after any crash.
    The archive is published once the transport has accepted the delivery's first message.

    Several runs (processes, or machines sharing PostgreSQL) can work on one delivery at once:
    each registers as a sender, holds its lock while it lives, and claims recipients in batches;
    the recipients of a sender that died are claimed again by the others at once (its messages
    in flight are sent again, flagged uncertain). The rate limits count every sender."""
    stop = stop or threading.Event()
    signers = dkim_key(settings)  # the keys parsed once; a key that cannot sign stops the send here
    factory = MessageFactory(settings, prepared.rendered, prepared.strings, signers=signers)  # shared parts once
    notes: list[str] = []
    conn = connect(settings.database)
    me = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    try:
        with exclusive(conn, journal.sender_lock(me)):
            journal.register(conn, delivery, me, socket.gethostname(), os.getpid())
            try:
                return _run(settings, conn, delivery, me, factory, limit, stop, progress, max_wait, notes)
            finally:
                journal.unregister(conn, delivery, me)
    finally:
        conn.close()


def _alive(conn: sqlite3.Connection) -> Callable[[str], bool]:
    return lambda sender: is_held(conn, journal.sender_lock(sender))


def refuse_while_sending(conn: sqlite3.Connection, row: journal.Delivery) -> None:
    """BusyError while living senders work on the delivery (those that died are recovered first):
    it cannot be cancelled or started again under their feet. Outside a transaction."""
    journal.recover(conn, row.id, _alive(conn))
    at_work = journal.senders(conn, row.id)
    if at_work:
        raise BusyError(
            _(
                "{issue} is being sent right now by {count} sender(s) ({hosts}); wait for them to finish, or stop them first (Ctrl-C, or 'systemctl stop newsletter-worker').",
                issue=row.issue,
                count=len(at_work),
                hosts=", ".join(sorted({f"{host} pid {pid}" for _id, host, pid in at_work})),
            )
        )


def _run(
    settings: Settings,
    conn: sqlite3.Connection,
    delivery: int,
    me: str,
    factory: MessageFactory,
    limit: int | None,
    stop: threading.Event,
    progress: Progress | None,
    max_wait: float,
    notes: list[str],
) -> journal.Summary:
    row = journal.get(conn, delivery)
    via = transport_for(settings, conn)
    journal.recover(conn, delivery, _alive(conn), me)  # summary() counts the uncertain ones from the table
    if row.first_sent_at is not None:  # resumed: a crash may have come before the archive was written
        notes.append(publish(settings))

    def take(want: int) -> tuple[int, float]:
        try:
            return journal.take_sends(conn, want, settings.send_per_second, settings.send_per_hour)
        except sqlite3.OperationalError as exc:
            if not busy(exc):
                raise
            return 0, 0.5  # the budget is busy: ask again shortly, the run goes on

    limiter = workers.RateLimit(settings.send_per_second, settings.send_per_hour, take)
    count = 1 if isinstance(via, Outbox) else settings.send_connections

    def make(job: tuple, address: str) -> tuple[str, bytes]:
        subscriber, email, name, municipality = job
        recipient = Recipient(
            email=email,
            name=name or "",
            unsubscribe_token=make_token(settings, subscriber, "unsubscribe"),
            preferences_token=make_token(settings, subscriber, "preferences"),
            municipality=municipality,
        )
        return factory.build(recipient, address=address)

    sender: workers.Sender = settings.sender_address
    if settings.bounces_address:  # VERP: a bounce names its delivery recipient

        def sender(job: tuple, delivery: int = delivery) -> str:
            return bounces.envelope_sender(settings, delivery, job[0])

    pool = workers.start(via, sender, count, make)
    aborted: list[str] = []
    lost = False
    try:
        lost = _loop(settings, conn, delivery, me, row.content_hash, pool, count, limiter, via, stop, limit, progress,
                     max_wait, aborted, notes)  # fmt: skip
    finally:
        pool.stop()
    if lost:
        journal.lost(conn, delivery, me)
        raise SendError(
            _(
                "a sending process stopped unexpectedly; run the same command again (messages that were in flight are sent again and reported as uncertain)."
            )
        )
    if aborted:
        raise TransportError(
            _("{aborted} Nothing more was sent; the same command goes on where it stopped.", aborted=aborted[0])
        )
    result = journal.summary(conn, delivery, tuple(notes))
    if result.pending == 0:
        with conn:
            journal.finish(conn, delivery)
        result = journal.summary(conn, delivery, tuple(notes))
    return result


def _loop(
    settings: Settings,
    conn: sqlite3.Connection,
    delivery: int,
    me: str,
    fingerprint: str,
    pool: workers.Pool,
    count: int,
    limiter: workers.RateLimit,
    via: Transport,
    stop: threading.Event,
    limit: int | None,
    progress: Progress | None,
    max_wait: float,
    aborted: list[str],
    notes: list[str],
) -> bool:
    """Dispatch jobs and record outcomes until nobody is due (or the limit, or a stop). Returns
    True if a connection's process died (its message is uncertain)."""
    in_flight: set[int] = set()
    ready: deque[tuple] = deque()  # read ahead, not yet recorded as leaving
    dispatched = 0
    accepted = faults = 0  # in this run; faults: messages in a row that newsletter itself could not make
    last_pending = looked = 0.0  # when kept unsubscribes were applied, and the delivery's state read
    idle = False
    last_progress = 0.0
    while True:
        # Record whatever finished; block briefly when every connection is busy or nothing
        # could be dispatched last time (no busy loop at the tail, in retries, or stopping).
        block = bool(in_flight) and (len(in_flight) >= count or idle or stop.is_set())
        idle = True
        finished = pool.collect(0.5 if block else None)
        if block and not finished and not pool.alive():  # half a second without an outcome: are they all there?
            return True
        if finished:
            first = False
            give_way(settings.database)  # an unsubscribe waiting goes first
            # Acceptances touch only this sender's rows: row locks are enough (PostgreSQL).
            with concurrently(conn) if all(o.ok for o in finished) else conn:
                for outcome in finished:
                    first = _record(settings, conn, delivery, outcome, aborted, stop, accepted > 0) or first
                    in_flight.discard(outcome.subscriber)
                    accepted += outcome.ok
                    faults = 0 if outcome.ok else faults + outcome.fault
            if faults >= FAULTS_IN_A_ROW and not accepted and not aborted:
                # Not one recipient's data: no message can be made at all. Stop, rather than
                # fail the whole list (they are retried; '--retry-failed' after a fix).
                aborted.append(
                    _(
                        "newsletter could not make any message ({error}); this is a fault in newsletter or the templates: try 'newsletter --verbose build', fix it or report it.",
                        error=finished[-1].error,
                    )
                )
                stop.set()
            if first:  # the transport has accepted the first message: the issue is public now
                if via.kind == "smtp":
                    remember(conn, "smtp", via.target)
                notes.append(publish(settings))
            said = {o.smtputf8 for o in finished if o.smtputf8 is not None}
            if via.kind == "smtp" and len(said) == 1:  # what the list may accept from now on (subscribers.upsert)
                note(conn, SMTPUTF8_SEEN, smtputf8_fact(via, said.pop()))
            if progress and time.monotonic() - last_progress >= 1:  # counting is O(recipients)
                last_progress = time.monotonic()
                progress(journal.summary(conn, delivery))
        if stop.is_set() or (limit is not None and dispatched >= limit):
            if not in_flight:
                return False
            continue
        room = count - len(in_flight)
        if limit is not None:
            room = min(room, limit - dispatched)
        if room <= 0:
            continue
        if time.monotonic() - last_pending >= 2:  # unsubscribes kept aside while the database was busy
            last_pending = time.monotonic()
            apply_pending_unsubscribes(conn)
        if len(ready) < room:
            state = "running"
            if time.monotonic() - looked >= 1:  # read once a second
                looked, state = time.monotonic(), journal.going_on(conn, delivery, fingerprint)
            if state == "done" and not in_flight:  # another sender finished it
                return False
            if state == "changed":  # cancelled, or started again meanwhile
                if not aborted:
                    aborted.append(_("the delivery was cancelled or started again by another command meanwhile."))
                stop.set()
                continue
            ready.extend(journal.claim(conn, delivery, me, max(count * 8, room)))
        if not ready:
            if in_flight:
                continue
            due = journal.next_attempt(conn, delivery)
            if due is None:
                if not journal.claimed_elsewhere(conn, delivery, me):
                    return False
                # Other senders hold the rest: wait for them, and take over from one that died.
                if not journal.recover(conn, delivery, _alive(conn), me):
                    stop.wait(1.0)
                continue
            delay = (due - now()).total_seconds()
            if delay > max_wait:
                return False  # left for retry: the next 'send' or 'run-due' picks it up
            stop.wait(max(0.05, min(delay, 5.0)))
            continue
        if limiter.active:  # one at a time, when the limit allows; outcomes are recorded while waiting
            delay = limiter.reserve()
            if delay > 0:
                idle = True
                if not in_flight:
                    stop.wait(min(delay, 1.0))
                continue
            batch = [ready.popleft()]
        else:
            batch = [ready.popleft() for _ in range(min(room, len(ready)))]
        with concurrently(conn):  # recorded before they leave: after a crash these are resent, as uncertain
            going = set(journal.leaving(conn, delivery, me, [job[0] for job in batch]))
        for job in batch:
            if job[0] in going:
                in_flight.add(job[0])
                pool.put(job)
                dispatched += 1
        idle = False


def _record(
    settings: Settings,
    conn: sqlite3.Connection,
    delivery: int,
    outcome: Outcome,
    aborted: list[str],
    stop: threading.Event,
    first_known: bool = False,
) -> bool:
    """Write one outcome (inside the caller's transaction). True if it is the delivery's first
    acceptance (``first_known``: this run has recorded an acceptance already, so it is not)."""
    if outcome.kind == ABORT:  # back in the queue, no attempt counted; the run stops
        journal.requeue(conn, delivery, outcome.subscriber)
        if not aborted:
            aborted.append(outcome.error)
        stop.set()
        return False
    if outcome.ok:
        return journal.sent(conn, delivery, outcome.subscriber, outcome.message_id, first_known)
    final = journal.failed(
        conn, delivery, outcome.subscriber, permanent=outcome.kind == PERMANENT, error=outcome.error,
        uncertain=outcome.uncertain, max_attempts=settings.send_max_attempts,
        retry_seconds=settings.send_retry_seconds,
    )  # fmt: skip
    if final and outcome.bounce:  # only a refused address counts towards 'bounced'
        note_bounce(conn, outcome.subscriber, settings.send_bounce_after)
    return False


@dataclass(frozen=True)
class TestSent:
    """Where each test message went, and what the send has to say."""

    sent: tuple[tuple[str, str], ...]  # (address, where it went)
    via: Transport
    notes: tuple[str, ...]
    failed: tuple[tuple[str, str], ...] = ()  # (address, why): one address's failure does not stop the others


def send_test(settings: Settings, prepared: Prepared, addresses: tuple[str, ...]) -> TestSent:
    """Send the issue to test addresses, subject prefixed [TEST], exactly as subscribers get it
    but for the personal links. Records no delivery; the issue's images are published once the
    first test is accepted, so the test shows them. An address that cannot be reached is that
    address's failure (in ``failed``); only the connection stops the others."""
    addresses = tuple(normalize_email(address) for address in addresses)  # every address valid before any send
    keys.check(settings)
    with database(settings.database) as conn:
        via = transport_for(settings, conn)
    images = prepared.issue.assets or prepared.logo is not None
    page = snapshot(settings, prepared) if images else None
    factory = MessageFactory(settings, prepared.rendered, prepared.strings, subject_prefix="[TEST] ",
                             signers=dkim_key(settings))  # fmt: skip
    done: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    notes: list[str] = []
    connection = Connection(via)  # one connection for all the test addresses
    try:
        for email in addresses:
            recipient = Recipient(email=email, unsubscribe_token="test", preferences_token="test")

            def make(address: str, recipient: Recipient = recipient) -> bytes:
                return factory.build(recipient, address=address)[1]

            try:
                done.append((email, deliver(connection, settings.sender_address, email, make)))
            except (Undeliverable, TransportError) as exc:
                if isinstance(exc, ConnectFailed):
                    raise
                failed.append((email, str(exc)))
                continue
            if len(done) == 1:  # the first test is accepted: its images go online
                with database(settings.database) as conn:
                    if via.kind == "smtp":
                        remember(conn, "smtp", via.target)
                        note(conn, SMTPUTF8_SEEN, smtputf8_fact(via, connection.smtputf8))
                    if page is not None:
                        with conn:
                            save_snapshot(conn, page, draft=True)
                if page is not None:
                    notes.append(publish(settings, test=True))
    finally:
        connection.close()
    return TestSent(tuple(done), via, tuple(notes), tuple(failed))


def status(settings: Settings, ref: str | None) -> journal.Summary:
    """The latest delivery of an issue; without ``ref``, of the newest issue, or, when that one
    has none yet (being written), the latest delivery of all."""
    try:
        issue_id = issue_name(settings, ref)
        unnamed = None
    except ProjectError as exc:  # no newest issue to name (a newer one misnamed, say): the latest sent
        if ref is not None:
            raise
        issue_id, unnamed = "", exc
    with database(settings.database) as conn:
        row = journal.latest(conn, issue_id) if issue_id else None
        if row is None and ref is None:
            newest = journal.newest_issue(conn)
            row = journal.latest(conn, newest) if newest else None
        if row is None and unnamed is not None:
            raise unnamed
        if row is None:
            find_issue(settings, ref)  # an issue that does not exist at all says so
            raise SendError(_("{issue_id} has not been sent or scheduled.", issue_id=issue_id))
        return journal.summary(conn, row.id)
