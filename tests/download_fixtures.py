"""Fixtures for the download-layer tests (load with `pytest_plugins = ["download_fixtures"]`): servers on
127.0.0.1, captured debug logs and a sleep recorder."""

from __future__ import annotations

import socket
from typing import Callable, List

import pytest
from download_helpers import RawServer, Sleeps
from pytest_httpserver import HTTPServer

from driver_loader.output import log as logging_setup


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture(scope="session")
def _shared_server():
    httpserver = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    httpserver.start()
    yield httpserver
    httpserver.stop()


@pytest.fixture
def server(_shared_server):
    """A plain-HTTP server on 127.0.0.1 that answers 404 for anything not registered; reset after each test."""
    _shared_server.clear()
    _shared_server.no_handler_status_code = 404
    yield _shared_server
    _shared_server.clear()


@pytest.fixture
def logs(capsys):
    """Debug logs captured from stderr; read them with logs()."""
    logging_setup.setup(log_format="text", log_level="debug")

    def read() -> str:
        return capsys.readouterr().err

    yield read
    logging_setup.setup(log_format="auto", log_level="info")


@pytest.fixture
def raw_server():
    """Start raw servers with raw_server(script); all are closed after the test."""
    servers: List[RawServer] = []

    def start(script: Callable[[socket.socket, str], None]) -> RawServer:
        servers.append(RawServer(script))
        return servers[-1]

    yield start
    for raw in servers:
        raw.close()
