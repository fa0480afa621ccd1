import os

import pytest


@pytest.fixture
def host_root(tmp_path):
    """A host root tree: call it with {relative path: content} to lay files down."""
    root = tmp_path / "host"
    root.mkdir()

    def make(files=None):
        for rel, content in (files or {}).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return str(root)

    return make


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Tests never see the developer's loader environment or falcoctl config."""
    for key in list(os.environ):
        if key.startswith(("FALCOCTL_", "DRIVER", "FALCO_BPF_PROBE")) or key in ("HOST_ROOT",):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def httpserver_listen_address():
    """pytest-httpserver's own fixture binds `localhost`, which needs a resolver that a minimal root may lack."""
    return ("127.0.0.1", 0)
