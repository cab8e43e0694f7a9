"""newsletter: compose and send Osloregionen's newsletter from Markdown, feeds and climate data."""

from importlib.metadata import PackageNotFoundError, version

from .build import BuildResult, build_issue, prepare
from .config import Settings, load_settings
from .errors import ConfigError, ContentError, NewsletterError, ProjectError, TemplateError

try:
    __version__ = version("newsletter")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

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
