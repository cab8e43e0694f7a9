"""The live preview: a real server, a real HTTP client, real files changed on disk."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest
from conftest import SAMPLE_ISSUE, LiveServer, assert_error, load_sample_data, write

from newsletter.config import load_settings
from newsletter.preview import Preview, create_preview_app
from newsletter.store import database


@pytest.fixture
def preview(project):
    """The preview of the sample issue, with feeds and emissions, watching the project's files."""
    load_sample_data(project)
    live = Preview(lambda: load_settings(project), None)
    live.start_watching()
    # The watcher starts in the background: make a change until it is seen, so no test's own
    # change can come before the watcher is ready.
    probe = project / "content" / "watcher-ready.txt"
    deadline = time.monotonic() + 10
    while live.version == 0:
        assert time.monotonic() < deadline, "the watcher never started"
        probe.write_text(str(time.monotonic()), encoding="utf-8")
        time.sleep(0.1)
    probe.unlink()
    settled = time.monotonic()
    last = live.version
    while time.monotonic() - settled < 0.6:  # let the probe's own events arrive before the tests
        time.sleep(0.05)
        if live.version != last:
            last, settled = live.version, time.monotonic()
    with LiveServer(create_preview_app(live)) as server:
        server.preview = live
        yield server
    live.stop_watching()


def wait_for_change(server, since: int) -> int:
    """Poll /version like the page does, until the watcher has seen a change (at most 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        version = httpx.get(f"{server.url}/version").json()["version"]
        if version > since:
            return version
        time.sleep(0.05)
    raise AssertionError("the preview did not notice the change")


def test_the_page_shows_the_issue_as_subscribers_get_it(preview):
    page = httpx.get(f"{preview.url}/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    html = page.text
    # The inbox line: sender, subject and preheader
    assert '<span class="from">Osloregionen</span>' in html
    assert "<strong>Osloregionen: ny ordførererklæring, karbonfangst og energi til tungtransport</strong>" in html
    assert "– 64 ordførere står bak felles mål" in html
    # Desktop and mobile frames of the same email
    assert html.count('<iframe title="') == 2 and 'src="email?issue=&amp;lang=&amp;municipality=3205"' in html
    # The headers and the text part
    assert '<th scope="row">List-Unsubscribe-Post</th><td>List-Unsubscribe=One-Click</td>' in html
    assert "Hei, Ola Nordmann!" in html and "Meld deg av: https://nyhetsbrev.osloregionen.no/unsubscribe/" in html
    # What check finds, and the choices
    assert 'id="findings"' in html
    assert "the subject has 76 characters; phones show about 60." in html  # the sample's long subject
    assert f'<option value="{SAMPLE_ISSUE}" selected>' in html and '<option value="3205" selected>Lillestrøm' in html
    issues = Path.cwd() / "content" / "issues"
    shutil.copytree(issues / SAMPLE_ISSUE, issues / f"{SAMPLE_ISSUE} - Kopi")  # File Explorer's copy
    assert "Kopi" not in httpx.get(f"{preview.url}/").text  # not offered: it cannot be sent
    shutil.rmtree(issues / f"{SAMPLE_ISSUE} - Kopi")
    email = httpx.get(f"{preview.url}/email", params={"municipality": "3205"})
    assert email.status_code == 200 and '<base target="_blank">' in email.text
    assert "Din kommune" in email.text and "Lillestrøm: " in email.text
    image = httpx.get(f"{preview.url}/images/{SAMPLE_ISSUE}/ordforererklaeringen.png")
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    assert f'src="/images/{SAMPLE_ISSUE}/ordforererklaeringen.png"' in email.text
    assert httpx.get(f"{preview.url}/images/{SAMPLE_ISSUE}/nothing.png").status_code == 404


def test_language_and_municipality_choices(preview):
    english = httpx.get(f"{preview.url}/", params={"lang": "en", "municipality": "0301"}).text
    assert "Hello, Ola Nordmann!" in english and "Unsubscribe: https://" in english
    assert "Osloregionen Newsletter · December 2026" in english  # newsletter.name_en in the English edition
    assert '<option value="en" selected>' in english and '<option value="0301" selected>Oslo' in english
    oslo = httpx.get(f"{preview.url}/email", params={"municipality": "0301"}).text
    assert "Oslo: " in oslo and "Lillestrøm: " not in oslo
    nobody = httpx.get(f"{preview.url}/email", params={"municipality": "-"}).text
    assert "Din kommune" not in nobody


def test_saving_an_article_rebuilds_and_the_page_refreshes(preview, issue_dir):
    before = httpx.get(f"{preview.url}/version").json()["version"]
    article = issue_dir / "02-klemetsrud.md"
    text = article.read_text(encoding="utf-8")
    write(article, text + "\nEt nytt avsnitt skrevet i forhåndsvisningen.\n")
    wait_for_change(preview, before)
    assert "Et nytt avsnitt skrevet i forhåndsvisningen." in httpx.get(f"{preview.url}/").text
    assert "Et nytt avsnitt skrevet i forhåndsvisningen." in httpx.get(f"{preview.url}/email").text


def test_build_errors_show_on_the_page_and_go_away_when_fixed(preview, issue_dir):
    good = (issue_dir / "issue.md").read_text(encoding="utf-8")
    version = httpx.get(f"{preview.url}/version").json()["version"]
    write(issue_dir / "issue.md", good.replace("date: 2026-12-03", "date: 2026-13-03"))
    version = wait_for_change(preview, version)
    broken = httpx.get(f"{preview.url}/")
    assert broken.status_code == 200  # the page stays up and says what is wrong
    assert (
        'role="alert"' in broken.text
        and "issue.md" in broken.text
        and "the date 2026-13-03 does not exist" in broken.text
    )
    write(issue_dir / "issue.md", good)
    wait_for_change(preview, version)
    fixed = httpx.get(f"{preview.url}/").text
    assert 'role="alert"' not in fixed and "Osloregionen: ny ordførererklæring" in fixed


def test_a_settings_change_is_picked_up_and_a_broken_one_is_shown(preview, project):
    toml = project / "newsletter.toml"
    good = toml.read_text(encoding="utf-8")
    version = httpx.get(f"{preview.url}/version").json()["version"]
    write(toml, good.replace('name = "Nyhetsbrev fra Osloregionen"', 'name = "Nytt fra Osloregionen"', 1))
    version = wait_for_change(preview, version)
    assert "Forhåndsvisning: Nytt fra Osloregionen" in httpx.get(f"{preview.url}/").text
    write(toml, good.replace("[sender]", "[sender\n", 1))
    version = wait_for_change(preview, version)
    page = httpx.get(f"{preview.url}/").text
    assert 'role="alert"' in page and "newsletter.toml" in page


def test_only_this_machine_may_ask(preview):
    assert httpx.get(f"{preview.url}/", headers={"Host": "preview.example.com"}).status_code == 400
    assert httpx.get(f"{preview.url}/", headers={"Host": "preview.example.com:8001"}).status_code == 400
    for host in ("localhost", "localhost:8001", "127.0.0.1:8001", "[::1]:8001"):
        assert httpx.get(f"{preview.url}/version", headers={"Host": host}).status_code == 200, host


def test_only_the_projects_issues_are_shown(preview, tmp_path):
    outside = tmp_path / "elsewhere"
    write(outside / "issue.md", "---\ntitle: Utenfor\nsubject: Utenfor\ndate: 2026-01-01\n---\nHemmelig.\n")
    page = httpx.get(f"{preview.url}/", params={"issue": str(outside)}).text
    assert 'role="alert"' in page and "unknown issue" in page and "Hemmelig" not in page
    email = httpx.get(f"{preview.url}/email", params={"issue": "nope"})
    assert email.status_code == 404 and "unknown issue" in email.text
    assert httpx.get(f"{preview.url}/images/nope/logo.png").status_code == 404


def test_a_broken_page_still_refreshes_when_fixed(preview, project):
    strings = project / "templates" / "i18n" / "nb.toml"
    good = strings.read_text(encoding="utf-8")
    version = httpx.get(f"{preview.url}/version").json()["version"]
    write(strings, good + "\nthis is not toml = = =\n")
    version = wait_for_change(preview, version)
    broken = httpx.get(f"{preview.url}/")
    assert broken.status_code == 200 and 'role="alert"' in broken.text
    assert "nb.toml" in broken.text and 'fetch("version"' in broken.text  # it keeps polling
    write(strings, good)
    wait_for_change(preview, version)
    assert "Slik ser den ut i innboksen" in httpx.get(f"{preview.url}/").text


def test_serve_refuses_a_busy_port_and_a_bad_host(run, project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "s" * 40)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_error(run("serve", "--port", str(port)), "the port is in use", "--port")
    assert_error(run("preview", "--host", "nosuchhost.invalid"), "cannot listen on 'nosuchhost.invalid'", "--host")
    assert run("preview", "--port", "99999").exit_code == 2  # click: not in 1-65535


def test_the_command_refuses_an_unknown_issue_and_a_busy_port(run, project):
    assert_error(run("preview", "2031-01-ukjent"), "Unknown issue '2031-01-ukjent'")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_error(run("preview", "--port", str(port)), f"cannot listen on 127.0.0.1:{port}", "--port")


def test_new_data_in_the_database_refreshes_the_page(preview, project):
    """An emissions import (or feeds fetch/pick) changes the issue without touching its files."""
    from newsletter.emissions import import_emissions, read_members, read_sectors, sectors_file

    httpx.get(f"{preview.url}/")  # the preview's own reads must not count as changes
    time.sleep(1.0)
    version = httpx.get(f"{preview.url}/version").json()["version"]
    assert httpx.get(f"{preview.url}/").status_code == 200
    time.sleep(1.0)
    assert httpx.get(f"{preview.url}/version").json()["version"] == version
    settings = load_settings(project)
    with database(settings.database) as conn:
        import_emissions(conn, project / "data/klimagassutslipp-syntetisk.csv", "ny-utgivelse",
                         read_members(settings.emissions_members), read_sectors(sectors_file(settings)))  # fmt: skip
    wait_for_change(preview, version)
    # The page reloads at every new version (the import writes more than once); it ends up
    # showing the new release, named in the emissions section's source line.
    deadline = time.monotonic() + 10
    while "(utgivelse ny-utgivelse)" not in httpx.get(f"{preview.url}/email").text:
        assert time.monotonic() < deadline, "the page never showed the new release"
        time.sleep(0.1)


def test_open_starts_the_browser_at_the_preview(project, tmp_path):
    """'--open' hands the address to the browser ($BROWSER names it, as Python's webbrowser reads)."""
    import os
    import signal
    import subprocess
    import sys

    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"
    browser.write_text(f"import sys, pathlib\npathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n")
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    env = {**os.environ, "BROWSER": f"{sys.executable} {browser} %s"}
    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "preview", "--port", str(port), "--open"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not opened.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the browser was never started"
            time.sleep(0.1)
        time.sleep(0.2)
        url = opened.read_text()
        assert url == f"http://localhost:{port}/"
        assert "Forhåndsvisning" in httpx.get(f"http://127.0.0.1:{port}/").text
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert f"Preview on http://localhost:{port}/" in out
    assert "Traceback" not in err


def test_an_issue_outside_content_is_watched_too(project, tmp_path):
    load_sample_data(project)
    outside = tmp_path / "utenfor" / "2027-01-ute"
    write(outside / "issue.md", "---\ntitle: Ute\nsubject: Ute\ndate: 2027-01-05\nfeeds: false\n---\nFørste tekst.\n")
    live = Preview(lambda: load_settings(project), str(outside))
    live.start_watching()
    try:
        assert "Første tekst." in live.build(None, None).prepared.issue.intro_html
        deadline = time.monotonic() + 10
        while live.version == 0:
            assert time.monotonic() < deadline, "the outside folder is not watched"
            write(
                outside / "issue.md",
                "---\ntitle: Ute\nsubject: Ute\ndate: 2027-01-05\nfeeds: false\n---\nAndre tekst.\n",
            )
            time.sleep(0.2)
    finally:
        live.stop_watching()
    assert "Andre tekst." in live.build(None, None).prepared.issue.intro_html
