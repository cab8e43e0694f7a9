"""The pre-send check on the sample issue and on crafted broken ones, and the gate in send."""

from __future__ import annotations

import json
import mailbox
import re
from pathlib import Path

import pytest
from conftest import load_sample_data, write


def test_the_sample_passes(run, project):
    load_sample_data(project)
    result = run("check")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("2026-12-ordforererklaeringen: 0 error(s)")  # which issue


def test_broken_issues_are_stopped_with_the_right_findings(run, project, issue_dir):
    write(
        issue_dir / "06-lenker.md",
        "---\ntitle: Lenker\n---\nSe [klikk her](https://example.org) og [arkivet](ftp://example.org/fil).\n",
    )
    write(issue_dir / "07-stor.md", "---\ntitle: Stor\n---\n" + ("Et langt avsnitt med mye tekst. " * 40 + "\n\n") * 90)
    (issue_dir / "tung.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 250_000)
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
    assert (
        "error: content/issues/2026-12-ordforererklaeringen/06-lenker.md:4: the link 'ftp://example.org/fil' (arkivet)"
        " is not an http(s) or mailto address." in out
    )
    assert "error: email.html: the HTML is" in out and "Gmail cuts messages above 102 KB" in out
    assert "06-lenker.md:4: link text 'klikk her' says nothing out of context" in out
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
    assert result.exit_code == 1 and "06-lenker.md:4: the link 'ftp://example.org/fil'" in result.stderr
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
    assert "error: content/issues/2026-12-ordforererklaeringen/issue.md: " in result.stdout
    assert "Luftfart falls" in result.stdout and "more than 100 %" in result.stdout


# --- colour contrast -------------------------------------------------------------------------


def test_contrast_ratio_is_the_wcag_formula():
    from newsletter.check import contrast

    assert round(contrast((0, 0, 0), (255, 255, 255)), 1) == 21.0
    assert round(contrast((0x76, 0x76, 0x76), (255, 255, 255)), 2) == 4.54  # the classic AA grey
    assert contrast((255, 255, 255), (255, 255, 255)) == 1.0


def test_text_below_wcag_aa_is_a_warning(run, project):
    load_sample_data(project)
    assert "below WCAG AA" not in run("check").stdout  # the built-in templates read well
    footer = (project / "templates/email/_footer.mjml.j2").read_text(encoding="utf-8")
    write(project / "templates/email/_footer.mjml.j2", footer.replace('color="#4a5560"', 'color="#a3acb5"', 1))
    out = run("check").stdout
    assert "warning: email.html: text 'Osloregionen" in out
    assert "is #a3acb5 on #eef2f5: contrast 2.04:1, below WCAG AA (4.5:1)" in out, out
    assert "0 error(s)" in out  # a warning, not an error
    assert out.splitlines()[-1].startswith("2026-12-ordforererklaeringen: 0 error(s)") and run("check").exit_code == 0


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
    where = "content/issues/2027-01-lenker/01-lenker.md"
    assert result.exit_code == 1, out
    assert f"error: {where}:4: the link {server.url}/gone (borte) answers 404; fix or remove the link." in out
    assert f"warning: {where}:4: the link {server.url}/moved (flyttet) has moved permanently to {server.url}/ok" in out
    assert f"warning: {where}:4: the link {server.url}/slow (treg): no answer within 1 s." in out
    assert f"error: {where}:4: the link {closed}/side (stengt): cannot connect (ConnectError" in out
    assert "/nohead" not in out and f"{server.url}/ok (" not in out  # these work
    assert ("HEAD", "/nohead") in server.seen and ("GET", "/nohead") in server.seen  # HEAD, then GET
    assert server.seen.count(("HEAD", "/ok")) == 2  # once (though linked twice), and once at the end of /moved
    # The issue's own archive page and the personal links are not published before sending.
    assert not any(
        path.startswith(("/archive/2027-01-lenker", "/unsubscribe/", "/preferences/")) for _, path in server.seen
    )
    assert not any(path.startswith("/archive/") for _, path in server.seen)  # the send publishes the archive
    assert ("HEAD", "/") in server.seen  # the organisation's website (footer) is asked like any other page


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
    score = line.split("spam score ")[1].split(";")[0]
    assert float(score) <= 2 and score not in ("-0", "-0.0")  # a score of nothing is 0, not '-0'


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


def test_a_spam_verdict_is_kept_by_content_and_rules_and_a_send_shows_it_without_waiting(
    run, project, issue_dir, monkeypatch, tmp_path
):
    """SpamAssassin (about 2.5 s to start) runs once per content and rules: check again, or send
    after a check, and the kept verdict is used; other content, or other rules, is scored again."""
    from newsletter.check import spamassassin

    _spamassassin()
    calls = tmp_path / "calls"
    wrapper = tmp_path / "spamassassin"  # the real program, counted
    wrapper.write_text(f'#!/bin/sh\necho x >> "{calls}"\nexec "{spamassassin()}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("NEWSLETTER_SPAMASSASSIN", str(wrapper))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    prefs = tmp_path / "home" / ".spamassassin" / "user_prefs"  # SpamAssassin makes it at its first run, here
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    load_sample_data(project)
    run("subscribers", "add", "kari@example.no", "--confirmed")
    path = issue_dir / "issue.md"
    text = path.read_text(encoding="utf-8")
    start, end = text.index("subject:"), text.index("\n", text.index("subject:"))
    write(path, text[:start] + 'subject: "GRATIS: 100% GUARANTEED"' + text[end:])

    def counted() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    first = run("check").stdout
    assert counted() == 1 and "warning: spamassassin: spam score" in first
    assert prefs.exists()  # made by that first run (and its Bayes files as it learned): the verdict holds
    again = run("check").stdout
    assert counted() == 1 and again == first  # the kept verdict, word for word
    write(path, text[:start] + 'subject: "GRATIS: 100% GUARANTEED!"' + text[end:])
    assert "warning: spamassassin" in run("check").stdout and counted() == 2  # other content
    prefs.write_text("required_score 5.0\n")
    run("check")
    assert counted() == 3  # other rules
    sent = run("send", "--yes")
    assert sent.exit_code == 0, sent.output
    assert "spamassassin: spam score" in sent.stderr and "(above 2)" in sent.stderr  # shown before sending
    assert counted() == 3  # and the send did not run SpamAssassin


def test_a_send_never_runs_spamassassin_for_content_nobody_checked(run, project, monkeypatch, tmp_path):
    calls = tmp_path / "calls"
    wrapper = tmp_path / "spamassassin"
    wrapper.write_text(f'#!/bin/sh\necho x >> "{calls}"\nexit 1\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("NEWSLETTER_SPAMASSASSIN", str(wrapper))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    load_sample_data(project)
    run("subscribers", "add", "kari@example.no", "--confirmed")
    sent = run("send", "--yes")
    assert sent.exit_code == 0, sent.output
    assert not calls.exists() and "spamassassin" not in sent.output


def test_a_test_send_shows_the_errors_but_goes(run, project, issue_dir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    write(issue_dir / "06-lenker.md", "---\ntitle: Lenker\n---\nSe [arkivet](ftp://example.org/fil).\n")
    result = run("send", "--test", "redaksjonen@example.no")
    assert result.exit_code == 0, result.output
    assert "Test for redaksjonen@example.no saved in the local outbox, not sent" in result.stdout
    saved = Path(re.search(r"not sent: (\S+\.eml) \(open it in a mail program\)", result.stdout).group(1))
    assert saved.is_file() and b"Subject: [TEST]" in saved.read_bytes()  # a double click opens it
    assert [m["Subject"] for m in mailbox.Maildir(project / "outbox")][0].startswith("[TEST]")  # still a Maildir
    assert "error: " in result.stderr and "ftp://example.org/fil" in result.stderr
    assert "the test was sent, but a real send refuses until they are fixed" in result.stderr


def test_test_addresses_may_be_given_in_one_list(run, project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    result = run("send", "--test", "kari@example.no, ola@example.no; per@example.no")
    assert result.exit_code == 0, result.output
    assert sorted(m["To"] for m in mailbox.Maildir(project / "outbox")) == [
        "kari@example.no", "ola@example.no", "per@example.no"]  # fmt: skip


def _png(width: int, height: int = 10) -> bytes:
    """A real PNG of the given size (one grey colour)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_findings_point_at_the_file_and_line_staff_edit(run, project, issue_dir):
    (issue_dir / "stor.png").write_bytes(_png(900))
    (issue_dir / "liten.png").write_bytes(_png(300))
    write(
        issue_dir / "06-lenker.md",
        "---\ntitle: Lenker\n---\nFørste linje.\n\nSe [her](https://example.org/side) og [arkivet](ftp://example.org/fil).\n\n"
        "![Et stort kart](stor.png)\n\n![Et lite kart](liten.png)\n\n[Skript](javascript:alert(1)) og "
        "[fil](file:///etc/passwd).\n\n[![Logoen til Osloregionen](liten.png)](https://example.org/logo)\n",
    )
    out = run("check").stdout
    where = "content/issues/2026-12-ordforererklaeringen/06-lenker.md"
    assert f"warning: {where}:6: link text 'her' says nothing out of context" in out
    assert f"error: {where}:6: the link 'ftp://example.org/fil' (arkivet) is not an http(s) or mailto address." in out
    assert f"error: {where}:12: the link 'javascript:alert(1)' is not allowed" in out
    assert f"error: {where}:12: the link 'file:///etc/passwd' is not allowed" in out
    assert "has no width" not in out  # Markdown images get their width from the file
    built_ok = run("build").exit_code == 0
    html = (project / "build").exists() or built_ok
    assert built_ok
    built = (project / "build" / "2026-12-ordforererklaeringen" / "email.html").read_text(encoding="utf-8")
    assert html and 'alt="Et stort kart" width="552"' in built and 'alt="Et lite kart" width="300"' in built
    assert "(no text)" not in out  # an image link is named by its alt text


def test_disallowed_links_in_every_markdown_form_but_not_in_code(run, project, issue_dir):
    write(
        issue_dir / "06-lenker.md",
        "---\ntitle: Lenker\n---\nKode: `[lenke](javascript:void(0))` er greit.\n\n"
        "[Lenke](javascript:void(0)) og <file:///etc/passwd> og [ref][r].\n\n"
        "[r]: file:///C:/hemmelig.txt\n\n```\n[i kode](javascript:alert(1))\n```\n",
    )
    out = run("check").stdout
    where = "content/issues/2026-12-ordforererklaeringen/06-lenker.md"
    assert f"error: {where}:6: the link 'javascript:void(0)' is not allowed" in out
    assert f"error: {where}:6: the link 'file:///etc/passwd' is not allowed" in out
    assert f"error: {where}:8: the link 'file:///C:/hemmelig.txt' is not allowed" in out
    assert f"{where}:4:" not in out and f"{where}:11:" not in out  # code shows code


def test_a_finding_is_placed_at_the_whole_link_not_a_longer_one(run, project, issue_dir):
    text = (issue_dir / "issue.md").read_text(encoding="utf-8")
    write(issue_dir / "issue.md", text + "\nMer på [undersiden](ftp://example.org/ok/deeper).\n")
    write(issue_dir / "06-lenker.md", "---\ntitle: Lenker\n---\nSe [siden](ftp://example.org/ok).\n")
    out = run("check").stdout
    assert "06-lenker.md:4: the link 'ftp://example.org/ok' (siden)" in out
    assert "issue.md:" in out.split("ftp://example.org/ok/deeper")[0].splitlines()[-1]


def test_a_broken_or_empty_image_file_does_not_break_the_build(run, project, issue_dir):
    (issue_dir / "kort.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00")  # cut short
    (issue_dir / "null.png").write_bytes(_png(1)[:16] + b"\x00\x00\x00\x00" + _png(1)[20:])  # says width 0
    write(issue_dir / "06-bilder.md", "---\ntitle: Bilder\n---\n![Kort](kort.png)\n\n![Null](null.png)\n")
    result = run("build")
    assert result.exit_code == 0, result.output
    built = (project / "build" / "2026-12-ordforererklaeringen" / "email.html").read_text(encoding="utf-8")
    assert 'alt="Kort" style=' in built and 'alt="Null" style=' in built  # no width rather than a wrong one


def test_contrast_understands_font_tags_translucent_colours_and_shorthands():
    from newsletter.check import contrast_findings

    def found(html: str) -> list[str]:
        return [f.message for f in contrast_findings(f"<html><body>{html}</body></html>")]

    assert found('<p><font color="#dddddd">Lys tekst</font></p>')[0].startswith(
        "text 'Lys tekst' is #dddddd on #ffffff"
    )
    assert found('<p style="color:#00000040">Halvgjennomsiktig</p>')  # black at 25 % on white: grey
    assert found('<div style="background:url(bg.png) #ffffff no-repeat"><p style="color:#fafafa">Bakgrunn</p></div>')
    assert found('<div style="background: rgb(0, 0, 0)"><p style="color:#ffffff">Hvit på svart</p></div>') == []
    dark = found('<div style="background:#000000"><p style="color:#111111">Mørk på svart</p></div>')[0]
    assert "lighten the text or darken the background" in dark
    light = found('<p style="color:#eeeeee">Lys på hvit</p>')[0]
    assert "darken the text or lighten the background" in light
    # <li> without its end tag ends at the next <li>: the second is not grey
    assert len(found('<ul><li style="color:#cccccc">Grå<li>Svart</ul>')) == 1
    assert found("<p>Svart på hvit</p> og <b>mer</b>") == []
    grey = found('<p style="color:#777777">Grå bunntekst</p>')[0]  # 4.478: just below, and says so
    assert "contrast 4.47:1, below WCAG AA (4.5:1)" in grey
    wave = '<div style="background:url(https://example.org/white-wave.png) #0b3a5b"><p style="color:#ffffff">Hvit</p></div>'
    assert found(wave) == []  # 'white' in the image's name is not the background
    assert found('<div style="display:none;color:#ffffff">Skjult preheader</div>') == []


def test_an_invalid_address_is_an_error_not_a_crash(run, project, monkeypatch):
    server = LinkServer()
    monkeypatch.setenv("NEWSLETTER_BASE_URL", server.url)
    monkeypatch.setenv("NEWSLETTER_WEBSITE", server.url + "/")
    folder = project / "content/issues/2027-01-lenker"
    write(
        folder / "issue.md", "---\ntitle: Lenker\nsubject: Lenker\ndate: 2027-01-05\nfeeds: false\n---\nInnledning.\n"
    )
    write(folder / "01-lenker.md", "---\ntitle: Lenker\n---\n[Feil port](https://www.example.org:8o/side).\n")
    try:
        result = run("check", "2027-01-lenker", "--links", "--timeout", "1")
    finally:
        server.close()
    assert result.exit_code == 1
    assert "01-lenker.md:4: the link https://www.example.org:8o/side (Feil port): not a valid address" in result.stdout


def test_a_file_that_is_not_a_picture_is_stopped(run, project, issue_dir):
    (issue_dir / "falsk.png").write_text("Dette er tekst, ikke et bilde.", encoding="utf-8")
    write(issue_dir / "06-bilde.md", "---\ntitle: Bilde\n---\nTekst.\n\n![Et kart](falsk.png)\n")
    result = run("check")
    assert result.exit_code == 1
    assert "06-bilde.md:6: 'falsk.png' is not a PNG, JPEG or GIF picture inside" in result.stdout


def test_vague_link_text_in_front_matter_and_body_points_at_the_line(run, project, issue_dir):
    write(
        issue_dir / "06-lenker.md",
        '---\ntitle: Lenker\nlink: https://example.org/sak\nlink_text: "Les mer her"\n---\n'
        "Første avsnitt.\n\nLes saken, [klikk her](https://example.org/side).\n",
    )
    out = run("check").stdout
    where = "content/issues/2026-12-ordforererklaeringen/06-lenker.md"
    assert f"warning: {where}:4: link text 'Les mer her' says nothing out of context" in out
    assert f"warning: {where}:8: link text 'klikk her' says nothing out of context" in out


def test_each_finding_is_reported_once(run, project, issue_dir):
    """The build's warnings and check's own rules overlap (a missing preheader, clipping):
    each problem is one line."""
    text = (issue_dir / "issue.md").read_text(encoding="utf-8")
    write(issue_dir / "issue.md", "\n".join(line for line in text.split("\n") if not line.startswith("preheader:")))
    write(issue_dir / "07-stor.md", "---\ntitle: Stor\n---\n" + ("Et langt avsnitt med mye tekst. " * 40 + "\n\n") * 90)
    out = run("check").stdout
    assert out.count("no preheader") == 1
    assert out.count("Gmail cuts messages above 102 KB") == 1 and "error: email.html: the HTML is" in out


def test_a_member_missing_from_the_emission_data_is_named(run, project, tmp_path):
    """Its subscribers get no 'Din kommune' block; the build says so instead of leaving it out quietly."""
    import synthetic_emissions as synth

    rows = [row for row in synth.rows(years=(2023, 2024)) if row[1] != "3212"]  # Nesodden's 2024 number
    assert run("emissions", "import", str(synth.write_csv(tmp_path / "uten.csv", rows))).exit_code == 0
    result = run("build")
    assert result.exit_code == 0, result.output
    assert "no 'Din kommune' block for Nesodden" in result.stderr


def test_an_image_without_alt_text_is_reported_once_at_its_own_line(run, project, issue_dir):
    write(
        issue_dir / "06-bilde.md",
        "---\ntitle: Bilde\n---\nFørste linje i avsnittet\nog så ![](ordforererklaeringen.png)\n",
    )
    out = run("check").stdout
    assert out.count("has no alt text") == 1, out
    assert "06-bilde.md:5: image 'ordforererklaeringen.png' has no alt text" in out


def test_a_refused_link_with_markup_in_it_is_still_found(run, project, issue_dir):
    write(issue_dir / "06-data.md", "---\ntitle: Data\n---\nTekst\n\nSe [data](data:text/html,<b>x</b>) her.\n")
    out = run("check").stdout
    assert "06-data.md:6: the link 'data:text/html,<b>x</b>' is not allowed" in out, out


def test_a_link_to_a_file_name_with_a_space_is_named_with_the_way_to_write_it(run, project, issue_dir):
    (issue_dir / "Handlingsplan 2027.pdf").write_bytes(b"%PDF-1.4\n")
    write(issue_dir / "06-plan.md", "---\ntitle: Plan\n---\nTekst\n\nLes [planen](Handlingsplan 2027.pdf) her.\n\n"
          "Eller [planen](<Handlingsplan 2027.pdf>) slik.\n")  # fmt: skip
    out = run("check").stdout
    assert ("06-plan.md:6: the link 'Handlingsplan 2027.pdf' has a space, so the email would show it as text; "
            "write it in angle brackets, [text](<Handlingsplan 2027.pdf>)") in out, out  # fmt: skip
    assert "06-plan.md:8" not in out  # in angle brackets it is a link to the file, published with the issue


def test_a_missing_image_is_one_error_not_also_a_warning_about_its_width(run, project, issue_dir):
    write(issue_dir / "06-kart.md", "---\ntitle: Kart\n---\nTekst\n\n![Kart over regionen](kart.png)\n")
    out = run("check").stdout
    assert "06-kart.md:6: image file 'kart.png' not found" in out, out
    assert "kart.png has no width" not in out, out


def test_an_issue_that_cannot_be_built_is_one_finding_and_the_count(run, project, issue_dir):
    text = (issue_dir / "issue.md").read_text(encoding="utf-8")
    write(issue_dir / "issue.md", text.replace("date: 2026-12-03", "date: 2027-02-30"))
    result = run("check")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and "the date 2027-02-30 does not exist" in lines[0], result.output
    assert lines[1] == "1 error(s), 0 warning(s)."


def test_the_timeout_may_have_a_decimal_comma(run, project):
    assert "Invalid value" not in run("check", "--timeout", "2,5").output
    assert "0.1 is not in the range x>=0.5" in run("check", "--timeout", "0,1").output


# --- DKIM: signed, and for the From address's own domain ---------------------------------------


@pytest.mark.parametrize(
    ("signing", "sender", "expected"),
    [
        ("osloregionen.no", "nyhetsbrev.osloregionen.no", True),  # a subdomain of the signing domain
        ("mail.osloregionen.no", "osloregionen.no", True),  # and the other way round
        ("mail.osloregionen.no", "post.osloregionen.no", True),  # siblings: one organisational domain
        ("OSLOREGIONEN.NO.", "osloregionen.no", True),
        ("asker.kommune.no", "post.asker.kommune.no", True),
        ("asker.kommune.no", "baerum.kommune.no", False),  # kommune.no is a public suffix: two owners
        ("xn--brum-voa.kommune.no", "post.bærum.kommune.no", True),  # xn-- and Unicode are one name
        ("kommune.no", "asker.kommune.no", False),
        ("sendgrid.net", "osloregionen.no", False),  # an email service's own domain
        ("osloregionen.no.evil.example", "osloregionen.no", False),
    ],
)
def test_dmarc_relaxed_alignment_uses_the_public_suffix_list(signing, sender, expected):
    from newsletter.signing import aligned

    assert aligned(signing, sender) is expected


def _dkim_settings(project, **environ):
    from newsletter.config import load_settings

    base = {"NEWSLETTER_SECRET_KEY": "k" * 40}
    return load_settings(project, environ={**base, **environ})


def test_dkim_findings_at_the_library_level(project, tmp_path):
    from newsletter.check import dkim_findings

    key = tmp_path / "dkim.pem"
    key.write_text("not read by the check")
    smtp = {"NEWSLETTER_SENDING_TRANSPORT": "smtp", "NEWSLETTER_SMTP_HOST": "smtp.example.org"}
    signing = {"NEWSLETTER_DKIM_SELECTOR": "nyhetsbrev", "NEWSLETTER_DKIM_KEY_FILE": str(key)}
    # The sample sends from nyhetsbrev@osloregionen.no.
    unsigned = dkim_findings(_dkim_settings(project, **smtp))
    assert [(f.level, f.where) for f in unsigned] == [("warning", "dkim")]
    assert "dkim.relay_signs = true" in unsigned[0].message and "osloregionen.no" in unsigned[0].message
    assert dkim_findings(_dkim_settings(project, NEWSLETTER_DKIM_RELAY_SIGNS="true", **smtp)) == []
    assert dkim_findings(_dkim_settings(project)) == []  # the outbox: nothing leaves the machine
    signed = _dkim_settings(project, NEWSLETTER_DKIM_DOMAIN="nyheter.osloregionen.no", **signing, **smtp)
    assert dkim_findings(signed) == []
    other = _dkim_settings(project, NEWSLETTER_DKIM_DOMAIN="mailservice.example.net", **signing)
    (finding,) = dkim_findings(other)  # an error wherever the messages go: they are signed wrong
    assert finding.level == "error" and "mailservice.example.net" in finding.message
    assert "@osloregionen.no" in finding.message


def test_check_and_send_warn_about_unsigned_mail_and_refuse_an_unaligned_signature(
    run, project, sink, monkeypatch, tmp_path
):
    from conftest import subscribe
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    monkeypatch.delenv("NEWSLETTER_DKIM_RELAY_SIGNS")  # the sink's setting: here nothing signs
    load_sample_data(project)
    subscribe("kari@example.no")
    key = tmp_path / "ed.pem"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    signing = {"DOMAIN": "mailservice.example.net", "SELECTOR": "s1", "KEY_FILE": str(key)}
    for name, value in signing.items():
        monkeypatch.setenv(f"NEWSLETTER_DKIM_{name}", value)
    checked = run("check")
    assert checked.exit_code == 1
    assert "dkim: dkim.domain mailservice.example.net is not aligned" in checked.stdout + checked.stderr
    refused = run("send", "--yes")
    assert refused.exit_code == 1 and "dkim.domain mailservice.example.net is not aligned" in refused.stderr
    assert sink.messages == []  # nothing went

    for name in signing:
        monkeypatch.delenv(f"NEWSLETTER_DKIM_{name}")
    checked = run("check")
    assert checked.exit_code == 0, checked.output
    assert "dkim: messages go by SMTP without a DKIM signature" in checked.stdout + checked.stderr
    sent = run("send", "--yes")  # a warning, not a refusal: the relay may sign after all
    assert sent.exit_code == 0, sent.output
    assert "without a DKIM signature" in sent.stderr and len(sink.messages) == 1
