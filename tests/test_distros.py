"""Every distro rule against real-world hosts: os-release as shipped, uname as observed.

`legacy` is the file name the 0.36 bash loader fetched for the same host (its observed URLs); it must be among our
candidates so mirrors populated for either tool keep working.
"""

import os
import sys

import pytest

from driver_loader.core import distros
from driver_loader.core.distros import discover
from driver_loader.core.distros.base import Distro
from driver_loader.core.driver_types import DriverType
from driver_loader.core.plan import DriverRequirement, make_plan
from driver_loader.core.settings import Settings
from driver_loader.host.root import read_host_facts

UBUNTU_2204 = """PRETTY_NAME="Ubuntu 22.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.3 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=jammy
"""
DEBIAN_12 = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""
AL2 = """NAME="Amazon Linux"
VERSION="2"
ID="amzn"
ID_LIKE="centos rhel fedora"
VERSION_ID="2"
PRETTY_NAME="Amazon Linux 2"
ANSI_COLOR="0;33"
CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2"
"""
AL2023 = """NAME="Amazon Linux"
VERSION="2023"
ID="amzn"
ID_LIKE="fedora"
VERSION_ID="2023"
PLATFORM_ID="platform:al2023"
PRETTY_NAME="Amazon Linux 2023"
"""
AL1 = """NAME="Amazon Linux AMI"
VERSION="2018.03"
ID="amzn"
ID_LIKE="rhel fedora"
VERSION_ID="2018.03"
"""
COS = """NAME="Container-Optimized OS"
ID=cos
PRETTY_NAME="Container-Optimized OS from Google"
HOME_URL="https://cloud.google.com/container-optimized-os/docs"
BUG_REPORT_URL="https://cloud.google.com/container-optimized-os/docs/resources/support-policy#contact_us"
GOOGLE_METRICS_PRODUCT_ID=26
KERNEL_COMMIT_ID=2b2ad5d4bb1bc1c6b7a8f5d1b8b6fd3d3b1b2c6d
GOOGLE_CRASH_ID=Lakitu
VERSION=105
VERSION_ID=105
BUILD_ID=17412.101.42
"""
CENTOS_7 = """NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
"""
RHEL_9 = """NAME="Red Hat Enterprise Linux"
VERSION="9.2 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.2"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.2 (Plow)"
"""
FEDORA_38 = """NAME="Fedora Linux"
VERSION="38 (Cloud Edition)"
ID=fedora
VERSION_ID=38
VERSION_CODENAME=""
PLATFORM_ID="platform:f38"
PRETTY_NAME="Fedora Linux 38 (Cloud Edition)"
"""
ROCKY_9 = """NAME="Rocky Linux"
VERSION="9.2 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.2"
"""
OL_9 = """NAME="Oracle Linux Server"
VERSION="9.2"
ID="ol"
ID_LIKE="fedora"
VARIANT="Server"
VARIANT_ID="server"
VERSION_ID="9.2"
"""
PHOTON = """NAME="VMware Photon OS"
VERSION="4.0"
ID=photon
VERSION_ID=4.0
PRETTY_NAME="VMware Photon OS/Linux"
"""
BOTTLEROCKET = """NAME=Bottlerocket
ID=bottlerocket
VERSION="1.14.1 (aws-k8s-1.26)"
PRETTY_NAME="Bottlerocket OS 1.14.1 (aws-k8s-1.26)"
VARIANT_ID=aws-k8s-1.26
VERSION_ID=1.14.1
BUILD_ID=5eb5b7b6
"""
BOTTLEROCKET_NO_VARIANT = """NAME=Bottlerocket
ID=bottlerocket
VERSION_ID=1.14.1
"""
FLATCAR = """NAME="Flatcar Container Linux by Kinvolk"
ID=flatcar
ID_LIKE=coreos
VERSION=3510.2.1
VERSION_ID=3510.2.1
BUILD_ID=2023-05-11-0147
SYSEXT_LEVEL=1.0
PRETTY_NAME="Flatcar Container Linux by Kinvolk 3510.2.1 (Oklo)"
"""
TALOS = """NAME="Talos"
ID=talos
VERSION_ID=v1.4.1
PRETTY_NAME="Talos (v1.4.1)"
HOME_URL="https://www.talos.dev/"
"""
ARCH = """NAME="Arch Linux"
PRETTY_NAME="Arch Linux"
ID=arch
BUILD_ID=rolling
"""
ALMA_9 = """NAME="AlmaLinux"
VERSION="9.3 (Shamrock Pampas Cat)"
ID="almalinux"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.3"
PLATFORM_ID="platform:el9"
PRETTY_NAME="AlmaLinux 9.3 (Shamrock Pampas Cat)"
"""
OPENSUSE_LEAP = """NAME="openSUSE Leap"
VERSION="15.5"
ID="opensuse-leap"
ID_LIKE="suse opensuse"
VERSION_ID="15.5"
PRETTY_NAME="openSUSE Leap 15.5"
CPE_NAME="cpe:/o:opensuse:leap:15.5"
"""
SLES_15 = """NAME="SLES"
VERSION="15-SP5"
VERSION_ID="15.5"
PRETTY_NAME="SUSE Linux Enterprise Server 15 SP5"
ID="sles"
ID_LIKE="suse"
CPE_NAME="cpe:/o:suse:sles:15:sp5"
"""
BUILDROOT_MINIKUBE = """NAME=Buildroot
VERSION=2021.02.12-1-gb75713b-dirty
ID=buildroot
VERSION_ID=2021.02.12
PRETTY_NAME="Buildroot 2021.02.12"
"""

CASES = [
    # id, files, uname -r, uname -v, arch, falcoctl file name (first candidate), legacy file name
    ("ubuntu-aws", {"etc/os-release": UBUNTU_2204}, "5.15.0-1009-aws", "#9-Ubuntu SMP Thu May 12 10:33:41 UTC 2022",
     "x86_64", "falco_ubuntu-aws_5.15.0-1009-aws_9.ko", "falco_ubuntu-aws_5.15.0-1009-aws_9.ko"),
    ("ubuntu-aws-5.0", {"etc/os-release": UBUNTU_2204}, "5.0.0-1028-aws-5.0",
     "#31-Ubuntu SMP Thu Feb 27 07:26:26 UTC 2020", "x86_64",
     "falco_ubuntu-aws_5.0.0-1028-aws-5.0_31.ko", "falco_ubuntu-aws_5.0.0-1028-aws-5.0_31.ko"),
    ("ubuntu-hwe", {"etc/os-release": UBUNTU_2204}, "5.19.0-41-generic",
     "#42~22.04.1-Ubuntu SMP PREEMPT_DYNAMIC Tue Apr 18 17:40:00 UTC 2", "x86_64",
     "falco_ubuntu-generic_5.19.0-41-generic_42~22.04.1.ko", "falco_ubuntu-generic_5.19.0-41-generic_42~22.04.1.ko"),
    ("ubuntu-azure-fde", {"etc/os-release": UBUNTU_2204}, "5.15.0-1034-azure-fde",
     "#41~20.04.1-Ubuntu SMP Mon Mar 20 19:17:28 UTC 2023", "x86_64",
     "falco_ubuntu-azure_5.15.0-1034-azure-fde_41~20.04.1.ko", "falco_ubuntu-azure_5.15.0-1034-azure-fde_41~20.04.1.ko"),
    ("ubuntu-no-flavour-arm", {"etc/os-release": UBUNTU_2204}, "5.4.0-104", "#118-Ubuntu SMP Wed Mar 2 19:02:41 UTC 2022",
     "aarch64", "falco_ubuntu-generic_5.4.0-104_118.ko", "falco_ubuntu-generic_5.4.0-104_118.ko"),
    ("ubuntu-dotted-build", {"etc/os-release": UBUNTU_2204}, "6.8.0-1008-gcp", "#48.1-Ubuntu SMP Fri Jul 5 2024",
     "x86_64", "falco_ubuntu-gcp_6.8.0-1008-gcp_48.1.ko", "falco_ubuntu-gcp_6.8.0-1008-gcp_48.ko"),
    ("ubuntu-caps-id", {"etc/os-release": 'ID="Ubuntu"\n'}, "5.15.0-1009-aws", "#9-Ubuntu SMP", "x86_64",
     "falco_ubuntu-aws_5.15.0-1009-aws_9.ko", "falco_ubuntu_5.15.0-1009-aws_9.ko"),
    ("debian-12-cloud", {"etc/os-release": DEBIAN_12}, "6.1.0-10-cloud-amd64",
     "#1 SMP PREEMPT_DYNAMIC Debian 6.1.38-2 (2023-07-27)", "x86_64",
     "falco_debian_6.1.38-2-cloud-amd64_1.ko", "falco_debian_6.1.38-2-cloud-amd64_1.ko"),
    ("debian-10-rt", {"etc/os-release": DEBIAN_12}, "5.10.0-0.deb10.22-rt-amd64",
     "#1 SMP PREEMPT_RT Debian 5.10.178-3~deb10u1 (2023-04-22)", "x86_64",
     "falco_debian_5.10.178-3-rt-amd64_1.ko", "falco_debian_5.10.178-3-rt-amd64_1.ko"),
    ("debian-12-arm64", {"etc/os-release": DEBIAN_12}, "6.1.0-9-arm64", "#1 SMP Debian 6.1.27-1 (2023-05-08)",
     "aarch64", "falco_debian_6.1.27-1-arm64_1.ko", "falco_debian_6.1.27-1-arm64_1.ko"),
    ("debian-bpo", {"etc/os-release": DEBIAN_12}, "6.4.0-0.deb12.2-amd64",
     "#1 SMP PREEMPT_DYNAMIC Debian 6.4.4-3~bpo12+1 (2023-08-08)", "x86_64",
     "falco_debian_6.4.4-3-amd64_1.ko", "falco_debian_6.4.4-3-amd64_1.ko"),
    ("debian-no-pkg-version", {"etc/os-release": DEBIAN_12}, "6.1.0-10-amd64", "#1 SMP PREEMPT_DYNAMIC", "x86_64",
     "falco_debian_6.1.0-10-amd64_1.ko", "falco_debian_6.1.0-10-amd64_1.ko"),
    ("debian-caps-id", {"etc/os-release": 'ID="Debian"\n'}, "6.1.0-10-cloud-amd64", "#1 SMP Debian 6.1.38-2",
     "x86_64", "falco_debian_6.1.38-2-cloud-amd64_1.ko", "falco_debian_6.1.0-10-cloud-amd64_1.ko"),
    ("only-debian-version", {"etc/debian_version": "12.1\n"}, "6.1.0-10-amd64", "#1 SMP Debian 6.1.38-2", "x86_64",
     "falco_debian_6.1.38-2-amd64_1.ko", "falco_debian_6.1.38-2-amd64_1.ko"),
    ("amazonlinux1", {"etc/os-release": AL1}, "4.14.336-180.566.amzn1.x86_64", "#1 SMP Thu Feb 15 18:37:53 UTC 2024",
     "x86_64", "falco_amazonlinux_4.14.336-180.566.amzn1.x86_64_1.ko",
     "falco_amazonlinux_4.14.336-180.566.amzn1.x86_64_1.ko"),
    ("amazonlinux2", {"etc/os-release": AL2}, "5.10.179-168.710.amzn2.x86_64", "#1 SMP Mon May 22 23:10:22 UTC 2023",
     "x86_64", "falco_amazonlinux2_5.10.179-168.710.amzn2.x86_64_1.ko",
     "falco_amazonlinux2_5.10.179-168.710.amzn2.x86_64_1.ko"),
    ("amazonlinux2023", {"etc/os-release": AL2023}, "6.1.29-50.88.amzn2023.x86_64",
     "#1 SMP PREEMPT_DYNAMIC Tue May 30 22:03:43 UTC 2023", "x86_64",
     "falco_amazonlinux2023_6.1.29-50.88.amzn2023.x86_64_1.ko",
     "falco_amazonlinux2023_6.1.29-50.88.amzn2023.x86_64_1.ko"),
    ("centos-7", {"etc/os-release": CENTOS_7}, "3.10.0-1160.92.1.el7.x86_64", "#1 SMP Tue Jun 20 11:48:01 UTC 2023",
     "x86_64", "falco_centos_3.10.0-1160.92.1.el7.x86_64_1.ko", "falco_centos_3.10.0-1160.92.1.el7.x86_64_1.ko"),
    ("only-centos-release", {"etc/centos-release": "CentOS release 6.10 (Final)\n"}, "2.6.32-754.el6.x86_64",
     "#1 SMP Tue Jun 19 21:26:04 UTC 2018", "x86_64",
     "falco_centos_2.6.32-754.el6.x86_64_1.ko", "falco_centos_2.6.32-754.el6.x86_64_1.ko"),
    ("only-redhat-release", {"etc/redhat-release": "Red Hat Enterprise Linux Server release 6.10\n"},
     "3.10.0-754.el6.x86_64", "#1 SMP", "x86_64",
     "falco_rhel_3.10.0-754.el6.x86_64_1.ko", "falco_rhel_3.10.0-754.el6.x86_64_1.ko"),
    ("rhel-9", {"etc/os-release": RHEL_9}, "5.14.0-284.11.1.el9_2.x86_64",
     "#1 SMP PREEMPT_DYNAMIC Wed Apr 12 10:45:03 EDT 2023", "x86_64",
     "falco_rhel_5.14.0-284.11.1.el9_2.x86_64_1.ko", "falco_rhel_5.14.0-284.11.1.el9_2.x86_64_1.ko"),
    ("fedora-38", {"etc/os-release": FEDORA_38}, "6.3.8-200.fc38.x86_64",
     "#1 SMP PREEMPT_DYNAMIC Thu Jun 15 02:15:40 UTC 2023", "x86_64",
     "falco_fedora_6.3.8-200.fc38.x86_64_1.ko", "falco_fedora_6.3.8-200.fc38.x86_64_1.ko"),
    ("rocky-9-arm", {"etc/os-release": ROCKY_9}, "5.14.0-284.11.1.el9_2.aarch64",
     "#1 SMP PREEMPT_DYNAMIC Tue May 9 17:09:15 UTC 2023", "aarch64",
     "falco_rocky_5.14.0-284.11.1.el9_2.aarch64_1.ko", "falco_rocky_5.14.0-284.11.1.el9_2.aarch64_1.ko"),
    ("oracle-rhck", {"etc/os-release": OL_9}, "5.14.0-284.11.1.el9_2.x86_64", "#2 SMP Wed Jun 28 21:58:12 PDT 2023",
     "x86_64", "falco_ol_5.14.0-284.11.1.el9_2.x86_64_2.ko", "falco_ol_5.14.0-284.11.1.el9_2.x86_64_2.ko"),
    ("photon", {"etc/os-release": PHOTON}, "5.10.175-1.ph4", "#1-photon SMP Fri Mar 31 23:08:08 UTC 2023", "x86_64",
     "falco_photon_5.10.175-1.ph4_1.ko", "falco_photon_5.10.175-1.ph4_1.ko"),
    ("bottlerocket", {"etc/os-release": BOTTLEROCKET}, "5.15.108", "#1 SMP Tue May 30 23:02:36 UTC 2023", "x86_64",
     "falco_bottlerocket_5.15.108_1_1.14.1-aws.ko", "falco_bottlerocket_5.15.108_1_1.14.1-aws.ko"),
    ("flatcar", {"etc/os-release": FLATCAR}, "5.15.111-flatcar", "#1 SMP Thu May 11 15:37:51 -00 2023", "x86_64",
     "falco_flatcar_3510.2.1_1.ko", "falco_flatcar_3510.2.1_1.ko"),
    ("minikube", {"etc/os-release": BUILDROOT_MINIKUBE, "etc/VERSION": "v1.26.0-1655407986-14197\n"}, "5.10.57",
     "#1 SMP Sat Jun 18 00:14:32 UTC 2022", "x86_64",
     "falco_minikube_5.10.57_1_1.26.0.ko", "falco_minikube_5.10.57_1_1.26.0.ko"),
    ("ubuntu-with-etc-version", {"etc/os-release": UBUNTU_2204, "etc/VERSION": "v1.30.1\n"}, "5.15.0-1009-aws",
     "#9-Ubuntu SMP", "x86_64", "falco_minikube_5.15.0-1009-aws_1_1.30.1.ko",
     "falco_minikube_5.15.0-1009-aws_1_1.30.1.ko"),
    ("talos", {"etc/os-release": TALOS}, "6.1.27-talos", "#1 SMP PREEMPT_DYNAMIC Fri May  5 16:18:52 UTC 2023",
     "x86_64", "falco_talos_6.1.27-talos_1_v1.4.1.ko", "falco_talos_6.1.27-talos_1_v1.4.1.ko"),
    ("arch", {"etc/os-release": ARCH}, "6.7.4-arch1-1", "#1 SMP PREEMPT_DYNAMIC Mon, 05 Feb 2024 22:07:49 +0000",
     "x86_64", "falco_arch_6.7.4-arch1-1_1.ko", "falco_arch_6.7.4-arch1-1_1.ko"),
    ("cos", {"etc/os-release": COS}, "5.15.107+", "#1 SMP Sat May 13 10:06:17 UTC 2023", "x86_64",
     "falco_cos_5.15.107+_1.ko", "falco_cos_5.15.107+_1.ko"),
    ("almalinux-9", {"etc/os-release": ALMA_9}, "5.14.0-362.8.1.el9_3.x86_64",
     "#1 SMP PREEMPT_DYNAMIC Tue Nov 7 14:54:22 EST 2023", "x86_64",
     "falco_almalinux_5.14.0-362.8.1.el9_3.x86_64_1.ko", "falco_almalinux_5.14.0-362.8.1.el9_3.x86_64_1.ko"),
    ("opensuse-leap", {"etc/os-release": OPENSUSE_LEAP}, "5.14.21-150500.55.39-default",
     "#1 SMP PREEMPT_DYNAMIC Tue Dec 5 10:06:35 UTC 2023 (2e4092e)", "x86_64",
     "falco_opensuse-leap_5.14.21-150500.55.39-default_1.ko", "falco_opensuse-leap_5.14.21-150500.55.39-default_1.ko"),
    ("sles-15", {"etc/os-release": SLES_15}, "5.14.21-150500.55.36-default",
     "#1 SMP PREEMPT_DYNAMIC Tue Oct 31 08:37:43 UTC 2023 (e7a2e23)", "x86_64",
     "falco_sles_5.14.21-150500.55.36-default_1.ko", "falco_sles_5.14.21-150500.55.36-default_1.ko"),
]


def _plan(root, release, version, arch, kind=DriverType.KMOD):
    settings = Settings(host_root=root, kernel_release=release, kernel_version=version, arch=arch,
                        cache_dir="/root/.falco")
    return make_plan(read_host_facts(settings), settings, kind, DriverRequirement("6.0.1+driver", "test"))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_real_world_hosts(case, host_root):
    _, files, release, version, arch, falcoctl_name, legacy_name = case
    plan = _plan(host_root(files), release, version, arch)
    names = [c.filename for c in plan.candidates]
    assert names[0] == falcoctl_name
    assert legacy_name in names
    assert len(names) == len(set(names))
    for candidate in plan.candidates:
        assert candidate.cache_path.startswith(f"/root/.falco/6.0.1+driver/{arch}/")
        assert candidate.urls == (
            f"https://download.falco.org/driver/6.0.1%2Bdriver/{arch}/{candidate.filename.replace('+', '%2B')}",
        )


def test_legacy_ebpf_name_uses_dot_o(host_root):
    plan = _plan(host_root({"etc/os-release": BOTTLEROCKET}), "5.15.108", "#1 SMP", "x86_64", DriverType.EBPF)
    assert [c.filename for c in plan.candidates] == ["falco_bottlerocket_5.15.108_1_1.14.1-aws.o"]
    assert str(plan.compatible) == "==6.0.1+driver"


@pytest.mark.parametrize(
    "files, release, unsupported",
    [
        ({"etc/os-release": COS}, "5.15.107+", {DriverType.KMOD}),
        ({"etc/os-release": OL_9}, "5.15.0-101.103.2.1.el9uek.x86_64", {DriverType.KMOD}),
        ({"etc/os-release": OL_9}, "5.14.0-284.11.1.el9_2.x86_64", set()),
        ({"etc/os-release": UBUNTU_2204}, "5.15.0-1009-aws", set()),
    ],
)
def test_unsupported_types(files, release, unsupported, host_root):
    settings = Settings(host_root=host_root(files), kernel_release=release, kernel_version="#1", arch="x86_64")
    assert discover(read_host_facts(settings)).unsupported_types == unsupported


def test_bottlerocket_without_variant_falls_back_to_the_legacy_name(host_root):
    """falcoctl cannot name it (missing VARIANT_ID is an init error: undetermined); the legacy loader named it
    `1_<VERSION_ID>-`, and that is the one name we can still try."""
    plan = _plan(host_root({"etc/os-release": BOTTLEROCKET_NO_VARIANT}), "5.15.108", "#1 SMP", "x86_64")
    assert plan.target_id == "undetermined"
    assert [c.filename for c in plan.candidates] == ["falco_bottlerocket_5.15.108_1_1.14.1-.ko"]


def test_flatcar_version_id_that_is_not_xyz_is_used_verbatim_with_a_note(host_root):
    plan = _plan(host_root({"etc/os-release": "ID=flatcar\nVERSION_ID=3510.2\n"}), "5.15.111-flatcar", "#1 SMP",
                 "x86_64")
    assert plan.candidates[0].filename == "falco_flatcar_3510.2_1.ko"
    assert any("not x.y.z" in note for note in plan.target.notes)


def test_empty_id_falls_back_to_markers(host_root):
    plan = _plan(host_root({"etc/os-release": "ID=\nNAME=x\n", "etc/debian_version": "12\n"}), "6.1.0-10-amd64",
                 "#1 SMP Debian 6.1.38-2", "x86_64")
    assert plan.target_id == "debian"
    assert plan.candidates[0].filename == "falco_debian_6.1.38-2-amd64_1.ko"


def test_minikube_version_file_without_version_is_not_minikube(host_root):
    plan = _plan(host_root({"etc/os-release": UBUNTU_2204, "etc/VERSION": "garbage\n"}), "5.15.0-1009-aws",
                 "#9-Ubuntu SMP", "x86_64")
    assert plan.target_id == "ubuntu-aws"
    # The legacy loader exits on such a host, so it contributes no name.
    assert [c.filename for c in plan.candidates] == ["falco_ubuntu-aws_5.15.0-1009-aws_9.ko"]


# -- the registry: a distro is one module -----------------------------------------------------------------------------

DISTROS_DIR = os.path.dirname(distros.__file__)


def test_every_distro_module_is_registered_through_the_interface():
    modules = sorted(f[:-3] for f in os.listdir(DISTROS_DIR) if f.endswith(".py") and f not in ("__init__.py", "base.py"))
    assert sorted(d.name for d in distros.DISTROS) == modules
    for distro in distros.DISTROS:
        assert isinstance(distro, Distro)
        assert all(i == i.strip().lower() and i for i in distro.ids), distro.name
    ids = [i for d in distros.DISTROS for i in d.ids]
    assert len(ids) == len(set(ids))
    assert distros.MARKERS == ("etc/VERSION", "etc/debian_version", "etc/centos-release", "etc/redhat-release")


def test_every_distro_has_a_real_world_row():
    targets = {case[5].split("_")[1] for case in CASES}
    missing = [d.name for d in distros.DISTROS if d is not distros.GENERIC and not any(map(d.owns_target, targets))]
    assert missing == [], "add a row to CASES for each"


def test_a_new_distro_is_one_module(tmp_path, monkeypatch, host_root):
    (tmp_path / "newos.py").write_text(
        "from driver_loader.core.distros.base import DNF, Distro\n\n\n"
        "class NewOS(Distro):\n"
        "    name = 'newos'\n"
        "    ids = ('newos',)\n\n"
        "    def headers(self, target_id, kernel_release):\n"
        "        return DNF\n\n\n"
        "DISTRO = NewOS()\n"
    )
    monkeypatch.setattr(distros, "__path__", [*distros.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "driver_loader.core.distros.newos", raising=False)
    found = distros._find_distros()
    registry = distros._by_id(found)
    assert registry["newos"].name == "newos"
    monkeypatch.setattr(distros, "DISTROS", found)
    monkeypatch.setattr(distros, "REGISTRY", registry)
    from driver_loader.core.headers import headers_hint

    assert "dnf install kernel-devel-6.1.0" in headers_hint("newos", "6.1.0")
    facts = read_host_facts(Settings(host_root=host_root({"etc/os-release": "ID=newos\n"}), kernel_release="6.1.0",
                                     kernel_version="#3 SMP", arch="x86_64"))
    assert (discover(facts).rule, discover(facts).naming.target_id) == ("newos", "newos")


def test_two_distros_cannot_claim_one_id():
    class Again(Distro):
        name = "again"
        ids = ("debian",)

    with pytest.raises(ValueError, match="'debian' is claimed by debian and again"):
        distros._by_id((*distros.DISTROS, Again()))
