"""Time limits and what a hostile server can make the loader say.

Every download has a total deadline (--download-timeout) beside the per-read timeout; retries wait at most
RETRY_AFTER_CAP each and RETRY_WAIT_PER_URL in all; a host that failed is not asked again; the run stops starting
requests after its network budget. A server's reason phrase and the libraries' exception reprs never reach a
message. Every test server binds 127.0.0.1 and every loop in it is bounded in count and time.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from download_helpers import DEFAULT_VERSION, FILENAME, Sleeps, artifact_path, make_settings, plan_for, response_head

from driver_loader.core.errors import HttpFailure, LoaderError
from driver_loader.core.settings import HttpOptions
from driver_loader.net.fetch import fetch_artifact
from driver_loader.net.http import RETRY_AFTER_CAP, RETRY_WAIT_PER_URL, build_session

pytest_plugins = ["download_fixtures"]


def trickle(conn: socket.socket, release: threading.Event, data: bytes, *, seconds: float = 20.0,
            every: float = 0.2) -> None:
    """Send `data` a byte at a time, one byte every `every` seconds, for at most `seconds` or until released."""
    for index in range(min(len(data), int(seconds / every))):
        conn.sendall(data[index:index + 1])
        if release.wait(every):
            return


def cache_files(settings):
    found = []
    for directory, _, names in os.walk(settings.cache_dir):
        found += [os.path.join(directory, n) for n in names if not n.endswith(".lock")]
    return found


# -- the download deadline ----------------------------------------------------------------------------------------

def test_a_body_trickling_a_byte_at_a_time_is_cut_off_at_the_download_deadline(raw_server, tmp_path):
    asked = []

    def script(conn, request_line):
        path = request_line.split()[1]
        asked.append(path)
        if not path.endswith(".ko"):
            conn.sendall(response_head("404 Not Found", length=0))
            return
        conn.sendall(response_head(length=4096))
        trickle(conn, raw.release, b"x" * 4096)

    raw = raw_server(script)
    settings = make_settings(tmp_path, [raw.url("/driver")], fallback=False, timeout=10, retries=3,
                             download_timeout=1.5)
    session = build_session(settings.http, sleep=Sleeps(), repos=settings.repos)
    started = time.monotonic()
    with pytest.raises(LoaderError) as info:
        fetch_artifact(plan_for(settings), settings, session=session)
    elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed  # a read timeout (10 s) never fires: only the deadline ends it
    tried = "\n".join(info.value.tried)
    assert "cut off after 1.5s (--download-timeout)" in tried
    assert "--download-timeout" in info.value.hint
    assert cache_files(settings) == []  # nothing partial, nothing kept
    assert sum(1 for path in asked if path.endswith(".ko")) == 1  # the failing host is not asked again


def test_headers_trickling_a_byte_at_a_time_are_cut_off_too(raw_server):
    def script(conn, request_line):
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        trickle(conn, raw.release, b"X-Slow: yes\r\n" * 50)

    raw = raw_server(script)
    session = build_session(HttpOptions(timeout=10, retries=2, download_timeout=1.0), sleep=Sleeps())
    started = time.monotonic()
    with pytest.raises(HttpFailure) as info:
        session.get_stream(raw.url("/a.ko"))
    assert time.monotonic() - started < 8
    assert info.value.message == "no complete answer within 1s (--download-timeout)"


def test_a_checksum_document_that_never_ends_is_cut_off(raw_server, tmp_path):
    def script(conn, request_line):
        if request_line.split()[1].endswith(".sha256"):
            conn.sendall(response_head(length=64))
            trickle(conn, raw.release, b"a" * 64)
        else:
            conn.sendall(response_head("404 Not Found", length=0))

    raw = raw_server(script)
    session = build_session(HttpOptions(timeout=10, retries=0, download_timeout=1.0), sleep=Sleeps())
    started = time.monotonic()
    with pytest.raises(HttpFailure, match="cut off after 1s"):
        session.get_document(raw.url("/a.ko.sha256"))
    assert time.monotonic() - started < 8


def test_retry_after_waits_are_capped_each_and_per_url(raw_server):
    asked = []

    def script(conn, request_line):
        asked.append(request_line)
        conn.sendall(response_head("503 Service Unavailable", length=0, extra="Retry-After: 3600\r\n"))

    raw = raw_server(script)
    sleeps = Sleeps()
    session = build_session(HttpOptions(timeout=5, retries=6), sleep=sleeps)
    with pytest.raises(HttpFailure) as info:
        session.get_stream(raw.url("/a.ko"))
    assert info.value.status == 503
    assert sleeps and max(sleeps) <= RETRY_AFTER_CAP
    assert sum(sleeps) <= RETRY_WAIT_PER_URL + 0.01  # six waits of 30 s held a URL three minutes
    first = len(asked)
    with pytest.raises(HttpFailure) as again:
        session.get_stream(raw.url("/b.ko.sha256"))
    assert "not asked again" in again.value.message and len(asked) == first
    assert sum(sleeps) <= RETRY_WAIT_PER_URL + 0.01


def test_the_run_stops_starting_requests_when_its_network_budget_is_spent(raw_server):
    def script(conn, request_line):
        if not raw.release.wait(0.4):  # a slow but valid answer: never a timeout, never a failure
            conn.sendall(response_head("404 Not Found", length=0))

    raw = raw_server(script)
    session = build_session(HttpOptions(timeout=10, retries=0, download_timeout=1.0), sleep=Sleeps())
    started = time.monotonic()
    outcomes = []
    for index in range(40):
        try:
            outcomes.append(session.get_document(raw.url(f"/doc-{index}")))
        except HttpFailure as failure:
            outcomes.append(failure.message)
    elapsed = time.monotonic() - started
    assert elapsed < 6, elapsed  # 40 slow answers would take 16 s; the budget is 2 x 1 s
    assert None in outcomes  # the first answers came
    assert any("the run's time for the network" in str(o) for o in outcomes)
    assert len(raw.requests) < 10


# -- what a server says is not repeated ----------------------------------------------------------------------------

def test_the_reason_phrase_is_the_standard_one_not_the_servers(raw_server, logs):
    def script(conn, request_line):
        conn.sendall(response_head("500 Bad credentials Bearer ServerSaidThis", length=0))

    raw = raw_server(script)
    session = build_session(HttpOptions(timeout=5, retries=1), sleep=Sleeps())
    with pytest.raises(HttpFailure) as info:
        session.get_stream(raw.url("/a.ko"))
    assert info.value.message == "HTTP 500 Internal Server Error"
    output = logs()
    assert "ServerSaidThis" not in output and "Bad credentials" not in output
    assert "HTTP 500 Internal Server Error" in output  # the retry log line


def close_without_answer(conn, request_line):
    conn.close()


def not_http(conn, request_line):
    conn.sendall(b"SSH-2.0-OpenSSH_9.2 Bearer ServerSaidThis\r\n\r\n")


def header_too_long(conn, request_line):
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Long: " + b"ServerSaidThis" * 6000 + b"\r\n\r\n")


def reset_by_peer(conn, request_line):
    import struct

    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@pytest.mark.parametrize("script, expected", [
    (close_without_answer, "the server closed the connection without answering"),
    (not_http, "the server's answer is not HTTP (no valid status line)"),
    (header_too_long, "the server sent a header line longer than allowed"),
    (reset_by_peer, "the connection was reset by the server"),
])
def test_connection_failures_are_said_in_words_not_library_reprs(raw_server, script, expected):
    raw = raw_server(script)
    session = build_session(HttpOptions(timeout=5, retries=0), sleep=Sleeps())
    with pytest.raises(HttpFailure) as info:
        session.get_stream(raw.url("/a.ko"))
    message = info.value.message
    assert message == expected
    for internal in ("Connection aborted", "HTTPException", "RemoteDisconnected", "ProtocolError", "('",
                     "ServerSaidThis", "object at 0x"):
        assert internal not in message


def test_a_redirects_body_is_not_read(raw_server):
    def script(conn, request_line):
        if request_line.split()[1] == "/a.ko":
            # a huge redirect body that never comes: reading it would wait for the read timeout, then fail
            conn.sendall(response_head("302 Found", length=10 ** 10, extra="Location: /b.ko\r\n"))
            raw.release.wait(30)
        else:
            conn.sendall(response_head(length=2) + b"ok")

    raw = raw_server(script)
    session = build_session(HttpOptions(timeout=20, retries=0), sleep=Sleeps())
    started = time.monotonic()
    with session.get_stream(raw.url("/a.ko")) as response:
        assert b"".join(session.iter_body(response)) == b"ok"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("location", ["http://[::1/x", "http://" + "a" * 70 + ".example/", "http://h:99999/x"])
def test_a_redirect_to_an_unparseable_location_is_a_failure_not_a_crash(raw_server, location):
    def script(conn, request_line):
        conn.sendall(response_head("302 Found", length=0, extra=f"Location: {location}\r\n"))

    raw = raw_server(script)
    with pytest.raises(HttpFailure) as info:
        build_session(HttpOptions(timeout=5, retries=0), sleep=Sleeps()).get_stream(raw.url("/a.ko"))
    assert info.value.message.startswith("invalid URL")


def test_a_fifo_in_a_file_repository_is_refused_not_waited_on(tmp_path):
    mirror = tmp_path / "mirror" / DEFAULT_VERSION / "x86_64"
    mirror.mkdir(parents=True)
    fifo = mirror / FILENAME
    os.mkfifo(fifo)
    settings = make_settings(tmp_path, [f"file://{tmp_path}/mirror"], fallback=False)
    outcome = []

    def attempt():
        try:
            fetch_artifact(plan_for(settings), settings, session=build_session(settings.http, sleep=Sleeps()))
        except LoaderError as error:
            outcome.append(error)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # unblock a reader stuck in open() before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("opening a FIFO in a file:// repository blocked")
    assert outcome and "HTTP 403" in "\n".join(outcome[0].tried)
    assert cache_files(settings) == []


# -- a repository URL's query string -------------------------------------------------------------------------------

def test_a_repository_query_string_is_kept_on_every_request(server, tmp_path):
    body = b"\x7fELF" + b"\0" * 60
    token = {"token": "abc", "X-Amz-Signature": "sig"}
    server.expect_request(artifact_path(), query_string=token).respond_with_data(body)
    settings = make_settings(tmp_path, [server.url_for("/driver") + "?token=abc&X-Amz-Signature=sig"],
                             policy="auto", fallback=True)
    fetch_artifact(plan_for(settings), settings, session=build_session(settings.http, sleep=Sleeps()))
    seen = {(r.path, r.query_string.decode()) for r, _ in server.log}
    query = "token=abc&X-Amz-Signature=sig"
    assert (artifact_path(), query) in seen
    assert (artifact_path() + ".sha256", query) in seen
    assert (os.path.dirname(artifact_path()) + "/SHA256SUMS", query) in seen
    assert all(q == query for _, q in seen), seen


def test_the_version_index_keeps_the_query_string_too(server, tmp_path):
    settings = make_settings(tmp_path, [server.url_for("/driver") + "?token=abc"], fallback=True)
    with pytest.raises(LoaderError):
        fetch_artifact(plan_for(settings), settings, session=build_session(settings.http, sleep=Sleeps()))
    seen = {(r.path, r.query_string.decode()) for r, _ in server.log}
    assert ("/driver/site/index.json", "token=abc") in seen
    assert ("/driver/", "token=abc") in seen
    assert all(q == "token=abc" for _, q in seen), seen
