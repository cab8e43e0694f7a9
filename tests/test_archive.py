"""The public archive: what a delivery stores, what 'newsletter archive' writes, what 'serve' serves."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import httpx
import pytest
from conftest import KEY, SAMPLE_ISSUE, LiveServer, assert_error, load_sample_data, subscribe, write

from newsletter.config import load_settings

ATOM = "{http://www.w3.org/2005/Atom}"
BASE = "https://nyhetsbrev.osloregionen.no"


@pytest.fixture
def sent(run, project, monkeypatch):
    """The sample issue sent to two subscribers (through the outbox), one of them with a name and
    a municipality, so that the personal parts would show if the archive leaked them."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    subscribe(("kari@example.no", "Kari Nordmann", "3205"), "per@example.no")
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert "Archive updated: build/archive (1 issue(s))." in result.stdout
    return project / "build" / "archive"


def changed_subject(text: str) -> str:
    """issue.md with its subject edited (as staff might after sending)."""
    edited = text.replace('subject: "Osloregionen: ny', 'subject: "Endret etterpå: ny')
    assert edited != text
    return edited


def older_issue(run, project) -> str:
    """A second, older issue with one article."""
    made = run("new", "Høstmøtet i Osloregionen", "--date", "2025-10-16")
    assert made.exit_code == 0, made.output
    folder = project / "content" / "issues" / "2025-10-hostmotet-i-osloregionen"
    write(
        folder / "issue.md",
        '---\ntitle: Høstmøtet i Osloregionen\nsubject: "Høstmøtet: rådet samlet på Lillestrøm"\n'
        "preheader: Hva rådet ble enige om, og hva som skjer videre i regionen.\ndate: 2025-10-16\nfeeds: false\n---\n"
        "Rådet i Osloregionen møttes til høstmøte. Her er et kort referat fra dagen, med lenker videre.\n",
    )
    for stale in folder.glob("0*.md"):
        stale.unlink()
    write(
        folder / "01-referat.md",
        "---\ntitle: Referat fra høstmøtet\n---\n" + "Rådet drøftet areal, transport og klima i regionen. " * 8 + "\n",
    )
    return folder.name


def test_a_sent_issue_has_a_page_without_personal_parts(sent):
    page = (sent / SAMPLE_ISSUE / "index.html").read_text(encoding="utf-8")
    assert "<title>Osloregionen: ny ordførererklæring" in page
    assert f'<link rel="canonical" href="{BASE}/archive/{SAMPLE_ISSUE}/">' in page
    assert '<html lang="nb"' in page
    assert 'href="../"' in page and "Tidligere utgaver" in page  # back to the index
    assert f'href="{BASE}/signup"' in page and "Meld deg på nyhetsbrevet" in page
    # Nobody's name, address, municipality block or personal links
    for personal in ("Kari", "kari@example.no", "per@example.no", "/unsubscribe/", "/preferences/", "Meld deg av",
                     "Din kommune", "Se nyhetsbrevet i nettleseren"):  # fmt: skip
        assert personal not in page, personal
    assert "Hei!" in page  # the general greeting
    # Images are stored with the page and linked relatively, so the folder works anywhere.
    assert 'src="images/ordforererklaeringen.png"' in page
    assert (sent / SAMPLE_ISSUE / "images" / "ordforererklaeringen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_atom_feed_parses_and_has_the_required_elements(sent):
    raw = (sent / "feed.xml").read_bytes()
    parsed = feedparser.parse(raw)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == "Nyhetsbrev fra Osloregionen"
    assert parsed.feed.id == f"{BASE}/archive/"
    entry = parsed.entries[0]
    assert entry.title.startswith("Osloregionen: ny ordførererklæring")
    assert entry.link == f"{BASE}/archive/{SAMPLE_ISSUE}/"
    assert entry.summary.startswith("64 ordførere står bak")
    assert "Ordførererklæringen" in entry.content[0].value and "Kari" not in entry.content[0].value
    # RFC 4287: feed and entries each need id, title and updated; the feed needs an author
    # (or every entry does) and should link to itself.
    root = ET.fromstring(raw)
    assert root.tag == f"{ATOM}feed"
    for element in (root, *root.findall(f"{ATOM}entry")):
        for required in ("id", "title", "updated"):
            assert (element.findtext(f"{ATOM}{required}") or "").strip(), required
        datetime.strptime(element.findtext(f"{ATOM}updated"), "%Y-%m-%dT%H:%M:%SZ")
    assert root.find(f"{ATOM}author/{ATOM}name").text == "Osloregionen"
    assert root.find(f"{ATOM}link[@rel='self']").get("href") == f"{BASE}/archive/feed.xml"
    sitemap = ET.fromstring((sent / "sitemap.xml").read_bytes())
    locations = [e.text for e in sitemap.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
    assert locations == [f"{BASE}/archive/", f"{BASE}/archive/{SAMPLE_ISSUE}/"]


def test_the_index_lists_sent_issues_newest_first_by_year(run, project, sent):
    older = older_issue(run, project)
    result = run("send", older, "--yes")
    assert result.exit_code == 0, result.output
    index = (sent / "index.html").read_text(encoding="utf-8")
    assert index.index('<h2 id="y2026">2026</h2>') < index.index(SAMPLE_ISSUE) < index.index('<h2 id="y2025">')
    assert index.index('<h2 id="y2025">2025</h2>') < index.index(f'href="{older}/"')
    assert '<time class="muted" datetime="2025-10-16">16. oktober 2025</time>' in index
    assert '<link rel="alternate" type="application/atom+xml"' in index
    entries = feedparser.parse((sent / "feed.xml").read_bytes()).entries
    assert [e.link.rsplit("/", 2)[-2] for e in entries] == [SAMPLE_ISSUE, older]


def test_the_archive_shows_what_was_sent_even_after_the_issue_is_edited(run, project, sent, issue_dir):
    text = (issue_dir / "issue.md").read_text(encoding="utf-8")
    write(issue_dir / "issue.md", changed_subject(text))
    (issue_dir / "ordforererklaeringen.png").unlink()
    result = run("archive")
    assert result.exit_code == 0, result.output
    assert "Wrote the archive of 1 issue(s) to build/archive" in result.stdout
    page = (sent / SAMPLE_ISSUE / "index.html").read_text(encoding="utf-8")
    assert "Osloregionen: ny ordførererklæring" in page and "Endret etterpå" not in page
    assert (sent / SAMPLE_ISSUE / "images" / "ordforererklaeringen.png").is_file()


def test_only_issues_whose_delivery_started_are_archived(run, project, sent):
    from newsletter.schedule import run_due

    older = older_issue(run, project)
    assert run("send", older, "--test", "redaksjonen@example.no").exit_code == 0  # a test send is not a send
    assert run("schedule", older, "--at", "2030-01-15 09:00").exit_code == 0
    assert run("archive").exit_code == 0
    assert older not in (sent / "index.html").read_text(encoding="utf-8")
    assert not (sent / older / "index.html").exists()  # only the images, for the test email
    done = run_due(load_settings(), datetime(2030, 1, 15, 8, 1, tzinfo=UTC))
    assert done.problems == ()
    assert run("archive").exit_code == 0
    assert f'href="{older}/"' in (sent / "index.html").read_text(encoding="utf-8")


def test_the_welcome_shows_the_newest_issue_in_the_readers_language_without_reading_the_pages(run, project, sent):
    from newsletter.archive import archived
    from newsletter.store import database
    from newsletter.welcome import newest_issue

    older = older_issue(run, project)
    assert run("send", older, "--yes").exit_code == 0
    settings = load_settings()
    with database(settings.database) as conn:
        newest = newest_issue(settings, conn, "nb")
        in_english = newest_issue(settings, conn, "en")  # no English issue: the newest of all
        listed = archived(conn, pages=False)
        whole = archived(conn)
    assert newest == {
        "title": "Oppdatert ordførererklæring for klima og miljø",
        "date": "3. desember 2026",
        "url": f"{BASE}/archive/{SAMPLE_ISSUE}/",
    }, newest
    assert in_english == {**newest, "date": "3 December 2026"}
    assert [a.snapshot.issue for a in listed] == [a.snapshot.issue for a in whole] == [SAMPLE_ISSUE, older]
    assert all(a.snapshot.html == a.snapshot.feed_html == "" for a in listed)
    assert all(a.snapshot.html and a.snapshot.feed_html for a in whole)
    assert [a.snapshot.title for a in listed] == [a.snapshot.title for a in whole]
    assert run("archive", "--hide", SAMPLE_ISSUE).exit_code == 0
    with database(settings.database) as conn:
        assert newest_issue(settings, conn, "nb")["title"] == "Høstmøtet i Osloregionen"


def test_hide_and_unhide(run, project, sent):
    hidden = run("archive", "--hide", SAMPLE_ISSUE)
    assert hidden.exit_code == 0, hidden.output
    assert f"{SAMPLE_ISSUE} is hidden from the archive." in hidden.stdout
    assert not (sent / SAMPLE_ISSUE / "index.html").exists()
    # Its images stay: the emails already delivered show them.
    assert (sent / SAMPLE_ISSUE / "images" / "ordforererklaeringen.png").is_file()
    assert "was hidden already" in run("archive", "--hide", "ordforer").stdout  # a unique part of the name
    assert "Ingen utgaver er sendt ennå." in (sent / "index.html").read_text(encoding="utf-8")
    assert feedparser.parse((sent / "feed.xml").read_bytes()).entries == []
    assert f"{SAMPLE_ISSUE} is back in the archive." in run("archive", "--unhide", SAMPLE_ISSUE).stdout
    assert (sent / SAMPLE_ISSUE / "index.html").is_file()
    assert f"{SAMPLE_ISSUE} was not hidden." in run("archive", "--unhide", SAMPLE_ISSUE).stdout
    assert_error(run("archive", "--hide", "2031-01-ukjent"), "'2031-01-ukjent' is not in the archive", SAMPLE_ISSUE)
    assert_error(run("archive", "--hide", " "), "give the issue to hide or show")


def test_an_empty_archive_and_a_folder_that_is_not_ours(run, project):
    result = run("archive")
    assert result.exit_code == 0, result.output
    assert "Wrote the archive of 0 issue(s)" in result.stdout
    assert feedparser.parse((project / "build/archive/feed.xml").read_bytes()).bozo == 0
    write(project / "site" / "index.html", "<p>The organisation's own site</p>")
    assert_error(run("archive", "--out", "site"), "site exists and was not made by newsletter", "--out")
    assert (project / "site" / "index.html").read_text(encoding="utf-8") == "<p>The organisation's own site</p>"
    again = run("archive", "--out", "build/archive")  # our own folder is replaced whole
    assert again.exit_code == 0, again.output
    assert not list(Path(project / "build").glob(".archive.*"))  # no temporary folders left behind
    leftovers = [p.name for p in (project / "build").iterdir() if p.name.startswith(".archive-")]
    assert len(leftovers) == 2 and not any(
        "-link-" in n or "-replaced-" in n for n in leftovers
    )  # this and the one before


def test_serve_serves_the_archive(run, project, sent, monkeypatch):
    from newsletter.web import create_app

    with LiveServer(create_app(load_settings())) as live:
        index = httpx.get(f"{live.url}/archive/")
        assert index.status_code == 200 and "Tidligere utgaver" in index.text
        page = httpx.get(f"{live.url}/archive/{SAMPLE_ISSUE}/")
        assert page.status_code == 200 and "ordførererklæring" in page.text
        assert httpx.get(f"{live.url}/archive/{SAMPLE_ISSUE}/images/ordforererklaeringen.png").status_code == 200
        feed = httpx.get(f"{live.url}/archive/feed.xml")
        assert feed.status_code == 200 and feedparser.parse(feed.content).entries
        assert feed.headers["content-type"] == "application/atom+xml; charset=utf-8"
        assert httpx.get(f"{live.url}/archive/.built-by-newsletter").status_code == 404
        assert httpx.get(f"{live.url}/archive/2031-01-ukjent/").status_code == 404
        redirect = httpx.get(f"{live.url}/archive")
        assert redirect.status_code in (301, 307, 308) and redirect.headers["location"].endswith("/archive/")


def test_the_archive_is_published_once_the_first_message_is_accepted(project, monkeypatch):
    """The issue becomes public when the transport has accepted its first message, not before
    (a delivery that fails to start publishes nothing), and before the rest go out."""
    import mailbox

    from newsletter import delivery

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    subscribe(*(f"p{n}@example.no" for n in range(12)))
    settings = load_settings()
    planned = delivery.plan(settings)
    seen = []
    real = delivery.publish

    def watched(settings, test=False):  # the real publish, with a look at the outbox when it runs
        box = project / "outbox"
        seen.append(len(list(mailbox.Maildir(box, create=False).iterkeys())) if (box / "cur").exists() else 0)
        return real(settings, test)

    monkeypatch.setattr(delivery, "publish", watched)
    result = delivery.send(settings, planned)
    assert result.sent == 12 and "Archive updated: build/archive (1 issue(s))." in result.notes
    assert len(seen) == 1 and 1 <= seen[0] < 12
    image = project / "build/archive" / SAMPLE_ISSUE / "images" / "ordforererklaeringen.png"
    assert image.is_file()


def test_a_test_send_publishes_the_images_but_no_page(run, project, issue_dir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    result = run("send", "--test", "redaksjonen@example.no")
    assert result.exit_code == 0, result.output
    assert "The test's images are published in build/archive (the issue is not archived)." in result.stdout
    archive = project / "build" / "archive"
    assert (archive / SAMPLE_ISSUE / "images" / "ordforererklaeringen.png").is_file()  # the test email shows it
    assert not (archive / SAMPLE_ISSUE / "index.html").exists()
    assert SAMPLE_ISSUE not in (archive / "index.html").read_text(encoding="utf-8")
    assert feedparser.parse((archive / "feed.xml").read_bytes()).entries == []


def test_a_test_send_after_the_send_does_not_change_the_archive(run, project, sent, issue_dir):
    text = (issue_dir / "issue.md").read_text(encoding="utf-8")
    write(issue_dir / "issue.md", changed_subject(text))
    assert run("send", "--test", "redaksjonen@example.no").exit_code == 0
    page = (sent / SAMPLE_ISSUE / "index.html").read_text(encoding="utf-8")
    assert "Osloregionen: ny ordførererklæring" in page and "Endret etterpå" not in page


def test_the_folder_is_a_link_moved_in_one_step_and_two_writers_take_turns(run, project, sent):
    """A server reading the archive never finds it missing or half-written, and a send and a
    run-due that write it at the same moment both succeed, the last with the newest data."""
    import os
    import threading

    from newsletter.archive import write_archive

    assert sent.is_symlink() and os.readlink(sent).startswith(".archive-")
    first = sent.resolve()
    settings = load_settings()
    errors, seen_missing, stop = [], [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if not (sent / "index.html").is_file():
                seen_missing.append(1)

    def writer() -> None:
        try:
            for _ in range(15):
                write_archive(settings)
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    watching = threading.Thread(target=reader)
    watching.start()
    writers = [threading.Thread(target=writer) for _ in range(2)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    watching.join()
    assert errors == [] and seen_missing == []
    assert not first.exists()  # old versions are removed: only the current one and the one before stay
    versions = [p.name for p in sent.parent.iterdir() if p.name.startswith(".archive-")]
    assert len(versions) == 2 and os.readlink(sent) in versions
    assert (sent / SAMPLE_ISSUE / "index.html").is_file()


def test_odd_characters_in_the_subject_stay_text(run, project, issue_dir, monkeypatch):
    """A subject with a backslash, '<' and '&' is text on every page and in the feed."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    subscribe("a@example.no")
    text = (issue_dir / "issue.md").read_text(encoding="utf-8")
    start = text.index("subject:")
    end = text.index("\n", start)
    subject = 'Tall \\d og \\1: <b>klima</b> & "miljø"'
    write(issue_dir / "issue.md", text[:start] + "subject: '" + subject + "'" + text[end:])
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.stderr
    archive = project / "build" / "archive"
    page = (archive / SAMPLE_ISSUE / "index.html").read_text(encoding="utf-8")
    assert "<title>Tall \\d og \\1: &lt;b&gt;klima&lt;/b&gt; &amp; &quot;miljø&quot; – " in page
    assert "<b>klima</b>" not in (archive / "index.html").read_text(encoding="utf-8")
    entry = feedparser.parse((archive / "feed.xml").read_bytes()).entries[0]
    assert entry.title == 'Tall \\d og \\1: <b>klima</b> & "miljø"'


def test_an_issue_sent_before_the_archive_can_be_added(run, project, sent):
    import sqlite3

    conn = sqlite3.connect(project / "newsletter.db")  # as after an upgrade: a delivery, no page
    with conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("DELETE FROM archive_issues")
    conn.close()
    assert run("archive").exit_code == 0
    assert not (sent / SAMPLE_ISSUE / "index.html").exists()
    added = run("archive", "--add", "ordforer")
    assert added.exit_code == 0, added.output
    assert f"{SAMPLE_ISSUE} is stored in the archive." in added.stdout
    assert (sent / SAMPLE_ISSUE / "index.html").is_file()
    path = project / "content/issues" / SAMPLE_ISSUE / "issue.md"
    write(path, changed_subject(path.read_text(encoding="utf-8")))
    assert_error(run("archive", "--add", SAMPLE_ISSUE), "has changed since it was sent", "--force")
    assert run("archive", "--add", SAMPLE_ISSUE, "--force").exit_code == 0
    older = older_issue(run, project)
    assert_error(run("archive", "--add", older), f"{older} has not been sent")


def test_serve_before_the_first_archive_answers_not_found(project, monkeypatch):
    from newsletter.web import create_app

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    with LiveServer(create_app(load_settings())) as live:
        assert httpx.get(f"{live.url}/archive/").status_code == 404
        assert httpx.get(f"{live.url}/archive/feed.xml").status_code == 404
        assert httpx.get(f"{live.url}/health").status_code == 200


def test_a_linked_build_folder_and_a_second_archive_beside_it(run, project, sent, tmp_path):
    """build/ on another disk (a link), and build/archive-test beside build/archive: each write
    keeps working, and one archive's cleaning never touches the other's versions."""
    import os
    import shutil

    disk = tmp_path / "disk"
    shutil.move(str(project / "build"), disk)
    os.symlink(disk, project / "build")
    for _ in range(3):
        result = run("archive")
        assert result.exit_code == 0, result.output
    assert (project / "build/archive" / SAMPLE_ISSUE / "index.html").is_file()
    assert run("archive", "--out", "build/archive-test").exit_code == 0
    assert run("archive").exit_code == 0
    assert (project / "build/archive-test" / SAMPLE_ISSUE / "index.html").is_file()
    os.symlink("../content", project / "build/fremmed")
    assert_error(run("archive", "--out", "build/fremmed"), "build/fremmed exists and was not made by newsletter")


def test_status_without_an_issue_reports_the_last_send_past_a_misnamed_newer_folder(run, project, sent):
    write(project / "content/issues/Mars 2027/issue.md", "---\ntitle: Mars\ndate: 2027-03-05\n---\n")
    result = run("status")
    assert result.exit_code == 0 and SAMPLE_ISSUE in result.stdout, result.output
    assert_error(run("build"), "The newest issue is in content/issues/Mars 2027")  # what builds must not guess
