"""The OCI layout v1 (docs/oci-layout.md) as tables: tags, repository references, the config blob, the driver
manifest and everything a reader must refuse, and the cosign signature payload and manifest."""

import base64
import hashlib
import json
import re

import pytest

from driver_loader.core import oci
from driver_loader.core.errors import ExitCode, UsageError, VerificationError

NAME, VERSION, ARCH = "falco", "8.0.0+driver", "x86_64"
FILE = "falco_debian_6.1.0-18-amd64_1.ko"
DRIVER = b"\x7fELF pretend kernel module"
DRIVER_DIGEST = "sha256:" + hashlib.sha256(DRIVER).hexdigest()
TAG_SYNTAX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def spec_tag(name, version, arch, file_name):
    """The tag rule exactly as docs/oci-layout.md writes it, independently of the module."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", f"{version}_{arch}_{file_name}")
    if not re.match(r"[A-Za-z0-9_]", readable):
        readable = "_" + readable
    readable = readable[:107]
    identity = f"falco-driver-loader/oci/v1\n{name}\n{version}\n{arch}\n{file_name}"
    return readable + "-" + hashlib.sha256(identity.encode()).hexdigest()[:20]


# -- tags -------------------------------------------------------------------------------------------------------------

LONG_RELEASE = "6.8.0-1012-" + "x" * 150
TAG_CASES = {
    "plain": (NAME, "7.0.0", ARCH, "falco_debian_6.1.0-18-amd64_1.ko"),
    "plus in the driver version": (NAME, "8.0.0+driver", ARCH, FILE),
    "tilde in the kernel version": (NAME, "8.0.0+driver", ARCH, "falco_ubuntu-generic_5.4.0-42-generic_46~18.04.1.ko"),
    "ebpf probe": (NAME, "8.0.0+driver", "aarch64", "falco_amazonlinux2_5.10.220-209.869.amzn2.aarch64_1.o"),
    "version starting with a dot": (NAME, ".1", ARCH, FILE),
    "version starting with a dash": (NAME, "-1", ARCH, FILE),
    "very long kernel release": (NAME, "8.0.0+driver", ARCH, f"falco_ubuntu_{LONG_RELEASE}_1.ko"[:200]),
    "every folded character": (NAME, "1+2~3,4:5=6@7", ARCH, FILE),
}


@pytest.mark.parametrize("values", TAG_CASES.values(), ids=TAG_CASES.keys())
def test_artifact_tag_follows_the_spec_and_is_a_valid_tag(values):
    tag = oci.artifact_tag(*values)
    assert tag == spec_tag(*values)
    assert oci.TAG_RE.fullmatch(tag) and TAG_SYNTAX.fullmatch(tag)
    assert len(tag) <= 128
    assert oci.artifact_tag(*values) == tag  # deterministic


def test_artifact_tag_worked_example_from_the_spec():
    assert oci.artifact_tag(NAME, VERSION, ARCH, FILE) == (
        "8.0.0_driver_x86_64_falco_debian_6.1.0-18-amd64_1.ko-d7a4b4bd36899cdd1994")


def test_artifact_tag_starts_with_an_underscore_when_the_version_starts_with_a_dot():
    assert oci.artifact_tag(NAME, ".1", ARCH, FILE).startswith("_.1_x86_64_")


# Pairs that the readable part folds (or truncates) to the same text: the hash keeps their tags apart.
COLLISIONS = {
    "plus vs underscore": ((NAME, "8.0.0+driver", ARCH, FILE), (NAME, "8.0.0_driver", ARCH, FILE)),
    "tilde vs underscore": ((NAME, "1", ARCH, "falco_u_5.4_46~18.ko"), (NAME, "1", ARCH, "falco_u_5.4_46_18.ko")),
    "plus vs tilde": ((NAME, "1+a", ARCH, FILE), (NAME, "1~a", ARCH, FILE)),
    "driver name only": ((NAME, VERSION, ARCH, FILE), ("falco-custom", VERSION, ARCH, FILE)),
    "moved separator": ((NAME, "1_x", "y", FILE), (NAME, "1", "x_y", FILE)),
    "differ after 107 characters": ((NAME, VERSION, ARCH, "falco_u_" + "a" * 150 + "_1.ko"),
                                    (NAME, VERSION, ARCH, "falco_u_" + "a" * 150 + "_2.ko")),
}


@pytest.mark.parametrize("first, second", COLLISIONS.values(), ids=COLLISIONS.keys())
def test_values_the_readable_part_folds_alike_get_distinct_tags(first, second):
    tag1, tag2 = oci.artifact_tag(*first), oci.artifact_tag(*second)
    assert tag1.rsplit("-", 1)[0] == tag2.rsplit("-", 1)[0]  # the readable parts do collide...
    assert tag1 != tag2  # ...the tags do not


@pytest.mark.parametrize("values", [
    ("", VERSION, ARCH, FILE), (NAME, "", ARCH, FILE), (NAME, VERSION, "", FILE), (NAME, VERSION, ARCH, ""),
    (NAME, "1\n2", ARCH, FILE), (NAME, VERSION, "x86/64", FILE), (NAME, VERSION, ARCH, "../falco.ko"),
    (NAME, VERSION, ARCH, "a" * 201),
], ids=["empty name", "empty version", "empty arch", "empty file", "newline", "slash", "dot-dot", "too long"])
def test_artifact_tag_refuses_unsafe_values(values):
    with pytest.raises(UsageError, match="cannot compute the OCI tag"):
        oci.artifact_tag(*values)


def test_signature_tag_and_digest_of():
    digest = oci.digest_of(b"abc")
    assert digest == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert oci.signature_tag(digest) == "sha256-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.sig"
    assert oci.TAG_RE.fullmatch(oci.signature_tag(digest))
    for bad in ("sha256:ABC", "sha512:" + "a" * 128, "a" * 64):
        with pytest.raises(ValueError):
            oci.signature_tag(bad)


# -- repository references -------------------------------------------------------------------------------------------

PIN = "sha256:" + "0123456789abcdef" * 4
GOOD_REFERENCES = {
    "oci://ghcr.io/falcosecurity/drivers": ("ghcr.io", "falcosecurity/drivers", None, False),
    "OCI://Registry.Example.COM/drivers": ("registry.example.com", "drivers", None, False),
    "oci://registry.example:5000/a/b/c/": ("registry.example:5000", "a/b/c", None, False),
    f"oci://harbor.local/falco/drivers@{PIN}": ("harbor.local", "falco/drivers", PIN, False),
    "oci://127.0.0.1:5000/drivers": ("127.0.0.1:5000", "drivers", None, True),
    "oci://127.8.9.10/drivers": ("127.8.9.10", "drivers", None, True),
    "oci://localhost:5000/drivers": ("localhost:5000", "drivers", None, True),
    "oci://[::1]:5000/drivers": ("[::1]:5000", "drivers", None, True),
    "oci://[2001:db8::1]/drivers": ("[2001:db8::1]", "drivers", None, False),
    "oci://10.0.0.1/drivers": ("10.0.0.1", "drivers", None, False),
    "oci://r.example/a.b_c__d---e/f-g": ("r.example", "a.b_c__d---e/f-g", None, False),
}


@pytest.mark.parametrize("text, expected", GOOD_REFERENCES.items(), ids=GOOD_REFERENCES.keys())
def test_good_references(text, expected):
    registry, repository, digest, loopback = expected
    ref = oci.parse_oci_repository(text)
    assert (ref.registry, ref.repository, ref.digest) == (registry, repository, digest)
    assert ref.is_loopback is loopback
    assert ref.plain_http_allowed(False) is loopback
    assert ref.plain_http_allowed(True) is True
    assert ref.docker_reference == f"{registry}/{repository}"
    assert ref.display == f"oci://{registry}/{repository}" + (f"@{digest}" if digest else "")
    assert oci.parse_oci_repository(ref.display) == ref  # the display form parses back to the same reference
    assert ref.base_url() == f"https://{registry}" and ref.base_url(plain_http=True) == f"http://{registry}"


def test_reference_host_and_port():
    ref = oci.parse_oci_repository("oci://[::1]:5000/drivers")
    assert (ref.hostname, ref.port) == ("::1", 5000)
    ref = oci.parse_oci_repository("oci://registry.example/drivers")
    assert (ref.hostname, ref.port) == ("registry.example", None)


BAD_REFERENCES = {
    "https://registry.example/drivers": "does not start with oci://",
    "oci://": "no registry host",
    "oci:///drivers": "no registry host",
    "oci://registry.example": "no repository path",
    "oci://registry.example/": "no repository path",
    "oci://bad_host/drivers": "not a host name",
    "oci://-bad.example/drivers": "not a host name",
    "oci://registry.example:0/drivers": "port",
    "oci://registry.example:65536/drivers": "port",
    "oci://registry.example:/drivers": "port",
    "oci://registry.example:http/drivers": "port",
    "oci://[::1/drivers": "closing",
    "oci://[127.0.0.1]/drivers": "not an IPv6 address",
    "oci://registry.example/Drivers": "must be lowercase",
    "oci://registry.example/dri%vers": "is not [a-z0-9]+",
    "oci://registry.example/a___b": "is not [a-z0-9]+",
    "oci://registry.example/-a": "is not [a-z0-9]+",
    "oci://registry.example/a.": "is not [a-z0-9]+",
    "oci://registry.example/a//b": "empty component",
    "oci://registry.example/drivers:latest": "tags",
    "oci://registry.example/drivers@sha256:ABCDEF" + "0" * 58: "64 lowercase hex",
    "oci://registry.example/drivers@sha256:abc": "64 lowercase hex",
    "oci://registry.example/drivers@sha512:" + "0" * 128: "is not sha256",
    "oci://registry.example/drivers?token=hunter22": "query string",
    "oci://registry.example/drivers#frag": "fragment",
    "oci://registry.example/dri vers": "whitespace",
    "oci://registry.example/a\nb": "whitespace",
    "oci://registry.example/" + "a" * 240: "at most 255",
    "oci://user:hunter22@registry.example/drivers": "credentials never go in the reference",
    "oci://hunter22@registry.example/drivers": "credentials never go in the reference",
    "oci://user:hun/ter22@registry.example/drivers": "credentials never go in the reference",
}


@pytest.mark.parametrize("text, reason", BAD_REFERENCES.items(), ids=[repr(t)[:60] for t in BAD_REFERENCES])
def test_bad_references_are_usage_errors_with_one_line_and_a_hint(text, reason):
    with pytest.raises(UsageError) as caught:
        oci.parse_oci_repository(text)
    error = caught.value
    assert error.exit_code == ExitCode.USAGE
    assert reason in error.message
    assert "\n" not in error.message and error.hint and "\n" not in error.hint
    assert "hunter22" not in error.message and "hun/ter22" not in error.message  # credentials are never echoed


def test_name_of_exactly_255_characters_is_allowed():
    path = "a" * (255 - len("registry.example/"))
    assert oci.parse_oci_repository(f"oci://registry.example/{path}").repository == path


def test_is_oci_reference():
    assert oci.is_oci_reference("oci://x/y") and oci.is_oci_reference("OCI://x/y")
    assert not oci.is_oci_reference("https://x/y") and not oci.is_oci_reference("file:///x")


# -- config -----------------------------------------------------------------------------------------------------------


def make_config(**overrides):
    fields = dict(driver_name=NAME, driver_version=VERSION, kind="kmod", arch=ARCH, target="debian",
                  kernel_release="6.1.0-18-amd64", kernel_version="1", api_version="8.0.0", schema_version="2.15.0",
                  file_name=FILE, sha256=DRIVER_DIGEST.split(":")[1])
    fields.update(overrides)
    return oci.DriverConfig(**fields)


def test_config_round_trip_and_deterministic_bytes():
    config = make_config()
    data = config.to_bytes()
    assert oci.parse_config(data) == config
    assert make_config().to_bytes() == data
    document = json.loads(data)
    assert list(document) == sorted(document) and b" " not in data and b"\n" not in data
    assert document == {"layout": 1, "driverName": NAME, "driverVersion": VERSION, "kind": "kmod", "arch": ARCH,
                        "target": "debian", "kernelRelease": "6.1.0-18-amd64", "kernelVersion": "1",
                        "apiVersion": "8.0.0", "schemaVersion": "2.15.0", "fileName": FILE,
                        "sha256": DRIVER_DIGEST.split(":")[1]}


def test_config_with_unknown_api_versions_and_a_long_kernel_version_round_trips():
    config = make_config(api_version="", schema_version="", kernel_version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1")
    assert oci.parse_config(config.to_bytes()) == config


def test_config_ignores_unknown_keys():
    document = json.loads(make_config().to_bytes())
    document["addedLater"] = {"x": 1}
    assert oci.parse_config(json.dumps(document).encode()) == make_config()


def test_config_to_bytes_refuses_an_invalid_config():
    with pytest.raises(ValueError, match="kind"):
        make_config(kind="modern_ebpf").to_bytes()
    with pytest.raises(ValueError, match="sha256"):
        make_config(sha256="A" * 64).to_bytes()


def _config_with(**changes):
    document = json.loads(make_config().to_bytes())
    for key, value in changes.items():
        if value is _DROP:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document).encode()


_DROP = object()
BAD_CONFIGS = {
    "layout 2": (_config_with(layout=2), "layout version 2 is unknown"),
    "layout as a string": (_config_with(layout="1"), "not an integer"),
    "layout as a bool": (_config_with(layout=True), "not an integer"),
    "no layout": (_config_with(layout=_DROP), "not an integer"),
    "missing field": (_config_with(driverName=_DROP), "driverName is missing"),
    "number for a string": (_config_with(arch=64), "arch is int, not a string"),
    "null for a string": (_config_with(apiVersion=None), "apiVersion is NoneType"),
    "unknown kind": (_config_with(kind="modern_ebpf"), "kind"),
    "uppercase sha256": (_config_with(sha256="A" * 64), "sha256"),
    "prefixed sha256": (_config_with(sha256=DRIVER_DIGEST), "sha256"),
    "path in file name": (_config_with(fileName="../../etc/passwd"), "fileName"),
    "control character": (_config_with(kernelVersion="1\x1b[2J"), "kernelVersion"),
    "not an object": (b"[1, 2]", "not an object"),
    "not JSON": (b"{layout: 1}", "not valid JSON"),
    "not UTF-8": (b'{"layout": "\xff"}', "not UTF-8"),
    "duplicate key": (b'{"layout": 1, "layout": 1}', "appears twice"),
    "oversize": (_config_with(padding="x" * (64 * 1024)), "more than the 65536 allowed"),
    "deep": (b'{"layout": 1, "x": ' + b"[" * 20 + b"]" * 20 + b"}", "nested more than 8"),
}


@pytest.mark.parametrize("data, reason", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_parse_config_refuses(data, reason):
    with pytest.raises(oci.OciLayoutError) as caught:
        oci.parse_config(data)
    assert reason in caught.value.message
    assert caught.value.exit_code == ExitCode.VERIFICATION and "\n" not in caught.value.message


def test_config_mismatches_name_every_difference():
    config = make_config()
    assert config.mismatches(driver_name=NAME, driver_version=VERSION, arch=ARCH, file_name=FILE, kind="kmod",
                             sha256=DRIVER_DIGEST) == []
    found = config.mismatches(driver_name="other", driver_version=VERSION, arch="aarch64", file_name=FILE,
                              kind="ebpf", sha256="f" * 64)
    assert [reason.split()[0] for reason in found] == ["driverName", "arch", "kind", "sha256"]


# -- driver manifest --------------------------------------------------------------------------------------------------


def good_manifest(kind="kmod", file_name=FILE):
    config = make_config(kind=kind, file_name=file_name).to_bytes()
    return config, oci.build_manifest(config, DRIVER_DIGEST, len(DRIVER), file_name, kind)


def test_build_manifest_shape_and_determinism():
    config, data = good_manifest()
    assert good_manifest()[1] == data
    document = json.loads(data)
    assert document == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.falco-driver-loader.driver.v1",
        "config": {"mediaType": "application/vnd.falco-driver-loader.driver.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.falco-driver-loader.driver.kmod.v1", "digest": DRIVER_DIGEST,
                    "size": len(DRIVER), "annotations": {"org.opencontainers.image.title": FILE}}],
    }
    assert b"created" not in data  # no timestamps: republishing gives the same digest


@pytest.mark.parametrize("kind, file_name, media_type", [
    ("kmod", FILE, "application/vnd.falco-driver-loader.driver.kmod.v1"),
    ("ebpf", "falco_debian_6.1.0-18-amd64_1.o", "application/vnd.falco-driver-loader.driver.ebpf.v1"),
])
def test_manifest_round_trip(kind, file_name, media_type):
    config, data = good_manifest(kind, file_name)
    manifest = oci.parse_manifest(data, expected_file_name=file_name, expected_kind=kind,
                                  expected_digest=oci.digest_of(data))
    assert manifest == oci.DriverManifest(
        digest=oci.digest_of(data), kind=kind, file_name=file_name, layer_media_type=media_type,
        layer_digest=DRIVER_DIGEST, layer_size=len(DRIVER), config_digest=oci.digest_of(config),
        config_size=len(config))
    assert manifest.layer_sha256 == hashlib.sha256(DRIVER).hexdigest()


def test_manifest_from_other_tools_with_extra_annotations_and_fields_is_read():
    """ORAS adds a created annotation to the manifest; descriptors may carry more annotations and fields."""
    document = json.loads(good_manifest()[1])
    document["annotations"] = {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    document["layers"][0]["annotations"]["org.example.note"] = "x"
    document["subject"] = {"mediaType": oci.MANIFEST_MEDIA_TYPE, "digest": PIN, "size": 10}
    manifest = oci.parse_manifest(json.dumps(document, indent=2).encode(), expected_file_name=FILE)
    assert manifest.layer_digest == DRIVER_DIGEST


@pytest.mark.parametrize("config_kwargs, args, reason", [
    ({}, (DRIVER_DIGEST, len(DRIVER), "other.ko", "kmod"), "fileName"),
    ({}, (DRIVER_DIGEST, len(DRIVER), FILE, "ebpf"), "kind"),
    ({}, ("sha256:" + "f" * 64, len(DRIVER), FILE, "kmod"), "sha256"),
    ({}, (DRIVER_DIGEST, -1, FILE, "kmod"), "layer size"),
    ({}, (DRIVER_DIGEST.upper(), len(DRIVER), FILE, "kmod"), "layer digest"),
    ({}, (DRIVER_DIGEST, len(DRIVER), FILE, "modern_ebpf"), "kind"),
])
def test_build_manifest_refuses_a_config_that_does_not_describe_the_layer(config_kwargs, args, reason):
    with pytest.raises(ValueError, match=reason):
        oci.build_manifest(make_config(**config_kwargs).to_bytes(), *args)
    with pytest.raises(ValueError, match="not valid JSON"):
        oci.build_manifest(b"not json", DRIVER_DIGEST, len(DRIVER), FILE, "kmod")


def _manifest_with(change):
    document = json.loads(good_manifest()[1])
    change(document)
    return json.dumps(document).encode()


def _set(path, value):
    def change(document):
        node = document
        for key in path[:-1]:
            node = node[key]
        if value is _DROP:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return change


SECOND_LAYER = {"mediaType": oci.KMOD_LAYER_MEDIA_TYPE, "digest": DRIVER_DIGEST, "size": 1,
                "annotations": {oci.TITLE_ANNOTATION: FILE}}
BAD_MANIFESTS = {
    "wrong mediaType": (_manifest_with(_set(["mediaType"], oci.DOCKER_MANIFEST_MEDIA_TYPE)), "mediaType"),
    "no mediaType": (_manifest_with(_set(["mediaType"], _DROP)), "mediaType None"),
    "image index": (_manifest_with(_set(["mediaType"], "application/vnd.oci.image.index.v1+json")), "mediaType"),
    "wrong artifactType": (_manifest_with(_set(["artifactType"], "application/vnd.cncf.helm.config.v1+json")),
                           "artifactType"),
    "no artifactType": (_manifest_with(_set(["artifactType"], _DROP)), "artifactType None"),
    "schemaVersion 1": (_manifest_with(_set(["schemaVersion"], 1)), "schemaVersion 1 is not 2"),
    "schemaVersion string": (_manifest_with(_set(["schemaVersion"], "2")), "schemaVersion '2'"),
    "schemaVersion bool": (_manifest_with(_set(["schemaVersion"], True)), "schemaVersion True"),
    "wrong config mediaType": (_manifest_with(_set(["config", "mediaType"], oci.SIGNATURE_CONFIG_MEDIA_TYPE)),
                               "config mediaType"),
    "no config": (_manifest_with(_set(["config"], _DROP)), "the config is not an object"),
    "config too big": (_manifest_with(_set(["config", "size"], 64 * 1024 + 1)), "the config size 65537"),
    "config bad digest": (_manifest_with(_set(["config", "digest"], "sha256:abc")), "the config digest"),
    "two layers": (_manifest_with(lambda d: d["layers"].append(SECOND_LAYER)), "2 layers"),
    "no layers": (_manifest_with(_set(["layers"], [])), "0 layers"),
    "layers not a list": (_manifest_with(_set(["layers"], SECOND_LAYER)), "layers is not a list"),
    "layer not an object": (_manifest_with(_set(["layers"], ["x"])), "the layer is not an object"),
    "wrong layer mediaType": (_manifest_with(_set(["layers", 0, "mediaType"], oci.SIMPLE_SIGNING_MEDIA_TYPE)),
                              "the layer mediaType"),
    "tar layer as falcoctl writes": (_manifest_with(_set(["layers", 0, "mediaType"],
                                                         "application/vnd.cncf.falco.plugin.layer.v1+tar.gz")),
                                     "the layer mediaType"),
    "wrong title": (_manifest_with(_set(["layers", 0, "annotations", oci.TITLE_ANNOTATION], "evil.ko")),
                    "is 'evil.ko', not"),
    "no title": (_manifest_with(_set(["layers", 0, "annotations"], _DROP)), "is missing"),
    "title not a string": (_manifest_with(_set(["layers", 0, "annotations", oci.TITLE_ANNOTATION], 1)),
                           "is not a string"),
    "annotations not an object": (_manifest_with(_set(["layers", 0, "annotations"], [FILE])), "not an object"),
    "manifest annotation not a string": (_manifest_with(_set(["annotations"], {"a": 1})), "is not a string"),
    "too many annotations": (_manifest_with(_set(["annotations"], {str(i): "" for i in range(65)})), "65 entries"),
    "uppercase digest": (_manifest_with(_set(["layers", 0, "digest"], DRIVER_DIGEST.upper())), "the layer digest"),
    "sha512 digest": (_manifest_with(_set(["layers", 0, "digest"], "sha512:" + "a" * 128)), "the layer digest"),
    "short digest": (_manifest_with(_set(["layers", 0, "digest"], DRIVER_DIGEST[:-1])), "the layer digest"),
    "digest not a string": (_manifest_with(_set(["layers", 0, "digest"], 5)), "the layer digest 5"),
    "negative size": (_manifest_with(_set(["layers", 0, "size"], -1)), "the layer size -1"),
    "float size": (_manifest_with(_set(["layers", 0, "size"], 1.5)), "the layer size 1.5"),
    "bool size": (_manifest_with(_set(["layers", 0, "size"], True)), "the layer size True"),
    "string size": (_manifest_with(_set(["layers", 0, "size"], "10")), "the layer size '10'"),
    "huge size": (_manifest_with(_set(["layers", 0, "size"], 2 ** 63)), "more than the 536870912"),
    "oversize document": (_manifest_with(_set(["annotations"], {"pad": "x" * (256 * 1024)})),
                          "more than the 262144 allowed"),
    "deep JSON": (_manifest_with(_set(["annotations"], json.loads("[" * 30 + "]" * 30))), "nested more than 8"),
    "very deep JSON": (b"[" * 100_000 + b"]" * 100_000, "nested more than 8"),
    "a list": (b"[]", "a JSON list, not an object"),
    "a string": (b'"manifest"', "a JSON str, not an object"),
    "a number": (b"2", "a JSON int, not an object"),
    "null": (b"null", "a JSON NoneType, not an object"),
    "empty": (b"", "not valid JSON"),
    "truncated": (good_manifest()[1][:-3], "not valid JSON"),
    "not UTF-8": (b'{"schemaVersion": 2, "x": "\xc3\x28"}', "not UTF-8"),
    "NaN": (b'{"schemaVersion": NaN}', "not valid JSON"),
    "duplicate layers key": (good_manifest()[1][:-1] + b',"layers":[]}', "appears twice"),
}


@pytest.mark.parametrize("data, reason", BAD_MANIFESTS.values(), ids=BAD_MANIFESTS.keys())
def test_parse_manifest_refuses(data, reason):
    with pytest.raises(oci.OciLayoutError) as caught:
        oci.parse_manifest(data, expected_file_name=FILE)
    error = caught.value
    assert isinstance(error, VerificationError) and error.exit_code == ExitCode.VERIFICATION
    assert error.message.startswith("OCI manifest: ")
    assert reason in error.message, error.message
    assert "\n" not in error.message and len(error.message) < 300 and error.hint


def test_parse_manifest_refuses_the_wrong_kind_and_a_digest_that_is_not_the_pinned_one():
    data = good_manifest()[1]
    with pytest.raises(oci.OciLayoutError, match="holds a kmod driver, not the ebpf wanted"):
        oci.parse_manifest(data, expected_file_name=FILE, expected_kind="ebpf")
    with pytest.raises(oci.OciLayoutError, match=f"hash to {oci.digest_of(data)}, not the pinned {PIN}"):
        oci.parse_manifest(data, expected_file_name=FILE, expected_digest=PIN)
    with pytest.raises(oci.OciLayoutError, match="expected bytes"):
        oci.parse_manifest(json.loads(data), expected_file_name=FILE)


# -- signatures -------------------------------------------------------------------------------------------------------

MANIFEST_DIGEST = "sha256:" + "ab" * 32


def test_simple_signing_payload_is_byte_for_byte_what_cosign_signs():
    payload = oci.simple_signing_payload("registry.example:5000/falco/drivers", MANIFEST_DIGEST)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"registry.example:5000/falco/drivers"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}')
    assert oci.parse_simple_signing_payload(payload) == oci.SimpleSigningPayload(
        docker_reference="registry.example:5000/falco/drivers", manifest_digest=MANIFEST_DIGEST)


def test_simple_signing_payload_refuses_invalid_input():
    with pytest.raises(ValueError):
        oci.simple_signing_payload("r/x", "sha256:abc")
    with pytest.raises(ValueError):
        oci.simple_signing_payload("", MANIFEST_DIGEST)


def test_payload_with_optional_claims_as_cosign_sign_a_writes_is_read():
    payload = json.loads(oci.simple_signing_payload("r.example/x", MANIFEST_DIGEST))
    payload["optional"] = {"builder": "ci", "creator": "x"}
    assert oci.parse_simple_signing_payload(json.dumps(payload).encode()).manifest_digest == MANIFEST_DIGEST


def _payload_with(change):
    document = json.loads(oci.simple_signing_payload("r.example/x", MANIFEST_DIGEST))
    change(document)
    return json.dumps(document).encode()


BAD_PAYLOADS = {
    "wrong type": (_payload_with(_set(["critical", "type"], "atomic container signature")), "critical.type"),
    "unknown critical member": (_payload_with(_set(["critical", "extra"], 1)), "unknown member 'extra'"),
    "unknown top-level member": (_payload_with(_set(["extra"], 1)), "unknown member 'extra'"),
    "no image": (_payload_with(_set(["critical", "image"], _DROP)), "has no 'image'"),
    "no critical": (_payload_with(_set(["critical"], _DROP)), "has no 'critical'"),
    "capitalised digest key": (_payload_with(_set(["critical", "image"], {"Docker-manifest-digest": PIN})),
                               "has no 'docker-manifest-digest'"),
    "bad digest": (_payload_with(_set(["critical", "image", "docker-manifest-digest"], "sha256:abc")),
                   "docker-manifest-digest"),
    "digest not a string": (_payload_with(_set(["critical", "image", "docker-manifest-digest"], ["x"])),
                            "docker-manifest-digest"),
    "reference not a string": (_payload_with(_set(["critical", "identity", "docker-reference"], 1)),
                               "docker-reference"),
    "identity not an object": (_payload_with(_set(["critical", "identity"], "r/x")), "not an object"),
    "optional a string": (_payload_with(_set(["optional"], "x")), "neither null nor an object"),
    "oversize": (_payload_with(_set(["optional"], {"pad": "x" * 70_000})), "more than the 65536 allowed"),
    "not an object": (b"[]", "not an object"),
    "duplicate digest": (b'{"critical":{"identity":{"docker-reference":"r/x"},"image":{"docker-manifest-digest":"'
                         + PIN.encode() + b'","docker-manifest-digest":"' + MANIFEST_DIGEST.encode()
                         + b'"},"type":"cosign container image signature"},"optional":null}', "appears twice"),
}


@pytest.mark.parametrize("data, reason", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_parse_simple_signing_payload_refuses(data, reason):
    with pytest.raises(oci.OciLayoutError) as caught:
        oci.parse_simple_signing_payload(data)
    assert reason in caught.value.message and caught.value.exit_code == ExitCode.VERIFICATION


SIG = base64.b64encode(b"0E\x02\x20" + b"\x01" * 32 + b"\x02\x21\x00" + b"\x02" * 32).decode()
OTHER_SIG = base64.b64encode(b"0D\x02\x20" + b"\x03" * 32 + b"\x02\x20" + b"\x04" * 32).decode()


def test_signature_manifest_has_the_shape_cosign_writes():
    payload = oci.simple_signing_payload("r.example/x", MANIFEST_DIGEST)
    config, data = oci.build_signature_manifest(payload, SIG)
    payload_digest = oci.digest_of(payload)
    # go-containerregistry's image config for cosign's signature image, byte for byte.
    assert config == ('{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":'
                      '"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["'
                      + payload_digest + '"]},"config":{}}').encode()
    assert data == ('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":'
                    '{"mediaType":"application/vnd.oci.image.config.v1+json","size":' + str(len(config))
                    + ',"digest":"' + oci.digest_of(config) + '"},"layers":[{"mediaType":'
                    '"application/vnd.dev.cosign.simplesigning.v1+json","size":' + str(len(payload))
                    + ',"digest":"' + payload_digest + '","annotations":{"dev.cosignproject.cosign/signature":"'
                    + SIG + '"}}]}').encode()
    layers = oci.parse_signature_manifest(data)
    assert layers == [oci.SignatureLayer(payload_digest=payload_digest, payload_size=len(payload),
                                         signature_b64=SIG)]
    assert layers[0].signature == base64.b64decode(SIG)


def test_signature_manifest_keeps_existing_signatures_and_does_not_repeat_one():
    first = oci.simple_signing_payload("r.example/x", MANIFEST_DIGEST)
    _, data = oci.build_signature_manifest(first, SIG)
    kept = oci.parse_signature_manifest(data)
    second = oci.simple_signing_payload("mirror.example/x", MANIFEST_DIGEST)
    config, data = oci.build_signature_manifest(second, OTHER_SIG, keep=kept)
    layers = oci.parse_signature_manifest(data)
    assert [layer.signature_b64 for layer in layers] == [SIG, OTHER_SIG]
    assert json.loads(config)["rootfs"]["diff_ids"] == [oci.digest_of(first), oci.digest_of(second)]
    assert len(json.loads(config)["history"]) == 2
    assert oci.build_signature_manifest(second, OTHER_SIG, keep=layers)[1] == data  # idempotent


def test_signature_manifest_refuses_more_than_the_bound_and_bad_input():
    payload = oci.simple_signing_payload("r.example/x", MANIFEST_DIGEST)
    keep = [oci.SignatureLayer(oci.digest_of(bytes([i])), 1, SIG) for i in range(oci.MAX_SIGNATURE_LAYERS)]
    with pytest.raises(UsageError, match="at most 16"):
        oci.build_signature_manifest(payload, OTHER_SIG, keep=keep)
    with pytest.raises(ValueError, match="base64"):
        oci.build_signature_manifest(payload, "not base64!")
    with pytest.raises(ValueError, match="payload"):
        oci.build_signature_manifest(b"", SIG)


def test_signature_manifest_as_cosign_writes_with_docker_media_types_and_other_layers_is_read():
    payload = oci.simple_signing_payload("r.example/x", MANIFEST_DIGEST)
    document = json.loads(oci.build_signature_manifest(payload, SIG)[1])
    document["mediaType"] = oci.DOCKER_MANIFEST_MEDIA_TYPE
    document["layers"].insert(0, {"mediaType": "application/vnd.in-toto+json", "size": 3, "digest": PIN})
    document["layers"][1]["annotations"]["dev.sigstore.cosign/bundle"] = "{}"
    layers = oci.parse_signature_manifest(json.dumps(document).encode())
    assert [layer.signature_b64 for layer in layers] == [SIG]


def _signature_manifest_with(change):
    payload = oci.simple_signing_payload("r.example/x", MANIFEST_DIGEST)
    document = json.loads(oci.build_signature_manifest(payload, SIG)[1])
    change(document)
    return json.dumps(document).encode()


BAD_SIGNATURE_MANIFESTS = {
    "too many layers": (_signature_manifest_with(lambda d: d["layers"].extend(d["layers"] * 16)), "17 layers"),
    "no signature layer": (_signature_manifest_with(_set(["layers"], [])), "holds no signature"),
    "no signature annotation": (_signature_manifest_with(_set(["layers", 0, "annotations"], _DROP)),
                                "is not a non-empty string"),
    "signature not base64": (_signature_manifest_with(
        _set(["layers", 0, "annotations", oci.SIGNATURE_ANNOTATION], "%%%")), "is not base64"),
    "signature too long": (_signature_manifest_with(
        _set(["layers", 0, "annotations", oci.SIGNATURE_ANNOTATION], "A" * 8196)), "longer than 8192"),
    "payload too big": (_signature_manifest_with(_set(["layers", 0, "size"], 70_000)), "more than the 65536"),
    "bad payload digest": (_signature_manifest_with(_set(["layers", 0, "digest"], "sha256:x")), "layer 0 digest"),
    "image index": (_signature_manifest_with(_set(["mediaType"], "application/vnd.oci.image.index.v1+json")),
                    "mediaType"),
    "schemaVersion 1": (_signature_manifest_with(_set(["schemaVersion"], 1)), "schemaVersion"),
    "not an object": (b"[]", "not an object"),
    "oversize": (_signature_manifest_with(_set(["annotations"], {"p": "x" * 300_000})), "more than the 262144"),
}


@pytest.mark.parametrize("data, reason", BAD_SIGNATURE_MANIFESTS.values(), ids=BAD_SIGNATURE_MANIFESTS.keys())
def test_parse_signature_manifest_refuses(data, reason):
    with pytest.raises(oci.OciLayoutError) as caught:
        oci.parse_signature_manifest(data)
    assert caught.value.message.startswith("signature manifest: ")
    assert reason in caught.value.message and caught.value.exit_code == ExitCode.VERIFICATION


def test_detached_signature_round_trip_and_refusals():
    raw = base64.b64decode(SIG)
    assert oci.detached_signature_bytes(raw) == SIG.encode()
    assert oci.parse_detached_signature(SIG.encode() + b"\n") == raw
    for bad, reason in ((b"", "not a non-empty string"), (b"%%%", "not base64"), (b"\xff", "not base64 text"),
                        (b"A" * 20_000, "more than the 16384")):
        with pytest.raises(oci.OciLayoutError, match=reason):
            oci.parse_detached_signature(bad)
