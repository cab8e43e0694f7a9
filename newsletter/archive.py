"""The public archive of sent issues: a page per issue, an index by year, an Atom feed, a sitemap.

When a delivery starts, ``save_snapshot`` stores the issue's web version (the email without
personal parts) and its images in the database, in the same transaction that records the
recipients. ``write_archive`` turns the stored snapshots into static files, so the archive shows
what was sent, even if the issue folder is edited or removed later. ``newsletter serve`` serves
the folder at ``/archive/``; any static web server can too.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from html import escape
from pathlib import Path

from . import journal
from .build import Prepared, prepare, same_content, web_html
from .config import Settings
from .errors import ProjectError
from .i18n import format_date, load_strings
from .language import _, os_reason
from .locks import hold
from .render import template_folders, web_environment
from .store import connect, database

MARKER = ".built-by-newsletter"
ATOM = "http://www.w3.org/2005/Atom"
SITEMAP = "http://www.sitemaps.org/schemas/sitemap/0.9"


@dataclass(frozen=True)
class Snapshot:
    """One issue as the archive shows it: the web version and what it needs."""

    issue: str
    language: str
    title: str
    subject: str
    preheader: str
    issue_date: str  # YYYY-MM-DD
    html: str  # the web version; images as relative 'images/<file>' links
    feed_html: str  # intro and articles, for the Atom feed (absolute links)
    files: tuple[tuple[str, bytes], ...]  # images/<name> -> bytes


@dataclass(frozen=True)
class ArchivedIssue:
    """A snapshot with the time its delivery started."""

    snapshot: Snapshot
    sent_at: str

    @property
    def date(self) -> date:
        return date.fromisoformat(self.snapshot.issue_date)


@dataclass(frozen=True)
class ArchiveResult:
    """What ``write_archive`` wrote."""

    out_dir: Path
    issues: tuple[str, ...]


def snapshot(settings: Settings, prepared: Prepared) -> Snapshot:
    """The archive's copy of a prepared issue (see ``build.web_html``)."""
    issue = prepared.issue
    html = web_html(settings, prepared)
    html = html.replace(settings.asset_url(issue.id, ""), "images/")
    html = html.replace(f'href="{settings.archive_index_url()}"', 'href="../"')
    files = [(asset.filename, asset.source.read_bytes()) for asset in issue.assets]
    if prepared.logo is not None:
        files.append((prepared.logo.name, prepared.logo.read_bytes()))
    parts = [issue.intro_html]
    for article in issue.articles:
        parts.append(f"<h2>{escape(article.title)}</h2>")
        if article.image is not None:
            parts.append(f'<p><img src="{escape(article.image.url)}" alt="{escape(article.image.alt)}"></p>')
        parts.append(article.html)
        if article.link:
            text = article.link_text or prepared.strings["read_more"]
            parts.append(f'<p><a href="{escape(article.link)}">{escape(text)}</a></p>')
    return Snapshot(
        issue=issue.id,
        language=issue.language,
        title=issue.title,
        subject=issue.subject,
        preheader=issue.preheader,
        issue_date=issue.date.isoformat(),
        html=html,
        feed_html="\n".join(p for p in parts if p),
        files=tuple(dict(files).items()),
    )


def save_snapshot(conn: sqlite3.Connection, snap: Snapshot, *, draft: bool = False) -> None:
    """Store (or replace) an issue's snapshot. Call inside the transaction that starts its delivery.

    ``draft``: for a test send, which publishes only the images (so the test shows them); it
    never replaces the snapshot of an issue whose delivery has started."""
    if draft:
        conn.execute("UPDATE archive_issues SET test_images = 1 WHERE issue = ?", (snap.issue,))
        if journal.sent_fingerprint(conn, snap.issue) is not None:
            return
    conn.execute(
        "INSERT INTO archive_issues (issue, language, title, subject, preheader, issue_date, html, feed_html,"
        " test_images) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(issue) DO UPDATE SET language = excluded.language,"
        " title = excluded.title, subject = excluded.subject, preheader = excluded.preheader,"
        " issue_date = excluded.issue_date, html = excluded.html, feed_html = excluded.feed_html,"
        " test_images = MAX(archive_issues.test_images, excluded.test_images)",
        (snap.issue, snap.language, snap.title, snap.subject, snap.preheader, snap.issue_date, snap.html,
         snap.feed_html, int(draft)),
    )  # fmt: skip
    conn.execute("DELETE FROM archive_files WHERE issue = ?", (snap.issue,))
    conn.executemany(
        "INSERT INTO archive_files (issue, name, data) VALUES (?, ?, ?)",
        [(snap.issue, name, data) for name, data in snap.files],
    )


def archived(conn: sqlite3.Connection, *, pages: bool = True) -> list[ArchivedIssue]:
    """The issues of which the transport has accepted a message and that are not hidden, newest
    first, without their images (``write_archive`` reads those one issue at a time). With
    ``pages=False`` only what names them (title, date, language...), not their pages: what the
    welcome email shows, read at every confirmation, without reading every issue ever sent."""
    published = journal.published(conn)
    columns = "*" if pages else "issue, language, title, subject, preheader, issue_date, '' AS html, '' AS feed_html"
    rows = [
        row
        for row in conn.execute(f"SELECT {columns} FROM archive_issues WHERE hidden = 0")  # one of the two lists above
        if row["issue"] in published
    ]
    rows.sort(key=lambda row: (row["issue_date"], published[row["issue"]]), reverse=True)
    result = []
    for row in rows:
        snap = Snapshot(
            issue=row["issue"],
            language=row["language"],
            title=row["title"],
            subject=row["subject"],
            preheader=row["preheader"],
            issue_date=row["issue_date"],
            html=row["html"],
            feed_html=row["feed_html"],
            files=(),
        )
        result.append(ArchivedIssue(snap, published[row["issue"]]))
    return result


def _images(conn: sqlite3.Connection, issue_id: str) -> Iterator[tuple[str, bytes]]:
    for name, data in conn.execute("SELECT name, data FROM archive_files WHERE issue = ? ORDER BY name", (issue_id,)):
        yield name, bytes(data)


def image_only_issues(settings: Settings, conn: sqlite3.Connection) -> list[str]:
    """Images published without a page: those of sent issues taken out of the archive (emails
    already delivered show them), and those of issues test-sent but not sent yet (so the test
    shows them), as long as the issue's folder is still there."""
    published = journal.published(conn)
    rows = conn.execute("SELECT issue, hidden, test_images FROM archive_issues ORDER BY issue").fetchall()
    return [
        row["issue"]
        for row in rows
        if (row["issue"] in published and row["hidden"])
        or (row["issue"] not in published and row["test_images"] and (settings.issues_dir / row["issue"]).is_dir())
    ]


def set_hidden(settings: Settings, ref: str, hidden: bool) -> tuple[str, bool]:
    """Take an issue out of the archive (or put it back); its snapshot is kept, and its images
    stay published for the emails already delivered. ``ref`` is the folder name or a unique part
    of it. Returns the issue and whether anything changed."""
    wanted = ref.strip()
    if not wanted:
        raise ProjectError(_("give the issue to hide or show, e.g. --hide 2026-12-ordforererklaeringen."))
    with database(settings.database) as conn:
        rows = conn.execute("SELECT issue, hidden FROM archive_issues ORDER BY issue DESC").fetchall()
        matches = [r for r in rows if r["issue"] == wanted] or [r for r in rows if wanted in r["issue"]]
        if len(matches) != 1:
            known = ", ".join(r["issue"] for r in (matches or rows)[:8]) or _("none yet")
            problem = _("matches more than one issue") if matches else _("is not in the archive (only sent issues are)")
            raise ProjectError(
                _("{wanted!r} {problem}; archived issues: {known}.", wanted=wanted, problem=problem, known=known)
            )
        issue_id = matches[0]["issue"]
        if bool(matches[0]["hidden"]) == hidden:
            return issue_id, False
        with conn:
            conn.execute("UPDATE archive_issues SET hidden = ? WHERE issue = ?", (int(hidden), issue_id))
    return issue_id, True


def add_sent_issue(settings: Settings, ref: str | None, force: bool = False) -> str:
    """Store the archive page of an issue that was sent before the archive existed (or whose
    page is missing), from its folder as it is now. Refuses if the issue has changed since it
    was sent, unless ``force``: the archive should show what people got."""
    prepared = prepare(settings, ref, strict=True)
    issue_id = prepared.issue.id
    with database(settings.database) as conn:
        recorded = journal.sent_fingerprint(conn, issue_id)
        if recorded is None:
            raise ProjectError(
                _("{issue_id} has not been sent; the archive takes it when its delivery starts.", issue_id=issue_id)
            )
        if not same_content(prepared, recorded) and not force:
            raise ProjectError(
                _(
                    "{issue_id} has changed since it was sent, so its page would differ from what people got; undo the change, or add --force to archive it as it is now.",
                    issue_id=issue_id,
                )
            )
        page = snapshot(settings, prepared)
        with conn:
            save_snapshot(conn, page)
    return issue_id


def _page_html(settings: Settings, item: ArchivedIssue, strings: dict[str, str]) -> str:
    """The stored web version with what a web page needs: canonical address, description, feed
    link, and a short navigation bar back to the archive."""
    snap = item.snapshot
    url = settings.archive_url(snap.issue)
    head = (
        f'<link rel="canonical" href="{escape(url)}">\n'
        f'<meta name="description" content="{escape(snap.preheader or snap.title)}">\n'
        f'<meta property="og:title" content="{escape(snap.subject)}">\n'
        f'<meta property="og:type" content="article">\n'
        f'<meta property="og:url" content="{escape(url)}">\n'
        f'<link rel="alternate" type="application/atom+xml" title="{escape(settings.name)}" href="../feed.xml">\n'
    )
    nav = (
        '<nav aria-label="{label}" style="background:#0b3a5b;padding:10px 16px;font:15px/1.5 Helvetica,Arial,sans-serif;">'
        '<a href="../" style="color:#ffffff;font-weight:bold;">{back}</a>'
        '<span style="color:#ffffff;"> · </span>'
        '<a href="{signup}" style="color:#ffffff;">{subscribe}</a></nav>'
    ).format(
        label=escape(strings["archive_nav"]),
        back=escape(f"← {strings['archive']}"),
        signup=escape(settings.signup_url()),
        subscribe=escape(strings["web_version_signup_link"]),
    )
    html = snap.html
    name = settings.display_name(snap.language)
    title = f"<title>{escape(snap.subject)} – {escape(name)}</title>"
    html = re.sub(r"<title>.*?</title>", lambda _: title, html, count=1, flags=re.S)  # text, not a template
    html = html.replace("</head>", head + "</head>", 1)
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, html, count=1)


def _atom(settings: Settings, items: list[ArchivedIssue]) -> bytes:
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    feed = ET.Element(f"{{{ATOM}}}feed", {"{http://www.w3.org/XML/1998/namespace}lang": settings.language})
    index = settings.archive_index_url()
    sub(feed, "id", index)
    sub(feed, "title", settings.name)
    sub(feed, "subtitle", settings.sender_name)
    sub(feed, "link", rel="self", type="application/atom+xml", href=f"{index}feed.xml")
    sub(feed, "link", rel="alternate", type="text/html", href=index)
    newest = max((i.sent_at for i in items), default=None)
    sub(feed, "updated", newest or f"{date.today().isoformat()}T00:00:00Z")  # stored as RFC 3339 UTC
    author = sub(feed, "author")
    sub(author, "name", settings.sender_name)
    sub(feed, "generator", "newsletter")
    for item in items:
        snap = item.snapshot
        url = settings.archive_url(snap.issue)
        entry = sub(feed, "entry")
        if snap.language != settings.language:
            entry.set("{http://www.w3.org/XML/1998/namespace}lang", snap.language)
        sub(entry, "id", url)
        sub(entry, "title", snap.subject)
        sub(entry, "link", rel="alternate", type="text/html", href=url)
        sub(entry, "published", item.sent_at)
        sub(entry, "updated", item.sent_at)
        if snap.preheader:
            sub(entry, "summary", snap.preheader)
        sub(entry, "content", snap.feed_html, type="html")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="utf-8", xml_declaration=False)


def _sitemap(settings: Settings, items: list[ArchivedIssue]) -> bytes:
    ET.register_namespace("", SITEMAP)
    urlset = ET.Element(f"{{{SITEMAP}}}urlset")
    newest = max((i.sent_at for i in items), default=None)
    pages = [(settings.archive_index_url(), newest)] + [
        (settings.archive_url(i.snapshot.issue), i.sent_at) for i in items
    ]
    for loc, moment in pages:
        url = ET.SubElement(urlset, f"{{{SITEMAP}}}url")
        ET.SubElement(url, f"{{{SITEMAP}}}loc").text = loc
        if moment:
            ET.SubElement(url, f"{{{SITEMAP}}}lastmod").text = moment[:10]
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(urlset, encoding="utf-8", xml_declaration=False)


def _index(settings: Settings, items: list[ArchivedIssue]) -> str:
    lang = settings.language
    strings = load_strings(template_folders(settings), lang)
    years: dict[int, list[dict]] = {}
    for item in items:
        snap = item.snapshot
        years.setdefault(item.date.year, []).append(
            {
                "url": f"{snap.issue}/",
                "subject": snap.subject,
                "preheader": snap.preheader,
                "date": format_date(item.date, lang),
                "datetime": snap.issue_date,
                "lang": snap.language if snap.language != lang else None,
            }
        )
    context = {
        "lang": lang,
        "t": strings,
        "title": strings["archive"],
        "newsletter_name": settings.name,
        "sender_name": settings.sender_name,
        "postal_address": settings.address_line,
        "home": settings.archive_index_url(),
        "other_language_url": None,
        "years": sorted(years.items(), reverse=True),
        "signup_url": settings.signup_url(),
        "feed_url": "feed.xml",
        "canonical": settings.archive_index_url(),
    }
    return web_environment(settings).get_template("web/archive.html.j2").render(context)


def write_archive(settings: Settings, out: Path | None = None) -> ArchiveResult:
    """Write the archive of sent issues to ``out`` (default: paths.archive), replacing an earlier
    archive there in one step. Refuses a folder that newsletter did not make.

    ``out`` becomes a symbolic link to a folder beside it holding this version; the next write
    makes a new folder and moves the link in one atomic rename, so a web server reading the
    archive sees the old version or the new one, never a half-written or missing one. One
    writer at a time (a lock file): a send and run-due finishing together take turns."""
    out_dir = Path(os.path.abspath(out or settings.archive_dir))
    with hold(settings.build_dir, "archive", wait=True):  # released when the process dies, too
        _check_ours(out_dir)
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            fresh = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
            try:
                # The database is read under the lock: the last writer has the newest data.
                issues = _write_version(settings, fresh)
                fresh.chmod(0o755)
                _publish(fresh, out_dir)
            except BaseException:
                shutil.rmtree(fresh, ignore_errors=True)
                raise
        except OSError as exc:
            raise ProjectError(
                _(
                    "cannot write the archive to {out_dir} ({strerror}); check the folder (paths.archive, or --out).",
                    out_dir=shown_path(out_dir),
                    strerror=os_reason(exc),
                )
            ) from exc
    return ArchiveResult(out_dir, issues)


def _ours(out_dir: Path, name: str) -> bool:
    """Whether ``name`` (beside ``out_dir``) is one of its versions, temporary links or leftovers."""
    return re.fullmatch(rf"\.{re.escape(out_dir.name)}-(?:[a-z0-9_]{{8}}|link-\d+|replaced-\d+)", name) is not None


def shown_path(path: Path) -> str:
    """A path for messages, relative when below the current folder, links not followed."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


def _check_ours(out_dir: Path) -> None:
    """Refuse to replace a folder (or link) that newsletter did not make."""
    if out_dir.is_symlink():
        # Our link names a version folder beside it, by name only. (Comparing resolved paths
        # would fail when a folder above, such as build/, is itself a link.)
        target = os.readlink(out_dir)
        if "/" not in target and _ours(out_dir, target):
            return
    elif not out_dir.exists() or (out_dir.is_dir() and ((out_dir / MARKER).is_file() or not any(out_dir.iterdir()))):
        return
    raise ProjectError(
        _(
            "{out_dir} exists and was not made by newsletter; choose another folder (paths.archive, or --out).",
            out_dir=shown_path(out_dir),
        )
    )


def _write_version(settings: Settings, folder: Path) -> tuple[str, ...]:
    """Write every file of the archive into ``folder``; images are read from the database one
    issue at a time, so memory does not grow with the archive. Returns the archived issues."""

    def put(name: str, data: bytes) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    conn = connect(settings.database) if settings.database.exists() else None
    try:
        items = archived(conn) if conn else []
        strings = load_strings(template_folders(settings), settings.language)
        put(MARKER, b"Made by 'newsletter archive'; replaced by the next run.\n")
        put("index.html", _index(settings, items).encode("utf-8"))
        put("feed.xml", _atom(settings, items))
        put("sitemap.xml", _sitemap(settings, items))
        for item in items:
            snap = item.snapshot
            page_strings = strings if snap.language == settings.language else load_strings(
                template_folders(settings), snap.language
            )  # fmt: skip
            put(f"{snap.issue}/index.html", _page_html(settings, item, page_strings).encode("utf-8"))
        with_images = [i.snapshot.issue for i in items] + (image_only_issues(settings, conn) if conn else [])
        for issue_id in with_images:
            for name, data in _images(conn, issue_id):  # type: ignore[arg-type]
                put(f"{issue_id}/images/{name}", data)
    finally:
        if conn is not None:
            conn.close()
    return tuple(i.snapshot.issue for i in items)


def _publish(fresh: Path, out_dir: Path) -> None:
    """Point ``out_dir`` at ``fresh`` with one atomic rename, then remove older versions."""
    old: Path | None = None
    if out_dir.is_symlink():
        old = out_dir.parent / os.readlink(out_dir)  # a name beside it (checked by _check_ours)
    elif out_dir.exists():  # a folder from before links were used (ours: checked), or an empty one
        old = out_dir.with_name(f".{out_dir.name}-replaced-{os.getpid()}")
        os.replace(out_dir, old)
    link = out_dir.with_name(f".{out_dir.name}-link-{os.getpid()}")
    link.unlink(missing_ok=True)
    try:
        os.symlink(fresh.name, link)  # relative: the pair can be moved or copied together
    except OSError:  # Windows, where making links takes a right staff laptops lack: two renames
        if out_dir.is_symlink():
            out_dir.unlink()
        os.replace(fresh, out_dir)  # the folder is missing for a moment; a laptop serves nobody
        fresh = out_dir
    else:
        os.replace(link, out_dir)
    # The version just replaced stays until the next write, so a request that began on it can
    # finish; older ones (and links left by a crash) go. Writers take turns (the lock), so no
    # other writer's new folder is here.
    for stale in out_dir.parent.iterdir():
        if not _ours(out_dir, stale.name):
            continue  # another archive's versions (archive-test beside archive), or anything else
        if stale.is_symlink():
            stale.unlink(missing_ok=True)
        elif stale.is_dir() and stale not in (fresh, old):
            shutil.rmtree(stale, ignore_errors=True)
