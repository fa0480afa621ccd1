"""`publish`, `build --publish` and `install --publish` end to end: real subprocesses against Debian's docker-registry
(the CNCF distribution registry) on 127.0.0.1. What is pushed is read back by `download --repo oci://`, by skopeo,
by openssl and by plain HTTP requests written from docs/oci-layout.md (tests/oci_helpers.py), never by the
publisher's own code."""

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from download_helpers import DEFAULT_VERSION, FILENAME, sha256
from elf_fixtures import make_bpf_probe, make_kmod
from oci_helpers import CONFIG_TYPE, LAYER_TYPES, MANIFEST_TYPE, Pusher, digest, make_key, push_driver, tag_for

from driver_loader.artifacts.cache import ArtifactCache

pytest_plugins = ["registry_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
RELEASE = "6.8.0-79-generic"
UNAME_V = "#79-Ubuntu SMP PREEMPT_DYNAMIC"
PROBE = FILENAME.replace(".ko", ".o")
TAG = tag_for("falco", DEFAULT_VERSION, "x86_64", FILENAME)
SIGNATURE_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
SIMPLE_SIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def module(release: str = RELEASE, version: str = DEFAULT_VERSION) -> bytes:
    """A kernel module look-alike with its own bytes (the registry's blob store is shared by the session)."""
    with tempfile.TemporaryDirectory() as directory:
        return make_kmod(Path(directory), version=version,
                         vermagic=f"{release} SMP preempt mod_unload modversions ",
                         extra_c=f"const char padding[] = \"{os.urandom(8).hex()}\";").read_bytes()


def cached(cache_dir: Path, body: bytes, file_name: str = FILENAME, *, version: str = DEFAULT_VERSION,
           verified_by: str = "sha256-sidecar") -> str:
    """Put `body` in a cache as `download` stores a checked artifact."""
    path = str(cache_dir / version / "x86_64" / file_name)
    ArtifactCache(str(cache_dir)).stream_into(path, [body], max_size=len(body), verified_by=verified_by,
                                              url=f"https://mirror.example/{file_name}")
    return path


class Node:
    """The loader on one machine: its host root (Ubuntu 24.04, kernel RELEASE), its cache, its HOME."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = directory / "host"
        (self.root / "etc").mkdir(parents=True)
        (self.root / "etc" / "os-release").write_text('ID=ubuntu\nVERSION_ID="24.04"\n')
        self.cache_dir = directory / "cache"

    def run(self, command: str, *args: str, env=None, kind: str = "kmod", release: str = RELEASE):
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith(("REGISTRY_", "FALCOCTL_", "COSIGN_"))}
        environment.update({"PYTHONPATH": str(REPO_ROOT), "HOME": str(self.directory / "home"),
                            "XDG_RUNTIME_DIR": str(self.directory / "run")}, **(env or {}))
        argv = [sys.executable, "-m", "driver_loader", command, "--log-format", "text", "--host-root",
                str(self.root), "--kernel-release", release, "--kernel-version", UNAME_V, "--arch", "x86_64",
                "--type", kind, "--driver-version", DEFAULT_VERSION, "--cache-dir", str(self.cache_dir),
                "--http-retries", "1", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=180, env=environment)


@pytest.fixture
def node(tmp_path):
    return Node(tmp_path / "builder")


@pytest.fixture
def reader(tmp_path):
    """Another node, with its own empty cache: it pulls what the builder published."""
    return Node(tmp_path / "reader")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    return {name: make_key(directory, name) for name in ("builder", "other")}


def manifest_at(registry, repository: str, reference: str):
    """(status, bytes) of the manifest at a tag, read with plain requests."""
    pusher = Pusher(registry, repository)
    answer = pusher._send("GET", f"{pusher.base}/manifests/{reference}",
                          headers={"Accept": f"{MANIFEST_TYPE}, application/vnd.docker.distribution.manifest.v2+json"})
    return answer.status_code, answer.content


def blob_at(registry, repository: str, blob_digest: str) -> bytes:
    pusher = Pusher(registry, repository)
    answer = pusher._send("GET", f"{pusher.base}/blobs/{blob_digest}")
    assert answer.status_code == 200, answer.status_code
    assert digest(answer.content) == blob_digest
    return answer.content


def tag_written(registry, repository: str, tag: str) -> int:
    """When the registry last wrote the tag (its link file's mtime): a manifest PUT rewrites it, even unchanged."""
    link = (registry.directory / "storage/docker/registry/v2/repositories" / repository / "_manifests/tags" / tag
            / "current/link")
    return link.stat().st_mtime_ns


def mirror_with(directory: Path, files: dict, *, version: str = DEFAULT_VERSION) -> Path:
    """A mirror directory <dir>/<version>/x86_64/<file>; `files` maps a file name to (bytes, sidecar text or None)."""
    place = directory / version / "x86_64"
    place.mkdir(parents=True, exist_ok=True)
    for name, (body, sidecar) in files.items():
        (place / name).write_bytes(body)
        if sidecar is not None:
            (place / f"{name}.sha256").write_text(sidecar)
    return directory


# -- publish, then pull --------------------------------------------------------------------------------------------

def test_a_published_driver_is_pulled_by_download_and_verified_by_its_layer_digest(registry, node, reader, tmp_path):
    repository = registry.new_repository()
    body = module()
    mirror = mirror_with(tmp_path / "mirror", {FILENAME: (body, f"{sha256(body)}  {FILENAME}\n")})
    fetched = node.run("download", "--repo", f"file://{mirror}", "--verify", "strict")
    assert fetched.returncode == 0, fetched.stderr

    published = node.run("publish", "--repo", registry.oci_url(repository), "--output", "json")
    assert published.returncode == 0, published.stderr
    document = json.loads(published.stdout)
    [entry] = document["published"]
    assert (entry["status"], entry["tag"], entry["file_name"]) == ("pushed", TAG, FILENAME)
    assert entry["reference"] == f"{registry.oci_url(repository)}:{TAG}"

    # What is in the registry, read as the spec says it must be.
    status, raw = manifest_at(registry, repository, TAG)
    assert status == 200 and digest(raw) == entry["manifest_digest"]
    manifest = json.loads(raw)
    assert manifest["artifactType"] == "application/vnd.falco-driver-loader.driver.v1"
    assert manifest["mediaType"] == MANIFEST_TYPE and manifest["config"]["mediaType"] == CONFIG_TYPE
    [layer] = manifest["layers"]
    assert layer == {"mediaType": LAYER_TYPES["kmod"], "digest": f"sha256:{sha256(body)}", "size": len(body),
                     "annotations": {"org.opencontainers.image.title": FILENAME}}
    config = json.loads(blob_at(registry, repository, manifest["config"]["digest"]))
    assert config == {"layout": 1, "driverName": "falco", "driverVersion": DEFAULT_VERSION, "kind": "kmod",
                      "arch": "x86_64", "target": "ubuntu-generic", "kernelRelease": RELEASE, "kernelVersion": "79",
                      "apiVersion": "8.0.0", "schemaVersion": "2.0.0", "fileName": FILENAME, "sha256": sha256(body)}
    assert b"created" not in raw and blob_at(registry, repository, layer["digest"]) == body

    pulled = reader.run("download", "--repo", registry.oci_url(repository), "--verify", "strict", "--output", "json")
    assert pulled.returncode == 0, pulled.stderr
    pulled_document = json.loads(pulled.stdout)
    assert pulled_document["verified_by"] == "sha256-oci-digest"
    assert Path(pulled_document["path"]).read_bytes() == body


def test_publishing_again_changes_nothing_and_writes_no_manifest(registry, node):
    repository = registry.new_repository()
    cached(node.cache_dir, module())
    first = node.run("publish", "--repo", registry.oci_url(repository))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"pushed {registry.oci_url(repository)}:{TAG}@sha256:")
    written = tag_written(registry, repository, TAG)
    again = node.run("publish", "--repo", registry.oci_url(repository))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"unchanged {registry.oci_url(repository)}:{TAG}@sha256:")
    assert again.stdout.split()[1] == first.stdout.split()[1]
    assert tag_written(registry, repository, TAG) == written


def test_another_artifact_at_the_same_tag_is_refused_unless_forced(registry, node, reader, tmp_path):
    repository = registry.new_repository()
    cached(node.cache_dir, module())
    assert node.run("publish", "--repo", registry.oci_url(repository)).returncode == 0
    _, before = manifest_at(registry, repository, TAG)

    other = Node(tmp_path / "other-builder")
    rebuilt = module()  # the same driver, built again with other bytes
    cached(other.cache_dir, rebuilt)
    refused = other.run("publish", "--repo", registry.oci_url(repository), "--output", "json")
    assert refused.returncode == 1, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and digest(before) in errors[0] and "already holds" in errors[0]
    assert "--force" in refused.stderr
    assert manifest_at(registry, repository, TAG)[1] == before

    forced = other.run("publish", "--repo", registry.oci_url(repository), "--force", "--output", "json")
    assert forced.returncode == 0, forced.stderr
    [entry] = json.loads(forced.stdout)["published"]
    assert entry["status"] == "replaced"
    assert digest(manifest_at(registry, repository, TAG)[1]) == entry["manifest_digest"] != digest(before)
    pulled = reader.run("download", "--repo", registry.oci_url(repository), "--output", "json")
    assert pulled.returncode == 0, pulled.stderr
    assert Path(json.loads(pulled.stdout)["path"]).read_bytes() == rebuilt


# -- signatures ----------------------------------------------------------------------------------------------------

def test_a_signed_driver_is_pulled_with_the_builders_key_and_the_signature_is_cosigns(registry, node, reader, keys,
                                                                                       tmp_path):
    repository = registry.new_repository()
    body = module()
    cached(node.cache_dir, body)
    published = node.run("publish", "--repo", registry.oci_url(repository), "--sign-key", str(keys["builder"]),
                         "--output", "json")
    assert published.returncode == 0, published.stderr
    [entry] = json.loads(published.stdout)["published"]
    manifest_digest = entry["manifest_digest"]
    signature_tag = "sha256-" + manifest_digest.split(":", 1)[1] + ".sig"
    assert entry["signature"]["tag"] == signature_tag and entry["signature"]["status"] == "pushed"

    # cosign's shape, read with skopeo and plain requests; the signature checked with openssl.
    raw = subprocess.run(["skopeo", "inspect", "--raw", *registry.skopeo_args(),
                          f"docker://{registry.host}/{repository}:{signature_tag}"],
                         capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    signature_manifest = json.loads(raw.stdout)
    assert signature_manifest["mediaType"] == MANIFEST_TYPE
    assert signature_manifest["config"]["mediaType"] == SIGNATURE_CONFIG_TYPE
    [layer] = signature_manifest["layers"]
    assert layer["mediaType"] == SIMPLE_SIGNING_TYPE and set(layer["annotations"]) == {SIGNATURE_ANNOTATION}
    payload = blob_at(registry, repository, layer["digest"])
    assert json.loads(payload) == {"critical": {"identity": {"docker-reference": f"{registry.host}/{repository}"},
                                                "image": {"docker-manifest-digest": manifest_digest},
                                                "type": "cosign container image signature"},
                                   "optional": None}
    config = json.loads(blob_at(registry, repository, signature_manifest["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "signature").write_bytes(base64.b64decode(layer["annotations"][SIGNATURE_ANNOTATION]))
    checked = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(keys["builder"].with_suffix(".pub")),
                              "-signature", str(tmp_path / "signature"), str(tmp_path / "payload")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "Verified OK" in checked.stdout, checked.stdout + checked.stderr

    builder_pub, other_pub = (str(keys[name].with_suffix(".pub")) for name in ("builder", "other"))
    pulled = reader.run("download", "--repo", registry.oci_url(repository), "--verify-key", builder_pub,
                        "--output", "json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["signed_by"] and Path(json.loads(pulled.stdout)["path"]).read_bytes() == body
    refused = Node(tmp_path / "third").run("download", "--repo", registry.oci_url(repository), "--verify-key",
                                           other_pub)
    assert refused.returncode == 4 and "is not valid for key" in refused.stderr

    # Signing again with the same key adds nothing; another key's signature is added beside the first.
    written = tag_written(registry, repository, signature_tag)
    again = node.run("publish", "--repo", registry.oci_url(repository), "--sign-key", str(keys["builder"]))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("unchanged ") and again.stdout.rstrip().endswith(": unchanged")
    assert tag_written(registry, repository, signature_tag) == written
    second = node.run("publish", "--repo", registry.oci_url(repository), "--sign-key", str(keys["other"]))
    assert second.returncode == 0, second.stderr
    layers = json.loads(manifest_at(registry, repository, signature_tag)[1])["layers"]
    assert [entry["annotations"][SIGNATURE_ANNOTATION] for entry in layers][0] == \
        layer["annotations"][SIGNATURE_ANNOTATION] and len(layers) == 2
    both = Node(tmp_path / "fourth").run("download", "--repo", registry.oci_url(repository), "--verify-key", other_pub)
    assert both.returncode == 0, both.stderr


def test_an_encrypted_signing_key_opens_with_its_password_which_is_never_printed(registry, node, reader, tmp_path):
    repository = registry.new_repository()
    cached(node.cache_dir, module())
    password = "Sign1ng-Key-Pa55phrase"
    key = tmp_path / "encrypted.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256",
                    "-pass", f"pass:{password}", "-out", str(key)], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-passin", f"pass:{password}", "-pubout", "-out",
                    str(tmp_path / "encrypted.pub")], check=True, capture_output=True, timeout=60)
    wrong = node.run("publish", "--repo", registry.oci_url(repository), "--sign-key", str(key),
                     env={"COSIGN_PASSWORD": "not-the-Pa55phrase"})
    assert wrong.returncode == 2 and "wrong password" in wrong.stderr
    assert "not-the-Pa55phrase" not in wrong.stdout + wrong.stderr
    assert manifest_at(registry, repository, TAG)[0] == 404  # the key is opened before anything is pushed
    signed = node.run("publish", "--repo", registry.oci_url(repository), "--sign-key", str(key), "--log-level",
                      "debug", env={"FALCOCTL_DRIVER_SIGN_KEY_PASSWORD": password})
    assert signed.returncode == 0, signed.stderr
    assert password not in signed.stdout + signed.stderr
    pulled = reader.run("download", "--repo", registry.oci_url(repository), "--verify-key",
                        str(tmp_path / "encrypted.pub"))
    assert pulled.returncode == 0, pulled.stderr


# -- many at once: the cache, a mirror -----------------------------------------------------------------------------

def test_all_pushes_every_verified_entry_and_reports_the_others(registry, node):
    repository = registry.new_repository()
    newer = "8.1.0+driver"
    other_release = "6.8.0-80-generic"
    other_name = f"falco_ubuntu-generic_{other_release}_80.ko"
    drivers = {
        (DEFAULT_VERSION, FILENAME): cached(node.cache_dir, module()),
        (DEFAULT_VERSION, other_name): cached(node.cache_dir, module(other_release), other_name),
        (newer, FILENAME): cached(node.cache_dir, module(version=newer), version=newer),
    }
    notes = cached(node.cache_dir, b"not a driver\n", "README.txt")
    only_recorded = cached(node.cache_dir, module(version="8.2.0+driver"), version="8.2.0+driver",
                           verified_by="none (recorded digest)")
    mislabelled = cached(node.cache_dir, module(), version="8.3.0+driver")  # its ELF says 8.0.0+driver
    result = node.run("publish", "--all", "--repo", registry.oci_url(repository), "--verify", "strict",
                      "--output", "json")
    assert result.returncode == 4, result.stderr  # two were refused; the others are published all the same
    assert result.stdout, result.stderr
    document = json.loads(result.stdout)
    assert sorted(entry["path"] for entry in document["published"]) == sorted(drivers.values())
    skipped = {entry["path"]: entry for entry in document["skipped"]}
    assert set(skipped) == {notes, only_recorded, mislabelled}
    assert not skipped[notes]["refused"] and skipped[only_recorded]["refused"] and skipped[mislabelled]["refused"]
    assert "publishing requires" in skipped[only_recorded]["reason"]
    assert "driver version '8.0.0+driver', not '8.3.0+driver'" in skipped[mislabelled]["reason"]
    assert "2 of 5 drivers" in result.stderr
    for (version, name), path in drivers.items():
        status, raw = manifest_at(registry, repository, tag_for("falco", version, "x86_64", name))
        assert status == 200, (version, name)
        assert json.loads(raw)["layers"][0]["digest"] == f"sha256:{sha256(Path(path).read_bytes())}"
    for version in ("8.2.0+driver", "8.3.0+driver"):
        assert manifest_at(registry, repository, tag_for("falco", version, "x86_64", FILENAME))[0] == 404


def test_a_mirror_is_published_only_as_far_as_its_checksums_vouch_for_it(registry, node, tmp_path):
    repository = registry.new_repository()
    vouched, unvouched, lying = module(), module("6.8.0-80-generic"), module("6.8.0-81-generic")
    names = [FILENAME, "falco_ubuntu-generic_6.8.0-80-generic_80.ko", "falco_ubuntu-generic_6.8.0-81-generic_81.ko"]
    mirror = mirror_with(tmp_path / "mirror", {
        names[0]: (vouched, f"{sha256(vouched)}  {names[0]}\n"),
        names[1]: (unvouched, None),
        names[2]: (lying, f"{sha256(vouched)}  {names[2]}\n"),
    })
    tags = [tag_for("falco", DEFAULT_VERSION, "x86_64", name) for name in names]
    strict = node.run("publish", "--from-mirror", str(mirror), "--repo", registry.oci_url(repository), "--verify",
                      "strict", "--output", "json")
    assert strict.returncode == 4, strict.stderr
    document = json.loads(strict.stdout)
    assert [entry["file_name"] for entry in document["published"]] == [names[0]]
    assert document["published"][0]["verified_by"] == "sha256-sidecar"
    reasons = {Path(entry["path"]).name: entry["reason"] for entry in document["skipped"]}
    assert "publishing requires" in reasons[names[1]] and "checksum mismatch" in reasons[names[2]]
    assert [manifest_at(registry, repository, tag)[0] for tag in tags] == [200, 404, 404]

    # A SHA256SUMS beside them vouches for the second; the sidecar that lies still stops the third.
    (mirror / DEFAULT_VERSION / "x86_64" / "SHA256SUMS").write_text(f"{sha256(unvouched)}  {names[1]}\n")
    again = node.run("publish", "--from-mirror", str(mirror), "--repo", registry.oci_url(repository), "--verify",
                     "strict", "--output", "json")
    assert again.returncode == 4, again.stderr
    statuses = {entry["file_name"]: (entry["status"], entry["verified_by"])
                for entry in json.loads(again.stdout)["published"]}
    assert statuses == {names[0]: ("unchanged", "sha256-sidecar"), names[1]: ("pushed", "sha256sums")}
    (mirror / DEFAULT_VERSION / "x86_64" / f"{names[2]}.sha256").unlink()
    (mirror / DEFAULT_VERSION / "x86_64" / names[2]).unlink()
    clean = node.run("publish", "--from-mirror", str(mirror), "--repo", registry.oci_url(repository), "--verify",
                     "strict")
    assert clean.returncode == 0, clean.stderr
    assert [line.split()[0] for line in clean.stdout.splitlines()] == ["unchanged", "unchanged"]


def test_a_mirror_under_verify_key_needs_each_files_signature(registry, node, keys, tmp_path):
    repository = registry.new_repository()
    signed, unsigned = module(), module("6.8.0-80-generic")
    names = [FILENAME, "falco_ubuntu-generic_6.8.0-80-generic_80.ko"]
    mirror = mirror_with(tmp_path / "mirror", {names[0]: (signed, None), names[1]: (unsigned, None)})
    place = mirror / DEFAULT_VERSION / "x86_64"
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(keys["builder"]), str(place / names[0])],
                               check=True, capture_output=True, timeout=60).stdout
    (place / f"{names[0]}.sig").write_bytes(base64.b64encode(signature))
    result = node.run("publish", "--from-mirror", str(mirror), "--repo", registry.oci_url(repository),
                      "--verify-key", str(keys["builder"].with_suffix(".pub")), "--output", "json")
    assert result.returncode == 4, result.stderr
    document = json.loads(result.stdout)
    assert [(entry["file_name"], bool(entry["signed_by"])) for entry in document["published"]] == [(names[0], True)]
    assert "no valid signature" in document["skipped"][0]["reason"]


# -- other tools read what publish pushes --------------------------------------------------------------------------

def test_skopeo_reads_and_copies_what_publish_pushes(registry, node, reader, tmp_path):
    repository = registry.new_repository()
    body = module()
    cached(node.cache_dir, body)
    assert node.run("publish", "--repo", registry.oci_url(repository)).returncode == 0
    source = f"docker://{registry.host}/{repository}:{TAG}"

    def skopeo(*args):
        result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    manifest = json.loads(skopeo("inspect", "--raw", *registry.skopeo_args(), source))
    assert manifest["artifactType"] == "application/vnd.falco-driver-loader.driver.v1"
    assert [(layer["mediaType"], layer["annotations"]["org.opencontainers.image.title"])
            for layer in manifest["layers"]] == [(LAYER_TYPES["kmod"], FILENAME)]
    # skopeo 1.9's plain `inspect` describes container images only; `--config --raw` reads an artifact's config.
    config = json.loads(skopeo("inspect", "--config", "--raw", *registry.skopeo_args(), source))
    assert config["fileName"] == FILENAME and config["apiVersion"] == "8.0.0"

    # Copied by another tool, to a layout on disk and to another repository, it is still the same driver.
    layout = tmp_path / "layout"
    skopeo("copy", *registry.skopeo_args("src-"), source, f"oci:{layout}:driver")
    assert (layout / "blobs" / "sha256" / sha256(body)).read_bytes() == body
    copy = registry.new_repository("copies")
    skopeo("copy", *registry.skopeo_args("src-"), *registry.skopeo_args("dest-"), source,
           f"docker://{registry.host}/{copy}:{TAG}")
    pulled = reader.run("download", "--repo", registry.oci_url(copy), "--verify", "strict", "--output", "json")
    assert pulled.returncode == 0, pulled.stderr
    assert Path(json.loads(pulled.stdout)["path"]).read_bytes() == body


# -- credentials ---------------------------------------------------------------------------------------------------

def test_an_auth_registry_with_an_auth_file_and_nothing_secret_printed(auth_registry, node, reader, tmp_path):
    repository = auth_registry.new_repository()
    cached(node.cache_dir, module())
    anonymous = node.run("publish", "--repo", auth_registry.oci_url(repository))
    assert anonymous.returncode == 1, anonymous.stderr
    assert "requires credentials" in anonymous.stderr
    wrong = node.run("publish", "--repo", auth_registry.oci_url(repository), "--registry-username",
                     auth_registry.username, env={"FALCOCTL_DRIVER_REGISTRY_PASSWORD": "wrong-Secret-value"})
    assert wrong.returncode == 1 and "refused the credentials" in wrong.stderr
    assert "wrong-Secret-value" not in wrong.stdout + wrong.stderr
    auth = auth_registry.auth_file(tmp_path / "docker")
    encoded = json.loads(auth.read_text())["auths"][auth_registry.host]["auth"]
    published = node.run("publish", "--repo", auth_registry.oci_url(repository), "--registry-auth-file", str(auth),
                         "--log-level", "debug", "--output", "json")
    assert published.returncode == 0, published.stderr
    for secret in (auth_registry.password, encoded):
        assert secret not in published.stdout + published.stderr
    assert json.loads(published.stdout)["published"][0]["status"] == "pushed"
    pulled = reader.run("download", "--repo", auth_registry.oci_url(repository), "--registry-auth-file", str(auth))
    assert pulled.returncode == 0, pulled.stderr


def test_a_token_registry_grants_the_push(token_registry, node):
    repository = token_registry.new_repository()
    cached(node.cache_dir, module())
    published = node.run("publish", "--repo", token_registry.oci_url(repository), "--registry-username",
                         token_registry.username, "--log-level", "debug",
                         env={"FALCOCTL_DRIVER_REGISTRY_PASSWORD": token_registry.password})
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("pushed ")
    assert token_registry.password not in published.stdout + published.stderr
    assert manifest_at(token_registry, repository, TAG)[0] == 200


# -- build --publish and install --publish -------------------------------------------------------------------------

@pytest.fixture
def probe_sources(node):
    """Driver sources under the node's host root whose bpf/ Makefile "builds" a probe look-alike for RELEASE (the
    build runs the real make, with clang and llc on PATH), and the headers directory the build looks for."""
    sources = node.root / "usr" / "src" / f"falco-{DEFAULT_VERSION}" / "bpf"
    sources.mkdir(parents=True)
    (node.root / "lib" / "modules" / RELEASE / "build").mkdir(parents=True)
    prebuilt = make_bpf_probe(node.directory, kernel_version=RELEASE, filename="prebuilt.o")
    (sources / "Makefile").write_text(f"all:\n\tcp {prebuilt} probe.o\n")
    return prebuilt.read_bytes()


def test_build_publish_pushes_the_build_signed_and_a_reader_pulls_it(registry, node, reader, probe_sources, keys):
    repository = registry.new_repository()
    built = node.run("build", "--publish", registry.oci_url(repository), "--sign-key", str(keys["builder"]),
                     kind="ebpf")
    assert built.returncode == 0, built.stderr
    path = built.stdout.strip()
    assert Path(path).name == PROBE and Path(path).read_bytes() == probe_sources
    assert "published" in built.stderr and "signed" in built.stderr
    pulled = reader.run("download", "--repo", registry.oci_url(repository), "--verify-key",
                        str(keys["builder"].with_suffix(".pub")), "--output", "json", kind="ebpf")
    assert pulled.returncode == 0, pulled.stderr
    assert Path(json.loads(pulled.stdout)["path"]).read_bytes() == probe_sources


def test_build_publish_fails_the_job_when_the_tag_holds_another_driver(registry, node, probe_sources):
    repository = registry.new_repository()
    push_driver(registry, repository, b"\x7fELF another probe", PROBE, kind="ebpf",
                tag=tag_for("falco", DEFAULT_VERSION, "x86_64", PROBE))
    built = node.run("build", "--publish", registry.oci_url(repository), "--output", "json", kind="ebpf")
    assert built.returncode == 1, built.stderr
    assert "already holds manifest" in built.stderr and "--force" in built.stderr


def test_install_publish_pushes_what_it_built_and_a_failed_push_does_not_undo_the_install(registry, node,
                                                                                           probe_sources, tmp_path):
    repository = registry.new_repository()
    falco = ["--falco-config-dir", str(tmp_path / "falco"), "--no-download"]
    installed = node.run("install", *falco, "--publish", registry.oci_url(repository), "--output", "json",
                         kind="ebpf")
    assert installed.returncode == 0, installed.stderr
    document = json.loads(installed.stdout)
    assert document["source"] == "build" and document["published"]["status"] == "pushed"
    tag = tag_for("falco", DEFAULT_VERSION, "x86_64", PROBE)
    status, raw = manifest_at(registry, repository, tag)
    assert status == 200 and json.loads(raw)["layers"][0]["digest"] == f"sha256:{sha256(probe_sources)}"

    # Another run reuses its own build from the cache and publishes it too (here: unchanged); a registry that
    # cannot be reached is a warning, and the probe stays in place.
    again = node.run("install", *falco, "--publish", registry.oci_url(repository), "--output", "json", kind="ebpf")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["published"]["status"] == "unchanged"
    unreachable = node.run("install", *falco, "--publish", "oci://127.0.0.1:9/falco/drivers", "--http-retries", "0",
                           kind="ebpf")
    assert unreachable.returncode == 0, unreachable.stderr
    assert "the driver is installed, but publishing it to oci://127.0.0.1:9/falco/drivers failed" in \
        unreachable.stderr
    assert unreachable.stdout.strip() == f"FALCO_BPF_PROBE={node.cache_dir / 'falco-bpf.o'}"
    assert (node.cache_dir / "falco-bpf.o").resolve().read_bytes() == probe_sources


def test_install_publish_leaves_a_downloaded_driver_alone(registry, node, tmp_path):
    repository = registry.new_repository()
    probe = make_bpf_probe(tmp_path, kernel_version=RELEASE, filename=PROBE)
    mirror = mirror_with(tmp_path / "mirror", {PROBE: (probe.read_bytes(), None)})
    installed = node.run("install", "--falco-config-dir", str(tmp_path / "falco"), "--no-compile", "--repo",
                         f"file://{mirror}", "--publish", registry.oci_url(repository), "--output", "json",
                         kind="ebpf")
    assert installed.returncode == 0, installed.stderr
    assert json.loads(installed.stdout)["published"] is None
    assert "not built on this node" in installed.stderr
    assert manifest_at(registry, repository, tag_for("falco", DEFAULT_VERSION, "x86_64", PROBE))[0] == 404


# -- usage ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "args", "says"), [
    ("publish", ("--repo", "https://download.example/driver"), "needs an oci:// repository"),
    ("publish", ("--repo", "oci://127.0.0.1:9/a", "--repo", "oci://127.0.0.1:9/b"), "exactly one"),
    ("publish", ("--repo", "oci://127.0.0.1:9/a@sha256:" + "0" * 64), "pins a manifest digest"),
    ("publish", ("--repo", "oci://127.0.0.1:9/a", "--all", "--from-mirror", "/tmp"), "two different sources"),
    ("build", ("--publish", "https://download.example/driver"), "expects an oci:// repository"),
    ("install", ("--sign-key", "/nonexistent.pem"), "give --publish"),
    ("build", ("--publish", "oci://127.0.0.1:9/a", "--sign-key", "/nonexistent.pem"), "private key"),
])
def test_usage_errors_stop_before_anything_is_built_or_pushed(node, command, args, says):
    result = node.run(command, *args, kind="ebpf")
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert not node.cache_dir.exists() or not any(node.cache_dir.rglob("*.o"))


def test_publish_without_the_driver_in_the_cache_says_to_download_or_build_it(node):
    result = node.run("publish", "--repo", "oci://127.0.0.1:9/falco/drivers")
    assert result.returncode == 3, result.stderr
    assert f"{DEFAULT_VERSION}/x86_64/{FILENAME}" in result.stderr and "download" in result.stderr


def test_the_dry_run_says_what_install_would_publish(node, tmp_path):
    result = node.run("install", "--dry-run", "--falco-config-dir", str(tmp_path / "falco"), "--publish",
                      "oci://registry.example/falco/drivers", kind="ebpf")
    assert result.returncode == 0, result.stderr
    assert "would: if the driver was built here, push it to oci://registry.example/falco/drivers" in result.stdout

