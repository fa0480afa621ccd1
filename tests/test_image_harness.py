"""The image harness's pure parts (no root, no buildah): which apt sources make the base image, and what makes the
cached images stale."""

from __future__ import annotations

import image_harness as harness
import pytest

INDEXTARGETS = """\
deb http://deb.debian.org/debian/ bookworm main Debian
deb http://deb.debian.org/debian/ bookworm contrib Debian
deb http://deb.debian.org/debian/ bookworm-updates main Debian
deb http://security.example/debian-security/ bookworm-security main Debian
deb-src http://deb.debian.org/debian/ bookworm main Debian
deb https://deb.nodesource.com/node_20.x/ nodistro main Node Source
deb http://deb.debian.org/debian/ trixie main Debian
deb http://deb.debian.org/debian/ bookworm-backports main Debian
"""


def test_base_image_sources_are_the_machines_debian_bookworm_archives(monkeypatch):
    monkeypatch.setattr(harness, "_run", lambda argv, **_: INDEXTARGETS)
    assert harness.debian_sources() == [
        "deb http://deb.debian.org/debian bookworm main contrib",
        "deb http://deb.debian.org/debian bookworm-backports main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://security.example/debian-security bookworm-security main",
    ]


def test_no_bookworm_archive_means_no_base_image(monkeypatch):
    monkeypatch.setattr(harness, "_run", lambda argv, **_: "deb https://deb.nodesource.com/node_20.x/ nodistro main\n")
    with pytest.raises(harness.ImageUnavailable, match="bookworm"):
        harness.debian_sources()


def test_base_key_follows_the_sources():
    one = ["deb http://deb.debian.org/debian bookworm main"]
    assert harness.base_key(one) == harness.base_key(list(one))
    assert harness.base_key(one) != harness.base_key(["deb http://mirror.example/debian bookworm main"])


def test_image_key_follows_the_context_and_the_base(tmp_path, monkeypatch):
    (tmp_path / "packaging" / "docker").mkdir(parents=True)
    dockerfile = tmp_path / "packaging" / "docker" / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim\n")
    (tmp_path / ".dockerignore").write_text("*\n")
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "README.md").write_text("readme\n")
    package = tmp_path / "driver_loader"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(harness, "CHECKOUT", tmp_path)
    monkeypatch.setattr(harness, "DOCKERFILE", dockerfile)
    monkeypatch.setattr(harness, "IGNORE_FILE", tmp_path / ".dockerignore")
    key = harness.context_digest("base-1")
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"bytecode")
    assert harness.context_digest("base-1") == key  # bytecode is not in the context
    assert harness.context_digest("base-2") != key
    (package / "__init__.py").write_text("# changed\n")
    changed = harness.context_digest("base-1")
    assert changed != key
    dockerfile.write_text("FROM debian:bookworm-slim\nRUN true\n")
    assert harness.context_digest("base-1") != changed
