"""The commands as a user runs them: output, files written, and every error path."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import SAMPLE_ISSUE, assert_error, load_sample_data, write

from newsletter import __version__


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_build_newest_issue_by_default(run, project):
    load_sample_data(project)
    result = run("build")
    assert result.exit_code == 0, result.output
    out = project / "build" / SAMPLE_ISSUE
    for name in ("email.mjml", "email.html", "email.txt", "message.eml", "images/ordforererklaeringen.png"):
        assert (out / name).is_file(), name
        assert f"build/{SAMPLE_ISSUE}/{name}" in result.stdout
    size_kb = (out / "email.html").stat().st_size / 1024
    assert f"HTML size: {size_kb:.1f} KB" in result.stdout
    assert result.stderr == ""  # the sample has no warnings


def test_build_picks_the_newest_by_date_not_by_name(run, project):
    write(project / "content/issues/2027-01-eldre/issue.md", "---\ntitle: Eldre\ndate: 2025-01-01\n---\nHei\n")
    result = run("build")
    assert f"Built {SAMPLE_ISSUE}" in result.stdout


def test_build_named_issue_by_unique_part_and_out_folder(run, project, tmp_path):
    out = tmp_path / "elsewhere"
    result = run("build", "ordforer", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "email.html").is_file()
    assert not (project / "build").exists()


def test_build_from_another_folder_with_project_option(run, project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("--project", str(project), "build")
    assert result.exit_code == 0, result.output


def test_project_found_from_a_subfolder(run, project, monkeypatch):
    monkeypatch.chdir(project / "content" / "issues")
    assert run("build").exit_code == 0


def test_no_project_found(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_error(run("build"), "No newsletter.toml", "newsletter init")


def test_project_option_without_settings(run, tmp_path):
    assert_error(run("--project", str(tmp_path), "build"), str(tmp_path), "has no newsletter.toml")


def test_unknown_issue_lists_known_ones(run, project):
    assert_error(run("build", "2031-01-finnes-ikke"), "Unknown issue '2031-01-finnes-ikke'", SAMPLE_ISSUE)


def test_ambiguous_issue(run, project):
    write(project / "content/issues/2026-11-ordforer-igjen/issue.md", "---\ntitle: A\ndate: 2026-11-01\n---\n")
    assert_error(run("build", "ordforer"), "ambiguous", "2026-11-ordforer-igjen")


def test_bad_yaml_names_file_and_line(run, issue_dir):
    path = issue_dir / "02-klemetsrud.md"
    path.write_text("---\ntitle: Karbonfangst\ncategory: [klima\norder: 2\n---\nTekst\n", encoding="utf-8")
    line = assert_error(run("build"), "02-klemetsrud.md:3", "never closed")
    assert line.split("02-klemetsrud.md:")[1].split(":")[0].isdigit()


def test_missing_required_front_matter(run, issue_dir):
    write(issue_dir / "06-uten-tittel.md", "---\ncategory: klima\n---\nTekst\n")
    assert_error(run("build"), "06-uten-tittel.md:2", "missing required front matter 'title'")


def test_missing_issue_date(run, issue_dir):
    path = issue_dir / "issue.md"
    path.write_text(path.read_text(encoding="utf-8").replace("date: 2026-12-03\n", ""), encoding="utf-8")
    assert_error(run("build", SAMPLE_ISSUE), "issue.md:2", "'date'")


def test_image_without_alt_text(run, issue_dir):
    path = issue_dir / "01-ordforererklaeringen.md"
    text = path.read_text(encoding="utf-8")
    path.write_text("\n".join(x for x in text.split("\n") if not x.startswith("image_alt")), encoding="utf-8")
    assert_error(run("build"), "01-ordforererklaeringen.md:5", "no alt text", "image_alt")


def test_markdown_image_without_alt_text(run, issue_dir):
    write(issue_dir / "06-bilde.md", "---\ntitle: Bilde\n---\nFørst litt tekst.\n\n![](ordforererklaeringen.png)\n")
    assert_error(run("build"), "06-bilde.md:6", "no alt text")


def test_missing_image_file(run, issue_dir):
    write(issue_dir / "06-bilde.md", "---\ntitle: Bilde\nimage: finnes-ikke.jpg\nimage_alt: Noe\n---\nTekst\n")
    assert_error(run("build"), "06-bilde.md:3", "'finnes-ikke.jpg' not found")


def test_template_error_names_template_and_line(run, project):
    write(
        project / "templates/email/_footer.mjml.j2", "    <mj-section>\n{{ newsletter.no_such_value }}\n</mj-section>\n"
    )
    assert_error(run("build"), "_footer.mjml.j2:2", "no_such_value")


def test_template_syntax_error(run, project):
    write(project / "templates/email/_footer.mjml.j2", "{% if %}\n")
    assert_error(run("build"), "_footer.mjml.j2:1", "template syntax error")


def test_broken_mjml(run, project):
    write(
        project / "templates/email/_footer.mjml.j2",
        "<mj-section><mj-column><mj-text>a < b</mj-text></mj-column></mj-section>\n",
    )
    assert_error(run("build"), "email.mjml", "did not compile")


def test_verbose_shows_the_traceback(run, project):
    result = run("--verbose", "build", "2031-01-finnes-ikke")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert "Error: Unknown issue" in result.stderr


def test_bad_settings_reported_all_at_once(run, project):
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8")
    text = text.replace('address = "nyhetsbrev@osloregionen.no"', 'address = "ikke-en-adresse"')
    text = text.replace('base_url = "https://nyhetsbrev.osloregionen.no"', 'base_url = "nyhetsbrev.osloregionen.no"')
    path.write_text(text, encoding="utf-8")
    assert_error(run("build"), "2 problem(s)", "sender.address", "newsletter.base_url")


def test_new_creates_an_issue_that_builds(run, project):
    result = run("new", "Nytt fra januar: Bærum og Ås", "--date", "2027-01-14")
    assert result.exit_code == 0, result.output
    folder = project / "content/issues/2027-01-nytt-fra-januar-baerum-og-as"
    assert (folder / "issue.md").is_file()
    assert 'title: "Nytt fra januar: Bærum og Ås"' in (folder / "issue.md").read_text(encoding="utf-8")
    assert "date: 2027-01-14" in (folder / "issue.md").read_text(encoding="utf-8")
    built = run("build")
    assert built.exit_code == 0, built.output
    assert "Built 2027-01-nytt-fra-januar-baerum-og-as" in built.stdout
    html = (project / "build/2027-01-nytt-fra-januar-baerum-og-as/email.html").read_text(encoding="utf-8")
    assert "Nytt fra januar: Bærum og Ås" in html
    assert "14. januar 2027" in html


def test_new_in_english(run, project):
    run("new", "January news", "--date", "2027-01-14", "--lang", "en")
    run("build")
    html = (project / "build/2027-01-january-news/email.html").read_text(encoding="utf-8")
    assert '<html lang="en"' in html
    assert "14 January 2027" in html and "Unsubscribe" in html


def test_new_never_overwrites(run, project):
    run("new", "Samme tittel", "--date", "2027-01-14")
    path = project / "content/issues/2027-01-samme-tittel/issue.md"
    path.write_text("---\ntitle: Mitt arbeid\ndate: 2027-01-14\n---\nViktig tekst\n", encoding="utf-8")
    assert_error(run("new", "Samme tittel", "--date", "2027-01-14"), "already exists")
    assert "Viktig tekst" in path.read_text(encoding="utf-8")


def test_new_rejects_a_bad_date(run, project):
    assert_error(run("new", "Tittel", "--date", "14.13.2027"), "--date '14.13.2027' is not a date", "DD.MM.YYYY")
    assert_error(run("new", "Tittel", "--date", "i morgen"), "is not a date", "YYYY-MM-DD")
    assert not list((project / "content/issues").glob("2027-*"))
    assert run("new", "Tittel", "--date", "14.1.2027").exit_code == 0  # as Norwegians write it
    assert "date: 2027-01-14" in (project / "content/issues/2027-01-tittel/issue.md").read_text(encoding="utf-8")


def test_broken_newest_issue_is_an_error_not_a_silent_build_of_another(run, project):
    """Building the newest issue must not skip the one being written because it is broken."""
    run("new", "Grønn omstilling", "--date", "2027-01-14")
    path = project / "content/issues/2027-01-gronn-omstilling/issue.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('title: "Grønn omstilling"', "title: Klima: nye mål"), encoding="utf-8")
    assert_error(run("build"), "2027-01-gronn-omstilling/issue.md:2", "put the whole text in quotes")
    path.write_text(text.replace("date: 2027-01-14", "date: 2027-02-30"), encoding="utf-8")
    assert_error(
        run("build"), "issue.md:5", "the date 2027-02-30 does not exist"
    )  # the line with the date, not the first
    path.write_text(text.replace("date: 2027-01-14", "date: 03/12/2026"), encoding="utf-8")
    assert_error(run("build"), "issue.md:5", "write it as YYYY-MM-DD or DD.MM.YYYY")
    path.write_text(text.replace("date: 2027-01-14", "date: 14.01.2027"), encoding="utf-8")
    assert run("build").exit_code == 0  # as Norwegians write it
    path.write_text(text.replace("language: nb", "\tlanguage: nb"), encoding="utf-8")
    assert_error(run("build"), "issue.md:6", "tab")


def test_same_date_builds_the_issue_edited_last(run, project):
    import os

    run("new", "Første", "--date", "2027-01-14")
    run("new", "Andre", "--date", "2027-01-14")
    first = project / "content/issues/2027-01-forste/issue.md"
    os.utime(first, (2_000_000_000, 2_000_000_000))
    assert "Built 2027-01-forste" in run("build").stdout


def test_issue_name_typed_with_norwegian_letters(run, project):
    run("new", "Grønn omstilling", "--date", "2027-01-14")
    assert "Built 2027-01-gronn-omstilling" in run("build", "Grønn").stdout


def test_init_creates_a_project_that_builds(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("init", "nytt-prosjekt", "--name", "Nyhetsbrev fra Eksempelregionen")
    assert result.exit_code == 0, result.output
    root = tmp_path / "nytt-prosjekt"
    for name in (
        "newsletter.toml",
        ".env.example",
        ".gitignore",
        "templates/email/issue.mjml.j2",
        "templates/images/logo.png",
        "data/osloregionen-members.csv",
    ):
        assert (root / name).is_file(), name
    assert not list((root / "templates/images").glob("osloregionen-*"))
    monkeypatch.chdir(root)
    built = run("build")
    assert built.exit_code == 0, built.output
    html = next((root / "build").glob("*/email.html")).read_text(encoding="utf-8")
    assert "Nyhetsbrev fra Eksempelregionen" in html


def test_init_refuses_an_existing_project(run, project):
    before = (project / "newsletter.toml").read_text(encoding="utf-8")
    assert_error(run("init", str(project)), "already exists", "nothing was changed")
    assert (project / "newsletter.toml").read_text(encoding="utf-8") == before


def test_every_command_has_help(run):
    from newsletter.cli import cli

    for name, command in cli.commands.items():
        assert command.help, name
        result = run(name, "--help")
        assert result.exit_code == 0
        assert "Usage: " in result.output


def test_python_dash_m(project):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "newsletter", "build"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert Path(project / "build" / SAMPLE_ISSUE / "email.html").is_file()


def test_build_out_never_deletes_files_it_did_not_make(run, project, tmp_path):
    site = tmp_path / "site"
    write(site / "images" / "keep-me.jpg", "bilde")
    assert_error(run("build", "--out", str(site)), "was not made by newsletter")
    assert (site / "images" / "keep-me.jpg").is_file()
    assert run("build", "--out", str(tmp_path / "ny")).exit_code == 0
    assert run("build", "--out", str(tmp_path / "ny")).exit_code == 0  # its own images are replaced


def test_init_never_overwrites_and_escapes_the_name(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a" / ".gitignore", "secret.key\n")
    assert_error(run("init", "a"), "already has .gitignore")
    assert (tmp_path / "a" / ".gitignore").read_text(encoding="utf-8") == "secret.key\n"
    assert run("init", "b", "--name", 'Nytt\\q "sitat"').exit_code == 0
    monkeypatch.chdir(tmp_path / "b")
    assert run("build").exit_code == 0


def test_verbose_shows_our_debug_lines_not_the_markdown_parsers(project):
    import subprocess
    import sys

    def verbose(*args):
        done = subprocess.run([sys.executable, "-m", "newsletter", "--verbose", *args], cwd=project,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "DEBUG newsletter.feeds: feed " in verbose("feeds", "fetch")
    assert "DEBUG markdown_it" not in verbose("build")  # hundreds of lines per article before


def test_a_new_issue_with_its_example_text_left_builds_but_cannot_be_sent_or_scheduled(run, project, monkeypatch):
    from conftest import subscribe

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    run("new", "Nytt fra januar", "--date", "2099-01-14")
    built = run("build")
    assert built.exit_code == 0 and "still has the example text 'Skriv saken her…'" in built.stderr, built.output
    checked = run("check")
    assert re.search(r"^error: \S+01-sak\.md: still has the example text 'Skriv saken her", checked.stdout, re.M), (
        checked.stdout
    )
    subscribe("a@example.no")
    for refused in (run("send", "--yes"), run("schedule", "2099-01-nytt-fra-januar", "--at", "2099-01-14 09:00")):
        assert refused.exit_code == 1 and "Error: 4 error(s) found by 'newsletter check'" in refused.stderr
        assert "error: content/issues/2099-01-nytt-fra-januar/01-sak.md: still has the example" in refused.stderr
    forced = run("schedule", "2099-01-nytt-fra-januar", "--at", "2099-01-14 09:00", "--force")
    assert forced.exit_code == 0 and "Warning: " in forced.stderr and "example text" in forced.stderr, forced.output
    tested = run("send", "--test", "redaksjonen@example.no")  # each leftover is said once, as the error it is
    assert tested.exit_code == 0, tested.output
    lines = [line for line in tested.stderr.splitlines() if "example text 'Skriv saken her" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), tested.stderr


def test_one_broken_article_is_its_own_error_not_a_missing_one(run, project):
    run("new", "Februar", "--date", "2099-02-04")
    article = project / "content/issues/2099-02-februar/01-sak.md"
    article.write_text("---\ntitle: Klima: nye mål\n---\nTekst\n", encoding="utf-8")
    result = run("check", "2099-02-februar")
    assert "01-sak.md:2" in result.output and "no articles yet" not in result.output, result.output
