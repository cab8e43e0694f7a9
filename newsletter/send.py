"""Transports: the local outbox (a Maildir in the project) and SMTP.

The outbox is the default when no SMTP host is set, so everything works on a fresh machine
without sending real mail. This module sends single messages (confirmation emails); the
delivery job for whole issues builds on it.
"""

from __future__ import annotations

import hashlib
import mailbox
import smtplib
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import NewsletterError
from .store import now, parse_timestamp, timestamp


class SendError(NewsletterError):
    """A message could not be handed to the transport."""


class ConnectFailed(SendError):
    """No connection to the SMTP server (refused, login, certificate), or the server refuses our
    sender address: stop the run, keep everyone pending, blame no recipient."""


class AfterData(SendError):
    """The connection failed after the whole message was handed over: it may have been delivered."""


@dataclass(frozen=True)
class Outbox:
    """Messages written to a Maildir instead of being sent (open it with any mail program)."""

    path: Path

    def send(self, message: EmailMessage) -> str:
        """Store the message; return where it went."""
        return self.send_bytes(message.as_bytes())

    def send_bytes(self, raw: bytes) -> str:
        """Store a message given as bytes (as signed); return where it went."""
        try:
            box = mailbox.Maildir(self.path, create=True)
            key = box.add(raw)
        except OSError as exc:
            raise SendError(f"cannot write to the outbox {self.path} ({exc.strerror}).") from exc
        return f"outbox {self.path}/new/{key}"

    def describe(self) -> str:
        return f"the local outbox {self.path} (nothing is sent; set NEWSLETTER_SMTP_HOST to send for real)"


@dataclass(frozen=True)
class SMTP:
    """An SMTP server: STARTTLS, implicit TLS or plain, with optional login."""

    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    timeout: float
    ca_file: Path | None = None

    def connect(self) -> smtplib.SMTP:
        """An open, authenticated connection. Certificates are always verified."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SendError(f"cannot use the CA file {self.ca_file} ({exc}); check smtp.ca_file.") from exc
        try:
            if self.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
        except smtplib.SMTPNotSupportedError as exc:
            raise SendError(
                f"the SMTP server {self.host} does not offer {exc}; check NEWSLETTER_SMTP_SECURITY."
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise SendError(
                f"the SMTP server {self.host} refused the login ({exc.smtp_code}); check NEWSLETTER_SMTP_USERNAME and _PASSWORD."
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise SendError(f"cannot connect to the SMTP server {self.host}:{self.port} ({exc}).") from exc
        return client

    def send(self, message: EmailMessage) -> str:
        """Send one message on its own connection."""
        client = self.connect()
        try:
            client.send_message(message)
        except smtplib.SMTPException as exc:
            raise SendError(f"the SMTP server {self.host} did not accept the message ({exc}).") from exc
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
        return f"SMTP {self.host}:{self.port}"

    def describe(self) -> str:
        return f"SMTP {self.host}:{self.port} ({self.security})"


def transport(settings: Settings) -> Outbox | SMTP:
    """SMTP when NEWSLETTER_SMTP_HOST is set, else the local outbox."""
    if settings.smtp_host:
        return SMTP(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_username,
            settings.smtp_password,
            settings.smtp_timeout,
            settings.smtp_ca_file,
        )
    return Outbox(settings.outbox_dir)


# --- the delivery job ------------------------------------------------------------------------------

TEMPORARY = "temporary"
PERMANENT = "permanent"
ABORT = "abort"  # no connection at all: not the recipient's fault


@dataclass(frozen=True)
class Outcome:
    """What happened to one message."""

    subscriber: int
    ok: bool
    kind: str = ""  # TEMPORARY, PERMANENT or ABORT when not ok
    error: str = ""
    message_id: str = ""
    bounce: bool = False  # the server refused the address itself (RCPT 5xx)
    uncertain: bool = False  # it may have been delivered although it failed


@dataclass(frozen=True)
class Summary:
    """A delivery's counts after a run."""

    delivery: int
    issue: str
    total: int
    sent: int
    failed: int  # permanently: the server refused the address
    gave_up: int  # temporary failures, retried until max_attempts; --retry-failed tries again
    pending: int
    skipped: int
    uncertain: int
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def line(self) -> str:
        """The one-line summary printed at the end of a send."""
        gave_up = f", {self.gave_up} gave up after retries" if self.gave_up else ""
        return (
            f"{self.issue}: {self.sent} sent, {self.failed} failed permanently{gave_up}, {self.pending} left for retry, "
            f"{self.uncertain} uncertain, {self.skipped} skipped (unsubscribed meanwhile) of {self.total}."
        )


def classify(exc: BaseException) -> tuple[str, str]:
    """(TEMPORARY | PERMANENT, the server's words) for an exception raised while sending."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return (PERMANENT if 500 <= code < 600 else TEMPORARY), f"{code} {text}"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return (PERMANENT if 500 <= exc.smtp_code < 600 else TEMPORARY), f"{exc.smtp_code} {text}"
    if isinstance(exc, SendError):
        return TEMPORARY, str(exc)
    return TEMPORARY, f"{type(exc).__name__}: {exc}"  # timeouts, dropped connections, refused connections


class RateLimit:
    """Shared by all connections: at most ``per_second`` and ``per_hour`` messages (0: no limit)."""

    def __init__(self, per_second: int, per_hour: int, clock=time.monotonic, sleep=time.sleep) -> None:
        self.per_second, self.per_hour = per_second, per_hour
        self.clock, self.sleep = clock, sleep
        self.sent: deque[float] = deque()
        self.lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.per_second or self.per_hour)

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until one more message may go; False if ``stop`` was set meanwhile."""
        if not self.active:
            return True
        while True:
            if stop is not None and stop.is_set():
                return False
            with self.lock:
                moment = self.clock()
                while self.sent and self.sent[0] <= moment - 3600:
                    self.sent.popleft()
                last_second = sum(1 for t in reversed(self.sent) if t > moment - 1) if self.per_second else 0
                delay = 0.0
                if self.per_second and last_second >= self.per_second:
                    delay = max(delay, self.sent[-self.per_second] + 1 - moment)
                if self.per_hour and len(self.sent) >= self.per_hour:
                    delay = max(delay, self.sent[-self.per_hour] + 3600 - moment)
                if delay <= 0:
                    self.sent.append(moment)
                    return True
            if stop is not None:
                stop.wait(min(delay, 1.0))
            else:
                self.sleep(min(delay, 1.0))


class _Connection:
    """One persistent connection of a worker thread, reopened after any failure."""

    def __init__(self, via: Outbox | SMTP) -> None:
        self.via = via
        self.client: smtplib.SMTP | None = None

    def send(self, sender: str, recipient: str, raw: bytes) -> None:
        if isinstance(self.via, Outbox):
            self.via.send_bytes(raw)
            return
        if self.client is None:
            try:
                self.client = self.via.connect()
            except SendError as exc:
                raise ConnectFailed(str(exc)) from exc
        try:
            self._transaction(sender, recipient, raw)
        except smtplib.SMTPRecipientsRefused:
            self.reset()  # the session is still usable, but RSET keeps it clean
            raise
        except (smtplib.SMTPServerDisconnected, OSError, AfterData):
            self.close()
            raise
        except smtplib.SMTPResponseException:
            self.reset()
            raise

    def _transaction(self, sender: str, recipient: str, raw: bytes) -> None:
        """MAIL, RCPT and DATA as smtplib.sendmail does them, but with the dot-stuffing done by a
        byte replace: smtplib's regular expression costs as much as building the message."""
        client = self.client
        assert client is not None
        client.ehlo_or_helo_if_needed()
        code, reply = client.mail(sender)
        if code != 250:
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
            if 500 <= code < 600:  # our sender address is refused: no recipient's fault
                raise ConnectFailed(
                    f"the SMTP server refused the sender {sender} ({code} {text}); check sender.address."
                )
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = client.rcpt(recipient)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        code, reply = client.docmd("data")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        body = raw.replace(b"\r\n.", b"\r\n..")
        if body.startswith(b"."):
            body = b"." + body
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        client.send(body + b".\r\n")
        try:
            code, reply = client.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise AfterData(f"no answer after the message was sent ({exc})") from exc
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def reset(self) -> None:
        try:
            if self.client is not None:
                self.client.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.quit()
            except (smtplib.SMTPException, OSError):
                self.client.close()
        self.client = None


def content_hash(rendered: Any) -> str:
    """A fingerprint of what recipients get (subject, HTML and text, and each municipality's
    block), to notice later edits."""
    digest = hashlib.sha256()
    blocks = [piece for number in sorted(rendered.municipal) for piece in (number, *rendered.municipal[number])]
    pieces = (rendered.subject, *rendered.html.parts, *rendered.html.slots, *rendered.text.parts,
              *rendered.text.slots, *blocks)  # fmt: skip
    for piece in pieces:
        digest.update(str(piece).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


HELD_LOCKS: set[int] = set()  # file descriptors of the lock files this process holds


@contextmanager
def delivery_lock(settings: Settings, issue_id: str) -> Iterator[None]:
    """One sender per issue at a time: a lock file the OS releases when the process dies."""
    import fcntl

    folder = settings.build_dir / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / f"{issue_id}.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        HELD_LOCKS.add(handle.fileno())
    except BlockingIOError:
        handle.close()
        raise SendError(
            f"another send of {issue_id} is running right now; wait for it to finish (see 'newsletter status {issue_id}')."
        ) from None
    try:
        yield
    finally:
        HELD_LOCKS.discard(handle.fileno())
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def summary(conn: sqlite3.Connection, delivery: int) -> Summary:
    """Counts and failures of a delivery."""
    row = conn.execute("SELECT issue FROM deliveries WHERE id = ?", (delivery,)).fetchone()
    counts = dict.fromkeys(("pending", "sending", "sent", "failed", "skipped"), 0)
    for status, n in conn.execute(
        "SELECT status, COUNT(*) FROM delivery_recipients WHERE delivery = ? GROUP BY status", (delivery,)
    ):
        counts[status] = n
    uncertain, permanent = conn.execute(
        "SELECT COALESCE(SUM(uncertain), 0), COALESCE(SUM(status = 'failed' AND permanent = 1), 0)"
        " FROM delivery_recipients WHERE delivery = ?",
        (delivery,),
    ).fetchone()
    failures = tuple(
        (r[0], f"{'permanent' if r[1] else 'temporary, gave up'}: {r[2]}")
        for r in conn.execute(
            "SELECT email, permanent, last_error FROM delivery_recipients WHERE delivery = ? AND status = 'failed'"
            " ORDER BY email",
            (delivery,),
        )
    )
    return Summary(
        delivery=delivery,
        issue=row["issue"],
        total=sum(counts.values()),
        sent=counts["sent"],
        failed=permanent,
        gave_up=counts["failed"] - permanent,
        pending=counts["pending"] + counts["sending"],
        skipped=counts["skipped"],
        uncertain=uncertain,
        failures=failures,
    )


def _recover(conn: sqlite3.Connection, delivery: int) -> None:
    """After a crash: messages marked 'sending' may or may not have left. Send them again
    (nobody is lost) and mark them uncertain (they may get two copies)."""
    with conn:
        conn.execute(
            "UPDATE delivery_recipients SET status = 'pending', uncertain = 1, next_attempt = ''"
            " WHERE delivery = ? AND status = 'sending'",
            (delivery,),
        )


def _work(via: Outbox | SMTP, sender: str, jobs: Any, results: Any, parent: int, make: Any) -> None:
    """One connection: build and send the messages it is given and report each outcome (thread or
    process). ``make(job)`` builds (Message-ID, bytes) for a job; in a process it uses another core."""
    import os
    from queue import Empty

    if os.getpid() != parent:  # a forked worker: let go of the lock files, so only the sender holds them
        for fd in list(HELD_LOCKS):
            with suppress(OSError):
                os.close(fd)
    connection = _Connection(via)
    try:
        while True:
            try:
                job = jobs.get(timeout=1)
            except Empty:
                if os.getppid() != parent and parent != os.getpid():
                    return  # the sender died (even kill -9): stop rather than linger
                continue
            if job is None:
                return
            subscriber, recipient = job[0], job[1]
            try:
                message_id, raw = make(job)
            except NewsletterError as exc:  # this recipient's data (a stored address no longer valid): no retry helps
                results.put(Outcome(subscriber, False, PERMANENT, f"the message could not be made: {exc}"))
                continue
            except Exception as exc:  # a fault in making messages at all: stop, rather than fail everyone
                results.put(
                    Outcome(subscriber, False, ABORT, f"the message could not be made ({type(exc).__name__}: {exc}).")
                )
                continue
            try:
                connection.send(sender, recipient, raw)
                results.put(Outcome(subscriber, True, message_id=message_id))
            except ConnectFailed as exc:
                results.put(Outcome(subscriber, False, ABORT, str(exc)))
            except AfterData as exc:
                results.put(Outcome(subscriber, False, TEMPORARY, str(exc), uncertain=True))
            except Exception as exc:  # every other failure is recorded against the recipient
                kind, text = classify(exc)
                bounce = kind == PERMANENT and isinstance(exc, smtplib.SMTPRecipientsRefused)
                results.put(Outcome(subscriber, False, kind, text, bounce=bounce))
    finally:
        connection.close()


@dataclass
class _Workers:
    """The connections of a run: processes where that is safe (they use the other cores), else threads."""

    jobs: Any
    results: Any
    members: list

    def alive(self) -> bool:
        """Whether every connection is still running."""
        return all(member.is_alive() for member in self.members)

    def stop(self) -> None:
        for _ in self.members:
            self.jobs.put(None)
        for member in self.members:
            member.join(timeout=60)
            if hasattr(member, "terminate") and member.is_alive():
                member.terminate()


def _start_workers(via: Outbox | SMTP, sender: str, count: int, make: Any) -> _Workers:
    import multiprocessing
    import os
    from queue import Queue

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    if isinstance(via, SMTP) and count > 1 and cores > 1 and forkable:
        context = multiprocessing.get_context("fork")
        jobs, results = context.Queue(), context.Queue()
        members = [
            context.Process(target=_work, args=(via, sender, jobs, results, os.getpid(), make), daemon=True)
            for _ in range(count)
        ]
    else:
        jobs, results = Queue(), Queue()
        members = [
            threading.Thread(target=_work, args=(via, sender, jobs, results, os.getpid(), make), daemon=True)
            for _ in range(count)
        ]
    for member in members:
        member.start()
    return _Workers(jobs, results, members)


def create_delivery(
    conn: sqlite3.Connection,
    issue_id: str,
    segment: str,
    subscribers: list[Any],
    fingerprint: str,
    *,
    status: str = "running",
    scheduled_at: str | None = None,
    news_items: tuple[int, ...] = (),
    snapshot: Any = None,
) -> int:
    """Record the delivery and every recipient in one transaction, before any message leaves.
    ``snapshot`` (archive.Snapshot) is stored with them: the issue's page in the archive."""
    from .archive import save_snapshot
    from .feeds import mark_sent

    moment = timestamp(now())
    with conn:
        cursor = conn.execute(
            "INSERT INTO deliveries (issue, segment, content_hash, status, scheduled_at, created_at, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (issue_id, segment, fingerprint, status, scheduled_at, moment, moment if status == "running" else None),
        )
        delivery = cursor.lastrowid
        conn.executemany(
            "INSERT INTO delivery_recipients (delivery, subscriber, email, status) VALUES (?, ?, ?, 'pending')",
            [(delivery, s.id, s.email) for s in subscribers],
        )
        if snapshot is not None:
            save_snapshot(conn, snapshot)
    if news_items:
        mark_sent(conn, issue_id, news_items)  # the issue's news counts as used from now on
    return delivery  # type: ignore[return-value]


def run_delivery(
    settings: Settings,
    conn: sqlite3.Connection,
    delivery: int,
    prepared: Any,
    *,
    limit: int | None = None,
    stop: threading.Event | None = None,
    progress: Any = None,
    max_wait: float = 900.0,
) -> Summary:
    """Send what is due in a delivery over several persistent connections, with the rate limit,
    retries with backoff, and a record of every outcome. Safe to call again after any crash."""
    from queue import Empty

    from .compose import Recipient
    from .message import MessageFactory, dkim_key, sign
    from .subscribers import make_token

    stop = stop or threading.Event()
    key = dkim_key(settings)
    factory = MessageFactory(settings, prepared.rendered, prepared.strings)  # the shared parts, encoded once
    _recover(conn, delivery)  # summary() counts the uncertain ones from the table
    with conn:
        conn.execute(
            "UPDATE deliveries SET status = 'running', started_at = COALESCE(started_at, ?) WHERE id = ?",
            (timestamp(now()), delivery),
        )
    via = transport(settings)
    limiter = RateLimit(settings.send_per_second, settings.send_per_hour)
    workers = 1 if isinstance(via, Outbox) else settings.send_connections

    def make(job: tuple) -> tuple[str, bytes]:
        subscriber, email, name, municipality = job
        recipient = Recipient(
            email=email,
            name=name or "",
            unsubscribe_token=make_token(settings, subscriber, "unsubscribe"),
            preferences_token=make_token(settings, subscriber, "preferences"),
            municipality=municipality,
        )
        message_id, raw = factory.build(recipient)
        return message_id, sign(settings, raw, key)

    pool = _start_workers(via, settings.sender_address, workers, make)
    jobs, results = pool.jobs, pool.results

    aborted: list[str] = []

    def record(outcome: Outcome) -> None:
        moment = now()
        if outcome.kind == ABORT:  # back in the queue, no attempt counted; the run stops
            conn.execute(
                "UPDATE delivery_recipients SET status = 'pending' WHERE delivery = ? AND subscriber = ?",
                (delivery, outcome.subscriber),
            )
            if not aborted:
                aborted.append(outcome.error)
            stop.set()
            return
        if outcome.ok:
            conn.execute(
                "UPDATE delivery_recipients SET status = 'sent', attempts = attempts + 1, sent_at = ?, message_id = ?,"
                " last_error = NULL WHERE delivery = ? AND subscriber = ?",
                (timestamp(moment), outcome.message_id, delivery, outcome.subscriber),
            )
            return
        attempts = conn.execute(
            "SELECT attempts + 1 FROM delivery_recipients WHERE delivery = ? AND subscriber = ?",
            (delivery, outcome.subscriber),
        ).fetchone()[0]
        if outcome.kind == PERMANENT or attempts >= settings.send_max_attempts:
            conn.execute(
                "UPDATE delivery_recipients SET status = 'failed', permanent = ?, attempts = ?, last_error = ?"
                " WHERE delivery = ? AND subscriber = ?",
                (int(outcome.kind == PERMANENT), attempts, outcome.error, delivery, outcome.subscriber),
            )
            if outcome.bounce:  # only a refused address counts towards 'bounced'
                conn.execute(
                    "UPDATE subscribers SET hard_bounces = hard_bounces + 1, status = CASE WHEN hard_bounces + 1 >= ?"
                    " AND status = 'confirmed' THEN 'bounced' ELSE status END, updated_at = ? WHERE id = ?",
                    (settings.send_bounce_after, timestamp(moment), outcome.subscriber),
                )
        else:
            wait = settings.send_retry_seconds * 2 ** (attempts - 1)
            conn.execute(
                "UPDATE delivery_recipients SET status = 'pending', attempts = ?, last_error = ?, next_attempt = ?,"
                " uncertain = MAX(uncertain, ?) WHERE delivery = ? AND subscriber = ?",
                (attempts, outcome.error, timestamp(moment + timedelta(seconds=wait)), int(outcome.uncertain),
                 delivery, outcome.subscriber),
            )  # fmt: skip

    in_flight: set[int] = set()
    idle = False
    lost = False
    ready: deque = deque()  # read ahead, not yet recorded as leaving
    dispatched = 0
    last_progress = 0.0
    try:
        while True:
            # Record whatever finished; block briefly when every connection is busy or nothing
            # could be dispatched last time (no busy loop at the tail, in retries, or stopping).
            block = bool(in_flight) and (len(in_flight) >= workers or idle or stop.is_set())
            if block and not pool.alive():
                lost = True  # a worker process died (killed, out of memory): its message is uncertain
                break
            idle = True
            finished = []
            try:
                finished.append(results.get(timeout=0.5) if block else results.get_nowait())
                while True:
                    finished.append(results.get_nowait())
            except Empty:
                pass
            if finished:
                with conn:
                    for outcome in finished:
                        record(outcome)
                        in_flight.discard(outcome.subscriber)
                if progress and time.monotonic() - last_progress >= 1:  # counting is O(recipients)
                    last_progress = time.monotonic()
                    progress(summary(conn, delivery))
            if stop.is_set() or (limit is not None and dispatched >= limit):
                if not in_flight:
                    break
                continue
            room = workers - len(in_flight)
            if limit is not None:
                room = min(room, limit - dispatched)
            if room <= 0:
                continue
            if len(ready) < room:
                # The next recipients, read ahead (nothing is recorded for them yet: a crash now
                # loses no one and doubles no one). Index order: no sort of the whole delivery.
                want = max(workers * 8, room)
                rows = conn.execute(
                    "SELECT r.subscriber, r.email, s.name, s.municipality, s.status FROM delivery_recipients r"
                    " LEFT JOIN subscribers s ON s.id = r.subscriber WHERE r.delivery = ? AND r.status = 'pending'"
                    " AND r.next_attempt <= ? ORDER BY r.next_attempt LIMIT ?",
                    (delivery, timestamp(now()), want + len(ready)),
                ).fetchall()
                queued = {job[0] for job in ready}
                gone = []
                for row in rows:
                    if row["subscriber"] in queued:
                        continue
                    if row["status"] != "confirmed":  # unsubscribed (or bounced, blocked, forgotten) meanwhile
                        gone.append((delivery, row["subscriber"]))
                        continue
                    ready.append((row["subscriber"], row["email"], row["name"], row["municipality"]))
                if gone:
                    with conn:
                        conn.executemany(
                            "UPDATE delivery_recipients SET status = 'skipped' WHERE delivery = ? AND subscriber = ?",
                            gone,
                        )
            if not ready:
                if in_flight:
                    continue
                nxt = conn.execute(
                    "SELECT MIN(next_attempt) FROM delivery_recipients WHERE delivery = ? AND status = 'pending'",
                    (delivery,),
                ).fetchone()[0]
                if nxt is None:
                    break
                delay = (parse_timestamp(nxt) - now()).total_seconds()
                if delay > max_wait:
                    break  # left for retry: the next 'send' or 'run-due' picks it up
                stop.wait(max(0.05, min(delay, 5.0)))
                continue
            if limiter.active:  # one at a time: wait first (Ctrl-C can stop the wait), then record and hand over
                if not limiter.wait(stop):
                    continue
                batch = [ready.popleft()]
            else:
                batch = [ready.popleft() for _ in range(min(room, len(ready)))]
            with conn:  # recorded before they leave: after a crash these are resent, as uncertain
                conn.executemany(
                    "UPDATE delivery_recipients SET status = 'sending' WHERE delivery = ? AND subscriber = ?",
                    [(delivery, job[0]) for job in batch],
                )
            for job in batch:
                in_flight.add(job[0])
                jobs.put(job)
                dispatched += 1
            idle = False
    finally:
        pool.stop()
    if lost:
        _recover(conn, delivery)
        raise SendError(
            "a sending process stopped unexpectedly; run the same command again (messages that were in flight "
            "are sent again and reported as uncertain)."
        )
    if aborted:
        raise SendError(f"{aborted[0]} Nothing more was sent; the same command goes on where it stopped.")
    result = summary(conn, delivery)
    if result.pending == 0:
        with conn:
            conn.execute(
                "UPDATE deliveries SET status = 'done', finished_at = ? WHERE id = ?", (timestamp(now()), delivery)
            )
    return result


@dataclass(frozen=True)
class Plan:
    """What a send would do, for the confirmation question and --dry-run."""

    issue: str
    subject: str
    audience: int
    via: str
    resuming: int | None  # the delivery being resumed, if any
    sample: tuple[str, ...] = ()
    other_language: int = 0  # recipients who chose the other language edition
    language: str = "nb"


def _active(conn: sqlite3.Connection, issue_id: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM deliveries WHERE issue = ? AND status != 'cancelled'", (issue_id,)).fetchone()


def plan_send(settings: Settings, ref: str | None, segment: str | None, retry_failed: bool = False) -> tuple[Plan, Any]:
    """Check that the issue can be sent to this audience, and say to how many, without sending."""
    from .build import prepare
    from .emissions import project_members
    from .store import connect
    from .subscribers import audience, parse_segment

    if not settings.secret_key:
        raise SendError(
            "NEWSLETTER_SECRET_KEY is not set: the unsubscribe links are signed with it; put a long random value in .env."
        )
    prepared = prepare(settings, ref)
    issue = prepared.issue
    conn = connect(settings.database)
    try:
        existing = _active(conn, issue.id)
        via = transport(settings).describe()
        if existing is None:
            members = project_members(settings)
            people = audience(conn, parse_segment(segment, settings, members))
            if not people:
                raise SendError(
                    f"nobody to send {issue.id} to: the audience ({segment or 'all confirmed subscribers'}) is empty."
                )
            other = sum(p.language != issue.language for p in people)
            sample = tuple(p.email for p in people[:5])
            return Plan(issue.id, issue.subject, len(people), via, None, sample, other, issue.language), prepared
        _check_existing(existing, prepared, segment, retry_failed)
        left = conn.execute(
            "SELECT COUNT(*) FROM delivery_recipients WHERE delivery = ? AND status IN ('pending', 'sending')"
            + (" OR (delivery = ? AND status = 'failed' AND permanent = 0)" if retry_failed else ""),
            (existing["id"], existing["id"]) if retry_failed else (existing["id"],),
        ).fetchone()[0]
        return Plan(issue.id, issue.subject, left, via, existing["id"]), prepared
    finally:
        conn.close()


def _check_existing(existing: sqlite3.Row, prepared: Any, segment: str | None, retry_failed: bool) -> None:
    issue = prepared.issue.id
    if existing["status"] == "scheduled":
        from .schedule import oslo

        raise SendError(
            f"{issue} is scheduled for {oslo(parse_timestamp(existing['scheduled_at']))}; "
            f"cancel it with 'newsletter schedule cancel {issue}' first."
        )
    if existing["status"] == "done" and not retry_failed:
        raise SendError(
            f"{issue} has been sent already (delivery {existing['id']}); 'newsletter status {issue}' shows the result, "
            "'--retry-failed' tries temporary failures again."
        )
    if segment is not None and segment != existing["segment"]:
        raise SendError(
            f"{issue} is being sent to the segment {existing['segment'] or '(all confirmed)'!r}; it cannot change to {segment!r} halfway."
        )
    if content_hash(prepared.rendered) != existing["content_hash"]:
        raise SendError(
            f"{issue} has changed since its delivery started; some recipients already have the earlier version. "
            "Undo the change to finish the delivery."
        )


def execute_send(
    settings: Settings,
    plan: Plan,
    prepared: Any,
    segment: str | None,
    *,
    limit: int | None = None,
    retry_failed: bool = False,
    stop: threading.Event | None = None,
    progress: Any = None,
    on_start: Any = None,
) -> Summary:
    """Create (or resume) the delivery of a planned send and run it. ``on_start()`` is called once
    the delivery is recorded, before the first message (the CLI publishes the archive there, so
    the issue's page and images are online when people open the email)."""
    from .archive import snapshot
    from .emissions import project_members
    from .store import connect
    from .subscribers import audience, parse_segment

    conn = connect(settings.database)
    try:
        with delivery_lock(settings, plan.issue):
            existing = _active(conn, plan.issue)
            if existing is None:
                members = project_members(settings)
                people = audience(conn, parse_segment(segment, settings, members))
                delivery = create_delivery(
                    conn, plan.issue, segment or "", people, content_hash(prepared.rendered),
                    news_items=tuple(item.id for item in prepared.news), snapshot=snapshot(settings, prepared),
                )  # fmt: skip
            else:
                _check_existing(existing, prepared, segment, retry_failed)
                delivery = existing["id"]
                if retry_failed:
                    with conn:
                        conn.execute(
                            "UPDATE delivery_recipients SET status = 'pending', attempts = 0, next_attempt = ''"
                            " WHERE delivery = ? AND status = 'failed' AND permanent = 0",
                            (delivery,),
                        )
                        conn.execute("UPDATE deliveries SET status = 'running' WHERE id = ?", (delivery,))
            if on_start is not None:
                on_start()
            return run_delivery(settings, conn, delivery, prepared, limit=limit, stop=stop, progress=progress)
    finally:
        conn.close()


def send_test(
    settings: Settings, prepared: Any, addresses: tuple[str, ...], on_start: Any = None
) -> list[tuple[str, str]]:
    """Send the issue to test addresses, subject prefixed [TEST]. Records no delivery; stores the
    issue's images for the archive folder, and calls ``on_start()`` (the CLI publishes them) so
    that the test email shows its images."""
    from .archive import save_snapshot, snapshot
    from .compose import Recipient
    from .message import MessageFactory, dkim_key, sign
    from .store import database
    from .subscribers import normalize_email

    addresses = tuple(normalize_email(address) for address in addresses)  # every address valid before any send
    if prepared.issue.assets or prepared.logo is not None:
        page = snapshot(settings, prepared)
        with database(settings.database) as conn, conn:
            save_snapshot(conn, page, draft=True)
        if on_start is not None:
            on_start()
    via = transport(settings)
    key = dkim_key(settings)
    # The same message factory as a real send, so a test shows exactly what subscribers get.
    factory = MessageFactory(settings, prepared.rendered, prepared.strings, subject_prefix="[TEST] ")
    done = []
    connection = _Connection(via)  # one connection for all the test addresses
    try:
        for email in addresses:
            recipient = Recipient(email=email, unsubscribe_token="test", preferences_token="test")
            raw = sign(settings, factory.build(recipient)[1], key)
            if isinstance(via, Outbox):  # where it went: the outbox names the file
                done.append((email, via.send_bytes(raw)))
            else:
                connection.send(settings.sender_address, email, raw)
                done.append((email, via.describe()))
    finally:
        connection.close()
    return done


def delivery_status(settings: Settings, ref: str | None) -> Summary:
    """The latest delivery of an issue (the newest issue by default)."""
    from .content import find_issue
    from .store import connect

    issue_id = find_issue(settings, ref).name
    conn = connect(settings.database)
    try:
        row = conn.execute("SELECT id FROM deliveries WHERE issue = ? ORDER BY id DESC LIMIT 1", (issue_id,)).fetchone()
        if row is None:
            raise SendError(f"{issue_id} has not been sent or scheduled.")
        return summary(conn, row["id"])
    finally:
        conn.close()
