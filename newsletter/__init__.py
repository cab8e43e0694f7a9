"""newsletter: compose and send Osloregionen's newsletter from Markdown, feeds and climate data."""

__version__ = "0.1.0"  # before the imports below: modules read it (hatch reads it too)

from .build import BuildResult, build_issue, prepare
from .config import Settings, load_settings
from .errors import ConfigError, ContentError, NewsletterError, ProjectError, TemplateError

__all__ = [
    "BuildResult",
    "ConfigError",
    "ContentError",
    "NewsletterError",
    "ProjectError",
    "Settings",
    "TemplateError",
    "__version__",
    "build_issue",
    "load_settings",
    "prepare",
]
