"""The built message.eml, parsed as a mail program would: headers, parts, encodings."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser

import pytest
from conftest import SAMPLE_ISSUE, load_sample_data

from newsletter.build import build_issue, prepare
from newsletter.compose import Recipient
from newsletter.config import load_settings
from newsletter.errors import NewsletterError
from newsletter.message import build_message


@pytest.fixture
def message(project):
    build_issue(load_settings())
    raw = (project / "build" / SAMPLE_ISSUE / "message.eml").read_bytes()
    return raw, BytesParser(policy=policy.default).parsebytes(raw)


def test_headers(message):
    raw, msg = message
    assert msg["From"] == "Osloregionen <nyhetsbrev@osloregionen.no>"
    assert msg["To"] == "Ola Nordmann <ola.nordmann@example.com>"
    assert msg["Subject"] == "Osloregionen: ny ordførererklæring, karbonfangst og energi til tungtransport"
    assert msg["Reply-To"] == "post@osloregionen.no"
    assert msg["List-Id"] == "Nyhetsbrev fra Osloregionen <nyhetsbrev.osloregionen.no>"
    assert msg["List-Unsubscribe"] == (
        "<https://nyhetsbrev.osloregionen.no/unsubscribe/preview>, "
        "<mailto:avmelding@osloregionen.no?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"].endswith("@osloregionen.no>")
    assert msg["Date"].datetime is not None
    assert msg["MIME-Version"] == "1.0"


def test_non_ascii_subject_is_rfc2047_encoded_on_the_wire(message):
    raw, _ = message
    head = raw.split(b"\r\n\r\n", 1)[0]
    head.decode("ascii")  # every header line is 7-bit
    assert b"=?utf-8?q?" in head.lower()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_parts_text_first_then_html(message):
    _, msg = message
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    text, html = (p.get_content() for p in parts)
    assert "Hei, Ola Nordmann!" in text and "Hei, Ola Nordmann!" in html
    assert "Ordførererklæringen for klima og miljø er oppdatert" in text
    assert "Meld deg av: https://nyhetsbrev.osloregionen.no/unsubscribe/preview" in text
    assert 'href="https://nyhetsbrev.osloregionen.no/unsubscribe/preview"' in html
    assert "@@nl" not in text and "@@nl" not in html


def test_names_cannot_inject_headers(project):
    settings = load_settings()
    prepared = prepare(settings)
    evil = Recipient(email="kari@example.com", name='Kari "K" Nordmann\r\nBcc: alle@example.com\nX-Evil: 1')
    raw = build_message(settings, prepared.rendered, evil, prepared.strings).as_bytes()
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["To"].addresses[0].addr_spec == "kari@example.com"
    assert msg["To"].addresses[0].display_name == 'Kari "K" Nordmann Bcc: alle@example.com X-Evil: 1'
    html = list(msg.iter_parts())[1].get_content()
    assert "Hei, Kari &#34;K&#34; Nordmann Bcc" in html


def test_name_with_markup_is_escaped_in_html(project):
    settings = load_settings()
    prepared = prepare(settings)
    msg = build_message(settings, prepared.rendered, Recipient("a@example.com", "<b>Åse</b>"), prepared.strings)
    html = list(msg.iter_parts())[1].get_content()
    text = list(msg.iter_parts())[0].get_content()
    assert "&lt;b&gt;Åse&lt;/b&gt;" in html and "<b>Åse" not in html
    assert "Hei, <b>Åse</b>!" in text


def test_address_with_header_characters_is_refused(project):
    settings = load_settings()
    prepared = prepare(settings)
    with pytest.raises(NewsletterError, match="not a plain e-mail address"):
        build_message(settings, prepared.rendered, Recipient("a@example.com\r\nBcc: x@y.z"), prepared.strings)


def test_test_prefix(project):
    settings = load_settings()
    prepared = prepare(settings)
    msg = build_message(
        settings, prepared.rendered, Recipient("a@example.com"), prepared.strings, subject_prefix="[TEST] "
    )
    assert msg["Subject"].startswith("[TEST] Osloregionen: ny ordførererklæring")
    assert "Hei!" in list(msg.iter_parts())[0].get_content()


def test_the_fast_factory_makes_the_same_message(project):
    """The delivery's MessageFactory and build_message agree on every header and decoded part."""
    from datetime import UTC, datetime

    from newsletter.message import MessageFactory

    load_sample_data(project)  # emissions: the municipality blocks are per-recipient parts too
    settings = load_settings()
    prepared = prepare(settings)
    assert "3205" in prepared.rendered.municipal and "0301" in prepared.rendered.municipal
    moment = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    for person in (
        Recipient("kari@example.com", 'Kåre "K" Ø. Nordmann-Åsen', "tok1", "tok2", municipality="3205"),
        Recipient("b@example.com", "<b>Åse</b> & co", municipality="0301"),
        Recipient("c@example.com"),
        Recipient("lang@example.com", "Åsmund Øverbø-Kristiansen Ærlighetsdal fra Sør-Aurdal og Østre Toten kommune"),
    ):
        slow = BytesParser(policy=policy.default).parsebytes(
            build_message(
                settings, prepared.rendered, person, prepared.strings, now=moment, message_id="<x@y>"
            ).as_bytes()
        )
        message_id, raw = MessageFactory(settings, prepared.rendered, prepared.strings).build(
            person, now=moment, message_id="<x@y>"
        )
        fast = BytesParser(policy=policy.default).parsebytes(raw)
        assert message_id == "<x@y>"

        def headers(message):
            return {k: str(v) for k, v in message.items() if k != "Content-Type"}

        assert headers(fast) == headers(slow)
        assert fast.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in fast.iter_parts()] == ["text/plain", "text/html"]
        for a, b in zip(fast.iter_parts(), slow.iter_parts(), strict=True):
            assert a.get_content() == b.get_content()
        assert all(len(line) <= 78 for line in raw.split(b"\r\n")[20:])  # 76 + CRLF


def test_relaxed_body_canonicalisation_matches_rfc_6376_line_by_line():
    """The whole-body regular expressions give what RFC 6376 3.4.4 describes line by line."""
    import random
    import re

    from newsletter.signing import relaxed_body

    def by_the_book(body: bytes) -> bytes:
        lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
        while lines and not lines[-1]:
            lines.pop()
        return b"".join(line + b"\r\n" for line in lines)

    rng = random.Random(6376)
    for _ in range(5000):
        body = b"".join(rng.choice([b"a", b" ", b"\t", b"\r\n", b"  \r\n", b"x y", b"\t\r\n", b"\xc3\xa6"])
                        for _ in range(rng.randint(0, 16)))  # fmt: skip
        assert relaxed_body(body) == by_the_book(body), body
    assert relaxed_body(b"") == b"" and relaxed_body(b"\r\n\r\n") == b""


def test_the_body_hash_from_pieces_relaxed_one_by_one_is_the_whole_body_s():
    """The delivery relaxes the shared parts once and hashes each body piece by piece: for any
    pieces, split anywhere (runs of spaces, line ends and bare CR or LF across the seams), the
    hash is that of the whole body relaxed at once."""
    import hashlib
    import random

    from newsletter.signing import body_hash, piece, relaxed_body

    rng = random.Random(8463)
    alphabet = [b" ", b"\t", b"\r\n", b"a", b"=", b"\r", b"\n", b"  ", b"\xc3\xa6"]
    for _ in range(20000):
        pieces = [b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(0, 6))]
        ready = {p: piece(p) for p in pieces if rng.random() < 0.5}
        assert body_hash(pieces, ready) == hashlib.sha256(relaxed_body(b"".join(pieces))).digest(), pieces


def test_the_factory_signs_as_the_whole_message_would_be_signed(project, tmp_path):
    """Signatures made from the factory's prepared parts equal those made over the finished
    message (RSA PKCS#1 v1.5 and Ed25519 are deterministic), for names with runs of spaces and
    tabs, and every municipality block; and dkimpy verifies them."""
    import base64
    import re

    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from newsletter.message import MessageFactory
    from newsletter.signing import ED25519, RSA, Signer, sign

    load_sample_data(project)
    settings = load_settings()
    prepared = prepare(settings)
    rsa_key, ed_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate(),
    )
    signers = (Signer("osloregionen.no", "s1", RSA, rsa_key), Signer("osloregionen.no", "ed", ED25519, ed_key))
    factory = MessageFactory(settings, prepared.rendered, prepared.strings, signers=signers)
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw_ed = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    records = {b"s1._domainkey.osloregionen.no.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(der),
               b"ed._domainkey.osloregionen.no.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw_ed)}  # fmt: skip
    people = [
        Recipient("kari@example.com", "Kåre  \t Nordmann ", "tok1", "tok2", municipality=code)
        for code in sorted(prepared.rendered.municipal)
    ] + [Recipient("c@example.com"), Recipient("d@example.com", "\tÅse   Berg\t")]
    for person in people:
        _id, signed = factory.build(person)
        tops = re.findall(rb"^DKIM-Signature:.*?(?=^\S)", signed, re.MULTILINE | re.DOTALL)
        assert len(tops) == 2
        rest = signed[sum(len(top) for top in tops) :]
        moment = int(re.search(rb"t=(\d+);", tops[0]).group(1))
        assert sign(rest, signers, moment) == signed
        verifier = dkim.DKIM(signed)
        assert [verifier.verify(idx=i, dnsfunc=lambda name, timeout=5: records.get(name)) for i in range(2)] == [
            True,
            True,
        ]


def test_a_dkim_key_of_another_kind_or_too_short_is_one_line(tmp_path):
    import pytest
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from newsletter.errors import NewsletterError
    from newsletter.signing import load_key

    pem = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    (tmp_path / "ec.pem").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(*pem))
    (tmp_path / "short.pem").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\n" + SHORT_RSA + b"\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(NewsletterError, match="DKIM keys are RSA or Ed25519"):
        load_key(tmp_path / "ec.pem", "osloregionen.no", "s", "dkim.key_file")
    with pytest.raises(NewsletterError, match="512 bits is too short"):
        load_key(tmp_path / "short.pem", "osloregionen.no", "s", "dkim.key_file")
    with pytest.raises(NewsletterError, match="cannot read the DKIM key"):
        load_key(tmp_path / "missing.pem", "osloregionen.no", "s", "dkim.key_file")


# A 512-bit RSA key (cryptography refuses to make one under 1024 bits): only for the refusal above.
SHORT_RSA = (
    b"MIIBUwIBADANBgkqhkiG9w0BAQEFAASCAT0wggE5AgEAAkEAuOGXtvv4ih+lYVL/"
    b"ya4ZTyx1pzJNfhMTzpEi+oxojXSuJdZI7nlsfPgZNTRiL9ck6xBsNVEkdzHMkPV1"
    b"mkV1cwIDAQABAkAY/RTefKwZLzHRN8Cu58Mv+lhkot3qfnWc4+0QZE31YGch6F7C"
    b"m3pdIXiDb2BgKDsPdqCa1+WPAgbbfagpH2dBAiEA2kamQwO3xKnJHPqvjohx3YuT"
    b"Xy0EdqtHMz+bH69n7EMCIQDY1W8BuiOZlpzuyuiYteLYSeFGj0ACRndZDqLFKVxX"
    b"EQIgbzOHCKUgPkTxfJ4KSmcg+2lcTyS0HXDs+SLyeJX4L9kCIGOIHWt6iQrgYusO"
    b"AxTOMPG9gAYGjYg91lzv5fGA2d0xAiASJE7x3qgS9R2/HA8yXQwf1lZ6x+qkclQh"
    b"nlO9cvd5aQ=="
)
