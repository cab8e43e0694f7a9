"""Where messages go: an SMTP server, or the local outbox (a Maildir) when the project chose it.

Bytes in, no SQL. ``choose`` picks the transport from the settings and refuses rather than
guess: no transport configured, SMTP settings that went missing after SMTP was used, or two
transports at once are each a one-line refusal. ``Connection`` is one persistent connection;
``mail_address`` decides how an address travels (ASCII, IDNA A-label domain, or SMTPUTF8), so
that an address with æøå is that recipient's business and never stops a send.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
import socket
import ssl
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from .addresses import check_address
from .config import Settings
from .errors import (
    AfterData,
    ConnectFailed,
    NewsletterError,
    NoSmtputf8,
    NoTransport,
    TransportError,
    Undeliverable,
)
from .language import N_, _, current, os_reason, translate

TEMPORARY = "temporary"
PERMANENT = "permanent"


@dataclass(frozen=True)
class Outbox:
    """Messages written to a Maildir instead of being sent (open it with any mail program)."""

    path: Path
    kind = "outbox"

    def describe(self) -> str:
        return _("the local outbox {path} (nothing leaves this machine)", path=self.path)

    @property
    def target(self) -> str:
        """What the delivery journal records as its transport."""
        return "outbox"

    def store(self, raw: bytes) -> str:
        """Store a message given as bytes; return the file it went to. Its name ends in .eml, so
        a double click opens it in the mail program (Windows and macOS go by the ending); mail
        readers of a Maildir take any name."""
        try:
            box = mailbox.Maildir(self.path, create=True)
            key = box.add(raw)
            stored = self.path / "new" / key
            stored.rename(stored.with_name(f"{key}.eml"))
        except OSError as exc:
            raise ConnectFailed(
                _(
                    "cannot write to the outbox {path} ({strerror}); check paths.outbox.",
                    path=self.path,
                    strerror=os_reason(exc),
                )
            ) from exc
        return str(self.path / "new" / f"{key}.eml")


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
    kind = "smtp"

    def describe(self) -> str:
        return f"SMTP {self.host}:{self.port} ({self.security})"

    @property
    def target(self) -> str:
        return f"smtp {self.host}:{self.port}"

    def connect(self) -> smtplib.SMTP:
        """An open, authenticated connection. Certificates are always verified."""
        try:
            context = ssl.create_default_context()  # the system's authorities, and smtp.ca_file's besides
            if self.ca_file:
                context.load_verify_locations(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(
                _("cannot use the CA file {ca_file} ({exc}); check smtp.ca_file.", ca_file=self.ca_file, exc=exc)
            ) from exc
        client: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
        except smtplib.SMTPNotSupportedError as exc:
            _close(client)
            if "AUTH" in str(exc):
                advice = _(
                    "it offers no login here: leave NEWSLETTER_SMTP_USERNAME empty, or use NEWSLETTER_SMTP_SECURITY starttls or tls (servers often offer login only over TLS)"
                )
            else:
                advice = _(
                    "it does not offer STARTTLS: set NEWSLETTER_SMTP_SECURITY to tls (usually port 465), or to none only for a server on this machine or a trusted network"
                )
            raise ConnectFailed(
                _("the SMTP server {host}:{port}: {advice}.", host=self.host, port=self.port, advice=advice)
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            _close(client)
            raise ConnectFailed(
                _(
                    "the SMTP server {host} refused the login ({smtp_code}); check NEWSLETTER_SMTP_USERNAME and _PASSWORD.",
                    host=self.host,
                    smtp_code=exc.smtp_code,
                )
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            _close(client)
            if isinstance(exc, socket.gaierror):
                why = _("the name {host} was not found; check NEWSLETTER_SMTP_HOST", host=self.host)
            elif isinstance(exc, ConnectionRefusedError):
                why = _("nothing answers on port {port}; check NEWSLETTER_SMTP_PORT (587 with starttls, 465 with tls)",
                        port=self.port)  # fmt: skip
            elif isinstance(exc, TimeoutError | socket.timeout):
                why = _("no answer within {seconds} s; check NEWSLETTER_SMTP_HOST and NEWSLETTER_SMTP_PORT, or ask "
                        "whether a firewall stops it", seconds=self.timeout)  # fmt: skip
            elif isinstance(exc, ssl.SSLError):
                why = _tls_reason(exc, self.port)
            elif isinstance(exc, smtplib.SMTPServerDisconnected):
                why = _("the server closed the connection before it was ready; check NEWSLETTER_SMTP_SECURITY and "
                        "NEWSLETTER_SMTP_PORT (starttls with port 587, tls with port 465)")  # fmt: skip
            else:
                why = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            raise ConnectFailed(
                _("cannot connect to the SMTP server {host}:{port}: {why}.", host=self.host, port=self.port, why=why)
            ) from exc
        return client


Transport = Outbox | SMTP


def _tls_reason(exc: ssl.SSLError, port: int) -> str:
    """Why a TLS connection failed, in plain words and with the setting to check."""
    text = str(exc)
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return _("the server does not speak TLS on port {port}; with NEWSLETTER_SMTP_SECURITY tls use port 465, with starttls port 587", port=port)  # fmt: skip
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or ""
        if "self-signed" in detail or "self signed" in detail or "unable to get local issuer" in detail:
            why = _(
                "it is signed by an authority this machine does not know; give that authority's certificate in smtp.ca_file"
            )
        elif "expired" in detail:
            why = _("it has expired; ask whoever runs the server to renew it")
        elif "Hostname mismatch" in detail or "hostname" in detail.lower():
            why = _("it is made for another name; use the name on the certificate in NEWSLETTER_SMTP_HOST")
        else:
            why = detail or text
        return _("the server's certificate was not accepted: {why}", why=why)
    return _("the secure connection failed ({exc}); check NEWSLETTER_SMTP_SECURITY (starttls with port 587, tls with port 465) and smtp.ca_file", exc=exc)  # fmt: skip


def _close(client: smtplib.SMTP | None) -> None:
    if client is None:
        return
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def choose(settings: Settings, smtp_used: list[tuple[str, str]] = ()) -> Transport:  # type: ignore[assignment]
    """The transport the settings name; a refusal (NoTransport) rather than a guess.

    ``smtp_used`` is what the project has sent through before (``store.recall(conn, 'smtp')``):
    if it ever used SMTP, the outbox is never chosen in its place."""
    kind = settings.send_transport
    if kind is None:
        if not settings.smtp_host:
            raise NoTransport(
                _(
                    'no transport is configured: set NEWSLETTER_SMTP_HOST (and the other smtp settings, in .env) to send by SMTP, or sending.transport = "outbox" in newsletter.toml to keep messages in the local outbox.'
                )
            )
        kind = "smtp"
    if kind == "smtp":
        if not settings.smtp_host:
            raise NoTransport(
                _(
                    "sending.transport is smtp, but no SMTP server is set; set NEWSLETTER_SMTP_HOST (in .env) or restore .env from your backup."
                )
            )
        return SMTP(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_username,
            settings.smtp_password,
            settings.smtp_timeout,
            settings.smtp_ca_file,
        )
    if settings.smtp_host:
        raise NoTransport(
            _(
                "sending.transport is outbox, but an SMTP server is set too ({smtp_host}); set NEWSLETTER_SENDING_TRANSPORT=smtp to send by SMTP, or remove NEWSLETTER_SMTP_HOST to use the outbox.",
                smtp_host=settings.smtp_host,
            )
        )
    if smtp_used:
        server, since = smtp_used[-1]
        raise NoTransport(
            _(
                "this project has sent by SMTP ({value}, first on {since}), but no SMTP server is set now (was .env moved or lost?); restore .env from your backup or set NEWSLETTER_SMTP_HOST. Nothing was sent to the outbox in its place.",
                value=server.removeprefix("smtp "),
                since=since[:10],
            )
        )
    return Outbox(settings.outbox_dir)


# What email-validator says is wrong with an address, in words the project's language has: its
# own sentence where it is common, a plain "it has the wrong form" for the rare rest in Norwegian.
_ADDRESS_PROBLEMS = (
    ("An email address must have an @-sign", N_("it has no @")),
    ("There must be something before the @-sign", N_("there is nothing before the @")),
    ("There must be something after the @-sign", N_("there is nothing after the @")),
    ("It should have a period", N_("the part after the @ has no period, as in example.no")),
    (
        "not within a valid top-level domain",
        N_("the part after the @ does not end in a real domain such as .no or .com"),
    ),
    ("special-use or reserved name", N_("the part after the @ is a reserved name that cannot receive e-mail")),
    ("two periods in a row", N_("it has two periods in a row")),
    ("period", N_("a period is in the wrong place")),
    ("hyphen", N_("a hyphen is in the wrong place")),
    ("too long", N_("it is too long")),
    ("Internationalized characters before the @-sign", N_("letters such as æøå before the @ are not accepted here")),
    ("at-sign", N_("it has an unusual @ character; type the @ again")),
    ("invalid characters before the @-sign", N_("it has characters before the @ that an address cannot have")),
    ("after the @-sign contains invalid characters", N_("it has characters after the @ that an address cannot have")),
    ("character", N_("it has characters that an address cannot have")),
    ("anything after the email address", N_("there is more than the address; give the address alone")),
    ("display name", N_("there is more than the address; give the address alone")),
)


# How servers say that they want a login first (530, or 5.7.0); not '5.7.1 sender not
# authorised', which is about the sender address.
_LOGIN_WANTED = re.compile(r"authentication required|must (?:first )?authenticate|not authenticated|\b5\.7\.0\b", re.I)


def address_problem(exc: Exception) -> str:
    """What is wrong with an address, from email-validator's English sentence."""
    text = str(exc)
    for clue, reason in _ADDRESS_PROBLEMS:
        if clue in text:
            return translate(reason)
    return text if current() == "en" else _("it has the wrong form")


def mail_address(email: str, smtputf8: bool) -> tuple[str, bool]:
    """How ``email`` travels: (the address to use in RCPT TO and To, whether it needs SMTPUTF8).

    ASCII goes as it is. With æøå, a server that offers SMTPUTF8 gets the address as written;
    one that does not gets the domain as an IDNA A-label (kari@xn--blbr-roah.no), which only
    works when the part before the @ is ASCII: otherwise Undeliverable names the reason."""
    try:
        check_address(email)
    except NewsletterError as exc:
        raise Undeliverable(_("the message could not be made: {exc}", exc=exc)) from None
    if email.isascii():
        return email, False
    if smtputf8:
        return email, True
    from email_validator import EmailNotValidError, validate_email

    try:
        ascii_email = validate_email(email, check_deliverability=False).ascii_email
    except EmailNotValidError as exc:
        raise Undeliverable(
            _("{email!r} is not a valid e-mail address ({reason}).", email=email, reason=address_problem(exc))
        ) from None
    if ascii_email is None:
        raise NoSmtputf8(
            _(
                "the SMTP server does not accept addresses with letters such as æøå before the @ (it lacks SMTPUTF8), so {email} cannot be reached through it.",
                email=email,
            )
        )
    return ascii_email, False


class Connection:
    """One persistent connection, opened on first use and again after any failure."""

    def __init__(self, via: Transport) -> None:
        self.via = via
        self.client: smtplib.SMTP | None = None

    def open(self) -> None:
        """Connect (and log in) if not connected; ConnectFailed if that fails."""
        if isinstance(self.via, SMTP) and self.client is None:
            client = self.via.connect()
            try:
                client.ehlo_or_helo_if_needed()
            except (OSError, smtplib.SMTPException) as exc:
                _close(client)
                raise ConnectFailed(
                    _("the SMTP server {host} did not greet us ({exc}).", host=self.via.host, exc=exc)
                ) from exc
            self.client = client

    @property
    def smtputf8(self) -> bool:
        """Whether addresses and headers may be UTF-8 (the outbox: always; SMTP: if offered)."""
        if isinstance(self.via, Outbox):
            return True
        self.open()
        return bool(self.client and self.client.has_extn("smtputf8"))

    def send(self, sender: str, recipient: str, raw: bytes, utf8: bool = False) -> str:
        """Hand over one message; return where it went. SMTP errors are raised as smtplib's own
        (``classify`` reads them), except ConnectFailed (stop the run) and AfterData (maybe sent)."""
        if isinstance(self.via, Outbox):
            return self.via.store(raw)
        self.open()
        try:
            self._transaction(sender, recipient, raw, utf8)
        except smtplib.SMTPRecipientsRefused:
            self.reset()  # the session is still usable, but RSET keeps it clean
            raise
        except (smtplib.SMTPServerDisconnected, OSError, AfterData):
            self.close()
            raise
        except smtplib.SMTPResponseException:
            self.reset()
            raise
        return self.via.describe()

    def _transaction(self, sender: str, recipient: str, raw: bytes, utf8: bool) -> None:
        """MAIL, RCPT and DATA as smtplib.sendmail does them, but pipelined where the server
        offers it (RFC 2920: the three commands in one write, their replies read together, so a
        message costs two round trips instead of four), and with the dot-stuffing done by a
        literal regular expression (smtplib's multi-line one costs as much as building the message,
        and bytes.replace three times what this does: every line end is a partial match)."""
        client = self.client
        assert client is not None
        options = ""
        if utf8:
            options = " SMTPUTF8" + (" BODY=8BITMIME" if client.has_extn("8bitmime") else "")
        client.command_encoding = "utf-8" if utf8 else "ascii"
        # Both addresses are plain (check_address, mail_address, the settings' checks): written
        # as they are, without smtplib.quoteaddr's parsing (a tenth of a message's cost).
        mail = f"mail FROM:<{sender}>{options}\r\n"
        rcpt = f"rcpt TO:<{recipient}>\r\n"
        replies: list[tuple[int, bytes]] = []
        pipelined = client.has_extn("pipelining")
        try:
            if pipelined:
                client.send(mail + rcpt + "data\r\n")
            for command in (mail, rcpt, "data\r\n"):
                if not pipelined:
                    client.send(command)
                replies.append(client.getreply())  # pipelined: every reply is read, whatever they say
                if not pipelined and replies[-1][0] not in (250, 251, 354):
                    break  # one at a time: nothing more is asked after a refusal
        except (smtplib.SMTPServerDisconnected, OSError):
            if all(code in (250, 251, 354) for code, _reply in replies):
                raise
            # The server said no and hung up (a 421 or a 5xx, then closed): its answer counts.
            _close(client)
            self.client = None
        (code, reply), rest = replies[0], replies[1:]
        if self.client and rest[-1:] and rest[-1][0] == 354 and (code != 250 or rest[0][0] not in (250, 251)):
            with suppress(smtplib.SMTPException, OSError):  # the refusal below is what counts
                client.send(".\r\n")  # DATA was accepted after a refusal: an empty message ends it (RFC 2920 3.1)
                client.getreply()
        if code != 250:
            text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
            if code == 530 or (500 <= code < 600 and _LOGIN_WANTED.search(text)):  # a login is wanted first
                raise ConnectFailed(
                    _(
                        "the SMTP server {host} wants a login before it sends ({code} {text}); set "
                        "NEWSLETTER_SMTP_USERNAME and NEWSLETTER_SMTP_PASSWORD in .env, with "
                        "NEWSLETTER_SMTP_SECURITY starttls (port 587) or tls (port 465).",
                        host=self.via.host,
                        code=code,
                        text=text,
                    )
                )
            if 500 <= code < 600:  # our sender address is refused: no recipient's fault
                raise ConnectFailed(
                    _(
                        "the SMTP server refused the sender {sender} ({code} {text}); check sender.address.",
                        sender=sender,
                        code=code,
                        text=text,
                    )
                )
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = rest[0]
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        code, reply = rest[1]
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        body = _LINE_DOT.sub(b"\r\n..", raw)
        if body.startswith(b"."):
            body = b"." + body
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        client.send(body + b".\r\n")
        try:
            code, reply = client.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise AfterData(_("no answer after the message was sent ({exc})", exc=exc)) from exc
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)

    def reset(self) -> None:
        try:
            if self.client is not None:
                self.client.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        _close(self.client)
        self.client = None


_LINE_DOT = re.compile(rb"\r\n\.")  # a line that starts with a dot: stuffed with a second one (RFC 5321 4.5.2)
SMTPUTF8_SEEN = "smtputf8"  # store.note: '<transport target> yes|no', what the server said last


def smtputf8_fact(via: Transport, offered: bool) -> str:
    """What store.note keeps about the server's SMTPUTF8."""
    return f"{via.target} {'yes' if offered else 'no'}"


def classify(exc: BaseException) -> tuple[str, str]:
    """(TEMPORARY | PERMANENT, the server's words) for an exception raised while sending."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return (PERMANENT if 500 <= code < 600 else TEMPORARY), f"{code} {text}"
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return (PERMANENT if 500 <= exc.smtp_code < 600 else TEMPORARY), f"{exc.smtp_code} {text}"
    if isinstance(exc, Undeliverable):
        return PERMANENT, str(exc)
    if isinstance(exc, TransportError):
        return TEMPORARY, str(exc)
    return TEMPORARY, f"{type(exc).__name__}: {exc}"  # timeouts, dropped connections, refused connections
