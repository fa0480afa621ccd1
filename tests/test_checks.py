import dataclasses

import pytest
from elf_fixtures import make_bpf_probe, make_kmod, patch_machine

from driver_loader.artifacts.elf import inspect_artifact
from driver_loader.core import checks
from driver_loader.core.artifact_facts import EM_AARCH64, EM_BPF, EM_X86_64, ArtifactInfo, ModuleSignature
from driver_loader.core.checks import Finding, check_artifact, interface_compatible, summarize
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import UsageError
from driver_loader.core.kernel import RunningKernel
from driver_loader.core.versions import compatible_range

RELEASE = "6.1.0-56-amd64"
FLAGS = " SMP preempt mod_unload modversions "

KERNEL = RunningKernel(
    release=RELEASE,
    arch="x86_64",
    modules_supported=True,
    vermagic=RELEASE + FLAGS,
    vermagic_source="modinfo of ext4.ko",
)

KMOD = ArtifactInfo(
    kind="kmod",
    elf_class=64,
    elf_type="ET_REL",
    machine="EM_X86_64",
    machine_number=EM_X86_64,
    byte_order="little",
    arch="x86_64",
    driver_version="8.0.0+driver",
    api_version=(8, 0, 3),
    schema_version=(3, 5, 0),
    modinfo_entries=(("name", "falco"), ("version", "8.0.0+driver"), ("vermagic", RELEASE + FLAGS)),
    has_modversions=True,
    symbol_crcs={"module_layout": 0x9060323F, "printk": 0x1234},
)

PROBE = ArtifactInfo(
    kind="ebpf",
    elf_class=64,
    elf_type="ET_REL",
    machine="EM_BPF",
    machine_number=EM_BPF,
    byte_order="little",
    arch=None,
    driver_version="8.0.0+driver",
    api_version=(8, 0, 3),
    schema_version=(3, 5, 0),
    kernel_version=RELEASE,
)


def kmod(**changes):
    return dataclasses.replace(KMOD, **changes)


def probe(**changes):
    return dataclasses.replace(PROBE, **changes)


def kernel(**changes):
    return dataclasses.replace(KERNEL, **changes)


def with_vermagic(vermagic, **changes):
    return kmod(modinfo_entries=(("name", "falco"), ("vermagic", vermagic)), **changes)


def failures(findings):
    return [f.code for f in findings if not f.ok]


def warnings(findings):
    return [f.code for f in findings if f.ok and f.warning]


def by_code(findings, code):
    (found,) = [f for f in findings if f.code == code]
    return found


def run(info, running=KERNEL, driver_type=None, **kw):
    return check_artifact(info, running, driver_type=driver_type or info.kind, **kw)


def test_a_matching_module_fits():
    findings = run(KMOD, compatible=compatible_range("8.0.0+driver"), required_api="8.0.0", required_schema="3.5.0")

    assert failures(findings) == []
    assert warnings(findings) == []
    assert summarize(findings) == (True, [])
    assert [f.code for f in findings] == [
        checks.MODULES_UNSUPPORTED, checks.ARTIFACT_KIND, checks.ELF_CLASS, checks.ELF_TYPE, checks.ELF_MACHINE,
        checks.VERMAGIC, checks.KERNEL_RELEASE, checks.DRIVER_VERSION, checks.API_VERSION, checks.SCHEMA_VERSION,
        checks.SIGNATURE,
    ]


def test_a_matching_probe_fits():
    findings = run(PROBE, compatible=compatible_range("8.0.0+driver", exact=True), required_api=(8, 0, 0),
                   required_schema=(3, 5, 0))

    assert failures(findings) == []
    assert [f.code for f in findings] == [
        checks.ARTIFACT_KIND, checks.ELF_CLASS, checks.ELF_TYPE, checks.ELF_MACHINE, checks.DRIVER_VERSION,
        checks.API_VERSION, checks.SCHEMA_VERSION, checks.EBPF_KERNEL_VERSION,
    ]


FAILURE_CASES = [
    ("no module support", KMOD, kernel(modules_supported=False), "kmod", [checks.MODULES_UNSUPPORTED]),
    ("probe where a module is wanted", PROBE, KERNEL, "kmod", [checks.ARTIFACT_KIND]),
    ("module where a probe is wanted", KMOD, KERNEL, "ebpf", [checks.ARTIFACT_KIND]),
    ("ELF32", kmod(elf_class=32), KERNEL, "kmod", [checks.ELF_CLASS]),
    ("shared object", kmod(elf_type="ET_DYN"), KERNEL, "kmod", [checks.ELF_TYPE]),
    ("aarch64 module on x86_64", kmod(machine="EM_AARCH64", machine_number=EM_AARCH64, arch="aarch64"),
     KERNEL, "kmod", [checks.ELF_MACHINE]),
    ("x86_64 module on aarch64", KMOD, kernel(arch="aarch64", vermagic=RELEASE + FLAGS + "aarch64"),
     "kmod", [checks.ELF_MACHINE, checks.VERMAGIC]),
    ("probe that is not BPF", probe(machine="EM_X86_64", machine_number=EM_X86_64), KERNEL, "ebpf",
     [checks.ELF_MACHINE]),
    ("vermagic flags differ", with_vermagic(RELEASE + " SMP mod_unload modversions "), KERNEL, "kmod",
     [checks.VERMAGIC]),
    ("arch part of vermagic differs", with_vermagic(RELEASE + FLAGS + "aarch64"), KERNEL, "kmod",
     [checks.VERMAGIC]),
    ("no vermagic", kmod(modinfo_entries=(("name", "falco"),)), KERNEL, "kmod", [checks.VERMAGIC]),
    ("other release, no modversions", with_vermagic("6.1.0-55-amd64" + FLAGS, has_modversions=False),
     KERNEL, "kmod", [checks.KERNEL_RELEASE]),
    ("signed not needed", kmod(signature=ModuleSignature(2, 400)), KERNEL, "kmod", []),
    ("unsigned, sig_enforce", KMOD, kernel(sig_enforce=True), "kmod", [checks.SIGNATURE]),
    ("unsigned, lockdown integrity", KMOD, kernel(lockdown="integrity"), "kmod", [checks.SIGNATURE]),
    ("unsigned, lockdown confidentiality", KMOD, kernel(lockdown="confidentiality"), "kmod",
     [checks.SIGNATURE]),
    ("unsigned, lockdown none", KMOD, kernel(lockdown="none"), "kmod", []),
    ("signed, sig_enforce", kmod(signature=ModuleSignature(2, 400)), kernel(sig_enforce=True), "kmod", []),
    ("signed, lockdown", kmod(signature=ModuleSignature(2, 400)), kernel(lockdown="integrity"), "kmod", []),
    ("probe ignores signature policy", PROBE, kernel(sig_enforce=True, lockdown="integrity"), "ebpf", []),
    ("probe for another kernel", probe(kernel_version="6.1.0-55-amd64"), KERNEL, "ebpf",
     [checks.EBPF_KERNEL_VERSION]),
    ("probe without kernel_version", probe(kernel_version=None), KERNEL, "ebpf", [checks.EBPF_KERNEL_VERSION]),
    ("probe api zero", probe(api_version=(0, 0, 0)), KERNEL, "ebpf", [checks.API_VERSION]),
    ("probe schema missing", probe(schema_version=None), KERNEL, "ebpf", [checks.SCHEMA_VERSION]),
    ("probe on a kernel without modules", PROBE, kernel(modules_supported=False), "ebpf", []),
]


@pytest.mark.parametrize(
    ("info", "running", "driver_type", "failed"), [pytest.param(*case[1:], id=case[0]) for case in FAILURE_CASES]
)
def test_failures(info, running, driver_type, failed):
    findings = check_artifact(info, running, driver_type=driver_type)

    assert failures(findings) == failed
    fits, reasons = summarize(findings)
    assert fits is (not failed)
    assert reasons == [f.message for f in findings if not f.ok]
    for finding in findings:
        if not finding.ok:
            assert finding.hint, finding


def test_failure_messages_say_what_and_what_to_do():
    findings = run(with_vermagic("6.1.0-55-amd64" + FLAGS, has_modversions=False), kernel(sig_enforce=True))

    release = by_code(findings, checks.KERNEL_RELEASE)
    assert "6.1.0-55-amd64" in release.message and RELEASE in release.message
    assert RELEASE in release.hint
    signature = by_code(findings, checks.SIGNATURE)
    assert "sig_enforce=Y" in signature.message
    assert "modern_ebpf" in signature.hint

    unsupported = by_code(run(KMOD, kernel(modules_supported=False)), checks.MODULES_UNSUPPORTED)
    assert "modern_ebpf" in unsupported.hint


def test_vermagic_flags_are_compared_exactly_including_trailing_space():
    findings = run(with_vermagic(RELEASE + FLAGS.rstrip()))

    assert failures(findings) == [checks.VERMAGIC]


def test_unknown_kernel_vermagic_is_a_warning():
    findings = run(KMOD, kernel(vermagic=None, vermagic_source="unavailable: no in-tree module"))

    assert failures(findings) == []
    assert warnings(findings) == [checks.VERMAGIC]
    assert "unavailable: no in-tree module" in by_code(findings, checks.VERMAGIC).message


def test_unknown_kernel_vermagic_still_catches_a_release_mismatch_without_modversions():
    info = with_vermagic("5.10.0-1-amd64" + FLAGS, has_modversions=False)

    assert failures(run(info, kernel(vermagic=None))) == [checks.KERNEL_RELEASE]


OTHER_RELEASE = with_vermagic("6.1.0-55-amd64" + FLAGS)


@pytest.mark.parametrize(
    ("symvers", "ok", "warning", "mentions"),
    [
        (None, True, True, "no Module.symvers"),
        ({}, True, True, "no Module.symvers"),
        ({"module_layout": 0x9060323F, "printk": 0x1234}, True, False, "all 2 imported symbol CRCs match"),
        ({"module_layout": 0x9060323F, "printk": 0x9999}, False, False, "printk"),
        ({"module_layout": 0x1, "printk": 0x1234}, False, False, "module_layout"),
        ({"module_layout": 0x9060323F}, True, True, "not in"),
    ],
)
def test_release_mismatch_with_modversions_checks_crcs(symvers, ok, warning, mentions):
    findings = run(OTHER_RELEASE, kernel(symvers=symvers, symvers_source="/lib/modules/x/build/Module.symvers"))

    crc = by_code(findings, checks.SYMBOL_CRCS)
    assert (crc.ok, crc.warning) == (ok, warning)
    assert mentions in crc.message
    assert summarize(findings)[0] is ok
    assert checks.KERNEL_RELEASE not in [f.code for f in findings]


def test_crc_mismatch_lists_a_bounded_number_of_symbols():
    many = {f"sym{i:02}": i for i in range(12)}
    info = dataclasses.replace(OTHER_RELEASE, symbol_crcs=many)

    crc = by_code(run(info, kernel(symvers={name: 0xFFFF for name in many})), checks.SYMBOL_CRCS)

    assert "12 symbol(s)" in crc.message
    assert "sym00, sym01, sym02, sym03, sym04 and 7 more" in crc.message


def test_same_release_does_not_need_symvers():
    findings = run(KMOD, kernel(symvers={"module_layout": 0x1}))

    assert checks.SYMBOL_CRCS not in [f.code for f in findings]
    assert failures(findings) == []


@pytest.mark.parametrize(
    ("version", "default", "ok"),
    [
        ("8.0.0+driver", "8.0.0+driver", True),
        ("8.1.0+driver", "8.0.0+driver", True),
        ("7.3.0+driver", "8.0.0+driver", False),
        ("9.0.0+driver", "8.0.0+driver", False),
        (None, "8.0.0+driver", False),
    ],
)
def test_driver_version_range(version, default, ok):
    compatible = compatible_range(default)
    finding = by_code(run(kmod(driver_version=version), compatible=compatible), checks.DRIVER_VERSION)

    assert finding.ok is ok
    if not ok:
        assert str(compatible) in finding.message


def test_no_range_no_driver_version_check():
    assert checks.DRIVER_VERSION not in [f.code for f in run(kmod(driver_version=None))]


@pytest.mark.parametrize(
    ("have", "required", "generic", "strict"),
    [
        ((8, 0, 3), (8, 0, 0), True, True),
        ((8, 0, 0), (8, 0, 3), False, False),
        ((8, 1, 0), (8, 0, 3), True, False),
        ((8, 1, 0), (8, 1, 0), True, True),
        ((9, 0, 0), (8, 0, 0), False, False),
        ((7, 9, 9), (8, 0, 0), False, False),
        ((4, 1, 0), (4, 0, 1), True, False),
        ((4, 0, 0), (4, 0, 1), False, False),
    ],
)
def test_interface_compatible(have, required, generic, strict):
    assert interface_compatible(have, required) is generic
    assert interface_compatible(have, required, exact_minor=True) is strict


@pytest.mark.parametrize(
    ("info", "required_api", "required_schema", "failed"),
    [
        (KMOD, "8.0.0", "3.5.0", []),
        (KMOD, "10.0.0", "3.5.0", [checks.API_VERSION]),
        (KMOD, "8.0.0", "4.0.1", [checks.SCHEMA_VERSION]),
        (KMOD, "8.0.0", "3.4.0", []),  # a newer schema minor is fine for a kernel module...
        (PROBE, "8.0.0", "3.4.0", [checks.SCHEMA_VERSION]),  # ...but the legacy probe needs the same minor
        (PROBE, "8.0.0", "3.5.0", []),
        (kmod(api_version=None), "8.0.0", None, [checks.API_VERSION]),
        (kmod(api_version=None), None, None, []),
        (kmod(api_version=None, modinfo_entries=KMOD.modinfo_entries + (("api_version", "eight"),)), "8.0.0",
         None, [checks.API_VERSION]),
    ],
)
def test_api_and_schema_rules(info, required_api, required_schema, failed):
    findings = run(info, required_api=required_api, required_schema=required_schema)

    assert failures(findings) == failed


def test_unreadable_api_version_is_named():
    info = kmod(api_version=None, modinfo_entries=KMOD.modinfo_entries + (("api_version", "eight"),))

    assert "'eight'" in by_code(run(info, required_api="8.0.0"), checks.API_VERSION).message


def test_bad_required_version_is_a_usage_error():
    with pytest.raises(UsageError, match="not a version"):
        run(KMOD, required_api="8.0")


def test_summarize_ignores_warnings():
    findings = [Finding(True, "a", "fine"), Finding(True, "b", "unsure", "look", warning=True),
                Finding(False, "c", "broken", "fix it")]

    assert summarize(findings) == (False, ["broken"])
    assert summarize(findings[:2]) == (True, [])
    assert findings[2].to_dict() == {"ok": False, "code": "c", "message": "broken", "hint": "fix it",
                                     "warning": False}


def test_driver_type_may_be_the_enum():
    assert failures(check_artifact(KMOD, KERNEL, driver_type=DriverType.KMOD)) == []


# The same rules on real compiled artifacts.


def test_real_module_on_matching_kernel(tmp_path):
    info = inspect_artifact(make_kmod(tmp_path, vermagic=RELEASE + FLAGS, api_version="8.0.3",
                                      schema_version="3.5.0").read_bytes())

    findings = run(info, compatible=compatible_range("8.0.0+driver"), required_api="8.0.0", required_schema="3.5.0")

    assert summarize(findings) == (True, [])


def test_real_wrong_arch_module(tmp_path):
    info = inspect_artifact(patch_machine(make_kmod(tmp_path, vermagic=RELEASE + FLAGS), EM_AARCH64).read_bytes())

    assert failures(run(info)) == [checks.ELF_MACHINE]


def test_real_module_for_other_release_against_symvers(tmp_path):
    info = inspect_artifact(make_kmod(tmp_path, vermagic="6.1.0-55-amd64" + FLAGS,
                                      crcs={"module_layout": 0x9060323F, "printk": 7}).read_bytes())

    assert failures(run(info, kernel(symvers={"module_layout": 0x9060323F, "printk": 7}))) == []
    assert failures(run(info, kernel(symvers={"module_layout": 0x9060323F, "printk": 8}))) == [checks.SYMBOL_CRCS]


def test_real_probe_for_other_kernel(tmp_path):
    info = inspect_artifact(make_bpf_probe(tmp_path, kernel_version="5.15.0-1-generic", api=(8, 0, 3),
                                           schema=(3, 5, 0)).read_bytes())

    assert failures(run(info)) == [checks.EBPF_KERNEL_VERSION]
