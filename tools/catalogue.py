"""The message catalogue: extract every message from the code, merge it into the .po files, compile.

    python tools/catalogue.py update     # newsletter/locale/*/LC_MESSAGES/*.po from the code
    python tools/catalogue.py compile    # .po -> .mo (what the tool reads)
    python tools/catalogue.py check      # exit 1 when a message lacks a translation or .mo is stale

Messages are the first argument of _() and N_() calls in newsletter/*.py, the help texts of the
commands and options in newsletter/cli.py, and the words Click itself prints (the 'click' domain).
Babel reads and writes the catalogues (PO and MO files).
"""

from __future__ import annotations

import ast
import inspect
import io
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "newsletter"
LOCALE = PACKAGE / "locale"
LANGUAGES = ("nb",)


def code_messages() -> Iterator[tuple[str, str]]:
    """(message, 'file:line') for every _("...") and N_("...") in the package."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("_", "N_")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                yield node.args[0].value, f"newsletter/{path.name}:{node.lineno}"


def help_messages() -> Iterator[tuple[str, str]]:
    """The help texts of every command and option (translated when --help shows them)."""
    sys.path.insert(0, str(ROOT))
    from newsletter.cli import cli, help_texts

    yield from help_texts(cli)


def click_messages() -> Iterator[tuple[str | tuple[str, str], str]]:
    """What Click prints: the first argument of its _() and ngettext() calls."""
    import click

    folder = Path(inspect.getfile(click)).parent
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_win") or path.name == "shell_completion.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            args = node.args
            if node.func.id == "_" and args and isinstance(args[0], ast.Constant):
                yield args[0].value, f"click/{path.name}:{node.lineno}"
            elif node.func.id == "ngettext" and len(args) >= 2 and all(isinstance(a, ast.Constant) for a in args[:2]):
                yield (args[0].value, args[1].value), f"click/{path.name}:{node.lineno}"
    yield "required", "click/core.py (help: '[required]', translated from a variable)"


def wanted(domain: str) -> dict[str | tuple[str, str], list[str]]:
    found: dict[str | tuple[str, str], list[str]] = {}
    sources = click_messages() if domain == "click" else [*code_messages(), *help_messages()]
    for message, where in sources:
        found.setdefault(message, []).append(where)
    return found


def po_path(language: str, domain: str) -> Path:
    return LOCALE / language / "LC_MESSAGES" / f"{domain}.po"


def read(language: str, domain: str) -> Catalog:
    path = po_path(language, domain)
    if not path.exists():
        return Catalog(locale=language, domain=domain, project="newsletter", charset="utf-8")
    with path.open("rb") as handle:
        return read_po(handle, locale=language, domain=domain)


def update() -> None:
    for language in LANGUAGES:
        for domain in ("newsletter", "click"):
            old = read(language, domain)
            new = Catalog(locale=language, domain=domain, project="newsletter", charset="utf-8")
            found = wanted(domain)
            if domain == "click":  # keep the words of the other Click versions pyproject.toml allows
                for kept in old:
                    if kept.id and kept.string and kept.id not in found:
                        found[kept.id] = [f"{loc[0]}:{loc[1]}" for loc in kept.locations] or ["click"]
            for message, places in found.items():
                existing = old.get(message[0] if isinstance(message, tuple) else message)
                string = existing.string if existing is not None else ("", "") if isinstance(message, tuple) else ""
                flags = existing.flags if existing is not None else ()
                locations = sorted({(p.rsplit(":", 1)[0], 0) for p in places if ":" in p})
                commands = [p for p in places if ":" not in p]  # help texts: the command they belong to
                if commands:
                    locations.append(("newsletter/cli.py", 0))
                new.add(message, string, locations=locations, flags=flags, auto_comments=commands)
            path = po_path(language, domain)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as handle:
                write_po(handle, new, width=0, omit_header=False, sort_output=False, include_lineno=False)
            missing = sum(1 for m in new if m.id and not (all(m.string) if isinstance(m.string, tuple) else m.string))
            print(f"{path.relative_to(ROOT)}: {len(new)} messages, {missing} without a translation")


def compiled(language: str, domain: str) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, read(language, domain), use_fuzzy=False)
    return buffer.getvalue()


def compile_all() -> None:
    for language in LANGUAGES:
        for domain in ("newsletter", "click"):
            path = po_path(language, domain).with_suffix(".mo")
            path.write_bytes(compiled(language, domain))
            print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "update":
        update()
    elif command == "compile":
        compile_all()
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
