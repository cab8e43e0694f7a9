"""DKIM signatures (RFC 6376) made with `cryptography`: RSA-SHA256, and Ed25519-SHA256 (RFC 8463)
as a second signature when an Ed25519 key is configured.

dkimpy, the reference implementation, signs RSA in pure Python (about 13 ms a message); here the
keys are parsed once per send (``load``), and a message costs its body hash and one signature
(well under a millisecond). Canonicalisation is relaxed/relaxed, which survives a relay that
re-folds headers or re-spaces body lines. dkimpy stays as the independent verifier in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import NewsletterError
from .language import _

SIGNED = (
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"list-id",
    b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type",
)  # fmt: skip
RSA, ED25519 = "rsa-sha256", "ed25519-sha256"


@dataclass(frozen=True)
class Signer:
    """One signature to add: the domain (d=), selector (s=), algorithm (a=) and the parsed key."""

    domain: str
    selector: str
    algorithm: str
    key: Any  # cryptography's private key

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        if self.algorithm == RSA:
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.key.sign(hashlib.sha256(data).digest())  # RFC 8463: PureEdDSA over the SHA-256 hash


def load_key(path: Path, domain: str, selector: str, setting: str) -> Signer:
    """A signer from a PEM private key file (RSA of at least 1024 bits, or Ed25519), parsed once.
    One line naming the file and the setting when it cannot be used."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NewsletterError(
            _(
                "{path}: cannot read the DKIM key ({reason}); check {setting}.",
                path=path,
                reason=exc.strerror,
                setting=setting,
            )
        ) from exc
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise NewsletterError(
            _("{path}: not a PEM private key without a password; check {setting}.", path=path, setting=setting)
        ) from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise NewsletterError(
                _(
                    "{path}: an RSA key of {bits} bits is too short for DKIM (use 2048); check {setting}.",
                    path=path,
                    bits=key.key_size,
                    setting=setting,
                )
            )
        return Signer(domain, selector, RSA, key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Signer(domain, selector, ED25519, key)
    raise NewsletterError(
        _(
            "{path}: DKIM keys are RSA or Ed25519, not {kind}; check {setting}.",
            path=path,
            kind=type(key).__name__,
            setting=setting,
        )
    )


@cache
def _public_suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList  # the Public Suffix List, bundled (no download)

    return PublicSuffixList()


def organisational_domain(domain: str) -> str:
    """The domain one registrant owns (RFC 7489 3.2): ``nyhetsbrev.osloregionen.no`` ->
    ``osloregionen.no``, ``post.asker.kommune.no`` -> ``asker.kommune.no`` (the Public Suffix
    List knows ``kommune.no`` and Norway's place-name suffixes). Labels in xn-- form and in
    Unicode compare the same."""
    name = domain.strip().rstrip(".").lower()
    with suppress(UnicodeError):  # not valid IDNA: compared as written
        name = ".".join(label.encode("ascii").decode("idna") if label.startswith("xn--") else label
                        for label in name.split("."))  # fmt: skip
    return _public_suffixes().privatesuffix(name) or name


def aligned(signing_domain: str, from_domain: str) -> bool:
    """DMARC's relaxed DKIM alignment (RFC 7489 3.1.1): d= and the From domain have the same
    organisational domain."""
    return organisational_domain(signing_domain) == organisational_domain(from_domain)


_WSP = re.compile(rb"[ \t]+")


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: name in lower case, value unfolded, runs of spaces as one, none at the ends."""
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value + b"\r\n"


_RUNS = re.compile(rb"\t[ \t]*| [ \t]+")  # what relaxing changes: tabs and runs (a single space stays as it is)
_LINE_END_SPACE = re.compile(rb" (?=\r\n)")
_EDGE = b" \t\r\n"


def _relax(text: bytes) -> bytes:
    """Runs of spaces and tabs as one space, none before a line end (RFC 6376 3.4.4 a and b)."""
    return _LINE_END_SPACE.sub(b"", _RUNS.sub(b" ", text))


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: runs of spaces as one, none at line ends, no empty lines at the end
    (whole-body regular expressions: a 50 KB body in a fraction of a millisecond)."""
    body = _relax(body).rstrip(b" ").rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


@dataclass(frozen=True)
class Piece:
    """A piece of a body, relaxed once: its leading and trailing spaces and line ends as they
    are (they join with the neighbours'), and the relaxed form of what is between."""

    lead: bytes
    core: bytes
    trail: bytes


def piece(raw: bytes) -> Piece:
    """``raw`` as a Piece (made once for the parts every message of a delivery shares)."""
    core = raw.strip(_EDGE)
    if not core:
        return Piece(raw, b"", b"")
    lead = len(raw) - len(raw.lstrip(_EDGE))
    return Piece(raw[:lead], _relax(core), raw[lead + len(core) :])


def body_hash(pieces: list[bytes], ready: dict[bytes, Piece] | None = None) -> bytes:
    """SHA-256 of ``relaxed_body(b"".join(pieces))``, from pieces relaxed one by one: those in
    ``ready`` (the shared parts of a delivery, relaxed once) cost only their hashing. What
    relaxing does is local to each run of spaces and line ends, so only the runs where two
    pieces meet are relaxed here, together."""
    out: list[bytes] = []  # hashed joined once: one update of 77 KB costs less than 75 small ones
    pending, started = b"", False  # pending: the spaces and line ends at the end so far
    ready = ready or {}
    for raw in pieces:
        part = ready.get(raw) or piece(raw)
        if not part.core:
            pending += part.lead
            continue
        seam = pending + part.lead
        if seam:
            out.append(seam if seam == b"\r\n" else _relax(seam))  # (a bare line end is relaxed already)
        out.append(part.core)
        pending, started = part.trail, True
    rest = _relax(pending).rstrip(b" ").rstrip(b"\r\n")  # the end: no empty lines (RFC 6376 3.4.4 c)
    if started or rest:
        out.append(rest + b"\r\n")
    return hashlib.sha256(b"".join(out)).digest()


def _headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a message head as (name, raw value with its folding)."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        elif b":" in line:
            name, value = line.split(b":", 1)
            fields.append((name, value))
    return fields


def _fold(tags: list[str]) -> bytes:
    """'DKIM-Signature: ' and its tags, folded at 78 characters between tags."""
    lines, line = [], "DKIM-Signature:"
    for tag in tags:
        if len(line) + 1 + len(tag) > 78:
            lines.append(line)
            line = "\t" + tag
        else:
            line += " " + tag
    lines.append(line)
    return "\r\n".join(lines).encode("ascii")


def canonical_headers(head: bytes) -> dict[bytes, bytes]:
    """The relaxed form of each signed header field of a message head, by lower-case name (the
    bottom one of each counts, RFC 6376 5.4.2)."""
    out = {}
    for name, value in _headers(head):
        key = name.strip().lower()
        if key in SIGNED:
            out[key] = relaxed_header(name, value)
    return out


def signatures(
    canonical: dict[bytes, bytes], body_digest: bytes, signers: tuple[Signer, ...], moment: int | None = None
) -> bytes:
    """The DKIM-Signature header fields (one per signer, folded, with CRLFs) for a message whose
    signed header fields are ``canonical`` (``canonical_headers``) and whose relaxed body hashes
    to ``body_digest``."""
    names = [name for name in SIGNED if name in canonical]
    signed = b"".join(canonical[name] for name in names)
    body = base64.b64encode(body_digest).decode("ascii")
    stamp = int(time.time()) if moment is None else moment
    added = b""
    for signer in signers:
        tags = [f"v=1; a={signer.algorithm}; c=relaxed/relaxed; d={signer.domain}; s={signer.selector};",
                f"t={stamp};", "h=" + ":".join(n.decode() for n in names) + ";", f"bh={body};", "b="]  # fmt: skip
        header = _fold(tags)
        unsigned = relaxed_header(*header.split(b":", 1))[:-2]  # without its CRLF (RFC 6376 3.7)
        value = base64.b64encode(signer.sign(signed + unsigned)).decode("ascii")
        pieces = [value[i : i + 72] for i in range(0, len(value), 72)]
        added += header + b"".join(b"\r\n\t" + piece.encode("ascii") for piece in pieces) + b"\r\n"
    return added


def sign(raw: bytes, signers: tuple[Signer, ...], moment: int | None = None) -> bytes:
    """The message with one DKIM-Signature per signer on top (none without signers)."""
    if not signers:
        return raw
    head, _sep, body = raw.partition(b"\r\n\r\n")
    digest = hashlib.sha256(relaxed_body(body)).digest()
    return signatures(canonical_headers(head), digest, signers, moment) + raw
