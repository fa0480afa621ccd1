import gzip
import json
import lzma
import os
import struct
import sys

import pytest
from elf_fixtures import (
    DEFAULT_CRCS,
    DEFAULT_VERMAGIC,
    FAKE_SIGNATURE_LENGTH,
    compress_file,
    fake_signature_trailer,
    find_compiler,
    make_bpf_probe,
    make_kmod,
    patch_machine,
)

from driver_loader.artifacts import elf
from driver_loader.artifacts.elf import (
    decompress,
    inspect_artifact,
    pack_version,
    read_artifact,
    unpack_version,
)
from driver_loader.core.artifact_facts import EM_AARCH64, EM_BPF, EM_X86_64, parse_triplet
from driver_loader.core.errors import ExitCode, LoaderError, VerificationError


def test_kernel_module_fields(tmp_path):
    info = inspect_artifact(read_artifact(make_kmod(tmp_path)), filename="falco.ko")

    assert info.kind == "kmod"
    assert (info.elf_class, info.elf_type, info.machine, info.machine_number) == (64, "ET_REL", "EM_X86_64", 62)
    assert info.byte_order == "little"
    assert info.arch == "x86_64"
    assert info.name == "falco"
    assert info.vermagic == DEFAULT_VERMAGIC
    assert info.driver_version == "8.0.0+driver"
    assert info.api_version == (8, 0, 0)
    assert info.schema_version == (2, 0, 0)
    assert info.license == "Dual MIT/GPL"
    assert info.build_commit == "0123456789abcdef0123456789abcdef01234567"
    assert info.modinfo["srcversion"] == "D40C8C8FED995B493A1494F"
    assert info.modinfo["depends"] == ""
    assert info.has_modversions
    assert dict(info.symbol_crcs) == dict(DEFAULT_CRCS)
    assert not info.signed


def test_modinfo_keeps_order_and_first_value_of_repeated_keys(tmp_path):
    path = make_kmod(tmp_path, extra_modinfo=[("parm", "verbose:Enable verbose logging"), ("parm", "max:other"),
                                              ("name", "shadowed")])
    info = inspect_artifact(path.read_bytes())

    assert [k for k, _ in info.modinfo_entries][:3] == ["name", "version", "vermagic"]
    assert [v for k, v in info.modinfo_entries if k == "parm"] == ["verbose:Enable verbose logging", "max:other"]
    assert info.modinfo["parm"] == "verbose:Enable verbose logging"
    assert info.name == "falco"


def test_unparsable_api_version_is_none_but_kept_in_modinfo(tmp_path):
    info = inspect_artifact(make_kmod(tmp_path, api_version="eight", schema_version=None).read_bytes())

    assert info.api_version is None
    assert info.modinfo["api_version"] == "eight"
    assert info.schema_version is None


def test_module_without_modversions(tmp_path):
    info = inspect_artifact(make_kmod(tmp_path, modversions=False).read_bytes())

    assert not info.has_modversions
    assert dict(info.symbol_crcs) == {}


def test_extended_modversions_are_preferred(tmp_path):
    long_name = "a_symbol_name_longer_than_the_fifty_six_bytes_that_fit_in_versions"
    crcs = {"module_layout": 0x11111111, long_name: 0x22222222}
    info = inspect_artifact(make_kmod(tmp_path, crcs=crcs, modversions=False, extended_modversions=True).read_bytes())

    assert info.has_modversions
    assert dict(info.symbol_crcs) == crcs


def test_versions_section_that_is_not_whole_records_is_rejected(tmp_path):
    path = make_kmod(
        tmp_path,
        modversions=False,
        extra_c='static const char bad[100] __attribute__((section("__versions"), used)) = { 1 };',
    )
    with pytest.raises(VerificationError, match="not a whole number of 64-byte records"):
        inspect_artifact(path.read_bytes())


def test_signed_module(tmp_path):
    info = inspect_artifact(make_kmod(tmp_path, signed=True).read_bytes())

    assert info.signed
    assert info.signature.id_type_name == "PKCS7"
    assert info.signature.sig_len == FAKE_SIGNATURE_LENGTH
    # The signature is not part of the ELF: everything else still parses.
    assert info.vermagic == DEFAULT_VERMAGIC


def test_signature_length_past_the_start_of_the_file_is_rejected(tmp_path):
    path = make_kmod(tmp_path)
    data = path.read_bytes() + fake_signature_trailer(sig_len=10)
    data = data[: -len(elf.SIGNATURE_MAGIC) - 4] + struct.pack(">I", len(data) * 2) + elf.SIGNATURE_MAGIC

    with pytest.raises(VerificationError, match="signature length"):
        inspect_artifact(data)


def test_aarch64_module(tmp_path):
    if find_compiler("aarch64") is None:
        pytest.skip("no aarch64 compiler (gcc-aarch64-linux-gnu); test_patched_machine covers wrong-arch parsing")
    info = inspect_artifact(make_kmod(tmp_path, arch="aarch64").read_bytes())

    assert (info.machine, info.machine_number, info.arch) == ("EM_AARCH64", EM_AARCH64, "aarch64")


@pytest.mark.parametrize(
    ("machine", "name", "arch"),
    [(EM_AARCH64, "EM_AARCH64", "aarch64"), (EM_X86_64, "EM_X86_64", "x86_64"), (0x9999, "EM_39321", None)],
)
def test_patched_machine(tmp_path, machine, name, arch):
    # Rewriting e_machine simulates another architecture without a cross compiler.
    info = inspect_artifact(patch_machine(make_kmod(tmp_path), machine).read_bytes())

    assert (info.machine, info.machine_number, info.arch) == (name, machine, arch)
    assert info.kind == "kmod"


def test_bpf_probe_fields(tmp_path):
    path = make_bpf_probe(tmp_path, kernel_version="6.1.0-56-amd64", api=(8, 0, 3), schema=(2, 19, 6),
                          probe_version="7.2.1+driver", build_commit="abc123")
    info = inspect_artifact(read_artifact(path))

    assert info.kind == "ebpf"
    assert (info.machine, info.machine_number, info.arch) == ("EM_BPF", EM_BPF, None)
    assert info.elf_type == "ET_REL"
    assert info.kernel_version == "6.1.0-56-amd64"
    assert info.api_version == (8, 0, 3)
    assert info.schema_version == (2, 19, 6)
    assert info.driver_version == "7.2.1+driver"
    assert info.build_commit == "abc123"
    assert info.license == "Dual MIT/GPL"


def test_bpf_probe_without_metadata_sections(tmp_path):
    path = make_bpf_probe(tmp_path, kernel_version=None, api=None, schema=None, probe_version=None, license="GPL",
                          build_commit=None)
    info = inspect_artifact(path.read_bytes())

    assert (info.kernel_version, info.api_version, info.schema_version, info.driver_version) == (None,) * 4
    assert info.license == "GPL"


@pytest.mark.parametrize(
    ("triplet", "packed"),
    [((8, 0, 3), 0x0000_8000_0000_0003), ((2, 19, 6), 0x0000_2000_1300_0006), ((0x7FFFF, 0xFFFFF, 0xFFFFFF), (1 << 63) - 1)],
)
def test_version_packing(triplet, packed):
    assert pack_version(triplet) == packed
    assert unpack_version(packed) == triplet


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8.0.0", (8, 0, 0)), (" 10.1.2\n", (10, 1, 2)), ("8.0", None), ("8.0.0+driver", None), ("", None)],
)
def test_parse_triplet(text, expected):
    assert parse_triplet(text) == expected


@pytest.mark.parametrize("kind", ["xz", "gzip", "zstd"])
def test_compressed_modules(tmp_path, kind):
    plain = make_kmod(tmp_path)
    compressed = compress_file(plain, kind)

    assert compressed.read_bytes()[:4] != plain.read_bytes()[:4]
    assert read_artifact(compressed) == plain.read_bytes()
    assert inspect_artifact(compressed.read_bytes()) == inspect_artifact(plain.read_bytes())


def test_compression_is_judged_by_content_not_suffix(tmp_path):
    plain = make_kmod(tmp_path)
    mislabelled = compress_file(plain, "gzip", suffix=".plain.ko")

    assert mislabelled.name.endswith(".ko")
    assert read_artifact(mislabelled) == plain.read_bytes()


def test_signed_compressed_module(tmp_path):
    compressed = compress_file(make_kmod(tmp_path, signed=True), "xz")

    assert inspect_artifact(read_artifact(compressed)).signed


@pytest.mark.parametrize("backend", ["zstandard package", "zstd binary"])
def test_both_zstd_backends(tmp_path, monkeypatch, backend):
    if backend == "zstandard package":
        pytest.importorskip("zstandard")
    else:
        monkeypatch.setitem(sys.modules, "zstandard", None)
    plain = make_kmod(tmp_path)
    compressed = compress_file(plain, "zstd").read_bytes()

    assert decompress(compressed + compressed) == plain.read_bytes() * 2  # several frames
    with pytest.raises(VerificationError, match="corrupt or truncated zstd"):
        decompress(compressed[:-9])
    with pytest.raises(VerificationError, match="decompresses to more than"):
        decompress(compressed, limit=100)


def test_zstd_without_package_or_binary_is_a_clear_error(tmp_path, monkeypatch):
    compressed = compress_file(make_kmod(tmp_path), "zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    monkeypatch.setattr(elf.shutil, "which", lambda name: None)

    with pytest.raises(LoaderError) as caught:
        read_artifact(compressed)

    assert "zstd" in caught.value.message
    assert "zstandard" in caught.value.hint and "zstd" in caught.value.hint


@pytest.mark.parametrize("kind", ["xz", "gzip", "zstd"])
def test_truncated_compressed_data(tmp_path, kind):
    compressed = compress_file(make_kmod(tmp_path), kind).read_bytes()

    with pytest.raises(VerificationError, match=f"corrupt or truncated {kind}") as caught:
        decompress(compressed[: len(compressed) // 2], filename="x")
    assert caught.value.exit_code == ExitCode.VERIFICATION


@pytest.mark.parametrize("kind", ["xz", "gzip", "zstd"])
def test_decompression_is_bounded(tmp_path, kind):
    bomb = tmp_path / "bomb"
    bomb.write_bytes(b"\0" * 300_000)
    compressed = compress_file(bomb, kind).read_bytes()

    with pytest.raises(VerificationError, match="decompresses to more than 100000 bytes"):
        decompress(compressed, limit=100_000)
    assert len(decompress(compressed, limit=300_000)) == 300_000


def test_read_artifact_refuses_oversized_files(tmp_path):
    big = tmp_path / "big.ko"
    big.write_bytes(b"\x7fELF" + b"\0" * 2000)

    with pytest.raises(VerificationError, match="larger than 1000 bytes"):
        read_artifact(big, limit=1000)


def test_read_artifact_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "falco.ko"
    os.mkfifo(fifo)

    with pytest.raises(VerificationError, match="not a regular file"):
        read_artifact(fifo)


def test_read_artifact_missing_file(tmp_path):
    with pytest.raises(LoaderError, match="cannot read"):
        read_artifact(tmp_path / "absent.ko")


@pytest.mark.parametrize(
    "data",
    [b"", b"<html><body>404 Not Found</body></html>", b"\x7fEL", b"MZ\x90\x00" + b"\0" * 100],
    ids=["empty", "html", "short-magic", "pe"],
)
def test_not_an_elf(data):
    with pytest.raises(VerificationError, match="is not an ELF file") as caught:
        inspect_artifact(data, filename="falco.ko")
    assert "falco.ko" in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize("maker", ["kmod", "bpf"])
def test_truncated_elf_is_a_verification_error(tmp_path, maker):
    path = make_kmod(tmp_path) if maker == "kmod" else make_bpf_probe(tmp_path, kernel_version="6.1.0")
    data = path.read_bytes()

    for cut in list(range(4, 80, 5)) + list(range(80, len(data), max(1, len(data) // 60))):
        with pytest.raises(VerificationError) as caught:
            inspect_artifact(data[:cut], filename="cut.ko")
        assert "cut.ko" in caught.value.message, cut


@pytest.mark.parametrize(("offset", "value"), [(4, 7), (5, 9)], ids=["bad-class", "bad-byte-order"])
def test_bad_elf_identification(tmp_path, offset, value):
    data = bytearray(make_kmod(tmp_path).read_bytes())
    data[offset] = value

    with pytest.raises(VerificationError, match="invalid ELF identification"):
        inspect_artifact(bytes(data))


def test_section_pointing_past_end_of_file(tmp_path):
    data = bytearray(make_kmod(tmp_path).read_bytes())
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    # Make the last section header claim a huge size.
    last = e_shoff + (e_shnum - 1) * e_shentsize
    struct.pack_into("<Q", data, last + 0x20, 1 << 40)

    with pytest.raises(VerificationError, match="truncated or corrupt"):
        inspect_artifact(bytes(data))


def test_to_dict_is_json(tmp_path):
    kmod = inspect_artifact(make_kmod(tmp_path, signed=True).read_bytes()).to_dict()
    probe = inspect_artifact(make_bpf_probe(tmp_path, kernel_version="6.1.0", api=(8, 0, 3)).read_bytes()).to_dict()

    assert json.loads(json.dumps(kmod)) == kmod
    assert kmod["elf"] == {"class": "ELF64", "type": "ET_REL", "machine": "EM_X86_64", "machine_number": 62,
                           "byte_order": "little"}
    assert kmod["signature"] == {"signed": True, "id_type": "PKCS7", "sig_len": FAKE_SIGNATURE_LENGTH}
    assert kmod["symbol_crcs"]["module_layout"] == "0x9060323f"
    assert kmod["api_version"] == "8.0.0"
    assert probe["kernel_version"] == "6.1.0"
    assert probe["api_version"] == "8.0.3"
    assert "modinfo" not in probe


def test_plain_python_compression_round_trip_needs_no_fixture_compiler():
    # decompress() leaves uncompressed data alone and undoes each stdlib format.
    payload = b"\x7fELF" + bytes(range(256)) * 4
    assert decompress(payload) is payload
    assert decompress(lzma.compress(payload)) == payload
    assert decompress(gzip.compress(payload) + gzip.compress(b"tail")) == payload + b"tail"


def test_the_core_machine_numbers_are_the_elf_standard_ones():
    from elftools.elf.enums import ENUM_E_MACHINE

    assert tuple(ENUM_E_MACHINE[n] for n in ("EM_X86_64", "EM_AARCH64", "EM_BPF")) == (EM_X86_64, EM_AARCH64, EM_BPF)
