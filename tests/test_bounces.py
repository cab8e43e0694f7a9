"""Bounces and complaints that arrive after the SMTP conversation: the VERP envelope sender,
reading real-world reports (tests/data/bounces: flufl.bounce's corpus and today's formats), the
policy, and 'bounces fetch' from a real Maildir, killed halfway and run again."""

from __future__ import annotations

import mailbox
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SAMPLE_ISSUE, assert_error, rows, subscribe

from newsletter import bounces
from newsletter.config import load_settings
from newsletter.store import database

DATA = Path(__file__).parent / "data" / "bounces"
KEY = "b" * 40

CORPUS = [
    # (file, kind, addresses)
    ("postfix_01.txt", "hard", ("xxxxx@local.ie",)),
    ("postfix_05.txt", "hard", ("userx@example.net",)),
    ("exim_01.txt", "hard", ("userx@its.example.nl",)),
    ("microsoft_01.txt", "hard", ("userx@example.com",)),
    ("microsoft_02.txt", "hard", ("userx@example.com",)),
    ("yahoo_01.txt", "hard", ("userx@example.com",)),
    ("yahoo_05.txt", "hard", ("userx@example.com", "usery@example.com")),
    ("qmail_01.txt", "hard", ("userx@example.de",)),
    ("sendmail_01.txt", "hard", ("zzzzz@nfg.nl", "zzzzz@shaft.coal.nl")),
    ("smtp32_01.txt", "hard", ("userx@example.ph",)),
    ("hotpop_01.txt", "hard", ("userx@example.com",)),
    ("dsn_01.txt", "hard", ("userx@example.com",)),
    ("dsn_05.txt", "soft", ("userx@example.cz",)),
    ("dsn_06.txt", "soft", ("userx@example.com",)),
    ("dsn_17.txt", "soft", ("userx@example.fi",)),
    ("simple_03.txt", "soft", ("userx@example.za",)),
    ("gmail_hard.eml", "hard", ("ukjent.person@gmail.com",)),
    ("office365_hard.eml", "hard", ("fratradt@lillestrom.kommune.no",)),
    ("postfix_delayed.eml", "soft", ("full.innboks@nittedal.kommune.no",)),
    ("yahoo_arf.eml", "complaint", ("klager@yahoo.no",)),
    ("autoreply.eml", "none", ()),
    ("unrelated.eml", "none", ()),
    ("dumbass_01.txt", "none", ()),
]


@pytest.fixture
def keyed(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_BOUNCES_ADDRESS", "bounce@nyhetsbrev.osloregionen.no")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILBOX", str(project / "bounces"))
    mailbox.Maildir(project / "bounces", create=True)
    return project


@pytest.mark.parametrize(("name", "kind", "addresses"), CORPUS)
def test_real_reports_are_read_as_what_they_are(keyed, name, kind, addresses):
    report = bounces.classify((DATA / name).read_bytes(), load_settings())
    assert report.kind == kind, report
    assert tuple(sorted(report.addresses)) == tuple(sorted(addresses)), report


def test_the_dsn_status_and_the_returned_unsubscribe_link_are_kept(keyed):
    settings = load_settings()
    gmail = bounces.classify((DATA / "gmail_hard.eml").read_bytes(), settings)
    assert gmail.status == "5.1.1" and "does not exist" in gmail.detail
    assert gmail.verp is None  # its VERP address carries a forged signature: not believed
    delayed = bounces.classify((DATA / "postfix_delayed.eml").read_bytes(), settings)
    assert delayed.status == "4.2.2"
    assert bounces.classify((DATA / "yahoo_arf.eml").read_bytes(), settings).token == "TOKEN"


def test_the_envelope_sender_names_one_recipient_and_cannot_be_forged(keyed):
    settings = load_settings()
    address = bounces.envelope_sender(settings, 12, 345)
    assert re.fullmatch(r"bounce\+d12s345-[0-9a-f]{12}@nyhetsbrev\.osloregionen\.no", address)
    assert bounces.read_envelope(settings, f"To: <{address.upper()}>") == (12, 345)  # a server may change the case
    forged = address.replace("s345", "s346")
    assert bounces.read_envelope(settings, forged) is None


def _report(template: str, envelope: str, address: str) -> bytes:
    """A Gmail-style hard bounce for ``address``, delivered to the VERP ``envelope`` sender."""
    text = (DATA / template).read_text(encoding="utf-8")
    text = text.replace("bounce+d7s3-0123456789ab@nyhetsbrev.osloregionen.no", envelope)
    return text.replace("ukjent.person@gmail.com", address).encode()


def test_the_policy(keyed, monkeypatch):
    settings = load_settings()
    ids = subscribe("hard@example.no", "soft@example.no", "klager@yahoo.no", "glad@example.no")
    with database(settings.database) as conn:
        # with VERP on, a report that names people only by address is not believed (the bounce
        # address is public: anyone could mail one); a service's authenticated webhook is
        forged = bounces.Report("hard", ("hard@example.no",), "5.1.1")
        assert bounces.record(conn, settings, forged, "forged") == 0
        hard = bounces.Report("hard", ("hard@example.no",), "5.1.1", trusted=True)
        assert bounces.record(conn, settings, hard, "k1") == 1
        assert bounces.record(conn, settings, hard, "k1") is None  # the same report again: nothing
        for n in range(2):
            bounces.record(conn, settings, bounces.Report("soft", ("soft@example.no",), "4.2.2", trusted=True), f"s{n}")
        statuses = dict(rows(keyed, "SELECT email, status FROM subscribers"))
        assert statuses["hard@example.no"] == "bounced" and statuses["soft@example.no"] == "confirmed"
        bounces.record(conn, settings, bounces.Report("soft", ("soft@example.no",), "4.2.2", trusted=True), "s2")
        complaint = bounces.classify((DATA / "yahoo_arf.eml").read_bytes(), settings)
        assert bounces.record(conn, settings, complaint, "c0") == 0  # its link is no signed token: not believed
        bounces.record(conn, settings, replace(complaint, trusted=True), "c1")
    statuses = dict(rows(keyed, "SELECT email, status FROM subscribers"))
    assert statuses == {"hard@example.no": "bounced", "soft@example.no": "bounced",
                        "klager@yahoo.no": "unsubscribed", "glad@example.no": "confirmed"}  # fmt: skip
    assert rows(keyed, "SELECT COUNT(*) FROM subscriber_events WHERE subscriber = ?", ids[1]) == [(3,)]


def test_a_send_whose_recipients_bounce_later(run, keyed, sink, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_BOUNCES_ADDRESS", "bounce@nyhetsbrev.osloregionen.no")
    people = ["a@example.no", "b@example.no", "c@example.no", "d@example.no"]
    subscribe(*people)
    assert run("send", "--yes").exit_code == 0
    senders = {rcpts[0]: mail_from for mail_from, rcpts, _utf8 in sink.envelopes}
    assert len(set(senders.values())) == 4 and all(s.startswith("bounce+d") for s in senders.values())
    assert all(b"From: Osloregionen <nyhetsbrev@osloregionen.no>" in m for m in sink.messages)  # From unchanged
    box = mailbox.Maildir(keyed / "bounces")
    for address in ("b@example.no", "d@example.no"):  # accepted, then bounced by the receiving server
        box.add(_report("gmail_hard.eml", senders[address], "renamed@elsewhere.example"))
    box.add(_report("gmail_hard.eml", "bounce@nyhetsbrev.osloregionen.no", "c@example.no"))  # no VERP: not believed
    box.add((DATA / "unrelated.eml").read_bytes())
    fetched = run("bounces", "fetch")
    assert fetched.exit_code == 0, fetched.output
    assert "3 hard" in fetched.stdout and "1 left" in fetched.stdout
    assert dict(rows(keyed, "SELECT email, status FROM subscribers")) == {
        "a@example.no": "confirmed",
        "b@example.no": "bounced",
        "c@example.no": "confirmed",
        "d@example.no": "bounced",
    }
    assert len(box) == 1  # the unrelated message stays; the reports went to newsletter-done
    assert len(box.get_folder("newsletter-done")) == 3
    again = run("bounces", "fetch").stdout  # nothing new, nothing counted again
    assert "Read 1 message(s): 0 hard, 0 soft, 0 complaint(s)" in again and "1 left" in again
    assert rows(keyed, "SELECT COUNT(*), COUNT(DISTINCT delivery) FROM subscriber_events") == [(2, 1)]
    listed = run("bounces", "list").stdout
    assert "b@example.no" in listed and SAMPLE_ISSUE in listed and "5.1.1" in listed
    shown = run("subscribers", "show", "b@example.no").stdout
    assert '"kind": "hard"' in shown
    status = run("status").stdout
    assert "bounced later: 2" in status
    # the next send leaves them out
    from newsletter.subscribers import Segment, recipients

    with database(load_settings().database) as conn:
        assert [email for _id, email in recipients(conn, Segment())] == ["a@example.no", "c@example.no"]
    assert run("subscribers", "forget", "b@example.no", "--yes").exit_code == 0
    assert rows(keyed, "SELECT COUNT(*) FROM subscriber_events") == [(1,)]  # forgotten with the person


def test_fetch_killed_halfway_and_run_again_loses_and_doubles_nothing(keyed):
    count = 120
    ids = subscribe(*(f"p{n}@example.no" for n in range(count)))
    settings = load_settings()
    box = mailbox.Maildir(keyed / "bounces")
    for n, subscriber in enumerate(ids):
        box.add(_report("gmail_hard.eml", bounces.envelope_sender(settings, 1, subscriber), f"p{n}@example.no"))
    env = {**os.environ, "NEWSLETTER_LANG": "en"}
    killed = 0
    for _attempt in range(3):  # kill it while it works, more than once
        process = subprocess.Popen([sys.executable, "-m", "newsletter", "bounces", "fetch"], cwd=keyed, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        done = keyed / "bounces" / ".newsletter-done"
        while time.monotonic() < deadline and process.poll() is None:
            if (done / "new").is_dir() and sum(1 for _ in (done / "new").iterdir()) > (_attempt + 1) * 10:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        process.wait()
        killed += process.returncode == -signal.SIGKILL and len(mailbox.Maildir(keyed / "bounces")) > 0
    assert killed >= 1  # it really was stopped halfway
    final = subprocess.run([sys.executable, "-m", "newsletter", "bounces", "fetch"], cwd=keyed, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert final.returncode == 0, final.stderr
    assert rows(keyed, "SELECT COUNT(*) FROM bounce_reports") == [(count,)]
    assert rows(keyed, "SELECT COUNT(*), COUNT(DISTINCT subscriber) FROM subscriber_events") == [(count, count)]
    assert rows(keyed, "SELECT COUNT(*) FROM subscribers WHERE status = 'bounced'") == [(count,)]
    assert len(mailbox.Maildir(keyed / "bounces")) == 0


def test_without_a_mailbox_it_says_what_to_set(run, project):
    assert_error(run("bounces", "fetch"), "bounces.mailbox is not set", "NEWSLETTER_BOUNCES_MAILBOX=")


# --- IMAP and POP3 (Debian's dovecot, started here in a temporary folder) ------------------------

DOVECOT_CONF = """
protocols = imap pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
auth_mechanisms = plain
disable_plaintext_auth = yes
mail_location = maildir:{root}/home/%u/Maildir
first_valid_uid = 1
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
"""


@pytest.fixture
def dovecot(request, tmp_path):
    """A real IMAP and POP3 server with TLS (a self-signed certificate), user 'bounce'. A
    parameter (indirect) is the IMAP capabilities it names after login: a server without MOVE."""
    import shutil
    import socket

    from conftest import free_port, self_signed

    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(binary).exists():
        message = "dovecot not found: install it with 'apt-get install dovecot-imapd dovecot-pop3d'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import tempfile

    # In a folder of its own under /tmp: dovecot's auth process (another user) must reach it,
    # and pytest's own temporary folders are private to this user.
    root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    for name in ("run", "state", "home"):
        (root / name).mkdir(parents=True)
    self_signed(root / "cert.pem", root / "key.pem")
    (root / "users").write_text("bounce:{PLAIN}postkasse-passord::::::\n")
    uid, gid = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    root.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(root / "home", uid, gid)
    ports = {"imaps": free_port(), "pop3s": free_port()}
    conf = DOVECOT_CONF.format(root=root, uid=uid, gid=gid, **ports)
    if os.geteuid() != 0:  # not root: every dovecot process runs as this user
        import pwd

        me = pwd.getpwuid(os.getuid()).pw_name
        conf += f"default_internal_user = {me}\ndefault_login_user = {me}\n"
    if getattr(request, "param", None):
        conf += f"imap_capability = {request.param}\n"
    (root / "dovecot.conf").write_text(conf)
    process = subprocess.Popen([binary, "-F", "-c", str(root / "dovecot.conf")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", ports["imaps"]), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"dovecot did not start: {process.stderr.read()!r}") from None
            time.sleep(0.05)
    yield {"root": root, "ca": root / "cert.pem", "param": getattr(request, "param", None), **ports}
    process.terminate()
    process.wait(10)
    shutil.rmtree(root, ignore_errors=True)


def _imap(dovecot):
    import imaplib
    import ssl

    client = imaplib.IMAP4_SSL("127.0.0.1", dovecot["imaps"],
                               ssl_context=ssl.create_default_context(cafile=str(dovecot["ca"])))  # fmt: skip
    client.login("bounce", "postkasse-passord")
    return client


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
def test_fetch_over_imap_and_pop3(run, keyed, dovecot, monkeypatch, scheme):
    _a, b = subscribe("a@example.no", "b@example.no")
    port = dovecot[scheme]
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILBOX", f"{scheme}://bounce@127.0.0.1:{port}/INBOX")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_PASSWORD", "postkasse-passord")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_CA_FILE", str(dovecot["ca"]))
    client = _imap(dovecot)
    settings = load_settings()
    client.append(
        "INBOX", None, None, _report("gmail_hard.eml", bounces.envelope_sender(settings, 1, b), "b@example.no")
    )
    client.append("INBOX", None, None, (DATA / "unrelated.eml").read_bytes())
    client.append("INBOX", None, None, (DATA / "autoreply.eml").read_bytes())
    client.logout()
    fetched = run("bounces", "fetch")
    assert fetched.exit_code == 0, fetched.output
    assert "Read 3 message(s): 1 hard" in fetched.stdout and "2 left" in fetched.stdout
    assert dict(rows(keyed, "SELECT email, status FROM subscribers")) == {
        "a@example.no": "confirmed",
        "b@example.no": "bounced",
    }
    client = _imap(dovecot)
    assert client.select("INBOX")[1] == [b"2"]  # the report left the inbox; the others stayed
    if scheme == "imaps":
        assert client.select("newsletter-done")[1] == [b"1"]
    client.logout()
    again = run("bounces", "fetch")
    assert "Read 2 message(s): 0 hard" in again.stdout
    assert rows(keyed, "SELECT COUNT(*) FROM subscriber_events") == [(1,)]
    # a wrong password is one line that names the settings
    monkeypatch.setenv("NEWSLETTER_BOUNCES_PASSWORD", "feil")
    assert_error(run("bounces", "fetch"), "cannot read the bounce mailbox at 127.0.0.1", "NEWSLETTER_BOUNCES_PASSWORD")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILBOX", f"imap://bounce@127.0.0.1:{port}/INBOX")
    assert_error(run("bounces", "fetch"), "only imaps:// and pop3s://")


PLAIN_IMAP = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"


@pytest.mark.parametrize(
    "dovecot", [None, f"{PLAIN_IMAP} UIDPLUS", PLAIN_IMAP], indirect=True, ids=["move", "uidplus", "neither"]
)
def test_handled_reports_leave_the_inbox_and_what_people_deleted_is_left_alone(run, keyed, dovecot, monkeypatch):
    """MOVE where the server offers it (it names it only after the login); otherwise a copy, and
    only that message removed (UIDPLUS), or left marked as deleted. A message a person marked as
    deleted in their mail program is neither read nor removed by us."""
    _a, b = subscribe("a@example.no", "b@example.no")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILBOX", f"imaps://bounce@127.0.0.1:{dovecot['imaps']}/INBOX")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_PASSWORD", "postkasse-passord")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_CA_FILE", str(dovecot["ca"]))
    settings = load_settings()
    client = _imap(dovecot)
    client.append(
        "INBOX", None, None, _report("gmail_hard.eml", bounces.envelope_sender(settings, 1, b), "b@example.no")
    )
    client.append("INBOX", "(\\Deleted)", None, _report("gmail_hard.eml", "someone@example.no", "x@example.no"))
    client.append("INBOX", None, None, (DATA / "unrelated.eml").read_bytes())
    client.logout()
    fetched = run("bounces", "fetch")
    assert fetched.exit_code == 0, fetched.output
    assert "Read 2 message(s): 1 hard" in fetched.stdout, fetched.stdout  # the person's deleted one is not read
    assert rows(keyed, "SELECT email, status FROM subscribers WHERE status = 'bounced'") == [
        ("b@example.no", "bounced")
    ]
    client = _imap(dovecot)
    client.select("INBOX")
    flagged = client.uid("SEARCH", None, "DELETED")[1][0].split()
    kept = client.uid("SEARCH", None, "UNDELETED")[1][0].split()
    done = client.select("newsletter-done")[1] == [b"1"]
    client.logout()
    assert done and len(kept) == 1  # the report handled; the unrelated message left for people
    assert len(flagged) == (2 if dovecot.get("param") == PLAIN_IMAP else 1)  # the person's own stays
    again = run("bounces", "fetch")
    assert "Read 1 message(s): 0 hard" in again.stdout, again.stdout
    assert rows(keyed, "SELECT COUNT(*) FROM subscriber_events") == [(1,)]


def test_a_report_that_cannot_be_moved_away_is_an_error_not_a_silent_loop(run, keyed, dovecot, monkeypatch):
    """Left in the inbox, a handled report would be read again at every run without a word."""
    _a, b = subscribe("a@example.no", "b@example.no")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILBOX", f"imaps://bounce@127.0.0.1:{dovecot['imaps']}/INBOX")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_PASSWORD", "postkasse-passord")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_CA_FILE", str(dovecot["ca"]))
    client = _imap(dovecot)
    client.append(
        "INBOX", None, None, _report("gmail_hard.eml", bounces.envelope_sender(load_settings(), 1, b), "b@example.no")
    )
    client.logout()
    maildir = dovecot["root"] / "home" / "bounce" / "Maildir"
    (maildir / ".newsletter-done").write_text("not a folder")  # the server cannot make the folder
    fetched = run("bounces", "fetch")
    assert_error(fetched, "does not let handled reports be moved to the folder newsletter-done", "create that folder")
    assert rows(keyed, "SELECT status FROM subscribers WHERE email = 'b@example.no'") == [("bounced",)]  # kept


def test_confirmation_mails_carry_a_verp_sender_too(keyed, sink, monkeypatch):
    import httpx
    from conftest import LiveServer, solved

    from newsletter.web import create_app

    monkeypatch.setenv("NEWSLETTER_BOUNCES_ADDRESS", "bounce@nyhetsbrev.osloregionen.no")
    monkeypatch.setenv("NEWSLETTER_WEB_CHALLENGE_WORK", "20")
    settings = load_settings()
    with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url) as client:
        page = client.get("/signup").text
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        answer = client.post("/signup", data={"csrf": token, "email": "ny@example.no", "altcha": solved(client)})
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while not sink.envelopes and time.monotonic() < deadline:
            time.sleep(0.05)
    (mail_from, rcpts, _utf8), *_ = sink.envelopes
    (subscriber,) = rows(keyed, "SELECT id FROM subscribers WHERE email = 'ny@example.no'")[0]
    assert rcpts == ("ny@example.no",) and bounces.read_envelope(settings, mail_from) == (0, subscriber)
