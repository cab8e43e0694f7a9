"""The docs are part of the product: every command and setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

from newsletter.cli import cli
from newsletter.config import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
GUIDE = (ROOT / "docs" / "redaktorveiledning.md").read_text(encoding="utf-8")


def _commands(group=cli, prefix="newsletter"):
    for name, command in group.commands.items():
        if command.hidden:  # 'schedule add' is what 'schedule ISSUE --at' runs
            continue
        yield f"{prefix} {name}", command
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix} {name}")


def test_every_command_is_in_the_readme():
    for name, command in _commands():
        assert f"`{name}" in README, f"{name} is missing from README.md"
        assert command.help, name


def test_every_option_of_every_command_is_in_the_readme():
    for name, command in _commands():
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert opt in README, f"{opt} of {name} is missing from README.md"


def test_every_setting_is_in_the_configuration_reference():
    for option in OPTIONS:
        row = (
            f"| `{option.toml}` | `{option.env}` |"
            if option.kind != "secret"
            else f"| (environment only) | `{option.env}` |"
        )
        assert row in README, f"{option.toml} / {option.env} missing from the README's configuration table"


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_test_command():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.+?)\n```", quick)
    assert commands == ["python3 quickstart.py", "python3 quickstart.py --test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
    # what the first one runs is what the README says it runs
    import importlib.util

    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    for step in quickstart.SAMPLE:
        assert f"newsletter {' '.join(step)}" in quick


def test_staff_guide_covers_the_commands_staff_use():
    for text in ("newsletter new", "newsletter build", "image_alt", "category", "preheader", "newsletter signup-form"):
        assert text in GUIDE, text
    # the set-up chapter: install, activate, .env and SMTP with its values, backups, the preview
    for text in ("## Oppsett", "quickstart.py", ".venv\\Scripts\\activate", "source .venv/bin/activate",
                 "NEWSLETTER_SMTP_HOST", "NEWSLETTER_SMTP_SECURITY=starttls", "port 465", "newsletter.db",
                 "http://localhost:8001/"):  # fmt: skip
        assert text in GUIDE, text


def test_the_projects_env_example_is_the_one_init_writes_in_norwegian():
    from newsletter.scaffold import ENV_COMMENTS, ENV_EXAMPLE

    assert (ROOT / ".env.example").read_text(encoding="utf-8") == ENV_EXAMPLE.format(**ENV_COMMENTS["nb"])


def test_env_example_lists_only_prefixed_names():
    names = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(encoding="utf-8"), flags=re.M)
    assert names and all(name.startswith("NEWSLETTER_") for name in names)
