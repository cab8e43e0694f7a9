"""Build one issue: gather and validate everything, render everything, then write the files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .compose import PLACEHOLDER, Composition, Recipient, compose, recipient_values
from .config import Settings
from .content import Issue, display, find_issue, load_issue
from .errors import ERROR, WARNING, ContentError, EmissionsError, Finding, ProjectError
from .i18n import load_strings
from .language import _, os_reason
from .message import build_message
from .render import RenderedIssue, render_issue, template_folders
from .scaffold import PLACEHOLDER_PHRASES
from .store import database

if TYPE_CHECKING:  # imported where used: an issue without news or emissions needs neither
    from .emissions import Highlights
    from .feeds import FeedItem

GMAIL_CLIP_BYTES = 102 * 1024


@dataclass(frozen=True)
class Prepared:
    """An issue loaded, validated and compiled: ready to build, check or send."""

    issue: Issue
    rendered: RenderedIssue
    strings: dict[str, str]
    logo: Path | None
    news: tuple[FeedItem, ...]
    findings: tuple[Finding, ...]  # the content's and the build's: warnings, and errors for the check
    composition: Composition
    html_bytes: int  # the HTML part's size for the placeholder recipient (what Gmail's clipping counts)
    fingerprint: str  # what recipients get, images included: a delivery records it to notice edits


@dataclass(frozen=True)
class BuildResult:
    """What ``build`` wrote, and what the user should know about it."""

    issue_id: str
    out_dir: Path
    files: tuple[Path, ...]
    html_bytes: int
    findings: tuple[Finding, ...]


def leftover_examples(issue: Issue) -> list[Finding]:
    """Warnings for the example text of 'newsletter new' still in the issue's files (the gate,
    in ``check``, makes them errors: a send must not carry 'Skriv saken her')."""
    found = []
    for path in [issue.path / "issue.md", *(a.path for a in issue.articles)]:
        text = path.read_text(encoding="utf-8-sig")
        for phrase in PLACEHOLDER_PHRASES:
            if phrase in text:
                found.append(
                    Finding(
                        WARNING, display(path), _("still has the example text '{phrase}…'; replace it.", phrase=phrase)
                    )
                )
    return found


def prepare(
    settings: Settings, ref: str | None = None, *, language: str | None = None, strict: bool = False
) -> Prepared:
    """Load, validate, compose and compile one issue (the newest if ``ref`` is None). No writes.

    Problems are findings (``Prepared.findings``) so a check can report them all; ``strict``
    raises the first content error instead (building files from a broken issue is pointless).
    Only an issue that cannot be built at all raises either way. ``language`` renders the issue
    as that edition (the preview's language choice)."""
    issue = load_issue(settings, find_issue(settings, ref))
    if strict:
        errors = [f for f in issue.findings if f.level == ERROR]
        if errors:
            more = (
                _(" (and {count} more problem(s): 'newsletter check' lists them)", count=len(errors) - 1)
                if len(errors) > 1
                else ""
            )
            raise ContentError(errors[0].message + more, errors[0].where)
    if language is not None and language != issue.language:
        issue = replace(issue, language=language)
    strings = load_strings(template_folders(settings), issue.language)
    logo = settings.logo
    if logo is not None and not logo.is_file():
        raise ContentError(
            _(
                "newsletter.toml newsletter.logo: file {logo} not found; fix the path or remove the setting.",
                logo=display(logo),
            )
        )
    logo_url = settings.asset_url(issue.id, logo.name) if logo else None
    news = issue_news(settings, issue)
    found = list(issue.findings)
    emissions, municipal = issue_emissions(settings, issue, strings, found)
    composition = compose(
        settings, issue, strings, logo_url=logo_url, news=news, emissions=emissions, municipal=municipal
    )
    rendered = render_issue(settings, composition)
    size = html_size(settings, rendered, strings)
    if size > GMAIL_CLIP_BYTES:
        found.append(clip_warning(size))
    elif size > settings.html_warn_kb * 1024:
        found.append(
            Finding(
                WARNING,
                "email.html",
                _(
                    "the HTML is {size:.0f} KB, close to Gmail's 102 KB clipping limit; consider shortening the issue.",
                    size=size / 1024,
                ),
            )
        )
    if not issue.articles and not any(p.name != "issue.md" for p in issue.path.glob("*.md")):  # none written yet
        found.append(
            Finding(WARNING, display(issue.path), _("the issue has no articles yet; add one .md file per article."))
        )
    found.extend(leftover_examples(issue))
    if not issue.preheader:
        found.append(
            Finding(
                WARNING,
                display(issue.path / "issue.md"),
                _("no preheader; add 'preheader: ...', the line inboxes show after the subject."),
            )
        )
    files = [(a.filename, a.source) for a in issue.assets] + ([(logo.name, logo)] if logo else [])
    return Prepared(issue, rendered, strings, logo, news, tuple(found), composition, size,
                    fingerprint(rendered, files))  # fmt: skip


def clip_warning(size: int) -> Finding:
    """The build's warning for HTML that Gmail clips (check makes it an error)."""
    return Finding(
        WARNING,
        "email.html",
        _(
            "the HTML is {size:.0f} KB: Gmail cuts messages above 102 KB; shorten the issue or move articles to the web.",
            size=size / 1024,
        ),
    )


def same_content(prepared: Prepared, recorded: str) -> bool:
    """Whether ``prepared`` is what a delivery recorded (by ``fingerprint``; deliveries recorded
    before images were part of it match on the rendered issue alone)."""
    return recorded in (prepared.fingerprint, fingerprint(prepared.rendered, []))


def fingerprint(rendered: RenderedIssue, files: list[tuple[str, Path]]) -> str:
    """A fingerprint of what recipients get (subject, HTML and text, each municipality's block,
    and the images and files published with the issue), to notice later edits."""
    digest = hashlib.sha256()
    blocks = [piece for number in sorted(rendered.municipal) for piece in (number, *rendered.municipal[number])]
    pieces = (rendered.subject, *rendered.html.parts, *rendered.html.slots, *rendered.text.parts,
              *rendered.text.slots, *blocks)  # fmt: skip
    for piece in pieces:
        digest.update(str(piece).encode("utf-8"))
        digest.update(b"\0")
    for name, path in sorted(files):
        digest.update(name.encode("utf-8") + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()


def web_html(settings: Settings, prepared: Prepared) -> str:
    """The web version of an issue (its archive page): the same email without personal parts.

    The templates see ``web`` true: no unsubscribe or preference links, a signup link instead;
    the greeting is the general one and no municipality's block is shown."""
    composition = prepared.composition
    rendered = render_issue(settings, replace(composition, context={**composition.context, "web": True}))
    signup = settings.signup_url()
    values = {
        "greeting": prepared.strings["greeting"],
        "email": "",
        "unsubscribe_url": signup,  # only a project template that ignores 'web' still asks for these
        "preferences_url": signup,
        "municipality_html": "",
        "municipality_text": "",
    }
    return rendered.html.fill(values)


def issue_news(settings: Settings, issue: Issue) -> tuple[FeedItem, ...]:
    """The feed items the issue shows; none without a database or with 'feeds: false'."""
    if issue.front_matter.get("feeds") is False or not settings.database.exists():
        return ()
    from .feeds import selected_news

    with database(settings.database) as conn:
        return selected_news(settings, conn, issue.id, issue.language)


def issue_emissions(
    settings: Settings, issue: Issue, strings: dict[str, str], found: list[Finding]
) -> tuple[Highlights | None, dict[str, str]]:
    """The region's highlights and one sentence per member municipality, as the front matter asks.

    ``emissions: latest`` (the two newest years) or ``emissions: {from: 2019, to: 2020,
    release: "2025"}``. Without imported data the section is left out with a warning.
    """
    spec = issue.front_matter.get("emissions")
    if spec is None or spec is False:
        return None, {}
    where_ = f"{display(issue.path / 'issue.md')}"
    if spec == "latest" or spec is True:
        spec = {}
    if not isinstance(spec, dict) or set(spec) - {"from", "to", "release"} or ("from" in spec) != ("to" in spec):
        raise ContentError(
            _(
                "{where}: 'emissions' must be 'latest' or from/to years, e.g. emissions: {{from: 2019, to: 2020}}.",
                where=where_,
            )
        )
    years = (spec.get("from"), spec.get("to"))
    if spec and not all(isinstance(y, int) and not isinstance(y, bool) for y in years):
        raise ContentError(_("{where}: emissions from and to must be years such as 2019 and 2020.", where=where_))
    if settings.emissions_members is None:
        raise ContentError(
            _(
                "{where} asks for emissions, but newsletter.toml has no emissions.members (the region's member list).",
                where=where_,
            )
        )
    if not settings.database.exists():
        found.append(
            Finding(
                WARNING,
                where_,
                _("no emission data imported yet, so no emissions section; run 'newsletter emissions import FILE'."),
            )
        )
        return None, {}
    from .emissions import (
        highlights,
        latest_years,
        municipal_sentence,
        published_year,
        read_members,
        read_sectors,
        resolve_release,
        sectors_file,
        summarize,
    )

    members = read_members(settings.emissions_members)
    names = read_sectors(sectors_file(settings))
    with database(settings.database) as conn:
        try:
            release = resolve_release(conn, spec.get("release"))
        except EmissionsError as exc:
            if spec.get("release") is not None:
                raise EmissionsError(f"{where_}: {exc}") from exc
            found.append(Finding(WARNING, where_, _("{exc} The emissions section is left out.", exc=exc)))
            return None, {}
        start, end = latest_years(conn, release) if not spec else years
        newest = latest_years(conn, release)[1] if spec else end
        region_numbers = [n for m in members for n in m.numbers]
        region = summarize(conn, release, settings.emissions_region, region_numbers, start, end)
        municipal: dict[str, str] = {}
        for member in members:
            try:
                mine = summarize(conn, release, member.name, member.numbers, start, end, with_share=False)
            except EmissionsError as exc:  # its subscribers get no personal block: say so
                found.append(
                    Finding(WARNING, where_, _("no 'Din kommune' block for {name}: {exc}", name=member.name, exc=exc))
                )
                continue
            sentence = municipal_sentence(mine, strings, issue.language, names)
            for number in member.numbers:
                municipal[number] = sentence
    found.extend(Finding(f.level, where_, f.text) for f in region.findings)
    expected = published_year(issue.date)
    if newest < expected:
        found.append(Finding(WARNING, where_, _(
            "the emission figures go to {newest}, but Miljødirektoratet has published {expected} by the issue's date "
            "(each year's figures come out in the spring two years later); download the new file from "
            "Miljødirektoratet and run 'newsletter emissions import FILE'.", newest=newest, expected=expected)))  # fmt: skip
    elif end < newest:
        found.append(Finding(WARNING, where_, _(
            "the newest emission year shown is {end}, but the figures go to {newest}; write 'emissions: latest' "
            "or a later 'to' year, unless the older years are meant.", end=end, newest=newest)))  # fmt: skip
    return highlights(region, strings, issue.language, names), municipal


def html_size(
    settings: Settings, rendered: RenderedIssue, strings: dict[str, str], recipient: Recipient = PLACEHOLDER
) -> int:
    """Size in bytes of the HTML part for one recipient (what Gmail's clipping counts)."""
    return len(rendered.html.fill(recipient_values(settings, strings, recipient, rendered.municipal)).encode("utf-8"))


def build_issue(settings: Settings, ref: str | None = None, out: Path | None = None) -> BuildResult:
    """Write build/<issue>/email.mjml, email.html, preview.html, email.txt, message.eml and images/."""
    prepared = prepare(settings, ref, strict=True)
    issue, rendered = prepared.issue, prepared.rendered
    values = recipient_values(settings, prepared.strings, PLACEHOLDER, rendered.municipal)
    html = rendered.html.fill(values)
    message = build_message(settings, rendered, PLACEHOLDER, prepared.strings)
    # preview.html: the same email with images from the build folder, for looking at it
    # before the issue is published at base_url.
    preview = html.replace(settings.asset_url(issue.id, ""), "images/")
    outputs = {
        "email.mjml": rendered.mjml.encode("utf-8"),
        "email.html": html.encode("utf-8"),
        "preview.html": preview.encode("utf-8"),
        "email.txt": rendered.text.fill(values).encode("utf-8"),
        "message.eml": message.as_bytes(),
    }
    out_dir = (out or settings.build_dir / issue.id).resolve()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [_write_atomic(out_dir / name, data) for name, data in outputs.items()]
        images = out_dir / "images"
        copies = [(a.source, a.filename) for a in issue.assets]
        if prepared.logo:
            copies.append((prepared.logo, prepared.logo.name))
        marker = images / ".built-by-newsletter"
        if marker.is_file():  # our own output from an earlier build: drop images no longer used
            shutil.rmtree(images)
        elif images.exists() and copies:
            raise ProjectError(
                _(
                    "{images} exists and was not made by newsletter; choose another --out folder.",
                    images=display(images),
                )
            )
        if copies:
            images.mkdir()
            marker.write_text("Made by 'newsletter build'; emptied by the next build.\n", encoding="utf-8")
        for source, name in copies:
            shutil.copyfile(source, images / name)
            written.append(images / name)
    except OSError as exc:
        raise ProjectError(
            _(
                "cannot write the build to {out_dir} ({strerror}); check the folder.",
                out_dir=display(out_dir),
                strerror=os_reason(exc),
            )
        ) from exc
    return BuildResult(issue.id, out_dir, tuple(written), len(outputs["email.html"]), prepared.findings)


def _write_atomic(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
