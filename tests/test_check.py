"""The pre-send check on the sample issue and on crafted broken ones, and the gate in send."""

from __future__ import annotations

import json

import pytest
from conftest import load_sample_data, write


def test_the_sample_passes(run, project):
    load_sample_data(project)
    result = run("check")
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.stdout


def test_broken_issues_are_stopped_with_the_right_findings(run, project, issue_dir):
    write(
        issue_dir / "06-lenker.md",
        "---\ntitle: Lenker\n---\nSe [klikk her](https://example.org) og [arkivet](ftp://example.org/fil).\n",
    )
    write(issue_dir / "07-stor.md", "---\ntitle: Stor\n---\n" + ("Et langt avsnitt med mye tekst. " * 40 + "\n\n") * 90)
    (issue_dir / "tung.png").write_bytes(b"\x89PNG" + b"0" * 250_000)
    write(issue_dir / "08-bilde.md", "---\ntitle: Bilde\nimage: tung.png\nimage_alt: Et tungt bilde\n---\nTekst\n")
    path = issue_dir / "issue.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            'preheader: "64 ordførere står bak felles mål for klima og miljø – og dette skjer videre i regionen."',
            'preheader: "Kort"',
        ),
        encoding="utf-8",
    )
    result = run("check")
    assert result.exit_code == 1
    out = result.stdout
    assert "error: email.html: the link 'ftp://example.org/fil' (arkivet) is not an http(s) or mailto address." in out
    assert "error: email.html: the HTML is" in out and "Gmail cuts messages above 102 KB" in out
    assert "warning: email.html: link text 'klikk her' says nothing out of context" in out
    assert "tung.png: the image is 244 KB" in out
    assert "the preheader is short (4 characters)" in out
    data = json.loads(run("check", "--format", "json").stdout)
    assert {"level", "where", "message"} == set(data[0]) and any(f["level"] == "error" for f in data)


def test_a_missing_unsubscribe_link_is_an_error(run, project):
    write(
        project / "templates/email/_footer.mjml.j2",
        "    <mj-section><mj-column><mj-text>Hilsen oss</mj-text></mj-column></mj-section>\n",
    )
    assert "error: templates: the email has no unsubscribe link" in run("check").stdout


def test_send_refuses_on_errors_unless_forced(run, project, issue_dir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    load_sample_data(project)
    run("subscribers", "add", "a@example.com", "--confirmed")
    write(issue_dir / "06-lenker.md", "---\ntitle: Lenker\n---\nSe [arkivet](ftp://example.org/fil).\n")
    result = run("send", "--yes")
    assert result.exit_code == 1 and "error: email.html: the link 'ftp://example.org/fil'" in result.stderr
    assert "add --force to send anyway" in result.stderr
    scheduled = run("schedule", "ordforer", "--at", "2030-01-01 09:00")
    assert scheduled.exit_code == 1 and scheduled.stderr.strip().splitlines()[-1].endswith(
        "add --force to send anyway."
    )
    forced = run("send", "--yes", "--force")
    assert forced.exit_code == 0 and "1 sent" in forced.stdout


def test_impossible_emission_figures_are_errors(run, project, issue_dir, tmp_path):
    import synthetic_emissions as synth

    rows = [
        *synth.rows(years=(2019, 2020)),
        ["Oslo", "0301", "Oslo", 2020, "Luftfart", "Innenriks luftfart", "CO2", -400_000.0],
    ]
    assert run("emissions", "import", str(synth.write_csv(tmp_path / "rar.csv", rows))).exit_code == 0
    path = issue_dir / "issue.md"
    path.write_text(
        path.read_text(encoding="utf-8").replace("emissions: latest", "emissions: {from: 2019, to: 2020}"),
        encoding="utf-8",
    )
    result = run("check")
    assert result.exit_code == 1
    assert "error: build:" in result.stdout and "Luftfart falls" in result.stdout and "more than 100 %" in result.stdout


# --- colour contrast -------------------------------------------------------------------------


def test_contrast_ratio_is_the_wcag_formula():
    from newsletter.check import contrast

    assert round(contrast((0, 0, 0), (255, 255, 255)), 1) == 21.0
    assert round(contrast((0x76, 0x76, 0x76), (255, 255, 255)), 2) == 4.54  # the classic AA grey
    assert contrast((255, 255, 255), (255, 255, 255)) == 1.0


def test_text_below_wcag_aa_is_a_warning(run, project):
    load_sample_data(project)
    assert "contrast" not in run("check").stdout  # the built-in templates read well
    footer = (project / "templates/email/_footer.mjml.j2").read_text(encoding="utf-8")
    write(project / "templates/email/_footer.mjml.j2", footer.replace('color="#4a5560"', 'color="#a3acb5"', 1))
    out = run("check").stdout
    assert "warning: email.html: text 'Osloregionen" in out
    assert "is #a3acb5 on #eef2f5: contrast 2.0:1, below WCAG AA (4.5:1)" in out, out
    assert "0 error(s)" in out  # a warning, not an error


# --- links online ------------------------------------------------------------------------------


class LinkServer:
    """A loopback web server with a link for every answer --links must understand."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def answer(self, body: bool) -> None:
                seen.append((self.command, self.path))
                if self.path == "/gone":
                    self.send_response(404)
                elif self.path == "/nohead" and self.command == "HEAD":
                    self.send_response(405)
                elif self.path == "/moved":
                    self.send_response(301)
                    self.send_header("Location", "/ok")
                elif self.path == "/slow":
                    import time

                    time.sleep(3)
                    self.send_response(200)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                self.answer(False)

            def do_GET(self) -> None:
                self.answer(True)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_links_are_checked_online(run, project, monkeypatch):
    import socket

    server = LinkServer()
    with socket.socket() as spare:  # a port where nothing listens
        spare.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{spare.getsockname()[1]}"
    # Every address the email links to points at the loopback server: nothing goes online.
    monkeypatch.setenv("NEWSLETTER_BASE_URL", server.url)
    monkeypatch.setenv("NEWSLETTER_WEBSITE", server.url + "/")
    folder = project / "content/issues/2027-01-lenker"
    write(
        folder / "issue.md",
        "---\ntitle: Lenkesjekk\nsubject: Lenkesjekk i januar\npreheader: Alle lenkene i denne utgaven blir sjekket.\n"
        "date: 2027-01-05\nfeeds: false\n---\nInnledning.\n",
    )
    write(
        folder / "01-lenker.md",
        f"---\ntitle: Lenker\n---\n[Virker]({server.url}/ok), [borte]({server.url}/gone), "
        f"[uten HEAD]({server.url}/nohead), [flyttet]({server.url}/moved), [treg]({server.url}/slow), "
        f"[stengt]({closed}/side) og [virker igjen]({server.url}/ok).\n",
    )
    try:
        result = run("check", "2027-01-lenker", "--links", "--timeout", "1")
    finally:
        server.close()
    out = result.stdout
    assert result.exit_code == 1, out
    assert f"error: links: the link {server.url}/gone (borte) answers 404; fix or remove the link." in out
    assert f"warning: links: the link {server.url}/moved (flyttet) has moved permanently to {server.url}/ok" in out
    assert f"warning: links: the link {server.url}/slow (treg): no answer within 1 s." in out
    assert f"error: links: the link {closed}/side (stengt): cannot connect (ConnectError" in out
    assert "/nohead" not in out and f"{server.url}/ok (" not in out  # these work
    assert ("HEAD", "/nohead") in server.seen and ("GET", "/nohead") in server.seen  # HEAD, then GET
    assert server.seen.count(("HEAD", "/ok")) == 2  # once (though linked twice), and once at the end of /moved
    # The issue's own archive page and the personal links are not published before sending.
    assert not any(
        path.startswith(("/archive/2027-01-lenker", "/unsubscribe/", "/preferences/")) for _, path in server.seen
    )
    assert ("HEAD", "/archive/") in server.seen  # the archive index is


# --- SpamAssassin --------------------------------------------------------------------------------


def _spamassassin():
    import os

    from newsletter.check import spamassassin

    if spamassassin() is None:
        message = "SpamAssassin not found: install it with 'apt-get install spamassassin'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_spamassassin_scores_the_sample_low(run, project):
    _spamassassin()
    load_sample_data(project)
    out = run("check").stdout
    line = next(line for line in out.splitlines() if "spamassassin" in line)
    assert line.startswith("info: spamassassin: spam score ")
    assert float(line.split("spam score ")[1].split(";")[0]) <= 2


def test_spamassassin_warns_above_two_and_names_the_rules(run, project, issue_dir):
    _spamassassin()
    load_sample_data(project)
    path = issue_dir / "issue.md"
    text = path.read_text(encoding="utf-8")
    start = text.index("subject:")
    end = text.index("\n", start)
    write(path, text[:start] + 'subject: "GRATIS: 100% GUARANTEED"' + text[end:])
    out = run("check").stdout
    assert "warning: spamassassin: spam score" in out and "(above 2)" in out
    assert "GUARANTEED_100_PERCENT +" in out
    data = json.loads(run("check", "--format", "json").stdout)
    assert any(f["where"] == "spamassassin" and f["level"] == "warning" for f in data)


def test_a_test_send_shows_the_errors_but_goes(run, project, issue_dir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    write(issue_dir / "06-lenker.md", "---\ntitle: Lenker\n---\nSe [arkivet](ftp://example.org/fil).\n")
    result = run("send", "--test", "redaksjonen@example.no")
    assert result.exit_code == 0, result.output
    assert "Test sent to redaksjonen@example.no" in result.stdout
    assert "error: " in result.stderr and "ftp://example.org/fil" in result.stderr
    assert "the test was sent, but a real send refuses until they are fixed" in result.stderr
