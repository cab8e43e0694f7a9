"""The README's first command on a fresh machine: quickstart.py makes its own virtual environment
(even where Python came without pip, as Debian's does), installs newsletter and sends the sample."""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

WITHOUT_ENSUREPIP = (
    "import sys, runpy\n"
    "sys.modules['ensurepip'] = None  # Debian's python3 without python3-venv\n"
    "sys.argv = ['quickstart.py']\n"
    "runpy.run_path('quickstart.py', run_name='__main__')\n"
)


def a_fresh_copy(tmp_path: Path) -> Path:
    """The repository as a clone has it (no .venv, no database, no build)."""
    copy = tmp_path / "newsletter"
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    names = listed.stdout.splitlines() if listed.returncode == 0 else []
    names += ["quickstart.py"]  # also before it is committed
    for name in names:
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def indexes() -> str:
    """The package indexes pip uses here (the main one and the extra ones), to search besides ours."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found = dict(re.findall(r"^(?:global|install|:env:)\.(index-url|extra-index-url)='([^']*)'", listed, re.M))
    main = os.environ.get("PIP_INDEX_URL") or found.get("index-url") or "https://pypi.org/simple"
    return " ".join([main, os.environ.get("PIP_EXTRA_INDEX_URL") or found.get("extra-index-url", "")]).strip()


def an_index_with_pip(tmp_path: Path) -> str:
    """A package index (file://) that holds pip's wheel, as PyPI does."""
    import ensurepip

    bundled = next(Path(ensurepip.__file__).parent.glob("_bundled/pip-*.whl"))
    folder = tmp_path / "index" / "pip"
    folder.mkdir(parents=True)
    shutil.copy2(bundled, folder / bundled.name)
    digest = hashlib.sha256(bundled.read_bytes()).hexdigest()
    (folder / "index.html").write_text(f'<a href="{bundled.name}#sha256={digest}">{bundled.name}</a>\n')
    return (tmp_path / "index").as_uri()


@pytest.mark.skipif(not hasattr(sys, "_base_executable"), reason="needs the interpreter outside any venv")
def test_quickstart_installs_and_sends_the_sample_where_python_has_no_pip(tmp_path):
    copy = a_fresh_copy(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "VIRTUAL_ENV", "PYTHONPATH"))}
    missing_index = (tmp_path / "no-such-index").as_uri()  # pip warns about it, in English
    env |= {
        "NEWSLETTER_LANG": "en", "PIP_INDEX_URL": an_index_with_pip(tmp_path),
        "PIP_EXTRA_INDEX_URL": f"{indexes()} {missing_index}",
    }  # fmt: skip
    done = subprocess.run(
        [sys._base_executable, "-c", WITHOUT_ENSUREPIP], cwd=copy, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "This Python came without pip; fetching pip from" in done.stdout
    assert "WARNING" not in done.stdout + done.stderr  # pip's own messages only when it fails
    assert "Done. In a new terminal: source" in done.stdout and ".venv/bin/activate" in done.stdout
    sent = mailbox.Maildir(copy / "outbox", create=False)
    assert len(sent) == 10  # the ten invented subscribers
    assert (copy / "build" / "2026-12-ordforererklaeringen" / "email.html").is_file()
    venv_python = copy / ".venv" / "bin" / "python"
    check = subprocess.run([venv_python, "-m", "pip", "--version"], capture_output=True, text=True)
    assert check.returncode == 0 and str(copy / ".venv") in check.stdout
    # running it again reuses the environment and refuses to send the same issue twice
    again = subprocess.run(
        [sys._base_executable, "quickstart.py"], cwd=copy, env=env, capture_output=True, text=True, timeout=600
    )
    assert "Making a virtual environment" not in again.stdout and len(mailbox.Maildir(copy / "outbox")) == 10
