"""Files shipped with the package: templates and data (the wheel carries copies of both)."""

from __future__ import annotations

from pathlib import Path


def builtin(folder: str) -> Path:
    """The built-in ``templates`` or ``data`` folder: inside an installed wheel, else the source tree."""
    packaged = Path(__file__).parent / "_builtin" / folder
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / folder
