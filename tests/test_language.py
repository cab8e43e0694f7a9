"""The tool speaks the project's language: a complete Norwegian catalogue, and Norwegian output
from a corpus of commands and error paths with no English sentence in it."""

from __future__ import annotations

import importlib.util
import os
import re
import string
from collections import Counter
from datetime import UTC, datetime

import pytest
from conftest import ROOT, SAMPLE_ISSUE, Runner, load_sample_data, subscribe, write

from newsletter import language
from newsletter.clock import parse_when
from newsletter.errors import ScheduleError

spec = importlib.util.spec_from_file_location("catalogue", ROOT / "tools" / "catalogue.py")
catalogue = importlib.util.module_from_spec(spec)
spec.loader.exec_module(catalogue)


def fields(text: str) -> Counter:
    """The {placeholders} of a format string (with their conversion and format), and %(name)s ones."""
    found = Counter(
        f"{name}!{conversion}:{spec}"
        for _, name, spec, conversion in string.Formatter().parse(text)
        if name is not None
    )
    return found + Counter(re.findall(r"%\(\w+\)\w", text))


@pytest.mark.parametrize("domain", ["newsletter", "click"])
def test_every_message_has_a_norwegian_translation_with_the_same_placeholders(domain):
    po = catalogue.read("nb", domain)
    missing, broken = [], []
    for message in catalogue.wanted(domain):
        key = message[0] if isinstance(message, tuple) else message
        entry = po.get(key)
        strings = entry.string if entry is not None and isinstance(entry.string, tuple) else (entry and entry.string,)
        if entry is None or not all(strings) or entry.fuzzy:
            missing.append(key)
            continue
        for original, translated in zip(
            message if isinstance(message, tuple) else (message,) * len(strings), strings, strict=False
        ):
            if domain == "click" and "{" not in original:
                continue  # Click fills in its own words with % or not at all
            if fields(original) != fields(translated):
                broken.append((original, translated))
    assert not missing, f"{len(missing)} message(s) without a Norwegian translation: {missing[:10]}"
    assert not broken, f"placeholders differ: {broken[:5]}"


@pytest.mark.parametrize("domain", ["newsletter", "click"])
def test_the_compiled_catalogue_is_the_one_in_the_po_file(domain):
    mo = catalogue.po_path("nb", domain).with_suffix(".mo")
    assert mo.read_bytes() == catalogue.compiled("nb", domain), "run: python tools/catalogue.py compile"


def test_norwegian_numbers_and_the_choice_of_language(monkeypatch):
    monkeypatch.delenv("NEWSLETTER_LANG")
    language.use("nb")
    assert language._("HTML size: {size:.1f} KB (Gmail clips above 102 KB)", size=12.25).startswith(
        "HTML-størrelse: 12,2 KB"
    ) or "12,2" in language._("HTML size: {size:.1f} KB (Gmail clips above 102 KB)", size=12.25)
    with pytest.raises(ScheduleError, match="er ikke et tidspunkt"):
        parse_when("i morgen tidlig", datetime(2026, 1, 1, tzinfo=UTC))
    monkeypatch.setenv("NEWSLETTER_LANG", "en")  # the environment wins over the project
    with pytest.raises(ScheduleError, match="is not a time"):
        parse_when("i morgen tidlig", datetime(2026, 1, 1, tzinfo=UTC))
    monkeypatch.setenv("NEWSLETTER_LANG", "nb_NO.UTF-8")
    assert language.current() == "nb"
    monkeypatch.setenv("NEWSLETTER_LANG", "de")
    with pytest.raises(ValueError, match="NEWSLETTER_LANG='de'"):
        language.from_environment()


# --- the corpus: what a staff member meets, in Norwegian ---------------------------------------

ENGLISH = {
    "the", "is", "are", "and", "with", "from", "this", "that", "use", "has", "have", "was", "were", "would",
    "should", "must", "which", "there", "your", "you", "does", "into", "only", "when", "what", "not", "of",
    "to", "or", "be", "it", "its", "on", "an", "no", "found", "missing", "unknown", "cannot", "file", "run",
    "check", "give", "set", "see", "add", "build", "built", "error", "errors", "warning",
    "usage", "options", "commands", "show", "message", "exit", "default", "yet", "already", "issue",
}  # fmt: skip
NOT_PROSE = re.compile(
    r"'[^']*'|\"[^\"]*\"|«[^»]*»|https?://\S+|\S+@\S+|(?<!\w)--?[\w-]+|\S*[/\\]\S*|\S+\.(?:md|toml|csv|xlsx|html|txt|eml|db|env|xml|mjml)\b"
    r"|\bNEWSLETTER_\w+|\b[a-z_]+\.[a-z_]+\b|\bnewsletter(?: [a-z-]+)*|\b[A-Z]{2,}\b|\b[a-z]+-[a-z]+\b"
)


def english_in(text: str) -> list[str]:
    """Lines of ``text`` that read as English: two or more English words outside names, quotes,
    paths, addresses, commands and settings."""
    found = []
    for line in text.splitlines():
        prose = NOT_PROSE.sub(" ", line)
        words = {w.lower() for w in re.findall(r"[A-Za-zÆØÅæøå]+", prose)}
        if len(words & ENGLISH) >= 2:
            found.append(line)
    return found


def test_the_english_detector_sees_english_and_passes_norwegian():
    assert english_in("Error: the file is missing; add it.")
    assert english_in("Usage: see the options below")
    assert not english_in("Feil: content/issues/a/issue.md:3: ukjent kategori 'sport'; bruk en av: klima.")
    assert not english_in("Sendt til kari@example.no via 'newsletter send --test kari@example.no'.")


@pytest.fixture
def norsk(project, monkeypatch):
    """The project as staff have it: Norwegian, NEWSLETTER_LANG unset."""
    monkeypatch.delenv("NEWSLETTER_LANG")
    language.use(None)
    yield project
    language.use(None)


def corpus(run: Runner, project, issue_dir, tmp_path) -> list[tuple[str, object]]:
    """Run the commands and error paths staff meet; (what, result) for each."""
    results = []

    def go(*args, input=None):
        results.append((" ".join(args), run(*args, input=input)))

    go("--help")
    for command in ("new", "build", "check", "preview", "send", "schedule", "status", "feeds", "emissions"):
        go(command, "--help")
    go("subscribers", "--help")
    go("subscribers", "import", "--help")
    go("feeds", "fetch")
    go("feeds", "list")
    go("feeds", "status")
    go("feeds", "pick", SAMPLE_ISSUE, "999999")
    go("emissions", "summary")  # no data yet
    go("emissions", "releases")
    load_sample_data(project)
    go("emissions", "summary")
    go("emissions", "summary", "--municipality", "Lillestrom")
    go("new", "Nytt fra januar", "--date", "2027-01-14")
    go("new", "Nytt fra januar", "--date", "2027-01-14")  # exists
    go("new", "Feil dato", "--date", "14.01.27")
    go("build", SAMPLE_ISSUE)
    go("build", "finnes-ikke")
    go("check", SAMPLE_ISSUE)
    write(issue_dir / "09-feil.md", '---\ntitle: "Uten slutt\ncategroy: klima\n---\nTekst\n')
    go("build", SAMPLE_ISSUE)
    write(issue_dir / "09-feil.md", "---\ntitle: Klima: nye mål\n---\nTekst\n")
    go("check", SAMPLE_ISSUE)
    write(issue_dir / "09-feil.md", "---\ntitle: A\ncategroy: klima\nimage: mangler.png\n---\n![](x.png)\n")
    go("check", SAMPLE_ISSUE)
    (issue_dir / "09-feil.md").unlink()
    # subscribers, as Excel saves them
    sheet = tmp_path / "liste.csv"
    sheet.write_bytes(
        "E-post;Navn;Kommune\nkari@example.no;Kari;Lillestrøm\nikke-en-adresse;Per;Asker\nola@example.no;Ola;Bergen\n".encode(
            "cp1252"
        )
    )
    go("subscribers", "import", str(tmp_path))  # a folder, not a file: Click's own words
    write(issue_dir / "09-feil.md", '---\ntitle: "Sak”\nimage: "bilder\\kart.png"\n---\nTekst\n')
    go("check", SAMPLE_ISSUE)
    (issue_dir / "09-feil.md").unlink()
    go("subscribers", "import", str(sheet), "--dry-run")
    go("subscribers", "import", str(sheet), "--confirmed")
    go("subscribers", "add", "ikke-en-adresse")
    go("subscribers", "add", "a@example.no", "--municipality", "Lillestrom")
    go("subscribers", "add", "b@example.no", "--topic", "sprot")
    go("subscribers", "list")
    go("subscribers", "count")
    go("subscribers", "remove", "kari@example.no")
    go("subscribers", "forget", "ingen@example.no", "--yes")
    subscribe("c@example.no")
    go("send", SAMPLE_ISSUE, "--dry-run")
    go("send", SAMPLE_ISSUE)  # not on a terminal
    go("send", SAMPLE_ISSUE, "--test", "meg@example.no")
    go("schedule", SAMPLE_ISSUE, "--at", "i morgen")
    go("schedule", SAMPLE_ISSUE, "--at", "2001-01-01 09:00")
    go("schedule", "list")
    go("schedule", "cancel", SAMPLE_ISSUE)
    go("status", SAMPLE_ISSUE)
    go("secret", "status")
    go("send", SAMPLE_ISSUE, "--yes")
    go("status", SAMPLE_ISSUE)
    go("archive")
    go("feeds", "pick", SAMPLE_ISSUE, "1")  # sent: cannot change
    # Click's own errors
    go("bild")
    go("build", "--ut", "x")
    go("feeds", "pick")
    go("send", "--limit", "null")
    go("check", "--timeout", "abc")
    go("schedule", "add", "--help")
    go("signup-form", "--help")
    go("signup-form")  # web.allowed_origins not set
    # settings
    toml = project / "newsletter.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace('transport = "outbox"', 'transport = "post"'), encoding="utf-8"
    )
    go("send", SAMPLE_ISSUE, "--dry-run")
    return results


def test_a_staff_members_day_in_norwegian_has_no_english_sentence(norsk, issue_dir, tmp_path):
    results = corpus(Runner(), norsk, issue_dir, tmp_path)
    if os.environ.get("SHOW_CORPUS"):  # to read the Norwegian output whole
        print("\n".join(f"$ newsletter {what}\n{result.output}" for what, result in results))
    english = [(what, line) for what, result in results for line in english_in(result.output)]
    assert not english, "\n".join(f"{what}: {line}" for what, line in english)
    # and it is Norwegian: the prefixes, the usage line, the confirmation question
    text = "\n".join(result.output for _, result in results)
    for expected in ("Bruk: ", "Feil: ", "Valg:", "Kommandoer:", "advarsel", "mottaker"):
        assert expected in text, expected
    assert "Traceback" not in text


def test_questions_are_norwegian_and_take_ja_and_nei(norsk):
    run = Runner()
    subscribe("c@example.no")
    run("send", "--test", "meg@example.no")  # makes the signing key
    refused = run("secret", "rotate", input="nei\n")
    assert "[j/N]" in refused.output and "Avbrutt" in refused.output and refused.exit_code == 1, refused.output
    unclear = run("secret", "rotate", input="kanskje\nj\n")
    assert "Svar j eller n." in unclear.output and unclear.exit_code == 0, unclear.output


def test_clicks_own_words_for_a_path_are_norwegian_too(norsk, tmp_path):
    """Click names a path option's kind ('File') in its errors, a word it made in English when
    the command was defined."""
    result = Runner()("subscribers", "import", str(tmp_path))
    assert result.exit_code != 0 and f"Fil '{tmp_path}' er en mappe." in result.stderr, result.stderr
    assert "File" not in result.stderr


def test_a_language_the_tool_does_not_speak_is_one_norwegian_line(norsk, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_LANG", "de")
    result = Runner()("build")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Feil: NEWSLETTER_LANG='de' er ikke et språk verktøyet kan; bruk nb eller en."


def test_the_project_chooses_the_language_of_help_and_messages(norsk):
    run = Runner()
    assert "Bruk: " in run("--help").output and "Valg:" in run("build", "--help").output
    assert run("build", "finnes-ikke").stderr.startswith("Feil: Ukjent utgave 'finnes-ikke'")
    (norsk / ".env").write_text("NEWSLETTER_LANG=en\n", encoding="utf-8")
    assert "Usage: " in run("--help").output
    assert run("build", "finnes-ikke").stderr.startswith("Error: Unknown issue 'finnes-ikke'")
    (norsk / ".env").unlink()
    toml = norsk / "newsletter.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            'language = "nb"\n', 'language = "nb"\ninterface_language = "en"\n', 1
        ),
        encoding="utf-8",
    )
    assert "Options:" in run("send", "--help").output
    assert run("build", "finnes-ikke").stderr.startswith("Error: Unknown issue")


def test_staff_read_oslo_times_norwegian_numbers_and_their_own_words(norsk, tmp_path):
    run = Runner()
    load_sample_data(norsk)
    # times in Oslo time as Norwegians write them, never ISO with Z or UTC
    status = run("feeds", "status").output
    assert re.search(r"\d\d\.\d\d\.\d{4} kl\. \d\d\.\d\d", status) and "Z" not in status, status
    assert re.search(r"importert \d\d\.\d\d\.\d{4} kl\. \d\d\.\d\d", run("emissions", "releases").output)
    subscribe("c@example.no")
    made = run("schedule", SAMPLE_ISSUE, "--at", "2030-06-01 11:00")
    assert f"{SAMPLE_ISSUE} er planlagt sendt 01.06.2030 kl. 11.00." in made.output and "UTC" not in made.output
    assert "run-due" in made.output and "godkjenner" in made.output  # what must run, what an edit means
    assert "01.06.2030 kl. 11.00" in run("schedule", "list").output
    assert "Avlyst" in run("schedule", "cancel", SAMPLE_ISSUE).output
    gone = run("schedule", "cancel", "finnesikke")
    assert gone.exit_code == 1 and "Ukjent utgave 'finnesikke'" in gone.stderr, gone.output
    # counts with a space between thousands
    sheet = tmp_path / "mange.csv"
    sheet.write_text("E-post;Navn\n" + "".join(f"p{n}@example.no;P {n}\n" for n in range(1200)), encoding="utf-8")
    imported = run("subscribers", "import", str(sheet), "--confirmed")
    assert "1\u00a0200" in imported.output, imported.output
    # segments in the staff's words: kommune, språk, tema and the status names they read
    listed = run("subscribers", "list", "--segment", "status=bekreftet kommune=Lillestrøm")
    assert listed.exit_code == 0, listed.output
    wrong = run("send", "--dry-run", "--segment", "fylke=3")
    assert "bruk kommune, språk, tema eller status" in wrong.stderr, wrong.output
    wrong = run("subscribers", "list", "--segment", "status=sendt")
    assert "bekreftet" in wrong.stderr and "confirmed" not in wrong.stderr, wrong.output
    # emission years and names: a guess, and the years there are
    guess = run("emissions", "summary", "--municipality", "Lillestrom")
    assert "Lillestrøm" in guess.stderr, guess.output
    years = run("emissions", "summary", "--from", "1900", "--to", "1901")
    assert re.search(r"det har årene \d{4}", years.stderr), years.output


def test_check_names_the_issue_in_norwegian_when_it_cannot_be_built(norsk, issue_dir):
    write(issue_dir / "issue.md", "---\nsubject: Uten dato\n---\nTekst\n")
    out = Runner()("check", SAMPLE_ISSUE).output
    assert re.search(r"^feil: (utgave|content/issues/\S+): ", out, re.M) and "issue:" not in out, out
