"""Issue (+ feed items + emission highlights) -> the context the templates need. Pure, no I/O.

HTML and text made from Markdown or feeds never pass through the MJML compiler: the
templates only place a ``slot("name")`` marker, and ``render`` fills it in afterwards
from ``Composition.html_fragments`` / ``text_fragments``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from .config import Settings
from .content import Article, Issue
from .i18n import format_date, format_month

if TYPE_CHECKING:  # feeds and emissions are imported where they are used (an issue without them never needs them)
    from .emissions import Highlights
    from .feeds import FeedItem

# Control characters, line and paragraph separators, and the invisible direction overrides
# (U+202A-202E, U+2066-2069, U+200E/F, U+061C) that can make a name display as something else.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]+")


@dataclass(frozen=True)
class Recipient:
    """Who one message is for, with the signed tokens of their unsubscribe and preference links."""

    email: str
    name: str = ""
    unsubscribe_token: str = "preview"
    preferences_token: str = "preview"
    municipality: str | None = None


PLACEHOLDER = Recipient(email="ola.nordmann@example.com", name="Ola Nordmann", municipality="3205")  # Lillestrøm


@dataclass(frozen=True)
class Composition:
    """Everything the templates get, plus the fragments that fill their slots."""

    context: dict[str, Any]
    html_fragments: dict[str, str] = field(default_factory=dict)
    text_fragments: dict[str, str] = field(default_factory=dict)
    municipal: dict[str, str] = field(default_factory=dict)  # municipality number -> sentence


def clean_name(name: str) -> str:
    """A display name with control characters (CR, LF, direction overrides, ...) folded to single spaces."""
    return " ".join(_CONTROL.sub(" ", name or "").split())


def _article(article: Article, strings: dict[str, str]) -> dict[str, Any]:
    return {
        "id": article.id,
        "title": article.title,
        "image": {"url": article.image.url, "alt": article.image.alt} if article.image else None,
        "link": article.link,
        "link_text": article.link_text or strings["read_more"],
        "slot": f"article:{article.id}",
        "has_body": bool(article.html),
    }


def news_groups(settings: Settings, items: tuple[FeedItem, ...], language: str) -> list[dict[str, Any]]:
    """Feed items grouped by their feed's focus area (or by feed), in the issue's section order."""
    if not items:
        return []
    from .feeds import news_date, shorten

    feeds = {f.name: f for f in settings.feeds}
    order = {c.key: n for n, c in enumerate(settings.categories)}
    groups: dict[str, dict[str, Any]] = {}
    for item in items:
        feed = feeds.get(item.feed)
        category = feed.category if feed else None
        key = f"c:{category.key}" if category else f"f:{item.feed}"
        group = groups.setdefault(
            key,
            {
                "label": category.label(language) if category else item.feed,
                "sort": (0, order[category.key], "") if category else (1, 0, item.feed),
                "items": [],
            },
        )
        group["items"].append(
            {
                "title": item.title,
                "link": item.link,
                "source": item.feed,
                "date": format_date(news_date(item.published, item.first_seen), language),
                "summary": shorten(item.summary, settings.news_summary_chars),
            }
        )
    return sorted(groups.values(), key=lambda g: g["sort"])


def compose(
    settings: Settings,
    issue: Issue,
    strings: dict[str, str],
    *,
    logo_url: str | None = None,
    news: tuple[FeedItem, ...] = (),
    emissions: Highlights | None = None,
    municipal: dict[str, str] | None = None,
) -> Composition:
    """Build the template context for one issue in its own language."""
    lang = issue.language
    sections = []
    for category in issue.sections:
        articles = [_article(a, strings) for a in issue.articles if a.category == category]
        if articles:
            sections.append({"key": category.key, "label": category.label(lang), "articles": articles})
    loose = [_article(a, strings) for a in issue.articles if a.category is None]

    html = {"intro": issue.intro_html}
    text = {"intro": issue.intro_text}
    for article in issue.articles:
        html[f"article:{article.id}"] = article.html
        text[f"article:{article.id}"] = article.text

    context = {
        "lang": lang,
        "web": False,  # True for the web version (the archive): no personal parts
        "t": strings,
        "newsletter": {
            "name": settings.display_name(lang),
            "sender_name": settings.sender_name,
            "postal_address": settings.address_line,
            "website": settings.website,
            "logo_url": logo_url,
            "signup_url": settings.signup_url(),
        },
        "issue": {
            "id": issue.id,
            "title": issue.title,
            "subject": issue.subject,
            "preheader": issue.preheader,
            "date": format_date(issue.date, lang),
            "month": format_month(issue.date, lang),
            "archive_url": settings.archive_url(issue.id),
            "archive_index_url": settings.archive_index_url(),
            "has_intro": bool(issue.intro_html),
        },
        "loose_articles": loose,
        "sections": sections,
        "news": news_groups(settings, news, lang),
        "emissions": None
        if emissions is None
        else {
            "headline": emissions.headline,
            "sentences": list(emissions.sentences),
            "rows": list(emissions.rows),
            "total": emissions.total,
            "source": emissions.source,
        },
    }
    return Composition(context=context, html_fragments=html, text_fragments=text, municipal=dict(municipal or {}))


def recipient_values(
    settings: Settings,
    strings: dict[str, str],
    recipient: Recipient,
    municipal: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, str]:
    """The per-recipient slot values: greeting, address, personal links, and the block for the
    recipient's own municipality (``municipal``: number -> (HTML as Markup, text)), if any."""
    name = clean_name(recipient.name)
    greeting = strings["greeting_named"].format(name=name) if name else strings["greeting"]
    block_html, block_text = (municipal or {}).get(recipient.municipality or "", (Markup(""), ""))
    return {
        "municipality_html": block_html,
        "municipality_text": block_text,
        "greeting": greeting,
        "email": recipient.email,
        "unsubscribe_url": unsubscribe_url(settings, recipient.unsubscribe_token),
        "preferences_url": preferences_url(settings, recipient.preferences_token),
    }


def confirm_url(settings: Settings, token: str) -> str:
    """The double opt-in confirmation link for a subscriber's token."""
    return f"{settings.base_url}/confirm/{token}"


def unsubscribe_url(settings: Settings, token: str) -> str:
    """The one-click unsubscribe page for a subscriber's token."""
    return f"{settings.base_url}/unsubscribe/{token}"


def preferences_url(settings: Settings, token: str) -> str:
    """The preferences page for a subscriber's token."""
    return f"{settings.base_url}/preferences/{token}"
