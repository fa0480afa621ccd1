"""The trixie stack's pure parts (e2e_trixie.py, e2e_guest_trixie.py): no root, no VM."""

from __future__ import annotations

import e2e_guest_trixie as guest
import e2e_trixie as trixie
import pytest

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_the_mirror_is_read_from_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert trixie.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_the_security_archive_is_not_taken_for_the_mirror(tmp_path):
    (tmp_path / "sources.list").write_text(
        "deb http://security.example/debian-security bookworm-security main\n"
        "# deb http://commented.example/debian bookworm main\n"
        "deb [signed-by=/k.gpg] https://mirror.example/debian/ bookworm main\n"
    )
    assert trixie.debian_mirror(tmp_path) == "https://mirror.example/debian"


def test_a_disabled_stanza_is_skipped(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a.sources").write_text(
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n\n" + DEB822)
    assert trixie.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_no_mirror_means_the_stack_cannot_run(tmp_path):
    with pytest.raises(trixie.E2EUnavailable, match="no Debian archive"):
        trixie.debian_mirror(tmp_path)


SCAP_CONFIG = """\
#define PPM_API_CURRENT_VERSION_MAJOR 8
#define PPM_API_CURRENT_VERSION_MINOR 0
#define PPM_API_CURRENT_VERSION_PATCH 3
#define PPM_SCHEMA_CURRENT_VERSION_MAJOR 3
#define PPM_SCHEMA_CURRENT_VERSION_MINOR 5
#define PPM_SCHEMA_CURRENT_VERSION_PATCH 0
#include "ppm_api_version.h"
#define DRIVER_VERSION "0.20.0"
#define DRIVER_NAME "scap"
#define DRIVER_DEVICE_NAME "scap"
"""


def test_variant_sources_change_module_probe_and_dkms_conf(tmp_path):
    src = tmp_path / "scap-0.20.0"
    (src / "bpf").mkdir(parents=True)
    (src / "driver_config.h").write_text(SCAP_CONFIG)
    (src / "bpf" / "driver_config.h").write_text(SCAP_CONFIG)
    (src / "dkms.conf").write_text('PACKAGE_NAME="scap"\nPACKAGE_VERSION="0.20.0"\nBUILT_MODULE_NAME[0]="scap"\n')
    variant = next(v for v in trixie.VARIANTS if v.name == "schema-4")
    trixie.write_variant_sources(src, tmp_path / "out", variant)
    for config in ("driver_config.h", "bpf/driver_config.h"):
        text = (tmp_path / "out" / config).read_text()
        assert '#define DRIVER_VERSION "8.0.0+driver"' in text and '#define DRIVER_NAME "scap"' in text
        assert "#define PPM_SCHEMA_CURRENT_VERSION_MAJOR 4" in text and "#define PPM_API_CURRENT_VERSION_MAJOR 8" in text
    assert 'PACKAGE_VERSION="8.0.0+driver"' in (tmp_path / "out" / "dkms.conf").read_text()


def test_consumer_output_is_parsed():
    output = ("SCAP-OPEN-OK engine=kmod open_s=0.13 driver_api=8.0.3 driver_schema=3.5.0\nSCAP-TICK 10\n"
              "SCAP-EVENTS 3895\nSCAP-DETAIL engine=kmod secs=10.0 bytes=1 timeouts=3 child_openat_x=475 "
              "kernel_evts=3910 drops=0\n")
    assert guest.parse_consumer(output) == {"opened": True, "api": "8.0.3", "schema": "3.5.0", "events": 3895,
                                            "child_openat_x": 475, "drops": 0}
    failed = guest.parse_consumer("SCAP-OPEN-FAILED rc=1: unable to mmap the perf-buffer for cpu '0'\n")
    assert failed == {"opened": False, "error": "rc=1: unable to mmap the perf-buffer for cpu '0'"}


def test_the_guest_sees_every_variant_it_is_told_about():
    stack = trixie.Stack(trixie.Path("/r"), "6.12.43+deb13-amd64", trixie.Path("/r/boot/vmlinuz"),
                         trixie.Path("/b"), "drivers-x", "engine-y", "consumer-z", "0.20.0", "0.20.0")
    config = trixie.guest_config(stack)
    assert set(config["modules"]) == {v.name for v in trixie.VARIANTS}
    assert set(config["probes"]) == {v.name for v in trixie.VARIANTS if v.probe}
    assert config["modules"]["8.0.0"] == "/e2e/build/drivers-x/8.0.0.ko"
    assert config["versions"]["api-9"] == {"version": "8.0.0+driver", "api_version": "9.0.3",
                                           "schema_version": "3.5.0"}
    assert config["consumer"] == "/e2e/build/consumer-z/scap_count"
