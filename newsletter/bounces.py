"""Bounces and complaints that arrive after the SMTP conversation.

**VERP.** With ``bounces.address`` set (``bounce@nyhetsbrev.osloregionen.no``), every message of
a delivery goes out with its own envelope sender, ``bounce+d<delivery>s<subscriber>-<mac>@...``
(``envelope_sender``): a report that comes back to it names exactly one delivery recipient,
however mangled its text. The From address does not change.

**Reading.** ``classify`` turns one message into a ``Report``: a delivery status notification
(RFC 3464: per recipient, ``Action: failed`` with a 5.x.x status is hard, ``delayed`` or 4.x.x
soft), an abuse report (ARF, RFC 5965: a complaint), another bounce format (flufl.bounce knows
Exim, qmail, Exchange, Yahoo and many more), or nothing (an auto-reply, anything else). The
subscriber is found by the VERP address, else by the unsubscribe link in the returned headers,
else by the address.

**Policy** (``record``): a hard bounce counts towards ``bounces.hard_after`` (1), soft ones
towards ``bounces.soft_limit`` within ``bounces.soft_days`` (3 in 30 days), after which the
subscriber is 'bounced'; a complaint unsubscribes at once. Every event is kept
(``subscriber_events``), and every report once: ``fetch`` commits a report, with the message's
hash, before it moves the message out of the inbox, so a crash neither loses nor counts one twice.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import mailbox
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from . import journal
from .clock import now, timestamp
from .config import Settings
from .errors import ConfigError, Replayed, SubscriberError
from .language import _, os_reason
from .store import exclusive
from .subscribers import read_token

HARD, SOFT, COMPLAINT, NONE = "hard", "soft", "complaint", "none"
DONE_FOLDER = "newsletter-done"  # the Maildir folder that handled reports are moved to
_VERP = re.compile(r"\+d(\d+)s(\d+)-([0-9a-f]{12})@", re.IGNORECASE)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_TOKEN = re.compile(r"/unsubscribe/([A-Za-z0-9_.\-]+)")


# --- VERP -----------------------------------------------------------------------------------------


def _mac(settings: Settings, delivery: int, subscriber: int, secret: str | None = None) -> str:
    secret = secret or settings.secret_key
    if not secret:
        raise ConfigError(_("NEWSLETTER_SECRET_KEY is not set; the bounce addresses are signed with it."))
    return hmac.new(_verp_key(secret), f"{delivery}.{subscriber}".encode(), hashlib.sha256).hexdigest()[:12]


@functools.cache
def _verp_key(secret: str) -> bytes:
    """The bounce addresses' own key, derived from the project's key once (not per message)."""
    return hmac.new(secret.encode(), b"newsletter bounce address", hashlib.sha256).digest()


def envelope_sender(settings: Settings, delivery: int, subscriber: int) -> str:
    """The envelope sender of one delivery recipient's message: the bounce address with the
    recipient in it (lower case and digits only, which every mail server keeps as it is)."""
    assert settings.bounces_address
    local, _at, domain = settings.bounces_address.rpartition("@")
    return f"{local}+d{delivery}s{subscriber}-{_mac(settings, delivery, subscriber)}@{domain}"


def read_envelope(settings: Settings, text: str) -> tuple[int, int] | None:
    """(delivery, subscriber) from a VERP address anywhere in ``text``, if it is ours."""
    for found in _VERP.finditer(text or ""):
        delivery, subscriber = int(found[1]), int(found[2])
        for secret in (settings.secret_key, *settings.old_secret_keys):  # bounces of sends before a rotation
            if secret and hmac.compare_digest(found[3].lower(), _mac(settings, delivery, subscriber, secret)):
                return delivery, subscriber
    return None


# --- reading one report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What one message says: ``kind`` (hard, soft, complaint or none), the recipients it names,
    the DSN status, the VERP recipient (delivery, subscriber), the subscriber named by an
    unsubscribe link in the returned headers, and a short reason."""

    kind: str
    addresses: tuple[str, ...] = ()
    status: str = ""
    verp: tuple[int, int] | None = None
    token: str | None = None
    detail: str = ""
    trusted: bool = False  # from an authenticated service (a webhook): its addresses are believed
    kinds: tuple[tuple[str, str], ...] = ()  # (address, kind) per recipient of a DSN, when they differ


def _parts(message: Message) -> Iterator[Message]:
    yield message
    if message.is_multipart():
        for part in message.get_payload():
            if isinstance(part, Message):
                yield from _parts(part)


def _fields(part: Message) -> list[dict[str, str]]:
    """The blocks of a message/delivery-status or message/feedback-report part, as dicts."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parses delivery-status into header blocks
        return [{k.lower(): str(v) for k, v in block.items()} for block in payload if isinstance(block, Message)]
    text = payload if isinstance(payload, str) else ""
    blocks = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text):
        block = message_from_bytes(chunk.strip().encode("utf-8", "replace") + b"\n", policy=policy.compat32)
        blocks.append({k.lower(): str(v) for k, v in block.items()})
    return blocks


def _address(value: str) -> str:
    """'rfc822; Kari@Example.no' -> 'kari@example.no'."""
    return value.split(";", 1)[-1].strip().strip("<>").lower()


def _token_in(message: Message) -> str | None:
    """The unsubscribe token in the returned original's headers (or text), if any."""
    for part in _parts(message):
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            found = _TOKEN.search(str(part))
            if found:
                return found[1]
    return None


def _text(value: object) -> str:
    """A header's text, decoded (a Subject in Norwegian comes as encoded words)."""
    if value is None:
        return ""
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(str(value))))
    except (UnicodeError, LookupError, ValueError):
        return str(value)


def _auto_reply(message: Message) -> bool:
    auto = str(message.get("Auto-Submitted") or "").lower()
    subject = _text(message.get("Subject")).lower()
    return (
        auto.startswith("auto-replied")
        or any(message.get(h) for h in ("X-Autoreply", "X-Autorespond"))
        or any(word in subject for word in ("out of office", "fravær", "autosvar", "automatic reply", "abwesenheit"))
    )


def classify(raw: bytes, settings: Settings) -> Report:
    """What a message in the bounce mailbox says (see the module's docstring)."""
    message = message_from_bytes(raw, policy=policy.compat32)
    verp = None
    for header in ("Delivered-To", "X-Original-To", "Envelope-To", "To", "X-Envelope-To"):
        for value in message.get_all(header) or []:
            verp = verp or read_envelope(settings, str(value))
    token = _token_in(message)
    content = message.get_content_type()
    report_type = (message.get_param("report-type") or "").lower() if content == "multipart/report" else ""
    if report_type == "feedback-report" or any(
        p.get_content_type() == "message/feedback-report" for p in _parts(message)
    ):
        fields = next((_fields(p) for p in _parts(message) if p.get_content_type() == "message/feedback-report"), [])
        first = fields[0] if fields else {}
        addresses = tuple(_address(first[k]) for k in ("original-rcpt-to",) if first.get(k))
        verp = verp or read_envelope(settings, str(message))  # the returned original's Return-Path
        return Report(COMPLAINT, addresses, "", verp, token, first.get("feedback-type", "abuse"))
    if report_type == "delivery-status" or any(
        p.get_content_type() == "message/delivery-status" for p in _parts(message)
    ):
        part = next(p for p in _parts(message) if p.get_content_type() == "message/delivery-status")
        kind, addresses, status, detail = NONE, [], "", ""
        per: list[tuple[str, str]] = []
        for block in _fields(part)[1:] or _fields(part):
            action = block.get("action", "").strip().lower()
            code = _STATUS.search(block.get("status", ""))
            recipient = block.get("original-recipient") or block.get("final-recipient") or ""  # what we sent to
            if not recipient:
                continue
            this = NONE
            if action == "failed" and (not code or code[1] == "5"):
                this = HARD
            elif action == "delayed" or (code and code[1] == "4") or action == "failed":
                this = SOFT
            if this == NONE:
                continue  # delivered, relayed, expanded: good news
            if kind != HARD:
                kind = this
            addresses.append(_address(recipient))
            per.append((_address(recipient), this))
            status = status or (code.group(0) if code else "")
            detail = detail or " ".join(block.get("diagnostic-code", "").split())[:300]
        return Report(kind, tuple(addresses), status, verp, token, detail, kinds=tuple(per))
    if _auto_reply(message):
        return Report(NONE, detail="auto-reply")
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(message)
    except Exception:  # a detector that chokes on an odd message: then it is not one we can read
        temporary, permanent = set(), set()

    def text(addresses: set) -> tuple[str, ...]:
        return tuple(sorted(a.decode("utf-8", "replace").lower() if isinstance(a, bytes) else str(a).lower()
                            for a in addresses))  # fmt: skip

    if permanent:
        return Report(HARD, text(permanent), "", verp, token)
    if temporary:
        return Report(SOFT, text(temporary), "", verp, token)
    if verp is not None and _text(message.get("From")).lower().startswith(("mailer-daemon", "postmaster")):
        return Report(HARD, (), "", verp, token, "a bounce to the VERP address in a form not recognised")
    return Report(NONE)


# --- the policy -------------------------------------------------------------------------------------


def _subscribers(conn: sqlite3.Connection, settings: Settings, report: Report) -> list[tuple[int, int | None]]:
    """(subscriber, delivery) pairs a report is about; without VERP, the delivery is the last one
    that went to the subscriber."""
    return [(subscriber, delivery if delivery is not None else _last_delivery(conn, subscriber))
            for subscriber, delivery in _named(conn, settings, report)]  # fmt: skip


def _last_delivery(conn: sqlite3.Connection, subscriber: int) -> int | None:
    return journal.last_sent_to(conn, subscriber)


def _named(conn: sqlite3.Connection, settings: Settings, report: Report) -> list[tuple[int, int | None]]:
    """(subscriber, delivery or None) pairs a report names."""
    if report.verp is not None:
        delivery, subscriber = report.verp
        if conn.execute("SELECT 1 FROM subscribers WHERE id = ?", (subscriber,)).fetchone():
            return [(subscriber, delivery)]
    if report.token:
        try:
            return [(read_token(settings, report.token, "unsubscribe"), None)]
        except SubscriberError:
            pass
    if settings.bounces_address and not report.trusted:
        # The bounce address is public (every issue's Return-Path): with VERP on, a report that
        # names nobody through a signed address or link is not believed, or anyone could
        # bounce or unsubscribe anyone by mailing a made-up report.
        return []
    found = []
    for address in report.addresses:
        row = conn.execute("SELECT id FROM subscribers WHERE email = ?", (address,)).fetchone()
        if row is not None:
            found.append((row[0], None))
    return found


def record(
    conn: sqlite3.Connection, settings: Settings, report: Report, key: str, replay: str | None = None
) -> int | None:
    """Apply a report once (``key``: the message's hash, or the service's id): keep the event,
    and mark the subscriber bounced or unsubscribed as the policy says. How many subscribers it
    touched, or None for a report seen before. ``replay`` (a webhook's MessageId or token) is
    remembered in the same transaction, and a call seen before raises Replayed: a call refused
    because the database was busy can come again. Call outside a transaction; commits."""
    moment = timestamp(now())
    touched = 0
    with conn:
        if replay is not None:
            conn.execute("DELETE FROM webhook_calls WHERE at < ?", (timestamp(now() - timedelta(hours=1)),))
            try:
                conn.execute("INSERT INTO webhook_calls (key, at) VALUES (?, ?)", (replay, moment))
            except sqlite3.IntegrityError:
                raise Replayed(replay) from None
        if report.kind == NONE or not key:
            return 0
        if conn.execute("SELECT 1 FROM bounce_reports WHERE key = ?", (key,)).fetchone():
            return None
        conn.execute("INSERT INTO bounce_reports (key, kind, seen_at) VALUES (?, ?, ?)", (key, report.kind, moment))
        own = {subscriber: kind for subscriber, kind in _kinds_by_subscriber(conn, report)}
        for subscriber, delivery in _subscribers(conn, settings, report):
            touched += 1
            kind = own.get(subscriber, report.kind)
            conn.execute(
                "INSERT INTO subscriber_events (subscriber, delivery, kind, status, detail, at) VALUES (?, ?, ?, ?, ?, ?)",
                (subscriber, delivery, kind, report.status, report.detail, moment),
            )
            # counted since the subscriber's last consent: a new signup starts afresh
            since = conn.execute("SELECT consent_at FROM subscribers WHERE id = ?", (subscriber,)).fetchone()[0] or ""
            if kind == COMPLAINT:
                conn.execute(
                    "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = ?, updated_at = ?"
                    " WHERE id = ? AND status IN ('pending', 'confirmed')",
                    (moment, moment, subscriber),
                )
            elif kind == HARD and _events(conn, subscriber, HARD, since) >= settings.bounces_hard_after:
                _bounced(conn, subscriber, moment)
            elif kind == SOFT:
                window = max(since, timestamp(now() - timedelta(days=settings.bounces_soft_days)))
                if _events(conn, subscriber, SOFT, window) >= settings.bounces_soft_limit:
                    _bounced(conn, subscriber, moment)
    return touched


def _kinds_by_subscriber(conn: sqlite3.Connection, report: Report) -> list[tuple[int, str]]:
    """A DSN's own kind for each recipient it names (a delayed one beside a failed one)."""
    found = []
    for address, kind in report.kinds:
        row = conn.execute("SELECT id FROM subscribers WHERE email = ?", (address,)).fetchone()
        if row is not None:
            found.append((row[0], kind))
    return found


def _events(conn: sqlite3.Connection, subscriber: int, kind: str, since: str) -> int:
    """How many events of ``kind`` a subscriber has had since ``since``."""
    return conn.execute(
        "SELECT COUNT(*) FROM subscriber_events WHERE subscriber = ? AND kind = ? AND at >= ?",
        (subscriber, kind, since),
    ).fetchone()[0]


def _bounced(conn: sqlite3.Connection, subscriber: int, moment: str) -> None:
    conn.execute(
        "UPDATE subscribers SET status = 'bounced', updated_at = ? WHERE id = ? AND status = 'confirmed'",
        (moment, subscriber),
    )


# --- fetching ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    """What one ``fetch`` did: messages read, reports by kind, subscribers touched, left alone."""

    read: int
    kinds: dict[str, int]
    subscribers: int
    left: int


class _Maildir:
    """A Maildir on this machine (Postfix or Dovecot deliver there)."""

    def __init__(self, folder: Path) -> None:
        if not (folder / "cur").is_dir() or not (folder / "new").is_dir():
            raise ConfigError(
                _("bounces.mailbox {folder} is not a Maildir (it needs cur/ and new/); check the path.", folder=folder)
            )
        try:
            self.box = mailbox.Maildir(folder, factory=None, create=False)
            done = folder / f".{DONE_FOLDER}"  # a Maildir++ folder; made whole even if a run was killed making it
            for part in ("tmp", "new", "cur"):
                (done / part).mkdir(parents=True, exist_ok=True)
            (done / "maildirfolder").touch()
            self.done = mailbox.Maildir(done, factory=None, create=False)
        except OSError as exc:
            raise ConfigError(
                _("cannot read the bounce mailbox {folder} ({reason}).", folder=folder, reason=os_reason(exc))
            ) from exc

    def messages(self) -> Iterator[tuple[str, bytes]]:
        for key in list(self.box.iterkeys()):
            try:
                yield key, self.box.get_bytes(key)
            except (KeyError, OSError):
                continue  # taken meanwhile (a mail program, another reader)

    def handled(self, key: str, raw: bytes) -> None:
        self.done.add(raw)  # recorded first: a crash here leaves a copy, never a lost or double count
        self.box.discard(key)

    def close(self) -> None:
        pass


class _Imap:
    """A mailbox over IMAP with TLS: handled reports are moved to the folder 'newsletter-done'."""

    def __init__(self, settings: Settings, url: SplitResult) -> None:
        import imaplib

        self.folder = unquote(url.path.strip("/")) or "INBOX"
        try:
            self.client = imaplib.IMAP4_SSL(url.hostname, url.port or 993, ssl_context=_tls(settings), timeout=30)
            self.client.login(unquote(url.username or ""), _password(settings))
            self.client.create(DONE_FOLDER)  # NO when it exists: fine
            status, _data = self.client.select(_quoted(self.folder))
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ConfigError(_mailbox_error(url, exc)) from exc
        if status != "OK":
            raise ConfigError(_("the IMAP folder {folder} does not exist; check bounces.mailbox.", folder=self.folder))
        self.can = self._capabilities()

    def _capabilities(self) -> set[str]:
        """What the server offers once logged in. imaplib keeps the list it got before the login,
        where servers such as Dovecot and Gmail name neither MOVE nor UIDPLUS."""
        import imaplib

        try:
            _status, data = self.client.capability()
        except (OSError, imaplib.IMAP4.error):
            data = []
        words = b" ".join(item for item in data if isinstance(item, bytes)).decode("ascii", "replace")
        return {word.upper() for word in words.split()} | set(self.client.capabilities)

    def messages(self) -> Iterator[tuple[str, bytes]]:
        # UNDELETED: a report handled on a server without MOVE or UIDPLUS stays, flagged as
        # deleted, until a mail program removes it; and what a person deleted is theirs.
        _status, data = self.client.uid("SEARCH", None, "UNDELETED")
        for uid in (data[0] or b"").split():
            _status, parts = self.client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((part[1] for part in parts if isinstance(part, tuple)), None)
            if raw is not None:
                yield uid.decode(), raw

    def handled(self, key: str, raw: bytes) -> None:
        status, data = self.client.uid("MOVE" if "MOVE" in self.can else "COPY", key, DONE_FOLDER)
        if status != "OK":  # recorded already; but left here, it would be read again at every run
            answer = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            raise ConfigError(
                _(
                    "the bounce mailbox does not let handled reports be moved to the folder {folder} ({answer}); create that folder in the mailbox (some servers want it as INBOX.{folder}).",
                    folder=DONE_FOLDER,
                    answer=answer or status,
                )
            )
        if "MOVE" in self.can:
            return
        self.client.uid("STORE", key, "+FLAGS", "(\\Deleted)")
        if "UIDPLUS" in self.can:  # this message alone: a plain EXPUNGE would also take what people marked deleted
            self.client.uid("EXPUNGE", key)

    def close(self) -> None:
        import imaplib

        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            self.client.logout()


class _Pop3:
    """A mailbox over POP3 with TLS: handled reports are deleted when the session ends well
    (a session that breaks off deletes nothing, and the next run finds them recorded)."""

    def __init__(self, settings: Settings, url: SplitResult) -> None:
        import poplib

        try:
            self.client = poplib.POP3_SSL(url.hostname, url.port or 995, context=_tls(settings), timeout=30)
            self.client.user(unquote(url.username or ""))
            self.client.pass_(_password(settings))
        except (OSError, poplib.error_proto) as exc:
            raise ConfigError(_mailbox_error(url, exc)) from exc

    def messages(self) -> Iterator[tuple[str, bytes]]:
        count, _size = self.client.stat()
        for number in range(1, count + 1):
            _response, lines, _octets = self.client.retr(number)
            yield str(number), b"\r\n".join(lines) + b"\r\n"

    def handled(self, key: str, raw: bytes) -> None:
        self.client.dele(int(key))

    def close(self) -> None:
        import poplib

        with contextlib.suppress(OSError, poplib.error_proto):
            self.client.quit()  # the deletions take effect here


def _tls(settings: Settings) -> Any:
    import ssl

    context = ssl.create_default_context()  # the system's authorities ...
    if settings.bounces_ca_file:
        context.load_verify_locations(cafile=str(settings.bounces_ca_file))  # ... and the extra ones
    return context


def _password(settings: Settings) -> str:
    if not settings.bounces_password:
        raise ConfigError(_("NEWSLETTER_BOUNCES_PASSWORD is not set; put the bounce mailbox's password in .env."))
    return settings.bounces_password


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox_error(url: SplitResult, exc: Exception) -> str:
    reason = os_reason(exc) if isinstance(exc, OSError) and exc.errno else " ".join(str(exc).split())
    return _(
        "cannot read the bounce mailbox at {host} ({reason}); check bounces.mailbox, NEWSLETTER_BOUNCES_PASSWORD and bounces.ca_file.",
        host=url.hostname,
        reason=reason,
    )


def _source(settings: Settings) -> Any:
    place = settings.bounces_mailbox
    if not place:
        raise ConfigError(
            _("bounces.mailbox is not set; set it to the Maildir the bounce address delivers to, e.g. NEWSLETTER_BOUNCES_MAILBOX=/var/mail/nyhetsbrev-bounce/")
        )  # fmt: skip
    url = urlsplit(place)
    if url.scheme == "imaps":
        return _Imap(settings, url)
    if url.scheme == "pop3s":
        return _Pop3(settings, url)
    if url.scheme in ("imap", "pop3", "pop"):
        raise ConfigError(
            _("bounces.mailbox {place!r}: only imaps:// and pop3s:// (with TLS) are used; the password must not travel in clear text.", place=place)
        )  # fmt: skip
    return _Maildir(Path(place).expanduser())


def fetch(settings: Settings, conn: sqlite3.Connection) -> FetchResult:
    """Read the bounce mailbox (bounces.mailbox: a Maildir path, imaps://user@host/FOLDER or
    pop3s://user@host) once: every report is recorded and then moved to 'newsletter-done' (or
    deleted, over POP3); other messages are left where they are. One run at a time (a lock),
    so cron may start it every few minutes."""
    kinds: dict[str, int] = {}
    read = touched = left = 0
    with exclusive(
        settings.database,
        "bounces-fetch",
        folder=settings.build_dir,
        busy=_("'newsletter bounces fetch' is already running."),
    ):
        source = _source(settings)
        try:
            for key, raw in source.messages():
                read += 1
                report = classify(raw, settings)
                if report.kind == NONE:
                    left += 1
                    continue
                applied = record(conn, settings, report, hashlib.sha256(raw).hexdigest())
                if applied is not None:  # not a report recorded before a crash: count it now
                    touched += applied
                    kinds[report.kind] = kinds.get(report.kind, 0) + 1
                source.handled(key, raw)  # only after the commit
        finally:
            source.close()
    return FetchResult(read, kinds, touched, left)


def events(conn: sqlite3.Connection, since: str | None = None) -> list[sqlite3.Row]:
    """The bounce and complaint events, newest first, with the address and the issue."""
    return conn.execute(
        "SELECT e.*, s.email, d.issue FROM subscriber_events e JOIN subscribers s ON s.id = e.subscriber"
        " LEFT JOIN deliveries d ON d.id = e.delivery WHERE e.at >= ? ORDER BY e.at DESC, e.id DESC",
        (since or "",),
    ).fetchall()
