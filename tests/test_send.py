"""Delivery against a real SMTP server on loopback (aiosmtpd, in-process): headers, retries,
permanent failures, dropped connections, resume after a crash, unsubscribes during a send,
limits, the outbox, test sends and the one-sender-per-issue lock."""

from __future__ import annotations

import mailbox
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser

import pytest
from conftest import KEY, SAMPLE_ISSUE, assert_error, load_sample_data, rows, subscribe

from newsletter.clock import parse_when
from newsletter.config import load_settings
from newsletter.errors import ScheduleError
from newsletter.locks import hold
from newsletter.store import database
from newsletter.subscribers import read_token, set_status

pytestmark = pytest.mark.backends  # each test on SQLite and on PostgreSQL


def test_delivery_and_headers(run, project, sink):
    subscribe(("kari@example.no", 'Kari "K" Nordmann', "Lillestrøm"), "ola@example.no", "per@example.no")
    subscribe("pending@example.no", status="pending")
    subscribe("borte@example.no", status="unsubscribed")
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert f"{SAMPLE_ISSUE}: 3 sent, 0 failed permanently, 0 left for retry, 0 uncertain, 0 skipped" in result.stdout
    assert sink.to() == ["kari@example.no", "ola@example.no", "per@example.no"]
    settings = load_settings()
    by_to = {m["To"].addresses[0].addr_spec: m for m in sink.parsed()}
    kari = by_to["kari@example.no"]
    assert kari["To"].addresses[0].display_name == 'Kari "K" Nordmann'
    assert kari["Subject"].startswith("Osloregionen: ny ordførererklæring")
    assert kari["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = kari["List-Unsubscribe"].split("/unsubscribe/")[1].split(">")[0]
    (kari_id,) = rows(project, "SELECT id FROM subscribers WHERE email = 'kari@example.no'")[0]
    assert read_token(settings, token, "unsubscribe") == kari_id  # a real signed token per recipient
    assert len({m["Message-ID"] for m in sink.parsed()}) == 3
    html = next(p for p in kari.iter_parts() if p.get_content_type() == "text/html").get_content()
    assert "Hei, Kari &#34;K&#34; Nordmann!" in html
    again = run("send", "--yes")
    assert_error(again, "has been sent already")
    status = run("status")
    assert "3 sent" in status.stdout


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
def test_temporary_failures_are_retried_and_permanent_ones_recorded(run, project, sink, monkeypatch, pipelining):
    """With a server that offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write and
    a refused recipient still leaves the session in step; without it, one command at a time."""
    sink.pipelining = pipelining
    monkeypatch.setenv("NEWSLETTER_SENDING_BOUNCE_AFTER", "1")
    subscribe("opptatt@example.no", "finnes-ikke@example.no", "ok@example.no", "treg@example.no")
    sink.rcpt["opptatt@example.no"] = ["450 4.2.1 mailbox busy, try later", ""]
    sink.rcpt["finnes-ikke@example.no"] = ["550 5.1.1 no such user"]
    sink.drop["treg@example.no"] = 1  # the connection drops during DATA once
    result = run("send", "--yes")
    assert "3 sent, 1 failed permanently, 0 left for retry" in result.stdout
    assert result.exit_code == 0
    assert sink.to() == ["ok@example.no", "opptatt@example.no", "treg@example.no"]
    assert "failed finnes-ikke@example.no: permanent: 550 5.1.1 no such user" in result.stderr
    assert rows(project, "SELECT status, hard_bounces FROM subscribers WHERE email = 'finnes-ikke@example.no'") == [
        ("bounced", 1)
    ]
    assert rows(project, "SELECT attempts FROM delivery_recipients WHERE email = 'opptatt@example.no'") == [(2,)]
    assert "permanent: 550 5.1.1 no such user" in run("status").stdout
    assert (sink.pipelined >= 4) is pipelining and (sink.pipelined == 0) is not pipelining


def test_gave_up_then_retry_failed(run, project, sink):
    subscribe("full@example.no", "ok@example.no")
    sink.rcpt["full@example.no"] = ["452 4.2.2 mailbox full"] * 3
    result = run("send", "--yes")
    assert "1 sent, 0 failed permanently, 1 gave up after retries, 0 left for retry" in result.stdout
    assert "failed full@example.no: temporary, gave up: 452 4.2.2 mailbox full" in result.stderr
    assert result.exit_code == 1 and "--retry-failed' tries them again" in result.stderr.splitlines()[-1]
    retried = run("send", "--yes", "--retry-failed")
    assert retried.exit_code == 0 and "2 sent, 0 failed" in retried.stdout
    assert sink.to() == ["full@example.no", "ok@example.no"]


def test_resume_after_a_crash_sends_to_everyone_and_reports_uncertain(run, project, sink):
    ids = subscribe(*(f"p{n}@example.no" for n in range(6)))
    settings = load_settings()
    from newsletter import journal
    from newsletter.build import prepare
    from newsletter.subscribers import parse_segment, recipients

    prepared = prepare(settings)
    with database(settings.database) as conn:
        with conn:
            delivery = journal.create(conn, SAMPLE_ISSUE, "", prepared.fingerprint)
            journal.add_recipients(conn, delivery, recipients(conn, parse_segment(None, settings, ())))
            journal.start(conn, delivery, f"smtp 127.0.0.1:{settings.smtp_port}")
        # The crash: two messages were marked as leaving, one was recorded as sent.
        conn.execute("UPDATE delivery_recipients SET status = 'sending' WHERE subscriber IN (?, ?)", (ids[0], ids[1]))
        conn.execute("UPDATE delivery_recipients SET status = 'sent' WHERE subscriber = ?", (ids[2],))
        conn.commit()
    result = run("send", "--yes")
    assert "6 sent, 0 failed permanently, 0 left for retry, 2 uncertain" in result.stdout
    assert sink.to() == sorted(f"p{n}@example.no" for n in (0, 1, 3, 4, 5))  # p2 was already sent
    assert rows(project, "SELECT status FROM deliveries WHERE id = ?", delivery) == [("done",)]


def test_unsubscribes_during_a_send_are_honoured(run, project, sink):
    ids = subscribe("a@example.no", "b@example.no", "c@example.no")
    assert run("send", "--yes", "--limit", "1").exit_code == 1  # one sent, the rest wait
    settings = load_settings()
    with database(settings.database) as conn:
        set_status(conn, ids[2], "unsubscribed")
    result = run("send", "--yes")
    assert "2 sent, 0 failed permanently, 0 left for retry, 0 uncertain, 1 skipped" in result.stdout
    assert sink.to() == ["a@example.no", "b@example.no"]


def test_limit_and_exit_codes(run, project, sink):
    subscribe("a@example.no", "b@example.no", "c@example.no")
    first = run("send", "--yes", "--limit", "2")
    assert first.exit_code == 1 and "1 left for retry" in first.stdout
    assert "run the same command again" in first.stderr
    assert run("send", "--yes").exit_code == 0
    assert len(sink.messages) == 3


def test_one_starter_per_issue_then_any_number_of_senders(run, project, sink):
    """The issue's lock (on every machine sharing the database) lets one process start a
    delivery at a time; another send waits its turn, then joins or finishes it."""
    import threading

    from newsletter.delivery import issue_lock

    subscribe("a@example.no", "b@example.no")
    settings = load_settings()
    held, release = threading.Event(), threading.Event()

    def starter() -> None:
        with issue_lock(settings, SAMPLE_ISSUE):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=starter)
    thread.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    result = run("send", "--yes")  # waits for the lock, then sends
    thread.join()
    assert result.exit_code == 0 and "2 sent" in result.stdout, result.output
    assert sink.to() == ["a@example.no", "b@example.no"]


def test_asks_on_a_terminal_and_refuses_without_one(run, project, sink):
    subscribe("a@example.no")
    assert_error(run("send"), "not on a terminal: add --yes")
    dry = run("send", "--dry-run")
    assert dry.exit_code == 0 and "-> 1 recipient(s)" in dry.stdout and "a@example.no" in dry.stdout
    assert rows(project, "SELECT COUNT(*) FROM deliveries") == [(0,)] and sink.messages == []


def test_test_send_records_nothing(run, project, sink):
    result = run("send", "--test", "Redaktor@Example.no")
    assert result.exit_code == 0 and "Test sent to redaktor@example.no" in result.stdout
    (message,) = sink.parsed()
    assert message["Subject"].startswith("[TEST] Osloregionen")
    assert rows(project, "SELECT COUNT(*) FROM deliveries") == [(0,)]


def test_segment_and_empty_audience(run, project, sink):
    subscribe(("kari@example.no", "", "Lillestrøm"), ("ola@example.no", "", "Asker"))
    assert run("send", "--yes", "--segment", "municipality=Asker").exit_code == 0
    assert sink.to() == ["ola@example.no"]
    project2 = load_settings()
    assert project2.name  # settings still load
    assert_error(run("send", "--yes", "--segment", "municipality=Asker lang=en", "ordforer"), "has been sent already")
    run("new", "Neste utgave", "--date", "2027-01-14")
    assert_error(
        run("send", "--yes", "--force", "--segment", "municipality=Asker lang=en", "neste-utgave"),
        "nobody to send 2027-01-neste-utgave to",
    )


def test_the_outbox_when_the_project_chose_it(run, project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    load_sample_data(project)
    subscribe("a@example.no", "b@example.no")
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert "via the local outbox" in result.stdout and "nothing left this machine" in result.stdout
    box = mailbox.Maildir(project / "outbox", create=False)
    assert sorted(BytesParser(policy=policy.default).parsebytes(box.get_bytes(k))["To"] for k in box.iterkeys()) == [
        "a@example.no",
        "b@example.no",
    ]


def test_sigkill_in_the_middle_and_resume(project, sink):
    """Kill -9 a real send in a subprocess; the same command again delivers to everyone."""
    subscribe(*(f"k{n:02d}@example.no" for n in range(30)))
    sink.delay = 0.05
    env = {**os.environ}
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--yes"], cwd=project, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 20
    while len(sink.messages) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 8 <= len(sink.messages) < 30
    sink.delay = 0
    done = subprocess.run([sys.executable, "-m", "newsletter", "send", "--yes"], cwd=project, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    received = [m["To"].addresses[0].addr_spec for m in sink.parsed()]
    assert set(received) == {f"k{n:02d}@example.no" for n in range(30)}  # nobody lost
    duplicates = len(received) - len(set(received))
    uncertain = int(re.search(r"(\d+) uncertain", done.stdout).group(1))
    assert duplicates <= uncertain <= 2  # every second copy is reported; at most one per connection


def test_schedule_and_run_due_with_a_controlled_clock(run, project, sink, issue_dir):
    from datetime import UTC, datetime

    from newsletter.schedule import run_due

    subscribe("a@example.no", "b@example.no")
    made = run("schedule", "ordforer", "--at", "2030-01-15 09:00")
    assert made.exit_code == 0, made.output
    assert f"Scheduled {SAMPLE_ISSUE} for 2030-01-15 09:00 (Oslo)." in made.stdout
    assert "2030-01-15 09:00 (Oslo)" in run("schedule", "list").stdout
    assert_error(run("send", "--yes"), "is scheduled for", "schedule cancel")
    assert_error(run("schedule", "ordforer", "--at", "2030-01-16 09:00"), "is scheduled for 2030-01-15 09:00 (Oslo)")

    settings = load_settings()
    quiet = run("run-due")  # today is long before 2030: nothing to do, and nothing said
    assert quiet.exit_code == 0 and quiet.output == ""
    assert run_due(settings, datetime(2030, 1, 15, 7, 59, tzinfo=UTC)).lines == ()
    with hold(settings.build_dir, "run-due"):
        assert run_due(settings, datetime(2030, 1, 15, 8, 1, tzinfo=UTC)).busy  # one run-due at a time
    done = run_due(settings, datetime(2030, 1, 15, 8, 1, tzinfo=UTC))
    assert done.problems == () and "2 sent" in done.lines[0]
    assert sink.to() == ["a@example.no", "b@example.no"]
    assert run_due(settings, datetime(2030, 1, 15, 8, 2, tzinfo=UTC)).lines == ()  # nothing sent twice


def test_run_due_refuses_an_issue_changed_after_scheduling(run, project, sink, issue_dir):
    from datetime import UTC, datetime

    from newsletter.schedule import run_due

    subscribe("a@example.no")
    run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00")
    path = issue_dir / "02-klemetsrud.md"
    path.write_text(path.read_text(encoding="utf-8") + "\nEn setning til.\n", encoding="utf-8")
    result = run_due(load_settings(), datetime(2030, 1, 16, tzinfo=UTC))
    assert result.lines == () and "changed after it was scheduled" in result.problems[0]
    assert "It is blocked until approved" in result.problems[0]
    assert sink.messages == []
    cron = run("run-due")
    assert cron.exit_code == 0  # nothing else is due by the real clock
    assert "Cancelled" in run("schedule", "cancel", SAMPLE_ISSUE).stdout
    assert run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 10:00").exit_code == 0
    assert "1 sent" in run_due(load_settings(), datetime(2030, 1, 16, tzinfo=UTC)).lines[0]


def test_schedule_errors(run, project, sink):
    subscribe("a@example.no")
    assert_error(run("schedule", SAMPLE_ISSUE, "--at", "i morgen"), "is not a time; write it as 'YYYY-MM-DD HH:MM'")
    assert_error(run("schedule", SAMPLE_ISSUE, "--at", "2001-01-01 09:00"), "is in the past")
    assert_error(run("schedule", "cancel", SAMPLE_ISSUE), "is not scheduled")
    made = run("schedule", SAMPLE_ISSUE, "--at", "2030-06-01T09:00+00:00")
    assert "2030-06-01 11:00 (Oslo)." in made.stdout  # Oslo is UTC+2 in summer


@pytest.mark.parametrize(
    "text", ["2030-12-30 9:00", "2030-12-30 09.00", "30.12.2030 kl. 9", "30.12.2030 09:00", "2030-12-30T08:00Z"]
)
def test_times_as_people_write_them(text):
    assert parse_when(text) == datetime(2030, 12, 30, 8, 0, tzinfo=UTC)


def test_a_time_the_clocks_skip_is_refused():
    with pytest.raises(ScheduleError, match="does not exist in Oslo"):
        parse_when("2030-03-31 02:30")  # summer time begins at 02:00 that night


def test_dkim_signature_covers_the_unsubscribe_headers_and_verifies(run, project, sink, monkeypatch, tmp_path):
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    monkeypatch.setenv("NEWSLETTER_DKIM_DOMAIN", "osloregionen.no")
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "nyhetsbrev")
    monkeypatch.setenv("NEWSLETTER_DKIM_KEY_FILE", str(key_file))
    subscribe(("kari@example.no", "Kåre Ø. Åsen", "Asker"))
    assert run("send", "--yes").exit_code == 0
    (raw,) = sink.messages
    looked_up = []

    def dns(name, timeout=5):  # a stub DNS: the public key as the TXT record
        looked_up.append(name)
        return record if name == b"nyhetsbrev._domainkey.osloregionen.no." else None

    assert dkim.verify(raw, dnsfunc=dns)
    assert looked_up == [b"nyhetsbrev._domainkey.osloregionen.no."]
    signature = raw.split(b"\r\n\r\n")[0].decode()
    signed = re.search(r"h=([^;]+);", signature.replace("\r\n", "").replace(" ", "").replace("\t", "")).group(1).lower()
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject", "to"} <= set(signed.split(":"))
    tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nothing")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_rsa_and_ed25519_signatures_verify_on_every_message_and_after_a_relay_refolds(
    run, project, sink, monkeypatch, tmp_path
):
    """Two signatures (RSA-SHA256, and Ed25519-SHA256 as RFC 8463 adds), made with cryptography
    and verified by dkimpy, an independent implementation: on every message of a delivery, and
    after a relay re-folds the headers and re-spaces the body (relaxed/relaxed)."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    rsa_key, ed_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate(),
    )
    (tmp_path / "rsa.pem").write_bytes(rsa_key.private_bytes(*pem))
    (tmp_path / "ed.pem").write_bytes(ed_key.private_bytes(*pem))
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw_ed = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    records = {
        b"nyhetsbrev._domainkey.osloregionen.no.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(der),
        b"ed._domainkey.osloregionen.no.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw_ed),
    }
    for name, value in {"DOMAIN": "osloregionen.no", "SELECTOR": "nyhetsbrev", "KEY_FILE": str(tmp_path / "rsa.pem"),
                        "ED25519_KEY_FILE": str(tmp_path / "ed.pem"), "ED25519_SELECTOR": "ed"}.items():  # fmt: skip
        monkeypatch.setenv(f"NEWSLETTER_DKIM_{name}", value)
    subscribe(("kari@example.no", "Kåre Ø. Åsen", "Asker"), "ola@example.no", ("per@example.no", "Per", "Bærum"))
    assert run("send", "--yes").exit_code == 0

    def dns(name, timeout=5):
        return records.get(name)

    assert len(sink.messages) == 3
    for raw in sink.messages:
        verifier = dkim.DKIM(raw)
        assert [verifier.verify(idx=i, dnsfunc=dns) for i in range(2)] == [True, True]
        assert b"a=rsa-sha256" in raw and b"a=ed25519-sha256" in raw and raw.count(b"c=relaxed/relaxed") == 2
        head, body = raw.split(b"\r\n\r\n", 1)
        # A relay: every header unfolded and folded again at other places, tabs for spaces,
        # trailing spaces on body lines, and an empty line at the end.
        refolded = re.sub(rb"\r\n[ \t]+", b" ", head)
        refolded = re.sub(rb"(Subject|To|List-Unsubscribe):", lambda m: m.group(1) + b":\r\n\t", refolded)
        respaced = body.replace(b"\r\n", b"  \r\n").replace(b" ", b"\t ", 3) + b"\r\n"
        relayed = dkim.DKIM(refolded + b"\r\n\r\n" + respaced)
        assert [relayed.verify(idx=i, dnsfunc=dns) for i in range(2)] == [True, True]
        changed = dkim.DKIM(raw.replace(b"Subject: ", b"Subject: Re: "))
        assert [changed.verify(idx=i, dnsfunc=dns) for i in range(2)] == [False, False]


def test_dkim_settings_go_together(run, project, sink, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DKIM_DOMAIN", "osloregionen.no")
    assert_error(run("send", "--yes"), "set all of dkim.domain, dkim.selector and dkim.key_file")


def test_starttls_and_auth(run, project, tls_sink, monkeypatch):
    subscribe("a@example.no", "b@example.no")
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert tls_sink.to() == ["a@example.no", "b@example.no"]
    assert "riktig-passord" not in result.output  # the password is never printed


def test_wrong_password_and_untrusted_certificate(run, project, tls_sink, monkeypatch):
    subscribe("a@example.no")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "feil-passord")
    monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "2")
    # smtplib tries PLAIN (535) and then LOGIN, which aiosmtpd leaves unanswered: either way the
    # run stops with one line, and the recipient is not blamed.
    line = assert_error(run("send", "--yes"), "SMTP server", "goes on where it stopped")
    assert "refused the login (535)" in line or "cannot connect" in line
    assert rows(project, "SELECT status, attempts FROM delivery_recipients") == [("pending", 0)]  # not its fault
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "riktig-passord")
    monkeypatch.delenv("NEWSLETTER_SMTP_CA_FILE")  # the self-signed certificate is not trusted now
    assert_error(run("send", "--yes"), "the server's certificate was not accepted: it is signed by an authority",
                 "smtp.ca_file")  # fmt: skip
    assert tls_sink.messages == []
    monkeypatch.setenv("NEWSLETTER_SMTP_CA_FILE", str(project / "finnes-ikke.pem"))
    assert_error(run("send", "--yes"), "check smtp.ca_file")


def test_tls_on_a_server_without_it_says_which_port(run, project, sink, monkeypatch):
    subscribe("a@example.no")
    monkeypatch.setenv("NEWSLETTER_SMTP_SECURITY", "tls")  # the sink speaks plain SMTP
    assert_error(run("send", "--yes"), "the server does not speak TLS on port", "tls use port 465")
    assert sink.messages == []


def test_slow_server_times_out_and_is_retried(run, project, sink, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SMTP_TIMEOUT", "1")
    subscribe("treg@example.no")
    sink.delay = 2.5  # longer than the timeout
    first = run("send", "--yes")
    assert first.exit_code == 1 and "1 gave up after retries" in first.stdout
    assert "TimeoutError" in first.stderr or "timed out" in first.stderr
    sink.delay = 0
    again = run("send", "--yes", "--retry-failed")
    assert again.exit_code == 0 and "1 sent" in again.stdout


def test_rate_limit_per_second_and_per_hour(project):
    """The limits as a sender meets them (workers.RateLimit over the shared budget in the
    database), with a controlled clock."""
    from newsletter import journal
    from newsletter.workers import RateLimit

    clock = [1_800_000_000.0]

    def wait_for_each(limiter: RateLimit, count: int) -> None:
        for _ in range(count):
            while (delay := limiter.reserve()) > 0:
                clock[0] += delay

    with database(load_settings().database) as conn:
        per_second = RateLimit(3, 0, lambda want: journal.take_sends(conn, want, 3, 0, clock[0]))
        start = clock[0]
        wait_for_each(per_second, 7)
        assert clock[0] - start >= 2.0  # 7 messages at 3 a second need at least two seconds
        clock[0] += 7200  # another hour: what went before no longer counts
        per_hour = RateLimit(0, 2, lambda want: journal.take_sends(conn, want, 0, 2, clock[0]))
        start = clock[0]
        wait_for_each(per_hour, 3)
        assert clock[0] - start >= 3600  # the third message waits for the hour to pass


def test_ctrl_c_stops_after_the_messages_in_flight(project, sink):
    """SIGINT: the send stops dispatching, records what was in flight, and exits 1 with the rest pending."""
    subscribe(*(f"c{n:02d}@example.no" for n in range(40)))
    sink.delay = 0.05
    process = subprocess.Popen([sys.executable, "-m", "newsletter", "send", "--yes"], cwd=project, env={**os.environ},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 20
    while len(sink.messages) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, err
    assert "Stopping after the messages in flight" in err and "left for retry" in out
    sent, pending, sending = (
        rows(project, f"SELECT COUNT(*) FROM delivery_recipients WHERE status = '{s}'")[0][0]
        for s in ("sent", "pending", "sending")
    )
    assert sending == 0 and sent == len(sink.messages) and sent + pending == 40  # nothing uncertain, nothing lost


def test_lines_starting_with_a_dot_arrive_intact(run, project, sink, issue_dir):
    """SMTP dot-stuffing: a line that starts with '.' (here in the text part) must not be lost."""
    path = issue_dir / "issue.md"
    path.write_text(path.read_text(encoding="utf-8") + "\n.punktum først\n\n.\n", encoding="utf-8")
    subscribe("a@example.no")
    assert run("send", "--yes").exit_code == 0
    (raw,) = sink.messages
    assert b"\r\n.punktum f" in raw and b"\r\n.\r\n" in raw  # the dots stood at line starts on the wire
    text = next(p for p in sink.parsed()[0].iter_parts() if p.get_content_type() == "text/plain").get_content()
    assert ".punktum først" in text and "\n.\n" in text.replace("\r\n", "\n")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-at-a-time"])
def test_a_refused_sender_stops_the_run_and_bounces_nobody(run, project, sink, monkeypatch, pipelining):
    sink.pipelining = pipelining  # pipelined, the RCPT and DATA replies after the refusal are read too
    monkeypatch.setenv("NEWSLETTER_SENDING_BOUNCE_AFTER", "1")
    subscribe("a@example.no", "b@example.no")

    async def refuse(server, session, envelope, address, mail_options):
        return "553 5.7.1 sender not authorised"

    sink.handle_MAIL = refuse
    assert_error(run("send", "--yes"), "refused the sender nyhetsbrev@osloregionen.no (553")
    assert rows(project, "SELECT DISTINCT status FROM subscribers") == [("confirmed",)]
    assert rows(project, "SELECT DISTINCT status, attempts FROM delivery_recipients") == [("pending", 0)]


def test_run_due_edge_cases(run, project, sink, issue_dir):
    """An empty audience at due time blocks the schedule (with the reason); a schedule whose issue
    folder was deleted is blocked and can still be cancelled."""
    import shutil
    from datetime import UTC, datetime

    from newsletter.schedule import run_due

    (kari,) = subscribe("kari@example.no")
    run("schedule", SAMPLE_ISSUE, "--at", "2030-01-15 09:00")
    settings = load_settings()
    with database(settings.database) as conn:
        set_status(conn, kari, "unsubscribed")
    result = run_due(settings, datetime(2030, 1, 16, tzinfo=UTC))
    assert "nobody to send" in result.problems[0] and sink.messages == []
    assert rows(project, "SELECT status FROM deliveries") == [("blocked",)]
    assert run_due(settings, datetime(2030, 1, 16, tzinfo=UTC)).problems == ()  # blocked: said once, not every minute
    shutil.rmtree(issue_dir)
    assert "Cancelled" in run("schedule", "cancel", SAMPLE_ISSUE).stdout
    assert run_due(settings, datetime(2030, 1, 16, tzinfo=UTC)).problems == ()


def test_the_sender_does_not_spin_while_waiting(project, sink):
    """At the tail of a send (one slow message in flight) the sender waits instead of polling."""
    import resource

    subscribe("treg@example.no")
    sink.delay = 2
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "newsletter", "send", "--yes"], cwd=project, env={**os.environ},
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert used < 1.5, f"the sender used {used:.1f} s of CPU while waiting 2 s for the server"


def test_recipients_of_the_other_language_are_pointed_out(run, project, sink):
    """A Norwegian issue sent to everyone reaches those who chose English too: the send says so."""
    run("subscribers", "add", "kari@example.no", "--confirmed")
    run("subscribers", "add", "maria@example.com", "--lang", "en", "--confirmed")
    dry = run("send", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Warning: 1 of them chose the English edition and get this Norwegian issue" in dry.stderr
    assert "--segment 'lang=nb'" in dry.stderr
    only = run("send", "--dry-run", "--segment", "lang=nb")
    assert "English edition" not in only.stderr and "1 recipient(s)" in only.stdout


def test_a_change_to_the_municipality_blocks_alone_is_noticed(project):
    """Each municipality's block is part of what recipients get: editing only its template
    changes the fingerprint a resumed or scheduled delivery is checked against."""
    from newsletter.build import prepare

    load_sample_data(project)
    before = prepare(load_settings())
    assert before.rendered.municipal
    template = project / "templates" / "email" / "municipality.txt.j2"
    template.write_text(template.read_text(encoding="utf-8") + "Endret.\n", encoding="utf-8")
    after = prepare(load_settings())
    assert after.rendered.html.parts == before.rendered.html.parts  # the shared parts are the same
    assert after.fingerprint != before.fingerprint


def test_a_stored_address_that_cannot_be_written_fails_that_recipient_only(run, project, sink):
    """A message that cannot be made for one recipient is that recipient's permanent failure
    (no retries, no bounce), and everyone else gets the issue."""
    subscribe("a@example.no", "b@example.no")
    with database(load_settings().database) as conn, conn:  # as an old import might have left it
        conn.execute("UPDATE subscribers SET email = 'ødelagt adresse@example.no' WHERE email = 'b@example.no'")
    result = run("send", "--yes")
    assert result.exit_code == 0, result.output
    assert "1 sent, 1 failed permanently, 0 left for retry" in result.stdout
    assert sink.to() == ["a@example.no"]
    assert rows(project, "SELECT attempts, last_error LIKE '%not a plain e-mail address%' FROM delivery_recipients"
                         " WHERE email LIKE 'ødelagt%'") == [(1, 1)]  # fmt: skip
    assert rows(project, "SELECT status, hard_bounces FROM subscribers WHERE email LIKE 'ødelagt%'") == [
        ("confirmed", 0)
    ]
