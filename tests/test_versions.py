import pytest

from driver_loader.core.versions import compatible_range, greatest_release, publishes_ebpf_probe


@pytest.mark.parametrize(
    "default, text, inside, outside",
    [
        ("8.0.0+driver", ">=8.0.0,<9.0.0", ["8.0.0+driver", "8.0.1+driver", "8.9.0", "8.2.0+driver"],
         ["7.9.9+driver", "9.0.0+driver", "10.0.0+driver", "8.1.0-rc1+driver", "abc"]),
        ("10.2.0+driver", ">=10.2.0,<11.0.0", ["10.2.0+driver", "10.3.1+driver"], ["10.1.0+driver", "11.0.0+driver"]),
        ("2.0.0+driver", ">=2.0.0,<3.0.0", ["2.0.0+driver"], ["1.0.0+driver", "3.0.0+driver"]),
        ("0.0.0-local", "==0.0.0-local", ["0.0.0-local"], ["0.0.0", "0.0.1-local", "1.0.0"]),
        ("dev", "==dev", ["dev"], ["dev2", "8.0.0+driver"]),
        ("17f5df52a7d9ed6bb12d3b1768460def8439936d", "==17f5df52a7d9ed6bb12d3b1768460def8439936d",
         ["17f5df52a7d9ed6bb12d3b1768460def8439936d"], ["17f5df52", "1.0.0"]),
    ],
)
def test_compatible_range(default, text, inside, outside):
    rng = compatible_range(default)
    assert str(rng) == text
    for version in inside:
        assert rng.contains(version), version
        assert version in rng
    for version in outside:
        assert not rng.contains(version), version


def test_legacy_ebpf_needs_an_exact_match():
    rng = compatible_range("8.0.0+driver", exact=True)
    assert str(rng) == "==8.0.0+driver"
    assert rng.contains("8.0.0+driver")
    assert not rng.contains("8.0.1+driver")


def test_highest_first_never_leaves_the_range():
    rng = compatible_range("8.0.0+driver")
    assert rng.highest_first(["8.1.0+driver", "9.0.0+driver", "8.2.0+driver", "7.0.0+driver", "junk"]) == [
        "8.2.0+driver",
        "8.1.0+driver",
    ]


def test_ebpf_probe_publication():
    assert publishes_ebpf_probe("9.1.0+driver")
    assert not publishes_ebpf_probe("10.0.0+driver")
    assert publishes_ebpf_probe("master")


def test_greatest_release_ignores_opaque_versions():
    assert greatest_release(["8.0.0+driver", "10.0.0+driver", "master", "9.1.0"]) == "10.0.0+driver"
    assert greatest_release(["master"]) is None
