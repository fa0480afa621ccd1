"""The redaction rules (pure) and the one writer that every output goes through."""

from __future__ import annotations

import io
import json

import pytest

from driver_loader.cli.commands.printenv import go_quote
from driver_loader.core.redaction import redact_patterns, redact_text, secret_values, url_secrets
from driver_loader.output import boundary


@pytest.fixture(autouse=True)
def _no_secrets_known():
    boundary.forget_all()
    yield
    boundary.forget_all()


@pytest.mark.parametrize("text, expected", [
    ("https://user:p@ss@host/path", "https://****@host/path"),
    ("see https://t0ken@host:8443/d, then", "see https://****@host:8443/d, then"),
    ("https://host/d?token=abc&x&sig=zzz), next", "https://host/d?token=****&x&sig=****), next"),
    ('DRIVERS_REPO="https://h/p?X-Amz-Signature=abcd&X-Amz-Date=2024"',
     'DRIVERS_REPO="https://h/p?X-Amz-Signature=****&X-Amz-Date=****"'),
    ("HTTP 500 Bad credentials Bearer tok-123", "HTTP 500 Bad credentials Bearer ****"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: ****"),
    ("proxy-authorization=Negotiate abc", "proxy-authorization=****"),
    ("password=hunter2 and api_key: k-123 and X-Api-Key=zz9", "password=**** and api_key: **** and X-Api-Key=****"),
    ("Token abcd1234efgh", "Token ****"),
    ("Authorization: basic dXNlcjpwYXNzd29yZA=", "Authorization: ****"),
    ("WWW-Authenticate answered: Digest 0123456789abcdef", "WWW-Authenticate answered: Digest ****"),
])
def test_credential_shapes_are_redacted(text, expected):
    assert redact_patterns(text) == expected


@pytest.mark.parametrize("text", [
    "basic checks passed",
    "signature:      none",
    "signatures: sig_enforce=N, lockdown=none",
    "the token expired",
    "https://download.falco.org/driver/8.0.0%2Bdriver/x86_64/falco_debian_6.1.0-13-amd64_1.ko",
    "file:///srv/mirror/driver",
    "recorded its digest path=/root/.falco/8.0.0+driver/x86_64/falco.ko sha256=abc",
    "verified by the token url=https://host/d/x.ko",
])
def test_ordinary_output_is_left_alone(text):
    assert redact_patterns(text) == text


def test_a_known_secret_is_redacted_in_every_quoted_form():
    secret = 'p"ä/ss\\w0rd'
    forms = [secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], go_quote(secret)[1:-1],
             "p%22%C3%A4%2Fss%5Cw0rd", repr(secret)[1:-1]]
    text = " | ".join(forms)
    redacted = redact_text(text, [secret])
    assert redacted == " | ".join(["****"] * len(forms)), redacted


def test_secret_values_cover_credential_headers_by_name():
    found = secret_values([("X-Api-Key", "k3y-value"), ("Private-Token", "pr1vate"), ("X-Trace", "visible"),
                           ("Cookie", "a=one1; b=two2")], [])
    assert {"k3y-value", "pr1vate", "one1", "two2"} <= set(found)
    assert "visible" not in found


def test_url_secrets_split_as_a_url_parser_would():
    assert {"p@ss", "u:p@ss", "abcdefghij"} <= set(url_secrets("https://u:p@ss@host/x?tok=abcdefghij&n=1"))


def test_a_user_name_beside_a_password_is_not_hunted_in_free_text():
    # Redacting "falco" everywhere would turn DRIVER_NAME="falco" into "****"; the URL patterns hide it in URLs.
    assert "falco" not in url_secrets("https://falco:S3cretPass@mirror/d")
    assert "T0kenAsUser" in url_secrets("https://T0kenAsUser@mirror/d")  # a lone userinfo is a token
    assert "ghp_0123456789abcdef" in url_secrets("https://ghp_0123456789abcdef:x-oauth-basic@mirror/d")


def test_printenv_keeps_the_driver_name_when_a_repository_user_has_the_same_name(tmp_path):
    import os
    import subprocess
    import sys

    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\n")
    result = subprocess.run(
        [sys.executable, "-m", "driver_loader", "printenv", "--host-root", str(root), "--kernel-release",
         "6.1.0-13-amd64", "--kernel-version", "#1 SMP Debian 6.1.55-1", "--driver-version", "8.0.0+driver",
         "--type", "kmod", "--config", os.devnull, "--repo", "https://falco:S3cretPass@mirror/d"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert 'DRIVER_NAME="falco"' in result.stdout
    assert "S3cretPass" not in result.stdout + result.stderr
    assert "1" not in url_secrets("https://host/x?n=1")  # short query values are left to the URL patterns


def test_learn_reads_urls_and_header_options_from_argv_and_the_environment():
    boundary.learn(["--repo", "https://alice:Passw0rdA@h/d", "--http-header=Authorization: Bearer T0kenB",
                    "--http-header", "X-Trace: visible-value, X-Api-Key: K3yC"],
                   {"DRIVERS_REPO": "https://bob:Passw0rdD@h/d, https://e/f?token=T0kenEEEEE",
                    "FALCOCTL_DRIVER_HTTP_HEADERS": "Cookie: sid=C00kieF"})
    known = set(boundary.known_secrets())
    assert {"Passw0rdA", "T0kenB", "K3yC", "Passw0rdD", "T0kenEEEEE", "C00kieF"} <= known
    text = "Passw0rdA T0kenB K3yC Passw0rdD T0kenEEEEE C00kieF"
    assert boundary.redact(text) == " ".join(["****"] * 6)


def test_a_malformed_header_entry_is_a_secret_as_a_whole():
    boundary.learn(["--http-header", "Authorization Bearer Wh0leEntry"], {})
    assert "Wh0leEntry" not in boundary.redact("malformed HTTP header 'Authorization Bearer Wh0leEntry'")


def test_the_writer_redacts_a_secret_split_over_two_writes():
    boundary.remember(["SplitSecret99"])
    target = io.StringIO()
    writer = boundary.RedactingWriter(target)
    writer.write("before Split")
    writer.write("Secret99 after\n")
    assert target.getvalue() == "before **** after\n"


def test_the_writer_emits_a_partial_line_on_flush_for_progress_bars():
    target = io.StringIO()
    writer = boundary.RedactingWriter(target)
    writer.write("\rdownloading [###---]")
    writer.flush()
    assert target.getvalue() == "\rdownloading [###---]"


def test_the_writer_behaves_as_a_text_stream_for_click():
    writer = boundary.RedactingWriter(io.StringIO())
    with pytest.raises(TypeError):
        writer.write(b"")  # click asks this to tell a text stream from a binary one
    assert not hasattr(writer, "buffer")  # so click writes through us, never around us
    assert writer.isatty() is False


def test_with_json_logs_the_writer_wraps_every_line_that_is_not_a_json_object():
    target = io.StringIO()
    writer = boundary.RedactingWriter(target, json_lines=lambda: True)
    writer.write('{"level": "info", "msg": "kept"}\n')
    writer.write("Traceback (most recent call last):\n  a line\n")
    writer.write("no newline yet")
    writer.close_pending()
    events = [json.loads(line) for line in target.getvalue().splitlines()]
    assert [e["msg"] for e in events] == ["kept", "Traceback (most recent call last):", "  a line",
                                          "no newline yet"]


def test_guarded_streams_restore_the_originals(capsys):
    import sys

    before = sys.stdout, sys.stderr
    boundary.remember(["Guard3dSecret"])
    with boundary.guarded_streams():
        print("value Guard3dSecret")
        assert sys.stdout is not before[0]
    assert (sys.stdout, sys.stderr) == before
    assert capsys.readouterr().out == "value ****\n"
