"""The delivery's promises, each defect found on main as its own regression test, and the rules
tested where they live (the library), not only through the command line: addresses with æøå,
the signing key, the transport, publishing, schedule states and the gate."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from email import policy
from email.parser import Parser

import httpx
import pytest
from conftest import (
    KEY,
    SAMPLE_ISSUE,
    LiveServer,
    assert_error,
    load_sample_data,
    rows,
    subscribe,
    write,
)

from newsletter import delivery, journal
from newsletter.config import load_settings
from newsletter.errors import GateError, NoTransport, SecretKeyError
from newsletter.schedule import listing, run_due
from newsletter.store import database
from newsletter.subscribers import read_token, set_status


def last_error(result, *fragments: str) -> str:
    """Exit 1 with the error as the last line (warnings about the issue may come before it)."""
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: ") and "Traceback" not in result.output, result.stderr
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def utf8_parsed(raw: bytes):
    """A message with UTF-8 headers (RFC 6532), parsed as a mail program would."""
    return Parser(policy=policy.SMTPUTF8).parsestr(raw.decode("utf-8"))


# --- 1: one internationalised address stops every send ---------------------------------------------


def test_an_idn_domain_goes_as_an_a_label_to_a_server_without_smtputf8(run, project, sink):
    assert run("subscribers", "add", "kari@blåbær.no", "--confirmed").exit_code == 0
    subscribe(*(f"p{n}@example.no" for n in range(3)))
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert "4 sent, 0 failed permanently" in result.stdout
    assert sink.rcpt_tos() == ["kari@xn--blbr-roah.no", "p0@example.no", "p1@example.no", "p2@example.no"]
    assert all(not utf8 for _, _, utf8 in sink.envelopes)
    kari = next(m for m in sink.parsed() if "xn--" in str(m["To"]))
    assert kari["To"].addresses[0].addr_spec == "kari@xn--blbr-roah.no"  # readers show it as blåbær.no


def test_smtputf8_carries_the_address_as_written(run, project, utf8_sink):
    run("subscribers", "add", "kåre@blåbær.no", "--name", "Kåre Ø.", "--confirmed")
    run("subscribers", "add", "ola@example.no", "--confirmed")
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert utf8_sink.rcpt_tos() == ["kåre@blåbær.no", "ola@example.no"]
    by_rcpt = {tos[0]: (utf8, raw) for (_, tos, utf8), raw in zip(utf8_sink.envelopes, utf8_sink.messages, strict=True)}
    utf8, raw = by_rcpt["kåre@blåbær.no"]
    assert utf8  # MAIL FROM ... SMTPUTF8
    to = utf8_parsed(raw)["To"].addresses[0]
    assert (to.addr_spec, to.display_name) == ("kåre@blåbær.no", "Kåre Ø.")
    assert by_rcpt["ola@example.no"][0] is False  # ASCII goes as before


def test_a_local_part_with_letters_a_server_cannot_carry_fails_alone(run, project, sink):
    """Without SMTPUTF8, æøå before the @ cannot be delivered: that recipient fails permanently,
    with the reason, is not counted as a bounce, and everyone else gets the issue."""
    run("subscribers", "add", "kåre@example.no", "--confirmed")
    subscribe(*(f"p{n}@example.no" for n in range(5)))
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert "5 sent, 1 failed permanently, 0 left for retry" in result.stdout
    assert "failed kåre@example.no: permanent: the SMTP server does not accept addresses with letters such as æøå" in (
        result.stderr
    )
    assert sink.rcpt_tos() == [f"p{n}@example.no" for n in range(5)]
    assert rows(project, "SELECT status, hard_bounces FROM subscribers WHERE email = 'kåre@example.no'") == [
        ("confirmed", 0)
    ]
    assert run("send", "--yes").exit_code == 1  # done: nothing is retried, nothing sent twice
    assert len(sink.messages) == 5


def test_once_the_server_lacks_smtputf8_the_list_refuses_what_it_cannot_carry(run, project, sink, monkeypatch):
    """Import, add and signup accept exactly what the sender can deliver: after the SMTP server
    has said it lacks SMTPUTF8, an address with æøå before the @ is refused with the reason."""
    from newsletter.web import create_app

    run("subscribers", "add", "kåre@example.no", "--confirmed")  # not known yet: accepted
    assert run("send", "--test", "redaktor@example.no").exit_code == 0  # the server says what it offers
    assert_error(run("subscribers", "add", "åse@example.no"), "åse@example.no: the e-mail server", "lacks SMTPUTF8")
    assert run("subscribers", "add", "ase@blåbær.no").exit_code == 0  # the domain travels as an A-label
    write(project / "liste.csv", "e-post,navn\nårvik@example.no,Å\nola@example.no,Ola\n")
    imported = run("subscribers", "import", "liste.csv", "--confirmed")
    assert (
        "Added 1" in imported.stdout and "liste.csv:2: rejected: årvik@example.no: the e-mail server" in imported.stderr
    )
    with LiveServer(create_app(load_settings())) as live, httpx.Client(base_url=live.url) as client:
        page = client.get("/signup")
        token = page.cookies.get("nl_csrf")
        answer = client.post("/signup", data={"email": "øystein@example.no", "csrf": token})
    assert answer.status_code == 400 and "Vi kan ikke sende til adresser med æ, ø eller å foran @" in answer.text


def test_what_the_list_accepts_is_what_a_message_can_be_written_to(project):
    """Import, add and signup share normalize_email, and every address it accepts goes into a
    message header unchanged; what it refuses, it says why."""
    from newsletter.errors import SubscriberError
    from newsletter.subscribers import normalize_email
    from newsletter.transport import check_address, mail_address

    for raw in ("o'brien@example.com", "Kari.Nordmann+nyhetsbrev@Example.NO", "kari@blåbær.no", "kåre@example.no",
                "a!#$%&*+/=?^_`{|}~-@example.org"):  # fmt: skip
        address = normalize_email(raw)
        assert check_address(address) == address
        assert mail_address(address, smtputf8=True) == (address, not address.isascii())
    for raw in ('"kari nordmann"@example.no', "kari@[127.0.0.1]", "kari@@example.no", "kari@example.no\r\nBcc: x@y.z",
                "kari nordmann@example.no", ""):  # fmt: skip
        with pytest.raises(SubscriberError):
            normalize_email(raw)


def test_names_any_length_with_line_breaks_stay_one_header(run, project, sink):
    long_name = "Åse " + "Nordmann-Sørensen, (Avd. klima) " * 10
    subscribe("kari@example.no")
    with database(load_settings().database) as conn, conn:  # longer than 'add' allows: as an old import left it
        conn.execute("UPDATE subscribers SET name = ?", (long_name + "\r\nBcc: alle@example.no",))
    assert run("send", "--yes").exit_code == 0
    (message,) = sink.parsed()
    assert message["Bcc"] is None
    (to,) = message["To"].addresses
    assert to.addr_spec == "kari@example.no" and to.display_name.startswith("Åse Nordmann-Sørensen, (Avd. klima)")
    head = sink.messages[0].split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if line.startswith((b"To:", b" ")))


# --- 2: a read-ahead batch that is all unsubscribed --------------------------------------------------


def test_a_read_ahead_batch_of_unsubscribed_people_does_not_stop_the_send(run, project, monkeypatch):
    """20 confirmed; one sent; the next ten leave; the send skips them and delivers the rest
    (the outbox reads eight ahead, so the whole next batch is gone)."""
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    ids = subscribe(*(f"p{n:02d}@example.no" for n in range(20)))
    assert run("send", "--yes", "--limit", "1").exit_code == 1
    (first,) = rows(project, "SELECT subscriber FROM delivery_recipients WHERE status = 'sent'")
    settings = load_settings()
    gone = [i for i in ids if i != first[0]][:10]
    with database(settings.database) as conn:
        for subscriber in gone:
            set_status(conn, subscriber, "unsubscribed")
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert "20 sent" not in result.stdout and "10 sent, 0 failed permanently, 0 left for retry" in result.stdout
    assert "10 skipped" in result.stdout
    box = mailbox.Maildir(project / "outbox", create=False)
    assert len(list(box.iterkeys())) == 10


# --- 3: the key is never replaced behind anyone's back ---------------------------------------------


@pytest.fixture
def sent_with_key(run, project):
    """The sample sent through the outbox with a key made by newsletter in .env; its .env text."""
    load_sample_data(project)
    subscribe("kari@example.no")
    made = run("send", "--yes")
    assert made.exit_code == 0 and "Made a new NEWSLETTER_SECRET_KEY" in made.stderr, made.output
    return (project / ".env").read_text(encoding="utf-8")


def test_a_lost_env_is_a_refusal_not_a_new_key(run, project, sent_with_key):
    (project / ".env").unlink()
    for args in (("send", "--test", "redaktor@example.no"), ("serve",), ("subscribers", "forget", "x@example.no", "--yes"),
                 ("schedule", SAMPLE_ISSUE, "--at", "2030-01-01 09:00")):  # fmt: skip
        assert_error(run(*args), "NEWSLETTER_SECRET_KEY is not set, but this project has signed links", "restore .env")
    assert not (project / ".env").exists()  # nothing was made behind anyone's back
    with pytest.raises(SecretKeyError, match="has signed links with a key .* restore .env"):
        delivery.send_test(load_settings(), delivery.prepare(load_settings()), ("a@example.no",))


def test_another_key_is_refused(run, project, sent_with_key, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "k" * 40)  # the environment wins over .env
    line = assert_error(run("send", "--test", "redaktor@example.no"), "is not the key this project's links")
    assert "k" * 40 not in line  # the key itself is never printed


def test_a_project_upgraded_with_sent_issues_but_no_recorded_key_refuses_a_new_one(run, project, sent_with_key):
    with database(load_settings().database) as conn, conn:
        conn.execute("DELETE FROM seen")  # as a database from before keys were remembered
    (project / ".env").unlink()
    assert_error(run("send", "--test", "x@example.no"), "issues have been sent with unsubscribe links")


def test_rotation_keeps_links_in_sent_mail_working(run, project, sent_with_key):
    box = mailbox.Maildir(project / "outbox", create=False)
    (raw,) = [box.get_bytes(k) for k in box.iterkeys()]
    old_token = raw.split(b"/unsubscribe/")[1].split(b">")[0].decode()
    run("subscribers", "add", "borte@example.no", "--confirmed")
    assert run("subscribers", "forget", "borte@example.no", "--yes").exit_code == 0
    before = run("secret", "status").stdout
    rotated = run("secret", "rotate", "--yes")
    assert rotated.exit_code == 0, rotated.output
    assert "1 older key(s) kept" in rotated.stdout
    env = (project / ".env").read_text(encoding="utf-8")
    assert "NEWSLETTER_OLD_SECRET_KEYS" in env and oct((project / ".env").stat().st_mode)[-3:] == "600"
    settings = load_settings()
    assert settings.secret_key not in sent_with_key and settings.old_secret_keys
    assert settings.secret_key not in rotated.output and settings.old_secret_keys[0] not in rotated.output
    (kari,) = rows(project, "SELECT id FROM subscribers WHERE email = 'kari@example.no'")
    assert read_token(settings, old_token, "unsubscribe") == kari[0]  # the link in the sent email still works
    after = run("secret", "status").stdout
    assert after != before and "(the current one)" in after
    # the one-click unsubscribe of the old email, on the pages as served after the rotation
    from newsletter.web import create_app

    with LiveServer(create_app(settings)) as live:
        answer = httpx.post(f"{live.url}/unsubscribe/{old_token}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    assert rows(project, "SELECT status FROM subscribers WHERE email = 'kari@example.no'") == [("unsubscribed",)]
    assert_error(run("subscribers", "add", "borte@example.no"), "asked to be forgotten")  # hashed with the old key
    new = run("send", "--test", "redaktor@example.no")
    assert new.exit_code == 0 and "Made a new" not in new.stderr


# --- 4: the transport is explicit --------------------------------------------------------------------


def test_no_transport_configured_is_a_refusal(run, project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    toml = project / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('transport = "outbox"', ""), encoding="utf-8")
    subscribe("kari@example.no")
    for args in (("send", "--yes"), ("send", "--dry-run"), ("send", "--test", "a@example.no")):
        assert_error(run(*args), "no transport is configured", 'sending.transport = "outbox"')
    assert not (project / "outbox").exists()
    with pytest.raises(NoTransport):
        delivery.plan(load_settings())


def test_smtp_settings_that_vanish_after_smtp_was_used_are_a_refusal(run, project, sink, monkeypatch):
    subscribe("kari@example.no")
    assert run("send", "--yes").exit_code == 0
    made = run("new", "Neste utgave", "--date", "2027-01-14")
    assert made.exit_code == 0
    for name in ("NEWSLETTER_SENDING_TRANSPORT", "NEWSLETTER_SMTP_HOST", "NEWSLETTER_SMTP_PORT"):
        monkeypatch.delenv(name)  # .env lost: newsletter.toml says "outbox"
    line = last_error(run("send", "--yes", "--force", "neste-utgave"), "has sent by SMTP (127.0.0.1:")
    assert "restore .env" in line
    assert not (project / "outbox").exists()
    assert rows(project, "SELECT COUNT(*) FROM deliveries") == [(1,)]  # nothing recorded, so nothing lost
    last_error(run("send", "--test", "a@example.no", "neste-utgave"), "has sent by SMTP")


def test_an_interrupted_smtp_delivery_never_resumes_into_the_outbox(run, project, sink, monkeypatch):
    subscribe("a@example.no", "b@example.no")
    assert run("send", "--yes", "--limit", "1").exit_code == 1
    monkeypatch.delenv("NEWSLETTER_SENDING_TRANSPORT")
    monkeypatch.delenv("NEWSLETTER_SMTP_HOST")
    assert_error(run("send", "--yes"), "has sent by SMTP")
    assert run("run-due").exit_code == 1
    assert not (project / "outbox").exists()


def test_both_transports_at_once_is_a_refusal(run, project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "smtp.example.org")  # newsletter.toml says "outbox"
    subscribe("kari@example.no")
    assert_error(run("send", "--yes"), "sending.transport is outbox, but an SMTP server is set too")


def test_dry_run_and_the_question_name_the_transport(run, project, sink):
    subscribe("kari@example.no")
    dry = run("send", "--dry-run")
    assert dry.exit_code == 0 and "via SMTP 127.0.0.1:" in dry.stdout
    asked = run("send", input="n\n")  # not a terminal: it refuses before asking
    assert asked.exit_code == 1 and sink.messages == []


# --- 5: a failed send publishes nothing ---------------------------------------------------------------


def test_a_send_that_fails_to_start_leaves_the_archive_as_it_was(run, project, tls_sink, monkeypatch):
    subscribe("a@example.no")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "feil-passord")
    monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "2")
    assert run("send", "--yes").exit_code == 1
    assert not (project / "build" / "archive").exists()
    assert rows(project, "SELECT status, first_sent_at FROM deliveries") == [("running", None)]
    assert run("archive").exit_code == 0  # written by hand meanwhile: the issue is not in it
    assert SAMPLE_ISSUE not in (project / "build/archive/index.html").read_text(encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "riktig-passord")
    done = run("send", "--yes")
    assert done.exit_code == 0 and "Archive updated: build/archive (1 issue(s))." in done.stdout
    assert (project / "build/archive" / SAMPLE_ISSUE / "index.html").is_file()


def test_run_due_publishes_without_the_command_line(run, project, sink):
    subscribe("a@example.no")
    assert run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00").exit_code == 0
    result = run_due(load_settings(), datetime(2030, 1, 15, 8, 1, tzinfo=UTC))
    assert result.problems == () and "Archive updated: build/archive (1 issue(s))." in result.lines
    assert (project / "build/archive" / SAMPLE_ISSUE / "index.html").is_file()


# --- 6: schedule states are true ---------------------------------------------------------------------


def test_a_refused_schedule_is_blocked_with_its_reason_and_can_be_approved(run, project, sink, issue_dir):
    subscribe("a@example.no")
    assert run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00").exit_code == 0
    path = issue_dir / "02-klemetsrud.md"
    path.write_text(path.read_text(encoding="utf-8") + "\nEn setning til.\n", encoding="utf-8")
    settings = load_settings()
    refused = run_due(settings, datetime(2030, 1, 16, tzinfo=UTC))
    assert "changed after it was scheduled" in refused.problems[0] and sink.messages == []
    (item,) = listing(settings)
    assert item.status == "blocked" and "changed after it was scheduled" in item.reason
    listed = run("schedule", "list").stdout
    assert f"{SAMPLE_ISSUE}  blocked  2030-01-15 09:00 (Oslo)" in listed and "changed after it was scheduled" in listed
    status = run("status").stdout
    assert "blocked, not sent: " in status and "schedule approve" in status
    assert_error(run("send", "--yes"), "is scheduled but blocked", "schedule approve")
    approved = run("schedule", "approve", SAMPLE_ISSUE)
    assert approved.exit_code == 0 and "Approved" in approved.stdout
    assert [i.status for i in listing(settings)] == ["scheduled"]
    done = run_due(settings, datetime(2030, 1, 16, tzinfo=UTC))
    assert done.problems == () and "1 sent" in done.lines[0]


def test_a_blocked_schedule_can_be_cancelled_and_a_blocked_one_is_not_retried(run, project, sink):
    (kari,) = subscribe("kari@example.no")
    run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00")
    settings = load_settings()
    with database(settings.database) as conn:
        set_status(conn, kari, "unsubscribed")
    assert "nobody to send" in run_due(settings, datetime(2030, 1, 16, tzinfo=UTC)).problems[0]
    assert run_due(settings, datetime(2030, 1, 16, tzinfo=UTC)).problems == ()  # cron is told once
    assert_error(run("schedule", "approve", SAMPLE_ISSUE), "nobody is in the audience")
    assert "Cancelled" in run("schedule", "cancel", SAMPLE_ISSUE).stdout
    assert listing(settings) == []


# --- 7: check reports everything in one run ------------------------------------------------------------


def test_check_reports_every_problem_at_once(run, project, issue_dir):
    load_sample_data(project)
    write(issue_dir / "06-bilde.md", "---\ntitle: Bilde\n---\n![](ordforererklaeringen.png)\n")
    write(issue_dir / "07-stor.md", "---\ntitle: Stor\n---\n" + ("Et langt avsnitt med mye tekst. " * 40 + "\n\n") * 90)
    write(issue_dir / "08-lenke.md", "---\ntitle: Lenke\n---\nSe [dette](javascript:alert(1)).\n")
    write(issue_dir / "09-ødelagt.md", "---\ntitle: 'Uten slutt\n---\nTekst\n")
    write(issue_dir / "10-kategori.md", "---\ntitle: Kategori\ncategory: sport\n---\nTekst\n")
    result = run("check")
    assert result.exit_code == 1
    out = result.stdout
    assert "06-bilde.md:4: image 'ordforererklaeringen.png' has no alt text" in out
    assert "error: email.html: the HTML is" in out and "Gmail cuts messages above 102 KB" in out
    assert "08-lenke.md:4: the link 'javascript:alert(1)' is not allowed" in out
    assert "09-ødelagt.md" in out and "bad front matter" in out
    assert "10-kategori.md:3: unknown category 'sport'" in out
    build = run("build")
    assert build.exit_code == 1 and "more problem(s): 'newsletter check' lists them" in build.stderr


def test_an_issue_that_cannot_be_built_says_it_blocks_the_rest(run, project, issue_dir):
    path = issue_dir / "issue.md"
    path.write_text(path.read_text(encoding="utf-8").replace("title:", "tittel:", 1), encoding="utf-8")
    result = run("check", SAMPLE_ISSUE)
    assert result.exit_code == 1
    assert "missing required front matter 'title'" in result.stdout
    assert "The other checks need this fixed first." in result.stdout


# --- the rules hold for any caller -----------------------------------------------------------------


def test_the_gate_refuses_errors_for_a_python_caller(project, issue_dir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    subscribe("kari@example.no")
    write(issue_dir / "06-lenker.md", "---\ntitle: Lenker\n---\nSe [arkivet](ftp://example.org/fil).\n")
    settings = load_settings()
    with pytest.raises(GateError) as refused:
        delivery.plan(settings)
    assert any("ftp://example.org/fil" in f.message for f in refused.value.findings)
    planned = delivery.plan(settings, force=True)
    assert planned.forced and delivery.send(settings, planned).sent == 1
    with database(settings.database) as conn:
        assert journal.active(conn, SAMPLE_ISSUE).forced


def test_a_python_send_records_everyone_before_the_first_message(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    subscribe(*(f"p{n}@example.no" for n in range(5)))
    settings = load_settings()
    planned = delivery.plan(settings)
    result = delivery.send(settings, planned, limit=2)
    assert (result.sent, result.pending, result.total) == (2, 3, 5)
    with database(settings.database) as conn:
        row = journal.active(conn, SAMPLE_ISSUE)
        assert row.status == "running" and row.transport == "outbox" and row.first_sent_at is not None
    assert delivery.send(settings, delivery.plan(settings)).sent == 5
