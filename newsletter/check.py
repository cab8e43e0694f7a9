"""The pre-send gate: findings about a built issue, as errors (stop a send) and warnings.

Run by `newsletter check`, and by `send` and `schedule`, which refuse on errors unless --force.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from html.parser import HTMLParser

from .build import GMAIL_CLIP_BYTES, Prepared, html_size, prepare
from .compose import PLACEHOLDER, recipient_values
from .config import Settings
from .content import display
from .errors import NewsletterError

SUBJECT_CHARS = 60
PREHEADER_MIN = 20
IMAGE_KB = 200
VAGUE_LINK_TEXT = {"klikk her", "her", "click here", "here", "les mer her", "trykk her", "lenke", "link"}


@dataclass(frozen=True)
class Finding:
    """One thing check found: 'error' or 'warning', where, and what."""

    level: str
    where: str
    message: str

    @property
    def line(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


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

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._text).split())))
            self._href = None


def findings(settings: Settings, prepared: Prepared) -> list[Finding]:
    """Everything check has to say about a prepared issue."""
    issue, rendered = prepared.issue, prepared.rendered
    where = display(issue.path / "issue.md")
    found: list[Finding] = []

    def error(place: str, message: str) -> None:
        found.append(Finding("error", place, message))

    def warning(place: str, message: str) -> None:
        found.append(Finding("warning", place, message))

    size = html_size(settings, rendered, prepared.strings)
    if size > GMAIL_CLIP_BYTES:
        error("email.html", f"the HTML is {size / 1024:.0f} KB; Gmail cuts messages above 102 KB. Shorten the issue.")
    if not issue.subject.strip():
        error(where, "the subject is empty; set 'subject:' (or 'title:').")
    elif len(issue.subject) > SUBJECT_CHARS:
        warning(where, f"the subject has {len(issue.subject)} characters; phones show about {SUBJECT_CHARS}.")
    if not issue.preheader:
        warning(where, "no preheader: inboxes then show the first text of the email; add 'preheader:'.")
    elif len(issue.preheader) < PREHEADER_MIN:
        warning(where, f"the preheader is short ({len(issue.preheader)} characters); 40–100 read best.")
    if "unsubscribe_url" not in rendered.html.slots or "unsubscribe_url" not in rendered.text.slots:
        error(
            "templates", 'the email has no unsubscribe link; keep recipient("unsubscribe_url") in the footer templates.'
        )

    values = recipient_values(settings, prepared.strings, PLACEHOLDER, rendered.municipal)
    html = rendered.html.fill(values)
    parser = _Links()
    parser.feed(html)
    for href, text in parser.links:
        if not re.match(r"^(https?://|mailto:)", href.strip(), re.IGNORECASE):
            error("email.html", f"the link {href!r} ({text or 'no text'}) is not an http(s) or mailto address.")
        if text.lower().strip(" .:!") in VAGUE_LINK_TEXT:
            warning(
                "email.html",
                f"link text {text!r} says nothing out of context (screen readers list links); name the target.",
            )
    for image in parser.images:
        source = image.get("src") or ""
        if not (image.get("alt") or "").strip():
            error("email.html", f"the image {source} has no alt text.")
        if not image.get("width"):
            warning("email.html", f"the image {source} has no width; some email programs then show it at full size.")
    for asset in issue.assets:
        if asset.source.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif"):
            kb = asset.source.stat().st_size / 1024
            if kb > IMAGE_KB:
                warning(
                    display(asset.source), f"the image is {kb:.0f} KB; above {IMAGE_KB} KB it loads slowly on phones."
                )
    text = rendered.text.fill(values)
    if len(re.sub(r"\s+", " ", text).strip()) < 200:
        warning("email.txt", "the text part is almost empty; people who read plain text get little.")
    for message in prepared.warnings:  # the build's warnings name their own place
        if "more than 100 %" in message:
            error("build", message)  # emission figures that cannot be right
        else:
            warning("build", message)
    return found


def check_issue(settings: Settings, ref: str | None = None) -> list[Finding]:
    """Prepare an issue and check it. Content errors (missing files, bad front matter) become findings."""
    try:
        prepared = prepare(settings, ref)
    except NewsletterError as exc:
        return [Finding("error", "issue", str(exc))]
    return findings(settings, prepared)


def as_json(found: list[Finding]) -> list[dict]:
    """Findings for machines."""
    return [asdict(f) for f in found]
