"""newsletter: compose and send Osloregionen's newsletter from Markdown and news feeds.

The public API is imported lazily (PEP 562), so that a command such as 'feeds fetch'
does not pay for loading the renderer.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"  # hatch reads the version from here

_API = {
    "BuildResult": "build",
    "build_issue": "build",
    "prepare": "build",
    "Settings": "config",
    "load_settings": "config",
    "ConfigError": "errors",
    "ContentError": "errors",
    "FeedError": "errors",
    "NewsletterError": "errors",
    "ProjectError": "errors",
    "TemplateError": "errors",
    "fetch_feeds": "feeds",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'newsletter' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
