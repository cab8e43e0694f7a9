"""The public pages, driven through a real uvicorn server on loopback with a real HTTP client.

Confirmation emails are read from the real outbox (a Maildir) that the server writes to.
"""

from __future__ import annotations

import mailbox
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

import httpx
import pytest
from conftest import LiveServer, rows, solved, tables_and_columns

from newsletter.config import load_settings
from newsletter.errors import ChallengeRefused, ConfigError
from newsletter.store import database
from newsletter.web import create_app

pytestmark = pytest.mark.backends  # each test on SQLite and on PostgreSQL

KEY = "s" * 40


@pytest.fixture(autouse=True)
def light_work(project, monkeypatch):
    """A proof of work of milliseconds (the real one takes a browser a second or two); after
    ``project``, which clears the NEWSLETTER_ settings."""
    monkeypatch.setenv("NEWSLETTER_WEB_CHALLENGE_WORK", "20")


@pytest.fixture
def server(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    with LiveServer(create_app(load_settings(), rate_limit=(5, 600))) as live:
        yield live


def outbox(project, expect: int | None = None):
    """The messages in the outbox; with ``expect``, wait (up to 10 s) until that many are there,
    since signup sends its email after answering."""
    deadline = time.monotonic() + 10
    while True:
        try:  # the server may be creating the Maildir (outbox/, then tmp/, new/, cur/) right now
            box = mailbox.Maildir(project / "outbox", create=False) if (project / "outbox" / "cur").exists() else None
            keys = list(box.iterkeys()) if box else []
            if expect is None or len(keys) >= expect or time.monotonic() > deadline:
                messages = (
                    [BytesParser(policy=policy.default).parsebytes(box.get_bytes(k)) for k in keys] if box else []
                )
                return sorted(messages, key=lambda m: m["Date"].datetime)
        except FileNotFoundError:
            pass
        time.sleep(0.02)


def confirm(client, path):
    """Open the confirmation link and press its button, as a person does."""
    page = client.get(path)
    assert page.status_code == 200 and ("Bekreft påmeldingen" in page.text or "Confirm your subscr" in page.text), (
        page.text
    )
    return client.post(path, data={"csrf": csrf(page.text)})


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def link(message, path: str) -> str:
    text = next(p for p in message.iter_parts() if p.get_content_type() == "text/plain").get_content()
    return re.search(rf"https://nyhetsbrev\.osloregionen\.no(/{path}/\S+)", text).group(1)


def status(project, email):
    found = rows(project, "SELECT status, name, municipality, language, topics FROM subscribers WHERE email = ?", email)
    return found[0] if found else None


def signup(client, **fields):
    """A signup from our own page, as a browser with JavaScript sends it (the proof of work done)."""
    page = client.get("/signup").text
    data = {"csrf": csrf(page), "email": "", "name": "", "municipality": "", "language": "nb",
            "altcha": solved(client), **fields}  # fmt: skip
    return client.post("/signup", data=data)


def test_signup_confirm_preferences_one_click_unsubscribe(server, project):
    with httpx.Client(base_url=server.url) as client:
        form = client.get("/signup")
        assert form.status_code == 200 and 'lang="nb"' in form.text
        assert form.text.count("<option value=") == 65  # 64 members + "choose"
        answer = signup(
            client, email="Kari@Example.no", name="Kari Nordmann", municipality="3205", topics=["klima", "areal"]
        )
        assert answer.status_code == 200 and "Sjekk e-posten din" in answer.text
        (mail,) = outbox(project, 1)
        assert status(project, "kari@example.no") == ("pending", "Kari Nordmann", "3205", "nb", "klima,areal")
        assert mail["To"] == "Kari Nordmann <kari@example.no>"
        assert mail["Subject"] == "Bekreft påmeldingen til Nyhetsbrev fra Osloregionen"
        confirm_path = link(mail, "confirm")
        assert "kari" not in confirm_path.lower()  # no address in the token

        assert status(project, "kari@example.no")[0] == "pending"  # opening the link alone confirms nothing
        confirmed = confirm(client, confirm_path)
        assert confirmed.status_code == 200 and "Du er påmeldt" in confirmed.text
        assert status(project, "kari@example.no")[0] == "confirmed"

        preferences_path = re.search(
            r'href="https://nyhetsbrev\.osloregionen\.no(/preferences/[^"]+)"', confirmed.text
        ).group(1)
        page = client.get(preferences_path)
        assert "kari@example.no" in page.text and 'value="3205" selected' in page.text
        saved = client.post(preferences_path, data={"csrf": csrf(page.text), "name": "Kari N.", "municipality": "3201",
                                                    "topics": ["fellesskap"], "language": "en"})  # fmt: skip
        assert saved.status_code == 200 and "Your preferences are saved." in saved.text
        assert status(project, "kari@example.no") == ("confirmed", "Kari N.", "3201", "en", "fellesskap")

        unsubscribe_path = re.search(
            r'href="https://nyhetsbrev\.osloregionen\.no(/unsubscribe/[^"]+)"', saved.text
        ).group(1)
        shown = client.get(unsubscribe_path)
        assert shown.status_code == 200 and '<form method="post"' in shown.text
        assert status(project, "kari@example.no")[0] == "confirmed"  # a GET changes nothing

    # RFC 8058: a POST with this body unsubscribes at once, without cookies or a login.
    one_click = httpx.post(server.url + unsubscribe_path, content=b"List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert one_click.status_code == 200
    assert status(project, "kari@example.no")[0] == "unsubscribed"


def test_unsubscribe_button(server, project):
    with httpx.Client(base_url=server.url) as client:
        signup(client, email="ola@example.no")
        confirm(client, link(outbox(project, 1)[0], "confirm"))
        from newsletter.subscribers import make_token

        settings = load_settings()
        path = f"/unsubscribe/{make_token(settings, 1, 'unsubscribe')}"
        page = client.get(path)
        done = client.post(path, data={"csrf": csrf(page.text)})
        assert done.status_code == 200 and "Du er meldt av" in done.text
        assert status(project, "ola@example.no")[0] == "unsubscribed"


def test_same_answer_whether_known_or_not(server, project):
    with httpx.Client(base_url=server.url) as client:
        first = signup(client, email="kjent@example.no")
        confirm(client, link(outbox(project, 1)[0], "confirm"))
        known = signup(client, email="kjent@example.no")
        unknown = signup(client, email="ukjent@example.no")
        outbox(project, 3)  # two confirmations and the welcome
    strip = lambda html: re.sub(r'value="[^"]*"', "", html)  # noqa: E731
    assert first.status_code == known.status_code == unknown.status_code == 200
    assert strip(known.text) == strip(unknown.text)
    time.sleep(0.5)  # a wrong extra email would be written by now
    confirmations = [m["To"] for m in outbox(project) if m["Subject"].startswith("Bekreft")]
    assert sorted(confirmations) == ["kjent@example.no", "ukjent@example.no"]  # none again to the confirmed


def test_forged_changed_and_expired_tokens_change_nothing(server, project, monkeypatch):
    from itsdangerous import URLSafeTimedSerializer

    with httpx.Client(base_url=server.url) as client:
        signup(client, email="per@example.no")
        confirm_path = link(outbox(project, 1)[0], "confirm")
        for bad in (
            confirm_path[:-3] + "abc",
            "/confirm/123.abc.def",
            "/confirm/" + URLSafeTimedSerializer("feil" * 10, salt="newsletter-confirm").dumps(1),
        ):
            response = client.get(bad)
            assert response.status_code == 400 and "Lenken virker ikke" in response.text
        assert client.post("/unsubscribe/forfalsket", content=b"List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 400  # fmt: skip
        assert client.get(confirm_path.replace("/confirm/", "/unsubscribe/")).status_code == 400  # wrong purpose
        assert status(project, "per@example.no")[0] == "pending"
        # Eight days later the confirmation link has expired (a controlled clock, not a real wait).
        import itsdangerous.timed

        real = time.time
        monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + 8 * 86400)
        assert client.get(confirm_path).status_code == 400
        monkeypatch.setattr(itsdangerous.timed.time, "time", real)
        assert confirm(client, confirm_path).status_code == 200


def test_csrf_is_required_on_forms(server, project):
    with httpx.Client(base_url=server.url) as client:
        client.get("/signup")
        forged = client.post("/signup", data={"csrf": "gjettet", "email": "a@example.no"})
        assert forged.status_code == 403
    no_cookie = httpx.post(server.url + "/signup", data={"csrf": "x", "email": "a@example.no"})
    assert no_cookie.status_code == 403
    assert status(project, "a@example.no") is None


def test_rate_limit_per_client(server, project):
    with httpx.Client(base_url=server.url) as client:
        codes = [signup(client, email=f"p{n}@example.no").status_code for n in range(7)]
    assert codes == [200] * 5 + [429, 429]


def test_invalid_address_and_header_injection(server, project):
    with httpx.Client(base_url=server.url) as client:
        bad = signup(client, email="ikke en adresse")
        assert (
            bad.status_code == 400 and "Skriv en gyldig e-postadresse" in bad.text and 'aria-invalid="true"' in bad.text
        )
        signup(client, email="x@example.no", name="Eva\r\nBcc: alle@example.com\r\nSubject: hei")
    (mail,) = outbox(project, 1)
    assert mail["Bcc"] is None and mail["To"].addresses[0].addr_spec == "x@example.no"
    assert "\n" not in mail["To"].addresses[0].display_name


def test_health_and_english(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    page = httpx.get(server.url + "/signup?lang=en").text
    assert 'lang="en"' in page and "Subscribe to the newsletter" in page and "Climate and environment" in page


def test_blocked_stays_blocked_and_forget_is_undone_only_by_the_person(server, project):
    """A blocked person cannot be put back through unsubscribe + signup, and a stranger's signup
    of a forgotten address keeps the 'forget' until the person confirms."""
    from newsletter.store import database
    from newsletter.subscribers import add, forget, make_token, set_status

    settings = load_settings()
    with database(settings.database) as conn:
        _, blocked = add(conn, settings, (), "sperret@example.no", confirmed=True)
        set_status(conn, blocked.id, "blocked")
        add(conn, settings, (), "glemt@example.no", confirmed=True)
        forget(conn, settings, "glemt@example.no")
    one_click = {
        "content": b"List-Unsubscribe=One-Click",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    }
    httpx.post(f"{server.url}/unsubscribe/{make_token(settings, blocked.id, 'unsubscribe')}", **one_click)
    assert status(project, "sperret@example.no")[0] == "blocked"
    with httpx.Client(base_url=server.url) as client:
        signup(client, email="sperret@example.no")
        signup(client, email="glemt@example.no")
        (mail,) = outbox(project, 1)  # only the forgotten address gets a confirmation email
    assert mail["To"] == "glemt@example.no"
    assert status(project, "sperret@example.no")[0] == "blocked"
    assert rows(project, "SELECT COUNT(*) FROM forgotten") == [(1,)]  # still forgotten until confirmed
    with httpx.Client(base_url=server.url) as client:
        confirm(client, link(mail, "confirm"))
    assert rows(project, "SELECT COUNT(*) FROM forgotten") == [(0,)]
    assert status(project, "glemt@example.no")[0] == "confirmed"


def test_ids_are_never_reused_so_old_links_reach_nobody(server, project):
    from newsletter.store import database
    from newsletter.subscribers import add, forget, make_token

    settings = load_settings()
    with database(settings.database) as conn:
        _, old = add(conn, settings, (), "gammel@example.no", confirmed=True)
        token = make_token(settings, old.id, "preferences")
        forget(conn, settings, "gammel@example.no")
        _, new = add(conn, settings, (), "ny@example.no", confirmed=True)
    assert new.id != old.id
    page = httpx.get(f"{server.url}/preferences/{token}")
    assert page.status_code == 400 and "ny@example.no" not in page.text


def test_signup_answers_the_same_when_the_email_cannot_be_sent(project, monkeypatch):
    """An SMTP failure must not turn into a different answer (that would tell who is on the list)."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_SENDING_TRANSPORT", "smtp")
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("NEWSLETTER_SMTP_PORT", "9")  # nothing listens there
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "none")
    with LiveServer(create_app(load_settings())) as live, httpx.Client(base_url=live.url) as client:
        answer = signup(client, email="ukjent@example.no")
    assert answer.status_code == 200 and "Sjekk e-posten din" in answer.text


def test_serve_keeps_tokens_out_of_the_log(project, monkeypatch):
    """'newsletter serve' runs uvicorn without its access log, which would record token URLs."""
    import uvicorn as real_uvicorn
    from click.testing import CliRunner

    from newsletter.cli import cli

    seen = {}
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setattr(real_uvicorn, "run", lambda app, **options: seen.update(options))
    result = CliRunner().invoke(cli, ["serve", "--port", "8123"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["access_log"] is False and seen["port"] == 8123 and seen["proxy_headers"] is False  # trusts nobody
    result = CliRunner().invoke(cli, ["serve", "--trusted-proxies", "127.0.0.1 10.0.0.0/8"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["proxy_headers"] is True and seen["forwarded_allow_ips"] == "127.0.0.1,10.0.0.0/8"


def test_signing_up_again_after_leaving_keeps_what_the_person_gives_now(server, project):
    from newsletter.subscribers import make_token

    with httpx.Client(base_url=server.url) as client:
        signup(client, email="ola@example.no", name="Ola", municipality="3205")
        first = link(outbox(project, 1)[0], "confirm")
        confirm(client, first)
        path = f"/unsubscribe/{make_token(load_settings(), 1, 'unsubscribe')}"
        client.post(path, data={"csrf": csrf(client.get(path).text)})
        assert status(project, "ola@example.no")[0] == "unsubscribed"
        signup(
            client, email="ola@example.no", name="Ola Nordmann", municipality="0301", language="en", topics=["klima"]
        )
        sent = [m for m in outbox(project, 3) if m["Subject"].startswith("Bekreft")]  # and the first one's welcome
        again = next(m for m in sent if link(m, "confirm") != first)  # a new confirmation email ...
        assert status(project, "ola@example.no") == ("unsubscribed", "Ola", "3205", "nb", "")  # ... and no change yet
        assert client.get(first).status_code == 400  # the old link cannot bring anyone back
        confirm(client, link(again, "confirm"))
    assert status(project, "ola@example.no") == ("confirmed", "Ola Nordmann", "0301", "en", "klima")


# --- hardening (issue 12) -----------------------------------------------------------------------------------


def test_a_stranger_signing_up_someone_who_bounced_changes_nothing(server, project):
    from conftest import subscribe

    from newsletter.subscribers import set_status

    (ola,) = subscribe(("ola@example.no", "Ola", "3205"))
    with database(load_settings().database) as conn:
        set_status(conn, ola, "bounced")
    before = rows(project, "SELECT * FROM subscribers")
    with httpx.Client(base_url=server.url) as client:
        answer = signup(client, email="ola@example.no", name="Ondsinnet", municipality="0301", language="en")
        assert answer.status_code == 200 and "Sjekk e-posten din" in answer.text  # the same answer as for anyone
    after = rows(project, "SELECT * FROM subscribers")
    columns = dict(tables_and_columns())["subscribers"]
    changed = {c for c, a, b in zip(columns, before[0], after[0], strict=True) if a != b}
    assert changed <= {"confirm_sent_at"} and after[0][columns.index("status")] == "bounced"


def test_x_forwarded_for_is_taken_only_from_the_proxies_named(project, monkeypatch):
    """A direct client cannot choose its own rate-limit key with X-Forwarded-For; behind a proxy
    named in --trusted-proxies, the header names the client. A real uvicorn, as 'serve' starts it."""
    import uvicorn

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    app = create_app(load_settings(), rate_limit=(2, 600))

    def statuses(trusted: str) -> list[int]:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                proxy_headers=True, forwarded_allow_ips=trusted)  # fmt: skip
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        try:
            answers = []
            for n in range(4):
                with httpx.Client(base_url=url, headers={"X-Forwarded-For": f"203.0.113.{n}"}) as client:
                    answers.append(signup(client, email=f"p{n}@example.no").status_code)
            return answers
        finally:
            server.should_exit = True
            thread.join(10)

    assert statuses("10.9.9.9") == [200, 200, 429, 429]  # loopback is not a named proxy: one client, limited
    assert statuses("127.0.0.1") == [200, 200, 200, 200]  # from the named proxy: four clients


def test_a_stranger_signing_up_someone_who_left_changes_nothing(server, project):
    from newsletter.subscribers import make_token

    with httpx.Client(base_url=server.url) as client:
        signup(client, email="ola@example.no", name="Ola", municipality="3205")
        confirm(client, link(outbox(project, 1)[0], "confirm"))
        path = f"/unsubscribe/{make_token(load_settings(), 1, 'unsubscribe')}"
        client.post(path, data={"csrf": csrf(client.get(path).text)})
        before = rows(project, "SELECT * FROM subscribers")
        answer = signup(client, email="ola@example.no", name="Ondsinnet", municipality="0301", language="en")
        assert answer.status_code == 200 and "Sjekk e-posten din" in answer.text
        outbox(project, 2)
    after = rows(project, "SELECT * FROM subscribers")
    columns = dict(tables_and_columns())["subscribers"]
    changed = {c for c, a, b in zip(columns, before[0], after[0], strict=True) if a != b}
    assert changed == {"confirm_sent_at"}  # status, unsubscribed_at, name, municipality, language: as they were


def test_one_confirmation_email_per_address_per_interval(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    with (
        LiveServer(create_app(load_settings(), rate_limit=(100, 600))) as live,
        httpx.Client(base_url=live.url) as client,
    ):
        for n in range(20):
            answer = signup(client, email="kari@example.no", name=f"Kari {n}")
            assert answer.status_code == 200 and "Sjekk e-posten din" in answer.text  # the same answer every time
        time.sleep(1)
        assert len(outbox(project)) == 1
    monkeypatch.setenv("NEWSLETTER_WEB_CONFIRM_INTERVAL", "0")  # no limit: each asks anew
    with (
        LiveServer(create_app(load_settings(), rate_limit=(100, 600))) as live,
        httpx.Client(base_url=live.url) as client,
    ):
        signup(client, email="kari@example.no")
        assert len(outbox(project, 2)) == 2


def test_the_rate_limiter_forgets_the_quiet_not_the_busy():
    from newsletter.web import RateLimiter

    limiter = RateLimiter(2, 600, keys=1000)
    assert limiter.allow("busy") and limiter.allow("busy") and not limiter.allow("busy")
    for n in range(100_000):
        limiter.allow(f"10.0.{n // 256}.{n % 256}")
        if n % 500 == 0:
            limiter.allow("busy")  # still refused, and kept as recently seen
    assert len(limiter.events) <= 1000 and not limiter.allow("busy")


def test_head_never_changes_anything(server, project):
    from newsletter.subscribers import make_token

    with httpx.Client(base_url=server.url) as client:
        signup(client, email="kari@example.no")
        confirm(client, link(outbox(project, 1)[0], "confirm"))
        token = make_token(load_settings(), 1, "unsubscribe")
        answer = client.request("HEAD", f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                                headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert answer.status_code == 200
    assert status(project, "kari@example.no")[0] == "confirmed"


def test_every_answer_has_a_strict_content_security_policy(server, project, run):
    write_archive = run("archive")
    assert write_archive.exit_code == 0
    with httpx.Client(base_url=server.url) as client:
        for path in ("/signup", "/unsubscribe/nonsense", "/health", "/archive/", "/archive/feed.xml", "/nothing"):
            answer = client.get(path)
            policy_ = answer.headers.get("content-security-policy", "")
            assert "default-src 'none'" in policy_ and "script-src 'self';" in policy_, (path, answer.headers)
            assert "unsafe-eval" not in policy_ and policy_.count("unsafe-inline") == 1  # for styles only
            assert "frame-ancestors 'none'" in policy_ and answer.headers.get("x-content-type-options") == "nosniff"


def test_archive_redirects_go_to_the_public_address_whatever_the_host(project, monkeypatch, run):
    from conftest import KEY as SEND_KEY
    from conftest import load_sample_data, subscribe

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", SEND_KEY)
    load_sample_data(project)
    subscribe("kari@example.no")
    assert run("send", "--yes").exit_code == 0
    with LiveServer(create_app(load_settings())) as live, httpx.Client(base_url=live.url) as client:
        answer = client.get("/archive/2026-12-ordforererklaeringen", headers={"Host": "evil.example"})
        index = client.get("/archive", headers={"Host": "evil.example"})
        others = [client.get(path, headers={"Host": "evil.example"}) for path in ("/signup/", "/health/", "/static")]
    assert answer.status_code in (301, 302, 307, 308)
    assert answer.headers["location"] == "https://nyhetsbrev.osloregionen.no/archive/2026-12-ordforererklaeringen/"
    assert index.status_code == 308 and index.headers["location"] == "https://nyhetsbrev.osloregionen.no/archive/"
    for other in others:  # no redirect built from the Host a request names: simply not found
        assert other.status_code == 404 and "evil.example" not in other.headers.get("location", "")


def test_every_formula_start_is_neutralised_and_read_back():
    from newsletter.subscribers import _unneutralized, neutralized

    for value in ("=1+1", "+47", "-2", "@SUM(A1)", "\tTAB", "\rCR"):
        assert neutralized(value) == "'" + value and _unneutralized(neutralized(value)) == value
    assert neutralized("Kari") == "Kari" and _unneutralized("'Kari") == "'Kari"  # an apostrophe of one's own stays


def test_export_neutralises_spreadsheet_formulas_and_import_keeps_the_real_name(run, project, tmp_path):
    people = {"a@example.no": '=HYPERLINK("https://evil.example","Klikk")', "b@example.no": "+47 22 00 00 00",
              "-c@example.no": "@SUM(A1)", "d@example.no": "Vanlig Navn"}  # fmt: skip
    for email, name in people.items():
        assert run("subscribers", "add", "--name", name, "--confirmed", "--", email).exit_code == 0
    exported = run("subscribers", "export").stdout
    assert "'=HYPERLINK" in exported and "'+47 22" in exported and "'@SUM" in exported and "'-c@example.no" in exported
    assert ";Vanlig Navn;" in exported
    path = tmp_path / "eksport.csv"
    path.write_text(exported, encoding="utf-8")
    rows(project, "DELETE FROM subscribers")  # a list restored from the export, into an empty one
    restored = run("subscribers", "import", str(path))
    assert restored.exit_code == 0
    assert "wait for confirmation" not in restored.stderr  # the export says they are confirmed: they are
    assert dict(rows(project, "SELECT email, name FROM subscribers")) == people
    assert rows(project, "SELECT DISTINCT status FROM subscribers") == [("confirmed",)]


# --- signups from the organisation's website (issue 14) ------------------------------------------------

WEBSITE = "https://osloregionen.no"


@pytest.fixture
def website(project, monkeypatch):
    """serve, with the organisation's website allowed to post its forms."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_WEB_ALLOWED_ORIGINS", f"{WEBSITE} https://www.osloregionen.no")
    with LiveServer(create_app(load_settings(), rate_limit=(50, 600))) as live:
        yield live


def test_the_challenge_counts_once_and_only_as_signed(project, monkeypatch):
    from altcha import Challenge, Payload, solve_challenge

    from newsletter import guard
    from newsletter.store import connect

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    settings = load_settings()
    conn = connect(settings.database)
    made = guard.new_challenge(settings)
    challenge = Challenge.from_dict(made.as_json)
    payload = Payload(challenge, solve_challenge(challenge)).to_base64()
    guard.spend_challenge(settings, conn, payload)
    for bad, reason in ((payload, "used"), (None, "missing"), ("bm9uc2Vuc2U=", "invalid"), ("%%%", "invalid")):
        with pytest.raises(ChallengeRefused) as refused:
            guard.spend_challenge(settings, conn, bad)
        assert refused.value.reason == reason
    # a challenge signed with another key, or with its difficulty lowered, is not ours
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "t" * 40)
    other = guard.new_challenge(load_settings())
    forged = Challenge.from_dict(other.as_json)
    with pytest.raises(ChallengeRefused, match="invalid"):
        guard.spend_challenge(settings, conn, Payload(forged, solve_challenge(forged)).to_base64())
    # one that has expired (its own time is signed, so it cannot be moved)
    monkeypatch.setattr(guard, "now", lambda: datetime.now(UTC) - timedelta(minutes=guard.CHALLENGE_MINUTES + 1))
    old = Challenge.from_dict(guard.new_challenge(settings).as_json)
    with pytest.raises(ChallengeRefused, match="expired"):
        guard.spend_challenge(settings, conn, Payload(old, solve_challenge(old)).to_base64())
    conn.close()


def test_origins_and_return_addresses(project, monkeypatch):
    from newsletter import guard

    monkeypatch.setenv("NEWSLETTER_WEB_ALLOWED_ORIGINS", "https://Osloregionen.no/ http://127.0.0.1:8080")
    settings = load_settings()
    assert guard.allowed_origins(settings) == {"https://osloregionen.no", "http://127.0.0.1:8080"}
    assert guard.origin_kind(settings, "https://nyhetsbrev.osloregionen.no") == "own"
    assert guard.origin_kind(settings, "https://osloregionen.no") == "allowed"
    for stranger in ("https://osloregionen.no.evil.example", "http://osloregionen.no", "null", None):
        assert guard.origin_kind(settings, guard.origin_of(stranger)) is None, stranger
    assert guard.sender_origin(None, "https://osloregionen.no/nyheter?x=1") == "https://osloregionen.no"
    assert guard.return_url(settings, "https://osloregionen.no/takk") == "https://osloregionen.no/takk"
    for bad in (
        "https://evil.example/takk",
        "javascript:alert(1)",
        "//evil.example",
        "https://osloregionen.no/\r\nX: y",
    ):
        assert guard.return_url(settings, bad) is None, bad
    monkeypatch.setenv("NEWSLETTER_WEB_ALLOWED_ORIGINS", "osloregionen.no")
    with pytest.raises(ConfigError, match="'osloregionen.no' is not an origin"):
        load_settings()


def test_a_form_from_the_website_a_replay_and_a_stranger(website, project):
    headers = {"Origin": WEBSITE, "Accept": "application/json"}
    with httpx.Client(base_url=website.url) as client:
        preflight = client.options("/signup", headers={**headers, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == WEBSITE
        challenge = client.get("/challenge", headers={"Origin": WEBSITE})
        assert challenge.headers["access-control-allow-origin"] == WEBSITE
        payload = solved(client)
        data = {"email": "kari@example.no", "lang": "nb", "language": "nb", "altcha": payload}
        answer = client.post("/signup", data=data, headers=headers)  # no CSRF cookie: a page on another site
        assert answer.status_code == 200 and answer.json()["ok"] is True, answer.text
        assert answer.headers["access-control-allow-origin"] == WEBSITE and "Origin" in answer.headers["vary"]
        replay = client.post("/signup", data={**data, "email": "ola@example.no"}, headers=headers)
        assert replay.status_code == 400 and replay.json()["message"].startswith("Kontrollen mot roboter")
        stranger = {"Origin": "https://evil.example", "Accept": "application/json"}
        refused = client.post("/signup", data={**data, "altcha": solved(client)}, headers=stranger)
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        assert client.options("/signup", headers=stranger).status_code == 403
        assert client.get("/challenge", headers=stranger).status_code == 403
        # a referer names the site when a browser sends no Origin
        by_referer = client.post("/signup", data={**data, "email": "per@example.no", "altcha": solved(client)},
                                 headers={"Referer": "https://evil.example/side", "Accept": "application/json"})  # fmt: skip
        assert by_referer.status_code == 403
        # a plain form (no script) goes back to the page it names, on an allowed site only
        plain = {"email": "eva@example.no", "return_url": f"{WEBSITE}/takk"}
        back = client.post("/signup", data=plain, headers={"Origin": WEBSITE})
        assert back.status_code == 303 and back.headers["location"] == f"{WEBSITE}/takk"
        elsewhere = client.post("/signup", data={**plain, "email": "ida@example.no", "return_url": "https://evil.example/"},
                                headers={"Origin": WEBSITE})  # fmt: skip
        assert elsewhere.status_code == 200 and "Sjekk e-posten din" in elsewhere.text
    assert sorted(m["To"] for m in outbox(project, 3)) == ["eva@example.no", "ida@example.no", "kari@example.no"]
    assert rows(project, "SELECT email FROM subscribers ORDER BY email") == [
        ("eva@example.no",), ("ida@example.no",), ("kari@example.no",)]  # fmt: skip


def test_the_honeypot_and_the_limits_without_javascript(website, project):
    headers = {"Origin": WEBSITE, "Accept": "application/json"}
    with httpx.Client(base_url=website.url) as client:
        trapped = client.post("/signup", data={"email": "bot@example.no", "website": "http://spam.example",
                                               "altcha": solved(client)}, headers=headers)  # fmt: skip
        assert trapped.status_code == 200 and trapped.json()["ok"] is True  # the same answer ...
        codes = [client.post("/signup", data={"email": f"n{n}@example.no"}, headers=headers).status_code
                 for n in range(3)]  # fmt: skip
    assert codes == [200, 200, 429]  # without the proof of work: two per client an hour
    time.sleep(0.3)
    assert rows(project, "SELECT email FROM subscribers ORDER BY email") == [("n0@example.no",), ("n1@example.no",)]
    assert "bot@example.no" not in [m["To"] for m in outbox(project, 2)]  # ... and nothing happened


def test_changing_a_subscription_from_the_website_mails_a_link(website, project):
    from conftest import subscribe

    from newsletter.subscribers import read_token

    subscribe(("kari@example.no", "Kari", None))
    headers = {"Origin": WEBSITE, "Accept": "application/json"}
    with httpx.Client(base_url=website.url) as client:
        page = client.get("/change")
        assert page.status_code == 200 and "Endre abonnementet ditt" in page.text
        known = client.post("/change", data={"email": "Kari@Example.no", "altcha": solved(client)}, headers=headers)
        unknown = client.post("/change", data={"email": "ingen@example.no", "altcha": solved(client)}, headers=headers)
        again = client.post("/change", data={"email": "kari@example.no", "altcha": solved(client)}, headers=headers)
        assert known.json() == unknown.json() == again.json() and known.json()["ok"] is True
        (mail,) = outbox(project, 1)
        time.sleep(0.3)
        assert len(outbox(project)) == 1  # one link per address per interval, none to strangers
        assert (
            mail["To"] == "Kari <kari@example.no>"
            and mail["Subject"] == "Innstillingene dine for Nyhetsbrev fra Osloregionen"
        )
        path = link(mail, "preferences")
        assert read_token(load_settings(), path.rsplit("/", 1)[1], "preferences") == 1
        assert "kari@example.no" in client.get(path).text
        privacy = client.get("/privacy")
        assert privacy.status_code == 200 and "post@osloregionen.no" in privacy.text  # reply_to: people answer there


def test_the_welcome_can_be_switched_off(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_WELCOME_ENABLED", "false")
    with LiveServer(create_app(load_settings())) as live, httpx.Client(base_url=live.url) as client:
        signup(client, email="kari@example.no")
        confirm(client, link(outbox(project, 1)[0], "confirm"))
        time.sleep(0.5)
    assert [m["Subject"] for m in outbox(project)] == ["Bekreft påmeldingen til Nyhetsbrev fra Osloregionen"]


def test_a_welcome_goes_once_and_again_only_if_it_could_not_go(project, monkeypatch):
    from conftest import subscribe

    from newsletter import welcome
    from newsletter.store import connect

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    (person,) = subscribe("kari@example.no")
    settings = load_settings()
    conn = connect(settings.database)
    assert rows(project, "SELECT welcomed_at FROM subscribers") == [(None,)]
    assert welcome.claim(conn, person) is True and welcome.claim(conn, person) is False
    welcome.unclaim(conn, person)  # it could not be sent: a later confirmation may try again
    assert welcome.claim(conn, person) is True
    conn.close()


def test_many_one_click_unsubscribes_at_once_are_all_answered_and_kept(server, project):
    """More requests at once than the server keeps connections for (PostgreSQL's pool): each is
    answered 200 only once it is kept, and every one is."""
    import concurrent.futures

    from conftest import subscribe

    from newsletter.subscribers import make_token

    ids = subscribe(*(f"p{n:02d}@example.no" for n in range(60)))
    settings = load_settings()
    paths = [f"/unsubscribe/{make_token(settings, i, 'unsubscribe')}" for i in ids]

    def post(path: str) -> int:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return httpx.post(
            server.url + path, content=b"List-Unsubscribe=One-Click", headers=headers, timeout=60
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(60) as pool:
        answers = list(pool.map(post, paths))
    assert answers == [200] * 60
    assert rows(project, "SELECT COUNT(*) FROM subscribers WHERE status = 'unsubscribed'") == [(60,)]


def test_confirmation_and_welcome_emails_are_dkim_signed_and_a_key_that_cannot_sign_stops_the_server(
    project, monkeypatch, tmp_path
):
    """The emails the web pages send (confirmation, welcome) are signed as a send's are, with
    the key parsed when the server starts; a key that cannot sign refuses the start."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from newsletter.errors import NewsletterError

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "dkim.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))  # fmt: skip
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    for name, value in {"DOMAIN": "osloregionen.no", "SELECTOR": "web", "KEY_FILE": str(tmp_path / "dkim.pem")}.items():
        monkeypatch.setenv(f"NEWSLETTER_DKIM_{name}", value)
    with (
        LiveServer(create_app(load_settings(), rate_limit=(5, 600))) as live,
        httpx.Client(base_url=live.url) as client,
    ):
        signup(client, email="kari@example.no", name="Kari")
        (mail,) = outbox(project, 1)
        assert confirm(client, link(mail, "confirm")).status_code == 200
        messages = outbox(project, 2)
    assert len(messages) == 2  # the confirmation, and the welcome
    box = mailbox.Maildir(project / "outbox", create=False)
    for raw in (box.get_bytes(k) for k in box.iterkeys()):
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # as it travels
        assert b"d=osloregionen.no; s=web;" in raw.replace(b"\r\n\t", b" ")
        assert dkim.verify(
            raw, dnsfunc=lambda name, timeout=5: record if name == b"web._domainkey.osloregionen.no." else None
        )

    (tmp_path / "dkim.pem").write_text("not a key")
    with pytest.raises(NewsletterError, match="not a PEM private key"):
        create_app(load_settings(), rate_limit=(5, 600))
