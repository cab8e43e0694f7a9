"""Subscribers from the command line: add, import, export, list, count, remove, forget, show, segments, tokens."""

from __future__ import annotations

import json

import pytest
from conftest import assert_error, rows, write

from newsletter.config import load_settings
from newsletter.errors import SubscriberError
from newsletter.store import database
from newsletter.subscribers import audience, make_token, parse_segment, read_token, recipients

pytestmark = pytest.mark.backends  # each test on SQLite and on PostgreSQL

KEY = "k" * 40


@pytest.fixture(autouse=True)
def secret(project, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", KEY)


def test_add_validates_and_normalises(run, project):
    result = run("subscribers", "add", "  Kari.Nordmann@EXAMPLE.no ", "--name", "Kari Nordmann", "--municipality", "Lillestrøm",
                 "--topic", "klima", "--topic", "Areal, transport, mobilitet og logistikk")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Added: kari.nordmann@example.no (pending)" in result.stdout
    (row,) = rows(
        project, "SELECT email, name, municipality, language, topics, status, consent_source FROM subscribers"
    )
    assert row == (
        "kari.nordmann@example.no",
        "Kari Nordmann",
        "3205",
        "nb",
        "klima,areal",
        "pending",
        "added by staff (cli)",
    )
    assert "Unchanged" in run("subscribers", "add", "kari.nordmann@example.no").stdout
    assert (
        "Updated: kari.nordmann@example.no (confirmed)"
        in run("subscribers", "add", "Kari.Nordmann@example.no", "--confirmed").stdout
    )


def test_add_errors(run, project):
    assert_error(run("subscribers", "add", "ikke-en-adresse"), "'ikke-en-adresse' is not a valid e-mail address")
    assert_error(
        run("subscribers", "add", "a@example.com", "--municipality", "Bergen"), "unknown municipality 'Bergen'"
    )
    assert_error(
        run("subscribers", "add", "a@example.com", "--municipality", "Lillestrom"),
        "unknown municipality 'Lillestrom' (did you mean 'Lillestrøm'?)",
    )
    assert_error(run("subscribers", "add", "a@example.com", "--topic", "sport"), "unknown topic 'sport'")
    assert rows(project, "SELECT COUNT(*) FROM subscribers") == [(0,)]


def test_names_with_line_breaks_are_made_safe(run, project):
    run("subscribers", "add", "a@example.com", "--name", "Ola\r\nBcc: alle@example.com")
    assert rows(project, "SELECT name FROM subscribers") == [("Ola Bcc: alle@example.com",)]


CSV = """E-post;Navn;Kommune;Språk;Tema
kari@example.no;Kari Nordmann;3205;nb;klima
ola@example.no;Ola Nordmann;Asker;en;areal,klima
ikke-en-adresse;Feil;;;
kari@example.no;Kari igjen;;;
per@example.no;Per;Bergen;;
åse@eksempel.no;Åse Ås;3030;;
"""


def test_import_reports_line_by_line_and_is_idempotent(run, project, tmp_path):
    path = write(tmp_path / "liste.csv", "\ufeff" + CSV)
    result = run("subscribers", "import", str(path), "--confirmed")
    assert result.exit_code == 1  # some rows were rejected
    assert "Added 3, updated 0, 0 unchanged, rejected 3." in result.stdout
    assert "liste.csv:4: rejected: 'ikke-en-adresse' is not a valid e-mail address" in result.stderr
    assert "liste.csv:5: rejected: kari@example.no appears again (first on line 2)." in result.stderr
    assert "liste.csv:6: rejected: unknown municipality 'Bergen'" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("Error: 3 row(s) rejected")
    assert rows(project, "SELECT email, municipality, language, topics, status FROM subscribers ORDER BY email") == [
        ("kari@example.no", "3205", "nb", "klima", "confirmed"),
        ("ola@example.no", "3203", "en", "areal,klima", "confirmed"),
        ("åse@eksempel.no", "3205", "nb", "", "confirmed"),
    ]
    again = run("subscribers", "import", str(path), "--confirmed")
    assert "Added 0, updated 0, 3 unchanged, rejected 3." in again.stdout


def test_dry_run_changes_nothing(run, project, tmp_path):
    path = write(tmp_path / "liste.csv", "email,name\nkari@example.no,Kari\n")
    result = run("subscribers", "import", str(path), "--dry-run")
    assert "Would add 1" in result.stdout and "Dry run: the subscriber list was not changed." in result.stdout
    assert rows(project, "SELECT COUNT(*) FROM subscribers") == [(0,)]


def test_import_never_resubscribes_the_unsubscribed_or_forgotten(run, project, tmp_path):
    path = write(tmp_path / "liste.csv", "email,name\nkari@example.no,Kari\nola@example.no,Ola\n")
    run("subscribers", "import", str(path), "--confirmed")
    assert "Unsubscribed: kari@example.no" in run("subscribers", "remove", "kari@example.no").stdout
    assert "Forgotten: ola@example.no" in run("subscribers", "forget", "ola@example.no", "--yes").stdout
    result = run("subscribers", "import", str(path), "--confirmed")
    assert "kari@example.no is unsubscribed; it is not added again" in result.stderr
    assert "ola@example.no asked to be forgotten" in result.stderr
    assert rows(project, "SELECT email, status FROM subscribers") == [("kari@example.no", "unsubscribed")]
    assert rows(project, "SELECT COUNT(*) FROM forgotten") == [(1,)]
    assert not any("ola@example.no" in str(r) for r in rows(project, "SELECT * FROM forgotten"))  # only a hash
    assert_error(run("subscribers", "add", "ola@example.no"), "asked to be forgotten")


def test_malformed_csv(run, project, tmp_path):
    assert_error(
        run("subscribers", "import", str(write(tmp_path / "a.csv", "navn,kommune\nKari,3205\n"))),
        "a.csv:1: no e-mail column",
    )
    latin = tmp_path / "latin.csv"  # Norwegian Excel's 'CSV (semikolondelt)' is Windows-1252: read as such
    latin.write_bytes("email,navn\nkari@example.no,Kåre\n".encode("latin-1"))
    assert "Read latin.csv as Windows-1252" in run("subscribers", "import", str(latin)).stdout
    assert rows(project, "SELECT name FROM subscribers") == [("Kåre",)]
    assert_error(run("subscribers", "import", str(write(tmp_path / "tom.csv", ""))), "tom.csv: the file is empty")


def test_export_list_count_show(run, project, tmp_path):
    path = write(tmp_path / "liste.csv", CSV)
    run("subscribers", "import", str(path), "--confirmed")
    run("subscribers", "add", "ny@example.no")
    exported = run("subscribers", "export", "--format", "json", "--status", "confirmed").stdout
    data = json.loads(exported)
    assert [d["email"] for d in data] == ["kari@example.no", "ola@example.no", "åse@eksempel.no"]
    # the status in the words the list shows it in, Norwegian too, in any case
    assert run("subscribers", "export", "--format", "json", "--status", "Bekreftet").stdout == exported
    assert "ny@example.no" in run("subscribers", "list", "--status", "venter").stdout
    assert "ny@example.no" not in run("subscribers", "list", "--status", "CONFIRMED").stdout
    assert_error(run("subscribers", "list", "--status", "aktiv"), "unknown status 'aktiv'; use one of: pending")
    assert data[0]["consent_source"] == "imported from liste.csv (consent confirmed by staff)" and data[0]["consent_at"]
    csv_out = run("subscribers", "export").stdout
    # semicolons, as Norwegian Excel expects; the file (--output) also gets a byte order mark and CRLF
    assert csv_out.startswith("email;name;municipality;municipality_name;language;topics;status;consent_source")
    assert "kari@example.no;Kari Nordmann;3205;Lillestrøm;" in csv_out  # the name beside the number
    assert "åse@eksempel.no;Åse Ås" in csv_out
    saved = tmp_path / "ut" / "abonnenter.csv"
    saved.parent.mkdir()
    wrote = run("subscribers", "export", "--output", str(saved))
    assert wrote.exit_code == 0 and "Wrote 4 subscriber(s) to" in wrote.stdout, wrote.output
    assert saved.read_bytes() == b"\xef\xbb\xbf" + csv_out.encode("utf-8").replace(b"\n", b"\r\n")
    assert saved.read_bytes().startswith(b"\xef\xbb\xbfemail;")
    assert_error(run("subscribers", "export", "-o", str(saved)), "exists already; choose another name")
    assert_error(run("subscribers", "export", "-o", str(tmp_path / "liste.xlsx")), "a csv file's name ends in .csv")
    assert not (tmp_path / "liste.xlsx").exists()
    assert saved.read_bytes().startswith(b"\xef\xbb\xbfemail;")  # never overwritten
    reimport = write(tmp_path / "eksport.csv", csv_out)
    assert "4 unchanged" in run("subscribers", "import", str(reimport)).stdout  # an export imports back unchanged
    listing = run("subscribers", "list", "--segment", "municipality=Lillestrøm").stdout
    assert "kari@example.no" in listing and "åse@eksempel.no" in listing and "ola@" not in listing
    assert "  Lillestrøm  " in listing and "3205" not in listing  # names, not numbers people do not know
    count = run("subscribers", "count").stdout
    assert "By status: pending 1, confirmed 3, unsubscribed 0, bounced 0, blocked 0" in count
    assert "Lillestrøm (3205): 2" in count and "Asker (3203): 1" in count and "nb 2, en 1" in count
    shown = json.loads(run("subscribers", "show", "Ola@Example.no").stdout)
    assert shown["name"] == "Ola Nordmann" and shown["topics"] == ["areal", "klima"]
    kari = json.loads(run("subscribers", "show", "kari@example.no").stdout)
    assert kari["municipality"] == "3205" and kari["municipality_name"] == "Lillestrøm"
    assert_error(run("subscribers", "show", "ingen@example.no"), "not on the list")


def test_segments(project, run, tmp_path):
    run("subscribers", "import", str(write(tmp_path / "l.csv", CSV)), "--confirmed")
    settings = load_settings()
    from newsletter.emissions import read_members

    members = read_members(settings.emissions_members)
    with database(settings.database) as conn:

        def emails(text):
            return [s.email for s in audience(conn, parse_segment(text, settings, members))]

        assert emails(None) == ["kari@example.no", "ola@example.no", "åse@eksempel.no"]
        assert emails("municipality=3205,3203 lang=nb") == ["kari@example.no", "åse@eksempel.no"]
        # Åse chose no topics: she gets every topic, as the signup form promises
        assert emails("topic=klima") == ["kari@example.no", "ola@example.no", "åse@eksempel.no"]
        assert emails("tema=areal") == ["ola@example.no", "åse@eksempel.no"]
        assert emails("kommune=Asker tema=areal") == ["ola@example.no"]
        assert emails("Kommune = Asker  tema = areal") == ["ola@example.no"]  # spaces around '=', as people type
        assert [e for _i, e in recipients(conn, parse_segment("tema=areal", settings, members))] == emails("tema=areal")
        assert emails("status=pending") == []
        for bad, message in (("by=Oslo", "unknown segment field 'by'"), ("municipality", "is not name=value"),
                             ("status=aktiv", "unknown status 'aktiv'")):  # fmt: skip
            with pytest.raises(SubscriberError, match=message):
                parse_segment(bad, settings, members)


def test_tokens(project, monkeypatch):
    settings = load_settings()
    token = make_token(settings, 42, "unsubscribe")
    assert read_token(settings, token, "unsubscribe") == 42
    import base64

    payload = token.split(".")[0]
    assert base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)) == b"42"  # the number only, no address
    with pytest.raises(SubscriberError, match="not valid"):
        read_token(settings, token, "confirm")  # a token is for one purpose
    with pytest.raises(SubscriberError, match="not valid"):
        read_token(settings, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "unsubscribe")
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "x" * 40)
    with pytest.raises(SubscriberError, match="not valid"):
        read_token(load_settings(), token, "unsubscribe")  # another key


def test_a_missing_secret_key_is_made_once_and_kept_in_dotenv(run, project, monkeypatch):
    import stat

    monkeypatch.delenv("NEWSLETTER_SECRET_KEY")
    run("subscribers", "add", "a@example.com")
    result = run("subscribers", "forget", "a@example.com", "--yes")
    assert result.exit_code == 0 and "Made a new NEWSLETTER_SECRET_KEY in" in result.stderr
    env = (project / ".env").read_text(encoding="utf-8")
    key = env.split("NEWSLETTER_SECRET_KEY=")[1].strip()
    assert len(key) >= 32 and key not in result.output  # never printed
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600
    assert load_settings().secret_key == key  # read back from .env next time
    again = run("subscribers", "forget", "b@example.com", "--yes")
    assert "Made a new" not in again.stderr and (project / ".env").read_text(encoding="utf-8") == env
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "kort")
    assert_error(run("subscribers", "list"), "NEWSLETTER_SECRET_KEY: too short")


def test_database_migrations_are_versioned(project, tmp_path):
    from newsletter.store import MIGRATIONS, connect

    conn = connect(tmp_path / "ny.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(Exception, match="newer than this program"):
        connect(tmp_path / "ny.db")


def test_segment_names_with_spaces(project, run, tmp_path):
    run(
        "subscribers",
        "import",
        str(write(tmp_path / "l.csv", "email,kommune\na@example.no,Nordre Follo\nb@example.no,Asker\n")),
        "--confirmed",
    )
    listing = run("subscribers", "list", "--segment", 'municipality="Nordre Follo",Asker lang=nb').stdout
    assert "a@example.no" in listing and "b@example.no" in listing
    only = run("subscribers", "list", "--segment", "kommune='Nordre Follo'").stdout
    assert "a@example.no" in only and "b@example.no" not in only
    assert_error(run("subscribers", "list", "--segment", 'municipality="Nordre'), "close the quotes")


def test_an_export_restores_without_bringing_back_the_unsubscribed(project, run, tmp_path, monkeypatch):
    from conftest import empty_database

    run("subscribers", "import", str(write(tmp_path / "l.csv", CSV)), "--confirmed")
    run("subscribers", "remove", "ola@example.no")
    exported = write(tmp_path / "eksport.csv", run("subscribers", "export").stdout)
    empty_database(project, monkeypatch)
    restored = run("subscribers", "import", str(exported))
    assert restored.exit_code == 0, restored.output
    assert (
        "Added 2, updated 0, 0 unchanged, rejected 0. Skipped 1 (unsubscribed, bounced or blocked)." in restored.stdout
    )
    assert rows(project, "SELECT email, status FROM subscribers ORDER BY email") == [
        ("kari@example.no", "confirmed"),
        ("åse@eksempel.no", "confirmed"),
    ]


def test_a_norwegian_export_reads_in_norwegian_and_restores_the_same(project, run, tmp_path, monkeypatch):
    from conftest import empty_database

    run("subscribers", "import", str(write(tmp_path / "l.csv", CSV)), "--confirmed")
    run("subscribers", "remove", "ola@example.no")
    monkeypatch.setenv("NEWSLETTER_LANG", "nb")
    saved = tmp_path / "eksport.csv"
    assert run("subscribers", "export", "--output", str(saved)).exit_code == 0
    lines = saved.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("e-post;navn;kommune;kommunenavn;språk;tema;status;samtykke_fra;")
    assert any(line.startswith("kari@example.no;Kari Nordmann;3205;Lillestrøm;nb;klima;bekreftet;") for line in lines)
    assert any(";avmeldt;" in line for line in lines)
    again = run("subscribers", "import", str(saved)).stdout  # the list as it is: nothing changes
    assert "2 uendret" in again and "Hoppet over 1" in again, again
    empty_database(project, monkeypatch)
    restored = run("subscribers", "import", str(saved))
    assert restored.exit_code == 0 and "Hoppet over 1" in restored.stdout, restored.output
    assert "ble ikke lest" not in restored.stderr  # its own Norwegian columns are known
    assert rows(project, "SELECT email, status FROM subscribers ORDER BY email") == [
        ("kari@example.no", "confirmed"),
        ("åse@eksempel.no", "confirmed"),
    ]


def test_a_municipality_without_a_member_list_points_at_the_setting(run, tmp_path, monkeypatch):
    assert run("init", str(tmp_path / "nytt")).exit_code == 0
    monkeypatch.chdir(tmp_path / "nytt")
    # a new project has the member list: municipalities are known from the start
    added = run("subscribers", "add", "b@example.com", "--municipality", "Asker", "--confirmed")
    assert added.exit_code == 0, added.output
    assert "Asker (3203): 1" in run("subscribers", "count").stdout
    toml = tmp_path / "nytt" / "newsletter.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('members = "data/osloregionen-members.csv"\n', ""),
                    encoding="utf-8")  # fmt: skip
    assert_error(
        run("subscribers", "add", "a@example.com", "--municipality", "Asker"),
        "municipality 'Asker' cannot be checked",
        "emissions.members",
    )
    assert run("subscribers", "add", "a@example.com").exit_code == 0  # without a municipality it works


def test_names_with_spaces_and_former_municipalities_in_segments_and_imports(run, project, tmp_path):
    from conftest import subscribe

    subscribe(("a@example.no", "A", "3207"), ("b@example.no", "B", "3203"), ("c@example.no", "C", "3205"))
    listed = run("subscribers", "list", "--segment", "kommune=Nordre Follo")
    assert listed.exit_code == 0 and "a@example.no" in listed.stdout and "b@example.no" not in listed.stdout
    both = run("subscribers", "list", "--segment", "kommune=Nordre Follo, Asker språk=nb")
    assert both.exit_code == 0 and "b@example.no" in both.stdout and "c@example.no" not in both.stdout, both.output
    path = tmp_path / "liste.csv"
    path.write_text("E-post;Kommune\nski@example.no;Ski\nskedsmo@example.no;Skedsmo\n", encoding="utf-8")
    assert run("subscribers", "import", str(path), "--confirmed").exit_code == 0
    found = rows(project, "SELECT email, municipality FROM subscribers WHERE email LIKE 's%' ORDER BY email")
    assert found == [("skedsmo@example.no", "3205"), ("ski@example.no", "3207")]  # Lillestrøm, Nordre Follo


def test_forgetting_a_mistyped_address_changes_nothing_and_names_the_close_one(run, project):
    from conftest import subscribe

    subscribe("kari.nordmann@example.com")
    line = assert_error(run("subscribers", "forget", "kari.nordman@example.com", "--yes"), "is not on the list",
                        "did you mean 'kari.nordmann@example.com'", "nothing was changed")  # fmt: skip
    assert line and rows(project, "SELECT COUNT(*) FROM subscribers") == [(1,)]
    assert rows(project, "SELECT COUNT(*) FROM forgotten") == [(0,)]
    unknown = run("subscribers", "forget", "helt.annen@annet.no", "--yes")  # no one like it: remembered anyway
    assert unknown.exit_code == 0 and "was not on the list; it is remembered as forgotten" in unknown.stdout
    assert rows(project, "SELECT COUNT(*) FROM forgotten") == [(1,)]


def test_forget_leaves_the_address_nowhere_in_the_database(run, project, monkeypatch):
    from conftest import subscribe, tables_and_columns

    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "f" * 40)
    subscribe("kari@example.no", "ola@example.no")
    assert run("send", "--yes").exit_code == 0
    assert run("subscribers", "forget", "kari@example.no", "--yes").exit_code == 0
    found = [
        f"{table}.{column}"
        for table, columns in tables_and_columns()
        for column in columns
        if rows(project, f'SELECT COUNT(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE ?', "%kari@example.no%")
        != [(0,)]
    ]
    assert found == []
    assert rows(project, "SELECT COUNT(*) FROM delivery_recipients") == [(2,)]  # the count stays right
