"""Jinja2 -> MJML -> HTML (CSS inlined into content), and the plain-text part.

MJML is compiled once per issue. Templates mark two kinds of holes:
``slot(name)`` for issue-wide HTML or text made from Markdown and feeds (filled here,
after compilation, so MRML's strict XML parser never sees it), and
``recipient(name)`` for per-recipient values (filled for each message by ``Skeleton.fill``).
The compiled document is split at these markers *before* any content is put in, so text
from a feed or an article that happens to look like a marker stays plain text.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import css_inline
import jinja2
import mjml
from markupsafe import Markup, escape

from .compose import Composition
from .config import Settings, user_cache
from .errors import TemplateError, where
from .language import _
from .resources import builtin

MARKER = "@@nl:"
_SLOT = re.compile(r"@@nl:(c|r):([A-Za-z0-9_.:-]+)@@")
EMAIL_TEMPLATE = "email/issue.mjml.j2"
TEXT_TEMPLATE = "email/issue.txt.j2"
CONTENT_CSS = "email/content.css"
NEWS_HTML = "email/news.html.j2"
NEWS_TEXT = "email/news.txt.j2"
EMISSIONS_HTML = "email/emissions.html.j2"
EMISSIONS_TEXT = "email/emissions.txt.j2"
MUNICIPALITY_HTML = "email/municipality.html.j2"
MUNICIPALITY_TEXT = "email/municipality.txt.j2"


def builtin_templates() -> Path:
    """The templates shipped with the package (copied into new projects by ``init``)."""
    return builtin("templates")


def template_folders(settings: Settings) -> list[Path]:
    """Built-in templates first, then the project's, which override them file by file."""
    folders = [builtin_templates()]
    if settings.templates_dir.is_dir() and settings.templates_dir.resolve() != folders[0].resolve():
        folders.append(settings.templates_dir)
    return folders


class SlotMarker(Markup):
    """A marker made by ``slot()``/``recipient()``; the only text allowed to contain MARKER."""


def _finalize(value: object) -> object:
    # Any other value printed by a template (titles, names, strings) cannot become a slot.
    if isinstance(value, str) and not isinstance(value, SlotMarker) and MARKER in value:
        return value.replace(MARKER, "@@nl\u200b:")
    return value


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    # Compiled templates are kept in the user's cache folder: compiling them is half of a
    # build's work. Entries are keyed by template path and checked against the source, so an
    # edited template is never stale.
    folder = user_cache("templates")
    return jinja2.FileSystemBytecodeCache(str(folder)) if folder else None


def web_environment(settings: Settings) -> jinja2.Environment:
    """The Jinja2 environment of the web pages (public pages, archive, preview): HTML
    autoescaped, StrictUndefined, project templates before the built-in ones."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in reversed(template_folders(settings))]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def environment(settings: Settings) -> jinja2.Environment:
    """The Jinja2 environment: StrictUndefined, autoescape for MJML/HTML, slot helpers."""
    loader = jinja2.FileSystemLoader([str(p) for p in reversed(template_folders(settings))])
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("mjml.j2", "html.j2"), default_for_string=False, default=False
        ),
        finalize=_finalize,
        bytecode_cache=_bytecode_cache(),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["slot"] = lambda name: SlotMarker(f"{MARKER}c:{name}@@")
    env.globals["recipient"] = lambda name: SlotMarker(f"{MARKER}r:{name}@@")
    return env


@dataclass(frozen=True)
class Skeleton:
    """A compiled document with per-recipient holes: parts[0] slot[0] parts[1] ... parts[-1]."""

    parts: tuple[str, ...]
    slots: tuple[str, ...]
    html: bool

    def fill(self, values: Mapping[str, str]) -> str:
        """The document for one recipient; plain-text values are HTML-escaped in HTML."""
        out = [self.parts[0]]
        for name, part in zip(self.slots, self.parts[1:], strict=True):
            value = values[name]
            out.append(str(escape(value)) if self.html and not isinstance(value, Markup) else str(value))
            out.append(part)
        return "".join(out)


@dataclass(frozen=True)
class RenderedIssue:
    """One issue, compiled once: MJML source, HTML and text skeletons."""

    issue_id: str
    language: str
    subject: str
    mjml: str
    html: Skeleton
    text: Skeleton
    municipal: dict[str, tuple[Markup, str]] = field(default_factory=dict)  # number -> (HTML, text)


def split(document: str, fragments: Mapping[str, str], *, html: bool, source: str) -> Skeleton:
    """Fill content slots from ``fragments`` and keep recipient slots as holes."""
    parts: list[str] = []
    slots: list[str] = []
    current: list[str] = []
    pos = 0
    for match in _SLOT.finditer(document):
        current.append(document[pos : match.start()])
        kind, name = match.groups()
        if kind == "c":
            if name not in fragments:
                raise TemplateError(
                    _(
                        "{source}: slot('{name}') has no content; check the name in the template.",
                        source=source,
                        name=name,
                    )
                )
            current.append(fragments[name])
        else:
            parts.append("".join(current))
            slots.append(name)
            current = []
        pos = match.end()
    current.append(document[pos:])
    parts.append("".join(current))
    return Skeleton(parts=tuple(parts), slots=tuple(slots), html=html)


def _template_error(exc: Exception, name: str) -> TemplateError:
    """A located one-line message for any error raised while rendering a template."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        path = exc.filename or exc.name or name
        return TemplateError(
            _(
                "{path}: template syntax error: {message_}; fix the template.",
                path=where(path, exc.lineno),
                message_=exc.message,
            )
        )
    if isinstance(exc, jinja2.TemplateNotFound):
        return TemplateError(
            _(
                "template {name!r} not found (needed by {name2}); restore it or copy it from a new 'newsletter init' project.",
                name=exc.name,
                name2=name,
            )
        )
    location = name
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        filename = frame.f_code.co_filename
        if filename.endswith(".j2"):
            location = where(filename, lineno)
    if isinstance(exc, jinja2.UndefinedError):
        return TemplateError(
            _("{location}: {message_}; fix the name in the template.", location=location, message_=exc.message)
        )
    return TemplateError(_("{location}: template error: {exc}; fix the template.", location=location, exc=exc))


def _render_template(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise _template_error(exc, name) from exc


def _content_css(env: jinja2.Environment) -> str:
    try:
        source, _name, _uptodate = env.loader.get_source(env, CONTENT_CSS)  # type: ignore[union-attr]
    except jinja2.TemplateNotFound:
        return ""
    return source


def compile_mjml(source: str, origin: str = "email.mjml") -> str:
    """Compile MJML to HTML with MRML, as a located TemplateError on failure."""
    try:
        return mjml.mjml2html(source, disable_comments=True)
    except ValueError as exc:
        raise TemplateError(
            _(
                "{origin}: the MJML made from the templates did not compile ({exc}); check the last template change (tags must be closed, '<' written as &lt;).",
                origin=origin,
                exc=exc,
            )
        ) from exc


def render_issue(settings: Settings, composition: Composition) -> RenderedIssue:
    """Render one issue's MJML, compile it once, fill in its content, inline content CSS."""
    env = environment(settings)
    ctx = composition.context
    source = _render_template(env, EMAIL_TEMPLATE, ctx)
    html = compile_mjml(source, f"build/{ctx['issue']['id']}/email.mjml")
    css = _content_css(env)
    fragments = {
        name: css_inline.inline_fragment(fragment, css) if css and fragment else fragment
        for name, fragment in composition.html_fragments.items()
    }
    text_fragments = dict(composition.text_fragments)
    if ctx["news"]:  # feed text: rendered with autoescape and put in after compilation
        fragments["news"] = css_inline.inline_fragment(_render_template(env, NEWS_HTML, ctx), css)
        text_fragments["news"] = _render_template(env, NEWS_TEXT, ctx).strip()
    if ctx["emissions"]:
        fragments["emissions"] = css_inline.inline_fragment(_render_template(env, EMISSIONS_HTML, ctx), css)
        text_fragments["emissions"] = _render_template(env, EMISSIONS_TEXT, ctx).strip()
    municipal: dict[str, tuple[Markup, str]] = {}
    blocks: dict[str, tuple[Markup, str]] = {}  # rendered once per sentence, i.e. per municipality
    for number, sentence in composition.municipal.items():
        if sentence not in blocks:
            block_ctx = {**ctx, "sentence": sentence}
            html_block = css_inline.inline_fragment(_render_template(env, MUNICIPALITY_HTML, block_ctx), css)
            blocks[sentence] = (Markup(html_block), "\n" + _render_template(env, MUNICIPALITY_TEXT, block_ctx).strip())
        municipal[number] = blocks[sentence]
    text = _render_template(env, TEXT_TEMPLATE, ctx)
    return RenderedIssue(
        issue_id=ctx["issue"]["id"],
        language=ctx["lang"],
        subject=ctx["issue"]["subject"],
        mjml=source,
        html=split(html, fragments, html=True, source=EMAIL_TEMPLATE),
        text=split(_tidy_text(text), text_fragments, html=False, source=TEXT_TEMPLATE),
        municipal=municipal,
    )


def _tidy_text(text: str) -> str:
    """At most one blank line in a row, no trailing spaces."""
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
