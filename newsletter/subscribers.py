"""Subscribers, their consent, signed tokens and segments.

Every subscriber chose to be on the list (consent_source and consent_at say how and when),
can leave at any time, and can be forgotten: then only a keyed hash of the address is kept,
so that an import cannot bring the address back by accident. Imports never resubscribe
anyone who unsubscribed or was forgotten.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import io
import json
import logging
import os
import queue
import re
import secrets
import shlex
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import journal, keys
from .addresses import check_address
from .clock import now, parse_timestamp, timestamp
from .compose import clean_name
from .config import Settings, find_category
from .content import did_you_mean
from .emissions import Member, current_name
from .errors import BusyError, NewsletterError, SubscriberError
from .language import _, catalogue, os_reason, translate
from .locks import hold
from .sheets import TextFormat, csv_rows, sheet_rows
from .store import (
    Database,
    busy,
    connect,
    exclusive,
    give_way,
    immediate,
    is_held,
    local_file,
    local_path,
    recall,
    urgent,
)
from .transport import SMTPUTF8_SEEN, address_problem

STATUSES = ("pending", "confirmed", "unsubscribed", "bounced", "blocked")


@functools.cache
def _status_words() -> dict[str, str]:
    """Each status by its English and its Norwegian word (made once: an import asks per row)."""
    return {s: s for s in STATUSES} | {catalogue("nb").gettext(s).casefold(): s for s in STATUSES}


def status_named(value: str) -> str:
    """The status a word names, written in English ('confirmed') or in Norwegian, as the tool
    shows it ('bekreftet'), in any case; SubscriberError names the words to use."""
    found = _status_words().get(value.strip().casefold())
    if found is None:
        raise SubscriberError(
            _(
                "unknown status {value!r}; use one of: {statuses}.",
                value=value,
                statuses=", ".join(translate(status) for status in STATUSES),
            )
        )
    return found


CONFIRM_DAYS = 7

ALIASES = {
    "email": {"email", "e-mail", "e-post", "epost", "e-postadresse", "epostadresse", "mail", "adresse", "address"},
    "name": {"name", "navn", "fullt navn", "full name", "fornavn og etternavn"},
    "municipality": {"municipality", "kommune", "kommunenummer", "kommunenr"},
    "language": {"language", "lang", "språk", "sprak", "målform"},
    "topics": {"topics", "topic", "tema", "temaer", "emne", "emner", "interesser", "interests"},
    "status": {"status"},
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subscriber:
    """One person on the list, with their consent record."""

    id: int
    email: str
    name: str
    municipality: str | None
    language: str
    topics: tuple[str, ...]
    status: str
    consent_source: str
    consent_at: str
    confirmed_at: str | None
    unsubscribed_at: str | None
    hard_bounces: int
    created_at: str
    updated_at: str
    confirm_sent_at: str | None = None
    welcomed_at: str | None = None
    link_sent_at: str | None = None


def _subscriber(row: sqlite3.Row) -> Subscriber:
    data = dict(row)
    data["topics"] = tuple(t for t in data["topics"].split(",") if t)
    return Subscriber(**data)


# --- validation --------------------------------------------------------------------------------


def normalize_email(text: str) -> str:
    """The address in canonical form (syntax checked by email-validator; no DNS look-up)."""
    from email_validator import EmailNotValidError, validate_email

    raw = (text or "").strip()
    if not raw:
        raise SubscriberError(_("the e-mail address is empty."))
    try:
        result = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(
            _("{raw!r} is not a valid e-mail address ({reason}).", raw=raw, reason=address_problem(exc))
        ) from None
    # Lower case throughout: the local part is case-sensitive in theory, never in practice,
    # and one person must not be on the list twice as Kari@ and kari@.
    address = f"{result.local_part}@{result.domain}".lower()
    try:
        return check_address(address)  # what is accepted here is what a message can be written to
    except NewsletterError:
        raise SubscriberError(_("{raw!r} is not an address a message can be sent to; check it.", raw=raw)) from None


def resolve_municipality(value: str | None, members: tuple[Member, ...]) -> str | None:
    """A member municipality by name or number (either numbering), as its 2024 number."""
    if value is None or not str(value).strip():
        return None
    wanted = str(value).strip()
    if not members:
        raise SubscriberError(
            _(
                "municipality {wanted!r} cannot be checked: newsletter.toml has no emissions.members (the CSV of the region's member municipalities); set it, or leave the municipality out.",
                wanted=wanted,
            )
        )
    digits = wanted.zfill(4) if wanted.isdigit() else None
    for member in members:
        if digits in member.numbers or wanted.lower() in (member.name.lower(), member.official_name.lower()):
            return member.number_2024
    merged = current_name(wanted, members)  # 'Ski' is part of Nordre Follo now
    if merged is not None:
        return merged.number_2024
    guess = did_you_mean(wanted, [name for m in members for name in (m.name, m.official_name)])
    raise SubscriberError(
        _(
            "unknown municipality {wanted!r}{guess}: give a member municipality's name or number.",
            wanted=wanted,
            guess=guess,
        )
    )


def resolve_topics(values: list[str] | tuple[str, ...], settings: Settings) -> tuple[str, ...]:
    """Focus-area keys for topic names, keys or aliases."""
    keys = []
    for value in values:
        # A whole name may hold commas ("Areal, transport, mobilitet og logistikk"); else a list.
        parts = [value] if find_category(settings.categories, str(value)) else str(value).replace(";", ",").split(",")
        for part in parts:
            if not part.strip():
                continue
            category = find_category(settings.categories, part)
            if category is None:
                known = ", ".join(c.key for c in settings.categories)
                names = [name for c in settings.categories for name in (c.key, c.nb, c.en, *c.aliases)]
                guess = did_you_mean(part.strip(), names)
                raise SubscriberError(
                    _(
                        "unknown topic {strip!r}{guess}; use one of: {known}.",
                        strip=part.strip(),
                        guess=guess,
                        known=known,
                    )
                )
            if category.key not in keys:
                keys.append(category.key)
    return tuple(keys)


def _language(value: str | None, default: str) -> str:
    if value is None or not str(value).strip():
        return default
    text = str(value).strip().lower()
    mapping = {"nb": "nb", "no": "nb", "norsk": "nb", "bokmål": "nb", "en": "en", "english": "en", "engelsk": "en"}
    if text not in mapping:
        raise SubscriberError(_("unknown language {value!r}; use nb or en.", value=value))
    return mapping[text]


def _name(value: str | None) -> str:
    name = clean_name(value or "")
    if len(name) > 200:
        raise SubscriberError(_("the name is longer than 200 characters; shorten it."))
    return name


def forgotten_hash(settings: Settings, email: str) -> str:
    """A keyed hash of an address: recognises it again without storing it."""
    return forgotten_hashes(settings, email)[0]


def forgotten_hashes(settings: Settings, email: str) -> list[str]:
    """The address's hash under the current key, then under each older one (kept after a rotation)."""
    if not settings.secret_key:
        raise SubscriberError(
            _("NEWSLETTER_SECRET_KEY is not set: put a long random value in .env (see .env.example).")
        )
    return [
        hmac.new(key.encode(), email.encode(), hashlib.sha256).hexdigest()
        for key in (settings.secret_key, *settings.old_secret_keys)
    ]


def _is_forgotten(conn: sqlite3.Connection, settings: Settings, email: str) -> bool:
    if conn.execute("SELECT 1 FROM forgotten LIMIT 1").fetchone() is None:
        return False
    hashes = forgotten_hashes(settings, email)
    marks = ",".join("?" * len(hashes))
    return conn.execute(f"SELECT 1 FROM forgotten WHERE hash IN ({marks})", hashes).fetchone() is not None


def unforget(conn: sqlite3.Connection, settings: Settings, email: str) -> None:
    """The person confirmed a new subscription: a former 'forget' no longer applies. Call inside a transaction."""
    hashes = forgotten_hashes(settings, email)
    conn.execute(f"DELETE FROM forgotten WHERE hash IN ({','.join('?' * len(hashes))})", hashes)


# --- changes -----------------------------------------------------------------------------------


def deliverable(conn: sqlite3.Connection, settings: Settings, address: str) -> None:
    """Refuse (SubscriberError, saying why) an address the newsletter's own SMTP server is known
    not to carry: letters such as æøå before the @ when the server has said it lacks SMTPUTF8.
    Every other address normalize_email accepts can be sent to."""
    local = address.rpartition("@")[0]
    if local.isascii() or not settings.smtp_host or settings.send_transport == "outbox":
        return
    target = f"smtp {settings.smtp_host}:{settings.smtp_port}"
    if f"{target} no" in {value for value, _ in recall(conn, SMTPUTF8_SEEN)}:
        raise SubscriberError(
            _(
                "{address}: the e-mail server this newsletter sends through ({smtp_host}) cannot deliver to addresses with letters such as æøå before the @ (it lacks SMTPUTF8); ask for another address.",
                address=address,
                smtp_host=settings.smtp_host,
            )
        )


def get(conn: sqlite3.Connection, email: str) -> Subscriber | None:
    """The subscriber with this address, if any."""
    row = conn.execute("SELECT * FROM subscribers WHERE email = ?", (normalize_email(email),)).fetchone()
    return _subscriber(row) if row else None


def get_by_id(conn: sqlite3.Connection, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, if any."""
    row = conn.execute("SELECT * FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()
    return _subscriber(row) if row else None


def upsert(
    conn: sqlite3.Connection,
    settings: Settings,
    email: str,
    *,
    name: str = "",
    municipality: str | None = None,
    language: str | None = None,
    topics: tuple[str, ...] = (),
    confirmed: bool = False,
    source: str,
    allow_forgotten: bool = False,
) -> tuple[str, Subscriber]:
    """Add a subscriber or update one's details; ('added' | 'updated' | 'unchanged', subscriber).

    Call inside a transaction. Refuses addresses that unsubscribed, bounced, were blocked or
    were forgotten: only the person can come back, through the signup form.
    """
    return _upsert(conn, settings, normalize_email(email), name=name, municipality=municipality, language=language,
                   topics=topics, confirmed=confirmed, source=source, allow_forgotten=allow_forgotten)  # fmt: skip


def _upsert(
    conn: sqlite3.Connection,
    settings: Settings,
    address: str,
    *,
    name: str = "",
    municipality: str | None = None,
    language: str | None = None,
    topics: tuple[str, ...] = (),
    confirmed: bool = False,
    source: str,
    allow_forgotten: bool = False,
) -> tuple[str, Subscriber]:
    """``upsert`` of an address already normalized."""
    if not allow_forgotten and _is_forgotten(conn, settings, address):
        raise SubscriberError(_("{address} asked to be forgotten; only the person can sign up again.", address=address))
    deliverable(conn, settings, address)
    moment = timestamp(now())
    existing = conn.execute("SELECT * FROM subscribers WHERE email = ?", (address,)).fetchone()
    if existing is None:
        status = "confirmed" if confirmed else "pending"
        conn.execute(
            "INSERT INTO subscribers (email, name, municipality, language, topics, status, consent_source, consent_at,"
            " confirmed_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (address, name, municipality, language or settings.language, ",".join(topics), status, source, moment,
             moment if confirmed else None, moment, moment),
        )  # fmt: skip
        return "added", get(conn, address)  # type: ignore[return-value]
    current = _subscriber(existing)
    if current.status in ("unsubscribed", "bounced", "blocked"):
        raise SubscriberError(
            _(
                "{address} is {status}; it is not added again (only the person can sign up again).",
                address=address,
                status=current.status,
            )
        )
    changes: dict[str, Any] = {}
    if name and name != current.name:
        changes["name"] = name
    if municipality and municipality != current.municipality:
        changes["municipality"] = municipality
    if language and language != current.language:
        changes["language"] = language
    if topics and topics != current.topics:
        changes["topics"] = ",".join(topics)
    if confirmed and current.status == "pending":
        changes["status"] = "confirmed"
        changes["confirmed_at"] = moment
    if not changes:
        return "unchanged", current
    changes["updated_at"] = moment
    conn.execute(
        f"UPDATE subscribers SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?", (*changes.values(), current.id)
    )
    return "updated", get(conn, address)  # type: ignore[return-value]


SIGNUP_SOURCE = "signup form (web)"


@dataclass(frozen=True)
class SignupRequest:
    """What a signup asks for: who, and the details they gave (kept in the confirmation link,
    so that nothing about an existing subscriber changes before the link is clicked)."""

    subscriber: int
    details: dict[str, Any]


def request_signup(
    conn: sqlite3.Connection,
    settings: Settings,
    email: str,
    *,
    name: str = "",
    municipality: str | None = None,
    language: str | None = None,
    topics: tuple[str, ...] = (),
) -> tuple[SignupRequest, Subscriber] | None:
    """A signup from the web: a new address is stored as pending; a known one is not changed at
    all (a stranger may type anybody's address), only the time of its last confirmation email.
    Returns what the confirmation email must carry and whom it greets (the subscriber as stored),
    or None when no email goes out (confirmed or blocked already, or one was sent within
    ``web.confirm_interval`` minutes). Commits."""
    moment = timestamp(now())
    details = {"name": name, "municipality": municipality, "language": language or settings.language,
               "topics": list(topics)}  # fmt: skip
    apply_pending_unsubscribes(conn)  # someone who left while the database was busy has left
    with immediate(conn):  # the look and the change together: two signups at once make one row
        person = get(conn, email)
        if person is None:  # also an address that was forgotten: the person asks again
            _added, person = upsert(conn, settings, email, name=name, municipality=municipality, language=language,
                               topics=topics, source=SIGNUP_SOURCE, allow_forgotten=True)  # fmt: skip
            conn.execute("UPDATE subscribers SET confirm_sent_at = ? WHERE id = ?", (moment, person.id))
            return SignupRequest(person.id, {}), person
        if person.status in ("confirmed", "blocked"):
            return None  # nothing to do, and nothing to tell
        interval = settings.web_confirm_interval * 60
        last = parse_timestamp(person.confirm_sent_at)
        if interval and last is not None and (now() - last).total_seconds() < interval:
            return None  # one email per address per interval, however many ask
        conn.execute("UPDATE subscribers SET confirm_sent_at = ? WHERE id = ?", (moment, person.id))
        return SignupRequest(person.id, details), person


def request_link(conn: sqlite3.Connection, settings: Settings, email: str) -> Subscriber | None:
    """Someone asks for the link to an address's preferences page: the subscriber to send it to,
    or None (not on the list or not confirmed, or a link went to it within
    ``web.confirm_interval`` minutes). The caller answers the same either way. Commits."""
    try:
        address = normalize_email(email)
    except SubscriberError:
        return None
    moment = now()
    with immediate(conn):
        person = get(conn, address)
        if person is None or person.status != "confirmed":
            return None
        interval = settings.web_confirm_interval * 60
        last = parse_timestamp(person.link_sent_at)
        if interval and last is not None and (moment - last).total_seconds() < interval:
            return None
        conn.execute("UPDATE subscribers SET link_sent_at = ? WHERE id = ?", (timestamp(moment), person.id))
    return person


def confirm(conn: sqlite3.Connection, settings: Settings, request: SignupRequest) -> Subscriber | None:
    """The person clicked the confirmation link: confirmed, with the details the signup gave (a
    returning subscriber's consent is renewed), and a former 'forget' no longer applies. None if
    the subscriber is gone or blocked. Commits."""
    moment = timestamp(now())
    apply_pending_unsubscribes(conn)  # an unsubscribe kept aside is older than this confirmation
    with immediate(conn):
        person = get_by_id(conn, request.subscriber)
        if person is None or person.status == "blocked":
            return None
        details = request.details
        if details or person.status != "pending":
            topics = tuple(t for t in details.get("topics", ()) if find_category(settings.categories, str(t)))
            conn.execute(
                "UPDATE subscribers SET consent_source = ?, consent_at = ?, unsubscribed_at = NULL, hard_bounces = 0,"
                " name = CASE WHEN ? != '' THEN ? ELSE name END, municipality = COALESCE(?, municipality),"
                " language = COALESCE(?, language), topics = CASE WHEN ? != '' THEN ? ELSE topics END WHERE id = ?",
                (SIGNUP_SOURCE, moment, details.get("name") or "", details.get("name") or "",
                 details.get("municipality"), details.get("language") if details.get("language") in ("nb", "en")
                 else None, ",".join(topics), ",".join(topics), person.id),
            )  # fmt: skip
        conn.execute(  # a confirmed address may ask again (after leaving) without waiting for the interval
            "UPDATE subscribers SET status = 'confirmed', confirmed_at = CASE WHEN status = 'confirmed'"
            " THEN confirmed_at ELSE ? END, updated_at = ?, confirm_sent_at = NULL WHERE id = ?",
            (moment, moment, person.id),
        )
        unforget(conn, settings, person.email)
    return get_by_id(conn, person.id)


def add(
    conn: sqlite3.Connection,
    settings: Settings,
    members: tuple[Member, ...],
    email: str,
    *,
    name: str = "",
    municipality: str | None = None,
    language: str | None = None,
    topics: tuple[str, ...] = (),
    confirmed: bool = False,
    source: str = "added by staff (cli)",
) -> tuple[str, Subscriber]:
    """Validate and add (or update) one subscriber, in one transaction."""
    values = dict(
        name=_name(name),
        municipality=resolve_municipality(municipality, members),
        language=_language(language, settings.language),
        topics=resolve_topics(topics, settings),
    )
    _key_for_forgotten(conn, settings)
    with urgent(local_file(conn)), conn:
        return upsert(conn, settings, email, confirmed=confirmed, source=source, **values)


def _key_for_forgotten(conn: sqlite3.Connection, settings: Settings) -> None:
    """Forgotten addresses are recognised by hashes keyed with the project's key: with another
    key (or none) an import would bring them back. Checked before a transaction starts."""
    if conn.execute("SELECT 1 FROM forgotten LIMIT 1").fetchone() is not None:
        keys.check(settings)


def set_status(conn: sqlite3.Connection, subscriber_id: int, status: str) -> None:
    """Change a subscriber's status (confirm, unsubscribe, bounce, block), with its timestamp.
    A short write that long jobs (an import) give way to."""
    moment = timestamp(now())
    extra = {"confirmed": ", confirmed_at = ?", "unsubscribed": ", unsubscribed_at = ?"}.get(status, "")
    params = (status, moment, moment) if extra else (status, moment)
    with urgent(local_file(conn)), conn:
        conn.execute(f"UPDATE subscribers SET status = ?, updated_at = ?{extra} WHERE id = ?", (*params, subscriber_id))


# --- unsubscribes the database could not take at once -------------------------------------------
#
# A one-click unsubscribe is answered only once it is durable. When the database is busy past a
# short wait (a long write elsewhere), it is appended to a file beside the database and fsynced
# instead, and applied before the list is next read (a send, an audience, a listing) or the
# moment the database is free again. Applying twice is harmless: it only unsubscribes.


def _pending_file(database: Path) -> Path:
    return database.with_name(database.name + ".unsubscribes")


def record_unsubscribe(database: Database | Path, *subscriber_ids: int) -> None:
    """Keep unsubscribes durably beside ``database`` (a line each, fsynced once) to be applied
    later; for PostgreSQL, on this machine's disk (``Database.local``)."""
    database = local_path(database)
    path = _pending_file(database)
    moment = timestamp(now())
    lines = "".join(json.dumps({"subscriber": i, "at": moment}) + "\n" for i in subscriber_ids)
    with hold(database.parent, f"{database.name}-unsubscribes", wait=True):
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, lines.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if new and os.name == "posix":  # the file's name must survive a power cut too (NTFS journals it)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


class Unsubscriber:
    """One-click unsubscribes for a server: each caller returns only when its own is durable,
    while one writer thread commits all that are waiting together, with one synced write (a
    group commit): a burst of thousands costs a few hundred commits, not thousands. When the
    database stays busy for ``wait`` seconds, the batch goes to the file beside it instead."""

    def __init__(self, database: Database | Path, wait: float, batch: int = 1000) -> None:
        self.database, self.wait, self.batch = database, wait, batch
        self.queue: queue.SimpleQueue[tuple[int, threading.Event, list]] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def unsubscribe(self, subscriber_id: int) -> None:
        """Unsubscribe, durably, before returning; OSError if neither the database nor the file took it."""
        done, outcome = threading.Event(), []
        self.queue.put((subscriber_id, done, outcome))
        with self.lock:  # the writer ends when idle; started again when needed
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="unsubscribes", daemon=True)
                self.thread.start()
        if not done.wait(timeout=60):
            raise OSError(_("the unsubscribe was not written within a minute"))
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            try:
                waiting = [self.queue.get(timeout=5)]
            except queue.Empty:
                conn = self._apply_kept(conn)
                with self.lock:
                    # Nobody waiting and nothing kept aside: end (a new caller starts a new writer).
                    # Unsubscribes kept aside are applied from here as soon as the database answers,
                    # also when no other unsubscribe comes (on PostgreSQL the file is on this
                    # machine only: senders elsewhere cannot apply it).
                    if self.queue.empty() and not _pending_file(local_path(self.database)).exists():
                        self.thread = None
                        if conn is not None:
                            conn.close()
                        return
                continue
            while len(waiting) < self.batch:
                try:
                    waiting.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            ids = [item[0] for item in waiting]
            error: BaseException | None = None
            try:
                conn, error = self._write(conn, ids)
            except BaseException as exc:  # whatever happens, every caller gets an answer
                error = (
                    exc
                    if isinstance(exc, Exception)
                    else OSError(_("the unsubscribe writer stopped ({exc!r})", exc=exc))
                )
                conn = None
            finally:
                for _email, done, outcome in waiting:
                    outcome.append(error)
                    done.set()

    def _apply_kept(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """Try to apply the unsubscribes kept beside the database; the connection to go on with."""
        if not _pending_file(local_path(self.database)).exists():
            return conn
        try:
            conn = conn or connect(self.database, timeout=self.wait)
            apply_pending_unsubscribes(conn)
            return conn
        except (sqlite3.Error, NewsletterError):
            log.debug("kept unsubscribes not applied yet", exc_info=True)
            if conn is not None:
                conn.close()
            return None

    def _write(
        self, conn: sqlite3.Connection | None, ids: list[int]
    ) -> tuple[sqlite3.Connection | None, BaseException | None]:
        """Commit the unsubscribes, or keep them in the file when the database stays busy:
        (the connection to go on with, the error to answer with, if any)."""
        try:
            with urgent(self.database):
                if conn is None:
                    conn = connect(self.database, timeout=self.wait)
                    conn.execute("PRAGMA synchronous=FULL")  # durable when answered, power cut included
                moment = timestamp(now())
                with conn:
                    conn.executemany(
                        "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ?, updated_at = ?"
                        " WHERE id = ? AND status IN ('pending', 'confirmed')",
                        [(moment, moment, i) for i in ids],
                    )
            apply_pending_unsubscribes(conn)  # the database is free now: those kept aside go in too
            return conn, None
        except (sqlite3.Error, NewsletterError) as exc:
            if conn is not None:
                conn.close()
            if not (busy(exc) or busy(exc.__cause__ or exc)):
                return None, exc
            try:
                record_unsubscribe(self.database, *ids)
            except Exception as failed:  # neither took it: the callers are told, nothing pretends
                return None, failed
            return None, None


def apply_pending_unsubscribes(conn: sqlite3.Connection) -> int:
    """Apply the unsubscribes kept beside the database (see ``record_unsubscribe``); how many.
    One stat when there are none; nothing inside a transaction (the caller's would be cut in
    two). The commit is synced before the file is removed (a power cut loses neither), and a
    line older than the subscriber's latest confirmation is not applied (they came back)."""
    if conn.in_transaction:
        return 0
    database = local_file(conn)
    path = _pending_file(database)
    if not path.exists() and not any(database.parent.glob(f"{path.name}.applying-*")):
        return 0
    applied = 0
    with hold(database.parent, f"{database.name}-unsubscribes", wait=True):  # one applier at a time
        if path.exists():
            os.replace(path, path.with_name(f"{path.name}.applying-{os.getpid()}-{time.time_ns()}"))
        for file in sorted(database.parent.glob(f"{path.name}.applying-*")):  # also one a killed applier left
            try:
                text = file.read_text(encoding="ascii", errors="replace")
            except FileNotFoundError:
                continue
            entries = []
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                    entries.append((str(entry["at"]), str(entry["at"]), int(entry["subscriber"]), str(entry["at"])))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash while writing it: its request was never answered
            synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            try:
                with conn:
                    applied += conn.executemany(
                        "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ?, updated_at = ?"
                        " WHERE id = ? AND status IN ('pending', 'confirmed') AND COALESCE(confirmed_at, '') <= ?",
                        entries,
                    ).rowcount
            finally:
                conn.execute(f"PRAGMA synchronous={int(synchronous)}")
            file.unlink(missing_ok=True)
    return applied


def note_bounce(conn: sqlite3.Connection, subscriber_id: int, bounce_after: int) -> None:
    """The server refused this subscriber's address for good: after ``bounce_after`` such
    refusals a confirmed subscriber becomes 'bounced'. Call inside a transaction."""
    conn.execute(
        "UPDATE subscribers SET hard_bounces = hard_bounces + 1, status = CASE WHEN hard_bounces + 1 >= ?"
        " AND status = 'confirmed' THEN 'bounced' ELSE status END, updated_at = ? WHERE id = ?",
        (bounce_after, timestamp(now()), subscriber_id),
    )


def remove(conn: sqlite3.Connection, email: str) -> Subscriber:
    """Unsubscribe an address (it stays on record as unsubscribed)."""
    current = get(conn, email)
    if current is None:
        address = normalize_email(email)
        raise SubscriberError(
            _("{email} is not on the list{guess}.", email=address, guess=close_addresses(conn, address))
        )
    if current.status in ("pending", "confirmed"):  # bounced and blocked stay as they are
        set_status(conn, current.id, "unsubscribed")
    return get_by_id(conn, current.id)  # type: ignore[return-value]


def forget(conn: sqlite3.Connection, settings: Settings, email: str) -> bool:
    """Erase a person's data, keeping only a keyed hash of the address (keyed with the project's
    own key, so that it is recognised again: a missing or different key is refused). Whether the
    address was on the list (it is remembered as forgotten either way: it is never imported)."""
    keys.check(settings)
    address = normalize_email(email)
    digest = forgotten_hash(settings, address)
    keys.record(settings)
    with conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM subscribers WHERE email = ?", (address,))]
        erased = conn.execute("DELETE FROM subscribers WHERE email = ?", (address,)).rowcount
        # the delivery journal keeps that a message went, not to whom (the counts stay right)
        journal.forget_address(conn, address)
        for subscriber in ids:
            conn.execute("DELETE FROM import_undo WHERE subscriber = ?", (subscriber,))
        conn.execute(
            "INSERT INTO forgotten (hash, forgotten_at) VALUES (?, ?) ON CONFLICT(hash) DO NOTHING",
            (digest, timestamp(now())),
        )
    return erased > 0


def close_addresses(conn: sqlite3.Connection, email: str) -> str:
    """' (did you mean ...?)' for an address on the list close to ``email`` (a typo), or ''."""
    local, _at, domain = email.rpartition("@")
    rows = conn.execute("SELECT email FROM subscribers WHERE email LIKE ?", (f"%@{domain}",)).fetchall()
    candidates = [r[0] for r in rows] or [r[0] for r in conn.execute("SELECT email FROM subscribers LIMIT 50000")]
    return did_you_mean(email, candidates)


# --- import and export ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportReport:
    """What an import did: counts, and the rejected rows with their reasons (the first
    REJECTED_SHOWN of them; ``rejected_count`` counts them all)."""

    added: int
    updated: int
    unchanged: int
    skipped: int  # rows whose status column says unsubscribed, bounced or blocked
    rejected: tuple[tuple[int, str], ...]
    rejected_count: int
    dry_run: bool
    read_as: str = ""  # how the file was read: 'Windows-1252 text, separated by semicolons', ...
    ignored_columns: tuple[str, ...] = ()  # columns whose names match no field: not read
    added_pending: int = 0  # of the added, those who wait for confirmation (not confirmed by the file or --confirmed)
    header: tuple[str, ...] = ()  # the file's own column names, as written
    rejected_cells: tuple[tuple[str, ...], ...] = ()  # each rejected row's cells as written, beside ``rejected``


REJECTED_SHOWN = 1000
IMPORT_BATCH = 500  # rows per transaction: the database is never held for long


# The columns of an export in Norwegian, as staff read them in Excel (an import reads both).
NORWEGIAN_COLUMNS = {
    "email": "e-post", "name": "navn", "municipality": "kommune", "municipality_name": "kommunenavn",
    "language": "språk", "topics": "tema", "status": "status", "consent_source": "samtykke_fra",
    "consent_at": "samtykke_tid", "confirmed_at": "bekreftet_tid", "unsubscribed_at": "avmeldt_tid",
    "hard_bounces": "harde_returer", "created_at": "lagt_inn", "updated_at": "endret",
    "confirm_sent_at": "bekreftelse_sendt", "welcomed_at": "velkommen_sendt", "link_sent_at": "lenke_sendt",
}  # fmt: skip
_EXPORTED = {"id", "consent_source", "consent_at", "confirmed_at", "unsubscribed_at", "hard_bounces", "created_at",
             "updated_at", "confirm_sent_at", "welcomed_at", "link_sent_at", "municipality_name"}  # fmt: skip
_EXPORTED |= {NORWEGIAN_COLUMNS[c] for c in _EXPORTED if c in NORWEGIAN_COLUMNS}


def _columns(header: list[str], path: Path, ignored: list[str]) -> dict[str, int]:
    """Which column holds which field; the names of columns that match none go to ``ignored``."""
    found: dict[str, int] = {}
    # the file of rejected rows (cli) puts its line and reason first, in either language
    rejects = {w.lower() for word in ("line", "reason") for w in (word, catalogue("nb").gettext(word))}
    for index, raw in enumerate(header):
        key = raw.strip().lower()
        field = next((f for f, aliases in ALIASES.items() if key in aliases and f not in found), None)
        if field is not None:
            found[field] = index
        elif raw.strip() and key not in _EXPORTED and key not in rejects:  # our own columns are not news
            ignored.append(raw.strip())
    if "email" not in found:
        raise SubscriberError(
            _(
                "{path}:1: no e-mail column; name one of the columns 'email' or 'e-post' (found: {header}).",
                path=path,
                header=", ".join(header),
            )
        )
    return found


def table_rows(path: Path, found: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of a subscriber list as staff have one: an .xlsx workbook (its first sheet),
    or a text file as Excel saves one (see sheets.csv_rows). ``found`` gets how it was read."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise SubscriberError(_("{path}: cannot be read ({strerror}).", path=path, strerror=os_reason(exc))) from exc
    if head.startswith(b"PK\x03\x04"):  # a workbook, whatever its name says
        found.append(_("an Excel workbook (.xlsx), its first sheet"))
        yield from sheet_rows(path)
        return
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise SubscriberError(
            _("{path}: an old Excel workbook (.xls); save it as .xlsx (Excel workbook) or CSV.", path=path)
        )
    if path.suffix.lower() in (".xlsx", ".xlsm", ".ods", ".numbers"):  # named a workbook, but not one inside
        raise SubscriberError(
            _(
                "{path}: the name says workbook, but the file is not one (damaged, or not fully copied); open it in Excel and save it again, or save the list as CSV.",
                path=path,
            )
        )
    formats: list[TextFormat] = []
    try:
        for line, cells in csv_rows(path, _("subscriber list"), formats):
            if not found:
                found.append(formats[0].description)
            yield line, cells
    except UnicodeDecodeError as exc:
        raise SubscriberError(
            _(
                "{path}:{exc}: not text in an encoding newsletter reads (UTF-8, UTF-16, Windows-1252); save it from Excel as 'CSV UTF-8' or as a workbook (.xlsx).",
                path=path,
                exc=getattr(exc, "line", 1),
            )
        ) from None


def _stage(
    settings: Settings,
    members: tuple[Member, ...],
    path: Path,
    stage: sqlite3.Connection,
    found: list[str],
    ignored: list[str],
) -> tuple[int, list[tuple[int, str]], int]:
    """Read and check the whole file into ``stage`` (a scratch database) before anything is
    written to the list: (rows skipped by their status column, rejected rows, rejected count)."""
    rejected: list[tuple[int, str]] = []
    count = skipped = 0
    stage.execute(
        "CREATE TABLE rows (line INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT, municipality TEXT,"
        " language TEXT, topics TEXT, confirmed INTEGER)"
    )
    stage.execute("CREATE TABLE cells (line INTEGER PRIMARY KEY, cells TEXT NOT NULL)")  # as written, for a rejection
    columns: dict[str, int] = {}
    for line, row in table_rows(path, found):
        if not columns:
            columns = _columns(row, path, ignored)
            stage.execute("INSERT INTO cells VALUES (0, ?)", (json.dumps(row, ensure_ascii=False),))
            continue
        if not any(cell.strip() for cell in row):
            continue

        def cell(field: str, row: list[str] = row, columns: dict[str, int] = columns) -> str | None:
            index = columns.get(field)
            return row[index] if index is not None and index < len(row) else None

        try:
            email = normalize_email(_unneutralized(cell("email") or ""))
            row_status = (cell("status") or "").strip()
            row_status = status_named(row_status) if row_status else ""
            if row_status in ("unsubscribed", "bounced", "blocked"):
                skipped += 1  # e.g. an export: such rows never (re)subscribe anyone
                continue
            first = stage.execute("SELECT line FROM rows WHERE email = ?", (email,)).fetchone()
            if first is not None:
                raise SubscriberError(_("{email} appears again (first on line {first}).", email=email, first=first[0]))
            values = (
                _name(_unneutralized(cell("name") or "")),
                resolve_municipality(cell("municipality"), members),
                _language(cell("language"), settings.language),
                ",".join(resolve_topics([cell("topics") or ""], settings)),
            )
            stage.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (line, email, *values, int(row_status == "confirmed")))  # fmt: skip
            stage.execute("INSERT INTO cells VALUES (?, ?)", (line, json.dumps(row, ensure_ascii=False)))
        except SubscriberError as exc:
            count += 1
            if len(rejected) < REJECTED_SHOWN:
                rejected.append((line, str(exc)))
                stage.execute("INSERT OR REPLACE INTO cells VALUES (?, ?)", (line, json.dumps(row, ensure_ascii=False)))
    if not columns:
        raise SubscriberError(_("{path}: the file is empty.", path=path))
    return skipped, rejected, count


def import_csv(
    conn: sqlite3.Connection,
    settings: Settings,
    members: tuple[Member, ...],
    path: Path,
    *,
    confirmed: bool = False,
    dry_run: bool = False,
) -> ImportReport:
    """Import subscribers from a CSV file. The file is read and checked first, into a scratch
    database, with nothing written to the list; then it is applied in short transactions of
    IMPORT_BATCH rows, each remembering the rows as they were, so that the public pages are
    never kept waiting, and an import that is killed halfway is undone (``settle``) to the list
    as it was. ``dry_run`` applies nothing, but reports what would happen."""
    settle(conn)  # an import killed earlier is undone first
    _key_for_forgotten(conn, settings)
    source = f"imported from {path.name}" + (" (consent confirmed by staff)" if confirmed else "")
    with tempfile.TemporaryDirectory(prefix="newsletter-import-") as scratch:
        stage = sqlite3.connect(Path(scratch) / "stage.db", isolation_level=None)
        try:
            stage.execute("PRAGMA journal_mode=OFF")
            stage.execute("PRAGMA synchronous=OFF")
            stage.execute("BEGIN")
            found: list[str] = []
            ignored: list[str] = []
            skipped, rejected, rejected_count = _stage(settings, members, path, stage, found, ignored)
            stage.execute("COMMIT")
            counts = _apply_staged(conn, settings, stage, source, confirmed, dry_run, rejected)
            rejected.sort()
            rejected = rejected[:REJECTED_SHOWN]
            written = dict(stage.execute("SELECT line, cells FROM cells"))
        finally:
            stage.close()
    added, updated, unchanged, late, pending = counts
    header = tuple(json.loads(written.get(0, "[]")))
    cells = tuple(tuple(json.loads(written.get(line, "[]"))) for line, _reason in rejected)
    return ImportReport(added, updated, unchanged, skipped, tuple(rejected), rejected_count + late, dry_run,
                        found[0] if found else "", tuple(ignored), pending, header, cells)  # fmt: skip


def _apply_staged(
    conn: sqlite3.Connection,
    settings: Settings,
    stage: sqlite3.Connection,
    source: str,
    confirmed: bool,
    dry_run: bool,
    rejected: list[tuple[int, str]],
) -> tuple[int, int, int, int, int]:
    """Apply the staged rows in short transactions (rolled back each, with ``dry_run``):
    (added, updated, unchanged, rejected now: unsubscribed or forgotten addresses, added pending)."""
    database = local_file(conn)
    counts = {"added": 0, "updated": 0, "unchanged": 0, "pending": 0}
    late = 0
    lock = f"{database.name}-import-{secrets.token_hex(8)}"
    with exclusive(conn, lock):  # held from before the import is seen until it ends: a dead one is undone
        with conn:
            job = conn.execute(
                "INSERT INTO imports (source, lock, started_at, state) VALUES (?, ?, ?, 'applying')",
                (source, lock, timestamp(now())),
            ).lastrowid
        rows = stage.execute("SELECT * FROM rows ORDER BY line")
        try:
            while batch := rows.fetchmany(IMPORT_BATCH):
                give_way(database)  # an unsubscribe or a signup waiting goes first
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for line, email, name, municipality, language, topics, row_confirmed in batch:
                        before = conn.execute("SELECT * FROM subscribers WHERE email = ?", (email,)).fetchone()
                        try:
                            action, person = _upsert(
                                conn, settings, email, name=name, municipality=municipality, language=language,
                                topics=tuple(t for t in topics.split(",") if t),
                                confirmed=confirmed or bool(row_confirmed), source=source,
                            )  # fmt: skip
                        except SubscriberError as exc:
                            late += 1
                            if len(rejected) < REJECTED_SHOWN:
                                rejected.append((line, str(exc)))
                            continue
                        counts[action] += 1
                        if action == "added" and person.status == "pending":
                            counts["pending"] += 1
                        if action != "unchanged":
                            after = conn.execute("SELECT * FROM subscribers WHERE id = ?", (person.id,)).fetchone()
                            conn.execute(
                                "INSERT OR REPLACE INTO import_undo (import, subscriber, before, after)"
                                " VALUES (?, ?, ?, ?)",
                                (job, person.id, _row_json(before) if before else None, _row_json(after)),
                            )
                    conn.execute("ROLLBACK" if dry_run else "COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except BaseException:
            _undo_import(conn, job)  # an error (not a kill: that is settle's) undoes what went in
            raise
        with conn:
            conn.execute("UPDATE imports SET state = 'done' WHERE id = ?", (job,))
        while conn.execute("SELECT 1 FROM import_undo WHERE import = ? LIMIT 1", (job,)).fetchone():
            with conn:  # the rows as they were are not needed any more; deleted in short steps too
                conn.execute(
                    "DELETE FROM import_undo WHERE rowid IN (SELECT rowid FROM import_undo WHERE import = ? LIMIT ?)",
                    (job, IMPORT_BATCH * 10),
                )
    return counts["added"], counts["updated"], counts["unchanged"], late, counts["pending"]


def _row_json(row: sqlite3.Row) -> str:
    return json.dumps(dict(row), sort_keys=True, ensure_ascii=False)


def _undo_import(conn: sqlite3.Connection, job: int) -> None:
    """Put back the rows an import changed, in short steps; a row that someone changed since
    (an unsubscribe, a confirmation) keeps that change."""
    while True:
        with conn:
            entries = conn.execute(
                "SELECT rowid, subscriber, before, after FROM import_undo WHERE import = ? LIMIT ?", (job, IMPORT_BATCH)
            ).fetchall()
            for rowid, subscriber, before, after in entries:
                current = conn.execute("SELECT * FROM subscribers WHERE id = ?", (subscriber,)).fetchone()
                if current is not None and _row_json(current) == after:
                    if before is None:
                        conn.execute("DELETE FROM subscribers WHERE id = ?", (subscriber,))
                    else:
                        old = json.loads(before)
                        old.pop("id", None)
                        conn.execute(
                            f"UPDATE subscribers SET {', '.join(f'{k} = ?' for k in old)} WHERE id = ?",
                            (*old.values(), subscriber),
                        )
                conn.execute("DELETE FROM import_undo WHERE rowid = ?", (rowid,))
            if not entries:
                conn.execute("UPDATE imports SET state = 'undone' WHERE id = ?", (job,))
                return


def importing(conn: sqlite3.Connection) -> bool:
    """Whether an import is being applied right now by a running process."""
    return any(
        is_held(conn, lock) for (lock,) in conn.execute("SELECT lock FROM imports WHERE state = 'applying'").fetchall()
    )


def settle(conn: sqlite3.Connection) -> None:
    """Before the list is read: undo imports that were killed halfway (their process is gone)
    and apply unsubscribes kept aside while the database was busy. Nothing inside a transaction."""
    if conn.in_transaction:
        return
    if conn.execute("SELECT 1 FROM imports WHERE state = 'applying' LIMIT 1").fetchone():
        # Newest first: a row two killed imports changed goes back to what it was before both.
        for job, lock in conn.execute("SELECT id, lock FROM imports WHERE state = 'applying' ORDER BY id DESC"):
            try:
                with exclusive(conn, lock):
                    _undo_import(conn, job)  # its process is gone: back to the list as it was
            except BusyError:
                continue  # still at work
    apply_pending_unsubscribes(conn)


def listing(conn: sqlite3.Connection, statuses: tuple[str, ...] = ()) -> list[Subscriber]:
    """Subscribers (with the given statuses, or all), by address."""
    settle(conn)
    statuses = tuple(status_named(status) for status in statuses)
    if statuses:
        marks = ",".join("?" * len(statuses))
        rows = conn.execute(f"SELECT * FROM subscribers WHERE status IN ({marks}) ORDER BY email", statuses)
    else:
        rows = conn.execute("SELECT * FROM subscribers ORDER BY email")
    return [_subscriber(r) for r in rows]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula (OWASP: CSV injection)


def neutralized(value: object) -> object:
    """Text a spreadsheet would run as a formula, made plain text by a leading apostrophe."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_START) else value


def _unneutralized(text: str) -> str:
    """The value an export neutralized, as it was (the import reads the real name)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def export(subscribers: list[Subscriber], fmt: str, names: dict[str, str] | None = None, language: str = "en") -> str:
    """CSV (re-importable) or JSON of subscribers with their consent records. In Norwegian
    (``language`` nb) the CSV's columns and statuses are in Norwegian; the JSON's keys are not.

    The CSV has semicolons between the columns, as Norwegian Excel expects (with commas it shows
    one column); written to a file (``write_export``) it also gets the byte order mark that tells
    Excel it is UTF-8. Text that Excel or LibreOffice would run as a formula ('=HYPERLINK(...)'
    as a name) starts with an apostrophe; importing the file again gives the text as it was."""
    names = names or {}  # municipality number -> name, beside the number (an import reads the number)
    records = [
        asdict(s) | {"topics": list(s.topics), "municipality_name": names.get(s.municipality or "", "")}
        for s in subscribers
    ]
    if fmt == "json":
        return json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    out = io.StringIO()
    fields = [f for f in Subscriber.__dataclass_fields__ if f != "id"]
    fields.insert(fields.index("municipality") + 1, "municipality_name")
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n", delimiter=";")
    norwegian = language == "nb"
    writer.writerow({f: NORWEGIAN_COLUMNS.get(f, f) if norwegian else f for f in fields})
    for record in records:
        row = record | {"topics": ",".join(record["topics"])}
        if norwegian:
            row["status"] = catalogue("nb").gettext(row["status"])
        writer.writerow({k: neutralized(v) for k, v in row.items()})
    return out.getvalue()


def write_export(path: Path, text: str, fmt: str) -> None:
    """An export written to a new file (never over one that exists: FileExistsError): a CSV as
    Norwegian Excel opens it, UTF-8 with a byte order mark and Windows line ends."""
    csv_file = fmt == "csv"
    with path.open("x", encoding="utf-8-sig" if csv_file else "utf-8", newline="\r\n" if csv_file else "\n") as out:
        out.write(text)


def counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Numbers of subscribers by status, and of confirmed ones by municipality and language."""
    settle(conn)
    result: dict[str, dict[str, int]] = {"status": dict.fromkeys(STATUSES, 0), "municipality": {}, "language": {}}
    for status, n in conn.execute("SELECT status, COUNT(*) FROM subscribers GROUP BY status"):
        result["status"][status] = n
    for key, column in (("municipality", "municipality"), ("language", "language")):
        for value, n in conn.execute(
            f"SELECT COALESCE({column}, '-'), COUNT(*) FROM subscribers WHERE status = 'confirmed' GROUP BY 1 ORDER BY 2 DESC"
        ):
            result[key][value] = n
    return result


# --- segments ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Who a send goes to: confirmed subscribers by default, narrowed by municipality, language, topic."""

    statuses: tuple[str, ...] = ("confirmed",)
    municipalities: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()


_TERM = re.compile(r"^\s*(\w+)\s*=\s*(.+?)\s*$")


def parse_segment(text: str | None, settings: Settings, members: tuple[Member, ...]) -> Segment:
    """'municipality=3205,Asker lang=nb topic=klima status=confirmed' -> Segment (terms AND, values OR)."""
    if not text or not text.strip():
        return Segment()
    fields: dict[str, tuple[str, ...]] = {}
    text = re.sub(r"\s*=\s*", "=", text)  # 'kommune = Asker', as people type it
    try:
        terms = shlex.split(text)
    except ValueError as exc:
        raise SubscriberError(_("segment {text!r}: {exc}; close the quotes.", text=text, exc=exc)) from None
    joined: list[str] = []
    for term in terms:  # 'kommune=Nordre Follo', 'kommune=Lillestrøm, Asker': a value goes on to the next '='
        if joined and "=" not in term:
            joined[-1] += " " + term
        else:
            joined.append(term)
    for term in joined:
        match = _TERM.match(term)
        if not match:
            raise SubscriberError(
                _(
                    "segment term {term!r} is not name=value; e.g. municipality=Asker,Lillestrøm lang=nb topic=klima.",
                    term=term,
                )
            )
        name, values = match.group(1).lower(), [v.strip() for v in match.group(2).split(",") if v.strip()]
        if name in ("municipality", "kommune"):
            fields["municipalities"] = tuple(resolve_municipality(v, members) for v in values)  # type: ignore[misc]
        elif name in ("lang", "language", "språk"):
            fields["languages"] = tuple(_language(v, settings.language) for v in values)
        elif name in ("topic", "topics", "tema"):
            fields["topics"] = resolve_topics(values, settings)
        elif name == "status":
            fields["statuses"] = tuple(status_named(value) for value in values)
        else:
            raise SubscriberError(
                _("unknown segment field {name!r}; use municipality, lang, topic or status.", name=name)
            )
    return Segment(**fields)


def _selection(segment: Segment) -> tuple[str, list[str]]:
    where, params = [f"status IN ({','.join('?' * len(segment.statuses))})"], list(segment.statuses)
    if segment.municipalities:
        where.append(f"municipality IN ({','.join('?' * len(segment.municipalities))})")
        params += segment.municipalities
    if segment.languages:
        where.append(f"language IN ({','.join('?' * len(segment.languages))})")
        params += segment.languages
    return " AND ".join(where), params


def audience(conn: sqlite3.Connection, segment: Segment) -> list[Subscriber]:
    """The subscribers a segment selects, by address (the list settled first: see ``settle``)."""
    settle(conn)
    where, params = _selection(segment)
    rows = conn.execute(f"SELECT * FROM subscribers WHERE {where} ORDER BY email", params)
    found = [_subscriber(r) for r in rows]
    if segment.topics:  # those who chose none get every topic, as the signup form promises
        found = [s for s in found if not s.topics or set(s.topics) & set(segment.topics)]
    return found


def recipients(conn: sqlite3.Connection, segment: Segment) -> list[tuple[int, str]]:
    """(id, address) of the subscribers a segment selects: what a delivery records, lighter
    than ``audience`` for a large list. Settles the list first."""
    settle(conn)
    where, params = _selection(segment)
    wanted = set(segment.topics)
    return [
        (row[0], row[1])
        for row in conn.execute(f"SELECT id, email, topics FROM subscribers WHERE {where} ORDER BY email", params)
        if not wanted or not row[2] or wanted & set(row[2].split(","))  # no topics chosen: every topic
    ]


# --- tokens --------------------------------------------------------------------------------------


def make_token(settings: Settings, subscriber_id: int, purpose: str) -> str:
    """A signed token for one subscriber and purpose ('confirm', 'unsubscribe', 'preferences').

    It carries the subscriber's number, never the address."""
    if not settings.secret_key:
        raise SubscriberError(
            _("NEWSLETTER_SECRET_KEY is not set: put a long random value in .env (see .env.example).")
        )
    return _serializer((*settings.old_secret_keys, settings.secret_key), purpose).dumps(subscriber_id)


@lru_cache(maxsize=16)
def _serializer(keys: tuple[str, ...], purpose: str):
    """One serializer per key set and purpose: a send makes two tokens per recipient. It signs
    with the last key and accepts a signature by any of them (the old ones after a rotation)."""
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(list(keys), salt=f"newsletter-{purpose}")


def make_confirm_token(settings: Settings, request: SignupRequest) -> str:
    """The confirmation link's token: the subscriber, and the details a returning one asked for."""
    if not request.details:
        return make_token(settings, request.subscriber, "confirm")
    if not settings.secret_key:
        raise SubscriberError(
            _("NEWSLETTER_SECRET_KEY is not set: put a long random value in .env (see .env.example).")
        )
    payload = [request.subscriber, request.details]
    return _serializer((*settings.old_secret_keys, settings.secret_key), "confirm").dumps(payload)


def read_confirm_token(settings: Settings, token: str) -> SignupRequest:
    """The request in a confirmation token; SubscriberError if forged, changed or older than 7 days."""
    from itsdangerous import BadSignature, SignatureExpired

    if not settings.secret_key:
        raise SubscriberError(_("NEWSLETTER_SECRET_KEY is not set."))
    try:
        value = _serializer((*settings.old_secret_keys, settings.secret_key), "confirm").loads(
            token, max_age=CONFIRM_DAYS * 86400
        )
    except SignatureExpired:
        raise SubscriberError(_("the link has expired.")) from None
    except BadSignature:
        raise SubscriberError(_("the link is not valid.")) from None
    if isinstance(value, int) and not isinstance(value, bool):
        return SignupRequest(value, {})
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], int) and isinstance(value[1], dict):
        return SignupRequest(value[0], value[1])
    raise SubscriberError(_("the link is not valid."))


def read_token(settings: Settings, token: str, purpose: str) -> int:
    """The subscriber number in a token; SubscriberError if forged, changed or (confirm) older than 7 days."""
    from itsdangerous import BadSignature, SignatureExpired

    if not settings.secret_key:
        raise SubscriberError(_("NEWSLETTER_SECRET_KEY is not set."))
    serializer = _serializer((*settings.old_secret_keys, settings.secret_key), purpose)
    max_age = CONFIRM_DAYS * 86400 if purpose == "confirm" else None
    try:
        value = serializer.loads(token, max_age=max_age)
    except SignatureExpired:
        raise SubscriberError(_("the link has expired.")) from None
    except BadSignature:
        raise SubscriberError(_("the link is not valid.")) from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SubscriberError(_("the link is not valid."))
    return value
