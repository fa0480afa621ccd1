"""A node whose network is down learns it once per host and is told so: the message names the repositories and the
advice is about the network, not about building from sources."""

import pytest
from download_helpers import Sleeps, closed_port, make_settings, plan_for
from test_install import World

from driver_loader.core.errors import ExitCode, HttpFailure, NetworkError, NoDriverError
from driver_loader.core.settings import HttpOptions
from driver_loader.net.fetch import fetch_artifact
from driver_loader.net.http import build_session

pytest_plugins = ["download_fixtures"]


def test_an_unreachable_host_is_retried_once_per_run_not_once_per_url():
    sleeps = Sleeps()
    session = build_session(HttpOptions(timeout=5, retries=3), sleep=sleeps)
    base = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(HttpFailure) as first:
        session.get_stream(f"{base}/a.ko")
    assert first.value.unreachable and len(sleeps) == 3
    with pytest.raises(HttpFailure) as second:
        session.get_stream(f"{base}/b.ko.sha256")
    assert second.value.unreachable and "unreachable earlier" in second.value.message
    assert len(sleeps) == 3  # no new connection attempts, no new back-off


def test_an_http_answer_is_not_unreachable(server):
    server.expect_request("/a").respond_with_data("no", status=500)
    with pytest.raises(HttpFailure) as info:
        build_session(HttpOptions(timeout=5, retries=0), sleep=Sleeps()).get_stream(server.url_for("/a"))
    assert not info.value.unreachable


def test_every_repository_unreachable_is_a_network_error_naming_them(tmp_path):
    repos = [f"http://127.0.0.1:{closed_port()}/one", f"http://127.0.0.1:{closed_port()}/two"]
    settings = make_settings(tmp_path, repos, retries=1)
    session = build_session(settings.http, sleep=Sleeps(), repos=settings.repos)
    with pytest.raises(NetworkError) as info:
        fetch_artifact(plan_for(settings), settings, session=session)
    error = info.value
    assert error.exit_code == ExitCode.RUNTIME
    assert "could not reach" in error.message and repos[0] in error.message and repos[1] in error.message
    assert "network" in error.hint and "proxy" in error.hint
    assert "/usr/src" not in error.hint and "falco package" not in error.hint


def test_install_leads_with_the_network_when_download_could_not_connect_and_build_had_no_sources(tmp_path):
    world = World(tmp_path)
    world.fetch.error = NetworkError("could not reach the driver repository http://127.0.0.1:9/repo",
                                     repos=["http://127.0.0.1:9/repo"], hint="check the node's network, DNS and proxy")
    world.build.error = NoDriverError("no driver sources in /usr/src/falco-8.0.0+driver",
                                      hint="install the falco package, which ships /usr/src/falco-8.0.0+driver")
    with pytest.raises(NoDriverError) as caught:
        world.install()
    error = caught.value
    assert error.exit_code == ExitCode.NO_DRIVER
    assert "could not be reached" in error.message and "http://127.0.0.1:9/repo" in error.message
    assert error.hint.startswith("check the node's network")
    assert "build failed" in error.message


def test_the_shared_test_server_binds_the_loopback_address_not_a_name(httpserver):
    # A minimal root may have no /etc/hosts entry for localhost; 127.0.0.1 needs no resolver.
    assert httpserver.host == "127.0.0.1"
