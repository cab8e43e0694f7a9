"""One exception family for everything a user can get wrong, and the findings a stage reports.

Core code raises these with the file, line, field or address involved; ``cli.py``
turns them into a one-line ``Error: ...`` and exit code 1. A ``Finding`` is a problem a stage
found and went on past (a warning, or an error that the pre-send check reports with all the
others), as data rather than text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .language import N_, translate

ERROR, WARNING, INFO = N_("error"), N_("warning"), N_("info")


@dataclass(frozen=True)
class Finding:
    """One thing a stage found: its level ('error', 'warning' or 'info'), where, and what."""

    level: str
    where: str
    message: str

    @property
    def line(self) -> str:
        """The finding as 'check' prints it ('error: where: what', the level in the project's language)."""
        return f"{translate(self.level)}: {self.where}: {self.message}"

    @property
    def text(self) -> str:
        """'where: message', as a one-line error or warning says it."""
        return f"{self.where}: {self.message}" if self.where else self.message


class NewsletterError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(NewsletterError):
    """newsletter.toml, .env or the environment holds a bad or missing setting."""


class SecretKeyError(ConfigError):
    """The key that signs the links in emails is missing, or is not the one the links were signed with."""


class NoTransport(ConfigError):
    """No transport is configured, or the one configured cannot be right (SMTP settings gone
    after SMTP was used): a refusal, never a quiet switch to the outbox."""


class ContentError(NewsletterError):
    """An issue folder, its Markdown or its front matter is wrong: ``where`` (file:line) and what."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where, self.detail = where, message

    @property
    def finding(self) -> Finding:
        """The error as a finding, for a check that goes on past it."""
        return Finding(ERROR, self.where or "", self.detail)


class TemplateError(NewsletterError):
    """A Jinja2 template or the MJML it produces is wrong."""


class ProjectError(NewsletterError):
    """A project or issue folder cannot be found or created."""


class StoreError(NewsletterError):
    """The database cannot be opened, migrated or written."""


def where(path: Path | str, line: int | None = None) -> str:
    """Format a location as ``path`` or ``path:line`` for error messages."""
    return f"{path}:{line}" if line else str(path)


class FeedError(NewsletterError):
    """A news feed cannot be fetched or read, or a curation command names a wrong item."""


class EmissionsError(NewsletterError):
    """An emissions file, release, year or municipality is wrong or missing."""


class SubscriberError(NewsletterError):
    """A subscriber's address, details, import file, segment or link is wrong."""


class SendError(NewsletterError):
    """A send cannot start or go on: no transport, a refused gate, a delivery in another state."""


class GateError(SendError):
    """The pre-send check found errors; ``findings`` holds them."""

    def __init__(self, message: str, findings: tuple[Finding, ...]) -> None:
        super().__init__(message)
        self.findings = findings


class TransportError(SendError):
    """A message could not be handed to the transport."""


class ConnectFailed(TransportError):
    """No connection to the SMTP server (refused, login, certificate), or the server refuses our
    sender address: stop the run, keep everyone pending, blame no recipient."""


class AfterData(TransportError):
    """The connection failed after the whole message was handed over: it may have been delivered."""


class Undeliverable(TransportError):
    """This recipient's address cannot be carried by this transport (e.g. æøå before the @ and a
    server without SMTPUTF8): that recipient fails permanently, the rest go on."""


class NoSmtputf8(Undeliverable):
    """An address with æøå before the @, and a server without SMTPUTF8."""


class ScheduleError(NewsletterError):
    """A schedule cannot be made, changed or run."""


class UnsafeFile(NewsletterError):
    """A file is too large, or unpacks to too much, to be read safely (a 'zip bomb', a line of a
    gigabyte): refused before it can fill the memory."""


class UnsupportedSheet(Exception):
    """The workbook has a shape the streaming reader does not handle; use calamine instead."""


class BusyError(NewsletterError):
    """Someone else holds what this run needs (a lock): try again when they are done."""


# --- refusals the public pages answer themselves (never shown as a command's error) -----------------


class ChallengeRefused(Exception):
    """A proof-of-work challenge that does not count: ``reason`` is 'missing', 'invalid',
    'expired' or 'used' (guard.spend_challenge)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Replayed(Exception):
    """A webhook call seen before: its replay key is recorded (bounces.record)."""


class Refused(Exception):
    """A webhook call that is not believed: unsigned, badly signed, too old, replayed, or for
    another topic. The message says which (for the log; the caller gets 403)."""
