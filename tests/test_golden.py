"""The sample issue's build compared with stored copies in tests/golden/.

After an intended change to templates, content or rendering, regenerate them with
    python -m pytest tests/test_golden.py --update-golden
and review the diff before committing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SAMPLE_ISSUE, load_sample_data

from newsletter.build import build_issue
from newsletter.config import load_settings

GOLDEN = Path(__file__).parent / "golden" / SAMPLE_ISSUE
FILES = ("email.mjml", "email.html", "email.txt", "message.eml")


def normalise(name: str, data: bytes) -> str:
    """Volatile parts (Date, Message-ID, MIME boundaries) replaced by fixed text."""
    text = data.decode("utf-8")
    if name == "message.eml":
        text = re.sub(r"^Date: .*$", "Date: <date>", text, flags=re.M)
        text = re.sub(r"^Message-ID:\s+<[^>]+>", "Message-ID: <id>", text, flags=re.M)
        for boundary in set(re.findall(r'boundary="([^"]+)"', text)):
            text = text.replace(boundary, "BOUNDARY")
    return text


@pytest.mark.parametrize("name", FILES)
def test_sample_build_matches_golden(project, request, name):
    load_sample_data(project)  # the sample feeds and emissions are local files: no network
    result = build_issue(load_settings())
    actual = normalise(name, (result.out_dir / name).read_bytes())
    golden = GOLDEN / name
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8", newline="")
    expected = golden.read_bytes().decode("utf-8")
    assert actual == expected, (
        f"{name} differs from tests/golden; if the change is intended, run "
        "'python -m pytest tests/test_golden.py --update-golden' and review the diff."
    )


def test_preview_html_is_the_email_with_images_from_the_build_folder(project):
    """preview.html is derived from email.html (so it has no golden copy of its own)."""
    load_sample_data(project)
    settings = load_settings()
    result = build_issue(settings)
    email = (result.out_dir / "email.html").read_text(encoding="utf-8")
    preview = (result.out_dir / "preview.html").read_text(encoding="utf-8")
    public = settings.asset_url(SAMPLE_ISSUE, "")
    assert public in email and public not in preview
    assert preview == email.replace(public, "images/")
    for source in re.findall(r'src="(images/[^"]+)"', preview):
        assert (result.out_dir / source).is_file(), source
