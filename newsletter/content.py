"""Issue folders and Markdown articles -> Issue, Article.

An issue is a folder ``content/issues/<YYYY-MM>-<slug>/`` with ``issue.md`` (front matter
and the editor's introduction) and one ``*.md`` file per article. Everything is read and
validated here, before anything is rendered.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import yaml

from .config import LANGUAGES, Category, Settings, find_category
from .errors import ERROR, WARNING, ContentError, Finding, ProjectError, where
from .language import N_, _, os_reason
from .markup import Rendered, is_relative, render_markdown

ISSUE_FILE = "issue.md"
ISSUE_NAME = re.compile(r"^\d{4}-\d{2}-[a-z0-9][a-z0-9-]*$")
IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".gif"}


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML (the C loader when libyaml is there) where only true/false are booleans.

    YAML 1.1 also reads yes/no/on/off as booleans: 'title: No' or 'language: no' must stay text.
    """


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A key written twice in one mapping: YAML would keep the last one without a word."""

    def __init__(self, key: str, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__("while reading a mapping", first, f"found duplicate key {key!r}", again)
        self.key = key


def _construct_mapping(loader: yaml.constructor.SafeConstructor, node: yaml.Node, deep: bool = False) -> dict:
    seen: dict[str, yaml.Mark] = {}
    for key_node, _value in node.value if isinstance(node, yaml.MappingNode) else ():
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise _DuplicateKey(key_node.value, seen[key_node.value], key_node.start_mark)
            seen[key_node.value] = key_node.start_mark
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_Loader.construct_mapping = _construct_mapping  # type: ignore[method-assign]
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_YAML_LOADER = _Loader

ISSUE_KEYS = {"title", "subject", "preheader", "date", "language", "sections", "emissions", "feeds"}
ARTICLE_KEYS = {"title", "category", "order", "image", "image_alt", "link", "link_text"}


@dataclass(frozen=True)
class Asset:
    """A file from the issue folder that is copied into the build and linked publicly."""

    source: Path
    filename: str
    url: str


@dataclass(frozen=True)
class Image:
    """An article's lead image."""

    url: str
    alt: str


@dataclass(frozen=True)
class Article:
    """One article of an issue, rendered to HTML and text."""

    id: str
    path: Path
    title: str
    category: Category | None
    order: int | None
    image: Image | None
    link: str | None
    link_text: str | None
    html: str
    text: str


@dataclass(frozen=True)
class Issue:
    """One issue: its settings from front matter, introduction and articles."""

    id: str
    path: Path
    title: str
    subject: str
    preheader: str
    date: date
    language: str
    sections: tuple[Category, ...]
    intro_html: str
    intro_text: str
    articles: tuple[Article, ...]
    assets: tuple[Asset, ...]
    front_matter: dict[str, Any]
    findings: tuple[Finding, ...]  # warnings, and errors the check reports (see load_issue)
    refused_links: tuple[tuple[str, int, str], ...] = ()  # (file, line, target) Markdown showed as text


def display(path: Path) -> str:
    """A path relative to the current folder when it is below it, for messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def slugify(text: str) -> str:
    """A URL- and folder-safe name: 'Ordførererklæringen 2026' -> 'ordforerklaeringen-2026'."""
    text = text.lower()
    for src, dst in (("æ", "ae"), ("ø", "o"), ("å", "a")):
        text = text.replace(src, dst)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    if len(slug) > 60:
        slug = slug[:61].rsplit("-", 1)[0]
    return slug[:60].strip("-") or "nyhetsbrev"


# --- finding issues -------------------------------------------------------------------------


def issue_folders(settings: Settings) -> list[Path]:
    """Every folder under content/issues that has an issue.md, sorted by name."""
    root = settings.issues_dir
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / ISSUE_FILE).is_file())


AHEAD_DAYS = 62  # an issue dated further ahead than this is probably a typing error in its date

_COPY = re.compile(r"(?:\s*[-–]\s*(?:kopi|copy)(?:\s*\(\d+\))?|\s*\(\d+\)|\s+(?:kopi|copy)(?:\s+\d+)?)$", re.I)


def folder_problem(name: str, issue_date: date | None = None) -> str | None:
    """Why an issue folder's name cannot be an issue's name (None when it can): a copy made by
    File Explorer or Finder ('... - Kopi', '... (1)'), or a name that would make a bad web
    address (spaces, capitals, æøå). The message names the rename."""
    if _COPY.search(name):
        return _(
            "'{name}' looks like a copy of another issue's folder (made by File Explorer or Finder); delete it, or rename it for an issue of its own, e.g. 2027-02-neste-utgave.",
            name=name,
        )
    if not ISSUE_NAME.match(name):
        suggestion = slugify(name)
        if not re.match(r"^\d{4}-\d{2}-", suggestion):
            year_month = issue_date.strftime("%Y-%m") if issue_date else "YYYY-MM"
            suggestion = f"{year_month}-{re.sub(r'-?' + year_month[:4] + '$', '', suggestion) or 'utgave'}"
        return _(
            "the folder name '{name}' would make a bad web address (the archive uses it); rename the folder to '{suggestion}' (small letters, digits and hyphens, starting with the year and month).",
            name=name,
            suggestion=suggestion,
        )
    return None


def find_issue(settings: Settings, ref: str | None = None) -> Path:
    """The folder of the issue named by ``ref`` (folder name in any case, path or unique part),
    or the newest. A copy or a badly named folder never becomes the newest issue."""
    folders = issue_folders(settings)
    if ref is None:
        proper = [p for p in folders if folder_problem(p.name) is None]
        if not proper:
            hint = f" ({folder_problem(folders[0].name)})" if folders else ""
            raise ProjectError(
                _(
                    "No issues in {issues_dir}{hint}: create one with 'newsletter new \"Title\"'.",
                    issues_dir=display(settings.issues_dir),
                    hint=hint,
                )
            )
        # Newest by date; on the same date, the one edited last. A broken issue.md is an
        # error here too: silently building last month's issue instead would mislead.
        newest = max(proper, key=lambda p: (_issue_date(p), (p / ISSUE_FILE).stat().st_mtime, p.name))
        _no_newer_misnamed(folders, newest)
        return newest
    candidate = Path(ref)
    if candidate.name == ISSUE_FILE:
        candidate = candidate.parent
    if (candidate / ISSUE_FILE).is_file():
        return candidate.resolve()
    exact = [p for p in folders if p.name == ref] or [p for p in folders if p.name.lower() == ref.lower()]
    if len(exact) == 1:
        return exact[0]
    wanted = {ref.lower(), slugify(ref)}
    partial = [p for p in folders if any(w in p.name.lower() for w in wanted)]
    if len(partial) > 1:  # 'januar' names the issue, not also its File Explorer copy
        partial = [p for p in partial if folder_problem(p.name) is None] or partial
    if len(partial) == 1:
        return partial[0]
    known = ", ".join(p.name for p in sorted(folders, reverse=True)[:8]) or _("none yet")
    if len(partial) > 1:
        raise ProjectError(
            _(
                "Issue {ref!r} is ambiguous: it matches {name}; give the whole folder name.",
                ref=ref,
                name=", ".join(p.name for p in partial),
            )
        )
    names = {p.name: p.name for p in folders}
    for p in folders:  # 'febuar' is close to the word 'februar' in '2027-02-februar'
        names |= {word: p.name for word in p.name.split("-") if len(word) >= 4 and not word.isdigit()}
    guess = did_you_mean(ref, names)
    raise ProjectError(
        _(
            "Unknown issue {ref!r}{guess}: no folder of that name in {issues_dir} (known issues: {known}); check the name or create it with 'newsletter new \"Title\"'.",
            ref=ref,
            guess=guess,
            issues_dir=display(settings.issues_dir),
            known=known,
        )
    )


_TEXT_ENDINGS = (".md.txt", ".txt", ".markdown", ".mdown")
_DOCUMENTS = (".docx", ".doc", ".odt", ".rtf", ".pages")


def _not_an_article(path: Path) -> list[Finding]:
    """A warning for a file in the issue folder that looks meant as an article but is not read:
    'sak.md.txt' (Windows hides the .txt), a Word document. Images and other files are fine."""
    name = path.name.lower()
    if name == ISSUE_FILE:
        return []
    if name.endswith(_TEXT_ENDINGS):
        ending = next(e for e in _TEXT_ENDINGS if name.endswith(e))
        stem = path.name[: -len(ending)]
        level = WARNING if ending == ".txt" else ERROR  # 'sak.md.txt' is an article left out: not sent so
        return [Finding(level, display(path), _(
            "is not read: only files whose names end in .md are articles; rename it to '{name}' (Windows may hide the ending).",
            name=f"{stem}.md"))]  # fmt: skip
    if name.endswith(_DOCUMENTS):
        return [Finding(WARNING, display(path), _(
            "is a word-processor document and is not read; copy its text into a .md file in the issue folder (see the guide)."
        ))]  # fmt: skip
    return []


def _no_newer_misnamed(folders: list[Path], newest: Path) -> None:
    """Refuse to pick the newest issue past a folder dated later whose name cannot be an issue's
    ('Mars 2027'): that is the issue meant, and building last month's without a word would
    mislead. Copies made by File Explorer are passed over (the original is the issue)."""
    for folder in folders:
        if folder_problem(folder.name) is None or _COPY.search(folder.name):
            continue
        try:
            dated = _issue_date(folder)
        except (ContentError, ProjectError):
            continue  # its own problems show when it is named
        if dated > _issue_date(newest):
            raise ProjectError(
                _(
                    "The newest issue is in {folder}, but {problem} (An older issue can still be named: 'newsletter build {other}'.)",
                    folder=display(folder),
                    problem=folder_problem(folder.name, dated),
                    other=newest.name,
                )
            )


def fold(text: str) -> str:
    """Text to compare loosely: small letters, æøå as ae/o/a, no accents or punctuation."""
    text = text.lower()
    for src, dst in (("æ", "ae"), ("ø", "o"), ("å", "a")):
        text = text.replace(src, dst)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", text)


def did_you_mean(value: str, choices: list[str] | dict[str, str]) -> str:
    """'; did you mean 'X'?' for the choice closest to ``value`` (æøå and case aside), or ''.
    ``choices`` may map what is compared to what is suggested."""
    pairs = choices.items() if isinstance(choices, dict) else ((choice, choice) for choice in choices)
    folded = {fold(compared): shown for compared, shown in pairs}
    import difflib

    close = difflib.get_close_matches(fold(value), list(folded), n=1, cutoff=0.75)
    return _(" (did you mean '{folded}'?)", folded=folded[close[0]]) if close else ""


def issue_name(settings: Settings, ref: str | None) -> str:
    """The name of the issue ``ref`` names; when its folder is gone, ``ref`` itself (its
    deliveries and schedules are still found by name)."""
    try:
        return find_issue(settings, ref).name
    except ProjectError:
        if not ref:
            raise
        return ref


def _issue_date(folder: Path) -> date:
    """The date in an issue's front matter, validated (for choosing the newest issue)."""
    path = folder / ISSUE_FILE
    meta, _body, _first = split_front_matter(path)
    return _required_date(_Fields(path, meta))


# --- front matter -----------------------------------------------------------------------------


def _real_day(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


MAX_MARKDOWN = 2 << 20  # bytes: far more than any article; an email must stay under 102 KB anyway


def _no_aliases(path: Path, raw: str) -> None:
    """Refuse YAML anchors and aliases (&name, *name): front matter never needs them, and nested
    aliases expand to billions of values (an 'alias bomb') in a few lines."""
    if "*" not in raw and "&" not in raw:
        return
    try:
        for token in yaml.scan(raw, Loader=_YAML_LOADER):  # the parser that loads it, not another one
            if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
                kind = _("an alias (*name)") if isinstance(token, yaml.AliasToken) else _("an anchor (&name)")
                raise ContentError(
                    _(
                        "the front matter uses {kind}, which newsletter does not read; write the value out instead.",
                        kind=kind,
                    ),
                    f"{display(path)}:{token.start_mark.line + 2}",
                )
    except yaml.YAMLError:
        return  # the parser reports bad YAML itself, with its line


def split_front_matter(path: Path) -> tuple[dict[str, Any], str, int]:
    """(front matter, body, line number of the body's first line) of a Markdown file."""
    try:
        if path.stat().st_size > MAX_MARKDOWN:
            raise ContentError(
                _(
                    "the file is {st_size} MB; an article is at most {max_markdown} MB (check that it is the right file).",
                    st_size=path.stat().st_size >> 20,
                    max_markdown=MAX_MARKDOWN >> 20,
                ),
                display(path),
            )
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        data = path.read_bytes()
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Notepad's 'Unicode'
            raise ContentError(
                _("saved as 'Unicode' (UTF-16); save it again as UTF-8: in Notepad, File > Save as, Encoding: UTF-8."),
                display(path),
            ) from exc
        line = data[: exc.start].count(b"\n") + 1
        raise ContentError(
            _(
                "not UTF-8 text (saved as 'ANSI', say, where æøå are stored otherwise); save it again as UTF-8: in Notepad, File > Save as, Encoding: UTF-8.",
            ),
            f"{display(path)}:{line}",
        ) from exc
    except OSError as exc:
        raise ContentError(_("cannot be read ({strerror}).", strerror=os_reason(exc)), display(path)) from exc
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ContentError(
            _(
                "the file must start with front matter between two '---' lines (title: ... and the other fields); add it at the top."
            ),
            f"{display(path)}:1",
        )
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        raise ContentError(_("the front matter is not closed; add a line with '---' after it."), f"{display(path)}:1")
    starts = {number for number, _line in _scan(lines[1:end])[0]}
    for number, line in enumerate(lines[1:end], 2):
        if line.startswith("\t") or re.match(r"^[\w-]+:\s*\t", line):
            raise ContentError(
                _("the front matter has a tab character; use spaces instead of tabs."), f"{display(path)}:{number}"
            )
        if number not in starts:
            continue  # an inner line of a block text (|, >) or of a quoted value that goes on
        opened = re.match(r"^\s*[\w-]+\s*:\s*([“„«‘‚\"'])(.*)$", line)
        if (
            opened
            and opened[1] not in "\"'"
            and re.search(r"[”»’“][^”»’“]*\S", opened[2])
            and not _CURLY_VALUE.match(line)
        ):
            raise ContentError(  # “Februar: gods på bane” – og mer
                _("there is text after the closing quote on this line; put all of the text inside the quotes."),
                f"{display(path)}:{number}",
            )
        if opened and opened[1] not in "\"'" and not _CURLY_VALUE.match(line):  # Word's opening quote, no closing one
            raise ContentError(
                _("the quote {quote} that starts on this line is never closed; end the text with the same kind of quote.",
                  quote=opened.group(1)),
                f"{display(path)}:{number}",
            )  # fmt: skip
    raw = "\n".join(_straight_quotes(line) for line in lines[1:end])
    _no_aliases(path, raw)
    try:
        meta = yaml.load(raw, Loader=_YAML_LOADER) if raw.strip() else {}
    except yaml.MarkedYAMLError as exc:
        indented = _stray_indent(lines[1:end])
        if indented is not None:  # YAML's own words for it ('expected <document start>') help nobody
            number, key = indented
            raise ContentError(
                _("this line begins with a space; remove the space before '{key}:' (the lines start at the left margin).",
                  key=key),
                f"{display(path)}:{number}",
            ) from exc  # fmt: skip
        _line_problem(path, lines[1:end])
        raise ContentError(*_yaml_problem(exc, path)) from exc
    except (yaml.YAMLError, ValueError) as exc:
        # e.g. 'date: 2027-02-30', which YAML reads as a date and cannot build: name the line
        # with a date that is not a real day.
        for number, text_line in enumerate(lines[1:end], 2):
            found = re.search(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", text_line)
            if found and not _real_day(*map(int, found.groups())):
                raise ContentError(
                    _("the date {date} does not exist; check the day and the month (YYYY-MM-DD).", date=found.group(0)),
                    f"{display(path)}:{number}",
                ) from exc
        raise ContentError(
            _("bad front matter ({exc}); check the dates (YYYY-MM-DD, a real day).", exc=exc), f"{display(path)}:2"
        ) from exc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        _line_problem(path, lines[1:end])  # 'title:"Plan"' alone is read as one text
        raise ContentError(_("the front matter must be 'key: value' lines, not a list or text."), f"{display(path)}:2")
    _escaped_controls(path, meta)
    return meta, "\n".join(lines[end + 1 :]), end + 2


_KEY_LINE = re.compile(r"^[A-Za-z_][\w-]*\s*:(?:\s|$)")


def _closes(text: str, quote: str) -> bool:
    """Whether ``text`` (what follows an opening quote) has the closing one."""
    if quote == '"':
        return re.search(r'(?<!\\)(?:\\\\)*"', text) is not None
    return re.search(r"'", text.replace("''", "")) is not None


def _scan(lines: list[str]) -> tuple[list[tuple[int, str]], int | None]:
    """Follow the front matter's lines (``lines[0]`` is file line 2): (file line, line) of each
    line that begins a value, not the inner lines of a block text ('|', '>') or of a quoted value
    that goes on over several lines; and the file line of a quote never closed (still open at
    the end, or when the next 'key: ' line came first), or None."""
    starts: list[tuple[int, str]] = []
    block, quote, opened, unclosed = False, "", 0, None
    for number, line in enumerate(lines, 2):
        if quote and not _KEY_LINE.match(line):
            quote = "" if _closes(line, quote) else quote
            continue
        if quote:  # a 'key: ' line ends it: that quote was never closed
            unclosed = unclosed or opened
            quote = ""
        if block and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        block = False
        starts.append((number, line))
        found = re.match(r"^\s*(?:- )?[\w-]+\s*:\s*(.*)$", line)
        value = found[1] if found else ""
        if re.match(r"^[|>][+-]?\d*\s*(?:#.*)?$", value):
            block = True
        elif value[:1] in ('"', "'") and not _closes(value[1:], value[0]):
            quote, opened = value[0], number
    return starts, unclosed or (opened if quote else None)


def _line_problem(path: Path, lines: list[str]) -> None:
    """When YAML cannot read the front matter: the mistakes people make, each at its line (run
    only then, so that text inside a block or a long quoted value is never taken for them)."""
    for number, line in _scan(lines)[0]:
        glued = re.match(r"^([A-Za-z_][\w-]*):(\S.*)$", line)
        if glued:  # 'title:"Plan"': YAML reads the whole line as one text, not as a name and a value
            raise ContentError(
                _("there is no space after '{key}:'; write {key}: {value}", key=glued[1], value=glued[2].strip()),
                f"{display(path)}:{number}",
            )
        if _BACKSLASH_IN_QUOTES.match(line):  # "C:\Users\kari": \U is an escape YAML cannot read
            raise ContentError(_backslash_message(), f"{display(path)}:{number}")
        opened = re.match(r"^\s*[\w-]+\s*:\s*([\"'])(.*)$", line)
        if opened and re.search(r"[”»’“]\s*$", opened[2]) and opened[1] not in opened[2]:
            raise ContentError(  # "Klima: nye mål”: one quote typed, the other pasted from Word
                _("the text starts with {first} but ends with {last}; use the same kind of quote at both ends.",
                  first=opened[1], last=opened[2].rstrip()[-1]),
                f"{display(path)}:{number}",
            )  # fmt: skip


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _escaped_controls(path: Path, meta: dict[str, Any]) -> None:
    """A value that YAML read with a control character from a backslash in double quotes
    ("bilder\bilde.jpg": \b is a backspace), or a file name with a line break (\n)."""
    for key, value in meta.items():
        if isinstance(value, str) and (
            _CONTROL.search(value) or (key in ("image", "link") and re.search(r"[\n\t]", value))
        ):
            raise ContentError(_backslash_message(), f"{display(path)}:{key_lines(path).get(str(key), 2)}")


_CURLY = {"“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "‚": "'"}
_CURLY_VALUE = re.compile(r"^(\s*[\w-]+\s*:\s*)([“”„«‘’‚])(.*)([“”»‘’])\s*$")


def _straight_quotes(line: str) -> str:
    """A value written in typographic quotes (pasted from Word: “Hei: du”) as YAML reads quotes."""
    match = _CURLY_VALUE.match(line)
    if not match or _CURLY[match.group(2)] != _CURLY[match.group(4)]:
        return line
    inner = match.group(3)
    if _CURLY[match.group(2)] == '"':
        return f'{match.group(1)}"{inner.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
    return f"{match.group(1)}'{inner.replace(chr(39), chr(39) * 2)}'"


def _stray_indent(lines: list[str]) -> tuple[int, str] | None:
    """(line number, key) of a top-level 'key: value' line typed with a space in front: one that
    does not follow a 'key:' line opening a nested block."""
    opener = False
    for number, line in enumerate(lines, 2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^( +)([A-Za-z_][\w-]*)\s*:", line)
        if match and not opener:
            return number, match.group(2)
        if not line.startswith(" "):
            opener = bool(re.match(r"^[\w-]+\s*:\s*$", line))  # 'emissions:' with its values below
    return None


# A double-quoted value with a backslash that is not \" or \\ (a Windows path, as a rule).
_BACKSLASH_IN_QUOTES = re.compile(r'^\s*[\w-]+\s*:\s*"(?:[^"\\]|\\["\\])*\\(?!["\\])')


def _backslash_message() -> str:
    return _("a backslash (\\) inside double quotes; write / in file paths, or put the text in single quotes instead.")


_TEXT_AFTER_QUOTE = re.compile(r"""^\s*[\w-]+\s*:\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^']|'')*')\s*[^\s#]""")


def _yaml_problem(exc: yaml.MarkedYAMLError, path: Path) -> tuple[str, str]:
    """(what is wrong in plain words, file:line) for YAML's own error: the line where the mistake
    is, not where the parser noticed it (an unclosed quote is noticed at the end)."""
    context, problem = exc.context or "", exc.problem or ""
    mark = exc.problem_mark or exc.context_mark
    try:
        lines = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")[1:]  # lines[0] is file line 2
    except (OSError, UnicodeDecodeError):
        lines = []
    upto = lines[: mark.line + 1] if mark else lines
    opened = _scan(upto)[1]
    unclosed = opened - 2 if opened is not None else None  # as an index of ``lines``
    after_quote = next((n for n, line in enumerate(upto) if _TEXT_AFTER_QUOTE.match(line)), None)
    if isinstance(exc, _DuplicateKey) and exc.context_mark is not None:
        message = _(
            "'{key}' is written twice (also on line {first}), and only one can count; keep the one you mean and remove the other.",
            key=exc.key,
            first=exc.context_mark.line + 2,
        )
    elif "did not find expected key" in problem and unclosed is not None:  # the quote closes lines later
        mark = yaml.Mark("", 0, unclosed, 0, None, None)
        message = _("the quote that starts on this line is never closed; end the text with the same quote mark.")
    elif "did not find expected key" in problem and after_quote is not None and lines[after_quote].count('"') >= 3:
        mark = yaml.Mark("", 0, after_quote, 0, None, None)  # title: "Han sa "hei" til oss"
        key, _colon, value = lines[after_quote].partition(":")
        message = _(
            "quote marks inside a text in quotes; use « » inside it, or put the whole text in single quotes: {key}: '{value}'",
            key=key.strip(),
            value=value.strip()[1:-1] if value.strip().endswith('"') else value.strip()[1:],
        )
    elif "did not find expected key" in problem and after_quote is not None:
        mark = yaml.Mark("", 0, after_quote, 0, None, None)
        message = _("there is text after the closing quote on this line; put all of the text inside the quotes.")
    elif (
        "did not find expected key" in problem and mark and mark.line < len(lines) and lines[mark.line].startswith("-")
    ):
        message = _(
            "a line that starts with '-' (a list) where a 'key: value' line belongs; remove the '-', or put the text in quotes."
        )
    elif "unknown escape character" in problem or "escape sequence" in problem:
        message = _backslash_message()
    elif "cannot start any token" in problem:
        message = _("a value that starts with @ or ` must be in quotes: put the whole text in quotes.")
    elif "quoted scalar" in context and exc.context_mark is not None:
        mark = exc.context_mark
        message = _("the quote that starts on this line is never closed; end the text with the same quote mark.")
    elif "flow sequence" in context and exc.context_mark is not None:
        mark = exc.context_mark
        message = _("the '[' on this line starts a list that is never closed; end it with ']' or remove the '['.")
    elif "flow mapping" in context and exc.context_mark is not None:
        mark = exc.context_mark
        message = _("the '{{' on this line is never closed; end it with '}}' or put the whole text in quotes.")
    elif "mapping values are not allowed" in problem:
        column = _(" (column {column})", column=mark.column + 1) if mark else ""
        key, value = "title", "Klima: dette skjer"
        try:  # the line itself, as the example of what to write
            line = path.read_text(encoding="utf-8-sig").splitlines()[mark.line + 1] if mark else ""
        except (OSError, UnicodeDecodeError, IndexError):
            line = ""
        written = re.match(r"^([A-Za-z_][\w-]*):\s*(.+?)\s*$", line)
        if written and '"' not in written[2]:
            key, value = written[1], written[2]
        message = _(
            "a ':' followed by a space inside text that is not in quotes{column}; put the whole text in quotes: {key}: \"{value}\".",
            column=column,
            key=key,
            value=value,
        )
    elif "could not find expected ':'" in problem or "simple key" in context:
        message = _("a line that is not 'key: value'; write a name, a ':' and the value, or put a long text in quotes.")
    else:
        message = _(
            "the front matter cannot be read ({value}); write 'key: value' lines and put text containing ':' or '#' in quotes.",
            value=problem or _("invalid YAML"),
        )
    return message, where(display(path), mark.line + 2 if mark else None)


def key_lines(path: Path) -> dict[str, int]:
    """Line number of each top-level front-matter key, for messages."""
    result = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").split("\n")[1:], 2):
        if line.strip() in ("---", "..."):
            break
        match = re.match(r"^([A-Za-z_][\w-]*)\s*:", line)
        if match:
            result.setdefault(match.group(1), n)
    return result


def comment_warnings(path: Path) -> list[Finding]:
    """Errors where YAML read the end of an unquoted text as a comment ('title: Vi er #1' would
    be sent as 'Vi er'): the text would change without a word, so it is not sent like that."""
    found = []
    for key, line in key_lines(path).items():
        if key not in ("title", "subject", "preheader", "link_text", "image_alt"):
            continue
        text = path.read_text(encoding="utf-8-sig").split("\n")[line - 1]
        value = text.split(":", 1)[1].strip()
        if value and value[0] not in "'\"" + "".join(_CURLY) and " #" in value:
            kept = value.split(" #", 1)[0].strip()
            found.append(
                Finding(
                    ERROR,
                    where(display(path), line),
                    _(
                        "the text after '#' is left out (it reads as a comment), so the {key} would be just {kept!r}; "
                        'put the whole {key} in quotes: {key}: "{value}".',
                        key=key,
                        kept=kept,
                        value=value,
                    ),
                )
            )
    return found


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        norwegian = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", value.strip())  # 14.01.2027, as Norwegians write it
        if norwegian:
            return date(int(norwegian[3]), int(norwegian[2]), int(norwegian[1]))
        return date.fromisoformat(value.strip())
    if value is None:
        return None
    raise ValueError(value)


def _required_date(fields: _Fields) -> date:
    try:
        value = _as_date(fields.meta.get("date"))
    except ValueError:
        raise fields.fail(
            "date",
            _("date {value!r} is not a date; write it as YYYY-MM-DD or DD.MM.YYYY.", value=fields.meta.get("date")),
        ) from None
    if value is None:
        raise ContentError(
            _("missing required front matter 'date'; add a line 'date: YYYY-MM-DD' between the '---' lines."),
            f"{display(fields.path)}:2",
        )
    return value


class _Fields:
    """Typed access to one file's front matter with located error messages."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        self.meta = meta
        self.lines = key_lines(path)

    def at(self, key: str) -> str:
        return where(display(self.path), self.lines.get(key))

    def item_line(self, key: str, value: str) -> int | None:
        """The line of '- value' in the list under ``key``, if it stands on a line of its own."""
        start = self.lines.get(key)
        if start is None:
            return None
        try:
            text = self.path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")
        except (OSError, UnicodeDecodeError):
            return None
        for number in range(start + 1, len(text) + 1):
            line = text[number - 1]
            if line.strip() in ("---", "...") or (line and not line.startswith((" ", "-"))):
                return None  # the list has ended
            item = line.strip().lstrip("-").strip().strip("'\"")
            if line.strip().startswith("-") and item == value:
                return number
        return None

    def fail(self, key: str, message: str) -> ContentError:
        return ContentError(message, self.at(key))

    def finding(self, key: str, message: str, level: str = ERROR) -> Finding:
        return Finding(level, self.at(key), message)

    def text(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.meta.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            capital = next((k for k in self.meta if isinstance(k, str) and k != key and k.lower() == key), None)
            if required and capital is not None:  # 'Title:' (others are named by _unknown_keys)
                raise self.fail(capital, _("write '{key}' in small letters: {key}: ... (not {written}:).", key=key,
                                           written=capital))  # fmt: skip
            if required and key in self.meta:  # 'title:' with nothing after it
                raise self.fail(key, _("'{key}' is empty; write the text after '{key}:'.", key=key))
            if required:
                raise ContentError(
                    _(
                        "missing required front matter '{key}'; add a line '{key}: ...' between the '---' lines.",
                        key=key,
                    ),
                    f"{display(self.path)}:2",
                )
            return default
        if isinstance(value, (dict, list)):
            raise self.fail(key, _("'{key}' must be text, not a list or table.", key=key))
        text = str(value).strip()
        if "\n" in text and key in ("title", "subject", "preheader", "link_text", "image_alt"):
            text = " ".join(text.split())
        return text


# --- loading ----------------------------------------------------------------------------------


def _same_but_case(path: Path) -> Path | None:
    """The file beside ``path`` whose name differs from it only in capital letters ('Kart.PNG'
    for 'kart.png'): Windows and Macs find it, the web server that publishes the issue does not."""
    try:
        return next(
            (p for p in path.parent.iterdir() if p.name.casefold() == path.name.casefold() and p.is_file()), None
        )
    except OSError:
        return None


class _Assets:
    """Collects files referenced by relative path and gives each a public URL."""

    def __init__(self, settings: Settings, issue_dir: Path, issue_id: str):
        self.settings = settings
        self.issue_dir = issue_dir
        self.issue_id = issue_id
        self.found: dict[Path, Asset] = {}
        self.findings: list[Finding] = []  # files that cannot be published

    def add(self, target: str, kind: str, origin: str) -> str:
        """The public URL of a file the issue links or shows. A file that cannot be published is
        an error finding (the rest of the issue is still built and checked)."""
        relative = unquote(target.split("#")[0].split("?")[0])
        source = (self.issue_dir / relative).resolve()
        problem = None
        if not source.is_relative_to(self.issue_dir):
            problem = _(
                "'{relative}' is outside the issue folder; only files in {issue_dir} are published.",
                relative=relative,
                issue_dir=display(self.issue_dir),
            )
        elif not source.is_file() and "\\" in relative:  # a Windows path: bilder\bilde.jpg
            problem = _(
                "'{relative}' has a backslash (\\); write / between folders: {fixed}",
                relative=relative,
                fixed=relative.replace("\\", "/"),
            )
        elif not source.is_file() and re.match(r"^(www\.|[\w-]+\.(no|com|org|net|eu)(/|$))", relative):
            problem = _("'{relative}' looks like a web address; write it with https:// in front.", relative=relative)
        elif not source.is_file() and (twin := _same_but_case(source)) is not None:
            problem = _(
                "'{relative}' is not there, but {name} is: write the name as it is, capital letters too.",
                relative=relative,
                name=twin.name,
            )
        elif not source.is_file():
            missing = (
                N_("image file '{relative}' not found in {issue_dir}; check the name (capital letters count) or add the file to the issue folder.")
                if kind == "image"
                else N_("linked file '{relative}' not found in {issue_dir}; check the name (capital letters count) or add the file to the issue folder.")
            )  # fmt: skip
            problem = _(missing, relative=relative, issue_dir=display(self.issue_dir))
        elif kind == "image" and source.suffix.lower() not in IMAGE_TYPES:
            problem = _(
                "image '{relative}' is {value}; email programs show PNG, JPEG and GIF: save it as one of those.",
                relative=relative,
                value=source.suffix or _("not a known type"),
            )
        elif kind == "image" and not _is_picture(source):
            problem = _(
                "'{relative}' is not a PNG, JPEG or GIF picture inside (only its name ends in {suffix}); save it again as one of those from an image program.",
                relative=relative,
                suffix=source.suffix,
            )
        if problem is not None:
            self.findings.append(Finding(ERROR, origin, problem))
            return self.settings.asset_url(self.issue_id, quote(Path(relative).name or "missing"))
        if source not in self.found:
            try:
                name = source.relative_to(self.issue_dir).as_posix().replace("/", "-")
            except ValueError:
                name = source.name
            taken = {a.filename for a in self.found.values()}
            stem, suffix, n = Path(name).stem, Path(name).suffix, 2
            while name in taken:
                name, n = f"{stem}-{n}{suffix}", n + 1
            self.found[source] = Asset(source, name, self.settings.asset_url(self.issue_id, quote(name)))
        return self.found[source].url

    def width(self, url: str) -> int | None:
        """The width an image at ``url`` is shown at: its own, at most the text column's."""
        for source, asset in self.found.items():
            if asset.url == url:
                natural = image_width(source)
                return None if natural is None else min(natural, CONTENT_WIDTH)
        return None


CONTENT_WIDTH = 552  # the email's 600 px column less its 24 px padding on each side


def _is_picture(path: Path) -> bool:
    """Whether the file starts like a PNG, GIF or JPEG (whatever its name says)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head.startswith((b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"\xff\xd8\xff"))


def image_width(path: Path) -> int | None:
    """The pixel width of a PNG, GIF or JPEG, read from its header; None if it cannot be read
    (or says 0, which would hide the image)."""
    width = _header_width(path)
    return width if width else None


def _header_width(path: Path) -> int | None:
    try:
        with path.open("rb") as handle:
            head = handle.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                return struct.unpack(">I", head[16:20])[0]
            if head[:6] in (b"GIF87a", b"GIF89a"):
                return struct.unpack("<H", head[6:8])[0]
            if head[:2] != b"\xff\xd8":
                return None
            handle.seek(2)
            while True:  # JPEG: walk the segments to the frame header (SOF0-SOF15 but 4, 8, 12)
                marker = handle.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    return None
                if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                    frame = handle.read(7)
                    return struct.unpack(">H", frame[5:7])[0] if len(frame) == 7 else None
                size = handle.read(2)
                if len(size) < 2:
                    return None
                handle.seek(struct.unpack(">H", size)[0] - 2, 1)
    except (OSError, struct.error):  # unreadable or cut short (a file still being saved)
        return None


def _unknown_keys(fields: _Fields, meta: dict[str, Any], known: set[str]) -> list[Finding]:
    """Front matter keys this program does not know. One that is a typing error of a known key
    ('categroy') is an error, since what it meant would be lost without a word; another is
    ignored with a warning."""
    found = []
    for key in sorted(set(meta) - known, key=str):
        guess = did_you_mean(str(key), sorted(known))
        if str(key).lower() in known:  # 'Category:': the names are written in small letters
            found.append(fields.finding(key, _("write '{key}' in small letters: {key}: ... (not {written}:).",
                                               key=str(key).lower(), written=key)))  # fmt: skip
        elif guess:
            found.append(
                fields.finding(key, _("unknown front matter '{key}'{guess}; correct the name.", key=key, guess=guess))
            )
        else:
            ignored = _(
                "unknown front matter '{key}' is ignored (known: {known}).", key=key, known=", ".join(sorted(known))
            )
            found.append(fields.finding(key, ignored, WARNING))
    return found


def _category(
    settings: Settings, fields: _Fields, value: str | None, found: list[Finding], key: str = "category"
) -> Category | None:
    if value is None:
        return None
    category = find_category(settings.categories, value)
    if category is not None:
        return category
    choices = "; ".join(f"{c.key} ({c.nb})" for c in settings.categories)
    names = [name for c in settings.categories for name in (c.key, c.nb, c.en, *c.aliases)]
    place = fields.at(key)
    if key == "sections":  # the item's own line: '- tranport' below 'sections:'
        place = where(display(fields.path), fields.item_line(key, value) or fields.lines.get(key))
    found.append(
        Finding(
            ERROR,
            place,
            _(
                "unknown category {value!r}{value2}; use one of: {choices}.",
                value=value,
                value2=did_you_mean(str(value), names),
                choices=choices,
            ),
        )
    )
    return None


def _body_anyway(
    settings: Settings, assets: _Assets, path: Path, found: list[Finding], refused: list[tuple[str, int, str]]
) -> None:
    """The links and images of an article whose front matter cannot be read, checked all the
    same, so that one 'check' names every problem (the article itself stays out of the issue)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n").split("\n")
    except (OSError, UnicodeDecodeError):
        return
    end = next((n for n in range(1, len(lines)) if lines[n].strip() in ("---", "...")), None)
    if not lines or lines[0].strip() != "---" or end is None:
        return
    scratch = _Assets(settings, assets.issue_dir, assets.issue_id)  # its files are not published
    _render(settings, scratch, path, "\n".join(lines[end + 1 :]), end + 2, refused, found)
    found.extend(scratch.findings)


def _render(
    settings: Settings,
    assets: _Assets,
    path: Path,
    body: str,
    first_line: int,
    refused: list[tuple[str, int, str]],
    found: list[Finding],
) -> Rendered:
    def resolve(target: str, kind: str, line: int) -> str:
        return assets.add(target, kind, where(display(path), first_line + line))

    rendered = render_markdown(body, resolve, allow_raw_html=settings.allow_raw_html, width=assets.width)
    for line, src, alt in rendered.images:  # from the same parse
        if not alt.strip():
            found.append(
                Finding(
                    ERROR,
                    where(display(path), first_line + line),
                    _(
                        "image '{src}' has no alt text; write a short description in the brackets: ![Description](file.jpg).",
                        src=src,
                    ),
                )
            )
    refused += [(display(path), first_line + line, target) for line, target in rendered.refused]
    for line, what in rendered.removed:
        found.append(
            Finding(
                WARNING,
                where(display(path), first_line + line),
                _(
                    "raw HTML: {what} was removed (not allowed in emails: scripts, frames, forms and event handlers never are); write it another way.",
                    what=what,
                ),
            )
        )
    return rendered


def load_issue(settings: Settings, folder: Path) -> Issue:
    """Read and validate one issue folder: front matter, introduction, articles, images.

    Problems that leave the rest readable (an image without alt text, a missing file, an
    unknown category, an article whose front matter is broken) are error findings in
    ``Issue.findings``, so that one run reports them all; only an issue.md without its required
    fields raises ContentError, since nothing can be built without them."""
    folder = folder.resolve()
    issue_path = folder / ISSUE_FILE
    meta, body, first = split_front_matter(issue_path)
    fields = _Fields(issue_path, meta)
    found: list[Finding] = comment_warnings(issue_path)
    issue_id = folder.name
    if folder_problem(issue_id) is not None:  # its name is in every link to the archive: it cannot be sent like this
        date_line = meta.get("date") if isinstance(meta.get("date"), date) else None
        raise ContentError(folder_problem(issue_id, date_line), display(folder))
    found += _unknown_keys(fields, meta, ISSUE_KEYS)

    title = fields.text("title", required=True)
    subject = fields.text("subject", default=title)
    preheader = fields.text("preheader", default="")
    issue_date = _required_date(fields)
    if (issue_date - date.today()).days > AHEAD_DAYS:
        found.append(fields.finding("date", _(
            "the issue is dated {date}, more than two months from today; check the year and month in 'date:'.",
            date=issue_date.isoformat()), WARNING))  # fmt: skip
    language = fields.text("language", default=settings.language)
    if language not in LANGUAGES:
        found.append(
            fields.finding("language", _("language {language!r} is not supported; use nb or en.", language=language))
        )
        language = settings.language

    if meta.get("feeds") is not None and not isinstance(meta["feeds"], bool):  # 'feeds: nei' must not mean yes
        said = str(meta["feeds"]).strip().lower()
        meant = "false" if said in ("nei", "no", "n", "av", "off", "0", "usant") else "true"
        found.append(
            fields.finding(
                "feeds",
                _(
                    "'feeds' can only be true or false, not {value!r}; write feeds: {meant}",
                    value=meta["feeds"],
                    meant=meant,
                ),
            )
        )
    sections = list(settings.categories)
    if meta.get("sections") is not None:
        raw = meta["sections"]
        if not isinstance(raw, list):
            found.append(
                fields.finding("sections", _("'sections' must be a list of categories, one '- name' line each."))
            )
            raw = []
        ordered = [_category(settings, fields, str(s), found, key="sections") for s in raw]
        sections = [c for c in ordered if c] + [c for c in sections if c not in ordered]

    assets = _Assets(settings, folder, issue_id)
    refused: list[tuple[str, int, str]] = []
    intro = _render(settings, assets, issue_path, body, first, refused, found)

    articles = []
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".", "~$")))
    others = []  # '~$' above: the lock file Word keeps beside an open document
    for path in files:
        if path.suffix.lower() != ".md" or path.name.lower() == ISSUE_FILE:
            others.append(path)
            continue
        try:
            articles.append(_load_article(settings, assets, path, found, refused))
        except ContentError as exc:  # this article cannot be read: the others are still checked
            found.append(exc.finding)
            _body_anyway(settings, assets, path, found, refused)
    linked = set(assets.found)  # a document the issue links to is an attachment, not a lost article
    found.extend(f for path in others if path.resolve() not in linked for f in _not_an_article(path))
    seen: dict[str, Path] = {}
    for article in articles:
        if article.id in seen:
            found.append(
                Finding(
                    ERROR,
                    display(article.path),
                    _(
                        "has the same name as {name} once æøå and spaces are simplified; rename one of them.",
                        name=seen[article.id].name,
                    ),
                )
            )
        seen.setdefault(article.id, article.path)
    # Reading order: loose articles first, then by section, then 'order', then file name.
    position = {c.key: n for n, c in enumerate(sections, 1)}
    articles.sort(
        key=lambda a: (
            position[a.category.key] if a.category else 0,
            a.order if a.order is not None else 10_000,
            a.path.name,
        )
    )

    return Issue(
        id=issue_id,
        path=folder,
        title=title,
        subject=subject,
        preheader=preheader,
        date=issue_date,
        language=language,
        sections=tuple(sections),
        intro_html=intro.html,
        intro_text=intro.text,
        articles=tuple(articles),
        assets=tuple(assets.found.values()),
        front_matter=meta,
        findings=(*found, *assets.findings),
        refused_links=tuple(refused),
    )


def _load_article(
    settings: Settings, assets: _Assets, path: Path, found: list[Finding], refused: list[tuple[str, int, str]]
) -> Article:
    meta, body, first = split_front_matter(path)
    fields = _Fields(path, meta)
    title = fields.text("title", required=True)
    found.extend(comment_warnings(path))
    found += _unknown_keys(fields, meta, ARTICLE_KEYS)
    category = _category(settings, fields, fields.text("category"), found)

    order = meta.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
        found.append(
            fields.finding("order", _("order {order!r} must be a whole number such as 1, 2 or 3.", order=order))
        )
        order = None

    image = None
    image_src = fields.text("image")
    if image_src:
        alt = fields.text("image_alt")
        if not alt:
            found.append(
                fields.finding(
                    "image",
                    _(
                        "image '{image_src}' has no alt text; add 'image_alt: <what the picture shows>'.",
                        image_src=image_src,
                    ),
                )
            )
        if is_relative(image_src):
            image = Image(url=assets.add(image_src, "image", fields.at("image")), alt=alt or "")
        elif image_src.startswith("https://"):
            image = Image(url=image_src, alt=alt or "")
        else:
            found.append(
                fields.finding(
                    "image",
                    _(
                        "image {image_src!r} must be a file in the issue folder or an https:// address.",
                        image_src=image_src,
                    ),
                )
            )
    elif meta.get("image_alt"):
        found.append(fields.finding("image_alt", _("image_alt without image is ignored."), WARNING))

    link = fields.text("link")
    if link:
        if is_relative(link):
            link = assets.add(link, "link", fields.at("link"))
        elif not link.startswith(("https://", "http://", "mailto:")):
            found.append(
                fields.finding("link", _("link {link!r} must start with https://, http:// or mailto:.", link=link))
            )
            link = None

    rendered = _render(settings, assets, path, body, first, refused, found)
    return Article(
        id=slugify(path.stem),
        path=path,
        title=title,
        category=category,
        order=order,
        image=image,
        link=link,
        link_text=fields.text("link_text"),
        html=rendered.html,
        text=rendered.text,
    )
