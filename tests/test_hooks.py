"""Bounces and complaints from email services as webhooks: Amazon SES through SNS (RSA
signatures checked against the configured certificate) and Mailgun (HMAC), through a real
'serve' on loopback. Unsigned, badly signed, stale and replayed calls are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import LiveServer, rows, self_signed, subscribe

from newsletter import bounces
from newsletter.config import load_settings
from newsletter.hooks import sns_string_to_sign
from newsletter.web import create_app

KEY = "h" * 40
TOPIC = "arn:aws:sns:eu-north-1:123456789012:nyhetsbrev-bounces"
MAILGUN_KEY = "key-mailgun-signing-0123456789"


@pytest.fixture
def hooked(project, monkeypatch, tmp_path):
    """serve, with SES (through SNS) and Mailgun set up; the SNS signing key is ours."""
    from cryptography.hazmat.primitives import serialization

    cert, key = tmp_path / "sns.pem", tmp_path / "sns-key.pem"
    self_signed(cert, key)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    monkeypatch.setenv("NEWSLETTER_BOUNCES_ADDRESS", "bounce@nyhetsbrev.osloregionen.no")
    monkeypatch.setenv("NEWSLETTER_BOUNCES_SNS_CERTIFICATE", str(cert))
    monkeypatch.setenv("NEWSLETTER_BOUNCES_SNS_TOPIC", TOPIC)
    monkeypatch.setenv("NEWSLETTER_BOUNCES_MAILGUN_KEY", MAILGUN_KEY)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    with LiveServer(create_app(load_settings())) as live:
        yield live, private


def sns(private, message: dict, *, version: str = "2", when: datetime | None = None, **extra) -> dict:
    """An SNS Notification carrying an SES event, signed as SNS signs it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    body = {
        "Type": "Notification", "MessageId": extra.pop("MessageId", f"m-{time.monotonic_ns()}"), "TopicArn": TOPIC,
        "Message": json.dumps(message), "Timestamp": (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": version, "SigningCertURL": "https://sns.eu-north-1.amazonaws.com/cert.pem", **extra,
    }  # fmt: skip
    algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()
    body["Signature"] = base64.b64encode(private.sign(sns_string_to_sign(body), padding.PKCS1v15(), algorithm)).decode()
    return body


def ses_bounce(source: str, address: str, kind: str = "Permanent") -> dict:
    return {
        "notificationType": "Bounce",
        "bounce": {"bounceType": kind, "bouncedRecipients": [{"emailAddress": address, "status": "5.1.1",
                                                              "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"source": source, "messageId": f"ses-{address}"},
    }  # fmt: skip


def mailgun(event: dict, *, token: str | None = None, when: float | None = None, key: str = MAILGUN_KEY) -> dict:
    stamp = str(int(when or time.time()))
    token = token or f"t{time.monotonic_ns()}"
    signature = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event}


def test_ses_through_sns(hooked, project):
    live, private = hooked
    ids = subscribe("a@example.no", "b@example.no", "c@example.no")
    settings = load_settings()
    verp = bounces.envelope_sender(settings, 1, ids[0])
    with httpx.Client(base_url=live.url) as client:
        ok = client.post("/hooks/ses", json=sns(private, ses_bounce(verp, "renamed@elsewhere.example")))
        assert ok.status_code == 200, ok.text
        sha1 = sns(private, ses_bounce("bounce@nyhetsbrev.osloregionen.no", "b@example.no"), version="1")
        assert client.post("/hooks/ses", json=sha1).status_code == 200
        assert client.post("/hooks/ses", json=sha1).status_code == 403  # the same call again
        complaint = {"notificationType": "Complaint", "mail": {"source": "x", "messageId": "c1"},
                     "complaint": {"complainedRecipients": [{"emailAddress": "c@example.no"}]}}  # fmt: skip
        assert client.post("/hooks/ses", json=sns(private, complaint)).status_code == 200
        # refused: a changed message, no signature, another topic, a stale call
        forged = sns(private, ses_bounce("x", "c@example.no"))
        forged["Message"] = forged["Message"].replace("c@example.no", "a@example.no")
        unsigned = {k: v for k, v in sns(private, ses_bounce("x", "c@example.no")).items() if k != "Signature"}
        other = sns(private, ses_bounce("x", "c@example.no"), TopicArn="arn:aws:sns:eu-north-1:1:annet")
        stale = sns(private, ses_bounce("x", "c@example.no"), when=datetime.now(UTC) - timedelta(hours=1))
        for bad in (forged, unsigned, other, stale):
            assert client.post("/hooks/ses", json=bad).status_code == 403
        assert client.post("/hooks/ses", content=b"not json").status_code == 400
    assert dict(rows(project, "SELECT email, status FROM subscribers")) == {
        "a@example.no": "bounced", "b@example.no": "bounced", "c@example.no": "unsubscribed"}  # fmt: skip
    assert rows(project, "SELECT delivery FROM subscriber_events WHERE subscriber = ?", ids[0]) == [(1,)]


def test_mailgun(hooked, project):
    live, _private = hooked
    subscribe("a@example.no", "b@example.no")
    failed = {"event": "failed", "severity": "permanent", "recipient": "a@example.no", "id": "e1",
              "delivery-status": {"code": 550, "description": "No such user"}}  # fmt: skip
    with httpx.Client(base_url=live.url) as client:
        call = mailgun(failed, token="tok-1")
        assert client.post("/hooks/mailgun", json=call).status_code == 200
        assert client.post("/hooks/mailgun", json=call).status_code == 403  # replayed
        temporary = {**failed, "severity": "temporary", "recipient": "b@example.no", "id": "e2"}
        assert client.post("/hooks/mailgun", json=mailgun(temporary)).status_code == 200
        for bad in (mailgun(failed, key="feil"), mailgun(failed, when=time.time() - 3600),
                    {"event-data": failed}):  # fmt: skip
            assert client.post("/hooks/mailgun", json=bad).status_code == 403
    assert dict(rows(project, "SELECT email, status FROM subscribers")) == {
        "a@example.no": "bounced", "b@example.no": "confirmed"}  # fmt: skip
    assert rows(project, "SELECT kind FROM subscriber_events ORDER BY id") == [("hard",), ("soft",)]


def test_without_settings_the_hooks_refuse(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    with LiveServer(create_app(load_settings())) as live:
        assert httpx.post(live.url + "/hooks/ses", json={"Type": "Notification"}).status_code == 403
        assert httpx.post(live.url + "/hooks/mailgun", json={}).status_code == 403


def test_a_call_refused_while_the_database_was_busy_can_come_again(hooked, project, monkeypatch):
    import sqlite3

    import newsletter.store as store

    live, _private = hooked
    subscribe("a@example.no")
    monkeypatch.setattr(store, "BUSY_SECONDS", 0.5)
    call = mailgun({"event": "failed", "severity": "permanent", "recipient": "a@example.no", "id": "e9"}, token="busy")
    held = sqlite3.connect(project / "newsletter.db", isolation_level=None)
    held.execute("BEGIN IMMEDIATE")  # another program writing
    try:
        assert httpx.post(live.url + "/hooks/mailgun", json=call).status_code == 503
    finally:
        held.execute("ROLLBACK")
        held.close()
    assert httpx.post(live.url + "/hooks/mailgun", json=call).status_code == 200  # Mailgun's retry is taken
    assert rows(project, "SELECT status FROM subscribers") == [("bounced",)]
    odd = {"signature": {"timestamp": "1", "token": "x", "signature": "æøå"}, "event-data": {}}
    assert httpx.post(live.url + "/hooks/mailgun", json=odd).status_code == 403  # not a 500
    assert httpx.post(live.url + "/hooks/mailgun", json={"signature": "tekst"}).status_code == 403


def test_one_dsn_with_a_failed_and_a_delayed_recipient(project, monkeypatch):
    from newsletter.store import database

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)
    subscribe("x@example.no", "y@example.no")
    dsn = (
        b"From: MAILER-DAEMON@relay.example\r\nTo: bounce@nyhetsbrev.osloregionen.no\r\nSubject: Undelivered\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; relay.example\r\n\r\n"
        b"Final-Recipient: rfc822; x@example.no\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"Final-Recipient: rfc822; y@example.no\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\n--b--\r\n"
    )
    settings = load_settings()
    report = bounces.classify(dsn, settings)
    assert report.kind == "hard" and dict(report.kinds) == {"x@example.no": "hard", "y@example.no": "soft"}
    with database(settings.database) as conn:  # no bounces.address here: addresses are believed
        bounces.record(conn, settings, report, "mixed")
    assert dict(rows(project, "SELECT email, status FROM subscribers")) == {
        "x@example.no": "bounced", "y@example.no": "confirmed"}  # fmt: skip
    assert rows(project, "SELECT kind FROM subscriber_events ORDER BY subscriber") == [("hard",), ("soft",)]


def test_bounce_addresses_of_sends_before_a_key_rotation_still_count(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_BOUNCES_ADDRESS", "bounce@nyhetsbrev.osloregionen.no")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "o" * 40)
    old = bounces.envelope_sender(load_settings(), 4, 7)
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "n" * 40)
    monkeypatch.setenv("NEWSLETTER_OLD_SECRET_KEYS", "o" * 40)
    assert bounces.read_envelope(load_settings(), old) == (4, 7)
    monkeypatch.delenv("NEWSLETTER_OLD_SECRET_KEYS")
    assert bounces.read_envelope(load_settings(), old) is None
