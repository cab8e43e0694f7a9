"""What bench_build.py and bench_feeds.py share: the package byte-compiled as a wheel install
leaves it, and the *floor* of a whole-process benchmark (the interpreter importing what one of
our processes imports, with nothing of ours and no work)."""

from __future__ import annotations

import sys
from pathlib import Path

FLOOR_SCRIPT = """
import gc
import sys
gc.set_threshold(100_000, 10, 10)  # as newsletter/__main__.py does
for name in {blocked!r}:  # what ours keeps from being imported (httpcore's trio, say)
    sys.modules[name] = None
for name in {names!r}:
    try:
        __import__(name)
    except Exception:
        pass
"""


def compile_package() -> None:
    """Byte-compile the package, as 'pip install' of a wheel does (an editable install under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module on every start)."""
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "newsletter"), quiet=1)


def write_modules(listing: Path) -> str:
    """Python source (one line) that writes the modules imported so far to ``listing``: those
    imported, a '--' line, and those kept from being imported (set to None)."""
    return (
        f"open({str(listing)!r}, 'w').write('\\n'.join(m for m, v in sys.modules.items() if v is not None)"
        " + '\\n--\\n' + '\\n'.join(m for m, v in sys.modules.items() if v is None))"
    )


def read_modules(listing: Path) -> tuple[list[str], list[str]]:
    """(imported, kept out) from a ``write_modules`` listing, without ours and __main__."""
    imported, _, blocked = listing.read_text().partition("\n--\n")
    names = [n for n in imported.split("\n") if n and n != "__main__" and n.split(".")[0] != "newsletter"]
    return names, [n for n in blocked.split("\n") if n]


def floor_command(names: list[str], blocked: list[str]) -> list[str]:
    """The floor as a process: the interpreter importing ``names`` with ``blocked`` kept out."""
    return [sys.executable, "-c", FLOOR_SCRIPT.format(names=names, blocked=blocked)]
