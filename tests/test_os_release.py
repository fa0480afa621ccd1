"""The os-release parser (core/os_release.py) against what real files do and what a hostile host root could hold."""

import pytest

from driver_loader.core.os_release import MAX_FIELDS, MAX_TEXT, MAX_VALUE, parse_os_release
from driver_loader.host.root import parse_os_release as parse_os_release_bytes


def fields(text):
    return parse_os_release(text).fields


def test_a_real_file():
    text = (
        'PRETTY_NAME="Ubuntu 22.04.3 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
        'VERSION="22.04.3 LTS (Jammy Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\n'
        'HOME_URL="https://www.ubuntu.com/"\n'
    )
    assert fields(text) == {
        "PRETTY_NAME": "Ubuntu 22.04.3 LTS", "NAME": "Ubuntu", "VERSION_ID": "22.04",
        "VERSION": "22.04.3 LTS (Jammy Jellyfish)", "VERSION_CODENAME": "jammy", "ID": "ubuntu",
        "ID_LIKE": "debian", "HOME_URL": "https://www.ubuntu.com/",
    }


@pytest.mark.parametrize(
    "line, value",
    [
        ('X="a \\"quoted\\" word"', 'a "quoted" word'),
        ('X="cost \\$5, a \\\\ and a \\`tick\\`"', "cost $5, a \\ and a `tick`"),
        ('X="\\n stays \\q"', "\\n stays \\q"),  # in double quotes a backslash escapes only $ " \ `
        ("X='single \\ $keeps \"all\"'", 'single \\ $keeps "all"'),
        ("X=bare\\ word\\'s", "bare word's"),
        ("X=\"con\"'cat'enated", "concatenated"),
        ('X="has # no comment"', "has # no comment"),
        ("X=value # a comment", "value"),
        ("X=first second", "first"),  # a shell would run `second`; the value is the first word
        ("X=", ""),
        ('X=""', ""),
        ("x = spaced", "spaced"),  # keys are upper-cased; spaces around '=' are tolerated (falcoctl's tests)
        ("export X=exported", "exported"),
        ("X=$HOME", "$HOME"),  # nothing is expanded
    ],
)
def test_quotes_escapes_and_comments(line, value):
    assert fields(line + "\n") == {"X": value}


def test_a_broken_line_costs_only_itself():
    result = parse_os_release('ID=debian\nNAME="unterminated\nVERSION_ID=12\nnot an assignment\n\x01\x02\x03\n')
    assert result.fields == {"ID": "debian", "VERSION_ID": "12"}
    assert result.problems == (
        'line 2: unterminated " quote',
        "line 4: no KEY=value assignment",
        "line 5: no KEY=value assignment",
    )


def test_comments_blank_lines_crlf_and_the_last_assignment_winning():
    text = "# a comment\r\n\r\n   \r\nID=first\r\n  # indented comment\r\nID=second\r\nVERSION_ID='1'\r\n"
    assert fields(text) == {"ID": "second", "VERSION_ID": "1"}


def test_a_huge_value_is_dropped_not_cut():
    result = parse_os_release(f"ID=debian\nNAME={'n' * (MAX_VALUE + 1)}\nVERSION_ID={'v' * MAX_VALUE}\n")
    assert result.fields == {"ID": "debian", "VERSION_ID": "v" * MAX_VALUE}
    assert result.problems == (f"line 2: the value of NAME is longer than {MAX_VALUE} characters",)


def test_only_the_first_part_of_a_huge_file_is_read():
    filler = "#" * 80 + "\n"
    text = "ID=debian\n" + filler * (MAX_TEXT // len(filler) + 10) + "VERSION_ID=12\n"
    result = parse_os_release(text)
    assert result.fields == {"ID": "debian"}
    assert result.problems == (f"only the first {MAX_TEXT} characters were read",)


def test_the_number_of_fields_is_bounded():
    text = "".join(f"K{i}=v\n" for i in range(MAX_FIELDS + 50)) + "K0=again\n"
    result = parse_os_release(text)
    assert len(result.fields) == MAX_FIELDS
    assert "K0" in result.fields and f"K{MAX_FIELDS}" not in result.fields
    assert result.problems[-1].endswith(f"more than {MAX_FIELDS} fields; the rest are ignored")


def test_the_problems_reported_are_bounded():
    assert len(parse_os_release("junk\n" * 10_000).problems) == 20


def test_an_unterminated_quote_on_a_long_line_costs_only_that_line():
    result = parse_os_release('ID="' + "x" * 60_000 + "\nVERSION_ID=1\n")
    assert result.fields == {"VERSION_ID": "1"}


def test_bytes_that_are_not_utf8_and_nuls_cannot_pass_for_text():
    assert parse_os_release_bytes(b"ID=ub\xffuntu\nNAME=a\x00b\nVERSION_ID=\xc3\xa9t\xc3\xa9\n") == {
        "ID": "ub\ufffduntu", "NAME": "a\ufffdb", "VERSION_ID": "\u00e9t\u00e9"}


def test_the_loader_warns_about_skipped_lines(capsys):
    assert parse_os_release_bytes(b'ID=debian\nNAME="broken\n') == {"ID": "debian"}
    assert "could not be read" in capsys.readouterr().err
