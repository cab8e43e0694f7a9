"""The MIME message for one recipient, and its headers.

One message per recipient, built from the issue's compiled skeletons (MJML is never
compiled again here). Subject and names with æøå are RFC 2047-encoded by the email
package; names are stripped of control characters so they cannot add headers.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

from .addresses import check_address
from .compose import Recipient, clean_name, recipient_values
from .config import Settings
from .errors import NewsletterError
from .language import _
from .render import RenderedIssue

if TYPE_CHECKING:
    from . import signing  # imported where a message is signed: a build never needs it


def _address(name: str, email: str) -> Address:
    local, _at, domain = check_address(email).rpartition("@")
    return Address(display_name=clean_name(name), username=local, domain=domain)


_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def _q(char: str) -> str:
    """One character in RFC 2047 Q encoding, safe in a display name as well as in a subject."""
    if char == " ":
        return "_"
    if char.isascii() and (char.isalnum() or char in "!*+-/"):
        return char
    return "".join(f"={byte:02X}" for byte in char.encode("utf-8"))


def _encoded_words(text: str, first: int = 75) -> list[str]:
    """RFC 2047 encoded words (Q encoding, UTF-8) of at most 75 characters (``first`` for the
    first one, to fit after the header's name) for ``text``. Long text is split after a space
    where it can be (the space stays inside, since decoders drop the space between two encoded
    words), else between characters."""
    room = first - len("=?utf-8?q??=")
    chunks, chunk = [], ""
    for word in text.split(" "):
        piece = (" " if chunk else "") + word
        if chunk and len("".join(map(_q, chunk + piece))) > room:
            chunks.append(chunk + " ")
            chunk, piece, room = "", word, 75 - len("=?utf-8?q??=")
        for char in piece:
            if len("".join(map(_q, chunk + char))) > room:
                chunks.append(chunk)
                chunk, room = "", 75 - len("=?utf-8?q??=")
            chunk += char
    chunks.append(chunk)
    return [f"=?utf-8?q?{''.join(map(_q, c))}?=" for c in chunks if c]


def _words(text: str, specials: bool, first: int = 75) -> list[str]:
    """Header words: plain ASCII words as they are, each run of other words (æøå, text that
    merely looks like an encoded word, and with ``specials`` quotes, commas and parentheses) as
    encoded words, so a mail program shows the text as written."""
    tokens: list[str] = []
    run: list[str] = []
    for word in text.split(" "):
        if word.isascii() and "=?" not in word and not (specials and _SPECIALS.search(word)):
            if run:
                tokens += _encoded_words(" ".join(run), first if not tokens else 75)
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens += _encoded_words(" ".join(run), first if not tokens else 75)
    return tokens


def _phrase(name: str) -> list[str]:
    """A display name as header words; an all-ASCII name is one quoted string when it needs one,
    as email.utils.formataddr writes it."""
    if name.isascii() and "=?" not in name:
        if _SPECIALS.search(name):
            name = '"' + re.sub(r'[\\"]', lambda m: "\\" + m.group(0), name) + '"'
        return name.split(" ")
    return _words(name, specials=True, first=78 - len("To: "))


def _fold(tokens: list[str], first: int) -> str:
    """Words joined by spaces, folded (CRLF + space) so that no line passes 78 characters where
    it can be helped; ``first``: the length of 'Name:' before them."""
    lines, line = [], ""
    for token in tokens:
        if line and first + len(line) + 1 + len(token) > 78:
            lines.append(line)
            line, first = "", 0
        line += " " + token
    lines.append(line)
    return "\r\n".join(lines)


def to_header(name: str, address: str) -> bytes:
    """The To header line (CRLF-terminated, folded at 78) for a display name and an address.

    Written here rather than by the email package, whose folding drops the quotes of a long
    name with commas and cannot carry æøå before the @. The address goes as given (ASCII, or
    UTF-8 for a server that offers SMTPUTF8)."""
    name = clean_name(name)
    tokens = [*(_phrase(name) if name else ()), f"<{address}>" if name else address]
    return f"To:{_fold(tokens, 3)}\r\n".encode()


def subject_value(subject: str) -> str:
    """The Subject header's value, encoded and folded here: the email package decodes text that
    merely looks like an encoded word ('=?utf-8?q?...?=') instead of showing it as written.
    Set it with ``Message.set_raw`` (lines within 78 characters are not refolded)."""
    return _fold(_words(clean_name(subject), specials=False, first=78 - len("Subject: ")), len("Subject:"))[1:]


def list_headers(msg: EmailMessage, settings: Settings, unsubscribe_url: str) -> None:
    """List-Id and one-click List-Unsubscribe (RFC 2369, RFC 8058), as every list email has."""
    msg["List-Id"] = f"{clean_name(settings.name)} <{settings.list_id}>"
    unsubscribe = [f"<{unsubscribe_url}>"]
    if settings.unsubscribe_mailto:
        unsubscribe.append(f"<mailto:{settings.unsubscribe_mailto}?subject=unsubscribe>")
    msg["List-Unsubscribe"] = ", ".join(unsubscribe)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"


def build_message(
    settings: Settings,
    rendered: RenderedIssue,
    recipient: Recipient,
    strings: dict[str, str],
    *,
    subject_prefix: str = "",
    now: datetime | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """A complete multipart/alternative message (text first, then HTML) for one recipient."""
    values = recipient_values(settings, strings, recipient, rendered.municipal)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=settings.sender_name, addr_spec=settings.sender_address)
    msg["To"] = _address(recipient.name, recipient.email)
    msg.set_raw("Subject", subject_value(subject_prefix + rendered.subject))
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain=settings.list_domain)
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    list_headers(msg, settings, values["unsubscribe_url"])
    msg.set_content(rendered.text.fill(values), subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html.fill(values), subtype="html", charset="utf-8", cte="quoted-printable")
    msg["Content-Language"] = rendered.language  # after the parts: set_content moves Content-* into them
    return msg


def confirmation_message(
    settings: Settings, strings: dict[str, str], language: str, address: str, name: str, url: str
) -> bytes:
    """The double opt-in email, as bytes: one link that confirms the subscription. ``address`` is
    the form the transport carries (transport.mail_address)."""
    return link_message(settings, strings, "confirm", language, address, name, url)


def link_message(
    settings: Settings, strings: dict[str, str], kind: str, language: str, address: str, name: str, url: str
) -> bytes:
    """A short email whose point is one link: the confirmation ('confirm') or the link to a
    subscriber's preferences ('link'), with the texts ``<kind>_subject``, ``<kind>_text`` and
    ``<kind>_button``."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=settings.sender_name, addr_spec=settings.sender_address)
    msg.set_raw("Subject", subject_value(strings[f"{kind}_subject"].format(name=settings.display_name(language))))
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=settings.list_domain)
    if settings.reply_to:
        msg["Reply-To"] = settings.reply_to
    msg["Auto-Submitted"] = "auto-generated"
    text = strings[f"{kind}_text"].format(name=settings.display_name(language), url=url)
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    paragraphs = "".join(
        f"<p>{escape(p)}</p>"
        if p != url
        else f'<p><a href="{escape(url)}" style="display:inline-block;background:#0b3a5b;color:#ffffff;padding:12px 20px;'
        f'border-radius:4px;font-weight:bold;text-decoration:none;">{escape(strings[f"{kind}_button"])}</a></p>'
        for p in text.split("\n\n")
    )
    html = (
        f'<!doctype html><html lang="{language}">'
        f'<body style="font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:1.5;color:#1f2933;">'
        f"{paragraphs}</body></html>"
    )
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    return to_header(name, check_address(address)) + msg.as_bytes()


def dkim_key(settings: Settings) -> tuple[signing.Signer, ...]:
    """The DKIM signers, their keys read and parsed once per send: RSA (or Ed25519) from
    dkim.key_file, and an Ed25519 second signature from dkim.ed25519_key_file; none when DKIM is
    not configured. A key that cannot sign stops the send before the first message."""
    from . import signing

    signers = []
    if settings.dkim_key_file:
        signers.append(signing.load_key(settings.dkim_key_file, settings.dkim_domain, settings.dkim_selector,
                                        "dkim.key_file"))  # fmt: skip
    if settings.dkim_ed25519_key_file:
        signer = signing.load_key(settings.dkim_ed25519_key_file, settings.dkim_domain,
                                  settings.dkim_ed25519_selector, "dkim.ed25519_key_file")  # fmt: skip
        if signer.algorithm != signing.ED25519:
            raise NewsletterError(
                _(
                    "{path}: dkim.ed25519_key_file holds an RSA key; put it in dkim.key_file.",
                    path=settings.dkim_ed25519_key_file,
                )
            )
        signers.append(signer)
    return tuple(signers)


def _qp(text: str, maxlinelen: int = 75) -> bytes:
    """Quoted-printable of UTF-8 text with CRLF line ends, lines kept one short so that a soft
    line break added at the end still fits in 76."""
    from email.quoprimime import body_encode

    return body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=maxlinelen, eol="\r\n").encode("ascii")


class MessageFactory:
    """The wire bytes of one issue for many recipients, fast.

    ``build_message`` makes an EmailMessage per recipient and encodes 50 KB of HTML each time.
    Here everything that is the same for every recipient (shared headers, the quoted-printable
    encoding of the compiled text and HTML between the per-recipient holes) is made once; a
    recipient costs their few headers and the encoding of their own values, joined with soft
    line breaks. The decoded message is exactly what ``build_message`` makes (a test checks).
    """

    def __init__(
        self,
        settings: Settings,
        rendered: RenderedIssue,
        strings: dict[str, str],
        subject_prefix: str = "",
        signers: tuple[signing.Signer, ...] = (),
    ):
        self.settings, self.rendered, self.strings = settings, rendered, strings
        shared = EmailMessage(policy=policy.SMTP)
        shared["From"] = Address(display_name=settings.sender_name, addr_spec=settings.sender_address)
        shared.set_raw("Subject", subject_value(subject_prefix + rendered.subject))
        if settings.reply_to:
            shared["Reply-To"] = settings.reply_to
        shared["List-Id"] = f"{clean_name(settings.name)} <{settings.list_id}>"
        shared["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        shared["Content-Language"] = rendered.language
        shared["MIME-Version"] = "1.0"
        self.boundary = f"==============={secrets.token_hex(12)}=="
        content_type = f'Content-Type: multipart/alternative;\r\n boundary="{self.boundary}"\r\n'.encode()
        self.shared = shared.as_bytes().rstrip(b"\r\n") + b"\r\n" + content_type
        part_head = 'Content-Type: text/{0}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0\r\n\r\n'
        # The body begins after the empty line that ends the head: the first part's boundary.
        self.text_head = f"--{self.boundary}\r\n{part_head.format('plain')}".encode()
        self.html_head = f"\r\n--{self.boundary}\r\n{part_head.format('html')}".encode()
        self.end = f"\r\n--{self.boundary}--\r\n".encode()
        self.text = [_qp(p) for p in rendered.text.parts]
        self.html = [_qp(p) for p in rendered.html.parts]
        # The municipality blocks are per-recipient values, but there are only as many as
        # members: encoded here once each, not once per message.
        self.known = {str(block): _qp(str(block)) for pair in rendered.municipal.values() for block in pair}
        self.mailto = (
            f",\r\n <mailto:{settings.unsubscribe_mailto}?subject=unsubscribe>" if settings.unsubscribe_mailto else ""
        )
        # DKIM: what every message shares is put in canonical form once (the shared header
        # fields, the encoded parts); a message costs its own few headers, the hashing of its
        # body and the signature.
        self.signers = signers
        if signers:
            from . import signing

            self.canonical = signing.canonical_headers(self.shared)
            static = [self.text_head, self.html_head, self.end, b"=\r\n", *self.text, *self.html, *self.known.values()]
            self.ready = {part: signing.piece(part) for part in static}

    def _body(self, encoded: list[bytes], slots: tuple[str, ...], values: dict, html: bool, out: list[bytes]) -> None:
        """The pieces of one part's encoded body, appended to ``out``, with a line end at the end."""
        out.append(encoded[0])
        for name, part in zip(slots, encoded[1:], strict=True):
            value = values[name]
            text = str(escape(value)) if html and not isinstance(value, Markup) else str(value)
            out += [b"=\r\n", self.known.get(text) or _qp(text), b"=\r\n", part]
        if not next((piece for piece in reversed(out) if piece), b"").endswith(b"\n"):
            out.append(b"\r\n")  # (as the joined body's end: a value at the end may be empty)

    def build(
        self,
        recipient: Recipient,
        *,
        address: str | None = None,
        now: datetime | None = None,
        message_id: str | None = None,
    ) -> tuple[str, bytes]:
        """(Message-ID, the message as bytes with CRLF line ends, DKIM-signed when the factory
        has signers) for one recipient. ``address`` is the form of the recipient's address the
        transport carries (transport.mail_address): an IDNA domain, or UTF-8 for SMTPUTF8; by
        default the address as stored."""
        values = recipient_values(self.settings, self.strings, recipient, self.rendered.municipal)
        # Written directly (the header classes cost more than the rest of the message).
        to_line = to_header(recipient.name, check_address(address or recipient.email))
        message_id = message_id or make_msgid(domain=self.settings.list_domain)
        personal = to_line + (
            f"Date: {format_datetime(now or datetime.now(UTC))}\r\nMessage-ID: {message_id}\r\n"
            f"List-Unsubscribe: <{values['unsubscribe_url']}>{self.mailto}\r\n"
        ).encode("ascii")
        body = [self.text_head]
        self._body(self.text, self.rendered.text.slots, values, False, body)
        body.append(self.html_head)
        self._body(self.html, self.rendered.html.slots, values, True, body)
        body.append(self.end)
        raw = b"".join([self.shared, personal, b"\r\n", *body])
        if not self.signers:
            return message_id, raw
        from . import signing

        canonical = {**self.canonical, **signing.canonical_headers(personal)}
        return message_id, signing.signatures(canonical, signing.body_hash(body, self.ready), self.signers) + raw
