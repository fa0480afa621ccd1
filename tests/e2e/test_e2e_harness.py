"""The e2e harness's pure parts: no root, no VM."""

from __future__ import annotations

import json

import e2e_guest
import e2e_harness as harness
import pytest
from elf_fixtures import DEFAULT_CRCS, make_kmod

MAKEFILE = """\
scap-y += main.o dynamic_params_table.o fillers_table.o
obj-m += scap.o
ccflags-y :=
"""
DRIVER_CONFIG = """\
#define PPM_API_CURRENT_VERSION_MAJOR 1
#define PPM_API_CURRENT_VERSION_MINOR 0
#define PPM_API_CURRENT_VERSION_PATCH 0
#define PPM_SCHEMA_CURRENT_VERSION_MAJOR 1
#define PPM_SCHEMA_CURRENT_VERSION_MINOR 0
#define PPM_SCHEMA_CURRENT_VERSION_PATCH 0
#define DRIVER_VERSION "0.1.1dev+git20220316.e5c53d64"
#define DRIVER_NAME "scap"
#define DRIVER_DEVICE_NAME "scap"
#define KBUILD_MODNAME DRIVER_NAME
"""
DKMS_CONF = """\
PACKAGE_NAME="scap"
PACKAGE_VERSION="0.1.1dev+git20220316.e5c53d64"
BUILT_MODULE_NAME[0]="scap"
DEST_MODULE_LOCATION[0]="/kernel/extra"
"""
RELEASE = "6.1.0-56-amd64"


@pytest.mark.parametrize(
    "depends, release",
    [
        ("linux-image-6.1.0-56-amd64 (= 6.1.192-2)", "6.1.0-56-amd64"),
        ("linux-image-6.1.0-57-amd64 (= 6.1.200-1), other", "6.1.0-57-amd64"),
        ("linux-image-6.12.9+bpo-amd64 (= 6.12.9-1~bpo12+1)", "6.12.9+bpo-amd64"),
    ],
)
def test_kernel_release_follows_the_metapackage(depends, release):
    assert harness.kernel_release_from_depends(depends) == release


def test_kernel_release_without_an_image_dependency_is_an_error():
    with pytest.raises(harness.E2ESetupError):
        harness.kernel_release_from_depends("linux-base")


def test_makefile_builds_a_module_with_the_new_name():
    text = harness.rename_makefile(MAKEFILE, "falco")
    assert "falco-y += main.o" in text and "obj-m += falco.o" in text and "scap" not in text


def test_driver_config_reports_name_version_api_and_schema():
    driver = harness.TestDriver("8.1.0+driver", "8.0.3", "3.6.1")
    text = harness.rename_driver_config(DRIVER_CONFIG, "falco", driver)
    defines = dict(line.split(" ", 2)[1:] for line in text.splitlines())
    assert defines["DRIVER_VERSION"] == '"8.1.0+driver"'
    assert defines["DRIVER_NAME"] == defines["DRIVER_DEVICE_NAME"] == '"falco"'
    api = [defines[f"PPM_API_CURRENT_VERSION_{p}"] for p in ("MAJOR", "MINOR", "PATCH")]
    schema = [defines[f"PPM_SCHEMA_CURRENT_VERSION_{p}"] for p in ("MAJOR", "MINOR", "PATCH")]
    assert (api, schema) == (["8", "0", "3"], ["3", "6", "1"])
    assert defines["KBUILD_MODNAME"] == "DRIVER_NAME"


def test_dkms_conf_names_the_package_and_module():
    text = harness.rename_dkms_conf(DKMS_CONF, "falco", "8.1.0+driver")
    assert 'PACKAGE_NAME="falco"' in text and 'PACKAGE_VERSION="8.1.0+driver"' in text
    assert 'BUILT_MODULE_NAME[0]="falco"' in text and 'DEST_MODULE_LOCATION[0]="/kernel/extra"' in text


def test_a_changed_source_layout_fails_loudly():
    with pytest.raises(harness.E2ESetupError, match="obj-m"):
        harness.rename_makefile("scap-y += main.o\nobj-m += other.o\n", "falco")
    with pytest.raises(harness.E2ESetupError, match="DRIVER_NAME"):
        harness.rename_driver_config(DRIVER_CONFIG.replace('#define DRIVER_NAME "scap"\n', ""), "falco",
                                     harness.TEST_DRIVERS[0])


def _crcs(module: bytes) -> dict:
    from driver_loader.artifacts.elf import inspect_artifact

    return inspect_artifact(module).symbol_crcs


def test_module_variants_change_exactly_what_they_claim(tmp_path):
    good = make_kmod(tmp_path, vermagic=f"{RELEASE} SMP preempt mod_unload modversions ").read_bytes()
    variants = harness.module_variants(good, RELEASE)
    assert f"vermagic={RELEASE} SMP PREEMPT MOD_UNLOAD MODVERSIONS \0".encode() in variants["vermagic-flags"]
    assert b"vermagic=7.2.1-67-amd64 SMP preempt mod_unload modversions \0" in variants["other-release"]
    assert _crcs(variants["other-release"]) == _crcs(good)
    changed = {name: crc for name, crc in _crcs(variants["other-release-abi"]).items() if _crcs(good)[name] != crc}
    assert changed == {"module_layout": DEFAULT_CRCS["module_layout"] ^ 0xFFFFFFFF}
    assert b"vermagic=7.2.1-67-amd64 " in variants["other-release-abi"]
    assert good.startswith(variants["truncated"]) and 0 < len(variants["truncated"]) < len(good)
    assert all(len(data) == len(good) for name, data in variants.items() if name != "truncated")


def test_module_variants_need_the_module_to_be_built_for_the_release(tmp_path):
    module = make_kmod(tmp_path, vermagic="6.1.0-55-amd64 SMP preempt ").read_bytes()
    with pytest.raises(harness.E2ESetupError, match="vermagic"):
        harness.module_variants(module, RELEASE)


def test_a_crc_can_only_be_flipped_for_an_imported_symbol(tmp_path):
    module = make_kmod(tmp_path, crcs={"printk": 1}).read_bytes()
    with pytest.raises(harness.E2ESetupError, match="module_layout"):
        harness.flip_crc(module, "module_layout")


@pytest.mark.parametrize(
    "release, shifted",
    [("6.1.0-56-amd64", "7.2.1-67-amd64"), ("6.1.0-9-cloud-amd64", "7.2.1-0-cloud-amd64"), ("5.10", "6.21")],
)
def test_shifted_release_keeps_length_and_flavour(release, shifted):
    assert harness._shifted_release(release) == shifted


def test_results_are_read_from_noisy_console_output():
    result = {"scenario": "upgrade", "ok": False, "checks": [{"what": "exit status 0", "ok": False, "detail": "2"}],
              "commands": [{"argv": ["python3", "-m", "driver_loader"], "exit": 2, "stdout": "", "stderr": "boom"}]}
    text = "\r\n".join([
        "[    1.234] virtme-ng-init: booting",
        "E2E-GUEST-READY kernel=6.1.0-56-amd64",
        "E2E-RESULT " + json.dumps({"scenario": "smoke_cli", "ok": True, "checks": [], "commands": []}),
        "noise E2E-RESULT " + json.dumps(result),
        "E2E-RESULT {truncated",
    ])
    results = harness.parse_results(text)
    assert sorted(results) == ["smoke_cli", "upgrade"]
    assert results["smoke_cli"].ok and not results["upgrade"].ok
    report = results["upgrade"].report()
    assert "[FAIL] exit status 0 (2)" in report and "boom" in report


@pytest.mark.parametrize("forced, expected", [("kvm", ["kvm"]), ("tcg", ["tcg"])])
def test_accelerator_can_be_forced(monkeypatch, forced, expected):
    monkeypatch.setenv("E2E_ACCEL", forced)
    assert harness.choose_accels() == expected


def test_a_non_root_user_is_told_why_the_suite_cannot_run(monkeypatch):
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    with pytest.raises(harness.E2EUnavailable, match="needs root"):
        harness.require_host()


def test_mirror_paths_come_from_printenv_urls_decoded_as_a_web_server_maps_them():
    doc = {
        "repos": ["http://127.0.0.1:8000/good/"],
        "candidates": [{
            "filename": "falco_debian_6.1.192-2-amd64_1.ko",
            "cache_path": "/root/.falco/8.0.0+driver/x86_64/falco_debian_6.1.192-2-amd64_1.ko",
            "urls": ["http://127.0.0.1:8000/good/8.0.0%2Bdriver/x86_64/falco_debian_6.1.192-2-amd64_1.ko"],
        }],
    }
    assert e2e_guest.artifact_from_printenv(doc) == {
        "filename": "falco_debian_6.1.192-2-amd64_1.ko",
        "path": "8.0.0+driver/x86_64/falco_debian_6.1.192-2-amd64_1.ko",
        "cache_path": "/root/.falco/8.0.0+driver/x86_64/falco_debian_6.1.192-2-amd64_1.ko",
    }


def test_printenv_without_candidates_cannot_name_the_mirror_files():
    with pytest.raises(KeyError, match="no candidate"):
        e2e_guest.artifact_from_printenv({"repos": ["http://127.0.0.1:8000/good"], "candidates": []})
