"""Settings: the order CLI > environment > .env > newsletter.toml > default, and validation."""

from __future__ import annotations

import pytest
from conftest import write

from newsletter.config import OPTIONS, find_project, load_settings
from newsletter.errors import ConfigError, ProjectError


def test_toml_values(project):
    s = load_settings()
    assert s.project_dir == project
    assert s.name == "Nyhetsbrev fra Osloregionen"
    assert s.base_url == "https://nyhetsbrev.osloregionen.no"
    assert s.build_dir == project / "build"
    assert s.logo == project / "templates/images/osloregionen-logo.png"
    assert [c.key for c in s.categories] == ["areal", "klima", "konkurransekraft", "fellesskap"]
    assert s.html_warn_kb == 90  # default: not in the file


def test_order_of_sources(project):
    write(project / ".env", "NEWSLETTER_NAME=Fra dotenv\nNEWSLETTER_SENDER_NAME=Dotenv-avsender\n")
    s = load_settings(environ={"NEWSLETTER_SENDER_NAME": "Miljøvariabel"})
    assert s.name == "Fra dotenv"  # .env beats newsletter.toml
    assert s.sender_name == "Miljøvariabel"  # the environment beats .env
    s = load_settings(overrides={"sender_name": "Kommandolinje", "name": None}, environ={"NEWSLETTER_SENDER_NAME": "x"})
    assert s.sender_name == "Kommandolinje"  # the CLI beats everything
    assert s.name == "Fra dotenv"  # an unset CLI option (None) overrides nothing


def test_environment_names_and_conversion(project):
    s = load_settings(
        environ={
            "NEWSLETTER_BASE_URL": "https://eksempel.no/nyhetsbrev/",
            "NEWSLETTER_PATHS_BUILD": "ut",
            "NEWSLETTER_MARKDOWN_ALLOW_RAW_HTML": "yes",
            "NEWSLETTER_HTML_WARN_KB": "80",
        }
    )
    assert s.base_url == "https://eksempel.no/nyhetsbrev"
    assert s.build_dir == project / "ut"
    assert s.allow_raw_html is True
    assert s.html_warn_kb == 80
    assert {o.env for o in OPTIONS} >= {"NEWSLETTER_SENDER_ADDRESS", "NEWSLETTER_LANGUAGE", "NEWSLETTER_PATHS_CONTENT"}


def test_all_problems_at_once(project):
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={
                "NEWSLETTER_LANGUAGE": "sv",
                "NEWSLETTER_SENDER_ADDRESS": "ikke en adresse",
                "NEWSLETTER_HTML_WARN_KB": "mange",
                "NEWSLETTER_LIST_ID": "ikke gyldig",
                "NEWSLETTER_SMTP_SECURITY": "ssl",
            }
        )
    message = str(info.value)
    assert message.startswith("5 problem(s) in the settings")
    for fragment in (
        "NEWSLETTER_LANGUAGE: 'sv' is not a language; use nb or en",
        "NEWSLETTER_SENDER_ADDRESS: 'ikke en adresse' is not a valid e-mail address",
        "NEWSLETTER_HTML_WARN_KB: 'mange' is not a whole number",
        "NEWSLETTER_LIST_ID: 'ikke gyldig' must be a domain-like name",
        "NEWSLETTER_SMTP_SECURITY: 'ssl' must be starttls (with port 587), tls (with port 465) or none",
    ):
        assert fragment in message
    assert "\n" not in message


def test_missing_required_and_unknown_keys(project):
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8").replace('postal_address = "Osloregionen, Rådhusplassen 1, 0037 Oslo"', "")
    path.write_text(text + "\n[sender2]\nx = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "unknown section [sender2]" in message
    path.write_text(text.replace("reply_to =", "replyto =", 1), encoding="utf-8")
    line = text.split("\n").index(next(t for t in text.split("\n") if t.startswith("reply_to ="))) + 1
    with pytest.raises(
        ConfigError, match=rf"newsletter.toml:{line}: unknown setting sender.replyto \(did you mean reply_to\?\)"
    ):
        load_settings()
    assert (
        "newsletter.postal_address: missing; set newsletter.postal_address in newsletter.toml or NEWSLETTER_POSTAL_ADDRESS"
        in message
    )


def test_bad_toml(project):
    """The mistakes people make in newsletter.toml, each at its line with what to write."""
    original = (project / "newsletter.toml").read_text(encoding="utf-8")
    assert original.startswith("# ") and '\nname = "Nyhetsbrev fra Osloregionen"\n' in original
    cases = [
        ('name = "Nyhetsbrev fra Osloregionen"', 'name = "uten slutt',
         r"newsletter.toml:\d+: the quote that starts on this line is never closed"),
        ('name = "Nyhetsbrev fra Osloregionen"', "name = Nyhetsbrev fra Osloregionen",
         r'newsletter.toml:\d+: text must be in quotes: name = "Nyhetsbrev fra Osloregionen"$'),
        ('name = "Nyhetsbrev fra Osloregionen"', "name = “Nyhetsbrev”",
         r"newsletter.toml:\d+: Word's curly quotes; newsletter.toml needs straight ones: name = \"Nyhetsbrev\"$"),
        ('name = "Nyhetsbrev fra Osloregionen"', 'name = "A"\nname = "B"',
         r"newsletter.toml:\d+: name is set twice \(also on line \d+\)"),
        ('name = "Nyhetsbrev fra Osloregionen"', 'name = "A"\nlogo = "C:\\bilder\\logo.png"',
         r"newsletter.toml:\d+: a backslash \(\\\) inside double quotes; write / in file paths"),
        ('name = "Nyhetsbrev fra Osloregionen"', 'name = "A"\nlogo', r"newsletter.toml:\d+: a line that is not 'name = value'"),
        ('name = "Nyhetsbrev fra Osloregionen"', 'name = "Nyhetsbrev" fra Osloregionen',
         r"newsletter.toml:\d+: there is text after the closing quote"),
        ('name = "Nyhetsbrev fra Osloregionen"', "name = 2026-13-40", r"newsletter.toml:\d+: not valid TOML \(Expected"),
        ('name = "Nyhetsbrev fra Osloregionen"', 'name = "A"\nrelay_signs = ja',
         r"newsletter.toml:\d+: relay_signs is on or off: write relay_signs = true or relay_signs = false"),
    ]  # fmt: skip
    for old, new, expected in cases:
        (project / "newsletter.toml").write_text(original.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(ConfigError, match=expected):
            load_settings()
    (project / "newsletter.toml").write_text(original + 'ekstra = "uten slutt', encoding="utf-8")  # at the very end
    with pytest.raises(ConfigError, match=rf"newsletter.toml:{original.count(chr(10)) + 1}: the quote that starts"):
        load_settings()
    line = original.split("\n").index('name = "Nyhetsbrev fra Osloregionen"') + 1
    (project / "newsletter.toml").write_text(original.replace(cases[0][0], cases[0][1], 1), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"newsletter.toml:{line}: "):
        load_settings()


def test_header_values_must_be_single_lines(project):
    with pytest.raises(ConfigError, match="NEWSLETTER_SENDER_NAME: must be a single line"):
        load_settings(environ={"NEWSLETTER_SENDER_NAME": "Osloregionen\r\nBcc: x@example.com"})


def test_find_project_walks_upwards(project):
    deep = project / "content" / "issues"
    assert find_project(deep) == project
    with pytest.raises(ProjectError, match="No newsletter.toml"):
        find_project(project.parent)


def test_empty_lines_from_env_example_mean_unset(project):
    (project / ".env").write_text("NEWSLETTER_SECRET_KEY=\nNEWSLETTER_SMTP_HOST=\n", encoding="utf-8")
    settings = load_settings()
    assert settings.secret_key is None and settings.smtp_host is None
    # ... and do not hide what newsletter.toml says, or what .env says behind an empty variable.
    path = project / "newsletter.toml"
    path.write_text(path.read_text(encoding="utf-8") + '\n[smtp]\nhost = "smtp.example.no"\nport = 2525\n', "utf-8")
    assert (load_settings().smtp_host, load_settings().smtp_port) == ("smtp.example.no", 2525)
    (project / ".env").write_text("NEWSLETTER_SECRET_KEY=" + "k" * 40 + "\nNEWSLETTER_SMTP_PORT=\n", encoding="utf-8")
    settings = load_settings(environ={"NEWSLETTER_SECRET_KEY": "", "NEWSLETTER_SMTP_HOST": " "})
    assert settings.secret_key == "k" * 40 and settings.smtp_host == "smtp.example.no" and settings.smtp_port == 2525


def test_secrets_only_from_the_environment_and_never_printed(project):
    path = project / "newsletter.toml"
    path.write_text(path.read_text(encoding="utf-8") + '\n[smtp]\npassword = "hemmelig"\n', encoding="utf-8")
    with pytest.raises(
        ConfigError, match="smtp.password is a secret; remove it and set NEWSLETTER_SMTP_PASSWORD in .env"
    ):
        load_settings()
    path.write_text(path.read_text(encoding="utf-8").replace('password = "hemmelig"', ""), encoding="utf-8")
    settings = load_settings(
        environ={"NEWSLETTER_SMTP_USERNAME": "nyhetsbrev", "NEWSLETTER_SMTP_PASSWORD": "hemmelig-passord",
                 "NEWSLETTER_SECRET_KEY": "n" * 40}
    )  # fmt: skip
    assert settings.smtp_password == "hemmelig-passord"
    assert "hemmelig-passord" not in repr(settings) and "n" * 40 not in repr(settings)


def test_a_number_setting_takes_whole_numbers_only(project):
    path = project / "newsletter.toml"
    good = path.read_text(encoding="utf-8")
    for bad in ("true", "90.9"):
        path.write_text(good + f"\n[smtp]\nport = {bad}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match="is not a whole number"):
            load_settings()
    path.write_text(good + "\n[smtp]\nport = 2525\n", encoding="utf-8")
    assert load_settings().smtp_port == 2525
