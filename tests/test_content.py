"""Issue folders, front matter and Markdown -> Issue and Article."""

from __future__ import annotations

import re
import shutil
from datetime import date

import pytest
from conftest import SAMPLE_ISSUE, write

from newsletter.config import load_settings
from newsletter.content import find_issue, load_issue, slugify, split_front_matter
from newsletter.errors import ContentError, ProjectError
from newsletter.markup import render_markdown


def _load(settings=None):
    settings = settings or load_settings()
    return load_issue(settings, find_issue(settings))


def assert_found(pattern: str, level: str = "error") -> None:
    """The issue still loads, and one of its findings of ``level`` reads ``pattern`` (a regex)."""
    found = [f.text for f in _load().findings if f.level == level]
    assert any(re.search(pattern, text) for text in found), found


def test_sample_issue(project):
    issue = _load()
    assert issue.id == SAMPLE_ISSUE
    assert issue.date == date(2026, 12, 3)
    assert issue.language == "nb"
    assert [a.id for a in issue.articles][:2] == ["01-ordforererklaeringen", "02-klemetsrud"]
    assert [c.key for c in issue.sections] == ["klima", "areal", "konkurransekraft", "fellesskap"]
    first = issue.articles[0]
    assert first.category.key == "klima"
    assert (
        first.image.url == f"https://nyhetsbrev.osloregionen.no/archive/{SAMPLE_ISSUE}/images/ordforererklaeringen.png"
    )
    assert first.image.alt.startswith("Illustrasjon")
    assert [a.filename for a in issue.assets] == ["ordforererklaeringen.png"]
    assert issue.findings == ()


def test_articles_sorted_by_order_then_file_name(project, issue_dir):
    write(issue_dir / "00-forst.md", "---\ntitle: Først i klima\ncategory: klima\norder: 0\n---\n")
    write(issue_dir / "zz-uten-order.md", "---\ntitle: Uten rekkefølge\ncategory: klima\n---\n")
    titles = [a.title for a in _load().articles if a.category and a.category.key == "klima"]
    assert titles[0] == "Først i klima" and titles[-1] == "Uten rekkefølge"


def test_category_by_name_alias_and_case(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: A\ncategory: Klima og MILJØ\n---\n")
    write(issue_dir / "07-b.md", "---\ntitle: B\ncategory: Felleskap og samarbeid\n---\n")
    by_id = {a.id: a for a in _load().articles}
    assert by_id["06-a"].category.key == "klima"
    assert by_id["07-b"].category.key == "fellesskap"


def test_unknown_category(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: A\ncategory: sport\n---\n")
    assert_found(r"06-a\.md:3: unknown category 'sport'; use one of: areal")


def test_unknown_front_matter_is_a_warning(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: A\nforfatter: Kari\n---\n")
    (warning,) = _load().findings
    assert warning.level == "warning" and "06-a.md:3: unknown front matter 'forfatter' is ignored" in warning.text


def test_misspelt_front_matter_key_is_an_error_with_a_guess(project, issue_dir):
    # 'categroy' would silently move the article to the default category: refuse, and say what was meant
    write(issue_dir / "06-a.md", "---\ntitle: A\ncategroy: klima\n---\n")
    assert_found(r"06-a\.md:3: unknown front matter 'categroy' \(did you mean 'category'\?\); correct the name")


def test_unknown_category_suggests_the_closest(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: A\ncategory: kilma\n---\n")
    assert_found(r"06-a\.md:3: unknown category 'kilma' \(did you mean 'klima'\?\)")


def test_bad_values(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: A\norder: først\n---\n")
    assert_found(r"06-a\.md:3: order 'først' must be a whole number")
    write(issue_dir / "06-a.md", "---\ntitle: A\nlink: javascript:alert(1)\n---\n")
    assert_found(r"06-a\.md:3: link 'javascript:alert\(1\)' must start with https://")
    write(issue_dir / "06-a.md", "---\ntitle: A\nimage: bilde.svg\nimage_alt: Bilde\n---\n")
    write(issue_dir / "bilde.svg", "<svg/>")
    assert_found(r"06-a\.md:3: image 'bilde.svg' is \.svg")


def test_bad_issue_language_and_date(project, issue_dir):
    path = issue_dir / "issue.md"
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace("language: nb", "language: nn"), encoding="utf-8")
    assert_found(r"issue\.md:6: language 'nn' is not supported")
    path.write_text(original.replace("date: 2026-12-03", "date: 3. desember"), encoding="utf-8")
    with pytest.raises(ContentError, match=r"issue\.md:5: date '3. desember' is not a date; write it as YYYY-MM-DD"):
        load_issue(load_settings(), issue_dir)


def test_front_matter_forms(tmp_path):
    path = write(tmp_path / "a.md", "\ufeff---\r\ntitle: Æøå\r\n---\r\nBrødtekst\r\n")
    meta, body, first = split_front_matter(path)
    assert meta == {"title": "Æøå"} and body.strip() == "Brødtekst" and first == 4
    with pytest.raises(ContentError, match=r"a\.md:1: the file must start with front matter"):
        split_front_matter(write(tmp_path / "a.md", "title: x\n"))
    with pytest.raises(ContentError, match=r"a\.md:1: the front matter is not closed"):
        split_front_matter(write(tmp_path / "a.md", "---\ntitle: x\n"))
    with pytest.raises(ContentError, match=r"a\.md:2: the front matter must be 'key: value' lines"):
        split_front_matter(write(tmp_path / "a.md", "---\n- x\n---\n"))
    with pytest.raises(ContentError, match=r"a\.md:4: not UTF-8 text \(saved as 'ANSI'.*Encoding: UTF-8"):
        (tmp_path / "a.md").write_bytes("---\ntitle: Sak\n---\nÆrlig talt, ærlig.\n".encode("cp1252"))
        split_front_matter(tmp_path / "a.md")
    with pytest.raises(ContentError, match=r"a\.md: saved as 'Unicode' \(UTF-16\); save it again as UTF-8"):
        (tmp_path / "a.md").write_bytes("---\ntitle: Sak\n---\nÆrlig.\n".encode("utf-16"))
        split_front_matter(tmp_path / "a.md")


def test_relative_links_and_markdown_images_are_published(project, issue_dir):
    write(issue_dir / "vedlegg/rapport.pdf", "%PDF-1.4")
    write(
        issue_dir / "06-a.md",
        "---\ntitle: A\n---\nSe [rapporten](vedlegg/rapport.pdf) og ![Kartet](ordforererklaeringen.png)\n",
    )
    issue = _load()
    article = next(a for a in issue.articles if a.id == "06-a")
    base = f"https://nyhetsbrev.osloregionen.no/archive/{SAMPLE_ISSUE}/images/"
    assert f'href="{base}vedlegg-rapport.pdf"' in article.html
    assert f'src="{base}ordforererklaeringen.png" alt="Kartet"' in article.html
    assert sorted(a.filename for a in issue.assets) == ["ordforererklaeringen.png", "vedlegg-rapport.pdf"]
    assert f"rapporten ({base}vedlegg-rapport.pdf)" in " ".join(article.text.split())


def test_missing_linked_file(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: A\n---\n\nTekst\n\nSe [rapporten](rapport.pdf)\n")
    assert_found(r"06-a\.md:7: linked file 'rapport.pdf' not found")
    (issue_dir / "Rapport.PDF").write_bytes(b"%PDF-1.4\n")  # found on Windows, not on the web server
    assert_found(r"06-a\.md:7: 'rapport.pdf' is not there, but Rapport.PDF is: write the name as it is, capital")


def test_markdown_text_part():
    source = (
        "# Overskrift\n\nEt avsnitt med [lenke](https://example.org) og https://x.no.\n\n"
        "- punkt en\n- punkt to\n\n1. først\n2. så\n\n> sitat\n\n| A | B |\n|---|---|\n| 1 | 2 |\n"
    )
    rendered = render_markdown(source, lambda t, k, n: t)
    assert rendered.text == (
        "Overskrift\n----------\n\nEt avsnitt med lenke (https://example.org) og https://x.no.\n\n"
        "- punkt en\n- punkt to\n\n1. først\n2. så\n\n> sitat\n\nA | B\n1 | 2"
    )
    assert rendered.html.startswith("<h3>Overskrift</h3>")
    assert "<table>" in rendered.html


def test_long_lines_wrap_without_breaking_links():
    url = "https://www.osloregionen.no/" + "a" * 80
    text = render_markdown(("ord " * 30) + f"[x]({url})", lambda t, k, n: t).text
    assert all(len(line) <= 72 for line in text.split("\n") if url not in line)
    assert url in text


def test_documents_rendered_one_after_another_keep_their_own_refused_links_and_headings():
    """The parser is made once per thread and reused: nothing of one document may reach the next."""
    import threading

    first = render_markdown("# A\n\n[x](javascript:alert(1))\n", lambda t, k, n: t, heading_offset=1)
    second = render_markdown("# B\n\n[y](https://example.org)\n", lambda t, k, n: t)
    assert first.refused == ((2, "javascript:alert(1)"),) and first.html.startswith("<h2>A</h2>")
    assert second.refused == () and second.html.startswith("<h3>B</h3>")
    raw = render_markdown("<b>fet</b> <script>x</script>\n", lambda t, k, n: t, allow_raw_html=True)
    plain = render_markdown("<b>fet</b>\n", lambda t, k, n: t)
    assert "<b>fet</b>" in raw.html and "&lt;b&gt;" in plain.html and raw.removed
    seen = []
    threads = [
        threading.Thread(target=lambda u=u: seen.append(render_markdown(f"[z]({u})", lambda t, k, n: t).refused))
        for u in ("javascript:a()", "https://example.org", "vbscript:b", "https://x.no") * 5
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == sorted([((0, "javascript:a()"),), (), ((0, "vbscript:b"),), ()] * 5)


def test_the_parser_is_made_once_per_thread_and_many_documents_leave_nothing_behind():
    """One parser per thread (a parser is not safe to share while a document is parsed), and a
    long run of documents in one thread: each sees its own refused link and no other (a link
    check that wrapped the last document's would grow until Python's recursion limit)."""
    import threading

    from newsletter.markup import _parser

    assert _parser(False) is _parser(False) and _parser(True) is not _parser(False)
    other = []
    thread = threading.Thread(target=lambda: other.append(_parser(False)))
    thread.start()
    thread.join()
    assert other[0] is not _parser(False)
    for n in range(1_200):
        rendered = render_markdown(f"Sak {n}: [lenke](javascript:go({n}))\n", lambda t, k, n: t)
        assert rendered.refused == ((0, f"javascript:go({n})"),), n


def test_slugify():
    assert slugify("Ordførererklæringen for klima og miljø") == "ordforerklaeringen-for-klima-og-miljo".replace(
        "ordforerklaeringen", "ordforererklaeringen"
    )
    assert slugify("Ås, Bærum & Skiptvedt!") == "as-baerum-skiptvedt"
    assert slugify("???") == "nyhetsbrev"


def test_yes_no_on_off_stay_text(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: No\nlink_text: On\nlink: https://example.org\n---\n")
    article = next(a for a in _load().articles if a.id == "06-a")
    assert article.title == "No" and article.link_text == "On"
    path = issue_dir / "issue.md"
    path.write_text(path.read_text(encoding="utf-8").replace("language: nb", "language: no"), encoding="utf-8")
    assert_found("language 'no' is not supported; use nb or en")


def test_hash_in_unquoted_text_is_an_error(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: Vi er #1 i Norge\n---\n")
    (error,) = _load().findings
    assert error.level == "error"
    assert (
        "06-a.md:2: the text after '#' is left out (it reads as a comment), so the title would be just 'Vi er'"
        in error.text
    )
    assert 'title: "Vi er #1 i Norge"' in error.text
    write(issue_dir / "06-a.md", "---\ntitle: “Vi er #1 i Norge”\n---\n")  # in Word's quotes it is whole
    assert not _load().findings and {a.title for a in _load().articles} >= {"Vi er #1 i Norge"}


def test_file_names_with_norwegian_letters_and_spaces(project, issue_dir):
    write(issue_dir / "gods på bane.pdf", "%PDF")
    write(
        issue_dir / "06-a.md",
        "---\ntitle: A\n---\nSe [rapporten](<gods på bane.pdf>) og [den](gods%20p%C3%A5%20bane.pdf)\n",
    )
    issue = _load()
    article = next(a for a in issue.articles if a.id == "06-a")
    assert article.html.count("/images/gods%20p%C3%A5%20bane.pdf") == 2
    assert "gods på bane.pdf" in [a.filename for a in issue.assets]


def test_web_address_without_scheme(project, issue_dir):
    write(issue_dir / "06-a.md", "---\ntitle: A\nlink: www.osloregionen.no/\n---\n")
    assert_found(r"06-a\.md:3: 'www.osloregionen.no/' looks like a web address; write it with https://")


def test_links_cannot_publish_files_outside_the_issue(project, issue_dir):
    write(project / ".env", "NEWSLETTER_SECRET_KEY=" + "h" * 40 + "\n")
    write(issue_dir / "06-a.md", "---\ntitle: A\n---\nSe [vedlegget](../../../.env)\n")
    assert_found(r"06-a\.md:4: '\.\./\.\./\.\./\.env' is outside the issue folder")


def test_two_articles_with_the_same_simplified_name(project, issue_dir):
    write(issue_dir / "07-møte.md", "---\ntitle: A\n---\nTEKST-A\n")
    write(issue_dir / "07-mote.md", "---\ntitle: B\n---\nTEKST-B\n")
    assert_found("has the same name as")


def test_yaml_mistakes_at_their_own_line_in_plain_words(tmp_path):
    # an unclosed quote on line 2 is reported at line 2, not where the parser gave up
    path = write(tmp_path / "a.md", '---\ntitle: "Klima i regionen\ncategory: klima\norder: 2\n---\n')
    with pytest.raises(ContentError, match=r"a\.md:2: the quote that starts on this line is never closed"):
        split_front_matter(path)
    path = write(tmp_path / "a.md", "---\ntitle: Klima: nye mål\n---\n")
    with pytest.raises(ContentError, match=r"a\.md:2: a ':' followed by a space .*\(column 13\); put the whole text"):
        split_front_matter(path)
    path = write(tmp_path / "a.md", "---\ntitle: A\ncategory: [klima\norder: 2\n---\n")
    with pytest.raises(ContentError, match=r"a\.md:3: the '\[' on this line starts a list that is never closed"):
        split_front_matter(path)


def test_more_yaml_mistakes_each_named_at_its_line(tmp_path):
    cases = [
        # an unclosed quote that a quote on a later line closes: YAML notices it lines later
        ('---\ntitle: "Klima: ja\norder: 1\nimage_alt: "Bilde"\n---\n', r"a\.md:2: the quote that starts on this line is never closed"),
        ("---\ntitle: 'Klima\norder: 1\nimage_alt: 'Bilde'\n---\n", r"a\.md:2: the quote that starts on this line is never closed"),
        ('---\ntitle: A\nimage_alt: "Bilde" av ordføreren\n---\n', r"a\.md:3: there is text after the closing quote"),
        ('---\ntitle: "Han sa "hei" til oss"\norder: 1\n---\n',
         r"a\.md:2: quote marks inside a text in quotes; use « » inside it, or .* title: 'Han sa \"hei\" til oss'"),
        ("---\ntitle: A\n- klima\n---\n", r"a\.md:3: a line that starts with '-' \(a list\)"),
        ('---\ntitle: A\nimage: "bilder\\sak.jpg"\n---\n', r"a\.md:3: a backslash \(\\\) inside double quotes"),
        ("---\ntitle: A\nimage_alt: @ordforer\n---\n", r"a\.md:3: a value that starts with @ or ` must be in quotes"),
        # Windows paths in double quotes: YAML would read \b as a control character, \U as an escape
        ('---\ntitle: A\nimage: "bilder\\bilde.jpg"\n---\n', r"a\.md:3: a backslash \(\\\) inside double quotes"),
        ('---\ntitle: A\nimage: "C:\\Users\\kari\\b.jpg"\n---\n', r"a\.md:3: a backslash \(\\\) inside double quotes"),
        ('---\ntitle: A\ncategory:"klima"\n---\n', r"a\.md:3: there is no space after 'category:'; write category: \"klima\""),
        # one quote typed, the other pasted from Word; text after Word's closing quote
        ('---\ntitle: "Klima: nye mål”\n---\n', r"a\.md:2: the text starts with \" but ends with ”; use the same kind"),
        ("---\ntitle: “Februar: gods på bane” – og mer\n---\n", r"a\.md:2: there is text after the closing quote"),
        # a key written twice: YAML would keep the last without a word
        ("---\ntitle: Første\norder: 1\ntitle: Andre\n---\n", r"a\.md:4: 'title' is written twice \(also on line 2\)"),
        ("---\nemissions:\n  from: 2019\n  from: 2020\n---\n", r"a\.md:4: 'from' is written twice \(also on line 3\)"),
    ]  # fmt: skip
    for text, expected in cases:
        path = write(tmp_path / "a.md", text)
        with pytest.raises(ContentError, match=expected):
            split_front_matter(path)
    # what is right stays right: quotes closed on their line, escapes, a quote inside the text
    path = write(
        tmp_path / "a.md", "---\ntitle: \"Han sa \\\"ja\\\"\"\nimage_alt: 'Kari''s bilde' # merknad\norder: 2\n---\n"
    )
    assert split_front_matter(path)[0] == {"title": 'Han sa "ja"', "image_alt": "Kari's bilde", "order": 2}
    path = write(tmp_path / "a.md", "---\ntitle: \"Han sa “ja”\"\nimage_alt: 'Kari''s “bilde”'\n---\n")
    assert split_front_matter(path)[0] == {"title": "Han sa “ja”", "image_alt": "Kari's “bilde”"}
    # the inner lines of a long quoted value or a block text are never taken for mistakes
    valid = {
        '---\ntitle: "Les mer\n  https://x.no"\n---\n': {"title": "Les mer https://x.no"},
        '---\ntitle: "Boka “Klima”\n  og mer"\n---\n': {"title": "Boka “Klima” og mer"},
        '---\ntitle: A\npreheader: |\n  Tema: "Klima”\n  Sti: "C:\\mappe"\n---\n':
            {"title": "A", "preheader": 'Tema: "Klima”\nSti: "C:\\mappe"'},
        '---\ntitle: "Linje\\tTab \\u00e5 \\/ slutt"\n---\n': {"title": "Linje\tTab å / slutt"},
        '---\ntitle: A\nlink: https://x.no/a:b\n---\n': {"title": "A", "link": "https://x.no/a:b"},
    }  # fmt: skip
    for text, expected in valid.items():
        assert split_front_matter(write(tmp_path / "a.md", text))[0] == expected, text
    # a long quoted value that is right, and a mistake after it: the mistake is named, at its line
    path = write(tmp_path / "a.md", '---\ntitle: "To\n  linjer"\norder: 1\nimage_alt: "Bilde" av ordføreren\n---\n')
    with pytest.raises(ContentError, match=r"a\.md:5: there is text after the closing quote"):
        split_front_matter(path)
    path = write(tmp_path / "a.md", '---\ntitle: A\nimage: "bilder\\nytt.jpg"\n---\n')  # \n: a line break
    with pytest.raises(ContentError, match=r"a\.md:3: a backslash"):
        split_front_matter(path)


def test_curly_quotes_from_word_are_quotes(tmp_path):
    path = write(tmp_path / "a.md", "---\ntitle: “Klima: nye mål”\nsummary: ‘Hei: du’\nimage_alt: „Sitat“\n---\n")
    meta, _, _ = split_front_matter(path)
    assert meta["title"] == "Klima: nye mål" and meta["summary"] == "Hei: du"
    # quotes inside the text stay as they were
    path = write(tmp_path / "a.md", '---\ntitle: “Han sa \\"ja\\": ferdig”\n---\n')
    assert split_front_matter(path)[0]["title"] == 'Han sa \\"ja\\": ferdig'


def test_issue_names_without_regard_to_case_and_with_a_guess(project):
    settings = load_settings()
    root = settings.issues_dir
    write(root / "2027-02-februar-2027/issue.md", "---\ntitle: Februar\ndate: 2027-02-04\n---\n")
    assert find_issue(settings, "Februar").name == "2027-02-februar-2027"
    assert find_issue(settings, "2027-02-FEBRUAR-2027").name == "2027-02-februar-2027"
    with pytest.raises(
        ProjectError, match=r"Unknown issue 'ordforerklaeringen' \(did you mean '2026-12-ordforererklaeringen'"
    ):
        find_issue(settings, "ordforerklaeringen")
    # a word of the name misspelt is guessed too
    with pytest.raises(ProjectError, match=r"Unknown issue 'febuar' \(did you mean '2027-02-februar-2027'"):
        find_issue(settings, "febuar")
    # a File Explorer copy does not make the name ambiguous: the proper folder is meant
    shutil.copytree(root / "2027-02-februar-2027", root / "2027-02-februar-2027 - Kopi")
    assert find_issue(settings, "februar").name == "2027-02-februar-2027"
    write(root / "2027-03-februar-igjen/issue.md", "---\ntitle: Igjen\ndate: 2027-03-04\n---\n")
    with pytest.raises(ProjectError, match="ambiguous"):  # two proper issues still are
        find_issue(settings, "februar")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Februar 2027", r"rename the folder to '2027-02-februar'"),
        ("2027-01-ny utgave", r"rename the folder to '2027-01-ny-utgave'"),
        (f"{SAMPLE_ISSUE} - Kopi", r"looks like a copy of another issue's folder"),
        (f"{SAMPLE_ISSUE} (1)", r"looks like a copy"),
        (f"{SAMPLE_ISSUE} copy 2", r"looks like a copy"),
    ],
)
def test_badly_named_or_copied_folders_are_errors_and_never_the_newest(project, name, message):
    settings = load_settings()
    source = settings.issues_dir / SAMPLE_ISSUE
    copy = settings.issues_dir / name
    shutil.copytree(source, copy)
    text = (copy / "issue.md").read_text(encoding="utf-8")
    (copy / "issue.md").write_text(text.replace("date: 2026-12-03", "date: 2027-02-04"), encoding="utf-8")
    # dated later and edited last: a copy is passed over; another name is the issue meant, so
    # the newest is not chosen past it without a word
    if "copy" in message:
        assert find_issue(settings).name == SAMPLE_ISSUE
    else:
        with pytest.raises(ProjectError, match=f"The newest issue is in .*{message}"):
            find_issue(settings)
    with pytest.raises(ContentError, match=message):
        load_issue(settings, copy)


def test_an_issue_dated_far_ahead_is_a_warning(project, issue_dir):
    from datetime import timedelta

    path = issue_dir / "issue.md"
    original = path.read_text(encoding="utf-8")
    ahead = date.today() + timedelta(days=100)
    path.write_text(original.replace("date: 2026-12-03", f"date: {ahead.isoformat()}"), encoding="utf-8")
    assert_found(rf"issue\.md:5: the issue is dated {ahead.isoformat()}, more than two months from today", "warning")
    soon = date.today() + timedelta(days=30)
    path.write_text(original.replace("date: 2026-12-03", f"date: {soon.isoformat()}"), encoding="utf-8")
    assert not [f for f in _load().findings if "two months" in f.text]


def test_a_quote_from_word_never_closed_and_a_stray_space_are_named_at_their_line(tmp_path):
    path = write(tmp_path / "a.md", "---\ntitle: “Klima: nye mål\ncategory: klima\n---\n")
    with pytest.raises(ContentError, match=r"a\.md:2: the quote “ that starts on this line is never closed"):
        split_front_matter(path)
    path = write(tmp_path / "a.md", "---\ntitle: Klima\n category: klima\norder: 1\n---\n")
    with pytest.raises(
        ContentError, match=r"a\.md:3: this line begins with a space; remove the space before 'category:'"
    ):
        split_front_matter(path)
    # a nested block is indented on purpose, and reads
    path = write(tmp_path / "a.md", "---\ntitle: Klima\nemissions:\n  from: 2019\n  to: 2020\n---\n")
    assert split_front_matter(path)[0]["emissions"] == {"from": 2019, "to": 2020}


def test_a_newer_issue_in_a_badly_named_folder_is_not_passed_over_in_silence(project):
    settings = load_settings()
    root = settings.issues_dir
    write(root / "Mars 2027/issue.md", "---\ntitle: Mars\ndate: 2027-03-05\n---\n")
    with pytest.raises(ProjectError, match=r"The newest issue is in content/issues/Mars 2027, but .*rename the folder "
                       r"to '2027-03-mars'.*'newsletter build 2026-12-ordforererklaeringen'"):  # fmt: skip
        find_issue(settings)
    assert find_issue(settings, SAMPLE_ISSUE).name == SAMPLE_ISSUE  # named, the older one still builds
    from newsletter.delivery import status

    with pytest.raises(ProjectError, match="The newest issue is in"):  # nothing sent: the reason stands
        status(settings, None)
    (root / "Mars 2027").rename(root / "2026-12-ordforererklaeringen - Kopi")  # a copy is passed over
    assert find_issue(settings).name == SAMPLE_ISSUE
    write(root / "eldre/issue.md", "---\ntitle: Eldre\ndate: 2020-01-01\n---\n")  # older: no matter
    assert find_issue(settings).name == SAMPLE_ISSUE


def test_files_meant_as_articles_that_are_not_read_are_named(project, issue_dir):
    write(issue_dir / "07-ny-sak.md.txt", "---\ntitle: Ny sak\n---\nTekst\n")
    write(issue_dir / "08-notat.docx", "PK")
    write(issue_dir / "09-STOR.MD", "---\ntitle: Store bokstaver\n---\nTekst i en sak.\n")
    write(issue_dir / "notater.txt", "Husk å ringe.")  # a note of one's own: only a warning
    issue = _load()
    warnings = [f.text for f in issue.findings if f.level == "warning"]
    errors = [f.text for f in issue.findings if f.level == "error"]  # an article left out is not sent so
    assert any(re.search(r"07-ny-sak\.md\.txt: is not read: only files whose names end in \.md.*rename it to "
                         r"'07-ny-sak\.md'", t) for t in errors), errors  # fmt: skip
    assert any("notater.txt: is not read" in t for t in warnings), warnings
    assert any("08-notat.docx: is a word-processor document and is not read" in t for t in warnings), warnings
    assert "09-STOR.MD" in [a.path.name for a in issue.articles]  # capital letters in the ending are fine
    assert not any("ordforererklaeringen.png" in t for t in warnings)  # images are not articles
    # an attachment the issue links to, and Word's lock file beside an open document, are fine
    write(issue_dir / "10-vedlegg.md", "---\ntitle: Vedlegg\n---\nFyll ut [skjemaet](skjema.docx).\n")
    write(issue_dir / "skjema.docx", "PK")
    write(issue_dir / "~$notat.docx", "lock")
    warnings = [f.text for f in _load().findings if f.level == "warning"]
    assert not any("skjema.docx" in t or "~$notat" in t for t in warnings), warnings
    assert any("08-notat.docx" in t for t in warnings), warnings


def test_a_windows_path_and_a_feeds_value_that_is_not_true_or_false(project, issue_dir):
    path = issue_dir / "01-ordforererklaeringen.md"
    text = path.read_text(encoding="utf-8")
    write(path, text.replace("image: ordforererklaeringen.png", "image: bilder\\ordforererklaeringen.png"))
    assert_found(r"'bilder\\ordforererklaeringen\.png' has a backslash \(\\\); write / between folders: "
                 r"bilder/ordforererklaeringen\.png")  # fmt: skip
    write(path, text + "\n![Kart](kart\\region.png)\n")
    assert_found(r"'kart\\region\.png' has a backslash")
    write(path, text)
    issue = issue_dir / "issue.md"
    write(issue, issue.read_text(encoding="utf-8").replace("title:", "feeds: nei\ntitle:", 1))
    assert_found(r"issue\.md:2: 'feeds' can only be true or false, not 'nei'; write feeds: false")


def test_field_names_with_capital_letters_or_nothing_after_them(project, issue_dir):
    write(issue_dir / "06-a.md", "---\nTitle: Sak\n---\nTekst\n")
    assert_found(r"06-a\.md:2: write 'title' in small letters: title: \.\.\. \(not Title:\)")
    write(issue_dir / "06-a.md", "---\ntitle: Sak\nCategory: klima\n---\nTekst\n")
    assert_found(r"06-a\.md:3: write 'category' in small letters")
    found = [f.text for f in _load().findings if "Category" in f.text]
    assert len(found) == 1, found  # said once, not also as an unknown name
    write(issue_dir / "06-a.md", "---\ntitle:\norder: 2\n---\nTekst\n")
    assert_found(r"06-a\.md:2: 'title' is empty; write the text after 'title:'")


def test_an_article_whose_front_matter_cannot_be_read_still_has_its_links_and_images_checked(project, issue_dir):
    """One 'check' names every problem: the broken front matter, and what the text links to."""
    (issue_dir / "kart.png").write_bytes((issue_dir / "ordforererklaeringen.png").read_bytes())
    write(issue_dir / "06-a.md", '---\ntitle: "Uten slutt\norder: 1\n---\nSe [rapporten](mangler.pdf).\n\n'
          "![Kart](kart.png)\n")  # fmt: skip
    issue = _load()
    errors = [f.text for f in issue.findings if f.level == "error"]
    assert any(re.search(r"06-a\.md:2: the quote that starts on this line is never closed", t) for t in errors)
    assert any(re.search(r"06-a\.md:5: linked file 'mangler.pdf' not found", t) for t in errors), errors
    assert "06-a.md" not in [a.path.name for a in issue.articles]  # the article itself stays out
    assert "kart.png" not in [a.filename for a in issue.assets]  # and its files are not published


def test_an_unknown_section_is_named_at_its_own_line(project, issue_dir):
    path = issue_dir / "issue.md"
    text = path.read_text(encoding="utf-8")
    write(path, text.replace("  - areal\n", "  - tranport\n", 1))
    assert_found(r"issue\.md:10: unknown category 'tranport' \(did you mean 'transport'")
    listed = "sections:\n  - klima\n  - areal\n  - konkurransekraft\n  - fellesskap\n"
    write(path, text.replace(listed, "sections: [klima, tranport]\n", 1))  # on one line: that line
    assert_found(r"issue\.md:8: unknown category 'tranport'")
