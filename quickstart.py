"""Install newsletter in a virtual environment of its own, and run the sample or the tests.

    python3 quickstart.py            # Windows: py quickstart.py
    python3 quickstart.py --test     # the tests (extra arguments go to pytest)

Works where the system's Python refuses pip (Debian and Ubuntu: 'externally-managed-
environment', PEP 668), on macOS and on Windows: it makes .venv/ beside this file (or uses the
virtual environment that is activated), installs newsletter there, and runs the sample issue
(news feeds, emission figures, ten invented subscribers, a build and a send to the local
outbox/) or the tests. Where Python came without its pip installer (Debian's python3 without
python3-venv), pip itself is fetched from the package index (PIP_INDEX_URL, default PyPI).
Running it again reuses .venv/ and installs only what changed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import urllib.request
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
SAMPLE = [
    ["feeds", "fetch"],
    ["emissions", "import", "data/klimagassutslipp-syntetisk.csv"],
    ["subscribers", "import", "data/abonnenter-eksempel.csv", "--confirmed"],
    ["build"],
    ["send", "--yes"],
]

WORDS = {
    "nb": {
        "old": "newsletter trenger Python 3.11 eller nyere; dette er {version}. Installer en nyere Python og kjør igjen.",
        "venv": "Lager et virtuelt miljø i {path} ...",
        "pip": "Python kom uten pip her; henter pip fra {index} ...",
        "nopip": "fant ikke pip på {index}; installer pakken python3-venv (Debian/Ubuntu: 'sudo apt install python3-venv') og kjør igjen.",
        "install": "Installerer newsletter i {path} ...",
        "failed": "'{command}' mislyktes (kode {code}); se meldingene over.",
        "done": "Ferdig. I et nytt terminalvindu: {activate}, så virker 'newsletter'.",
    },
    "en": {
        "old": "newsletter needs Python 3.11 or newer; this is {version}. Install a newer Python and run this again.",
        "venv": "Making a virtual environment in {path} ...",
        "pip": "This Python came without pip; fetching pip from {index} ...",
        "nopip": "no pip found at {index}; install python3-venv (Debian/Ubuntu: 'sudo apt install python3-venv') and run this again.",
        "install": "Installing newsletter into {path} ...",
        "failed": "'{command}' failed (exit code {code}); see the messages above.",
        "done": "Done. In a new terminal: {activate}, and 'newsletter' works.",
    },
}


def say(key: str, **values: object) -> str:
    language = "en" if os.environ.get("NEWSLETTER_LANG", "").lower().startswith("en") else "nb"
    return WORDS[language][key].format(**values)


class Failed(Exception):
    """A step failed; the message says which and what to do."""


def python_in(environment: Path) -> Path:
    """The Python of a virtual environment, on Windows or elsewhere."""
    windows = environment / "Scripts" / "python.exe"
    return windows if windows.exists() or os.name == "nt" else environment / "bin" / "python"


def activate_command(environment: Path) -> str:
    if os.name == "nt":
        return str(environment / "Scripts" / "activate")
    return f"source {environment / 'bin' / 'activate'}"


def environment() -> Path:
    """The virtual environment to install into: the activated one, or .venv/ (made when missing)."""
    if os.environ.get("VIRTUAL_ENV") and sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    if not python_in(VENV).exists():
        print(say("venv", path=VENV), flush=True)
        try:
            import ensurepip  # noqa: F401 (Debian and Ubuntu ship it apart, in python3-venv)

            venv.EnvBuilder(with_pip=True).create(VENV)
        except ImportError:
            venv.EnvBuilder(with_pip=False).create(VENV)
    if run([python_in(VENV), "-m", "pip", "--version"], quiet=True) != 0:
        bootstrap_pip(python_in(VENV))
    return VENV


def bootstrap_pip(python: Path) -> None:
    """Install pip into the environment from the package index: a pip wheel runs as pip itself."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    print(say("pip", index=index), flush=True)
    try:
        page_url = f"{index}/pip/" + ("index.html" if index.startswith("file:") else "")  # as pip reads a folder
        with urllib.request.urlopen(page_url, timeout=60) as answer:
            page = answer.read().decode("utf-8", "replace")
            base = answer.geturl()
    except OSError as exc:
        raise Failed(say("nopip", index=index) + f" ({exc})") from exc
    wheels = re.findall(r'href="([^"]*?(pip-(\d+(?:\.\d+)*)-py3-none-any\.whl)(?:#sha256=([0-9a-f]{64}))?)"', page)
    if not wheels:
        raise Failed(say("nopip", index=index))
    href, name, _version, digest = max(wheels, key=lambda w: tuple(int(p) for p in w[2].split(".")))
    target = python.parent.parent / name
    with urllib.request.urlopen(urllib.request.urljoin(base, href.split("#")[0]), timeout=120) as answer:
        data = answer.read()
    if digest and hashlib.sha256(data).hexdigest() != digest:
        raise Failed(say("nopip", index=index) + " (sha256)")
    target.write_bytes(data)
    check([python, str(target / "pip"), "install", "--quiet", str(target)], hush=True)
    target.unlink()


def run(command: list, quiet: bool = False) -> int:
    return subprocess.run(
        [str(part) for part in command], cwd=ROOT, stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
    ).returncode  # fmt: skip


def check(command: list, hush: bool = False) -> None:
    """Run a step; a failure stops with its command. A hushed step (pip) shows its own English
    messages only when it fails: its warnings on success would be noise to the staff."""
    if hush:
        done = subprocess.run(
            [str(part) for part in command], cwd=ROOT, capture_output=True, text=True, errors="replace"
        )
        code = done.returncode
        if code != 0:
            sys.stderr.write(done.stdout + done.stderr)
    else:
        code = run(command)
    if code != 0:
        shown = " ".join(str(part) for part in command[1:])
        raise Failed(say("failed", command=shown, code=code))


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 (this script runs on older Pythons to say so)
        print(say("old", version=sys.version.split()[0]), file=sys.stderr)
        return 1
    testing = bool(argv) and argv[0] == "--test"
    try:
        python = python_in(environment())
        print(say("install", path=python.parent.parent), flush=True)
        check(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e",
             f"{ROOT}[test]" if testing else str(ROOT)],
            hush=True,
        )  # fmt: skip
        if testing:
            return run([python, "-m", "pytest", *argv[1:]])
        for step in SAMPLE:
            check([python, "-m", "newsletter", *step])
    except Failed as exc:
        print(exc, file=sys.stderr)
        return 1
    print(say("done", activate=activate_command(python.parent.parent)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
