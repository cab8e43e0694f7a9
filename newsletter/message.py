"""The MIME message for one recipient, and its headers.

One message per recipient, built from the issue's compiled skeletons (MJML is never
compiled again here). Subject and names with æøå are RFC 2047-encoded by the email
package; names are stripped of control characters so they cannot add headers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from .compose import Recipient, clean_name, recipient_values
from .config import Settings
from .errors import NewsletterError
from .render import RenderedIssue


def _address(name: str, email: str) -> Address:
    local, _, domain = email.rpartition("@")
    if not local or not domain or any(c in email for c in "\r\n<>\"' ,;"):
        raise NewsletterError(f"recipient address {email!r} is not a plain e-mail address; correct it.")
    return Address(display_name=clean_name(name), username=local, domain=domain)


def build_message(
    settings: Settings,
    rendered: RenderedIssue,
    recipient: Recipient,
    strings: dict[str, str],
    *,
    subject_prefix: str = "",
    now: datetime | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """A complete multipart/alternative message (text first, then HTML) for one recipient."""
    values = recipient_values(settings, strings, recipient, rendered.municipal)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=settings.sender_name, addr_spec=settings.sender_address)
    msg["To"] = _address(recipient.name, recipient.email)
    msg["Subject"] = clean_name(subject_prefix + rendered.subject)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain=settings.list_domain)
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["List-Id"] = f"{clean_name(settings.name)} <{settings.list_id}>"
    unsubscribe = [f"<{values['unsubscribe_url']}>"]
    if settings.unsubscribe_mailto:
        unsubscribe.append(f"<mailto:{settings.unsubscribe_mailto}?subject=unsubscribe>")
    msg["List-Unsubscribe"] = ", ".join(unsubscribe)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Content-Language"] = rendered.language
    msg.set_content(rendered.text.fill(values), subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html.fill(values), subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def confirmation_message(
    settings: Settings, strings: dict[str, str], language: str, email: str, name: str, url: str
) -> EmailMessage:
    """The double opt-in email: one link that confirms the subscription."""
    from markupsafe import escape

    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=settings.sender_name, addr_spec=settings.sender_address)
    msg["To"] = _address(name, email)
    msg["Subject"] = clean_name(strings["confirm_subject"].format(name=settings.name))
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=settings.list_domain)
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["Auto-Submitted"] = "auto-generated"
    text = strings["confirm_text"].format(name=settings.name, url=url)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    paragraphs = "".join(
        f"<p>{escape(p)}</p>"
        if p != url
        else f'<p><a href="{escape(url)}" style="display:inline-block;background:#0b3a5b;color:#ffffff;padding:12px 20px;'
        f'border-radius:4px;font-weight:bold;text-decoration:none;">{escape(strings["confirm_button"])}</a></p>'
        for p in text.split("\n\n")
    )
    html = (
        f'<!doctype html><html lang="{language}">'
        f'<body style="font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:1.5;color:#1f2933;">'
        f"{paragraphs}</body></html>"
    )
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


DKIM_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type",
)  # fmt: skip


def dkim_key(settings: Settings) -> bytes | None:
    """The DKIM private key, read once per send; None when DKIM is not configured."""
    if not settings.dkim_key_file:
        return None
    try:
        key = settings.dkim_key_file.read_bytes()
    except OSError as exc:
        raise NewsletterError(
            f"{settings.dkim_key_file}: cannot read the DKIM key ({exc.strerror}); check dkim.key_file."
        ) from exc
    if b"PRIVATE KEY" not in key:
        raise NewsletterError(f"{settings.dkim_key_file}: not a PEM private key; check dkim.key_file.")
    return key


def wire_bytes(settings: Settings, message: EmailMessage, key: bytes | None) -> bytes:
    """The message as sent: CRLF line ends, and a DKIM-Signature on top when a key is given.

    The signature covers List-Unsubscribe and List-Unsubscribe-Post, as Gmail and Yahoo require."""
    raw = message.as_bytes(policy=policy.SMTP)
    if key is None:
        return raw
    import dkim

    present = {name.lower().encode() for name in message}
    signature = dkim.sign(
        raw,
        settings.dkim_selector.encode(),  # type: ignore[union-attr]
        settings.dkim_domain.encode(),  # type: ignore[union-attr]
        key,
        include_headers=[h for h in DKIM_HEADERS if h in present],
    )
    return signature + raw
