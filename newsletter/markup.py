"""Markdown -> HTML fragment and plain text, from the same parse.

The text part of an email is rendered from the Markdown syntax tree, never scraped
from the HTML. Relative image and link targets are handed to a resolver, which copies
the file into the build and returns its public address.
"""

from __future__ import annotations

import re
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser

import nh3
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

TEXT_WIDTH = 72

# resolve(target, kind, line) -> public URL; kind is "image" or "link"; line is 0-based in the body.
Resolver = Callable[[str, str, int], str]


@dataclass(frozen=True)
class Rendered:
    """One Markdown document as an HTML fragment and as wrapped plain text."""

    html: str
    text: str
    # Links Markdown refuses (javascript:, vbscript:, file:, data:) and shows as plain text:
    # (0-based line in the source, target).
    refused: tuple[tuple[int, str], ...] = ()
    removed: tuple[tuple[int, str], ...] = ()  # (line, what) the raw HTML allowlist took out
    images: tuple[tuple[int, str, str], ...] = ()  # (0-based line of the image itself, src as written, alt)


_PARSERS = threading.local()  # one parser per thread and raw-HTML setting: making one costs more than a short parse


def _parser(allow_raw_html: bool) -> MarkdownIt:
    """This thread's parser (render_markdown points its validateLink at the document's own list)."""
    made = _PARSERS.__dict__.setdefault("made", {})
    if allow_raw_html not in made:
        made[allow_raw_html] = _new_parser(allow_raw_html)
    return made[allow_raw_html]


def _new_parser(allow_raw_html: bool) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": allow_raw_html, "typographer": False})
    md.enable(["table", "strikethrough"])
    # A table sits in a box that scrolls sideways on a narrow screen: its words are never cut in
    # two to make it fit (content.css: no breaks inside words, hyphens only where the language
    # allows them).
    md.add_render_rule("table_open", lambda *args: '<div class="table-scroll">\n<table>\n')
    md.add_render_rule("table_close", lambda *args: "</table>\n</div>\n")
    return md


# Raw HTML (markdown.allow_raw_html) passes this allowlist (nh3, Ammonia): formatting, links,
# images and tables; no scripts, frames, forms, event handlers or javascript: addresses.
RAW_TAGS = {"a", "abbr", "b", "blockquote", "br", "caption", "code", "del", "div", "em", "figcaption", "figure", "h3",
            "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub", "sup",
            "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"}  # fmt: skip
RAW_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "width", "height", "title"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "*": {"style", "lang", "dir"},
}
RAW_STYLES = {"color", "background-color", "font-weight", "font-style", "text-align", "text-decoration",
              "vertical-align", "width", "height", "margin", "padding", "border"}  # fmt: skip
RAW_SCHEMES = {"http", "https", "mailto"}


class _RawHTML(HTMLParser):
    """What the allowlist takes out of raw HTML, to name it: tags, event handlers and other
    attributes, and links to other schemes than http(s) and mailto."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.removed: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in RAW_TAGS:
            self.removed.append(f"<{tag}>")
            return
        allowed = RAW_ATTRIBUTES.get(tag, set()) | RAW_ATTRIBUTES["*"]
        for name, value in attrs:
            if name not in allowed:
                self.removed.append(f"the {name} attribute of <{tag}>")
            elif name in ("href", "src") and value and ":" in value.split("/")[0]:
                scheme = value.split(":", 1)[0].strip().lower()
                if scheme not in RAW_SCHEMES:
                    self.removed.append(f"the {scheme}: address in <{tag} {name}>")


def sanitize(html: str) -> str:
    """Raw HTML as the allowlist lets it through."""
    return nh3.clean(html, tags=RAW_TAGS, attributes=RAW_ATTRIBUTES, url_schemes=RAW_SCHEMES,
                     filter_style_properties=RAW_STYLES, link_rel=None)  # fmt: skip


def is_relative(target: str) -> bool:
    """True for a path inside the project, False for a URL with a scheme or an anchor."""
    lowered = target.strip().lower()
    return not (
        lowered.startswith(("http://", "https://", "mailto:", "tel:", "#", "//")) or ":" in lowered.split("/")[0]
    )


def render_markdown(
    source: str,
    resolve: Resolver,
    *,
    allow_raw_html: bool = False,
    heading_offset: int = 2,
    width: Callable[[str], int | None] | None = None,
) -> Rendered:
    """Render Markdown to an HTML fragment and plain text.

    Headings are shifted down by ``heading_offset`` levels (``#`` becomes ``<h3>`` by
    default) because the email's own titles occupy h1 and h2. ``width(url)`` gives the width
    attribute of an image (Outlook ignores CSS and shows an image without one at full size).
    """
    md = _parser(allow_raw_html)
    refused: list[str] = []
    allowed = type(md).validateLink.__get__(md)  # markdown-it's own rule, not the last document's

    def validate(url: str) -> bool:  # markdown-it's own rule decides; we only take note
        ok = allowed(url)
        if not ok:
            refused.append(url)
        return ok

    md.validateLink = validate  # type: ignore[method-assign]
    tokens = md.parse(source)
    images: list[tuple[int, str, str]] = []
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            level = min(6, int(token.tag[1]) + heading_offset)
            token.tag = f"h{level}"
        if token.type == "inline" and token.children:
            line = token.map[0] if token.map else 0
            own_line = line  # the image's own line within its paragraph
            for child in token.children:
                if child.type in ("softbreak", "hardbreak"):
                    own_line += 1
                if child.type == "image":
                    src = str(child.attrGet("src") or "")
                    images.append((own_line, src, "".join(c.content for c in child.children or [])))
                    if is_relative(src):
                        src = resolve(src, "image", line)
                        child.attrSet("src", src)
                    shown = width(src) if width is not None else None
                    if shown is not None:
                        child.attrSet("width", str(shown))
                elif child.type == "link_open":
                    href = str(child.attrGet("href") or "")
                    if href and is_relative(href):
                        child.attrSet("href", resolve(href, "link", line))
    html = md.renderer.render(tokens, md.options, {})
    removed: list[tuple[int, str]] = []
    if allow_raw_html:
        for token in tokens:  # where each piece of raw HTML stands, and what goes
            pieces = [token] if token.type == "html_block" else [
                c for c in (token.children or []) if c.type == "html_inline"] if token.type == "inline" else []  # fmt: skip
            for piece in pieces:
                found = _RawHTML()
                found.feed(piece.content)
                removed += [(token.map[0] if token.map else 0, what) for what in found.removed]
        html = sanitize(html)
    text = _blocks_to_text(SyntaxTreeNode(tokens).children)
    return Rendered(html=html.strip(), text=text.strip(), refused=_refused_lines(tokens, refused),
                    removed=tuple(dict.fromkeys(removed)), images=tuple(images))  # fmt: skip


# '[text](Handlingsplan 2027.pdf)': a space in the target, so Markdown shows it all as text.
_SPACED_LINK = re.compile(r"\[[^\]\n]*\]\(\s*([^()<>\s]+(?:[ \t]+[^()<>\s]+)+)\s*\)")
_LITERAL_LINK = re.compile(r"\[[^\]\n]*\]\(\s*([^\s()]+(?:\([^\s()]*\)[^\s()]*)*)\s*\)")


def _refused_lines(tokens: list, refused: list[str]) -> tuple[tuple[int, str], ...]:
    """Where each link the email shows as text stands: those Markdown refused (javascript:,
    data:, ...), and '[text](target)' that Markdown could not read as a link at all (a '<' in
    the target, say). Code never was a link and is not searched."""
    targets = list(dict.fromkeys(refused))
    found: list[tuple[int, str]] = []
    for token in tokens:
        if token.type != "inline" or not token.children:
            continue
        line = token.map[0] if token.map else 0
        pieces: list[tuple[int, str]] = []  # runs of text between code spans and links, with their first line
        run, run_line = "", line
        for child in token.children:
            if child.type in ("softbreak", "hardbreak"):
                line += 1
                run += "\n"
            elif child.type in ("text", "html_inline"):
                if not run:
                    run_line = line
                run += child.content
            else:
                pieces.append((run_line, run))
                run = ""
        pieces.append((run_line, run))
        for first, text in pieces:
            for url in targets:
                if url in text and not any(target == url for _, target in found):
                    found.append((first + text[: text.index(url)].count("\n"), url))
            for match in [*_LITERAL_LINK.finditer(text), *_SPACED_LINK.finditer(text)]:
                place = (first + text[: match.start()].count("\n"), match.group(1))
                if place not in found:
                    found.append(place)
    return tuple(sorted(found))


# --- plain text -------------------------------------------------------------------------------


def _inline_text(node: SyntaxTreeNode) -> str:
    out: list[str] = []
    for child in node.children:
        kind = child.type
        if kind in ("text", "code_inline", "html_inline"):
            out.append(child.content)
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "image":
            alt = _inline_text(child) or child.content
            out.append(f"[{alt}]" if alt else "")
        elif kind == "link":
            label = _inline_text(child)
            href = str(child.attrs.get("href", ""))
            shown = href.removeprefix("mailto:")
            out.append(shown if label.strip() in (href, shown) else f"{label} ({shown})")
        else:  # em, strong, s and anything else with children
            out.append(_inline_text(child))
    return "".join(out)


def _wrap(text: str, prefix: str = "", indent: str | None = None) -> str:
    lines = []
    for i, part in enumerate(text.split("\n")):
        first = prefix if i == 0 else (indent if indent is not None else prefix)
        wrapped = textwrap.fill(
            part,
            width=TEXT_WIDTH,
            initial_indent=first,
            subsequent_indent=indent if indent is not None else prefix,
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines.append(wrapped or first.rstrip())
    return "\n".join(lines)


def _blocks_to_text(nodes: list[SyntaxTreeNode], prefix: str = "") -> str:
    blocks = [_block_to_text(node, prefix) for node in nodes]
    return "\n\n".join(b for b in blocks if b.strip())


def _block_to_text(node: SyntaxTreeNode, prefix: str) -> str:
    kind = node.type
    if kind == "paragraph":
        return _wrap(_inline_text(node.children[0]) if node.children else "", prefix)
    if kind == "heading":
        title = _inline_text(node.children[0])
        return f"{prefix}{title}\n{prefix}{'-' * min(len(title), TEXT_WIDTH)}"
    if kind in ("bullet_list", "ordered_list"):
        items = []
        start = int(node.attrs.get("start", 1)) if kind == "ordered_list" else 1
        for n, item in enumerate(node.children, start):
            marker = f"{n}. " if kind == "ordered_list" else "- "
            body = _blocks_to_text(item.children, "")
            lines = body.split("\n")
            pad = " " * len(marker)
            text = "\n".join(
                (prefix + marker + line) if i == 0 else (prefix + pad + line if line else "")
                for i, line in enumerate(lines)
            )
            items.append(text)
        return "\n".join(items)
    if kind == "blockquote":
        return _blocks_to_text(node.children, prefix + "> ")
    if kind in ("code_block", "fence"):
        return "\n".join(prefix + "    " + line for line in node.content.rstrip("\n").split("\n"))
    if kind == "hr":
        return prefix + "* * *"
    if kind == "table":
        rows = []
        for section in node.children:
            for row in section.children:
                cells = [_inline_text(cell.children[0]) if cell.children else "" for cell in row.children]
                rows.append(prefix + " | ".join(cells))
        return "\n".join(rows)
    if kind == "html_block":
        return ""
    return _blocks_to_text(node.children, prefix) if node.children else ""
