import socket
import subprocess
import sys

import pytest
from download_helpers import Sleeps, closed_port, reset, response_head
from pytest_httpserver import HTTPServer

from driver_loader.core.errors import HttpFailure, InsecureRedirectError, UsageError
from driver_loader.core.redaction import redact_text, redact_url, secret_values
from driver_loader.core.settings import HttpOptions
from driver_loader.net.http import BACKOFF_BASE, BACKOFF_CAP, RETRY_AFTER_CAP, build_session, full_jitter_delay

pytest_plugins = ["download_fixtures", "tls_fixtures"]


def session_for(sleeps=None, **options):
    options.setdefault("timeout", 5.0)
    options.setdefault("retries", 3)
    return build_session(HttpOptions(**options), sleep=sleeps if sleeps is not None else Sleeps())


# -- pure helpers ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("https://download.falco.org/driver/8.0.0%2Bdriver/x", "https://download.falco.org/driver/8.0.0%2Bdriver/x"),
    ("https://user:pa55word@mirror.example/driver", "https://****@mirror.example/driver"),
    ("https://t0ken@mirror.example:8443/d", "https://****@mirror.example:8443/d"),
    ("https://mirror.example/d?token=abc&x", "https://mirror.example/d?token=****&x"),
    ("file:///srv/mirror/driver", "file:///srv/mirror/driver"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_redact_text_removes_userinfo_and_known_secrets():
    text = "failed for http://bob:s3cret@proxy:3128 with header Bearer abcdef123"
    assert redact_text(text, ["abcdef123"]) == "failed for http://****@proxy:3128 with header Bearer ****"


def test_secret_values_cover_sensitive_headers_and_userinfo():
    found = secret_values([("Authorization", "Bearer tok-123"), ("X-Trace", "visible"), ("Cookie", "sid=42x")],
                          ["https://al%40ice:p%3Ass@host/x", "https://host/y"])
    assert {"Bearer tok-123", "tok-123", "sid=42x", "p%3Ass", "p:ss"} <= set(found)
    assert "visible" not in found


@pytest.mark.parametrize("attempt, rand, expected", [
    (0, 1.0, 0.0),
    (1, 1.0, BACKOFF_BASE),
    (2, 1.0, BACKOFF_BASE * 2),
    (3, 0.5, BACKOFF_BASE * 2),
    (1, 0.0, 0.0),
    (40, 1.0, BACKOFF_CAP),
])
def test_full_jitter_delay(attempt, rand, expected):
    assert full_jitter_delay(attempt, rand=lambda: rand) == pytest.approx(expected)


# -- retries ----------------------------------------------------------------------------------------------------------

def test_500_500_200_is_retried_with_jittered_backoff(server, sleeps):
    for status in (500, 500):
        server.expect_ordered_request("/a").respond_with_data("busy", status=status)
    server.expect_ordered_request("/a").respond_with_data("payload")
    session = build_session(HttpOptions(retries=3, timeout=5), sleep=sleeps, rand=lambda: 1.0)
    with session.get_stream(server.url_for("/a")) as response:
        assert b"".join(session.iter_body(response)) == b"payload"
    assert len(server.log) == 3
    assert sleeps == [BACKOFF_BASE, BACKOFF_BASE * 2]


def test_5xx_gives_up_after_the_configured_retries(server, sleeps):
    server.expect_request("/a").respond_with_data("down", status=503)
    session = session_for(sleeps, retries=2)
    with pytest.raises(HttpFailure) as info:
        session.get_stream(server.url_for("/a"))
    assert info.value.status == 503 and not info.value.not_found
    assert len(server.log) == 3
    assert len(sleeps) == 2


def test_default_patience_rides_out_six_503s_in_a_row_within_half_a_minute_of_backoff(server, sleeps):
    # A mirror turning away a fifth of a fleet's requests must not fail one loader in a few hundred.
    for _ in range(6):
        server.expect_ordered_request("/a").respond_with_data("busy", status=503)
    server.expect_ordered_request("/a").respond_with_data("payload")
    session = build_session(HttpOptions(timeout=5), sleep=sleeps, rand=lambda: 1.0)
    with session.get_stream(server.url_for("/a")) as response:
        assert b"".join(session.iter_body(response)) == b"payload"
    assert len(server.log) == 7
    assert sum(sleeps) <= 32


@pytest.mark.parametrize("status", [404, 403, 410])
def test_client_errors_are_not_retried(server, sleeps, status):
    server.expect_request("/a").respond_with_data("no", status=status)
    with pytest.raises(HttpFailure) as info:
        session_for(sleeps).get_stream(server.url_for("/a"))
    assert info.value.status == status
    assert info.value.not_found == (status in (404, 410))
    assert len(server.log) == 1 and sleeps == []


def test_429_honours_retry_after_up_to_the_cap(server, sleeps):
    server.expect_ordered_request("/a").respond_with_data("slow down", status=429, headers={"Retry-After": "2"})
    server.expect_ordered_request("/a").respond_with_data("later", status=429, headers={"Retry-After": "86400"})
    server.expect_ordered_request("/a").respond_with_data("ok")
    session = session_for(sleeps)
    with session.get_stream(server.url_for("/a")) as response:
        assert response.status_code == 200
    assert sleeps == [2.0, RETRY_AFTER_CAP]


def test_unparseable_retry_after_falls_back_to_backoff(server, sleeps):
    server.expect_ordered_request("/a").respond_with_data("x", status=503, headers={"Retry-After": "soon-ish"})
    server.expect_ordered_request("/a").respond_with_data("ok")
    session = build_session(HttpOptions(retries=1, timeout=5), sleep=sleeps, rand=lambda: 1.0)
    with session.get_stream(server.url_for("/a")):
        pass
    assert sleeps == [BACKOFF_BASE]


def test_connection_refused_is_retried_then_reported(sleeps):
    url = f"http://127.0.0.1:{closed_port()}/driver/x.ko"
    with pytest.raises(HttpFailure) as info:
        session_for(sleeps, retries=2).get_stream(url)
    assert info.value.status is None
    assert "refused" in info.value.message.lower()
    assert len(sleeps) == 2


def test_reset_mid_body_raises_a_transport_failure(raw_server):
    def script(conn, _request):
        conn.sendall(response_head(length=1000) + b"x" * 100)
        reset(conn)

    raw = raw_server(script)
    session = session_for()
    with session.get_stream(raw.url("/a")) as response, pytest.raises(HttpFailure) as info:
        b"".join(session.iter_body(response))
    assert info.value.status is None
    assert "interrupted" in info.value.message


def test_a_stalled_body_hits_the_read_timeout(raw_server):
    def script(conn, _request):
        conn.sendall(response_head(length=1000) + b"x" * 10)
        raw.release.wait(30)

    raw = raw_server(script)
    session = session_for(timeout=0.3)
    with session.get_stream(raw.url("/a")) as response, pytest.raises(HttpFailure) as info:
        b"".join(session.iter_body(response))
    assert "no data for 0.3s" in info.value.message


def test_custom_headers_and_user_agent_are_sent(server):
    server.expect_request("/a", headers={"X-Mirror-Key": "k1"}).respond_with_data("ok")
    session = session_for(headers=(("X-Mirror-Key", "k1"),))
    with session.get_stream(server.url_for("/a")):
        pass
    request = server.log[0][0]
    assert request.headers["User-Agent"].startswith("falco-driver-loader/")
    assert request.headers["Accept-Encoding"] == "identity"


def test_the_session_keeps_requests_session_methods(server):
    # It once stored its settings as `self.options`, which hid Session.options(), the HTTP OPTIONS method.
    server.expect_request("/a", method="OPTIONS").respond_with_data("", headers={"Allow": "GET"})
    response = session_for(timeout=5).options(server.url_for("/a"))
    assert response.headers["Allow"] == "GET"


# -- redirects --------------------------------------------------------------------------------------------------------

def test_redirects_are_followed_up_to_five(server):
    for hop in range(5):
        server.expect_request(f"/r{hop}").respond_with_data("", status=302, headers={"Location": f"/r{hop + 1}"})
    server.expect_request("/r5").respond_with_data("arrived")
    session = session_for()
    with session.get_stream(server.url_for("/r0")) as response:
        assert b"".join(session.iter_body(response)) == b"arrived"


def test_a_sixth_redirect_fails(server):
    for hop in range(7):
        server.expect_request(f"/r{hop}").respond_with_data("", status=302, headers={"Location": f"/r{hop + 1}"})
    with pytest.raises(HttpFailure, match="more than 5 redirects"):
        session_for().get_stream(server.url_for("/r0"))


@pytest.fixture
def tls_server(tls_files):
    httpserver = HTTPServer(host="127.0.0.1", port=0, ssl_context=tls_files.server_context(), threaded=True)
    httpserver.start()
    yield httpserver
    httpserver.clear()
    httpserver.stop()


def test_https_to_http_redirect_is_refused(tls_server, server, tls_files):
    server.expect_request("/plain").respond_with_data("should never be fetched")
    tls_server.expect_request("/a").respond_with_data("", status=302,
                                                       headers={"Location": server.url_for("/plain")})
    session = session_for(ca_bundle=tls_files.ca_pem)
    with pytest.raises(InsecureRedirectError, match="refusing redirect from https to http"):
        session.get_stream(tls_server.url_for("/a"))
    assert len(server.log) == 0


def test_a_redirect_to_a_local_file_is_refused(server, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("local data")
    server.expect_request("/a").respond_with_data("", status=302, headers={"Location": f"file://{secret}"})
    with pytest.raises(InsecureRedirectError, match="refusing redirect from http to file"):
        session_for().get_stream(server.url_for("/a"))


# -- TLS ----------------------------------------------------------------------------------------------------------------

def test_tls_with_the_ca_bundle_verifies(tls_server, tls_files):
    tls_server.expect_request("/a").respond_with_data("secure")
    session = session_for(ca_bundle=tls_files.ca_pem)
    with session.get_stream(tls_server.url_for("/a")) as response:
        assert b"".join(session.iter_body(response)) == b"secure"


def test_tls_without_the_ca_fails_verification_without_retrying(tls_server, sleeps):
    tls_server.expect_request("/a").respond_with_data("secure")
    with pytest.raises(HttpFailure) as info:
        session_for(sleeps).get_stream(tls_server.url_for("/a"))
    assert "TLS verification failed" in info.value.message
    assert "--ca-bundle" in info.value.hint
    assert sleeps == []
    assert len(tls_server.log) == 0


def test_insecure_skips_verification_and_warns(tls_server, logs):
    tls_server.expect_request("/a").respond_with_data("unverified")
    session = session_for(insecure=True)
    with session.get_stream(tls_server.url_for("/a")) as response:
        assert b"".join(session.iter_body(response)) == b"unverified"
    assert "TLS certificate verification is disabled" in logs()


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_explicit_tls_settings_beat_requests_environment_variables(tls_server, tls_files, unrelated_tls_files,
                                                                   monkeypatch, variable):
    monkeypatch.setenv(variable, unrelated_tls_files.ca_pem)
    tls_server.expect_request("/a").respond_with_data("secure")
    for options in ({"ca_bundle": tls_files.ca_pem}, {"insecure": True}):
        with session_for(**options).get_stream(tls_server.url_for("/a")) as response:
            assert response.status_code == 200


def test_missing_ca_bundle_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        build_session(HttpOptions(ca_bundle=str(tmp_path / "nope.pem")))


# -- file:// ------------------------------------------------------------------------------------------------------------

def test_file_urls_serve_files_listings_and_404(tmp_path):
    (tmp_path / "8.0.0+driver" / "x86_64").mkdir(parents=True)
    (tmp_path / "8.0.0+driver" / "x86_64" / "a.ko").write_bytes(b"module bytes")
    session = session_for()
    with session.get_stream(f"file://{tmp_path}/8.0.0%2Bdriver/x86_64/a.ko") as response:
        assert response.headers["Content-Length"] == "12"
        assert b"".join(session.iter_body(response)) == b"module bytes"
    listing = session.get_document(f"file://{tmp_path}/")
    assert 'href="8.0.0%2Bdriver/"' in listing
    with pytest.raises(HttpFailure) as info:
        session.get_stream(f"file://{tmp_path}/missing.ko")
    assert info.value.not_found


def test_file_urls_naming_a_remote_host_are_rejected(tmp_path):
    with pytest.raises(HttpFailure) as info:
        session_for().get_stream(f"file://elsewhere{tmp_path}/a.ko")
    assert info.value.status == 400


# -- documents --------------------------------------------------------------------------------------------------------

def test_documents_are_fetched_once_per_session(server):
    server.expect_request("/SHA256SUMS").respond_with_data("abc")
    server.expect_request("/missing.sha256").respond_with_data("", status=404)
    session = session_for()
    assert session.get_document(server.url_for("/SHA256SUMS")) == "abc"
    assert session.get_document(server.url_for("/SHA256SUMS")) == "abc"
    assert session.get_document(server.url_for("/missing.sha256")) is None
    assert session.get_document(server.url_for("/missing.sha256")) is None
    assert len(server.log) == 2


def test_document_failures_are_remembered_too(server, sleeps):
    server.expect_request("/index.json").respond_with_data("", status=500)
    session = session_for(sleeps, retries=1)
    for _ in range(2):
        with pytest.raises(HttpFailure):
            session.get_document(server.url_for("/index.json"))
    assert len(server.log) == 2  # one try and one retry, for the first call only


def test_oversized_documents_are_refused(server):
    server.expect_request("/big").respond_with_data("x" * 2048)
    with pytest.raises(HttpFailure, match="more than the 1024 allowed"):
        session_for().get_document(server.url_for("/big"), limit=1024)


# -- proxies and credentials ------------------------------------------------------------------------------------------

def test_environment_proxy_is_used_and_logged_without_credentials(raw_server, monkeypatch, logs):
    def proxy(conn, request_line):
        conn.sendall(response_head(length=7) + b"proxied")

    raw = raw_server(proxy)
    for key in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://agent:pr0xyPassw0rd@127.0.0.1:{raw.port}")
    session = session_for()
    target = "http://artifacts.invalid/driver/a.ko"
    with session.get_stream(target) as response:
        assert b"".join(session.iter_body(response)) == b"proxied"
    assert raw.requests == [f"GET {target} HTTP/1.1"]
    output = logs()
    assert f"http://****@127.0.0.1:{raw.port}" in output
    assert "pr0xyPassw0rd" not in output and "agent" not in output


def test_a_host_name_that_does_not_resolve_is_said_in_words(monkeypatch, sleeps):
    def no_such_host(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    session = build_session(HttpOptions(retries=1, timeout=5), sleep=sleeps)
    with pytest.raises(HttpFailure) as info:
        session.get_stream("http://mirror.example/driver/a.ko")
    assert "the host name could not be resolved" in info.value.message


def test_credentials_never_appear_in_failures_or_logs(logs, sleeps):
    port = closed_port()
    url = f"http://alice:Sup3rSecret@127.0.0.1:{port}/driver/a.ko"
    session = build_session(HttpOptions(retries=1, timeout=5, headers=(("Authorization", "Bearer T0kenValue"),)),
                            sleep=sleeps, repos=[url])
    with pytest.raises(HttpFailure) as info:
        session.get_stream(url)
    text = " ".join([info.value.message, info.value.url, info.value.hint, logs()])
    for secret in ("Sup3rSecret", "T0kenValue", "alice"):
        assert secret not in text


def test_printenv_does_not_import_requests(tmp_path):
    code = (
        "import sys\n"
        "from driver_loader.cli.main import main\n"
        "try:\n"
        f"    main(['printenv', '--host-root', {str(tmp_path)!r}, '--kernel-release', '6.8.0-79-generic',\n"
        "          '--kernel-version', '#79-Ubuntu', '--arch', 'x86_64', '--type', 'kmod',\n"
        "          '--driver-version', '8.0.0+driver', '--repo', 'https://mirror.example/driver'])\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "assert 'requests' not in sys.modules and 'urllib3' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "DRIVERS_REPO" in result.stdout


def test_socket_level_reset_before_headers_is_retried(raw_server, sleeps):
    calls = []

    def script(conn: socket.socket, _request):
        calls.append(1)
        if len(calls) == 1:
            reset(conn)
        else:
            conn.sendall(response_head(length=2) + b"ok")

    raw = raw_server(script)
    session = session_for(sleeps)
    with session.get_stream(raw.url("/a")) as response:
        assert b"".join(session.iter_body(response)) == b"ok"
    assert len(calls) == 2
