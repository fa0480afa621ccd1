import json
import os
import threading

import pytest
from download_helpers import (
    DEFAULT_VERSION,
    FILENAME,
    Sleeps,
    artifact_path,
    closed_port,
    make_settings,
    plan_for,
    reset,
    response_head,
    sha256,
)
from werkzeug import Response

from driver_loader.artifacts.cache import META_SUFFIX, ArtifactCache
from driver_loader.core.errors import ExitCode, LoaderError, NoDriverError, VerificationError
from driver_loader.net.fetch import ADVICE, fetch_artifact
from driver_loader.net.http import build_session

pytest_plugins = ["download_fixtures", "tls_fixtures"]

BODY = b"\x7fELF" + bytes(range(256)) * 64


def fetch(settings, *, plan=None, sleeps=None, cache=None, **kw):
    session = build_session(settings.http, sleep=sleeps if sleeps is not None else Sleeps(),
                            repos=settings.repos)
    return fetch_artifact(plan or plan_for(settings), settings, session=session, cache=cache, **kw)


def cache_files(settings):
    """Every file in the cache except lock files."""
    found = []
    for directory, _, names in os.walk(settings.cache_dir):
        found += [os.path.join(directory, n) for n in names if not n.endswith(".lock")]
    return sorted(found)


def artifact_requests(server, version=DEFAULT_VERSION):
    return [r for r, _ in server.log if r.path == artifact_path(version)]


# -- the common paths --------------------------------------------------------------------------------------------------

def test_download_records_the_digest_then_reuses_the_cache(server, tmp_path, logs):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    settings = make_settings(tmp_path, [server.url_for("/driver")])
    first = fetch(settings)
    assert first.source == "download" and first.version == DEFAULT_VERSION
    assert first.sha256 == sha256(BODY) and first.verified_by == "none (recorded digest)"
    assert first.path == os.path.join(settings.cache_dir, DEFAULT_VERSION, "x86_64", FILENAME)
    assert first.url == server.url_for("/driver/8.0.0%2Bdriver/x86_64/" + FILENAME)
    with open(first.path, "rb") as handle:
        assert handle.read() == BODY
    assert "publishes no checksum" in logs()
    second = fetch(settings)
    assert (second.source, second.path, second.sha256) == ("cache", first.path, first.sha256)
    assert len(artifact_requests(server)) == 1


def test_every_url_404_is_exit_3_with_everything_tried(server, tmp_path):
    settings = make_settings(tmp_path, [server.url_for("/one"), server.url_for("/two")])
    with pytest.raises(NoDriverError) as info:
        fetch(settings)
    error = info.value
    assert error.exit_code == ExitCode.NO_DRIVER
    assert "6.8.0-79-generic" in error.message and ">=8.0.0,<9.0.0" in error.message
    tried = "\n".join(error.tried)
    for repo in ("/one", "/two"):
        assert f"{server.url_for(repo)}/8.0.0%2Bdriver/x86_64/{FILENAME}: HTTP 404" in tried
    assert error.hint == ADVICE
    assert "--compile" in error.hint and "--repo" in error.hint and "modern_ebpf" in error.hint
    assert cache_files(settings) == []


def test_first_refuses_second_404_third_serves(server, tmp_path, logs, sleeps):
    server.expect_request(artifact_path(prefix="/three")).respond_with_data(BODY)
    refused = f"http://127.0.0.1:{closed_port()}/one"
    settings = make_settings(tmp_path, [refused, server.url_for("/two"), server.url_for("/three")])
    result = fetch(settings, sleeps=sleeps)
    assert result.source == "download" and result.url.startswith(server.url_for("/three"))
    output = logs()
    assert "refused" in output.lower() and "HTTP 404" in output and "elapsed=" in output
    assert len(sleeps) == settings.http.retries  # the refused repo was retried, the 404 was not


def test_network_errors_make_it_exit_1_not_3(server, tmp_path):
    refused = f"http://127.0.0.1:{closed_port()}/one"
    settings = make_settings(tmp_path, [refused, server.url_for("/two")], retries=0)
    with pytest.raises(LoaderError) as info:
        fetch(settings)
    assert type(info.value) is LoaderError and info.value.exit_code == ExitCode.RUNTIME
    tried = "\n".join(info.value.tried)
    assert "refused" in tried.lower() and "HTTP 404" in tried
    assert "--compile" in info.value.hint


def test_server_errors_are_retried_until_success(server, tmp_path, sleeps):
    # The checksum documents are asked for first (they 404 here); then the artifact fails twice before it works.
    for _ in range(2):
        server.expect_oneshot_request(artifact_path()).respond_with_data("", status=500)
    server.expect_request(artifact_path()).respond_with_data(BODY)
    settings = make_settings(tmp_path, [server.url_for("/driver")], retries=3)
    result = fetch(settings, sleeps=sleeps)
    assert result.sha256 == sha256(BODY)
    assert len(sleeps) == 2


# -- broken transfers ----------------------------------------------------------------------------------------------------

def artifact_script(behaviours):
    """A raw-server script: the n-th artifact request gets behaviours[n] (the last one repeats); checksum
    documents get 404."""
    count = []

    def script(conn, request_line):
        if ".sha256 " in request_line or "SHA256SUMS" in request_line:
            conn.sendall(response_head("404 Not Found", length=0))
            return
        behaviour = behaviours[min(len(count), len(behaviours) - 1)]
        count.append(1)
        behaviour(conn)

    return script


def full(conn):
    conn.sendall(response_head(length=len(BODY)) + BODY)


def reset_midway(conn):
    conn.sendall(response_head(length=len(BODY)) + BODY[:1000])
    reset(conn)


def short_body(conn):
    conn.sendall(response_head(length=len(BODY) + 500) + BODY)


def test_a_reset_mid_body_is_retried(raw_server, tmp_path, sleeps):
    raw = raw_server(artifact_script([reset_midway, full]))
    settings = make_settings(tmp_path, [raw.url("/driver")])
    result = fetch(settings, sleeps=sleeps)
    assert result.sha256 == sha256(BODY)
    assert len([r for r in raw.requests if r.split()[1].endswith(".ko")]) == 2


@pytest.mark.parametrize("behaviour, words", [(reset_midway, "interrupted"), (short_body, "")])
def test_broken_bodies_keep_nothing_and_exit_1(raw_server, tmp_path, behaviour, words):
    raw = raw_server(artifact_script([behaviour]))
    settings = make_settings(tmp_path, [raw.url("/driver")], retries=1, fallback=False)
    with pytest.raises(LoaderError) as info:
        fetch(settings)
    assert info.value.exit_code == ExitCode.RUNTIME
    assert words in "\n".join(info.value.tried)
    assert len([r for r in raw.requests if r.split()[1].endswith(".ko")]) == 2
    assert cache_files(settings) == []


def test_a_body_slower_than_the_read_timeout_keeps_nothing(raw_server, tmp_path):
    def stall(conn):
        conn.sendall(response_head(length=len(BODY)) + BODY[:100])
        raw.release.wait(30)

    raw = raw_server(artifact_script([stall]))
    settings = make_settings(tmp_path, [raw.url("/driver")], timeout=0.3, retries=0, fallback=False)
    with pytest.raises(LoaderError) as info:
        fetch(settings)
    assert "no data for 0.3s" in "\n".join(info.value.tried)
    assert cache_files(settings) == []


def test_an_artifact_over_max_size_is_rejected(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    settings = make_settings(tmp_path, [server.url_for("/driver")], max_size=100, fallback=False)
    with pytest.raises(LoaderError) as info:
        fetch(settings)
    assert "more than the maximum of 100" in "\n".join(info.value.tried)
    assert cache_files(settings) == []


# -- verification ----------------------------------------------------------------------------------------------------------

def test_a_wrong_sidecar_is_exit_4_and_nothing_is_cached(server, tmp_path):
    wrong = "f" * 64
    server.expect_request(artifact_path()).respond_with_data(BODY)
    server.expect_request(artifact_path() + ".sha256").respond_with_data(f"{wrong}  {FILENAME}\n")
    settings = make_settings(tmp_path, [server.url_for("/driver")], fallback=False)
    with pytest.raises(VerificationError) as info:
        fetch(settings)
    assert info.value.exit_code == ExitCode.VERIFICATION
    tried = "\n".join(info.value.tried)
    assert wrong in tried and sha256(BODY) in tried and ".sha256" in tried
    assert cache_files(settings) == []


def test_a_wrong_checksum_on_one_mirror_does_not_stop_a_good_one(server, tmp_path):
    for prefix, digest in (("/bad", "0" * 64), ("/good", sha256(BODY))):
        server.expect_request(artifact_path(prefix=prefix)).respond_with_data(BODY)
        server.expect_request(artifact_path(prefix=prefix) + ".sha256").respond_with_data(digest)
    settings = make_settings(tmp_path, [server.url_for("/bad"), server.url_for("/good")])
    result = fetch(settings)
    assert result.verified_by == "sha256-sidecar" and result.url.startswith(server.url_for("/good"))


def test_sha256sums_verifies(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    server.expect_request(f"/driver/{DEFAULT_VERSION}/x86_64/SHA256SUMS").respond_with_data(
        f"{sha256(BODY)}  {FILENAME}\n")
    result = fetch(make_settings(tmp_path, [server.url_for("/driver")]))
    assert result.verified_by == "sha256sums"
    with open(result.path + META_SUFFIX) as handle:
        assert json.load(handle)["verified_by"] == "sha256sums"


def test_strict_refuses_an_artifact_without_a_checksum(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    settings = make_settings(tmp_path, [server.url_for("/driver")], policy="strict", fallback=False)
    with pytest.raises(VerificationError) as info:
        fetch(settings)
    assert "--verify strict" in "\n".join(info.value.tried)
    assert cache_files(settings) == []


def test_strict_does_not_reuse_an_entry_that_was_only_recorded(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    fetch(make_settings(tmp_path, [server.url_for("/driver")]))
    server.expect_request(artifact_path() + ".sha256").respond_with_data(sha256(BODY))
    result = fetch(make_settings(tmp_path, [server.url_for("/driver")], policy="strict"))
    assert (result.source, result.verified_by) == ("download", "sha256-sidecar")


def test_verify_off_records_without_looking_for_checksums(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    result = fetch(make_settings(tmp_path, [server.url_for("/driver")], policy="off"))
    assert result.verified_by == "none (verification off)"
    assert [r.path for r, _ in server.log] == [artifact_path()]


def test_a_pinned_digest_must_match(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    good = fetch(make_settings(tmp_path / "a", [server.url_for("/driver")], sha=sha256(BODY)))
    assert good.verified_by == "sha256-pinned"
    settings = make_settings(tmp_path / "b", [server.url_for("/driver")], sha="a" * 64, fallback=False)
    with pytest.raises(VerificationError) as info:
        fetch(settings)
    assert "--sha256" in "\n".join(info.value.tried)


def test_a_cached_entry_that_differs_from_the_pin_is_downloaded_again(server, tmp_path):
    server.expect_ordered_request(artifact_path()).respond_with_data(b"old build")
    server.expect_ordered_request(artifact_path()).respond_with_data(BODY)
    fetch(make_settings(tmp_path, [server.url_for("/driver")], policy="off"))
    result = fetch(make_settings(tmp_path, [server.url_for("/driver")], sha=sha256(BODY)))
    assert (result.source, result.sha256) == ("download", sha256(BODY))


def test_a_tampered_cache_entry_is_discarded_and_fetched_again(server, tmp_path, logs):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    settings = make_settings(tmp_path, [server.url_for("/driver")])
    first = fetch(settings)
    with open(first.path, "r+b") as handle:
        handle.write(b"\x00rootkit")
    second = fetch(settings)
    assert second.source == "download" and second.sha256 == sha256(BODY)
    assert "does not match its recorded digest" in logs()
    assert len(artifact_requests(server)) == 2


# -- version fallback ----------------------------------------------------------------------------------------------------------

SITE_INDEX = '["7.3.0+driver", "8.0.0+driver", "8.1.0+driver", "8.2.0+driver", "9.0.0+driver"]'


def test_fallback_picks_the_highest_compatible_version(server, tmp_path):
    server.expect_request("/driver/site/index.json").respond_with_data(SITE_INDEX)
    for version in ("8.1.0+driver", "8.2.0+driver", "9.0.0+driver", "7.3.0+driver"):
        server.expect_request(artifact_path(version)).respond_with_data(BODY + version.encode())
    settings = make_settings(tmp_path, [server.url_for("/driver")])
    result = fetch(settings)
    assert result.version == "8.2.0+driver"
    assert result.path == os.path.join(settings.cache_dir, "8.2.0+driver", "x86_64", FILENAME)
    assert result.sha256 == sha256(BODY + b"8.2.0+driver")
    requested = [r.path for r, _ in server.log]
    assert artifact_path("9.0.0+driver") not in requested and artifact_path("7.3.0+driver") not in requested
    assert artifact_path("8.1.0+driver") not in requested
    assert requested.count(artifact_path()) == 1


def test_fallback_skips_versions_whose_site_listing_lacks_the_artifact(server, tmp_path):
    server.expect_request("/driver/site/index.json").respond_with_data(SITE_INDEX)
    server.expect_request("/driver/site/8.2.0+driver.json").respond_with_data(
        json.dumps({"drivers": [{"arch": "x86_64", "name": "falco_other_1.ko"}]}))
    server.expect_request(artifact_path("8.1.0+driver")).respond_with_data(BODY)
    settings = make_settings(tmp_path, [server.url_for("/driver")])
    assert fetch(settings).version == "8.1.0+driver"
    assert artifact_path("8.2.0+driver") not in [r.path for r, _ in server.log]


def test_fallback_through_a_file_mirror_listing(tmp_path):
    mirror = tmp_path / "mirror"
    for version in ("8.0.0+driver", "8.1.0+driver", "9.0.0+driver"):
        (mirror / version / "x86_64").mkdir(parents=True)
    for version in ("8.1.0+driver", "9.0.0+driver"):
        (mirror / version / "x86_64" / FILENAME).write_bytes(BODY)
    settings = make_settings(tmp_path, [f"file://{mirror}"])
    result = fetch(settings)
    assert result.version == "8.1.0+driver"
    assert result.url == f"file://{mirror}/8.1.0%2Bdriver/x86_64/{FILENAME}"


def test_no_compatible_version_is_exit_3_and_says_so(server, tmp_path):
    server.expect_request("/driver/site/index.json").respond_with_data('["7.3.0+driver", "9.0.0+driver"]')
    server.expect_request(artifact_path("9.0.0+driver")).respond_with_data(BODY)
    with pytest.raises(NoDriverError) as info:
        fetch(make_settings(tmp_path, [server.url_for("/driver")]))
    assert "no other version inside >=8.0.0,<9.0.0 is published" in "\n".join(info.value.tried)
    assert artifact_path("9.0.0+driver") not in [r.path for r, _ in server.log]


def test_fallback_can_be_turned_off(server, tmp_path):
    server.expect_request("/driver/site/index.json").respond_with_data(SITE_INDEX)
    server.expect_request(artifact_path("8.2.0+driver")).respond_with_data(BODY)
    with pytest.raises(NoDriverError):
        fetch(make_settings(tmp_path, [server.url_for("/driver")], fallback=False))
    assert "/driver/site/index.json" not in [r.path for r, _ in server.log]


def test_the_index_is_read_once_per_session(server, tmp_path):
    server.expect_request("/driver/site/index.json").respond_with_data(SITE_INDEX)
    settings = make_settings(tmp_path, [server.url_for("/driver")])
    session = build_session(settings.http, sleep=Sleeps())
    for _ in range(2):
        with pytest.raises(NoDriverError):
            fetch_artifact(plan_for(settings), settings, session=session)
    assert [r.path for r, _ in server.log].count("/driver/site/index.json") == 1


# -- cache safety and concurrency ------------------------------------------------------------------------------------------

def test_a_symlink_planted_at_the_cache_path_is_refused(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    settings = make_settings(tmp_path, [server.url_for("/driver")])
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not overwrite")
    target = os.path.join(settings.cache_dir, DEFAULT_VERSION, "x86_64", FILENAME)
    os.makedirs(os.path.dirname(target))
    os.symlink(victim, target)
    with pytest.raises(LoaderError, match="symbolic link") as info:
        fetch(settings)
    assert info.value.exit_code == ExitCode.RUNTIME
    assert victim.read_bytes() == b"do not overwrite"
    assert artifact_requests(server) == []


def test_concurrent_loaders_download_once(server, tmp_path):
    first_request, second_waiting = threading.Event(), threading.Event()

    class SignallingCache(ArtifactCache):
        def lock(self, path):
            second_waiting.set()
            return super().lock(path)

    def slow_artifact(request):
        first_request.set()
        second_waiting.wait(10)  # hold the first download until the second loader is at the lock
        return Response(BODY)

    server.expect_request(artifact_path()).respond_with_handler(slow_artifact)
    settings = make_settings(tmp_path, [server.url_for("/driver")])
    results, errors = [], []

    def loader(cache):
        try:
            results.append(fetch(settings, cache=cache))
        except Exception as exc:  # reported below
            errors.append(exc)

    first = threading.Thread(target=loader, args=(ArtifactCache(settings.cache_dir),))
    first.start()
    assert first_request.wait(10)
    second = threading.Thread(target=loader, args=(SignallingCache(settings.cache_dir),))
    second.start()
    first.join(30)
    second.join(30)
    assert errors == []
    assert len(artifact_requests(server)) == 1
    assert sorted(r.source for r in results) == ["cache", "download"]
    assert {r.sha256 for r in results} == {sha256(BODY)}


def test_file_mirror(tmp_path):
    mirror = tmp_path / "mirror" / DEFAULT_VERSION / "x86_64"
    mirror.mkdir(parents=True)
    (mirror / FILENAME).write_bytes(BODY)
    (mirror / "SHA256SUMS").write_text(f"{sha256(BODY)}  {FILENAME}\n")
    result = fetch(make_settings(tmp_path, [f"file://{tmp_path}/mirror"]))
    assert (result.source, result.verified_by, result.sha256) == ("download", "sha256sums", sha256(BODY))


def test_https_to_http_redirect_is_a_failure(server, tmp_path, tls_files):
    from pytest_httpserver import HTTPServer

    tls = HTTPServer(host="127.0.0.1", port=0, ssl_context=tls_files.server_context())
    tls.no_handler_status_code = 404  # no checksum published
    tls.start()
    try:
        server.expect_request(artifact_path()).respond_with_data(BODY)
        tls.expect_request(artifact_path()).respond_with_data(
            "", status=301, headers={"Location": server.url_for(artifact_path())})
        settings = make_settings(tmp_path, [tls.url_for("/driver")], ca_bundle=tls_files.ca_pem, fallback=False)
        with pytest.raises(LoaderError) as info:
            fetch(settings)
    finally:
        tls.stop()
    assert "refusing redirect from https to http" in "\n".join(info.value.tried)
    assert artifact_requests(server) == [] and cache_files(settings) == []


def test_credentials_never_reach_logs_or_errors(server, tmp_path, logs):
    server.expect_request(artifact_path(prefix="/auth")).respond_with_data("", status=500)
    refused = f"http://bob:Passw0rdRefused@127.0.0.1:{closed_port()}/driver"
    settings = make_settings(
        tmp_path,
        [refused, server.url_for("/auth").replace("http://", "http://alice:Passw0rdServer@")],
        headers=(("Authorization", "Bearer Tok3nHeader"), ("Cookie", "session=C00kieValue")),
    )
    with pytest.raises(LoaderError) as info:
        fetch(settings)
    error = info.value
    text = "\n".join([logs(), error.message, error.hint, *error.tried])
    assert "127.0.0.1" in text and "****@" in text
    for secret in ("Passw0rdRefused", "Passw0rdServer", "Tok3nHeader", "C00kieValue", "alice", "bob"):
        assert secret not in text
    used = [r for r, _ in server.log if r.path == artifact_path(prefix="/auth")]
    assert used and used[0].authorization.password == "Passw0rdServer"  # the credentials were still sent


def test_progress_is_reported(server, tmp_path):
    server.expect_request(artifact_path()).respond_with_data(BODY)
    seen = []
    fetch(make_settings(tmp_path, [server.url_for("/driver")]), progress=lambda done, total: seen.append(
        (done, total)))
    assert seen[-1] == (len(BODY), len(BODY))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_a_plan_without_candidates_is_exit_3_with_its_reasons(tmp_path):
    settings = make_settings(tmp_path, ["http://127.0.0.1:9/driver"])
    plan = plan_for(settings, version="8.0.0+driver/../../etc")
    with pytest.raises(NoDriverError) as info:
        fetch(settings, plan=plan)
    assert info.value.tried and "driver version" in info.value.tried[0]
