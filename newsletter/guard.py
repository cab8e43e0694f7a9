"""Signups from other websites, and bots kept out without third parties.

Which pages may post a signup (the project's own, and the origins in ``web.allowed_origins``),
where a plain form may send the visitor back to, and the proof of work a browser does before a
signup counts: an ALTCHA challenge (the ``altcha`` package), signed with a key derived from the
project's key, valid for ``CHALLENGE_MINUTES`` and spent once (``used_challenges`` keeps it
until it expires). The honeypot is a field people never see and bots fill in.

Plain data in and out; the HTTP side is in web.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from .clock import now, timestamp
from .config import Settings
from .errors import ChallengeRefused, ConfigError
from .language import _

HONEYPOT = "website"  # the field name bots like to fill in; people never see the field
CHALLENGE_FIELD = "altcha"  # the widget's hidden field with the solved challenge
CHALLENGE_MINUTES = 10
ALGORITHM = "PBKDF2/SHA-256"
COST = 1000  # PBKDF2 iterations per try; web.challenge_work sets how many tries


def _secret(settings: Settings, purpose: bytes) -> bytes:
    """A key of its own for the challenges, derived from the project's key (never the key itself)."""
    if not settings.secret_key:
        raise ConfigError(_("NEWSLETTER_SECRET_KEY is not set; signups need it to sign their challenges."))
    return hmac.new(settings.secret_key.encode(), b"newsletter signup challenge " + purpose, hashlib.sha256).digest()


def own_origin(settings: Settings) -> str:
    """The origin of the public pages (base_url without its path)."""
    return origin_of(settings.base_url) or settings.base_url


def origin_of(url: str | None) -> str | None:
    """scheme://host[:port] of a URL as browsers write an Origin; None for none or 'null'."""
    if not url or url == "null":
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{parts.hostname.lower()}{f':{port}' if port and port != default else ''}"


def allowed_origins(settings: Settings) -> frozenset[str]:
    """The other websites whose pages may hold the signup form."""
    return frozenset((settings.web_allowed_origins or "").split())


def sender_origin(origin: str | None, referer: str | None) -> str | None:
    """Where a request comes from: its Origin header, or the origin of its Referer when a
    browser sent no Origin."""
    return origin_of(origin) if origin else origin_of(referer)


def origin_kind(settings: Settings, origin: str | None, own: tuple[str, ...] = ()) -> str | None:
    """'own' for the public pages themselves (base_url, or ``own``: the address the server is
    reached at), 'allowed' for a website in web.allowed_origins, None for anything else."""
    if origin is None:
        return None
    if origin == own_origin(settings) or origin in own:
        return "own"
    return "allowed" if origin in allowed_origins(settings) else None


def return_url(settings: Settings, url: str | None) -> str | None:
    """Where a plain form post may send the visitor back to: a page on an allowed website (or
    the public pages); None for anything else (the thank-you page is shown instead)."""
    if not url or len(url) > 2000 or any(ord(c) < 33 for c in url):
        return None
    origin = origin_of(url)
    return url if origin and origin_kind(settings, origin) else None


@dataclass(frozen=True)
class Challenge:
    """A challenge as the widget fetches it (``as_json``), and when it expires."""

    as_json: dict
    expires: datetime


def new_challenge(settings: Settings) -> Challenge:
    """A signed challenge: the browser must find a number between half of web.challenge_work
    and all of it (each try a PBKDF2 of ``COST`` rounds); checking the answer costs one HMAC."""
    from altcha import create_challenge

    work = settings.web_challenge_work
    expires = now() + timedelta(minutes=CHALLENGE_MINUTES)
    made = create_challenge(
        ALGORITHM,
        COST,
        counter=work // 2 + secrets.randbelow(work - work // 2 + 1),
        expires_at=int(expires.timestamp()),
        hmac_secret=_secret(settings, b"signature"),
        hmac_key_secret=_secret(settings, b"key"),
    )
    return Challenge(made.to_dict(), expires)


def spend_challenge(settings: Settings, conn: sqlite3.Connection, payload: str | None) -> None:
    """Accept a solved challenge once: it must be signed by us, not expired, solved, and not
    spent before (then it is recorded as spent). Raises ChallengeRefused. Commits."""
    from altcha import Payload, verify_solution

    if not payload:
        raise ChallengeRefused("missing")
    try:
        parsed = Payload.from_base64(payload[:20000])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        raise ChallengeRefused("invalid") from None
    result = verify_solution(
        parsed, _secret(settings, b"signature"), hmac_key_secret=_secret(settings, b"key")
    )  # fmt: skip
    if result.expired:
        raise ChallengeRefused("expired")
    if not result.verified:
        raise ChallengeRefused("invalid")
    expires = parsed.challenge.parameters.expires_at
    if not isinstance(expires, int):
        raise ChallengeRefused("invalid")  # we always set one: a challenge without is not ours
    moment = timestamp(now())
    with conn:
        conn.execute("DELETE FROM used_challenges WHERE expires_at < ?", (moment,))
        try:
            conn.execute(
                "INSERT INTO used_challenges (signature, expires_at) VALUES (?, ?)",
                (str(parsed.challenge.signature), timestamp(datetime.fromtimestamp(expires, UTC))),
            )
        except sqlite3.IntegrityError:
            raise ChallengeRefused("used") from None
