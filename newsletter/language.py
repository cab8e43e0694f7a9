"""The language people read: every message the tool prints comes from a gettext catalogue.

The messages are written in English in the code, as ``_("… {name} …", name=value)`` (the text is a
``str.format`` template, so literal braces are doubled), and translated through the catalogue in
``newsletter/locale/<language>/LC_MESSAGES/newsletter.po`` (compiled to ``.mo``; ``tools/catalogue.py``
extracts, merges and compiles them with Babel). Click's own words ("Usage:", "Error: ...") come from
the ``click`` domain beside it. ``N_()`` marks a text to translate later, where it is shown (help
texts and settings defined when a module is imported).

The language is the project's (``newsletter.interface_language`` in newsletter.toml, default its
edition language) or ``NEWSLETTER_LANG``, which wins; nb when neither says. Numbers in Norwegian
messages get a decimal comma.
"""

from __future__ import annotations

import errno
import gettext
import os
import socket
import string
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("nb", "en")
_OS_REASONS: dict[int, str] = {}  # filled below, once N_ exists
DEFAULT = "nb"
ENV = "NEWSLETTER_LANG"
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "newsletter"

_chosen: str | None = None


def use(language: str | None) -> None:
    """Speak ``language`` from now on in this process (None: back to NEWSLETTER_LANG or nb)."""
    global _chosen
    if language is not None and language not in LANGUAGES:
        raise ValueError(f"{language!r} is not a language; use nb or en")
    _chosen = language


def from_environment() -> str | None:
    """NEWSLETTER_LANG when it names a language we speak; None when it is not set.
    A value we do not speak raises ValueError (the CLI turns it into one line)."""
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return None
    value = {"no": "nb", "nob": "nb", "norsk": "nb", "bokmål": "nb", "eng": "en", "english": "en"}.get(value, value)
    value = value.split("_")[0].split("-")[0].split(".")[0]  # nb_NO.UTF-8 -> nb
    if value not in LANGUAGES:
        raise ValueError(f"{ENV}={os.environ[ENV]!r} is not a language this tool speaks; use nb or en")
    return value


def current() -> str:
    """The language messages are in now: NEWSLETTER_LANG, then the one chosen with use(), then nb."""
    try:
        return from_environment() or _chosen or DEFAULT
    except ValueError:
        return _chosen or DEFAULT


@cache
def catalogue(language: str, domain: str = DOMAIN) -> gettext.NullTranslations:
    """The compiled catalogue of one language (English is the text in the code)."""
    if language == "en":
        return gettext.NullTranslations()
    return gettext.translation(domain, LOCALE_DIR, [language])


class _Formatter(string.Formatter):
    """str.format, with Norwegian decimal commas and spaces between thousands in Norwegian text."""

    def __init__(self, language: str) -> None:
        self.language = language

    def format_field(self, value: Any, format_spec: str) -> str:
        text = super().format_field(value, format_spec)
        number = isinstance(value, float) or (
            isinstance(value, int) and not isinstance(value, bool) and "," in format_spec
        )
        if self.language == "nb" and number:
            text = text.replace(",", "\u00a0").replace(".", ",")
        return text


def _(message: str, /, **values: Any) -> str:
    """``message`` in the current language, its {placeholders} filled in from ``values``."""
    language = current()
    text = catalogue(language).gettext(message)
    return _Formatter(language).vformat(text, (), values)


def translate(message: str) -> str:
    """``message`` in the current language, as it is (no placeholders filled in): help texts."""
    return catalogue(current()).gettext(message) if message else message  # '' would give the header


def os_reason(exc: OSError) -> str:
    """Why the operating system said no, in the current language (its own words are English)."""
    reason = _OS_REASONS.get(exc.errno) if exc.errno is not None else None
    return translate(reason) if reason else (exc.strerror or str(exc))


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue; ``_()`` translates it where it is shown."""
    return message


def click_gettext(message: str) -> str:
    """Click's own words (its domain in the catalogue)."""
    return catalogue(current(), "click").gettext(message) if current() != "en" else message


def click_ngettext(singular: str, plural: str, count: int) -> str:
    if current() == "en":
        return singular if count == 1 else plural
    return catalogue(current(), "click").ngettext(singular, plural, count)


_CLICK_TYPES = {"IntParamType": N_("integer"), "FloatParamType": N_("number"), "IntRange": N_("whole number in a range"),
                "FloatRange": N_("number in a range")}  # fmt: skip


def english_name(param_type: Any) -> str:
    """A Click parameter type's own (English) name, whatever language it speaks now."""
    return getattr(param_type, "_english_name", None) or param_type.name


def teach_click() -> None:
    """Make Click speak the current language: its modules look ``_`` and ``ngettext`` up when they
    build a message, so pointing them at our catalogue translates usage lines, errors and prompts;
    the names of its number types, which its errors show ('is not a valid integer'), too."""
    import importlib

    import click

    for name in ("core", "decorators", "exceptions", "formatting", "parser", "termui", "types", "utils"):
        module = importlib.import_module(f"click.{name}")
        if hasattr(module, "_"):
            module._ = click_gettext  # type: ignore[attr-defined]
        if hasattr(module, "ngettext"):
            module.ngettext = click_ngettext  # type: ignore[attr-defined]
    for name, word in _CLICK_TYPES.items():
        kind = getattr(click.types, name)
        kind._english_name = kind.__dict__.get("_english_name") or kind.__dict__["name"]
        kind.name = translate(word) if current() != "en" else kind._english_name


_OS_REASONS.update({
    errno.ENOENT: N_("no such file or folder"),
    errno.EACCES: N_("no permission"),
    errno.EPERM: N_("not permitted"),
    errno.EISDIR: N_("it is a folder, not a file"),
    errno.ENOTDIR: N_("a part of the path is not a folder"),
    errno.ENOSPC: N_("the disk is full"),
    errno.EROFS: N_("the disk can only be read"),
    errno.EEXIST: N_("it exists already"),
    errno.EADDRINUSE: N_("the address is in use"),
    errno.ECONNREFUSED: N_("nothing answers there"),
    errno.ETIMEDOUT: N_("no answer in time"),
    socket.EAI_NONAME: N_("the name was not found"),
})  # fmt: skip
