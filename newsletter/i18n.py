"""Edition languages: interface strings (templates/i18n/*.toml) and date formats."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

from .errors import TemplateError

MONTHS = {
    "nb": (
        "januar",
        "februar",
        "mars",
        "april",
        "mai",
        "juni",
        "juli",
        "august",
        "september",
        "oktober",
        "november",
        "desember",
    ),
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
}


def format_date(value: date, language: str) -> str:
    """A date as people write it: '1. desember 2026' (nb) or '1 December 2026' (en)."""
    month = MONTHS[language][value.month - 1]
    if language == "nb":
        return f"{value.day}. {month} {value.year}"
    return f"{value.day} {month} {value.year}"


def format_month(value: date, language: str) -> str:
    """Month and year: 'desember 2026' (nb) or 'December 2026' (en)."""
    return f"{MONTHS[language][value.month - 1]} {value.year}"


def load_strings(folders: list[Path], language: str) -> dict[str, str]:
    """Interface strings for one language; later folders override earlier ones, key by key."""
    strings: dict[str, str] = {}
    for folder in folders:
        path = folder / "i18n" / f"{language}.toml"
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{path}: not valid UTF-8 TOML ({exc}); fix the syntax.") from exc
        for key, value in data.items():
            if not isinstance(value, str):
                raise TemplateError(f"{path}: {key} must be text.")
            strings[key] = value
    if not strings:
        raise TemplateError(f"No interface strings for language {language!r} (i18n/{language}.toml).")
    return strings
