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
from .errors import ContentError, ProjectError, where
from .markup import Rendered, image_alts, is_relative, render_markdown

ISSUE_FILE = "issue.md"
ISSUE_NAME = re.compile(r"^\d{4}-\d{2}-[a-z0-9][a-z0-9-]*$")
IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".gif"}


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML (the C loader when libyaml is there) where only true/false are booleans.

    YAML 1.1 also reads yes/no/on/off as booleans: 'title: No' or 'language: no' must stay text.
    """


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
    warnings: tuple[str, ...]
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


def find_issue(settings: Settings, ref: str | None = None) -> Path:
    """The folder of the issue named by ``ref`` (folder name, path or unique part), or the newest."""
    folders = issue_folders(settings)
    if ref is None:
        if not folders:
            raise ProjectError(
                f"No issues in {display(settings.issues_dir)}: create one with 'newsletter new \"Title\"'."
            )
        # Newest by date; on the same date, the one edited last. A broken issue.md is an
        # error here too: silently building last month's issue instead would mislead.
        return max(folders, key=lambda p: (_issue_date(p), (p / ISSUE_FILE).stat().st_mtime, p.name))
    candidate = Path(ref)
    if candidate.name == ISSUE_FILE:
        candidate = candidate.parent
    if (candidate / ISSUE_FILE).is_file():
        return candidate.resolve()
    exact = [p for p in folders if p.name == ref]
    if exact:
        return exact[0]
    wanted = {ref.lower(), slugify(ref)}
    partial = [p for p in folders if any(w in p.name for w in wanted)]
    if len(partial) == 1:
        return partial[0]
    known = ", ".join(p.name for p in sorted(folders, reverse=True)[:8]) or "none yet"
    if len(partial) > 1:
        raise ProjectError(
            f"Issue {ref!r} is ambiguous: it matches {', '.join(p.name for p in partial)}; give the whole folder name."
        )
    raise ProjectError(
        f"Unknown issue {ref!r}: no folder of that name in {display(settings.issues_dir)} "
        f"(known issues: {known}); check the name or create it with 'newsletter new \"Title\"'."
    )


def _issue_date(folder: Path) -> date:
    """The date in an issue's front matter, validated (for choosing the newest issue)."""
    path = folder / ISSUE_FILE
    meta, _, _ = split_front_matter(path)
    return _required_date(_Fields(path, meta))


# --- front matter -----------------------------------------------------------------------------


def _real_day(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def split_front_matter(path: Path) -> tuple[dict[str, Any], str, int]:
    """(front matter, body, line number of the body's first line) of a Markdown file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ContentError(f"{display(path)}: not UTF-8 text; save the file as UTF-8.") from exc
    except OSError as exc:
        raise ContentError(f"{display(path)}: cannot be read ({exc.strerror}).") from exc
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise ContentError(
            f"{display(path)}:1: the file must start with front matter between two '---' lines "
            "(title: ... and the other fields); add it at the top."
        )
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        raise ContentError(f"{display(path)}:1: the front matter is not closed; add a line with '---' after it.")
    raw = "\n".join(lines[1:end])
    for number, line in enumerate(lines[1:end], 2):
        if line.startswith("\t") or re.match(r"^[\w-]+:\s*\t", line):
            raise ContentError(
                f"{display(path)}:{number}: the front matter has a tab character; use spaces instead of tabs."
            )
    try:
        meta = yaml.load(raw, Loader=_YAML_LOADER) if raw.strip() else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark else None
        problem = exc.problem or "invalid YAML"
        raise ContentError(
            f"{where(display(path), line)}: bad front matter ({problem}); "
            "write 'key: value' lines and put text containing ':' or '#' in quotes."
        ) from exc
    except (yaml.YAMLError, ValueError) as exc:
        # e.g. 'date: 2027-02-30', which YAML reads as a date and cannot build: name the line
        # with a date that is not a real day.
        line = 2
        for number, text_line in enumerate(lines[1:end], 2):
            found = re.search(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", text_line)
            if found and not _real_day(*map(int, found.groups())):
                line = number
                break
        raise ContentError(
            f"{display(path)}:{line}: bad front matter ({exc}); check the dates (YYYY-MM-DD, a real day)."
        ) from exc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ContentError(f"{display(path)}:2: the front matter must be 'key: value' lines, not a list or text.")
    return meta, "\n".join(lines[end + 1 :]), end + 2


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


def comment_warnings(path: Path) -> list[str]:
    """Warn where YAML read the end of an unquoted text as a comment ('title: Vi er #1')."""
    found = []
    for key, line in key_lines(path).items():
        if key not in ("title", "subject", "preheader", "link_text", "image_alt"):
            continue
        text = path.read_text(encoding="utf-8-sig").split("\n")[line - 1]
        value = text.split(":", 1)[1].strip()
        if value and value[0] not in "'\"" and " #" in value:
            found.append(
                f"{where(display(path), line)}: the text after '#' was read as a comment; put the whole {key} in quotes."
            )
    return found


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value.strip())
    if value is None:
        return None
    raise ValueError(value)


def _required_date(fields: _Fields) -> date:
    try:
        value = _as_date(fields.meta.get("date"))
    except ValueError:
        raise fields.fail("date", f"date {fields.meta.get('date')!r} is not a date; write it as YYYY-MM-DD.") from None
    if value is None:
        raise ContentError(
            f"{display(fields.path)}:2: missing required front matter 'date'; "
            "add a line 'date: YYYY-MM-DD' between the '---' lines."
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

    def fail(self, key: str, message: str) -> ContentError:
        return ContentError(f"{self.at(key)}: {message}")

    def text(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.meta.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise ContentError(
                    f"{display(self.path)}:2: missing required front matter '{key}'; "
                    f"add a line '{key}: ...' between the '---' lines."
                )
            return default
        if isinstance(value, (dict, list)):
            raise self.fail(key, f"'{key}' must be text, not a list or table.")
        text = str(value).strip()
        if "\n" in text and key in ("title", "subject", "preheader", "link_text", "image_alt"):
            text = " ".join(text.split())
        return text


# --- loading ----------------------------------------------------------------------------------


class _Assets:
    """Collects files referenced by relative path and gives each a public URL."""

    def __init__(self, settings: Settings, issue_dir: Path, issue_id: str):
        self.settings = settings
        self.issue_dir = issue_dir
        self.issue_id = issue_id
        self.found: dict[Path, Asset] = {}

    def add(self, target: str, kind: str, origin: str) -> str:
        relative = unquote(target.split("#")[0].split("?")[0])
        source = (self.issue_dir / relative).resolve()
        if not source.is_relative_to(self.issue_dir):
            raise ContentError(
                f"{origin}: '{relative}' is outside the issue folder; only files in {display(self.issue_dir)} are published."
            )
        if not source.is_file() and re.match(r"^(www\.|[\w-]+\.(no|com|org|net|eu)(/|$))", relative):
            raise ContentError(f"{origin}: '{relative}' looks like a web address; write it with https:// in front.")
        if not source.is_file():
            raise ContentError(
                f"{origin}: {kind} file '{relative}' not found in {display(self.issue_dir)}; "
                "check the name (capital letters count) or add the file to the issue folder."
            )
        if kind == "image" and source.suffix.lower() not in IMAGE_TYPES:
            raise ContentError(
                f"{origin}: image '{relative}' is {source.suffix or 'not a known type'}; "
                "email programs show PNG, JPEG and GIF: save it as one of those."
            )
        if kind == "image" and not _is_picture(source):
            raise ContentError(
                f"{origin}: '{relative}' is not a PNG, JPEG or GIF picture inside (only its name ends in "
                f"{source.suffix}); save it again as one of those from an image program."
            )
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


def _category(settings: Settings, fields: _Fields, value: str | None, key: str = "category") -> Category | None:
    if value is None:
        return None
    category = find_category(settings.categories, value)
    if category is not None:
        return category
    choices = "; ".join(f"{c.key} ({c.nb})" for c in settings.categories)
    raise fields.fail(key, f"unknown category {value!r}; use one of: {choices}.")


def _render(
    settings: Settings, assets: _Assets, path: Path, body: str, first_line: int, refused: list[tuple[str, int, str]]
) -> Rendered:
    def resolve(target: str, kind: str, line: int) -> str:
        return assets.add(target, kind, where(display(path), first_line + line))

    for line, src, alt in image_alts(body, allow_raw_html=settings.allow_raw_html):
        if not alt.strip():
            raise ContentError(
                f"{where(display(path), first_line + line)}: image '{src}' has no alt text; "
                "write a short description in the brackets: ![Description](file.jpg)."
            )
    rendered = render_markdown(body, resolve, allow_raw_html=settings.allow_raw_html, width=assets.width)
    refused += [(display(path), first_line + line, target) for line, target in rendered.refused]
    return rendered


def load_issue(settings: Settings, folder: Path) -> Issue:
    """Read and validate one issue folder: front matter, introduction, articles, images."""
    folder = folder.resolve()
    issue_path = folder / ISSUE_FILE
    meta, body, first = split_front_matter(issue_path)
    fields = _Fields(issue_path, meta)
    warnings: list[str] = comment_warnings(issue_path)
    issue_id = folder.name
    if not ISSUE_NAME.match(issue_id):
        warnings.append(
            f"{display(folder)}: folder name should look like YYYY-MM-short-name "
            "(lower case, no spaces); links to the archive use it."
        )
    for key in sorted(set(meta) - ISSUE_KEYS):
        warnings.append(
            f"{fields.at(key)}: unknown front matter '{key}' is ignored (known: {', '.join(sorted(ISSUE_KEYS))})."
        )

    title = fields.text("title", required=True)
    subject = fields.text("subject", default=title)
    preheader = fields.text("preheader", default="")
    issue_date = _required_date(fields)
    language = fields.text("language", default=settings.language)
    if language not in LANGUAGES:
        raise fields.fail("language", f"language {language!r} is not supported; use nb or en.")

    sections = list(settings.categories)
    if meta.get("sections") is not None:
        raw = meta["sections"]
        if not isinstance(raw, list):
            raise fields.fail("sections", "'sections' must be a list of categories, one '- name' line each.")
        ordered = [_category(settings, fields, str(s), key="sections") for s in raw]
        sections = [c for c in ordered if c] + [c for c in sections if c not in ordered]

    assets = _Assets(settings, folder, issue_id)
    refused: list[tuple[str, int, str]] = []
    intro = _render(settings, assets, issue_path, body, first, refused)

    articles = []
    for path in sorted(folder.glob("*.md")):
        if path.name == ISSUE_FILE or path.name.startswith(("_", ".")):
            continue
        articles.append(_load_article(settings, assets, path, warnings, refused))
    seen: dict[str, Path] = {}
    for article in articles:
        if article.id in seen:
            raise ContentError(
                f"{display(article.path)}: has the same name as {seen[article.id].name} once æøå and spaces are "
                "simplified; rename one of them."
            )
        seen[article.id] = article.path
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
        warnings=tuple(warnings),
        refused_links=tuple(refused),
    )


def _load_article(
    settings: Settings, assets: _Assets, path: Path, warnings: list[str], refused: list[tuple[str, int, str]]
) -> Article:
    meta, body, first = split_front_matter(path)
    fields = _Fields(path, meta)
    warnings.extend(comment_warnings(path))
    for key in sorted(set(meta) - ARTICLE_KEYS):
        warnings.append(
            f"{fields.at(key)}: unknown front matter '{key}' is ignored (known: {', '.join(sorted(ARTICLE_KEYS))})."
        )
    title = fields.text("title", required=True)
    category = _category(settings, fields, fields.text("category"))

    order = meta.get("order")
    if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
        raise fields.fail("order", f"order {order!r} must be a whole number such as 1, 2 or 3.")

    image = None
    image_src = fields.text("image")
    if image_src:
        alt = fields.text("image_alt")
        if not alt:
            raise fields.fail(
                "image",
                f"image '{image_src}' has no alt text; add 'image_alt: <what the picture shows>'.",
            )
        if is_relative(image_src):
            url = assets.add(image_src, "image", fields.at("image"))
        elif image_src.startswith("https://"):
            url = image_src
        else:
            raise fields.fail(
                "image", f"image {image_src!r} must be a file in the issue folder or an https:// address."
            )
        image = Image(url=url, alt=alt)
    elif meta.get("image_alt"):
        warnings.append(f"{fields.at('image_alt')}: image_alt without image is ignored.")

    link = fields.text("link")
    if link:
        if is_relative(link):
            link = assets.add(link, "link", fields.at("link"))
        elif not link.startswith(("https://", "http://", "mailto:")):
            raise fields.fail("link", f"link {link!r} must start with https://, http:// or mailto:.")

    rendered = _render(settings, assets, path, body, first, refused)
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
