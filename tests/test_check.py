"""The pre-send check on the sample issue and on crafted broken ones, and the gate in send."""

from __future__ import annotations

import json

from conftest import load_sample_data, write


def test_the_sample_passes(run, project):
    load_sample_data(project)
    result = run("check")
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.stdout


def test_broken_issues_are_stopped_with_the_right_findings(run, project, issue_dir):
    write(
        issue_dir / "06-lenker.md",
        "---\ntitle: Lenker\n---\nSe [klikk her](https://example.org) og [arkivet](ftp://example.org/fil).\n",
    )
    write(issue_dir / "07-stor.md", "---\ntitle: Stor\n---\n" + ("Et langt avsnitt med mye tekst. " * 40 + "\n\n") * 90)
    (issue_dir / "tung.png").write_bytes(b"\x89PNG" + b"0" * 250_000)
    write(issue_dir / "08-bilde.md", "---\ntitle: Bilde\nimage: tung.png\nimage_alt: Et tungt bilde\n---\nTekst\n")
    path = issue_dir / "issue.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            'preheader: "64 ordførere står bak felles mål for klima og miljø – og dette skjer videre i regionen."',
            'preheader: "Kort"',
        ),
        encoding="utf-8",
    )
    result = run("check")
    assert result.exit_code == 1
    out = result.stdout
    assert "error: email.html: the link 'ftp://example.org/fil' (arkivet) is not an http(s) or mailto address." in out
    assert "error: email.html: the HTML is" in out and "Gmail cuts messages above 102 KB" in out
    assert "warning: email.html: link text 'klikk her' says nothing out of context" in out
    assert "tung.png: the image is 244 KB" in out
    assert "the preheader is short (4 characters)" in out
    data = json.loads(run("check", "--format", "json").stdout)
    assert {"level", "where", "message"} == set(data[0]) and any(f["level"] == "error" for f in data)


def test_a_missing_unsubscribe_link_is_an_error(run, project):
    write(
        project / "templates/email/_footer.mjml.j2",
        "    <mj-section><mj-column><mj-text>Hilsen oss</mj-text></mj-column></mj-section>\n",
    )
    assert "error: templates: the email has no unsubscribe link" in run("check").stdout


def test_send_refuses_on_errors_unless_forced(run, project, issue_dir, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "g" * 40)
    load_sample_data(project)
    run("subscribers", "add", "a@example.com", "--confirmed")
    write(issue_dir / "06-lenker.md", "---\ntitle: Lenker\n---\nSe [arkivet](ftp://example.org/fil).\n")
    result = run("send", "--yes")
    assert result.exit_code == 1 and "error: email.html: the link 'ftp://example.org/fil'" in result.stderr
    assert "add --force to send anyway" in result.stderr
    scheduled = run("schedule", "ordforer", "--at", "2030-01-01 09:00")
    assert scheduled.exit_code == 1 and scheduled.stderr.strip().splitlines()[-1].endswith(
        "add --force to send anyway."
    )
    forced = run("send", "--yes", "--force")
    assert forced.exit_code == 0 and "1 sent" in forced.stdout


def test_impossible_emission_figures_are_errors(run, project, issue_dir, tmp_path):
    import synthetic_emissions as synth

    rows = [
        *synth.rows(years=(2019, 2020)),
        ["Oslo", "0301", "Oslo", 2020, "Luftfart", "Innenriks luftfart", "CO2", -400_000.0],
    ]
    assert run("emissions", "import", str(synth.write_csv(tmp_path / "rar.csv", rows))).exit_code == 0
    path = issue_dir / "issue.md"
    path.write_text(
        path.read_text(encoding="utf-8").replace("emissions: latest", "emissions: {from: 2019, to: 2020}"),
        encoding="utf-8",
    )
    result = run("check")
    assert result.exit_code == 1
    assert "error: build:" in result.stdout and "Luftfart falls" in result.stdout and "more than 100 %" in result.stdout
