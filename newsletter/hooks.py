"""Bounces and complaints from email services, as webhooks that 'serve' answers.

- **Amazon SES through SNS** (``/hooks/ses``): SNS signs every call with RSA (SignatureVersion 1:
  SHA-1, 2: SHA-256) over a string made of the message's fields; it is checked against the
  certificate in ``bounces.sns_certificate`` (downloaded once by the operator from the
  SigningCertURL; nothing is fetched at run time), and the topic must be ``bounces.sns_topic``.
  A SubscriptionConfirmation is logged with its SubscribeURL for the operator to open.
- **Mailgun** (``/hooks/mailgun``): HMAC-SHA256 of timestamp and token with the webhook signing
  key (``NEWSLETTER_BOUNCES_MAILGUN_KEY``).

Either way a call older than ``MAX_AGE`` is refused, and one seen before (SNS MessageId, Mailgun
token) too: ``bounces.record`` remembers it in the same transaction as the report, so a call
answered 503 (a busy database) can come again. What it reports becomes a trusted
``bounces.Report`` (the service is authenticated, so its addresses are believed; the envelope
sender, our VERP address, names the delivery recipient when there is one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from .bounces import COMPLAINT, HARD, NONE, SOFT, Report, read_envelope
from .clock import now
from .config import Settings
from .errors import Refused
from .language import _

MAX_AGE = timedelta(minutes=15)  # Mailgun's advice; SNS retries within minutes too


def _fresh(moment: datetime) -> None:
    if abs(now() - moment) > MAX_AGE:
        raise Refused("too old (or from the future)")


# --- Amazon SES through SNS --------------------------------------------------------------------------

_SNS_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}


def sns_string_to_sign(body: dict[str, Any]) -> bytes:
    """The text SNS signs: 'Name\\nvalue\\n' for each of the type's fields that is present."""
    fields = _SNS_FIELDS.get(str(body.get("Type")))
    if fields is None:
        raise Refused(f"unknown SNS message type {body.get('Type')!r}")
    return "".join(f"{name}\n{body[name]}\n" for name in fields if name in body and body[name] is not None).encode()


def verify_sns(settings: Settings, body: dict[str, Any]) -> None:
    """Refuse (Refused) an SNS call not signed with the configured certificate, for another topic, or too old."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if not settings.bounces_sns_certificate or not settings.bounces_sns_topic:
        raise Refused("bounces.sns_certificate and bounces.sns_topic are not set")
    if body.get("TopicArn") != settings.bounces_sns_topic:
        raise Refused(f"another topic ({body.get('TopicArn')!r})")
    version = str(body.get("SignatureVersion"))
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if algorithm is None or not body.get("Signature"):
        raise Refused("not signed")
    try:
        certificate = x509.load_pem_x509_certificate(settings.bounces_sns_certificate.read_bytes())
        certificate.public_key().verify(  # type: ignore[union-attr,call-arg]
            base64.b64decode(str(body["Signature"])), sns_string_to_sign(body), padding.PKCS1v15(), algorithm
        )
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise Refused(f"bad signature ({type(exc).__name__})") from None
    try:
        sent = datetime.fromisoformat(str(body.get("Timestamp")).replace("Z", "+00:00"))
    except ValueError:
        raise Refused("no timestamp") from None
    _fresh(sent)


def ses_report(settings: Settings, body: dict[str, Any]) -> tuple[Report, str, str]:
    """A verified SNS call as (report, key, replay key). A subscription confirmation is a report
    of kind none with detail 'subscribe' (the caller logs its SubscribeURL); so is a notification
    that is not a bounce or complaint."""
    verify_sns(settings, body)
    replay = f"sns:{body.get('MessageId')}"
    if body.get("Type") != "Notification":
        return Report(NONE, detail="subscribe" if body.get("Type") == "SubscriptionConfirmation" else ""), "", replay
    try:
        message = json.loads(str(body.get("Message")))
    except json.JSONDecodeError:
        raise Refused("the SES message is not JSON") from None
    kind = str(message.get("notificationType") or message.get("eventType") or "")
    mail = message.get("mail") or {}
    verp = read_envelope(settings, str(mail.get("source", "")))
    if kind == "Bounce":
        bounce = message.get("bounce") or {}
        recipients = bounce.get("bouncedRecipients") or []
        hard = bounce.get("bounceType") == "Permanent"
        first = recipients[0] if recipients else {}
        return Report(HARD if hard else SOFT, tuple(str(r.get("emailAddress", "")).lower() for r in recipients),
                      str(first.get("status", "")), verp, None,
                      " ".join(str(first.get("diagnosticCode", "")).split())[:300], trusted=True), f"ses:{mail.get('messageId')}:{kind}", replay  # fmt: skip
    if kind == "Complaint":
        complaint = message.get("complaint") or {}
        recipients = complaint.get("complainedRecipients") or []
        return Report(COMPLAINT, tuple(str(r.get("emailAddress", "")).lower() for r in recipients), "", verp, None,
                      str(complaint.get("complaintFeedbackType") or "abuse"), trusted=True), f"ses:{mail.get('messageId')}:{kind}", replay  # fmt: skip
    return Report(NONE), "", replay


# --- Mailgun ----------------------------------------------------------------------------------------


def mailgun_report(settings: Settings, body: dict[str, Any]) -> tuple[Report, str, str]:
    """A Mailgun event as (report, key, replay key), after checking its signature and age.
    Mailgun signs the timestamp and token, not the event: a signature is good once, within
    MAX_AGE (the replay key is its token)."""
    if not settings.bounces_mailgun_key:
        raise Refused("NEWSLETTER_BOUNCES_MAILGUN_KEY is not set")
    signed = body.get("signature")
    if not isinstance(signed, dict):
        raise Refused("not signed")
    stamp, token, signature = (str(signed.get(k, "")) for k in ("timestamp", "token", "signature"))
    expected = hmac.new(settings.bounces_mailgun_key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    if not (stamp and token and hmac.compare_digest(expected.encode(), signature.encode())):
        raise Refused("bad signature")
    try:
        _fresh(datetime.fromtimestamp(int(float(stamp)), UTC))
    except (ValueError, OverflowError):
        raise Refused("no timestamp") from None
    replay = f"mailgun:{token}"
    event = body.get("event-data")
    if not isinstance(event, dict):
        raise Refused("no event data")
    name = str(event.get("event", ""))
    envelope = event.get("envelope") or {}
    verp = read_envelope(settings, str(envelope.get("sender", "")))
    recipient = (str(event.get("recipient", "")).lower(),)
    key = f"mailgun:{event.get('id') or token}"
    if name == "complained":
        return Report(COMPLAINT, recipient, "", verp, None, "abuse", trusted=True), key, replay
    if name == "failed":
        status = event.get("delivery-status") or {}
        hard = event.get("severity") == "permanent"
        detail = " ".join(str(status.get("description") or status.get("message") or "").split())[:300]
        return Report(HARD if hard else SOFT, recipient, str(status.get("code", "")), verp, None, detail,
                      trusted=True), key, replay  # fmt: skip
    return Report(NONE), key, replay


def refused_line(exc: Refused) -> str:
    """For the operator's log."""
    return _("webhook call refused: {reason}", reason=exc)
