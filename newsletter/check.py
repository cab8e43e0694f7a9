"""The pre-send gate: findings about a built issue, as errors (stop a send) and warnings.

Run by `newsletter check`, and by `send` and `schedule`, which refuse on errors unless --force.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from html.parser import HTMLParser
from typing import Any

from .build import GMAIL_CLIP_BYTES, Prepared, clip_warning, leftover_examples, prepare
from .compose import PLACEHOLDER, recipient_values
from .config import Settings, user_cache
from .content import IMAGE_TYPES, display
from .errors import ERROR, WARNING, ContentError, Finding, NewsletterError
from .feeds import _run, http_client
from .language import _
from .message import build_message
from .signing import aligned

SUBJECT_CHARS = 60
PREHEADER_MIN = 20
IMAGE_KB = 200
LINK_TIMEOUT = 10.0
LINK_CONCURRENCY = 8
SPAM_WARN = 2.0
AA_NORMAL, AA_LARGE = 4.5, 3.0
VAGUE_LINK_TEXT = {"klikk her", "her", "click here", "here", "les mer her", "trykk her", "lenke", "link"}


class _Links(HTMLParser):
    """Collects links (with their text) and images from the built HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.images: list[dict[str, str | None]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a":
            self._href, self._text = values.get("href") or "", []
        elif tag == "img":
            self.images.append(values)
            if self._href is not None and (values.get("alt") or "").strip():
                self._text.append(f" {values['alt']} ")  # an image link is named by its alt text

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._text).split())))
            self._href = None


class _Sources:
    """Finds where in the issue's own files a link, image or text comes from, as 'file:line', so
    a finding points at what staff edit; 'email.html' for what the templates or feeds made."""

    def __init__(self, prepared: Prepared) -> None:
        paths = [prepared.issue.path / "issue.md", *(a.path for a in prepared.issue.articles)]
        self.files = [(p, p.read_text(encoding="utf-8-sig").splitlines()) for p in paths if p.is_file()]

    def find(self, *needles: str) -> str:
        """The first line holding one of ``needles`` whole: not as the start of a longer URL or
        word (…/ok is not …/ok/deeper)."""
        for needle in needles:
            needle = needle.strip()
            if len(needle) < 3:
                continue
            # Not followed by more of a URL or word: '/ok' is not the start of '/ok/deeper' or
            # '/ok.html' (a full stop that ends the sentence is fine).
            whole = re.compile(
                re.escape(needle) + (r"(?![\w/%-])(?!\.\w)" if needle[-1].isalnum() or needle[-1] in "/-_" else "")
            )
            for path, lines in self.files:
                for number, line in enumerate(lines, 1):
                    if whole.search(line):
                        return f"{display(path)}:{number}"
        return "email.html"


@dataclass(frozen=True)
class _View:
    """The issue as the placeholder recipient gets it, parsed once for all the checks."""

    html: str
    text: str
    links: list[tuple[str, str]]
    images: list[dict[str, str | None]]
    sources: _Sources


def _view(settings: Settings, prepared: Prepared) -> _View:
    values = recipient_values(settings, prepared.strings, PLACEHOLDER, prepared.rendered.municipal)
    html = prepared.rendered.html.fill(values)
    parser = _Links()
    parser.feed(html)
    return _View(html, prepared.rendered.text.fill(values), parser.links, parser.images, _Sources(prepared))


def findings(settings: Settings, prepared: Prepared, view: _View | None = None) -> list[Finding]:
    """Everything check has to say about a prepared issue."""
    issue, rendered = prepared.issue, prepared.rendered
    where = display(issue.path / "issue.md")
    view = view or _view(settings, prepared)
    sources = view.sources
    found: list[Finding] = []

    def error(place: str, message: str) -> None:
        found.append(Finding("error", place, message))

    def warning(place: str, message: str) -> None:
        found.append(Finding("warning", place, message))

    size = prepared.html_bytes
    if size > GMAIL_CLIP_BYTES:
        error(
            "email.html",
            _("the HTML is {size:.0f} KB; Gmail cuts messages above 102 KB. Shorten the issue.", size=size / 1024),
        )
    if not issue.subject.strip():
        error(where, _("the subject is empty; set 'subject:' (or 'title:')."))
    elif len(issue.subject) > SUBJECT_CHARS:
        warning(
            where,
            _(
                "the subject has {count} characters; phones show about {subject_chars}.",
                count=len(issue.subject),
                subject_chars=SUBJECT_CHARS,
            ),
        )
    if issue.preheader and len(issue.preheader) < PREHEADER_MIN:  # a missing one: the build warns
        warning(where, _("the preheader is short ({count} characters); 40–100 read best.", count=len(issue.preheader)))
    if "unsubscribe_url" not in rendered.html.slots or "unsubscribe_url" not in rendered.text.slots:
        error(
            "templates",
            _('the email has no unsubscribe link; keep recipient("unsubscribe_url") in the footer templates.'),
        )

    html = view.html
    for href, text in view.links:
        if not re.match(r"^(https?://|mailto:)", href.strip(), re.IGNORECASE):
            error(
                sources.find(href),
                _(
                    "the link {href!r} ({value}) is not an http(s) or mailto address.",
                    href=href,
                    value=text or _("no text"),
                ),
            )
        if text.lower().strip(" .:!") in VAGUE_LINK_TEXT:
            warning(
                sources.find(f"[{text}]({href})", f"[{text}]", f"link_text: {text}", f'link_text: "{text}"'),
                _(
                    "link text {text!r} says nothing out of context (screen readers list links); name the target.",
                    text=text,
                ),
            )
    for path, line, target in issue.refused_links:  # links Markdown refused: shown as text
        if any(c.isspace() for c in target):
            error(f"{path}:{line}", _(
                "the link {target!r} has a space, so the email would show it as text; write it in angle brackets, "
                "[text](<{target}>), or rename the file without spaces.", target=target))  # fmt: skip
            continue
        error(
            f"{path}:{line}",
            _(
                "the link {target!r} is not allowed (the email would show it as text); use an https:// or mailto: address.",
                target=target,
            ),
        )
    content_errors = {f.where for f in prepared.findings if f.level == ERROR}  # said already, where staff edit
    for image in view.images:
        source = image.get("src") or ""
        name = source.rsplit("/", 1)[-1]
        place = sources.find(f"({name}", name)
        if not (image.get("alt") or "").strip() and place not in content_errors:
            error(place, _("the image {source} has no alt text.", source=source))
        if not image.get("width") and place not in content_errors:  # a missing file is said already
            warning(
                place,
                _("the image {source} has no width; some email programs then show it at full size.", source=source),
            )
    for asset in issue.assets:
        if asset.source.suffix.lower() in IMAGE_TYPES:
            kb = asset.source.stat().st_size / 1024
            if kb > IMAGE_KB:
                warning(
                    display(asset.source),
                    _(
                        "the image is {kb:.0f} KB; above {image_kb} KB it loads slowly on phones. Save it smaller: about 1200 px wide, as JPEG for photos.",
                        kb=kb,
                        image_kb=IMAGE_KB,
                    ),
                )
    found.extend(contrast_findings(html))  # colours come from templates (or raw HTML): the text says where
    text = view.text
    if len(re.sub(r"\s+", " ", text).strip()) < 200:
        warning("email.txt", _("the text part is almost empty; people who read plain text get little."))
    clipped = clip_warning(size)
    examples = leftover_examples(issue)  # a warning while drafting, an error for sending
    found.extend(
        f for f in prepared.findings if f != clipped and f not in examples
    )  # the content's and the build's (the error above says that one)
    found.extend(replace(f, level=ERROR) for f in examples)
    found.extend(dkim_findings(settings))
    return found


DKIM = "dkim"  # where DKIM findings are said to be: the [dkim] settings
SPAM = "spamassassin"  # and SpamAssassin's


def by_smtp(settings: Settings) -> bool:
    """Whether messages leave by SMTP (the transport named, or the default with smtp.host set)."""
    return settings.send_transport == "smtp" or (settings.send_transport is None and bool(settings.smtp_host))


def dkim_findings(settings: Settings) -> list[Finding]:
    """What Gmail and Yahoo require of bulk mail: an error when the DKIM domain is not aligned
    with the From address's domain (DMARC relaxed alignment), and, for mail that leaves by SMTP,
    a warning when nothing signs it (no key here, and dkim.relay_signs not set)."""
    from_domain = settings.sender_address.rpartition("@")[2]
    if settings.dkim_domain:
        if not aligned(settings.dkim_domain, from_domain):
            return [
                Finding(
                    ERROR,
                    DKIM,
                    _(
                        "dkim.domain {domain} is not aligned with the From address {address}: Gmail and Yahoo reject bulk mail whose signature is for another domain. Sign for {from_domain} (or a domain under it), or send from an address in {domain}.",
                        domain=settings.dkim_domain,
                        address=settings.sender_address,
                        from_domain=from_domain,
                    ),
                )
            ]
        return []
    if by_smtp(settings) and not settings.dkim_relay_signs:
        return [
            Finding(
                WARNING,
                DKIM,
                _(
                    "messages go by SMTP without a DKIM signature, and Gmail and Yahoo reject unsigned bulk mail: set dkim.domain, dkim.selector and dkim.key_file (see the README), or dkim.relay_signs = true if your relay or email service signs for {from_domain}.",
                    from_domain=from_domain,
                ),
            )
        ]
    return []


def check_issue(
    settings: Settings,
    ref: str | None = None,
    *,
    links: bool = False,
    timeout: float = LINK_TIMEOUT,
    spam: bool = True,
) -> list[Finding]:
    """Prepare an issue and check it: every problem of content, build, links, size, contrast and
    spam in one list. Only an issue that cannot be built at all (issue.md without its title or
    date, a template error) stops early, with one finding that says it blocks the rest.

    ``links`` also checks every link online; ``spam`` runs SpamAssassin when it is installed."""
    try:
        prepared = prepare(settings, ref)
    except ContentError as exc:
        return [
            Finding(
                ERROR, exc.where or _("issue"), _("{detail} The other checks need this fixed first.", detail=exc.detail)
            )
        ]
    except NewsletterError as exc:
        return [Finding(ERROR, _("issue"), _("{exc} The other checks need this fixed first.", exc=exc))]
    view = _view(settings, prepared)
    found = findings(settings, prepared, view)
    if links:
        found.extend(link_findings(settings, prepared, timeout=timeout, view=view))
    if spam:
        found.extend(spam_findings(settings, prepared))
    return found


# --- colour contrast (WCAG 2 AA), from the inline styles of the built HTML --------------------

_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "gray": (128, 128, 128),
          "grey": (128, 128, 128), "silver": (192, 192, 192), "yellow": (255, 255, 0)}  # fmt: skip
_IMPLIED_END = {"p": ("p",), "li": ("li", "p"), "td": ("td", "th", "p"), "th": ("td", "th", "p"),
                "tr": ("td", "th", "tr", "p"), "dt": ("dt", "dd"), "dd": ("dt", "dd"), "option": ("option",)}  # fmt: skip
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


_COLOR_TOKEN = re.compile(r"#[0-9a-f]{3,8}\b|rgba?\([^)]*\)|\b(?:" + "|".join(_NAMED) + r")\b", re.IGNORECASE)


def _color(value: str | None, behind: tuple[int, int, int] = (255, 255, 255)) -> tuple[int, int, int] | None:
    """#rgb(a), #rrggbb(aa), rgb()/rgba() or a few names, as opaque RGB: a translucent colour is
    blended with ``behind``. None for anything else (transparent, inherit, a gradient...)."""
    if not value:
        return None
    value = value.strip().lower()
    alpha = 1.0
    if match := re.fullmatch(r"#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})", value):
        digits = match.group(1)
        if len(digits) <= 4:
            digits = "".join(c * 2 for c in digits)
        rgb = (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
        if len(digits) == 8:
            alpha = int(digits[6:8], 16) / 255
    elif match := re.fullmatch(r"rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*([\d.]+%?)\s*)?\)", value):
        rgb = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
        if match.group(4):
            alpha = float(match.group(4).rstrip("%")) / (100 if match.group(4).endswith("%") else 1)
    elif value in _NAMED:
        rgb = _NAMED[value]
    else:
        return None
    alpha = max(0.0, min(1.0, alpha))
    return tuple(round(alpha * c + (1 - alpha) * b) for c, b in zip(rgb, behind, strict=True))  # type: ignore[return-value]


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first: tuple[int, int, int], second: tuple[int, int, int]) -> float:
    """The WCAG 2 contrast ratio of two colours, 1 to 21."""
    high, low = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


class _Contrast(HTMLParser):
    """Walks the HTML keeping the inherited text colour, background, size and weight from inline
    styles and bgcolor, and records text whose contrast is below WCAG AA. Class-based CSS (dark
    mode, say) is not seen; the Chromium tests cover the templates' own."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, Any]]] = [
            ("#root", {"color": (0, 0, 0), "background": (255, 255, 255), "size": 16.0, "bold": False})
        ]
        self.skip = 0
        self.low: dict[tuple, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title", "head"):
            self.skip += 1
        if tag in _VOID:
            return
        closes = _IMPLIED_END.get(tag, ())
        while len(self.stack) > 1 and self.stack[-1][0] in closes:  # <li>a<li>b: the first ends
            self.stack.pop()
        values = dict(attrs)
        state = dict(self.stack[-1][1])
        style = {}
        for declaration in (values.get("style") or "").split(";"):
            name, _colon, value = declaration.partition(":")
            style[name.strip().lower()] = value.replace("!important", "").strip()
        if style.get("display") == "none" or style.get("visibility") == "hidden" or "hidden" in values:
            state["hidden"] = True  # e.g. the preheader: inboxes show it, the email does not
        shorthand = _COLOR_TOKEN.search(re.sub(r"url\([^)]*\)", "", style.get("background") or ""))
        background = style.get("background-color") or (shorthand.group(0) if shorthand else None)
        if (fill := _color(background, state["background"]) or _color(values.get("bgcolor"))) is not None:
            state["background"] = fill
        text_color = style.get("color") or (values.get("color") if tag == "font" else None)
        if (color := _color(text_color, state["background"])) is not None:
            state["color"] = color
        if match := re.fullmatch(r"([\d.]+)px", style.get("font-size", "")):
            state["size"] = float(match.group(1))
        elif tag in ("h1", "h2"):
            state["size"] = 24.0 if tag == "h1" else 20.0
        weight = style.get("font-weight", "")
        if (
            weight in ("bold", "bolder")
            or (weight.isdigit() and int(weight) >= 700)
            or tag in ("b", "strong", "h1", "h2", "h3", "th")
        ):
            state["bold"] = True
        self.stack.append((tag, state))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title", "head"):
            self.skip = max(0, self.skip - 1)
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth][0] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if self.skip or not text or self.stack[-1][1].get("hidden"):
            return
        state = self.stack[-1][1]
        large = state["size"] >= 24 or (state["bold"] and state["size"] >= 18.66)
        needed = AA_LARGE if large else AA_NORMAL
        ratio = contrast(state["color"], state["background"])
        key = (state["color"], state["background"], needed)
        if ratio < needed and key not in self.low:
            self.low[key] = text


def contrast_findings(html: str) -> list[Finding]:
    """Text whose colour contrast is below WCAG AA (4.5:1, or 3:1 for large text), one per colour pair."""
    parser = _Contrast()
    parser.feed(html)
    parser.close()
    found = []
    for (color, background, needed), text in parser.low.items():
        ratio = contrast(color, background)
        darker = _luminance(color) <= _luminance(background)
        advice = (
            _("darken the text or lighten the background") if darker else _("lighten the text or darken the background")
        )
        found.append(
            Finding(
                "warning",
                "email.html",
                _(
                    "text {text!r} is #{color} on #{background}: contrast {ratio:.2f}:1, below WCAG AA ({needed:g}:1); {advice}.",
                    text=_short(text),
                    color=_hex(color),
                    background=_hex(background),
                    ratio=math.floor(ratio * 100) / 100,
                    needed=needed,
                    advice=advice,
                ),
            )
        )
    return found


def _hex(rgb: tuple[int, int, int]) -> str:
    return "".join(f"{v:02x}" for v in rgb)


def _short(text: str, length: int = 40) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


# --- links online (--links) -----------------------------------------------------------------


@dataclass(frozen=True)
class LinkResult:
    """What one link answered: the final status (0: no answer), the final URL, and why not."""

    url: str
    status: int
    final_url: str
    moved: bool = False
    problem: str | None = None
    slow: bool = False  # no answer in time: a warning, since the server may only be busy


def check_links(settings: Settings, urls: list[str], *, timeout: float = LINK_TIMEOUT,
                concurrency: int = LINK_CONCURRENCY) -> list[LinkResult]:  # fmt: skip
    """Ask every URL online: HEAD first, then GET when HEAD is refused (many servers answer HEAD
    wrongly). Redirects are followed; a permanent one is reported so the link can be updated."""
    import asyncio

    import httpx

    async def ask(client: Any, semaphore: asyncio.Semaphore, url: str) -> LinkResult:
        async with semaphore:
            try:
                async with asyncio.timeout(timeout * 2):
                    response = await client.head(url)
                    if response.status_code >= 400:
                        async with client.stream("GET", url) as streamed:  # the headers are enough
                            response = streamed
                moved = any(r.status_code in (301, 308) for r in response.history)
                return LinkResult(url, response.status_code, str(response.url), moved)
            except (TimeoutError, httpx.TimeoutException):
                return LinkResult(url, 0, url, problem=_("no answer within {seconds:g} s", seconds=timeout), slow=True)
            except httpx.TooManyRedirects:
                return LinkResult(url, 0, url, problem=_("too many redirects"))
            except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
                return LinkResult(url, 0, url, problem=_("not a valid address ({exc})", exc=exc))
            except httpx.HTTPError as exc:
                reason = str(exc)
                if any(s in reason for s in ("Name or service not known", "nodename nor servname", "name resolution")):
                    problem = _("the server's name was not found: check the address, or whether this machine is online")
                    return LinkResult(url, 0, url, problem=problem)
                return LinkResult(
                    url, 0, url, problem=_("cannot connect ({kind}: {exc})", kind=type(exc).__name__, exc=exc)
                )

    async def run_all() -> list[LinkResult]:
        semaphore = asyncio.Semaphore(concurrency)
        async with http_client(settings, concurrency, timeout, min(timeout, 5.0), accept="*/*") as client:
            return await asyncio.gather(*(ask(client, semaphore, url) for url in urls))

    return _run(run_all())


def link_findings(
    settings: Settings, prepared: Prepared, *, timeout: float = LINK_TIMEOUT, view: _View | None = None
) -> list[Finding]:
    """Findings for every http(s) link of the email that does not work online. The issue's own
    archive page and images, and the personal links, are not published before the send: skipped."""
    view = view or _view(settings, prepared)
    unpublished = (  # published by the send itself (the archive), or personal
        settings.archive_index_url(),
        f"{settings.base_url}/unsubscribe/",
        f"{settings.base_url}/preferences/",
    )
    sources = view.sources
    texts: dict[str, str] = {}
    for href, text in view.links:
        href = href.strip()
        if re.match(r"^https?://", href, re.IGNORECASE) and not href.startswith(unpublished):
            texts.setdefault(href, text)
    found = []
    for result in check_links(settings, list(texts), timeout=timeout):
        label = _("the link {url} ({value})", url=result.url, value=_short(texts[result.url]) or _("no text"))
        place = sources.find(result.url)
        if result.problem is not None:
            level = WARNING if result.slow else ERROR
            found.append(Finding(level, place, f"{label}: {result.problem}."))
        elif result.status in (429, 503):
            found.append(
                Finding(
                    "warning",
                    place,
                    _("{label} answers {status} (busy); check it again later.", label=label, status=result.status),
                )
            )
        elif result.status >= 400:
            found.append(
                Finding(
                    "error",
                    place,
                    _("{label} answers {status}; fix or remove the link.", label=label, status=result.status),
                )
            )
        elif result.moved:
            found.append(
                Finding(
                    "warning",
                    place,
                    _(
                        "{label} has moved permanently to {final_url}; link there instead.",
                        label=label,
                        final_url=result.final_url,
                    ),
                )
            )
    return found


# --- SpamAssassin (when installed) -------------------------------------------------------------


def spamassassin() -> str | None:
    """The spamassassin program, if installed (NEWSLETTER_SPAMASSASSIN may name it)."""
    return os.environ.get("NEWSLETTER_SPAMASSASSIN") or shutil.which("spamassassin")


_RULE_FOLDERS = ("/etc/spamassassin", "/usr/share/spamassassin", "/var/lib/spamassassin", "~/.spamassassin")
_VARYING = re.compile(rb"^(?:Date|Message-ID):[^\r\n]*\r?\n", re.MULTILINE | re.IGNORECASE)
_BOUNDARY = re.compile(rb'boundary="([^"]+)"')
_RULE_FILES = (".cf", ".pre")
SPAM_CACHE_ENTRIES = 200


def spam_key(program: str, raw: bytes) -> str:
    """What a SpamAssassin verdict depends on: the message (without its Date, Message-ID and
    MIME boundaries, new at every build), the program, and its rules and settings (the name,
    size and time of every .cf and .pre file and of user_prefs, so sa-update or an edited
    local.cf makes a new key; not the files SpamAssassin writes as it learns)."""
    raw = _VARYING.sub(b"", raw)
    for boundary in set(_BOUNDARY.findall(raw)):  # MIME boundaries are random too
        raw = raw.replace(boundary, b"=part=")
    digest = hashlib.sha256(raw)
    path = shutil.which(program) or program
    with suppress(OSError):
        info = os.stat(path)
        digest.update(f"{path}:{info.st_size}:{info.st_mtime_ns}".encode())
    for folder in _RULE_FOLDERS:
        for root, dirs, files in os.walk(os.path.expanduser(folder)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # spamd's own home under /var/lib
            for name in sorted(files):
                if not name.endswith(_RULE_FILES) and name != "user_prefs":
                    continue  # what SpamAssassin writes itself (Bayes, auto-welcomelist, locks) is no rule
                with suppress(OSError):
                    info = os.stat(os.path.join(root, name))
                    digest.update(f"{root}/{name}:{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()


def _remembered(key: str) -> dict | None:
    folder = user_cache("spam")
    try:
        verdict = json.loads((folder / f"{key}.json").read_text(encoding="utf-8")) if folder else None
    except (OSError, ValueError):
        return None
    valid = isinstance(verdict, dict) and isinstance(verdict.get("score"), int | float)
    return verdict if valid and isinstance(verdict.get("rules"), list) else None  # a damaged entry: scored again


def _remember(key: str, verdict: dict) -> None:
    """Kept in the user's cache (written whole, then renamed); the oldest go beyond 200."""
    folder = user_cache("spam")
    if folder is None:
        return
    with suppress(OSError):
        part = folder / f"{key}.{os.getpid()}.part"
        part.write_text(json.dumps(verdict), encoding="utf-8")
        os.replace(part, folder / f"{key}.json")
        entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-SPAM_CACHE_ENTRIES]:
            old.unlink(missing_ok=True)


def spam_findings(
    settings: Settings, prepared: Prepared, program: str | None = None, *, cached_only: bool = False
) -> list[Finding]:
    """SpamAssassin's score and rules for the built message, run locally (-L: no network tests).

    A verdict is kept in the user's cache by ``spam_key``: the same content, program and rules
    are scored once (about 2.5 s of SpamAssassin starting), so a send after ``check`` does not
    pay again. ``cached_only`` (the send's gate) uses a kept verdict and never runs the program."""
    program = program or spamassassin()
    if program is None:
        return []
    raw = build_message(settings, prepared.rendered, PLACEHOLDER, prepared.strings).as_bytes()
    key = spam_key(program, raw)
    verdict = _remembered(key)
    if verdict is None and cached_only:
        return []
    if verdict is None:
        verdict = _score(program, raw)
        if isinstance(verdict, Finding):
            return [verdict]  # not kept: the next check tries again
        _remember(key, verdict)
        after = spam_key(program, raw)  # its first run makes ~/.spamassassin/user_prefs
        if after != key:
            _remember(after, verdict)
    score = verdict["score"]
    counted = sorted(((points, name, text) for points, name, text in verdict["rules"] if points != 0), reverse=True)
    rules = "; ".join(f"{name} {points:+g} ({description})" for points, name, description in counted) or _("none")
    if score > SPAM_WARN:
        return [
            Finding(
                "warning",
                SPAM,
                _(
                    "spam score {score:g} (above {spam_warn:g}); rules: {rules}. Change what the rules point at.",
                    score=score,
                    spam_warn=SPAM_WARN,
                    rules=rules,
                ),
            )
        ]
    return [Finding("info", SPAM, _("spam score {score:g}; rules: {rules}.", score=score, rules=rules))]


def _score(program: str, raw: bytes) -> dict | Finding:
    """{'score': 1.2, 'rules': [[points, name, description], ...]} from running SpamAssassin on
    ``raw``, or the warning that says why there is none."""
    try:
        # report_safe 0: a message scored as spam is not wrapped as an attachment (with its
        # text, which could look like report lines, in between two reports).
        command = [program, "-L", "-t", "--cf=report_safe 0"]
        done = subprocess.run(command, input=raw, capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding(
            "warning",
            SPAM,
            _("could not run {program} ({exc}); the spam score is unknown.", program=program, exc=exc),
        )
    header = re.search(rb"^X-Spam-Status: (.*(?:\n[ \t].*)*)", done.stdout, re.MULTILINE)
    if header is None:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no X-Spam-Status header"]
        return Finding(
            "warning",
            SPAM,
            _("{program} gave no score ({message_}).", program=program, message_=message[0]),
        )
    status = " ".join(header.group(1).decode("ascii", "replace").split())
    score_match = re.search(r"score=(-?[\d.]+)", status)
    score = round(float(score_match.group(1)) if score_match else 0.0, 1) + 0.0  # + 0.0: never '-0'
    # The report's table: " 0.7 HTML_FONT_LOW_CONTRAST BODY: HTML font color similar or ..."
    report = done.stdout.decode("utf-8", "replace").rsplit("Content analysis details", 1)[-1]
    table: list[list] = []
    rows = report.splitlines()[1:]
    for number, line in enumerate(rows):
        if not line.strip() and number > 2:
            break  # the table ends at the first blank line after its header
        if match := re.match(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s+(.*)$", line):
            table.append([float(match.group(1)), match.group(2), match.group(3).strip()])
        elif table and line.startswith(" " * 20) and line.strip():  # a description's next line
            table[-1][2] += " " + line.strip()
    return {"score": score, "rules": table}


def as_json(found: list[Finding]) -> list[dict]:
    """Findings for machines."""
    return [asdict(f) for f in found]
