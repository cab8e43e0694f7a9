"""Benchmark: `newsletter send` of personalised messages to a local SMTP sink.

- Sink: Postfix's `smtp-sink` on loopback where installed (apt-get install postfix), else an
  aiosmtpd sink in a subprocess.
- Ours: `newsletter send --yes` of the sample issue (news and emission highlights included) to
  N confirmed subscribers, as a whole process, over 4 SMTP connections.
- Baselines, same sink, same message size, same run:
  * Postfix's `smtp-source` sending N messages over 4 sessions (target: ours at least 0.6 of its rate);
  * mailmerge (a Python mail-merge tool that opens a connection per message) sending a sample
    of the same size (target: ours at least 10x its rate).
- With --dkim, the same send signed with an RSA-2048 key (target: at least 0.8 of the unsigned
  rate); ours, signed and smtp-source alternate, --rounds times.
- With --memory, also a 100,000-recipient delivery: peak memory (target under 150 MB) and the
  cost per message against the N-recipient run (linear cost: about the same).

    python benchmarks/bench_send.py [--recipients 10000] [--rounds 3] [--mailmerge 500] [--memory] [--dkim]

Only loopback traffic. mailmerge is installed with pip on first use.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "benchmark-" + "k" * 40

MEASURE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(time.perf_counter() - start, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
)

AIOSMTPD_SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
import time
while True:
    time.sleep(3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sending_env(port: int, connections: int) -> dict[str, str]:
    """This environment without NEWSLETTER_ settings, plus those that send to the sink on ``port``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return env | {"NEWSLETTER_SECRET_KEY": KEY, "NEWSLETTER_SENDING_TRANSPORT": "smtp", "NEWSLETTER_SMTP_HOST": "127.0.0.1",
                  "NEWSLETTER_SMTP_PORT": str(port), "NEWSLETTER_SMTP_SECURITY": "none",
                  "NEWSLETTER_SENDING_CONNECTIONS": str(connections)}  # fmt: skip


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"the sink did not start on port {port}")


def start_sink(port: int) -> tuple[subprocess.Popen, str]:
    sink = shutil.which("smtp-sink") or ("/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None)
    if sink:
        args = [sink, "-u", "root"] if os.geteuid() == 0 else [sink]
        process = subprocess.Popen(
            [*args, f"127.0.0.1:{port}", "256"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        name = "Postfix smtp-sink"
    else:
        process = subprocess.Popen([sys.executable, "-c", AIOSMTPD_SINK, str(port)])
        name = "aiosmtpd sink"
    wait_for(port)
    return process, name


def measure(command: list[str], env: dict, cwd: Path | None = None) -> tuple[float, float, float]:
    """Wall time (s), peak RSS (MB) and CPU time (s, its worker processes included) of a command
    in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True, env=env, cwd=cwd
    )
    seconds, kilobytes, cpu = out.stdout.split()
    return float(seconds), int(kilobytes) / 1024, float(cpu)


def rsa_signature_ms(key: object, count: int = 300) -> float:
    """CPU milliseconds of one RSA-2048 PKCS#1 v1.5 SHA-256 signature with cryptography (OpenSSL)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    start = time.process_time()
    for n in range(count):
        key.sign(b"x" * 600 + n.to_bytes(4, "big"), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined]
    return (time.process_time() - start) / count * 1000


def make_project(folder: Path, recipients: int, env: dict) -> int:
    """A copy of the sample project with its news, emissions and N confirmed subscribers; the message size."""
    for name in ("newsletter.toml", "templates", "content", "data"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    run = [sys.executable, "-m", "newsletter", "--project", str(folder)]
    subprocess.run([*run, "feeds", "fetch"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([*run, "emissions", "import", str(folder / "data" / "klimagassutslipp-syntetisk.csv")],
                   check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    sys.path.insert(0, str(ROOT))
    from newsletter.config import load_settings
    from newsletter.store import database
    from newsletter.subscribers import upsert

    settings = load_settings(folder, environ=env)
    with database(settings.database) as conn, conn:
        for n in range(recipients):
            upsert(conn, settings, f"abonnent{n:06d}@example.no", name=f"Abonnent {n}", municipality="3205",
                   confirmed=True, source="benchmark")  # fmt: skip
    subprocess.run([*run, "build", "--out", str(folder / "out")], check=True, env=env, stdout=subprocess.DEVNULL)
    return (folder / "out" / "message.eml").stat().st_size


def ensure_mailmerge() -> str:
    if importlib.util.find_spec("mailmerge") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "mailmerge"], check=True)
    return shutil.which("mailmerge") or str(Path(sys.executable).with_name("mailmerge"))


def mailmerge_rate(port: int, size: int, count: int, folder: Path) -> float:
    folder.mkdir()
    body = ("Hei {{navn}}! " + "x" * 70 + "\n") * (size // 86)
    (folder / "mailmerge_template.txt").write_text(
        f"TO: {{{{epost}}}}\nSUBJECT: Nyhetsbrev\nFROM: nyhetsbrev@osloregionen.no\n\n{body}", encoding="utf-8"
    )
    (folder / "mailmerge_database.csv").write_text(
        "epost,navn\n" + "".join(f"p{n}@example.no,Person {n}\n" for n in range(count)), encoding="utf-8"
    )
    (folder / "mailmerge_server.conf").write_text(
        f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\nsecurity = Never\nratelimit = 0\n", encoding="utf-8"
    )
    start = time.perf_counter()
    subprocess.run([ensure_mailmerge(), "--no-dry-run", "--no-limit", "--output-format", "raw"], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return count / (time.perf_counter() - start)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return (
        ordered[len(ordered) // 2]
        if len(ordered) % 2
        else sum(ordered[len(ordered) // 2 - 1 : len(ordered) // 2 + 1]) / 2
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours, signed and smtp-source, alternating")
    parser.add_argument("--mailmerge", type=int, default=500, help="messages mailmerge sends (its rate is what counts)")
    parser.add_argument("--memory", action="store_true", help="also run a 100,000-recipient delivery")
    parser.add_argument("--dkim", action="store_true", help="also a DKIM-signed send (RSA-2048) of the same project")
    args = parser.parse_args()
    import compileall

    compileall.compile_dir(str(ROOT / "newsletter"), quiet=1)  # as installing a wheel does
    port = free_port()
    sink, sink_name = start_sink(port)
    source = shutil.which("smtp-source") or (
        "/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            env = sending_env(port, 4)
            template = tmp_path / "template"
            template.mkdir()
            size = make_project(template, args.recipients, env)
            signed_env = env
            if args.dkim:
                from cryptography.hazmat.primitives import serialization
                from cryptography.hazmat.primitives.asymmetric import rsa

                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                key_file = tmp_path / "dkim.pem"
                key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))  # fmt: skip
                signed_env = env | {"NEWSLETTER_DKIM_DOMAIN": "osloregionen.no", "NEWSLETTER_DKIM_SELECTOR": "nyhetsbrev",
                                    "NEWSLETTER_DKIM_KEY_FILE": str(key_file)}  # fmt: skip

            def send(environ: dict, label: str) -> tuple[float, float, float]:
                """A whole `send --yes` (the pre-send gate included) of a fresh copy of the project."""
                project = tmp_path / label
                shutil.copytree(template, project)
                try:
                    return measure(
                        [sys.executable, "-m", "newsletter", "--project", str(project), "send", "--yes"], environ
                    )
                finally:
                    shutil.rmtree(project)

            ours, signed, baseline, peaks, cpu, signed_cpu = [], [], [], [], [], []
            for round_ in range(args.rounds):  # alternating, so that a slow spell of the machine hits all three
                seconds, peak, used = send(env, f"unsigned{round_}")
                ours.append(args.recipients / seconds)
                peaks.append(peak)
                cpu.append(used / args.recipients * 1000)
                if args.dkim:
                    seconds, _peak, used = send(signed_env, f"signed{round_}")
                    signed.append(args.recipients / seconds)
                    signed_cpu.append(used / args.recipients * 1000)
                if source:
                    start = time.perf_counter()
                    subprocess.run([source, "-s", "4", "-m", str(args.recipients), "-l", str(size), "-f", "nyhetsbrev@osloregionen.no",
                                    "-t", "mottaker@example.no", f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
                    baseline.append(args.recipients / (time.perf_counter() - start))
            merge = mailmerge_rate(port, size, args.mailmerge, tmp_path / "mailmerge")

            def spread(values: list[float]) -> str:
                return f"{min(values):.0f}-{max(values):.0f}" if len(values) > 1 else f"{values[0]:.0f}"

            print(f"sink: {sink_name}; message size {size / 1024:.0f} KB; 4 connections; {args.rounds} round(s)")
            print(f"newsletter send ({args.recipients} recipients, whole process, gate included): "
                  f"{spread(ours)} msg/s   peak {max(peaks):.0f} MB")  # fmt: skip
            if signed:
                ratios = [s / o for s, o in zip(signed, ours, strict=True)]
                verdict = "PASS" if median(ratios) >= 0.8 else "MISS"
                print(f"newsletter send, DKIM-signed (RSA-2048)            : {spread(signed)} msg/s")
                print(f"ratio signed / unsigned, per round                 : {', '.join(f'{r:.2f}' for r in ratios)}"
                      f"   (target >= 0.80: {verdict})")  # fmt: skip
                rsa_ms = rsa_signature_ms(key)
                unsigned_ms, signed_ms = median(cpu), median(signed_cpu)
                print(f"CPU a message (all processes): unsigned {unsigned_ms:.2f} ms, signed {signed_ms:.2f} ms; "
                      f"one RSA-2048 signature alone {rsa_ms:.2f} ms")  # fmt: skip
                print(f"ceiling of signed / unsigned when both use every core: {unsigned_ms:.2f} / "
                      f"({unsigned_ms:.2f} + {rsa_ms:.2f}) = {unsigned_ms / (unsigned_ms + rsa_ms):.2f}")  # fmt: skip
            if baseline:
                ratios = [o / b for o, b in zip(ours, baseline, strict=True)]
                verdict = "PASS" if median(ratios) >= 0.6 else "MISS"
                print(f"Postfix smtp-source (same size, 4 sessions)        : {spread(baseline)} msg/s   <- baseline")
                print(f"ratio ours / smtp-source, per round                : {', '.join(f'{r:.2f}' for r in ratios)}"
                      f"   (target >= 0.60: {verdict})")  # fmt: skip
            else:
                print("Postfix smtp-source: not installed (apt-get install postfix); no ratio")
            print(f"mailmerge ({args.mailmerge} messages, same size)         : {merge:8.0f} msg/s   <- baseline")
            print(f"ratio ours / mailmerge                             : {median(ours) / merge:8.1f}x  (target >= 10x)")

            if args.memory:
                big = tmp_path / "big"
                big.mkdir()
                make_project(big, 100_000, env)
                big_s, big_mb, _cpu = measure(
                    [sys.executable, "-m", "newsletter", "--project", str(big), "send", "--yes"], env
                )
                per_message = 1000 / median(ours)
                print(f"100,000 recipients: {big_s:.0f} s, peak {big_mb:.0f} MB (target < 150 MB); "
                      f"{big_s / 100_000 * 1000:.2f} ms per message vs {per_message:.2f} ms at {args.recipients}")  # fmt: skip
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
