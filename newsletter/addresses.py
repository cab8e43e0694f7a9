"""The one check every address written into a header passes (kept apart from transport.py, so
that building a message does not import smtplib and ssl)."""

from __future__ import annotations

from .errors import NewsletterError
from .language import _

_NOT_IN_ADDRESS = set('\r\n\t "(),:;<>[\\]') | {chr(c) for c in range(32)} | {"\x7f"}


def check_address(email: str) -> str:
    """``email`` if it is a plain address that can be written into a header (what
    subscribers.normalize_email accepts: no quoted local part, no comments, nothing that could
    end a header); else NewsletterError."""
    local, _at, domain = email.rpartition("@")
    if not local or not domain or "@" in local or any(c in _NOT_IN_ADDRESS for c in email):
        raise NewsletterError(_("recipient address {email!r} is not a plain e-mail address; correct it.", email=email))
    return email
