"""Publishing drivers to an OCI registry, laid out as docs/oci-layout.md says: one verified driver file becomes a
config blob (what the file is), a layer blob (the file, byte for byte) and a manifest at the layout's tag, and with
a signing key a cosign signature at `sha256-<manifest hex>.sig` in the same repository.

Where the files come from:
- the cache (`publish`, `publish --all`, `build --publish`, `install --publish`): `cache_driver` and `cache_drivers`
  re-hash each entry (ArtifactCache.lookup) and ask the acquisition policy, with the entry's verification record,
  the operator's pins and the required signer, whether it may be used, exactly as `install` would: nothing the
  loader would refuse to load is pushed;
- a mirror directory `<dir>/<version>/<arch>/<file>` (`publish --from-mirror`): `mirror_drivers` checks each file
  against its pin, its `<file>.sha256` sidecar or its directory's `SHA256SUMS` (and, with `--verify-key`, its
  detached `<file>.sig`), then asks the same policy: `--verify strict` refuses a file nothing vouches for.

Then `Publisher.publish` reads the file once, checks that its bytes still hash to the digest the policy accepted and
that its ELF is the driver its name and place say (kind, arch, driver version, module name), and pushes the bytes it
read. It is idempotent: a tag that already holds the same manifest digest is left alone ("unchanged", no manifest is
written); a tag holding another digest is refused (exit 1, naming both) unless `force`. A signature is added only
when no valid signature by the same key for the same manifest is there yet; the other signatures at the tag are
kept.

Each artifact gets its own session, so that a long `--all` is not cut short by one run's network budget; the token
challenge is carried over, so that each push costs no extra round trip for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from typing import TYPE_CHECKING, Callable, Iterator, List, Mapping, Optional, Tuple, Union
from urllib.parse import quote, unquote, urlsplit

from driver_loader.artifacts import signature
from driver_loader.core.driver_types import DriverType
from driver_loader.core.errors import HttpFailure, LoaderError, NoDriverError, UsageError, VerificationError
from driver_loader.core.naming import artifact_filename, unsafe_reason
from driver_loader.core.oci import (
    MANIFEST_MEDIA_TYPE,
    MAX_DETACHED_SIGNATURE_BYTES,
    MAX_PAYLOAD_BYTES,
    DriverConfig,
    OciLayoutError,
    OciRepository,
    artifact_tag,
    build_manifest,
    build_signature_manifest,
    digest_of,
    is_oci_reference,
    parse_detached_signature,
    parse_oci_repository,
    parse_signature_manifest,
    parse_simple_signing_payload,
    signature_tag,
    simple_signing_payload,
)
from driver_loader.core.policy import ChecksumRecord, Evidence, publish_decision
from driver_loader.core.settings import Settings
from driver_loader.output.log import get_logger
from driver_loader.pipeline.verify import open_artifact, pins, read_artifact
from driver_loader.system.files import UnreadableFile, read_regular_file

if TYPE_CHECKING:
    from driver_loader.artifacts.cache import ArtifactCache
    from driver_loader.artifacts.signature import PrivateKey
    from driver_loader.core.distros.base import Naming
    from driver_loader.core.plan import Plan
    from driver_loader.net.http import LoaderSession
    from driver_loader.net.oci import Challenge, RegistryClient

log = get_logger(__name__)

# Statuses of a manifest or a signature after publish.
PUSHED = "pushed"
UNCHANGED = "unchanged"
REPLACED = "replaced"

SIGN_KEY_PASSWORD_VARIABLES = ("FALCOCTL_DRIVER_SIGN_KEY_PASSWORD", "COSIGN_PASSWORD")
MAX_MIRROR_FILES = 100_000  # files looked at in a mirror directory; a driver mirror holds thousands
MIRROR_DOCUMENT_LIMIT = 32 * 1024 * 1024  # a SHA256SUMS for every driver of a version is a few MiB
SIGNATURE_FILE_SUFFIX = ".sig"
_EXTENSIONS = {DriverType.KMOD.extension: DriverType.KMOD.value, DriverType.EBPF.extension: DriverType.EBPF.value}
_ARCHES = ("x86_64", "aarch64")
_FORCE_HINT = "pass --force to replace it, if this artifact is the one the tag should hold"


class TagConflict(LoaderError):
    """The tag already holds another manifest (or the signature tag something that is not a signature): left alone,
    exit 1, unless forced."""


# -- what is published -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DriverFile:
    """One driver file to publish: where it is, which driver it is (from its place and name, checked against its
    ELF before anything is pushed), and what vouches for its bytes (`record`: the digest the policy accepted)."""

    path: str
    driver_name: str
    driver_version: str
    arch: str
    target: str
    kernel_release: str
    kernel_version: str
    kind: str  # "kmod" or "ebpf"
    record: ChecksumRecord

    @property
    def file_name(self) -> str:
        return os.path.basename(self.path)

    @property
    def sha256(self) -> str:
        return self.record.sha256


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A file that was not published, and why. `error` is set when it was refused (it counts against the exit
    status); None when it is simply not a driver (a note)."""

    path: str
    reason: str
    error: Optional[LoaderError] = None

    def to_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason, "refused": self.error is not None}


@dataclasses.dataclass(frozen=True)
class SignatureOutcome:
    key_id: str
    tag: str
    status: str  # PUSHED or UNCHANGED


@dataclasses.dataclass(frozen=True)
class Published:
    """What one publish did: the manifest at `tag` of `repository` is `manifest_digest` (`status`: pushed, unchanged
    or replaced), and the signature, when a key was given."""

    driver: DriverFile
    repository: OciRepository
    tag: str
    manifest_digest: str
    layer_digest: str
    config_digest: str
    size: int
    status: str
    signature: Optional[SignatureOutcome] = None

    @property
    def reference(self) -> str:
        """`oci://host/path:tag`: what a reader pulls."""
        return f"{self.repository.display}:{self.tag}"

    def line(self) -> str:
        """One line for stdout: status, reference and manifest digest, and the signature."""
        text = f"{self.status} {self.reference}@{self.manifest_digest} ({self.driver.file_name})"
        if self.signature is not None:
            text += f" signature by key {self.signature.key_id}: {self.signature.status}"
        return text

    def to_dict(self) -> dict:
        driver = self.driver
        return {
            "status": self.status,
            "reference": self.reference,
            "repository": self.repository.display,
            "tag": self.tag,
            "manifest_digest": self.manifest_digest,
            "layer_digest": self.layer_digest,
            "config_digest": self.config_digest,
            "size": self.size,
            "path": driver.path,
            "file_name": driver.file_name,
            "driver_name": driver.driver_name,
            "driver_version": driver.driver_version,
            "arch": driver.arch,
            "kind": driver.kind,
            "target": driver.target,
            "kernel_release": driver.kernel_release,
            "kernel_version": driver.kernel_version,
            "sha256": driver.sha256,
            "verified_by": str(driver.record.evidence),
            "signed_by": driver.record.signed_by or None,
            "signature": None if self.signature is None else {
                "key_id": self.signature.key_id, "tag": self.signature.tag, "status": self.signature.status},
        }


# -- the target --------------------------------------------------------------------------------------------------


def publish_target(repos: Tuple[str, ...], *, option: str = "--repo") -> OciRepository:
    """The one `oci://` repository among `repos` (the resolved --repo list: flags, else the environment, else the
    config file). Other schemes in the list are where drivers are pulled from, and are ignored here. None, or more
    than one, is a usage error: a publish goes to exactly one registry."""
    found = [repo for repo in repos if is_oci_reference(repo)]
    if not found:
        raise UsageError(f"publish needs an oci:// repository to push to; {option} names none",
                         hint=f"give {option} oci://REGISTRY/REPOSITORY")
    if len(found) > 1:
        raise UsageError(f"{option} names {len(found)} oci:// repositories; publish pushes to exactly one",
                         hint="give one oci:// --repo per publish run (https:// and file:// ones are ignored here)")
    return parse_target(found[0], option=option)


def parse_target(text: str, *, option: str = "--publish") -> OciRepository:
    """An `oci://` repository to push to: a valid reference without a pinned digest (pushes go by tag)."""
    if not is_oci_reference(text):
        raise UsageError(f"{option} expects an oci:// repository, got a {text.partition(':')[0] or 'bare'} one",
                         hint=f"give {option} oci://REGISTRY/REPOSITORY")
    repo = parse_oci_repository(text)
    if repo.digest:
        raise UsageError(f"{option} {repo.display} pins a manifest digest; publish pushes by tag",
                         hint=f"give {option} oci://{repo.docker_reference} without the @sha256:... part")
    return repo


def load_sign_key(path: str, env: Mapping[str, str]) -> PrivateKey:
    """The signing key for `--sign-key`: PEM PKCS#8 or SEC1 (encrypted or not) or cosign.key, opened with
    FALCOCTL_DRIVER_SIGN_KEY_PASSWORD, else COSIGN_PASSWORD (the output redacts both). UsageError (exit 2) when it
    cannot be used."""
    password = next((env[name] for name in SIGN_KEY_PASSWORD_VARIABLES if env.get(name) is not None), None)
    if password:
        from driver_loader.output import boundary

        boundary.remember([password])
    return signature.load_private_key(path, password.encode("utf-8") if password is not None else None)


def publish_request(publish_to: Optional[str], sign_key: Optional[str],
                    env: Mapping[str, str]) -> Tuple[Optional[OciRepository], Optional[PrivateKey]]:
    """`--publish` and `--sign-key` of build and install, checked before anything is built or loaded: the
    repository and the key, or (None, None) without --publish. --sign-key alone is a usage error."""
    if not publish_to:
        if sign_key:
            raise UsageError("--sign-key signs what --publish pushes; give --publish oci://... too",
                             hint="or sign later with `falco-driver-loader publish --sign-key`")
        return None, None
    return parse_target(publish_to), load_sign_key(sign_key, env) if sign_key else None


# -- which files ---------------------------------------------------------------------------------------------------


class NotADriver(Exception):
    """A file whose place or name is not a driver's (`<version>/<arch>/<name>_<target>_<release>_<kversion>.ko|.o`)."""


def parse_driver_file_name(file_name: str, driver_name: str) -> Tuple[str, str, str, str]:
    """(target, kernel release, kernel version, kind) of `<driver name>_<target>_<release>_<kversion>.<ko|o>`.
    The target and the kernel release are the first two fields after the driver name, the kernel version the rest:
    distro targets and kernel releases carry no `_`, some kernel versions do (`1_1.19.0-aws-k8s`). Raises
    NotADriver."""
    base, dot, extension = file_name.rpartition(".")
    kind = _EXTENSIONS.get(f".{extension}") if dot else None
    if kind is None:
        raise NotADriver(f"{file_name!r} is not a .ko kernel module or a .o eBPF probe")
    prefix = f"{driver_name}_"
    if not base.startswith(prefix):
        raise NotADriver(f"{file_name!r} is not a {driver_name} driver (its name does not start with {prefix!r}; "
                         "--name sets the driver name)")
    fields = base[len(prefix):].split("_")
    if len(fields) < 3 or not all(fields[:2]):
        raise NotADriver(f"{file_name!r} is not named <name>_<target>_<kernel release>_<kernel version>")
    target, release, kversion = fields[0], fields[1], "_".join(fields[2:])
    for label, value in (("target", target), ("kernel release", release), ("kernel version", kversion),
                         ("file name", file_name)):
        reason = unsafe_reason(label, value)
        if reason is not None:
            raise NotADriver(reason)
    return target, release, kversion, kind


def _place(relative: str) -> Tuple[str, str, str]:
    """(driver version, arch, file name) of `<version>/<arch>/<file>`; NotADriver otherwise."""
    parts = relative.split(os.sep)
    if len(parts) != 3:
        raise NotADriver(f"{relative} is not at <version>/<arch>/<file>")
    version, arch, file_name = parts
    reason = unsafe_reason("driver version", version)
    if reason is not None:
        raise NotADriver(reason)
    if arch not in _ARCHES:
        raise NotADriver(f"{relative}: {arch!r} is not an architecture drivers are published for "
                         f"({', '.join(_ARCHES)})")
    return version, arch, file_name


def _driver_file(path: str, relative: str, driver_name: str, record: ChecksumRecord,
                 naming: Optional[Naming] = None) -> DriverFile:
    version, arch, file_name = _place(relative)
    target, release, kversion, kind = parse_driver_file_name(file_name, driver_name)
    if naming is not None and artifact_filename(driver_name, naming.target_id, naming.release, naming.version,
                                                f".{file_name.rpartition('.')[2]}") == file_name:
        target, release, kversion = naming.target_id, naming.release, naming.version  # the plan's exact values
    return DriverFile(path=path, driver_name=driver_name, driver_version=version, arch=arch, target=target,
                      kernel_release=release, kernel_version=kversion, kind=kind, record=record)


def _policy_refusal(driver: DriverFile, settings: Settings) -> Optional[VerificationError]:
    """The acquisition policy's verdict on the driver's checksum record, as install would ask it: None when it may be
    used (and so published)."""
    location = f"{driver.driver_version}/{driver.arch}/{driver.file_name}"
    decision = publish_decision(driver.record, pin=pins(settings).pin(location),
                                signer=signature.required_signer(settings))
    if not decision.usable:
        return VerificationError(f"{driver.path} is not published: {decision.reason}", hint=decision.hint)
    return None


def cache_driver(cache: ArtifactCache, path: str, settings: Settings,
                 naming: Optional[Naming] = None) -> DriverFile:
    """The cache entry at `path` as a DriverFile, re-hashed (a tampered entry is discarded) and accepted by the
    acquisition policy. NoDriverError (exit 3) when there is no such entry; VerificationError (exit 4) when the
    policy refuses it; NotADriver when its place or name is not a driver's."""
    entry = cache.lookup(path)
    if entry is None:
        raise NoDriverError(f"{path} is not in the cache (or no longer matches its recorded digest)",
                            hint="run `falco-driver-loader download` or `build` with the same options first")
    driver = _driver_file(entry.path, os.path.relpath(entry.path, cache.root), settings.driver_name, entry.record,
                          naming)
    refusal = _policy_refusal(driver, settings)
    if refusal is not None:
        raise refusal
    return driver


def plan_cache_driver(cache: ArtifactCache, plan: Plan, settings: Settings) -> DriverFile:
    """The cache entry `download` (or `build`) would have put there for this plan: the first candidate found, for
    the plan's driver version, else (with the version fallback) for the highest other version of the compatible
    range the cache holds. NoDriverError (exit 3) naming the paths looked at when there is none."""
    found = [(c.cache_path, c.filename) for c in plan.candidates]
    if settings.version_fallback:
        versions = _cached_versions(cache.root, plan.arch, plan.filenames)
        for version in plan.compatible.highest_first(v for v in versions if v != plan.driver_version):
            found += [(c.cache_path, c.filename) for c in plan.candidates_for_version(version)]
    refused: List[LoaderError] = []
    for path, file_name in found:
        naming = plan.target.naming if file_name in _names(plan, plan.target.naming) else plan.target.legacy
        try:
            return cache_driver(cache, path, settings, naming)
        except NotADriver as odd:
            refused.append(UsageError(f"cannot publish {path}: {odd}"))
        except NoDriverError:
            continue
        except VerificationError as refusal:  # install would go on to the next candidate too
            refused.append(refusal)
    if refused:
        raise refused[0]
    raise NoDriverError(
        f"no {plan.driver_type} artifact for kernel {plan.kernel_release} ({plan.driver_version}, {plan.arch}) is in "
        f"the cache {cache.root}", tried=[f"cache: {path}" for path, _ in found] or list(plan.refusals),
        hint="run `falco-driver-loader download` or `build` with the same options first, then publish")


def _names(plan: Plan, naming: Optional[Naming]) -> Tuple[str, ...]:
    if naming is None:
        return ()
    return (artifact_filename(plan.settings.driver_name, naming.target_id, naming.release, naming.version,
                              plan.driver_type.extension),)


def _cached_versions(root: str, arch: str, file_names: Tuple[str, ...]) -> List[str]:
    """Driver versions under the cache root that hold one of these files for this arch."""
    try:
        versions = sorted(os.listdir(root))
    except OSError:
        return []
    return [v for v in versions if unsafe_reason("driver version", v) is None
            and any(os.path.isfile(os.path.join(root, v, arch, name)) for name in file_names)]


def cache_drivers(cache: ArtifactCache, settings: Settings) -> Iterator[Union[DriverFile, Skipped]]:
    """Every entry of the cache (`<cache>/<version>/<arch>/<file>`), each re-hashed and judged by the policy: a
    DriverFile to publish, or Skipped saying why not."""
    for entry in cache.entries():
        try:
            yield cache_driver(cache, entry.path, settings)
        except NotADriver as odd:
            yield Skipped(entry.path, str(odd))
        except LoaderError as refused:
            yield Skipped(entry.path, refused.message, refused)


def mirror_drivers(directory: str, settings: Settings) -> Iterator[Union[DriverFile, Skipped]]:
    """Every file of a mirror directory `<dir>/<version>/<arch>/<file>` (its checksum documents and signatures
    aside), checked against what vouches for it: the operator's pin, the `<file>.sha256` sidecar or the directory's
    SHA256SUMS, then the acquisition policy (`--verify strict` refuses a file none of these vouches for; with
    `--verify-key`, a valid `<file>.sig` by that key is required). Symbolic links are not followed."""
    root = os.path.abspath(directory)
    if not os.path.isdir(root) or os.path.islink(root):
        raise UsageError(f"--from-mirror {directory}: not a directory",
                         hint="give the mirror's root, the directory that holds <version>/<arch>/<file>")
    from driver_loader.net.checksums import SIDECAR_SUFFIX, SUMS_FILENAME, ChecksumResolver

    resolver = ChecksumResolver(settings.verify, _mirror_document)
    key = signature.required_key(settings)
    for path in _mirror_files(root):
        name = os.path.basename(path)
        if name == SUMS_FILENAME or name.endswith((SIDECAR_SUFFIX, SIGNATURE_FILE_SUFFIX)):
            continue
        relative = os.path.relpath(path, root)
        try:
            version, arch, file_name = _place(relative)
            parse_driver_file_name(file_name, settings.driver_name)
            record = _mirror_record(path, resolver, settings, key)
            driver = _driver_file(path, relative, settings.driver_name, record)
            refusal = _policy_refusal(driver, settings)
            if refusal is not None:
                raise refusal
            yield driver
        except NotADriver as odd:
            yield Skipped(path, str(odd))
        except LoaderError as refused:
            yield Skipped(path, refused.message, refused)


def _mirror_files(root: str) -> Iterator[str]:
    """Regular files exactly three levels below `root`, in sorted order, without following symbolic links; at most
    MAX_MIRROR_FILES entries are looked at."""
    seen = 0

    def entries(directory: str) -> List[os.DirEntry]:
        nonlocal seen
        try:
            with os.scandir(directory) as listing:
                found = []
                for entry in listing:
                    seen += 1
                    if seen > MAX_MIRROR_FILES:
                        raise UsageError(f"--from-mirror {root} holds more than {MAX_MIRROR_FILES} entries",
                                         hint="publish it a version directory at a time")
                    found.append(entry)
        except OSError as exc:
            raise LoaderError(f"cannot read the mirror directory {directory}: {exc.strerror or exc}") from None
        return sorted(found, key=lambda e: e.name)

    for version in entries(root):
        if not version.is_dir(follow_symlinks=False):
            continue
        for arch in entries(version.path):
            if not arch.is_dir(follow_symlinks=False):
                continue
            for item in entries(arch.path):
                if item.is_file(follow_symlinks=False):
                    yield item.path


def _mirror_document(url: str) -> Optional[str]:
    """A checksum document beside a mirror file (a file:// URL): its text, or None when there is none."""
    path = unquote(urlsplit(url).path)
    try:
        return read_regular_file(path, MIRROR_DOCUMENT_LIMIT, follow_symlinks=False).decode("utf-8",
                                                                                           errors="replace")
    except UnreadableFile as exc:
        if exc.missing:
            return None
        raise VerificationError(f"checksum document {exc}", hint="make it a regular file, or remove it") from None


def _mirror_record(path: str, resolver, settings: Settings, key) -> ChecksumRecord:
    """How a mirror file's bytes are vouched for: hashed here, compared with the expected digest when there is one
    (a mismatch is a VerificationError), and its detached signature checked when a key is required."""
    sha256 = _hash_file(path)
    url = "file://" + quote(path)
    expectation = resolver.expectation_for(url)
    if expectation is not None:
        if expectation.sha256.lower() != sha256:
            raise VerificationError(f"checksum mismatch for {path}: expected {expectation.sha256.lower()} "
                                    f"({expectation.source}), got {sha256}",
                                    hint="the mirror holds another file than its checksum describes; copy it again")
        evidence = Evidence.parse(expectation.verified_by) or Evidence.RECORDED
        source = expectation.source
    else:
        evidence = Evidence.UNCHECKED if settings.verify.policy == "off" else Evidence.RECORDED
        source = ""
    signed_by = ""
    if key is not None:
        signed_by = _detached_signature(path, sha256, key)
    return ChecksumRecord(sha256, evidence, source, signed_by=signed_by)


def _detached_signature(path: str, sha256: str, key) -> str:
    """The key id when `<path>.sig` is a valid signature by `key` over the file; SignatureError (exit 4) when it is
    not; "" when there is none (the policy then says a signature is required)."""
    sig_path = path + SIGNATURE_FILE_SUFFIX
    try:
        data = read_regular_file(sig_path, MAX_DETACHED_SIGNATURE_BYTES, follow_symlinks=False)
    except UnreadableFile as exc:
        if exc.missing:
            return ""
        raise VerificationError(f"signature {exc}", hint="make it a regular file, or remove it") from None
    try:
        raw = parse_detached_signature(data)
    except OciLayoutError as bad:
        raise signature.SignatureError(key, sha256, missing=False, where=sig_path, detail=bad.reason) from None
    import base64

    if not signature.verify_file_digest(key, sha256, base64.b64encode(raw)):
        raise signature.SignatureError(key, sha256, missing=False, where=sig_path)
    return key.key_id


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise LoaderError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise NotADriver(f"{path} is not a regular file")
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


# -- pushing -------------------------------------------------------------------------------------------------------


def _read_driver(driver: DriverFile) -> bytes:
    """The file's bytes, read once through a descriptor that follows no link, and checked against the digest the
    policy accepted: what is pushed is exactly what was judged."""
    fd = open_artifact(driver.path)
    try:
        data = read_artifact(fd, driver.path, driver.sha256)
    finally:
        os.close(fd)
    return data


def driver_config(driver: DriverFile, data: bytes) -> DriverConfig:
    """The config blob's values: the driver's identity from its place and name, checked against what its ELF says
    (kind, arch, driver version, and the module name for a kernel module), and its API and schema versions read from
    the ELF. VerificationError (exit 4) when the file is not the driver its name says."""
    from driver_loader.artifacts.elf import inspect_artifact
    from driver_loader.core.artifact_facts import format_triplet

    info = inspect_artifact(data, filename=driver.path)
    problems = []
    if info.kind != driver.kind:
        problems.append(f"it is a {info.kind} file, but named as a {driver.kind} one")
    if info.kind == DriverType.KMOD.value and info.arch != driver.arch:  # a BPF object names no CPU arch
        problems.append(f"it is built for {info.arch or info.machine}, not {driver.arch}")
    if info.driver_version != driver.driver_version:
        problems.append(f"it says driver version {info.driver_version!r}, not {driver.driver_version!r}")
    module_name = driver.driver_name.replace("-", "_")
    if driver.kind == DriverType.KMOD.value and info.name != module_name:
        problems.append(f"the module calls itself {info.name!r}, not {module_name!r}")
    if problems:
        raise VerificationError(f"{driver.path} is not published: {'; '.join(problems)}",
                                hint="publish the file under the name and version it was built for")
    return DriverConfig(driver_name=driver.driver_name, driver_version=driver.driver_version, kind=driver.kind,
                        arch=driver.arch, target=driver.target, kernel_release=driver.kernel_release,
                        kernel_version=driver.kernel_version, api_version=format_triplet(info.api_version) or "",
                        schema_version=format_triplet(info.schema_version) or "", file_name=driver.file_name,
                        sha256=driver.sha256)


SessionFactory = Callable[[], "LoaderSession"]


class Publisher:
    """Pushes driver files to one repository. `key` signs (cosign's layout) when given; `force` replaces a tag that
    holds another manifest. `session_factory` makes the session for each artifact (the run's HTTP settings)."""

    def __init__(self, settings: Settings, repository: OciRepository, *, key: Optional[PrivateKey] = None,
                 force: bool = False, session_factory: Optional[SessionFactory] = None) -> None:
        if repository.digest:
            raise UsageError(f"cannot publish to {repository.display}: it pins a manifest digest")
        self.settings = settings
        self.repository = repository
        self.key = key
        self.force = force
        self.session_factory = session_factory or self._new_session
        self._challenge: Optional[Challenge] = None

    def _new_session(self) -> LoaderSession:
        from driver_loader.net.http import build_session

        return build_session(self.settings.http, repos=self.settings.repos)

    def _client(self, session: LoaderSession) -> RegistryClient:
        from driver_loader.net.oci_pull import OciPuller

        client = OciPuller(session, self.settings, None).client(self.repository)
        if self._challenge is not None and client.challenge is None:
            client.challenge = self._challenge
        return client

    def publish(self, driver: DriverFile) -> Published:
        """Push one driver file (and its signature); see the module's docstring. Raises LoaderError: exit 1 for a
        registry failure or a tag that holds another manifest, 4 for a file that is not what it claims."""
        data = _read_driver(driver)
        config = driver_config(driver, data).to_bytes()
        layer_digest = f"sha256:{driver.sha256}"
        manifest = build_manifest(config, layer_digest, len(data), driver.file_name, driver.kind)
        manifest_digest = digest_of(manifest)
        tag = artifact_tag(driver.driver_name, driver.driver_version, driver.arch, driver.file_name)
        where = f"{self.repository.display}:{tag}"
        session = self.session_factory()
        try:
            client = self._client(session)
            existing = client.manifest_digest(tag)
            if existing == manifest_digest:
                status = UNCHANGED
                log.info("the registry already holds this artifact; left it alone", reference=where,
                         manifest=manifest_digest)
            else:
                if existing is not None and not self.force:
                    raise TagConflict(
                        f"{where} already holds manifest {existing}, not {manifest_digest} of {driver.path}; "
                        "left it alone", hint=_FORCE_HINT)
                client.push_blob(layer_digest, data, len(data))
                client.push_blob(digest_of(config), config, len(config))
                client.push_manifest(tag, manifest, MANIFEST_MEDIA_TYPE)
                status = REPLACED if existing is not None else PUSHED
                log.info("published", reference=where, manifest=manifest_digest, replaced=existing or None)
            signed = self._sign(client, manifest_digest) if self.key is not None else None
            if client.challenge is not None:
                self._challenge = client.challenge
        finally:
            session.close()
        return Published(driver=driver, repository=self.repository, tag=tag, manifest_digest=manifest_digest,
                         layer_digest=layer_digest, config_digest=digest_of(config), size=len(data), status=status,
                         signature=signed)

    def _sign(self, client: RegistryClient, manifest_digest: str) -> SignatureOutcome:
        """A cosign signature over the manifest digest at `sha256-<hex>.sig`, unless a valid one by the same key for
        this digest is there already; the signatures of other keys at the tag are kept."""
        from driver_loader.net.oci import DOCKER_MANIFEST

        key = self.key
        assert key is not None  # noqa: S101 - only called with a key
        tag = signature_tag(manifest_digest)
        where = f"{self.repository.display}:{tag}"
        keep: list = []
        try:
            found = client.get_manifest(tag, accept=(MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST))
        except HttpFailure as failure:
            if not failure.not_found:
                raise
        else:
            try:
                keep = parse_signature_manifest(found.data)
            except OciLayoutError as bad:
                if not self.force:
                    raise TagConflict(f"{where} holds something that is not a cosign signature manifest "
                                      f"({bad.reason}); left it alone", hint=_FORCE_HINT) from None
                log.warning("replacing what the signature tag held: it is not a cosign signature manifest",
                            reference=where, reason=bad.reason)
        for layer in keep:
            payload = client.read_blob(layer.payload_digest, max_size=MAX_PAYLOAD_BYTES)
            if not signature.verify(key.public_key, payload, layer.signature_b64):
                continue
            try:
                vouched = parse_simple_signing_payload(payload)
            except OciLayoutError:
                continue
            if vouched.manifest_digest == manifest_digest:
                log.info("already signed by this key; left the signature alone", reference=where, key=key.key_id)
                return SignatureOutcome(key.key_id, tag, UNCHANGED)
        payload = simple_signing_payload(self.repository.docker_reference, manifest_digest)
        config, manifest = build_signature_manifest(payload, signature.sign(key, payload), keep)
        client.push_blob(digest_of(payload), payload, len(payload))
        client.push_blob(digest_of(config), config, len(config))
        client.push_manifest(tag, manifest, MANIFEST_MEDIA_TYPE)
        log.info("signed", reference=where, key=key.key_id, manifest=manifest_digest, kept=len(keep))
        return SignatureOutcome(key.key_id, tag, PUSHED)


def publish_built(settings: Settings, cache: ArtifactCache, path: str, repository: OciRepository, *,
                  key: Optional[PrivateKey] = None, plan: Optional[Plan] = None,
                  only_local_build: bool = False) -> Optional[Published]:
    """`build --publish` and `install --publish`: push the cache entry at `path` (what the build returned, or what
    install loaded), signed with `key` when given, through the same policy as `publish`. With `only_local_build`
    (install), only an entry built on this node (its record says local-build) is pushed: one that came from a
    repository is published already, and None is returned with a note in the log. Raises LoaderError as
    Publisher.publish does."""
    entry = cache.lookup(path)
    if entry is None:
        raise NoDriverError(f"{path} is not in the cache any more; nothing to publish",
                            hint="build it again with --publish")
    if only_local_build and entry.record.evidence is not Evidence.LOCAL_BUILD:
        log.info("not publishing: the driver was not built on this node (it came from a repository)", path=path,
                 verified_by=str(entry.record.evidence))
        return None
    naming = None
    if plan is not None:
        naming = plan.target.naming if os.path.basename(path) in _names(plan, plan.target.naming) \
            else plan.target.legacy
    try:
        driver = cache_driver(cache, path, settings, naming)
    except NotADriver as odd:
        raise UsageError(f"cannot publish {path}: {odd}") from None
    return Publisher(settings, repository, key=key).publish(driver)
