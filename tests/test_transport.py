"""SMTP conversations the test server (aiosmtpd) never has: a real TCP server on loopback that
answers from a script, line by line, and records what it was sent. For PIPELINING (RFC 2920):
a DATA accepted after a refusal, and a server that refuses and hangs up."""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest

from newsletter.errors import ConnectFailed
from newsletter.transport import SMTP, Connection


class Scripted:
    """One connection at a time; ``answers`` maps a command's first word (MAIL, RCPT, DATA, and
    '.' for the end of a message), or 'RCPT <address>' for one recipient, to the reply and
    whether to hang up after it. Otherwise: 250, and 354 to DATA."""

    def __init__(self, answers: dict[str, tuple[str, bool]]) -> None:
        self.answers = answers
        self.seen: list[str] = []  # every line the client sent, in order
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _address = self.server.accept()
            except OSError:
                return
            with client, client.makefile("rb") as lines:
                client.sendall(b"220 scripted ESMTP\r\n")
                in_data = False
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    self.seen.append(line)
                    if in_data:
                        if line != ".":
                            continue
                        in_data, word = False, "."
                    else:
                        word = line.split(" ", 1)[0].split(":", 1)[0].upper()
                    if word == "EHLO":
                        client.sendall(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                        continue
                    usual = ("354 go ahead", False) if word == "DATA" else ("250 OK", False)
                    address = line.partition("<")[2].partition(">")[0]
                    reply, hang_up = self.answers.get(f"{word} {address}", self.answers.get(word, usual))
                    client.sendall(reply.encode() + b"\r\n")
                    if word == "DATA" and reply.startswith("354"):
                        in_data = True
                    if hang_up:
                        break

    def connection(self) -> Connection:
        return Connection(SMTP("127.0.0.1", self.port, "none", None, None, 5))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def scripted():
    servers: list[Scripted] = []

    def make(answers: dict[str, tuple[str, bool]]) -> Scripted:
        servers.append(Scripted(answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


MESSAGE = b"Subject: test\r\n\r\n.a line that starts with a dot\r\nbody\r\n"


def test_pipelined_commands_go_in_one_write_and_the_message_is_dot_stuffed(scripted):
    server = scripted({})
    connection = server.connection()
    connection.send("nyhetsbrev@osloregionen.no", "kari@example.no", MESSAGE)
    connection.close()
    assert server.seen[1:4] == ["mail FROM:<nyhetsbrev@osloregionen.no>", "rcpt TO:<kari@example.no>", "data"]
    assert "..a line that starts with a dot" in server.seen and server.seen[-3:] == ["body", ".", "quit"]


def test_a_data_accepted_after_a_refused_recipient_is_ended_with_an_empty_message(scripted):
    """RFC 2920 3.1: a server may answer 354 to a pipelined DATA even though RCPT was refused;
    the client ends it with a lone dot, does not send the message, and reports the refusal."""
    server = scripted({"RCPT ingen@example.no": ("550 5.1.1 no such user", False)})
    connection = server.connection()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        connection.send("nyhetsbrev@osloregionen.no", "ingen@example.no", MESSAGE)
    assert refused.value.recipients["ingen@example.no"][0] == 550
    assert "body" not in server.seen and server.seen[4] == "."  # the lone dot, then RSET
    assert server.seen[5].lower() == "rset"
    connection.send("nyhetsbrev@osloregionen.no", "kari@example.no", MESSAGE)  # the session is still in step
    assert server.seen[-1] == "." and "body" in server.seen
    connection.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("553 5.7.1 sender not authorised", ConnectFailed),  # our sender refused: the run stops, nobody blamed
        ("421 4.3.2 shutting down", smtplib.SMTPSenderRefused),  # temporary: retried later
    ],
)
def test_a_refusal_followed_by_hanging_up_is_reported_as_the_refusal(scripted, answer, expected):
    """The server answers MAIL with a refusal and closes the connection before the other
    pipelined replies: its answer counts, not the lost connection."""
    server = scripted({"MAIL": (answer, True)})
    connection = server.connection()
    with pytest.raises(expected) as raised:
        connection.send("nyhetsbrev@osloregionen.no", "kari@example.no", MESSAGE)
    assert answer.split(" ", 1)[1] in str(raised.value)
    assert connection.client is None  # closed: the next message opens a new one
