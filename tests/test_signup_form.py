"""The signup form on the organisation's own website: a snippet from 'newsletter signup-form',
pasted into a page on another origin, submitting to 'serve'. Driven in headless Chromium, with
the proof of work solved by the ALTCHA widget the server serves itself.

Needs Debian's chromium (skipped on a developer machine without it, never in CI).
"""

from __future__ import annotations

import hashlib
import mailbox
import re
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import html5lib
import pytest
from conftest import LiveServer, free_port, rows
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from newsletter.config import load_settings
from newsletter.embed import signup_form
from newsletter.errors import ConfigError
from newsletter.web import STATIC, create_app

KEY = "w" * 40


def mails(project: Path, expect: int = 0, wait: float = 15.0) -> list:
    """The outbox's messages, oldest first; waits until there are ``expect`` of them."""
    deadline = time.monotonic() + wait
    while True:
        folder = project / "outbox"
        box = mailbox.Maildir(folder, create=False) if (folder / "cur").exists() else None
        found = [BytesParser(policy=policy.default).parsebytes(box.get_bytes(k)) for k in box.iterkeys()] if box else []
        if len(found) >= expect or time.monotonic() > deadline:
            return sorted(found, key=lambda m: m["Date"].datetime)
        time.sleep(0.05)


def text_of(message) -> str:
    return next(p for p in message.iter_parts() if p.get_content_type() == "text/plain").get_content()


@pytest.fixture
def sites(project, monkeypatch):
    """'serve' on one loopback origin, and the organisation's website on another, whose page
    holds the pasted snippet. http://localhost:<port> reaches the same website under an origin
    that is not allowed."""
    serve_port, site_port = free_port(), free_port()
    website = f"http://127.0.0.1:{site_port}"
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_BASE_URL", f"http://127.0.0.1:{serve_port}")
    monkeypatch.setenv("NEWSLETTER_WEB_ALLOWED_ORIGINS", website)
    monkeypatch.setenv("NEWSLETTER_WEB_CHALLENGE_WORK", "200")
    settings = load_settings()
    snippet = signup_form(settings, "nb", municipality_field=True, return_url=f"{website}/takk.html")

    def page(request):
        return HTMLResponse(
            f'<!doctype html><html lang="nb"><head><meta charset="utf-8"><title>Osloregionen</title></head>'
            f"<body><h1>Osloregionen</h1><p>Nyhetsbrev: påmelding på forsiden.</p>{snippet}</body></html>"
        )

    def thanks(request):
        return HTMLResponse("<!doctype html><title>Takk</title><h1>Takk for påmeldingen</h1>")

    site = Starlette(routes=[Route("/", page), Route("/takk.html", thanks)])
    with LiveServer(create_app(settings), port=serve_port) as serve, LiveServer(site, port=site_port) as web:
        yield serve, web, site_port


def test_signing_up_on_the_website_confirming_and_being_welcomed(browser, sites, project):
    serve, web, _port = sites
    page = browser.new_page()
    seen = []
    page.on("request", lambda request: seen.append(request.url))
    page.goto(web.url + "/")
    page.fill("#newsletter-email", "kari@example.no")
    page.select_option("#newsletter-municipality", "3205")
    page.click("form.newsletter-signup button[type=submit]")
    status = page.locator("form.newsletter-signup [data-newsletter-status]")
    status.filter(has_text="Takk!").wait_for(timeout=20000)
    assert status.get_attribute("data-ok") == "true"
    # everything the page loaded came from the website itself or from serve (the widget's workers
    # start from blob: URLs of the page): nothing from anyone else
    assert seen and all(url.startswith((web.url, serve.url, f"blob:{web.url}")) for url in seen), seen
    assert any(url.startswith(serve.url + "/challenge") for url in seen)  # the widget asked serve for its challenge
    (confirmation,) = mails(project, 1)
    assert confirmation["To"] == "kari@example.no" and confirmation["Subject"].startswith("Bekreft")
    assert rows(project, "SELECT status, municipality FROM subscribers") == [("pending", "3205")]
    # confirming, in the browser, sends the welcome email once
    link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", text_of(confirmation)).group(1)
    page.goto(link)
    page.click("button[type=submit]")
    page.get_by_role("heading", name="Du er påmeldt").wait_for()
    sent = mails(project, 2)
    welcome = next(m for m in sent if m["Subject"].startswith("Velkommen"))  # the order of two in one second is free
    assert welcome["Subject"] == "Velkommen som abonnent på Nyhetsbrev fra Osloregionen"
    assert (
        welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        and "/unsubscribe/" in welcome["List-Unsubscribe"]
    )
    body = text_of(welcome)
    assert "omtrent én gang i måneden" in body and "/preferences/" in body and "/unsubscribe/" in body
    page.goto(link)  # the link again: nothing more is sent
    page.close()
    time.sleep(0.5)
    assert len(mails(project)) == 2


def test_a_website_not_allowed_is_refused(browser, sites, project):
    serve, _web, site_port = sites
    page = browser.new_page()
    page.goto(f"http://localhost:{site_port}/")  # the same page, from an origin not in web.allowed_origins
    page.fill("#newsletter-email", "ola@example.no")
    page.click("form.newsletter-signup button[type=submit]")
    status = page.locator("form.newsletter-signup [data-newsletter-status]")
    status.filter(has_text="Noe gikk galt").wait_for(timeout=20000)
    assert status.get_attribute("data-ok") == "false" and "/signup?lang=nb" in status.inner_text()
    page.close()
    assert mails(project, 1, wait=1) == [] and rows(project, "SELECT email FROM subscribers") == []


def test_without_javascript_the_plain_form_works_with_stricter_limits(browser, sites, project):
    serve, web, _port = sites
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    for n, expected in ((1, "Takk for påmeldingen"), (2, "Takk for påmeldingen"), (3, "Mange har meldt seg på")):
        page.goto(web.url + "/")
        page.fill("#newsletter-email", f"uten-js-{n}@example.no")
        page.click("form.newsletter-signup button[type=submit]")
        page.get_by_text(expected).first.wait_for()
        if n < 3:  # back on the website's own thank-you page (return_url)
            assert page.url == f"{web.url}/takk.html"
    context.close()
    assert sorted(m["To"] for m in mails(project, 2)) == ["uten-js-1@example.no", "uten-js-2@example.no"]


def test_the_snippet_is_valid_html_with_nothing_from_elsewhere(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_WEB_ALLOWED_ORIGINS", "https://osloregionen.no")
    settings = load_settings()
    for options in ({}, {"municipality_field": True, "topics": ("all",)}, {"script": False, "change": False}):
        snippet = signup_form(settings, "en" if options.get("script") is False else "nb", **options)
        html5lib.HTMLParser(strict=True).parseFragment(snippet)  # raises at the first parse error
        addresses = re.findall(r'(?:src|href|action|challenge)="([^"]+)"', snippet)
        assert addresses and all(a.startswith(settings.base_url) for a in addresses), addresses
        assert ("<script" in snippet) is (options.get("script") is not False)
        assert 'name="website"' in snippet and 'name="email"' in snippet and "<label" in snippet
    with pytest.raises(ConfigError, match="--return-url 'https://example.com/takk' is not on a website"):
        signup_form(settings, "nb", return_url="https://example.com/takk")
    with pytest.raises(ConfigError, match="is not a whole address; write it with https://"):
        signup_form(settings, "nb", return_url="osloregionen.no/takk")
    monkeypatch.delenv("NEWSLETTER_WEB_ALLOWED_ORIGINS")
    with pytest.raises(ConfigError, match="web.allowed_origins is empty"):
        signup_form(load_settings(), "nb")


def test_the_widget_is_the_one_from_the_npm_package():
    recorded = (STATIC / "altcha" / "SOURCE.txt").read_text(encoding="utf-8")
    files = re.findall(r"^([0-9a-f]{64})  (\S+)$", recorded, re.M)
    assert {name for _digest, name in files} == {"altcha.min.js", "altcha-nb.js", "altcha-en.js", "LICENSE.txt"}
    for digest, name in files:
        assert hashlib.sha256((STATIC / "altcha" / name).read_bytes()).hexdigest() == digest, name


def test_the_command_prints_the_snippet_or_says_what_is_missing(run, project, monkeypatch):
    from conftest import assert_error

    assert_error(run("signup-form"), "web.allowed_origins is empty", "NEWSLETTER_WEB_ALLOWED_ORIGINS=")
    monkeypatch.setenv("NEWSLETTER_WEB_ALLOWED_ORIGINS", "https://osloregionen.no")
    printed = run("signup-form", "--lang", "en", "--topics", "klima", "--municipality-field")
    assert printed.exit_code == 0, printed.output
    assert (
        printed.stdout.startswith("<!-- Subscribe to the newsletter: Osloregionen Newsletter")
        and 'value="klima"' in printed.stdout
    )
    assert printed.stdout.count('<option value="') == 65 and "altcha-en.js" in printed.stdout  # 64 members and "choose"
    assert_error(run("signup-form", "--topics", "sport"), "unknown topic 'sport'")
