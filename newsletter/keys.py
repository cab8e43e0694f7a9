"""The key that signs the links in emails: made once, never replaced behind anyone's back.

Every unsubscribe, preferences and confirmation link carries a signature made with
NEWSLETTER_SECRET_KEY, and forgotten addresses are kept as hashes keyed with it. A new key
would silently break all of them. So a key is made only in a project that has never signed
anything; the database remembers a fingerprint of every key it has used (never the key), and
a missing or different key is a one-line refusal that says to restore .env. ``rotate`` makes a
new key and keeps the old ones for checking links, so links in sent mail keep working.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from . import journal
from .config import Settings
from .errors import ConfigError, SecretKeyError
from .language import _, os_reason
from .locks import hold
from .store import database, recall, remember

ENV = "NEWSLETTER_SECRET_KEY"
OLD_ENV = "NEWSLETTER_OLD_SECRET_KEYS"
SEEN = "secret_key"
RETIRED = "retired_key"


def fingerprint(key: str) -> str:
    """A short name for a key that reveals nothing about it (shown, and kept in the database)."""
    return hmac.new(key.encode(), b"newsletter key fingerprint", hashlib.sha256).hexdigest()[:16]


def signed_before(conn: sqlite3.Connection) -> str | None:
    """Why links signed with a key may be out there, or None for a project that never signed one."""
    if recall(conn, SEEN):
        return _("newsletter.db holds its fingerprint")
    if journal.ever_started(conn):
        return _("issues have been sent with unsubscribe links")
    if conn.execute(
        "SELECT 1 FROM subscribers WHERE status = 'pending' AND consent_source LIKE 'signup%' LIMIT 1"
    ).fetchone():
        return _("confirmation links have been mailed")
    if conn.execute("SELECT 1 FROM forgotten LIMIT 1").fetchone():
        return _("forgotten addresses are kept as hashes made with it")
    return None


def _dotenv(settings: Settings) -> Path:
    return settings.project_dir / ".env"


def ensure(settings: Settings) -> tuple[Settings, bool]:
    """The settings with a usable key: the one set (checked), or a new one written to .env when
    the project has never signed anything. Returns (settings, whether a key was made)."""
    if settings.secret_key:
        return check(settings), False
    # One at a time (cron and a person may start at the same moment), and a key another process
    # made meanwhile is taken, not made again.
    with hold(settings.build_dir, "secret-key", wait=True), database(settings.database) as conn:
        made = (dotenv_values(_dotenv(settings)).get(ENV) or "").strip() if _dotenv(settings).is_file() else ""
        if made:
            return check(dataclasses.replace(settings, secret_key=made)), False
        reason = signed_before(conn)
        if reason is not None:
            raise SecretKeyError(
                _(
                    "{env} is not set, but this project has signed links with a key ({reason}); restore .env from your backup, or set {env} to the key it had. A new key would break every unsubscribe link already sent.",
                    env=ENV,
                    reason=reason,
                )
            )
        key = secrets.token_urlsafe(48)
        path = _dotenv(settings)
        try:
            existed = path.exists()
            with path.open("a", encoding="utf-8") as handle:
                if not existed:
                    path.chmod(0o600)
                comment = _(
                    "# Signs the links in emails. Made by newsletter; keep it secret, keep it, and keep a backup\n"
                    "# of this file: a new key breaks the links in emails already sent."
                )
                handle.write(f"\n{comment}\n{ENV}={key}\n")
        except OSError as exc:
            raise ConfigError(
                _(
                    "{path}: cannot store a new {env} ({strerror}); set it yourself.",
                    path=path,
                    env=ENV,
                    strerror=os_reason(exc),
                )
            ) from exc
    return dataclasses.replace(settings, secret_key=key), True


def check(settings: Settings) -> Settings:
    """The settings, if their keys can sign and check every link the project has signed:
    SecretKeyError if the key is missing, is not the project's, or a key that signed links in
    sent mail is no longer among the old ones. Call before signing or checking anything."""
    key = settings.secret_key
    with database(settings.database) as conn:
        if not key:
            reason = signed_before(conn)
            if reason is not None:
                raise SecretKeyError(
                    _(
                        "{env} is not set, but this project has signed links with a key ({reason}); restore .env from your backup, or set {env} to the key it had.",
                        env=ENV,
                        reason=reason,
                    )
                )
            raise SecretKeyError(
                _(
                    "{env} is not set: it signs the links in emails. Any command that sends makes one in .env (e.g. 'newsletter send --test ADDRESS'), or set it yourself: at least 32 random characters.",
                    env=ENV,
                )
            )
        known = dict(recall(conn, SEEN))
        retired = {value for value, _ in recall(conn, RETIRED)}
        mine = fingerprint(key)
        have = {mine} | {fingerprint(old) for old in settings.old_secret_keys}
        if known and mine not in known and not have & set(known):
            raise SecretKeyError(
                _(
                    "{env} is not the key this project's links were signed with (its fingerprint is {mine}, the project's is {known}); restore the .env that belongs with {name}. To change keys without breaking links, use 'newsletter secret rotate'.",
                    env=ENV,
                    mine=mine,
                    known=max(known, key=known.get),
                    name=settings.database.file.name if not settings.database.url else settings.database,
                )
            )
        missing = sorted(set(known) - have - retired, key=known.get)
        if missing:
            raise SecretKeyError(
                _(
                    "links in sent emails were signed with a key that is not set now (fingerprint {missing}, used since {known}), so they would stop working: {old_env} lacks it. Restore .env from your backup; to give up those links on purpose, run 'newsletter secret retire {missing}'.",
                    missing=missing[0],
                    known=known[missing[0]][:10],
                    old_env=OLD_ENV,
                )
            )
        if not known and signed_before(conn) is not None:
            remember(conn, SEEN, mine)  # a database from before keys were remembered: this is its key
    return settings


def record(settings: Settings) -> None:
    """Remember that the current key has signed something (call once links are out)."""
    with database(settings.database) as conn:
        remember(conn, SEEN, fingerprint(settings.secret_key or ""))


def retire(settings: Settings, fingerprint_: str) -> None:
    """Give up the links signed with an old key: it no longer has to be kept."""
    check_current = settings.secret_key and fingerprint(settings.secret_key) == fingerprint_
    with database(settings.database) as conn:
        known = dict(recall(conn, SEEN))
        if fingerprint_ not in known:
            raise SecretKeyError(
                _(
                    "no key with the fingerprint {fingerprint!r} has signed links here; see 'newsletter secret status'.",
                    fingerprint=fingerprint_,
                )
            )
        if check_current:
            raise SecretKeyError(
                _(
                    "{fingerprint} is the current key; rotate first ('newsletter secret rotate').",
                    fingerprint=fingerprint_,
                )
            )
        remember(conn, RETIRED, fingerprint_)


@dataclass(frozen=True)
class KeyStatus:
    """What ``newsletter secret status`` shows: no key, only where it is and fingerprints."""

    source: str  # '.env', 'the environment' or 'not set'
    fingerprint: str | None
    known: tuple[tuple[str, str, str], ...]  # (fingerprint, first use, 'current' | 'kept' | 'retired' | 'MISSING')
    old_keys: int


def status(settings: Settings) -> KeyStatus:
    """Where the key comes from, its fingerprint, and the keys the project has signed with."""
    mine = fingerprint(settings.secret_key) if settings.secret_key else None
    kept = {fingerprint(old) for old in settings.old_secret_keys}
    with database(settings.database) as conn:
        retired = {value for value, _ in recall(conn, RETIRED)}
        known = tuple(
            (value, since, "current" if value == mine else "kept" if value in kept else "retired"
             if value in retired else "MISSING")
            for value, since in recall(conn, SEEN)
        )  # fmt: skip
    return KeyStatus(_source(settings), mine, known, len(settings.old_secret_keys))


def _source(settings: Settings) -> str:
    if not settings.secret_key:
        return _("not set")
    if os.environ.get(ENV, "").strip() == settings.secret_key:
        return _("the environment")
    return ".env"


def rotate(settings: Settings) -> tuple[str, int]:
    """Make a new signing key in .env and keep the current one (and older ones) for checking
    links. Returns (the new key's fingerprint, how many old keys are kept)."""
    check(settings)
    record(settings)  # the current key becomes an old one: links it signed must keep working
    current = settings.secret_key
    assert current is not None
    path = _dotenv(settings)
    if _source(settings) != ".env" or (OLD_ENV in os.environ and os.environ[OLD_ENV].strip()):
        raise SecretKeyError(
            _(
                "{env} is set in the environment, not in {path}; rotate it there: set {old_env} to the current key (and any older ones, space-separated) and {env} to a new one of at least 32 random characters.",
                env=ENV,
                path=path,
                old_env=OLD_ENV,
            )
        )
    new = secrets.token_urlsafe(48)
    old = [k for k in (*settings.old_secret_keys, current) if k]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(_("{path}: cannot be read ({strerror}).", path=path, strerror=os_reason(exc))) from exc
    kept = [line for line in lines if not line.strip().startswith((f"{ENV}=", f"{OLD_ENV}=", f"export {ENV}=",
                                                                   f"export {OLD_ENV}="))]  # fmt: skip
    kept += [
        _("# Rotated by 'newsletter secret rotate': the new key signs, the old ones still check links in sent mail."),
        f"{ENV}={new}",
        f'{OLD_ENV}="{" ".join(old)}"',
    ]
    with database(settings.database) as conn:
        remember(conn, SEEN, fingerprint(new))
    _write_private(path, "\n".join(kept) + "\n")
    assert dotenv_values(path).get(ENV) == new
    return fingerprint(new), len(old)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` in one step, readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".env.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
