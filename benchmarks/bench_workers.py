"""Benchmark: one delivery sent by several senders on PostgreSQL, against the SQLite send.

- Sink: Postfix's `smtp-sink` on loopback where installed, else an aiosmtpd sink in a subprocess
  (as bench_send.py).
- The same project (the sample issue, N confirmed subscribers, 2 SMTP connections per sender)
  is sent three ways, whole processes, same sink, same run:
  * `newsletter send --yes` on SQLite (the baseline);
  * `newsletter send --yes` on PostgreSQL (a throwaway cluster started here, the SQLite file
    copied into it with `newsletter db copy`);
  * two `newsletter send --yes` processes at once on PostgreSQL, sharing the delivery.
  Every run checks that each recipient got exactly one message recorded as sent.

    python benchmarks/bench_workers.py [--recipients 5000] [--rounds 2]

Needs Debian's postgresql (initdb, pg_ctl). Only loopback traffic.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_send import free_port, make_project, sending_env, start_sink  # noqa: E402


def start_postgres(root: Path) -> tuple[str, callable]:
    """A throwaway cluster in ``root`` (as 'postgres' when root); (admin DSN, stop)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("PostgreSQL not found: apt-get install postgresql")
    bin_dir = Path(found[-1]).parent
    root.mkdir()
    root.chmod(0o755)
    root.parent.chmod(0o755)
    run_as = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, cwd=root)

    pg(str(bin_dir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "newsletter", "-E", "UTF8")
    pg(str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-w", "-l", str(root / "log.txt"), "-o",
       f"-k {root} -p {port} -c listen_addresses=''", "start")  # fmt: skip
    return f"host={root} port={port} user=newsletter", lambda: pg(
        str(bin_dir / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "stop"
    )


def sent_once(env: dict, project: Path, recipients: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    from newsletter.config import load_settings
    from newsletter.store import database

    settings = load_settings(project, environ=env)
    with database(settings.database) as conn:
        sent = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT subscriber) FROM delivery_recipients WHERE status = 'sent'"
        ).fetchone()
    if tuple(sent) != (recipients, recipients):
        raise SystemExit(f"not every recipient sent once: {tuple(sent)}")


def timed(senders: int, project: Path, env: dict) -> float:
    command = [sys.executable, "-m", "newsletter", "--project", str(project), "send", "--yes"]
    start = time.perf_counter()
    processes = []
    for _ in range(senders):
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(0.3)  # the first one records the delivery; the next joins it
    for process in processes:
        _out, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"send failed: {err.decode()[-500:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    admin, stop_pg = start_postgres(tmp / "pg")
    sink, sink_name = start_sink(port)
    try:
        env = sending_env(port, 2)
        pristine = tmp / "pristine"
        pristine.mkdir()
        make_project(pristine, args.recipients, env)
        import psycopg

        results: dict[str, list[float]] = {
            "sqlite, 1 sender": [],
            "postgresql, 1 sender": [],
            "postgresql, 2 senders": [],
        }
        database = 0
        for _round in range(args.rounds):
            for name in results:
                project = tmp / f"run-{database}"
                shutil.copytree(pristine, project)
                run_env = dict(env)
                if name.startswith("postgresql"):
                    database += 1
                    with psycopg.connect(f"{admin} dbname=postgres", autocommit=True) as conn:
                        conn.execute(f"CREATE DATABASE b{database}")
                    url = f"postgresql://newsletter@/b{database}?{admin.replace(' ', '&').replace('user=newsletter&', '')}"
                    subprocess.run([sys.executable, "-m", "newsletter", "--project", str(project), "db", "copy", "--to", url],
                                   check=True, env=env, stdout=subprocess.DEVNULL)  # fmt: skip
                    run_env["NEWSLETTER_DATABASE_URL"] = url
                else:
                    database += 1
                seconds = timed(2 if "2 senders" in name else 1, project, run_env)
                sent_once(run_env, project, args.recipients)
                results[name].append(args.recipients / seconds)
                shutil.rmtree(project)
        base = results["sqlite, 1 sender"]
        print(f"sink: {sink_name}; {args.recipients} recipients; 2 SMTP connections per sender; {args.rounds} rounds")
        for name, rates in results.items():
            ratios = [rate / b for rate, b in zip(rates, base, strict=True)]
            print(f"{name:<24} {min(rates):7.0f}-{max(rates):5.0f} msg/s   ratio to SQLite {min(ratios):.2f}-{max(ratios):.2f}"
                  + ("   <- baseline" if name == "sqlite, 1 sender" else ""))  # fmt: skip
    finally:
        stop_pg()
        sink.terminate()
        sink.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
