"""Rendering: escaping, slots filled after compilation, per-recipient skeletons, languages."""

from __future__ import annotations

import re

import pytest
from conftest import SAMPLE_ISSUE, write

from newsletter.build import prepare
from newsletter.compose import Recipient, compose, recipient_values
from newsletter.config import load_settings
from newsletter.content import find_issue, load_issue
from newsletter.errors import TemplateError
from newsletter.i18n import format_date, load_strings
from newsletter.render import Skeleton, render_issue, split, template_folders


def _render(settings, **extra):
    issue = load_issue(settings, find_issue(settings))
    strings = load_strings(template_folders(settings), issue.language)
    return issue, strings, render_issue(settings, compose(settings, issue, strings, **extra))


def test_values_are_escaped_in_mjml_and_html(project, issue_dir):
    write(
        issue_dir / "06-farlig.md",
        '---\ntitle: "Tittel <script>alert(1)</script> & co"\nlink_text: "<img src=x onerror=alert(1)>"\n'
        "link: https://example.org/?a=1&b=2\n---\nTekst\n",
    )
    settings = load_settings()
    _, strings, rendered = _render(settings)
    html = rendered.html.fill(recipient_values(settings, strings, Recipient("a@example.com")))
    assert "<script>" not in html and "<img src=x" not in html
    assert "Tittel &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html
    assert 'href="https://example.org/?a=1&amp;b=2"' in html


def test_raw_html_in_markdown_is_off_by_default(project, issue_dir):
    write(
        issue_dir / "06-html.md", '---\ntitle: Html\n---\n<script>alert(1)</script>\n\nTekst <b onclick="x()">fet</b>\n'
    )
    settings = load_settings()
    _, strings, rendered = _render(settings)
    html = rendered.html.fill(recipient_values(settings, strings, Recipient("a@example.com")))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b onclick" not in html and "&lt;b onclick" in html


def test_javascript_links_in_markdown_are_not_linked(project, issue_dir):
    write(
        issue_dir / "06-lenke.md", "---\ntitle: Lenke\n---\n[klikk](javascript:alert(1)) og [ok](https://example.org)\n"
    )
    settings = load_settings()
    _, strings, rendered = _render(settings)
    html = rendered.html.fill(recipient_values(settings, strings, Recipient("a@example.com")))
    assert 'href="javascript' not in html.lower()
    assert 'href="https://example.org"' in html


def test_marker_text_in_content_stays_text(project, issue_dir):
    """Text that looks like a slot marker, in a title or body, is never filled with personal data."""
    write(
        issue_dir / "06-marker.md",
        '---\ntitle: "@@nl:r:unsubscribe_url@@"\n---\nBody @@nl:r:email@@ and @@nl:c:intro@@\n',
    )
    settings = load_settings()
    _, strings, rendered = _render(settings)
    values = recipient_values(
        settings, strings, Recipient("hemmelig@example.com", unsubscribe_token="tok", preferences_token="tok")
    )
    html, text = rendered.html.fill(values), rendered.text.fill(values)
    assert "hemmelig@example.com" not in html and "hemmelig@example.com" not in text
    assert html.count("/unsubscribe/tok") == 1  # the footer link only
    assert "Body @@nl:r:email@@" in html and "Body @@nl:r:email@@" in text


def test_mjml_compiled_once_per_issue_and_filled_per_recipient(project):
    settings = load_settings()
    _, strings, rendered = _render(settings)
    assert set(rendered.html.slots) == {"greeting", "unsubscribe_url", "preferences_url"}
    a = rendered.html.fill(
        recipient_values(
            settings, strings, Recipient("a@example.com", "Åse", unsubscribe_token="A1", preferences_token="A1")
        )
    )
    b = rendered.html.fill(
        recipient_values(
            settings, strings, Recipient("b@example.com", "", unsubscribe_token="B2", preferences_token="B2")
        )
    )
    assert "Hei, Åse!" in a and "/unsubscribe/A1" in a and "/preferences/A1" in a
    assert "Hei!" in b and "/unsubscribe/B2" in b and "A1" not in b


def test_skeleton_fill_needs_every_value():
    skeleton = split("a @@nl:r:x@@ b @@nl:c:y@@ c", {"y": "<i>Y</i>"}, html=True, source="t")
    assert skeleton == Skeleton(parts=("a ", " b <i>Y</i> c"), slots=("x",), html=True)
    assert skeleton.fill({"x": "<&>"}) == "a &lt;&amp;&gt; b <i>Y</i> c"
    with pytest.raises(KeyError):
        skeleton.fill({})


def test_unknown_content_slot_is_a_template_error():
    with pytest.raises(TemplateError, match="slot\\('nope'\\) has no content"):
        split("@@nl:c:nope@@", {}, html=True, source="email/issue.mjml.j2")


def test_accessibility_basics_in_html(project):
    settings = load_settings()
    prepared = prepare(settings)
    html = prepared.rendered.html.fill(recipient_values(settings, prepared.strings, Recipient("a@example.com")))
    assert re.search(r'<html lang="nb"', html)
    tables = re.findall(r"<table[^>]*>", html)
    assert len(tables) > 20
    layout = [t for t in tables if 'role="presentation"' not in t]
    # Only tables written in Markdown (data tables) may lack role=presentation.
    assert all("border-collapse: collapse" in t and "width: 100%" in t for t in layout), layout
    images = re.findall(r"<img[^>]*>", html)
    assert len(images) == 2
    assert all(re.search(r'alt="[^"]+"', img) for img in images)
    assert "fonts.googleapis" not in html
    assert 'name="color-scheme" content="light dark"' in html


def test_css_is_inlined_into_content(project):
    settings = load_settings()
    prepared = prepare(settings)
    html = prepared.rendered.html.fill(recipient_values(settings, prepared.strings, Recipient("a@example.com")))
    assert re.search(r'<blockquote style="[^"]*border-left: 3px solid #1b6b50', html)
    assert re.search(r'<th style="[^"]*text-align: left', html)


def test_english_edition_strings_and_date(project, issue_dir):
    path = issue_dir / "issue.md"
    path.write_text(path.read_text(encoding="utf-8").replace("language: nb", "language: en"), encoding="utf-8")
    settings = load_settings()
    issue, strings, rendered = _render(settings)
    html = rendered.html.fill(recipient_values(settings, strings, Recipient("a@example.com", "Kari")))
    assert "Hello, Kari!" in html and "View this newsletter in your browser" in html
    assert "Climate and environment" in html and "3 December 2026" in html


def test_project_templates_override_built_in_ones(project):
    write(project / "templates/i18n/nb.toml", 'greeting = "Kjære leser,"\n')
    settings = load_settings()
    _, strings, rendered = _render(settings)
    assert strings["greeting"] == "Kjære leser,"
    assert strings["unsubscribe"] == "Meld deg av"  # the rest still comes from the built-in file


def test_norwegian_dates():
    from datetime import date

    assert format_date(date(2026, 12, 3), "nb") == "3. desember 2026"
    assert format_date(date(2027, 5, 17), "en") == "17 May 2027"


def test_sample_issue_id(project):
    assert load_issue(load_settings(), find_issue(load_settings())).id == SAMPLE_ISSUE


def test_the_footer_names_the_sender_once(project, monkeypatch):
    settings = load_settings()
    _, strings, rendered = _render(settings)
    text = rendered.text.fill(recipient_values(settings, strings, Recipient("a@example.no")))
    assert "Osloregionen\nRådhusplassen 1, 0037 Oslo\n" in text  # not 'Osloregionen · Osloregionen, ...'
    assert text.count("Osloregionen, Rådhusplassen") == 0
    # an address that only begins with the same letters keeps them
    monkeypatch.setenv("NEWSLETTER_SENDER_NAME", "Oslo")
    monkeypatch.setenv("NEWSLETTER_POSTAL_ADDRESS", "Oslogata 5, 0150 Oslo")
    assert load_settings().address_line == "Oslogata 5, 0150 Oslo"
    monkeypatch.setenv("NEWSLETTER_POSTAL_ADDRESS", "OSLO - Postboks 1, 0101 Oslo")
    assert load_settings().address_line == "Postboks 1, 0101 Oslo"
