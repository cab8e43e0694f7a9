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
    assert commands == [
        "python -m pip install -e . && newsletter feeds fetch && newsletter emissions import data/klimagassutslipp-syntetisk.csv && newsletter subscribers import data/abonnenter-eksempel.csv --confirmed && newsletter build && newsletter send --yes",
        "python -m pip install -e '.[test]' && python -m pytest",
    ]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()


def test_staff_guide_covers_the_commands_staff_use():
    for text in ("newsletter new", "newsletter build", "image_alt", "category", "preheader"):
        assert text in GUIDE, text


def test_env_example_lists_only_prefixed_names():
    names = re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(encoding="utf-8"), flags=re.M)
    assert names and all(name.startswith("NEWSLETTER_") for name in names)
