"""The welcome email: sent once to a subscriber who confirms on the web, in their language.

It says what the newsletter is and how often it comes, links the newest issue in the archive,
and gives the preferences and unsubscribe links (with List-Unsubscribe, as an issue has). It is
MJML like the issue (``templates/email/welcome.mjml.j2`` and ``welcome.txt.j2``), with the
texts of ``templates/i18n/<lang>.toml`` (``welcome_*``). ``claim`` makes it once per subscriber,
ever: ``welcomed_at`` is set before it goes, and cleared again only when it could not go.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from .addresses import check_address
from .archive import archived
from .clock import now, timestamp
from .compose import clean_name, preferences_url, unsubscribe_url
from .config import Settings
from .i18n import format_date
from .message import list_headers, subject_value, to_header
from .render import compile_mjml, environment
from .subscribers import Subscriber, make_token


def claim(conn: sqlite3.Connection, subscriber_id: int) -> bool:
    """Whether this subscriber is to be welcomed now: confirmed and never welcomed. Marks them
    welcomed (so two confirmations at once make one welcome). Commits."""
    with conn:
        done = conn.execute(
            "UPDATE subscribers SET welcomed_at = ? WHERE id = ? AND welcomed_at IS NULL AND status = 'confirmed'",
            (timestamp(now()), subscriber_id),
        )
    return done.rowcount == 1


def unclaim(conn: sqlite3.Connection, subscriber_id: int) -> None:
    """The welcome could not go: a later confirmation may try again. Commits."""
    with conn:
        conn.execute("UPDATE subscribers SET welcomed_at = NULL WHERE id = ?", (subscriber_id,))


def newest_issue(settings: Settings, conn: sqlite3.Connection, language: str) -> dict | None:
    """The newest issue in the public archive (in the subscriber's language when there is one),
    as the welcome shows it: title, date and address; None before the first issue."""
    issues = archived(conn, pages=False)
    if not issues:
        return None
    chosen = next((i for i in issues if i.snapshot.language == language), issues[0])
    return {
        "title": chosen.snapshot.title,
        "date": format_date(date.fromisoformat(chosen.snapshot.issue_date), language),
        "url": settings.archive_url(chosen.snapshot.issue),
    }


def welcome_message(
    settings: Settings, strings: dict[str, str], person: Subscriber, address: str, newest: dict | None
) -> bytes:
    """The welcome email for ``person`` as bytes. ``address`` is the form of their address the
    transport carries (transport.mail_address)."""
    language = person.language if person.language in ("nb", "en") else settings.language
    name = settings.display_name(language)
    context = {
        "lang": language,
        "t": strings,
        "name": name,
        "greeting": strings["greeting_named"].format(name=clean_name(person.name))
        if person.name
        else strings["greeting"],
        "intro": strings["welcome_intro"].format(name=name, sender=settings.sender_name),
        "newest": newest,
        "sender_name": settings.sender_name,
        "postal_address": settings.address_line,
        "website": settings.website,
        "archive_url": settings.archive_index_url(),
        "preferences_url": preferences_url(settings, make_token(settings, person.id, "preferences")),
        "unsubscribe_url": unsubscribe_url(settings, make_token(settings, person.id, "unsubscribe")),
    }
    env = environment(settings)
    html = compile_mjml(env.get_template("email/welcome.mjml.j2").render(context), "welcome.mjml")
    text = env.get_template("email/welcome.txt.j2").render(context)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=settings.sender_name, addr_spec=settings.sender_address)
    msg.set_raw("Subject", subject_value(strings["welcome_subject"].format(name=name)))
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=settings.list_domain)
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    list_headers(msg, settings, context["unsubscribe_url"])
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    msg["Content-Language"] = language
    return to_header(person.name, check_address(address)) + msg.as_bytes()
