"""Transports: the local outbox (a Maildir in the project) and SMTP.

The outbox is the default when no SMTP host is set, so everything works on a fresh machine
without sending real mail. This module sends single messages (confirmation emails); the
delivery job for whole issues builds on it.
"""

from __future__ import annotations

import mailbox
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from .config import Settings
from .errors import NewsletterError


class SendError(NewsletterError):
    """A message could not be handed to the transport."""


@dataclass(frozen=True)
class Outbox:
    """Messages written to a Maildir instead of being sent (open it with any mail program)."""

    path: Path

    def send(self, message: EmailMessage) -> str:
        """Store the message; return where it went."""
        try:
            box = mailbox.Maildir(self.path, create=True)
            key = box.add(message)
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
    context: ssl.SSLContext | None = None

    def connect(self) -> smtplib.SMTP:
        """An open, authenticated connection."""
        context = self.context or ssl.create_default_context()
        try:
            if self.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
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
        )
    return Outbox(settings.outbox_dir)
