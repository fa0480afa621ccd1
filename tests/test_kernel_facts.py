import gzip
import os

import pytest
from elf_fixtures import compress_file, make_kmod

from driver_loader.core.kernel import RunningKernel
from driver_loader.host.kernel_facts import (
    ModuleSymvers,
    kernel_roots,
    parse_kernel_config,
    parse_lockdown,
    parse_symvers,
    read_running_kernel,
    vermagic_from_config,
)

RELEASE = "6.1.0-56-amd64"
DEBIAN_CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
CONFIG_SMP=y
CONFIG_PREEMPT_BUILD=y
# CONFIG_PREEMPT_NONE is not set
CONFIG_PREEMPT_DYNAMIC=y
CONFIG_MODULES=y
CONFIG_MODULE_UNLOAD=y
CONFIG_MODVERSIONS=y
CONFIG_LOCALVERSION=""
"""


@pytest.mark.parametrize(
    ("arch", "options", "expected"),
    [
        ("x86_64", ["SMP", "PREEMPT_BUILD", "MODULE_UNLOAD", "MODVERSIONS"], "R SMP preempt mod_unload modversions "),
        ("aarch64", ["SMP", "PREEMPT_BUILD", "MODULE_UNLOAD", "MODVERSIONS"],
         "R SMP preempt mod_unload modversions aarch64"),
        ("x86_64", ["SMP", "MODULE_UNLOAD", "MODVERSIONS"], "R SMP mod_unload modversions "),
        # Kernels before 5.16 have no PREEMPT_BUILD.
        ("x86_64", ["SMP", "PREEMPT", "MODULE_UNLOAD"], "R SMP preempt mod_unload "),
        ("x86_64", ["SMP", "PREEMPT_RT", "MODULE_UNLOAD"], "R SMP preempt_rt mod_unload "),
        ("aarch64", [], "R aarch64"),
        ("x86_64", [], "R "),
        # The random-structure seed hash is in the real string but in no config.
        ("x86_64", ["SMP", "RANDSTRUCT"], None),
        ("x86_64", ["SMP", "GCC_PLUGIN_RANDSTRUCT"], None),
        ("riscv64", ["SMP"], None),
    ],
)
def test_vermagic_from_config(arch, options, expected):
    config = {f"CONFIG_{name}": "y" for name in options}
    assert vermagic_from_config("R", arch, config) == expected


def test_parse_kernel_config():
    config = parse_kernel_config(DEBIAN_CONFIG)

    assert config["CONFIG_SMP"] == "y"
    assert config["CONFIG_LOCALVERSION"] == ""
    assert "CONFIG_PREEMPT_NONE" not in config
    assert vermagic_from_config(RELEASE, "x86_64", config) == f"{RELEASE} SMP preempt mod_unload modversions "


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[none] integrity confidentiality\n", "none"),
        ("none [integrity] confidentiality\n", "integrity"),
        ("none integrity [confidentiality]\n", "confidentiality"),
        ("", None),
    ],
)
def test_parse_lockdown(text, expected):
    assert parse_lockdown(text) == expected


def test_parse_symvers():
    text = (
        "0x9060323f\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n"
        "0x112a62ad\ttracepoint_probe_unregister\tvmlinux\tEXPORT_SYMBOL_GPL\t\n"
        "0xdeadbeef\tns_symbol\tdrivers/foo\tEXPORT_SYMBOL_GPL\tFOO_NS\n"
        "garbage line\n"
        "0xzz\tbad_crc\tvmlinux\tEXPORT_SYMBOL\t\n"
    )
    assert parse_symvers(text) == {
        "module_layout": 0x9060323F,
        "tracepoint_probe_unregister": 0x112A62AD,
        "ns_symbol": 0xDEADBEEF,
    }


@pytest.mark.parametrize(
    ("host_root", "expected"), [("/", ("/",)), ("/host", ("/host", "/")), ("", ("/",))]
)
def test_kernel_roots(host_root, expected):
    assert kernel_roots(host_root) == expected


def _proc_sys(tmp_path, *, modules=True, sig_enforce=None, lockdown=None, config_gz=None):
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir(exist_ok=True)
    sys_.mkdir(exist_ok=True)
    if modules:
        (proc / "modules").write_text("")
    if config_gz is not None:
        (proc / "config.gz").write_bytes(gzip.compress(config_gz.encode()))
    if sig_enforce is not None:
        (sys_ / "module/module/parameters").mkdir(parents=True)
        (sys_ / "module/module/parameters/sig_enforce").write_text(sig_enforce + "\n")
    if lockdown is not None:
        (sys_ / "kernel/security").mkdir(parents=True)
        (sys_ / "kernel/security/lockdown").write_text(lockdown + "\n")
    return str(proc), str(sys_)


def _read(tmp_path, roots, **proc_sys):
    proc, sys_ = _proc_sys(tmp_path, **proc_sys)
    return read_running_kernel(RELEASE, "x86_64", proc_root=proc, sys_root=sys_, roots=roots)


def test_bare_kernel_knows_nothing(tmp_path, host_root):
    kernel = _read(tmp_path, [host_root()], modules=False)

    assert kernel == RunningKernel(release=RELEASE, arch="x86_64", modules_supported=False,
                                   vermagic_source=kernel.vermagic_source)
    assert kernel.vermagic_source.startswith("unavailable")
    assert kernel.symvers is None
    assert not kernel.enforces_signatures


@pytest.mark.parametrize("kind", [None, "xz", "gzip", "zstd"])
def test_vermagic_from_an_in_tree_module(tmp_path, host_root, kind):
    module = make_kmod(tmp_path, vermagic=f"{RELEASE} SMP preempt mod_unload modversions ", name="ext4")
    if kind:
        module = compress_file(module, kind)
    root = host_root({
        f"lib/modules/{RELEASE}/kernel/fs/ext4/{module.name}": module.read_bytes(),
        f"lib/modules/{RELEASE}/kernel/fs/ext4/README": "not a module",
        f"boot/config-{RELEASE}": "CONFIG_SMP=y\n",  # must lose against the module
    })

    kernel = _read(tmp_path, [root])

    assert kernel.vermagic == f"{RELEASE} SMP preempt mod_unload modversions "
    assert kernel.vermagic_source == f"modinfo of {root}/lib/modules/{RELEASE}/kernel/fs/ext4/{module.name}"
    assert kernel.modules_supported


def test_vermagic_skips_unreadable_modules(tmp_path, host_root):
    good = make_kmod(tmp_path, vermagic=f"{RELEASE} SMP mod_unload ")
    root = host_root({
        f"lib/modules/{RELEASE}/kernel/a/broken.ko": b"<html>not a module</html>",
        f"lib/modules/{RELEASE}/kernel/b/good.ko": good.read_bytes(),
    })

    assert _read(tmp_path, [root]).vermagic == f"{RELEASE} SMP mod_unload "


def test_vermagic_through_merged_usr_symlink(tmp_path, host_root):
    module = make_kmod(tmp_path, vermagic=f"{RELEASE} SMP mod_unload ")
    root = host_root({f"usr/lib/modules/{RELEASE}/kernel/x/m.ko": module.read_bytes()})
    os.symlink("usr/lib", os.path.join(root, "lib"))

    kernel = _read(tmp_path, [root])

    assert kernel.vermagic == f"{RELEASE} SMP mod_unload "


def test_vermagic_built_from_boot_config(tmp_path, host_root):
    root = host_root({f"boot/config-{RELEASE}": DEBIAN_CONFIG})

    kernel = _read(tmp_path, [root])

    assert kernel.vermagic == f"{RELEASE} SMP preempt mod_unload modversions "
    assert kernel.vermagic_source == f"built from {root}/boot/config-{RELEASE}"


def test_proc_config_gz_wins_over_boot_config(tmp_path, host_root):
    root = host_root({f"boot/config-{RELEASE}": DEBIAN_CONFIG})

    kernel = _read(tmp_path, [root], config_gz="CONFIG_SMP=y\n")

    assert kernel.vermagic == f"{RELEASE} SMP "
    assert kernel.vermagic_source.endswith("proc/config.gz")


def test_proc_config_gz_is_ignored_for_a_kernel_that_is_not_running(tmp_path, host_root):
    root = host_root({f"boot/config-{RELEASE}": DEBIAN_CONFIG})
    proc, sys_ = _proc_sys(tmp_path, config_gz="CONFIG_SMP=y\n")

    kernel = read_running_kernel(RELEASE, "x86_64", proc_root=proc, sys_root=sys_, roots=[root], running=False)

    assert kernel.vermagic == f"{RELEASE} SMP preempt mod_unload modversions "
    assert kernel.vermagic_source.endswith(f"boot/config-{RELEASE}")


def test_host_root_is_searched_before_our_own(tmp_path, host_root):
    own = tmp_path / "own"
    (own / "boot").mkdir(parents=True)
    (own / "boot" / f"config-{RELEASE}").write_text("CONFIG_SMP=y\n")
    host = host_root({f"boot/config-{RELEASE}": DEBIAN_CONFIG})

    assert _read(tmp_path, [host, str(own)]).vermagic.endswith("modversions ")
    assert _read(tmp_path, [str(tmp_path / "absent"), str(own)]).vermagic == f"{RELEASE} SMP "


def test_symlinks_never_leave_the_root(tmp_path, host_root):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config").write_text(DEBIAN_CONFIG)
    (outside / "Module.symvers").write_text("0x1\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n")
    root = host_root({"boot/.keep": ""})
    os.symlink(f"../../{outside.name}/config", os.path.join(root, "boot", f"config-{RELEASE}"))
    os.makedirs(os.path.join(root, "lib/modules", RELEASE))
    os.symlink(str(outside), os.path.join(root, "lib/modules", RELEASE, "build"))

    kernel = _read(tmp_path, [root])

    assert kernel.vermagic is None
    assert kernel.symvers is None


def test_absolute_symlinks_resolve_inside_the_root(tmp_path, host_root):
    # /lib/modules/<r>/build -> /usr/src/linux-headers-<r>, as Debian ships it, read from a host root.
    root = host_root({
        f"usr/src/linux-headers-{RELEASE}/Module.symvers": "0x9060323f\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n",
        f"lib/modules/{RELEASE}/.keep": "",
    })
    os.symlink(f"/usr/src/linux-headers-{RELEASE}", os.path.join(root, "lib/modules", RELEASE, "build"))

    kernel = _read(tmp_path, [root])

    assert kernel.symvers_source == f"{root}/lib/modules/{RELEASE}/build/Module.symvers"
    assert dict(kernel.symvers) == {"module_layout": 0x9060323F}


def test_gzipped_boot_symvers(tmp_path, host_root):
    root = host_root({f"boot/symvers-{RELEASE}.gz": gzip.compress(b"0x00000042\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n")})

    kernel = _read(tmp_path, [root])

    assert kernel.symvers["printk"] == 0x42
    assert kernel.symvers_source.endswith(f"boot/symvers-{RELEASE}.gz")


def test_symvers_is_read_lazily(tmp_path):
    path = tmp_path / "Module.symvers"
    path.write_text("0x00000001\ta\tvmlinux\tEXPORT_SYMBOL\t\n")
    symvers = ModuleSymvers(str(tmp_path), "Module.symvers")
    path.write_text("0x00000002\tb\tvmlinux\tEXPORT_SYMBOL\t\n")  # changed before first use: the new content counts

    assert dict(symvers) == {"b": 2}


def test_corrupt_symvers_reads_as_empty(tmp_path):
    (tmp_path / "symvers.gz").write_bytes(gzip.compress(b"0x1\ta\tvmlinux\tE\n")[:12])

    assert len(ModuleSymvers(str(tmp_path), "symvers.gz")) == 0


@pytest.mark.parametrize(
    ("sig_enforce", "lockdown", "expected_lockdown", "enforces"),
    [
        ("N", "[none] integrity confidentiality", "none", False),
        ("Y", "[none] integrity confidentiality", "none", True),
        ("N", "none [integrity] confidentiality", "integrity", True),
        ("N", "none integrity [confidentiality]", "confidentiality", True),
        (None, None, None, False),
    ],
)
def test_signature_policy(tmp_path, host_root, sig_enforce, lockdown, expected_lockdown, enforces):
    kernel = _read(tmp_path, [host_root()], sig_enforce=sig_enforce, lockdown=lockdown)

    assert kernel.sig_enforce is (sig_enforce == "Y")
    assert kernel.lockdown == expected_lockdown
    assert kernel.enforces_signatures is enforces
