import pytest

from driver_loader.core.headers import headers_hint


@pytest.mark.parametrize(
    ("target_id", "release", "expected"),
    [
        ("debian", "6.1.0-56-amd64", "apt-get install linux-headers-6.1.0-56-amd64"),
        ("ubuntu-generic", "5.15.0-76-generic", "apt-get install linux-headers-5.15.0-76-generic"),
        ("ubuntu-aws", "5.15.0-1009-aws", "linux-headers-5.15.0-1009-aws"),
        ("ubuntu-lowlatency", "5.15.0-76-lowlatency-64k", "linux-headers-5.15.0-76-lowlatency-64k"),
        ("rhel", "5.14.0-284.11.1.el9_2.x86_64", "kernel-devel-5.14.0-284.11.1.el9_2.x86_64"),
        ("centos", "3.10.0-1160.el7.x86_64", "yum install kernel-devel-3.10.0-1160.el7.x86_64"),
        ("rocky", "4.18.0-477.el8.x86_64", "dnf install kernel-devel-4.18.0-477.el8.x86_64"),
        ("almalinux", "5.14.0-70.el9.x86_64", "kernel-devel-5.14.0-70.el9.x86_64"),
        ("fedora", "6.5.6-300.fc39.x86_64", "kernel-devel-6.5.6-300.fc39.x86_64"),
        ("amazonlinux", "4.14.355-196.647.amzn1.x86_64", "kernel-devel-4.14.355-196.647.amzn1.x86_64"),
        ("amazonlinux2", "5.10.184-175.731.amzn2.x86_64", "yum install kernel-devel-5.10.184-175.731.amzn2.x86_64"),
        ("amazonlinux2023", "6.1.34-59.116.amzn2023.x86_64", "kernel-devel-6.1.34-59.116.amzn2023.x86_64"),
        ("amazonlinux2025", "6.12.1-1.amzn2025.x86_64", "kernel-devel-6.12.1-1.amzn2025.x86_64"),
        ("ol", "5.4.17-2136.300.7.el8uek.x86_64", "kernel-uek-devel-5.4.17-2136.300.7.el8uek.x86_64"),
        ("ol", "4.18.0-477.10.1.el8_8.x86_64", "kernel-devel-4.18.0-477.10.1.el8_8.x86_64"),
        ("opensuse-leap", "5.14.21-150500.55.7-default", "zypper install kernel-default-devel"),
        ("opensuse-tumbleweed", "6.5.4-1-default", "kernel-default-devel"),
        ("sles", "5.14.21-150400.24.46-default", "kernel-default-devel"),
        ("arch", "6.5.7-arch1-1", "pacman -S linux-headers"),
        ("photon", "5.10.190-2.ph4", "tdnf install linux-devel"),
    ],
)
def test_names_the_headers_package_of_the_distro(target_id, release, expected):
    assert expected in headers_hint(target_id, release)


@pytest.mark.parametrize("target_id", ["debian", "ubuntu-azure", "rhel", "fedora", "ol"])
def test_per_release_packages_also_spell_the_uname_form(target_id):
    assert "$(uname -r)" in headers_hint(target_id, "5.15.0-1-x")


def test_ol_without_uek_does_not_suggest_the_uek_package():
    assert "uek" not in headers_hint("ol", "4.18.0-477.10.1.el8_8.x86_64")


@pytest.mark.parametrize("target_id", ["cos", "bottlerocket", "talos", "flatcar", "minikube"])
def test_distros_without_a_headers_package_point_at_modern_ebpf_or_prebuilt(target_id):
    hint = headers_hint(target_id, "5.15.0")
    assert "no kernel headers package" in hint
    assert "modern_ebpf" in hint
    assert "prebuilt" in hint
    assert "install the kernel headers" not in hint


@pytest.mark.parametrize("target_id", ["alpine", "undetermined", "alinux", "buildroot"])
def test_other_distros_get_a_general_hint_naming_the_release_and_the_build_dir(target_id):
    hint = headers_hint(target_id, "6.6.1-0-lts")
    assert "/lib/modules/6.6.1-0-lts/build" in hint
    assert "headers" in hint
    assert "apt-get" not in hint and "dnf" not in hint
