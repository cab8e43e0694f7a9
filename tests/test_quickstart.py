"""The README's quick start, run as written (after the install), on a fresh copy of the project."""

from __future__ import annotations

import mailbox
import re
import shlex
import subprocess
import sys

from conftest import ROOT, SAMPLE_ISSUE


def test_quick_start_main_job(project):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    main_job = re.findall(r"```sh\n(.+?)\n```", quick)[0]
    steps = [step.strip() for step in main_job.split("&&")]
    assert steps[0] == "python -m pip install -e ."  # installing is what the test environment did already
    for step in steps[1:]:
        argv = shlex.split(step)
        assert argv[0] == "newsletter"
        done = subprocess.run(
            [sys.executable, "-m", "newsletter", *argv[1:]], cwd=project, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{step}\n{done.stdout}\n{done.stderr}"
    assert (project / "build" / SAMPLE_ISSUE / "preview.html").is_file()
    box = mailbox.Maildir(project / "outbox", create=False)
    assert len(list(box.iterkeys())) == 10
    assert "NEWSLETTER_SECRET_KEY=" in (project / ".env").read_text(encoding="utf-8")
