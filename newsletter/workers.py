"""The connections of a send: worker processes (threads where forking is not safe) that build
and hand over messages, and the rate limit they share. No SQL: jobs go in, outcomes come out,
and the delivery records them.

Every outcome belongs to one recipient, except ABORT: no connection, no login, or our sender
refused, which stops the run and blames nobody.
"""

from __future__ import annotations

import multiprocessing
import os
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any

from .errors import AfterData, ConnectFailed, NewsletterError, NoSmtputf8, TransportError, Undeliverable
from .language import _
from .locks import release_inherited
from .transport import PERMANENT, TEMPORARY, Connection, Transport, classify, mail_address

ABORT = "abort"  # no connection at all: not the recipient's fault

# make(job, address) -> (Message-ID, bytes): the message for one job, to the address as the
# connection carries it (transport.mail_address).
Make = Callable[[tuple, str], tuple[str, bytes]]
# The envelope sender (MAIL FROM): one for all, or one per job (VERP: bounces.envelope_sender).
Sender = str | Callable[[tuple], str]


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
    smtputf8: bool | None = None  # for an address with æøå: whether the server offered SMTPUTF8
    fault: bool = False  # the message could not be made for a reason that is newsletter's own
    where: str = ""  # where it went (the outbox names the file)


class RateLimit:
    """``per_second`` and ``per_hour`` (0: no limit), counted across every sender of the project
    (connections, processes, machines): messages are let go in small allowances taken from the
    database (``take(want) -> (granted, seconds to wait when none)``, journal.take_sends)."""

    def __init__(self, per_second: int, per_hour: int, take: Callable[[int], tuple[int, float]]) -> None:
        self.per_second, self.per_hour, self.take = per_second, per_hour, take
        self.allowance = 0
        self.chunk = max(1, per_second // 10) if per_second else 10

    @property
    def active(self) -> bool:
        return bool(self.per_second or self.per_hour)

    def reserve(self) -> float:
        """0 if one more message may go now (and it is counted), else the seconds to wait."""
        if not self.active:
            return 0.0
        if not self.allowance:
            self.allowance, wait = self.take(self.chunk)
            if not self.allowance:
                return wait
        self.allowance -= 1
        return 0.0


def handle(connection: Connection, sender: Sender, job: tuple, make: Make) -> Outcome:
    """Build and hand over one job's message; every failure but a lost connection (or an outbox
    that cannot be written) is the job's own."""
    subscriber, email = job[0], job[1]
    try:
        address, utf8 = mail_address(email, connection.smtputf8)
    except ConnectFailed as exc:
        return Outcome(subscriber, False, ABORT, str(exc))
    except NoSmtputf8 as exc:
        return Outcome(subscriber, False, PERMANENT, str(exc), smtputf8=False)
    except Undeliverable as exc:
        return Outcome(subscriber, False, PERMANENT, str(exc))
    try:
        message_id, raw = make(job, address)
    except NewsletterError as exc:  # this recipient's data (a stored address no longer valid): no retry helps
        return Outcome(subscriber, False, PERMANENT, _("the message could not be made: {exc}", exc=exc))
    except Exception as exc:  # a fault in newsletter itself: retried, and '--retry-failed' after a fix
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        return Outcome(
            subscriber, False, TEMPORARY, _("the message could not be made ({reason}).", reason=reason), fault=True
        )
    try:
        where = connection.send(sender(job) if callable(sender) else sender, address, raw, utf8)
        return Outcome(subscriber, True, message_id=message_id, smtputf8=True if utf8 else None, where=where)
    except ConnectFailed as exc:
        return Outcome(subscriber, False, ABORT, str(exc))
    except AfterData as exc:
        return Outcome(subscriber, False, TEMPORARY, str(exc), uncertain=True)
    except Exception as exc:  # every other failure is recorded against the recipient
        kind, text = classify(exc)
        bounce = kind == PERMANENT and isinstance(exc, smtplib.SMTPRecipientsRefused)
        return Outcome(subscriber, False, kind, text, bounce=bounce)


def deliver(connection: Connection, sender: str, email: str, make: Callable[[str], bytes]) -> str:
    """One message outside a delivery (a test send, a confirmation email), by the same rules as
    a delivery's: ``make(address)`` builds it for the address form this server carries. Returns
    where it went; raises ConnectFailed, Undeliverable (this address cannot be reached) or
    TransportError (the server's answer)."""
    outcome = handle(connection, sender, (0, email), lambda job, address: ("", make(address)))
    if outcome.ok:
        return outcome.where
    if outcome.kind == ABORT:
        raise ConnectFailed(outcome.error)
    if outcome.kind == PERMANENT:
        raise Undeliverable(f"{email}: {outcome.error}")
    raise TransportError(_("the message to {email} was not accepted ({error}).", email=email, error=outcome.error))


def _work(via: Transport, sender: Sender, jobs: Any, results: Any, parent: int, make: Make) -> None:
    """One connection: build and send the messages it is given and report each outcome (thread or
    process). In a process it uses another core."""
    if os.getpid() != parent:  # a forked worker: let go of the lock files, so only the sender holds them
        release_inherited()
    connection = Connection(via)
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
            results.put(handle(connection, sender, job, make))
    finally:
        connection.close()


@dataclass
class Pool:
    """The connections of a run."""

    jobs: Any
    results: Any
    members: list

    def alive(self) -> bool:
        """Whether every connection is still running."""
        return all(member.is_alive() for member in self.members)

    def collect(self, timeout: float | None) -> list[Outcome]:
        """The outcomes that have arrived, waiting up to ``timeout`` seconds for the first (None: not at all)."""
        found = []
        try:
            found.append(self.results.get(timeout=timeout) if timeout else self.results.get_nowait())
            while True:
                found.append(self.results.get_nowait())
        except Empty:
            pass
        return found

    def put(self, job: tuple) -> None:
        self.jobs.put(job)

    def stop(self) -> None:
        for _member in self.members:
            self.jobs.put(None)
        for member in self.members:
            member.join(timeout=60)
            if hasattr(member, "terminate") and member.is_alive():
                member.terminate()


def start(via: Transport, sender: Sender, count: int, make: Make) -> Pool:
    """``count`` connections: processes where that is safe (SMTP, several cores, no other threads
    in this process), else threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    if via.kind == "smtp" and count > 1 and cores > 1 and forkable:
        context = multiprocessing.get_context("fork")
        jobs, results = context.Queue(), context.Queue()
        members: list = [
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
    return Pool(jobs, results, members)
