"""One exception family for everything a user can get wrong.

Core code raises these with the file, line, field or address involved; ``cli.py``
turns them into a one-line ``Error: ...`` and exit code 1.
"""

from __future__ import annotations

from pathlib import Path


class NewsletterError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(NewsletterError):
    """newsletter.toml, .env or the environment holds a bad or missing setting."""


class ContentError(NewsletterError):
    """An issue folder, its Markdown or its front matter is wrong."""


class TemplateError(NewsletterError):
    """A Jinja2 template or the MJML it produces is wrong."""


class ProjectError(NewsletterError):
    """A project or issue folder cannot be found or created."""


def where(path: Path | str, line: int | None = None) -> str:
    """Format a location as ``path`` or ``path:line`` for error messages."""
    return f"{path}:{line}" if line else str(path)


class FeedError(NewsletterError):
    """A news feed cannot be fetched or read, or a curation command names a wrong item."""


class EmissionsError(NewsletterError):
    """An emissions file, release, year or municipality is wrong or missing."""


class SubscriberError(NewsletterError):
    """A subscriber's address, details, import file, segment or link is wrong."""
