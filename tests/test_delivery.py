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
    serve_smtp,
    subscribe,
    write,
)

from newsletter import delivery, journal
from newsletter.config import load_settings
from newsletter.errors import GateError, NewsletterError, NoTransport, SecretKeyError, SendError
from newsletter.schedule import listing, run_due
from newsletter.store import database
from newsletter.subscribers import read_token, set_status

pytestmark = pytest.mark.backends  # each test on SQLite and on PostgreSQL


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


def test_a_name_that_looks_like_an_encoded_word_is_shown_as_written():
    """A name typed as '=?utf-8?q?...?=' must not be decoded by readers into something else."""
    from email import policy as email_policy
    from email.parser import BytesParser as Parser

    from newsletter.message import to_header

    for name in ("=?utf-8?q?Sjefen_i_banken?=", "Kari =?iso-8859-1?b?QWRtaW4=?= Nordmann"):
        header = to_header(name, "kari@example.no")
        parsed = Parser(policy=email_policy.default).parsebytes(header + b"\r\n")
        (to,) = parsed["To"].addresses
        assert to.display_name == name and to.addr_spec == "kari@example.no"


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
    assert after != before and after.count("  current") == 1 and "  kept" in after
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
    assert_error(run("schedule", "approve", SAMPLE_ISSUE), "nobody to send", "the audience")
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
    assert "09-ødelagt.md:2: the quote that starts on this line is never closed" in out
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
    import dataclasses

    by_hand = dataclasses.replace(planned, forced=False, gated=None)  # a Plan not made by plan(): checked again
    with pytest.raises(GateError):
        delivery.send(settings, by_hand)
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


# --- found in review ---------------------------------------------------------------------------------


def test_a_schedule_cancelled_or_blocked_after_run_due_planned_it_is_not_sent(run, project, sink):
    subscribe("a@example.no", "b@example.no")
    assert run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00").exit_code == 0
    settings = load_settings()
    planned = delivery.plan(settings, purpose=delivery.DUE)  # run-due has built and checked it ...
    assert run("schedule", "cancel", SAMPLE_ISSUE).exit_code == 0  # ... and staff cancel meanwhile
    with pytest.raises(SendError, match="was cancelled meanwhile"):
        delivery.send(settings, planned)
    assert sink.messages == [] and rows(project, "SELECT status FROM deliveries") == [("cancelled",)]
    assert run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00").exit_code == 0
    with database(settings.database) as conn, conn:
        journal.block(conn, journal.active(conn, SAMPLE_ISSUE).id, "a reason")
    with pytest.raises(SendError, match="blocked"):
        delivery.plan(settings, purpose=delivery.DUE)


def test_forget_holds_against_another_key(run, project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    assert run("subscribers", "forget", "ola@example.no", "--yes").exit_code == 0
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "z" * 40)
    assert_error(run("subscribers", "add", "ola@example.no", "--confirmed"), "is not the key this project's links")
    write(project / "liste.csv", "e-post\nola@example.no\n")
    assert_error(run("subscribers", "import", "liste.csv", "--confirmed"), "is not the key")
    assert rows(project, "SELECT COUNT(*) FROM subscribers") == [(0,)]


@pytest.fixture
def rude_server(project, monkeypatch):
    """An SMTP server that greets and hangs up at EHLO."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.sendall(b"220 rude.example ESMTP\r\n")
            client.recv(1024)
            client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    load_sample_data(project)
    for name, value in {"NEWSLETTER_SECRET_KEY": KEY, "NEWSLETTER_SENDING_TRANSPORT": "smtp",
                        "NEWSLETTER_SMTP_HOST": "127.0.0.1", "NEWSLETTER_SMTP_PORT": str(listener.getsockname()[1]),
                        "NEWSLETTER_SMTP_SECURITY": "none", "NEWSLETTER_SMTP_TIMEOUT": "3"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    yield
    stop.set()
    thread.join(2)
    listener.close()


def test_a_server_that_hangs_up_at_ehlo_is_one_line_and_blames_nobody(run, project, rude_server):
    subscribe("a@example.no", "b@example.no")
    assert_error(run("send", "--test", "redaktor@example.no"), "did not greet us")
    assert_error(run("send", "--yes"), "did not greet us", "goes on where it stopped")
    assert rows(project, "SELECT DISTINCT status, attempts, uncertain FROM delivery_recipients") == [("pending", 0, 0)]


def test_a_bad_stored_address_teaches_nothing_about_smtputf8(run, project, utf8_sink):
    subscribe("a@example.no", "b@example.no")
    with database(load_settings().database) as conn, conn:  # as an old import might have left it
        conn.execute("UPDATE subscribers SET email = 'p0 x@example.no' WHERE email = 'b@example.no'")
    assert "1 sent, 1 failed permanently" in run("send", "--yes").stdout
    assert run("subscribers", "add", "kåre@example.no").exit_code == 0


def test_a_dkim_key_that_cannot_sign_stops_before_the_first_message(run, project, sink, monkeypatch, tmp_path):
    key_file = tmp_path / "dkim.pem"
    key_file.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    monkeypatch.setenv("NEWSLETTER_DKIM_DOMAIN", "osloregionen.no")
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "nyhetsbrev")
    monkeypatch.setenv("NEWSLETTER_DKIM_KEY_FILE", str(key_file))
    subscribe("a@example.no")
    assert_error(run("send", "--yes"), "dkim.pem: not a PEM private key without a password", "check dkim.key_file")
    assert sink.messages == []
    assert rows(project, "SELECT status, attempts FROM delivery_recipients") == [("pending", 0)]


def test_a_fault_that_hits_every_message_stops_the_run(project, monkeypatch):
    """A message that newsletter itself cannot make is that recipient's failure, but when no
    message at all can be made, the run stops instead of failing the whole list."""
    from newsletter.message import MessageFactory

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    subscribe(*(f"p{n}@example.no" for n in range(12)))

    def broken(self, recipient, **options):  # fault injection: a bug in making messages
        raise TypeError("a bug")

    monkeypatch.setattr(MessageFactory, "build", broken)
    settings = load_settings()
    with pytest.raises(NewsletterError, match="could not make any message"):
        delivery.send(settings, delivery.plan(settings))
    (failed,) = rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE attempts > 0")
    assert failed[0] <= delivery.FAULTS_IN_A_ROW and not (project / "outbox").exists()
    assert rows(project, "SELECT COUNT(*) FROM delivery_recipients WHERE status = 'failed'") == [(0,)]


def test_images_stay_private_until_the_first_message_is_accepted(run, project, tls_sink, monkeypatch):
    subscribe("a@example.no")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "feil-passord")
    monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "2")
    assert run("send", "--yes").exit_code == 1
    assert run("send", "--test", "redaktor@example.no").exit_code == 1
    assert run("archive").exit_code == 0
    assert not (project / "build/archive" / SAMPLE_ISSUE).exists()


def test_run_due_leaves_a_far_retry_to_the_next_run(run, project, sink, monkeypatch):
    import time

    monkeypatch.setenv("NEWSLETTER_SENDING_RETRY_SECONDS", "600")
    subscribe("opptatt@example.no", "ok@example.no")
    sink.rcpt["opptatt@example.no"] = ["451 4.3.0 try later"]
    run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00")
    started = time.monotonic()
    result = run_due(load_settings(), datetime(2030, 1, 15, 8, 1, tzinfo=UTC))
    assert time.monotonic() - started < 30  # not the 600 s backoff: the lock is free for the next run
    assert "1 sent" in result.lines[0] and any("1 left for retry" in line for line in result.lines)


# --- found trying the tool as a new user ----------------------------------------------------------------


def test_a_refused_first_command_does_not_pin_a_key(run, project):
    toml = project / "newsletter.toml"
    chosen = toml.read_text(encoding="utf-8")
    toml.write_text(chosen.replace('transport = "outbox"', ""), encoding="utf-8")
    subscribe("kari@example.no")
    refused = run("send", "--yes")
    assert "no transport is configured" in refused.stderr
    assert "Made a new NEWSLETTER_SECRET_KEY" not in refused.stderr  # a send that cannot go makes no key
    from conftest import ROOT

    write(project / ".env", (ROOT / ".env.example").read_text(encoding="utf-8"))  # as the advice goes
    toml.write_text(chosen, encoding="utf-8")
    again = run("send", "--yes")
    assert again.exit_code == 0, again.output  # nothing was ever signed with the first key


def test_a_missing_old_key_is_refused_and_can_be_retired(run, project, sent_with_key):
    assert run("secret", "rotate", "--yes").exit_code == 0
    env = project / ".env"
    old_line = next(line for line in env.read_text(encoding="utf-8").splitlines() if "OLD_SECRET_KEYS" in line)
    env.write_text(env.read_text(encoding="utf-8").replace(old_line, ""), encoding="utf-8")
    line = assert_error(run("serve"), "links in sent emails were signed with a key that is not set now")
    fingerprint = line.split("fingerprint ")[1].split(",")[0]
    status = run("secret", "status")
    assert status.exit_code == 1 and f"{fingerprint}  since" in status.stdout and "MISSING" in status.stdout
    assert run("secret", "retire", fingerprint, "--yes").exit_code == 0
    assert run("secret", "status").exit_code == 0
    assert_error(run("secret", "retire", "0" * 16, "--yes"), "no key with the fingerprint")


def test_a_delivery_nothing_of_which_was_accepted_can_be_edited_or_cancelled(
    run, project, tls_sink, issue_dir, monkeypatch
):
    subscribe("a@example.no", "b@example.no")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "feil-passord")
    monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "2")
    assert run("send", "--yes").exit_code == 1  # the login is refused: nobody got anything
    path = issue_dir / "02-klemetsrud.md"
    path.write_text(path.read_text(encoding="utf-8") + "\nEn rettelse.\n", encoding="utf-8")
    assert "Cancelled" in run("schedule", "cancel", SAMPLE_ISSUE).stdout
    assert rows(project, "SELECT COUNT(*) FROM used_items") == [(0,)]  # its news is unused again
    assert run("send", "--yes").exit_code == 1  # again refused at the login
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "riktig-passord")
    path.write_text(path.read_text(encoding="utf-8") + "\nEn rettelse til.\n", encoding="utf-8")
    done = run("send", "--yes")
    assert done.exit_code == 0, done.output  # started again with the issue as it is now
    assert "En rettelse til." in tls_sink.messages[0].decode()
    assert len(tls_sink.messages) == 2


def test_one_test_address_that_cannot_be_reached_does_not_stop_the_others(run, project, sink):
    result = run("send", "--test", "øyvind@example.no", "--test", "ok@blåbær.no")
    assert result.exit_code == 1
    assert "not sent to øyvind@example.no" in result.stderr and "SMTPUTF8" in result.stderr
    assert "Test sent to ok@blåbær.no" in result.stdout and sink.rcpt_tos() == ["ok@xn--blbr-roah.no"]


def test_a_subject_that_looks_like_an_encoded_word_is_shown_as_written(run, project, sink, issue_dir):
    path = issue_dir / "issue.md"
    text = path.read_text(encoding="utf-8")
    start = text.index("subject:")
    end = text.index("\n", start)
    path.write_text(
        text[:start] + 'subject: "Svar på =?utf-8?q?sp=C3=B8rsm=C3=A5l?= i dag"' + text[end:], encoding="utf-8"
    )
    assert run("send", "--test", "a@example.no").exit_code == 0
    (message,) = sink.parsed()
    assert message["Subject"] == "[TEST] Svar på =?utf-8?q?sp=C3=B8rsm=C3=A5l?= i dag"


def test_a_send_goes_only_to_confirmed_subscribers(run, project, sink):
    subscribe("a@example.no")
    subscribe("p@example.no", status="pending")
    assert_error(run("send", "--dry-run", "--segment", "status=pending"), "goes only to confirmed subscribers")


def test_smtp_errors_say_which_setting_to_change(run, project, sink, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "starttls")
    line = assert_error(run("send", "--test", "a@example.no"), "does not offer STARTTLS", "NEWSLETTER_SMTP_SECURITY")
    assert "extension not supported" not in line
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "NONE")  # any case
    monkeypatch.setenv("NEWSLETTER_SMTP_USERNAME", "nyhetsbrev")
    assert_error(run("send", "--test", "a@example.no"), "USERNAME is set but NEWSLETTER_SMTP_PASSWORD is not")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "hemmelig")
    assert_error(run("send", "--test", "a@example.no"), "offers no login here", "NEWSLETTER_SMTP_USERNAME")
    monkeypatch.delenv("NEWSLETTER_SMTP_USERNAME")
    assert_error(run("send", "--test", "a@example.no"), "PASSWORD is set but NEWSLETTER_SMTP_USERNAME is not")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_server_that_wants_a_login_names_the_login_settings_not_the_sender(run, project, monkeypatch):
    # aiosmtpd answers MAIL FROM with '530 5.7.0 Authentication required' until someone logs in
    handler, controller = serve_smtp(project, monkeypatch, auth_required=True, auth_require_tls=False)
    try:
        line = assert_error(run("send", "--test", "a@example.no"), "wants a login", "NEWSLETTER_SMTP_USERNAME")
        assert "530" in line and "sender.address" not in line and "starttls" in line and "tls" in line
        assert handler.messages == []
    finally:
        controller.stop()


def test_status_of_an_issue_that_does_not_exist(run, project):
    assert_error(run("status", "finnes-ikke"), "Unknown issue 'finnes-ikke'")


def test_direction_overrides_are_taken_out_of_names(project):
    from newsletter.compose import clean_name

    assert clean_name("Kari\u202eeksnaB\u202c Nordmann\u2066") == "Kari eksnaB Nordmann"


def test_a_start_cut_short_while_recording_recipients_starts_again(run, project, sink, monkeypatch):
    """Recipients are recorded in short steps while the delivery is 'starting'; a start killed
    halfway has sent nothing, and the next send records everyone anew and sends once each."""
    import newsletter.delivery as delivery_module
    from newsletter import journal as journal_module

    monkeypatch.setattr(delivery_module, "RECORD_BATCH", 2)
    subscribe(*(f"p{n}@example.no" for n in range(7)))
    calls = []
    real = journal_module.add_recipients

    def cut_short(conn, delivery, people):  # fault injection: the process dies after the second step
        calls.append(len(people))
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(conn, delivery, people)

    monkeypatch.setattr(journal_module, "add_recipients", cut_short)
    with pytest.raises(KeyboardInterrupt):
        delivery.send(load_settings(), delivery.plan(load_settings()))
    assert rows(project, "SELECT status FROM deliveries") == [("starting",)]
    assert rows(project, "SELECT COUNT(*) FROM delivery_recipients") == [(4,)] and sink.messages == []
    assert "its start was cut short" in run("status").stdout
    monkeypatch.setattr(journal_module, "add_recipients", real)
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert sink.rcpt_tos() == sorted(f"p{n}@example.no" for n in range(7))
