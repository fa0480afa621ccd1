"""The OCI layout of driver artifacts (layout v1, docs/oci-layout.md): repository references, tags, media types,
the config blob, the driver manifest, and cosign-compatible signature manifests and payloads.

Pure: bytes and strings in, bytes, strings and typed values out. The registry client (net/), the signature
crypto and the pipeline build on this module; nothing here talks to a registry or reads a file.

Everything read from a registry is bounded (size, JSON depth, layer count) and checked strictly; a document
that breaks a rule raises OciLayoutError, a VerificationError (exit 4) with a one-line reason.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import ipaddress
import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from driver_loader.core.errors import UsageError, VerificationError
from driver_loader.core.naming import unsafe_reason
from driver_loader.core.nesting import deeper_than
from driver_loader.core.redaction import redact_url

LAYOUT_VERSION = 1

# -- media types and annotations ---------------------------------------------------------------------------------

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
ARTIFACT_TYPE = "application/vnd.falco-driver-loader.driver.v1"
CONFIG_MEDIA_TYPE = "application/vnd.falco-driver-loader.driver.config.v1+json"
KMOD_LAYER_MEDIA_TYPE = "application/vnd.falco-driver-loader.driver.kmod.v1"
EBPF_LAYER_MEDIA_TYPE = "application/vnd.falco-driver-loader.driver.ebpf.v1"
LAYER_MEDIA_TYPES = {"kmod": KMOD_LAYER_MEDIA_TYPE, "ebpf": EBPF_LAYER_MEDIA_TYPE}
KIND_BY_LAYER_MEDIA_TYPE = {media_type: kind for kind, media_type in LAYER_MEDIA_TYPES.items()}
TITLE_ANNOTATION = "org.opencontainers.image.title"

# cosign (sigstore/cosign pkg/oci/static, pkg/types; specs/SIGNATURE_SPEC.md).
SIGNATURE_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
# What a reader of a signature tag accepts: cosign writes OCI manifests, or Docker ones with
# COSIGN_DOCKER_MEDIA_TYPES=1.
SIGNATURE_MANIFEST_MEDIA_TYPES = (MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE)

# -- bounds ------------------------------------------------------------------------------------------------------

MAX_MANIFEST_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 8
MAX_LAYER_SIZE = 512 * 1024 * 1024  # as artifacts/elf.py's MAX_ARTIFACT_SIZE: no driver file is larger
MAX_SIGNATURE_LAYERS = 16
MAX_SIGNATURE_B64 = 8192  # an ECDSA P-256 DER signature is at most 96 base64 characters; RSA-4096 is 684
MAX_DETACHED_SIGNATURE_BYTES = 16 * 1024
MAX_ANNOTATIONS = 64
MAX_NAME_LENGTH = 255  # host[:port]/path, as Docker's reference grammar and most registries limit it
MAX_TEXT_FIELD = 1024

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", re.ASCII)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*", re.ASCII)
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}", re.ASCII)
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_TAG_START = re.compile(r"[A-Za-z0-9_]")
TAG_READABLE_LENGTH = 107
TAG_HASH_LENGTH = 20
TAG_HASH_DOMAIN = "falco-driver-loader/oci/v1"

_ZERO_TIME = "0001-01-01T00:00:00Z"  # what go-containerregistry writes for cosign's signature image config


class OciLayoutError(VerificationError):
    """A registry document (manifest, config, signature manifest, payload) that breaks layout v1: exit 4."""

    def __init__(self, what: str, reason: str, *, hint: str = "") -> None:
        super().__init__(f"{what}: {reason}", hint=hint)
        self.what = what
        self.reason = reason


_MANIFEST_HINT = ("the tag does not hold a falco-driver-loader layout v1 driver (docs/oci-layout.md); "
                  "republish it with `falco-driver-loader publish`")
_CONFIG_HINT = "republish the artifact with `falco-driver-loader publish` (docs/oci-layout.md, layout v1)"
_SIGNATURE_HINT = "re-sign the artifact with `falco-driver-loader publish --sign-key` or `cosign sign --key`"


def _show(value: Any, limit: int = 80) -> str:
    """A value from a hostile document, quoted on one line and shortened."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- repository references ---------------------------------------------------------------------------------------


def is_oci_reference(text: str) -> bool:
    """Whether a --repo value names an OCI registry (oci://...), whatever its validity."""
    return text[:6].lower() == "oci://"


@dataclasses.dataclass(frozen=True)
class OciRepository:
    """`oci://REGISTRY/REPOSITORY[@sha256:...]`, parsed: registry is host[:port] (host lowercased, IPv6 in
    brackets), repository the lowercase path, digest the pinned manifest digest or None."""

    registry: str
    repository: str
    digest: Optional[str] = None

    @property
    def hostname(self) -> str:
        """The host without port or brackets."""
        if self.registry.startswith("["):
            return self.registry[1:self.registry.index("]")]
        return self.registry.rpartition(":")[0] if ":" in self.registry else self.registry

    @property
    def port(self) -> Optional[int]:
        tail = self.registry[self.registry.index("]") + 1:] if self.registry.startswith("[") else self.registry
        return int(tail.rpartition(":")[2]) if ":" in tail else None

    @property
    def is_loopback(self) -> bool:
        """localhost, 127.0.0.0/8 or ::1: a registry on this machine."""
        return _is_loopback(self.hostname)

    def plain_http_allowed(self, insecure: bool) -> bool:
        """Whether plain http may be spoken to this registry: only with the explicit opt-in or on loopback."""
        return insecure or self.is_loopback

    def base_url(self, plain_http: bool = False) -> str:
        """`https://host[:port]` (or http when the caller decided plain http is allowed and wanted)."""
        return f"{'http' if plain_http else 'https'}://{self.registry}"

    @property
    def docker_reference(self) -> str:
        """`host[:port]/path`, as cosign writes it in a signature payload's docker-reference."""
        return f"{self.registry}/{self.repository}"

    @property
    def display(self) -> str:
        """`oci://host[:port]/path`, with `@sha256:...` when a digest is pinned."""
        pinned = f"@{self.digest}" if self.digest else ""
        return f"oci://{self.docker_reference}{pinned}"

    def __str__(self) -> str:
        return self.display


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _reference_error(text: str, reason: str, hint: str = "", *, shown: str = "") -> UsageError:
    shown = shown or redact_url(text)
    if len(shown) > 300:
        shown = shown[:297] + "..."
    return UsageError(f"invalid OCI repository {shown!r}: {reason}",
                      hint=hint or "write oci://HOST[:PORT]/PATH or oci://HOST[:PORT]/PATH@sha256:<64 hex digits>")


def parse_oci_repository(text: str) -> OciRepository:
    """Parse `oci://HOST[:PORT]/PATH[@sha256:<hex>]` (one trailing '/' is ignored), or raise UsageError (exit 2)
    with a one-line reason. Credentials, query strings, fragments and tags never belong in the reference."""
    if not is_oci_reference(text):
        raise _reference_error(text, "it does not start with oci://")
    rest = text[6:]
    authority, slash, path = rest.partition("/")
    after_at = rest.rpartition("@")[2]
    # userinfo: an '@' in the authority, or one followed by a host and path rather than a digest (a password
    # with a '/' in it); the message then shows nothing before that '@'.
    if "@" in authority or ("@" in rest and "/" in after_at and not after_at.startswith("sha256:")):
        raise _reference_error(text, "credentials never go in the reference",
                               shown=redact_url(f"oci://****@{after_at}"),
                               hint="pass them through the Docker/Podman auth file or the registry credentials "
                                    "setting")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in rest):
        raise _reference_error(text, "it contains whitespace or a control character")
    if "#" in rest:
        raise _reference_error(text, "a fragment (#...) has no meaning in an OCI reference")
    if "?" in rest:
        raise _reference_error(text, "a query string (?...) has no meaning in an OCI reference",
                               hint="pass registry credentials through the auth file or the credentials setting")
    registry = _parse_registry(text, authority)
    if not slash:
        raise _reference_error(text, "it names no repository path after the registry")
    digest: Optional[str] = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not digest.startswith("sha256:"):
            raise _reference_error(text, f"pinned digest {_show(digest)} is not sha256",
                                   hint="pin the manifest as @sha256:<64 lowercase hex digits>")
        if not DIGEST_RE.fullmatch(digest):
            raise _reference_error(text, f"pinned digest {_show(digest)} is not sha256:<64 lowercase hex digits>",
                                   hint="pin the manifest as @sha256:<64 lowercase hex digits>")
    if path.endswith("/"):
        path = path[:-1]
    if not path:
        raise _reference_error(text, "it names no repository path after the registry")
    for component in path.split("/"):
        if ":" in component:
            raise _reference_error(text, f"tags ({_show(component)}) are not written in the reference",
                                   hint="the loader computes each driver's tag; pin one artifact with "
                                        "@sha256:<manifest digest>")
        if not component:
            raise _reference_error(text, "the repository path has an empty component ('//')")
        if not _PATH_COMPONENT.fullmatch(component):
            reason = ("repository path components must be lowercase" if component.lower() != component
                      and _PATH_COMPONENT.fullmatch(component.lower())
                      else f"repository path component {_show(component)} is not "
                           "[a-z0-9]+ joined by '.', '_', '__' or '-'")
            raise _reference_error(text, reason)
    name = f"{registry}/{path}"
    if len(name) > MAX_NAME_LENGTH:
        raise _reference_error(text, f"the name is {len(name)} characters long; registries allow at most "
                                     f"{MAX_NAME_LENGTH}")
    return OciRepository(registry=registry, repository=path, digest=digest)


def artifact_reference(repository: str, driver_name: str, driver_version: str, arch: str, file_name: str) -> str:
    """Where one driver file lives in an `oci://` repository: `oci://HOST/PATH:TAG` with the layout's tag, or the
    repository itself when it pins a manifest digest (`oci://HOST/PATH@sha256:...`). It stands in the candidate's
    list of URLs, beside the https:// and file:// ones."""
    repo = parse_oci_repository(repository)
    if repo.digest:
        return repo.display
    return f"{repo.display}:{artifact_tag(driver_name, driver_version, arch, file_name)}"


def parse_artifact_reference(reference: str) -> Tuple[OciRepository, Optional[str]]:
    """The repository and tag of an artifact_reference (the tag is None when a digest is pinned)."""
    head, _, last = reference.rpartition("/")
    if "@" not in last and ":" in last:
        component, _, tag = last.partition(":")
        if not TAG_RE.fullmatch(tag):
            raise _reference_error(reference, f"tag {_show(tag)} is not a valid tag")
        return parse_oci_repository(f"{head}/{component}"), tag
    return parse_oci_repository(reference), None


def _parse_registry(text: str, authority: str) -> str:
    if not authority:
        raise _reference_error(text, "it names no registry host")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _reference_error(text, "the IPv6 address has no closing ']'")
        host, port_part = authority[1:end], authority[end + 1:]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError(host)
        except ValueError:
            raise _reference_error(text, f"{_show(host)} in brackets is not an IPv6 address") from None
        shown_host = f"[{host.lower()}]"
    else:
        host, colon, port = authority.partition(":")
        port_part = f"{colon}{port}"
        if host.endswith("."):
            host = host[:-1]
        if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
            raise _reference_error(text, f"registry host {_show(host)} is not a host name or an IP address")
        shown_host = host.lower()
    if port_part:
        port = port_part[1:] if port_part.startswith(":") else ""
        if not port_part.startswith(":") or not port.isdigit() or not port.isascii() or len(port) > 5 \
                or not 1 <= int(port) <= 65535:
            raise _reference_error(text, f"registry port {_show(port_part)} is not :1 to :65535")
        return f"{shown_host}:{int(port)}"
    return shown_host


# -- digests and tags --------------------------------------------------------------------------------------------


def digest_of(data: bytes) -> str:
    """`sha256:<hex>` of the bytes, as OCI content addressing writes it."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_digest(value: Any) -> bool:
    return isinstance(value, str) and DIGEST_RE.fullmatch(value) is not None


def artifact_tag(driver_name: str, driver_version: str, arch: str, file_name: str) -> str:
    """The tag of one driver file (layout v1): a readable part (version, arch and file name with everything
    outside [A-Za-z0-9._-] folded to '_', at most 107 characters) and 20 hex digits of a SHA-256 over the
    exact four values, so that values the readable part folds or truncates alike still get distinct tags.
    Raises UsageError when a value is empty or unsafe (the same rule as file names and URLs)."""
    for label, value in (("driver name", driver_name), ("driver version", driver_version), ("arch", arch),
                         ("file name", file_name)):
        reason = unsafe_reason(label, value)
        if reason is not None:
            raise UsageError(f"cannot compute the OCI tag: {reason}")
    readable = _TAG_UNSAFE.sub("_", f"{driver_version}_{arch}_{file_name}")
    if not _TAG_START.match(readable):
        readable = "_" + readable
    readable = readable[:TAG_READABLE_LENGTH]
    identity = f"{TAG_HASH_DOMAIN}\n{driver_name}\n{driver_version}\n{arch}\n{file_name}"
    tag = readable + "-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:TAG_HASH_LENGTH]
    assert TAG_RE.fullmatch(tag), tag  # noqa: S101 - the rule guarantees it; a broken rule must not go unseen
    return tag


def signature_tag(manifest_digest: str) -> str:
    """cosign's tag for the signatures of a manifest: `sha256-<hex>.sig`."""
    if not is_digest(manifest_digest):
        raise ValueError(f"not a sha256 digest: {_show(manifest_digest)}")
    return manifest_digest.replace(":", "-", 1) + ".sig"


# -- bounded JSON ------------------------------------------------------------------------------------------------


def _no_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {_show(key)} appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load_object(data: bytes, what: str, max_bytes: int, hint: str) -> Dict[str, Any]:
    """A JSON object from untrusted bytes: at most `max_bytes`, UTF-8, no duplicate keys, no NaN/Infinity,
    nested at most MAX_JSON_DEPTH levels."""
    if not isinstance(data, (bytes, bytearray)):
        raise OciLayoutError(what, f"expected bytes, got {type(data).__name__}", hint=hint)
    if len(data) > max_bytes:
        raise OciLayoutError(what, f"{len(data)} bytes, more than the {max_bytes} allowed", hint=hint)
    try:
        text = bytes(data).decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise OciLayoutError(what, f"nested more than {MAX_JSON_DEPTH} levels deep", hint=hint) from None
    except UnicodeDecodeError:
        raise OciLayoutError(what, "not UTF-8", hint=hint) from None
    except ValueError as error:
        raise OciLayoutError(what, f"not valid JSON ({str(error).splitlines()[0][:120]})", hint=hint) from None
    if deeper_than(value, MAX_JSON_DEPTH):
        raise OciLayoutError(what, f"nested more than {MAX_JSON_DEPTH} levels deep", hint=hint)
    if not isinstance(value, dict):
        raise OciLayoutError(what, f"a JSON {type(value).__name__}, not an object", hint=hint)
    return value


def _dump(value: Any, *, sort_keys: bool = False) -> bytes:
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class _Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Dict[str, str]


def _descriptor(value: Any, label: str, what: str, max_size: int, hint: str) -> _Descriptor:
    if not isinstance(value, dict):
        raise OciLayoutError(what, f"{label} is not an object", hint=hint)
    media_type = value.get("mediaType")
    if not isinstance(media_type, str):
        raise OciLayoutError(what, f"{label} has no mediaType string", hint=hint)
    digest = value.get("digest")
    if not isinstance(digest, str) or not is_digest(digest):
        raise OciLayoutError(what, f"{label} digest {_show(digest)} is not sha256:<64 lowercase hex digits>",
                             hint=hint)
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OciLayoutError(what, f"{label} size {_show(size)} is not a non-negative integer", hint=hint)
    if size > max_size:
        raise OciLayoutError(what, f"{label} size {size} is more than the {max_size} bytes allowed", hint=hint)
    annotations = _annotations(value.get("annotations"), f"{label} annotations", what, hint)
    return _Descriptor(media_type=media_type, digest=digest, size=size, annotations=annotations)


def _annotations(value: Any, label: str, what: str, hint: str) -> Dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OciLayoutError(what, f"{label} are not an object", hint=hint)
    if len(value) > MAX_ANNOTATIONS:
        raise OciLayoutError(what, f"{label}: {len(value)} entries, more than {MAX_ANNOTATIONS}", hint=hint)
    for key, item in value.items():
        if not isinstance(item, str):
            raise OciLayoutError(what, f"{label}: {_show(key)} is not a string", hint=hint)
    return dict(value)


# -- the config blob ---------------------------------------------------------------------------------------------

# JSON key -> field name, in the order of the dataclass.
_CONFIG_KEYS = (
    ("driverName", "driver_name"), ("driverVersion", "driver_version"), ("kind", "kind"), ("arch", "arch"),
    ("target", "target"), ("kernelRelease", "kernel_release"), ("kernelVersion", "kernel_version"),
    ("apiVersion", "api_version"), ("schemaVersion", "schema_version"), ("fileName", "file_name"),
    ("sha256", "sha256"),
)
_CONFIG_WHAT = "OCI driver config"


@dataclasses.dataclass(frozen=True)
class DriverConfig:
    """The config blob of a driver artifact: what the driver file is and which kernel it is for. `sha256` is the
    file's digest as 64 lowercase hex digits (the layer digest without `sha256:`); api_version and
    schema_version are "" when unknown."""

    driver_name: str
    driver_version: str
    kind: str  # "kmod" or "ebpf"
    arch: str
    target: str
    kernel_release: str
    kernel_version: str
    api_version: str
    schema_version: str
    file_name: str
    sha256: str

    def problems(self) -> List[str]:
        """What makes this config invalid, one short reason each; empty when it is valid."""
        found = []
        for label, value in (("driverName", self.driver_name), ("driverVersion", self.driver_version),
                             ("arch", self.arch), ("target", self.target), ("kernelRelease", self.kernel_release),
                             ("fileName", self.file_name)):
            reason = unsafe_reason(label, value) if isinstance(value, str) else f"{label} is not a string"
            if reason is not None:
                found.append(reason)
        if self.kind not in LAYER_MEDIA_TYPES:
            found.append(f"kind {_show(self.kind)} is not kmod or ebpf")
        for label, value in (("kernelVersion", self.kernel_version), ("apiVersion", self.api_version),
                             ("schemaVersion", self.schema_version)):
            if not isinstance(value, str):
                found.append(f"{label} is not a string")
            elif len(value) > MAX_TEXT_FIELD or not value.isprintable():
                found.append(f"{label} {_show(value)} is longer than {MAX_TEXT_FIELD} characters or not printable")
        if not isinstance(self.sha256, str) or not _HEX64.fullmatch(self.sha256):
            found.append(f"sha256 {_show(self.sha256)} is not 64 lowercase hex digits")
        return found

    def to_bytes(self) -> bytes:
        """The config blob: keys sorted, compact, UTF-8, so the same driver always gives the same bytes. Raises
        ValueError when the config is invalid (see problems())."""
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid driver config: {problems[0]}")
        document: Dict[str, Any] = {"layout": LAYOUT_VERSION}
        document.update({key: getattr(self, field) for key, field in _CONFIG_KEYS})
        return _dump(document, sort_keys=True)

    def mismatches(self, *, driver_name: str, driver_version: str, arch: str, file_name: str,
                   kind: Optional[str] = None, sha256: Optional[str] = None) -> List[str]:
        """How this config differs from the driver the caller expects, one reason each; empty when it matches."""
        expected = [("driverName", self.driver_name, driver_name),
                    ("driverVersion", self.driver_version, driver_version),
                    ("arch", self.arch, arch),
                    ("fileName", self.file_name, file_name)]
        if kind is not None:
            expected.append(("kind", self.kind, kind))
        if sha256 is not None:
            expected.append(("sha256", self.sha256, sha256.lower().replace("sha256:", "", 1)))
        return [f"{label} is {_show(actual)}, expected {_show(wanted)}" for label, actual, wanted in expected
                if actual != wanted]


def parse_config(data: bytes) -> DriverConfig:
    """The driver config blob, or OciLayoutError (exit 4): at most MAX_CONFIG_BYTES, a JSON object with
    `layout` 1 and every field a string of the right shape. Unknown keys are ignored (additions within v1)."""
    document = _load_object(data, _CONFIG_WHAT, MAX_CONFIG_BYTES, _CONFIG_HINT)
    layout = document.get("layout")
    if not _is_int(layout):
        raise OciLayoutError(_CONFIG_WHAT, f"layout {_show(layout)} is not an integer", hint=_CONFIG_HINT)
    if layout != LAYOUT_VERSION:
        raise OciLayoutError(_CONFIG_WHAT, f"layout version {layout} is unknown: this loader reads layout "
                                           f"{LAYOUT_VERSION}", hint="upgrade falco-driver-loader, or publish "
                                                                     "the driver with this version")
    values: Dict[str, str] = {}
    for key, field in _CONFIG_KEYS:
        value = document.get(key)
        if not isinstance(value, str):
            missing = "is missing" if key not in document else f"is {type(value).__name__}, not a string"
            raise OciLayoutError(_CONFIG_WHAT, f"{key} {missing}", hint=_CONFIG_HINT)
        values[field] = value
    config = DriverConfig(**values)
    problems = config.problems()
    if problems:
        raise OciLayoutError(_CONFIG_WHAT, problems[0], hint=_CONFIG_HINT)
    return config


# -- the driver manifest -----------------------------------------------------------------------------------------

_MANIFEST_WHAT = "OCI manifest"


@dataclasses.dataclass(frozen=True)
class DriverManifest:
    """A checked layout v1 driver manifest. `digest` is the digest of the manifest bytes themselves (what a
    signature must vouch for); `layer_digest` the driver file's digest, its checksum."""

    digest: str
    kind: str
    file_name: str
    layer_media_type: str
    layer_digest: str
    layer_size: int
    config_digest: str
    config_size: int

    @property
    def layer_sha256(self) -> str:
        """The driver file's SHA-256 as 64 lowercase hex digits."""
        return self.layer_digest.split(":", 1)[1]


def build_manifest(config_bytes: bytes, layer_digest: str, layer_size: int, file_name: str, kind: str) -> bytes:
    """The manifest of one driver file (deterministic bytes: no timestamps). `config_bytes` must be a
    DriverConfig.to_bytes() that agrees with the file name, kind and layer digest; anything else is a programming
    error and raises ValueError."""
    if kind not in LAYER_MEDIA_TYPES:
        raise ValueError(f"kind {_show(kind)} is not kmod or ebpf")
    if not is_digest(layer_digest):
        raise ValueError(f"layer digest {_show(layer_digest)} is not sha256:<64 lowercase hex digits>")
    if not _is_int(layer_size) or not 0 <= layer_size <= MAX_LAYER_SIZE:
        raise ValueError(f"layer size {_show(layer_size)} is not 0 to {MAX_LAYER_SIZE}")
    try:
        config = parse_config(config_bytes)
    except OciLayoutError as error:
        raise ValueError(str(error)) from None
    disagreements = config.mismatches(driver_name=config.driver_name, driver_version=config.driver_version,
                                      arch=config.arch, file_name=file_name, kind=kind, sha256=layer_digest)
    if disagreements:
        raise ValueError(f"the config does not describe the layer: {disagreements[0]}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest_of(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPES[kind], "digest": layer_digest, "size": layer_size,
                    "annotations": {TITLE_ANNOTATION: file_name}}],
    }
    return _dump(manifest)


def parse_manifest(data: bytes, *, expected_file_name: str, expected_kind: Optional[str] = None,
                   expected_digest: Optional[str] = None) -> DriverManifest:
    """Check a driver manifest pulled from a registry, or raise OciLayoutError (exit 4).

    The bytes must hash to `expected_digest` when one is given (a pinned `@sha256:`), be at most
    MAX_MANIFEST_BYTES of JSON nested at most MAX_JSON_DEPTH levels, and hold: schemaVersion 2, the OCI image
    manifest mediaType, our artifactType, a config descriptor of our config media type, and exactly one layer of
    a driver media type whose title annotation is `expected_file_name` (and whose kind is `expected_kind`).
    Unknown keys and annotations are ignored, as the OCI image spec asks."""
    hint = _MANIFEST_HINT
    if not isinstance(data, (bytes, bytearray)):
        raise OciLayoutError(_MANIFEST_WHAT, f"expected bytes, got {type(data).__name__}", hint=hint)
    digest = digest_of(bytes(data))
    if expected_digest is not None and digest != expected_digest:
        raise OciLayoutError(_MANIFEST_WHAT, f"the manifest's bytes hash to {digest}, not the pinned "
                                             f"{expected_digest}", hint="the registry served another manifest "
                                                                        "than the one pinned; check the pin")
    document = _load_object(data, _MANIFEST_WHAT, MAX_MANIFEST_BYTES, hint)
    schema = document.get("schemaVersion")
    if not _is_int(schema) or schema != 2:
        raise OciLayoutError(_MANIFEST_WHAT, f"schemaVersion {_show(schema)} is not 2", hint=hint)
    if document.get("mediaType") != MANIFEST_MEDIA_TYPE:
        raise OciLayoutError(_MANIFEST_WHAT, f"mediaType {_show(document.get('mediaType'))} is not "
                                             f"{MANIFEST_MEDIA_TYPE}", hint=hint)
    if document.get("artifactType") != ARTIFACT_TYPE:
        raise OciLayoutError(_MANIFEST_WHAT, f"artifactType {_show(document.get('artifactType'))} is not "
                                             f"{ARTIFACT_TYPE}", hint=hint)
    _annotations(document.get("annotations"), "the manifest annotations", _MANIFEST_WHAT, hint)
    config = _descriptor(document.get("config"), "the config", _MANIFEST_WHAT, MAX_CONFIG_BYTES, hint)
    if config.media_type != CONFIG_MEDIA_TYPE:
        raise OciLayoutError(_MANIFEST_WHAT, f"the config mediaType {_show(config.media_type)} is not "
                                             f"{CONFIG_MEDIA_TYPE}", hint=hint)
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise OciLayoutError(_MANIFEST_WHAT, "layers is not a list", hint=hint)
    if len(layers) != 1:
        raise OciLayoutError(_MANIFEST_WHAT, f"{len(layers)} layers; a driver artifact has exactly one",
                             hint=hint)
    layer = _descriptor(layers[0], "the layer", _MANIFEST_WHAT, MAX_LAYER_SIZE, hint)
    kind = KIND_BY_LAYER_MEDIA_TYPE.get(layer.media_type)
    if kind is None:
        raise OciLayoutError(_MANIFEST_WHAT, f"the layer mediaType {_show(layer.media_type)} is not "
                                             f"{KMOD_LAYER_MEDIA_TYPE} or {EBPF_LAYER_MEDIA_TYPE}", hint=hint)
    if expected_kind is not None and kind != expected_kind:
        raise OciLayoutError(_MANIFEST_WHAT, f"the layer holds a {kind} driver, not the {expected_kind} wanted",
                             hint=hint)
    title = layer.annotations.get(TITLE_ANNOTATION)
    if title != expected_file_name:
        shown = "is missing" if title is None else f"is {_show(title)}"
        raise OciLayoutError(_MANIFEST_WHAT, f"the layer's {TITLE_ANNOTATION} {shown}, not "
                                             f"{_show(expected_file_name)}", hint=hint)
    return DriverManifest(digest=digest, kind=kind, file_name=title, layer_media_type=layer.media_type,
                          layer_digest=layer.digest, layer_size=layer.size, config_digest=config.digest,
                          config_size=config.size)


# -- signatures (cosign) -----------------------------------------------------------------------------------------

_PAYLOAD_WHAT = "signature payload"
_SIGNATURE_WHAT = "signature manifest"


@dataclasses.dataclass(frozen=True)
class SimpleSigningPayload:
    """What a cosign simple-signing payload vouches for."""

    docker_reference: str
    manifest_digest: str


@dataclasses.dataclass(frozen=True)
class SignatureLayer:
    """One signature in a cosign signature manifest: the payload blob's descriptor and the base64 signature."""

    payload_digest: str
    payload_size: int
    signature_b64: str

    @property
    def signature(self) -> bytes:
        """The raw signature (DER for ECDSA)."""
        return base64.b64decode(self.signature_b64, validate=True)


def simple_signing_payload(docker_reference: str, manifest_digest: str) -> bytes:
    """The payload `cosign sign` signs, byte for byte (keys in Go's struct order, compact)."""
    if not is_digest(manifest_digest):
        raise ValueError(f"not a sha256 digest: {_show(manifest_digest)}")
    if not isinstance(docker_reference, str) or not docker_reference or not docker_reference.isprintable():
        raise ValueError(f"not a docker reference: {_show(docker_reference)}")
    return _dump({"critical": {"identity": {"docker-reference": docker_reference},
                               "image": {"docker-manifest-digest": manifest_digest},
                               "type": COSIGN_SIGNATURE_TYPE},
                  "optional": None})


def _exact_keys(value: Any, label: str, keys: Sequence[str]) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise OciLayoutError(_PAYLOAD_WHAT, f"{label} is not an object", hint=_SIGNATURE_HINT)
    missing = [key for key in keys if key not in value]
    extra = sorted(key for key in value if key not in keys)
    if missing:
        raise OciLayoutError(_PAYLOAD_WHAT, f"{label} has no {_show(missing[0])}", hint=_SIGNATURE_HINT)
    if extra:
        # containers-signature(5): consumers must reject unknown members of `critical`.
        raise OciLayoutError(_PAYLOAD_WHAT, f"{label} has the unknown member {_show(extra[0])}",
                             hint=_SIGNATURE_HINT)
    return value


def parse_simple_signing_payload(data: bytes) -> SimpleSigningPayload:
    """The reference and manifest digest a simple-signing payload vouches for, or OciLayoutError (exit 4).
    Strict as containers-signature(5) asks: exactly `critical` and `optional` (null or an object), no unknown
    member in `critical`, the cosign type. Check the signature over these same bytes before trusting them."""
    document = _load_object(data, _PAYLOAD_WHAT, MAX_PAYLOAD_BYTES, _SIGNATURE_HINT)
    top = dict(document)
    if "optional" not in top:
        top["optional"] = None
    _exact_keys(top, "the payload", ("critical", "optional"))
    if top["optional"] is not None and not isinstance(top["optional"], dict):
        raise OciLayoutError(_PAYLOAD_WHAT, "optional is neither null nor an object", hint=_SIGNATURE_HINT)
    critical = _exact_keys(top["critical"], "critical", ("identity", "image", "type"))
    if critical["type"] != COSIGN_SIGNATURE_TYPE:
        raise OciLayoutError(_PAYLOAD_WHAT, f"critical.type {_show(critical['type'])} is not "
                                            f"{COSIGN_SIGNATURE_TYPE!r}", hint=_SIGNATURE_HINT)
    identity = _exact_keys(critical["identity"], "critical.identity", ("docker-reference",))
    image = _exact_keys(critical["image"], "critical.image", ("docker-manifest-digest",))
    reference = identity["docker-reference"]
    if not isinstance(reference, str) or len(reference) > 4 * MAX_NAME_LENGTH:
        raise OciLayoutError(_PAYLOAD_WHAT, "critical.identity.docker-reference is not a string of at most "
                                            f"{4 * MAX_NAME_LENGTH} characters", hint=_SIGNATURE_HINT)
    digest = image["docker-manifest-digest"]
    if not is_digest(digest):
        raise OciLayoutError(_PAYLOAD_WHAT, f"critical.image.docker-manifest-digest {_show(digest)} is not "
                                            "sha256:<64 lowercase hex digits>", hint=_SIGNATURE_HINT)
    return SimpleSigningPayload(docker_reference=reference, manifest_digest=digest)


def _signature_config(payload_digests: Sequence[str]) -> bytes:
    """The image config go-containerregistry writes for cosign's signature image: zero times, one history entry
    and one diff_id per payload layer (the payload is stored uncompressed, so its diff_id is its digest)."""
    return _dump({"architecture": "", "created": _ZERO_TIME,
                  "history": [{"created": _ZERO_TIME} for _ in payload_digests], "os": "",
                  "rootfs": {"type": "layers", "diff_ids": list(payload_digests)}, "config": {}})


def _check_signature_b64(value: Any) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return "is not a non-empty string"
    if len(value) > MAX_SIGNATURE_B64:
        return f"is longer than {MAX_SIGNATURE_B64} characters"
    if not _BASE64.fullmatch(value) or len(value) % 4:
        return "is not base64"
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "is not base64"
    return None


def build_signature_manifest(payload: bytes, signature_b64: str,
                             keep: Sequence[SignatureLayer] = ()) -> Tuple[bytes, bytes]:
    """(config bytes, manifest bytes) of the signature manifest to store at signature_tag(digest), the way
    cosign writes it: OCI image config and manifest, one simple-signing layer per signature with the base64
    signature in the `dev.cosignproject.cosign/signature` annotation. `keep` are signatures already at the tag
    (parse_signature_manifest) to keep before the new one; the same signature is not added twice. Raises
    UsageError when that would make more than MAX_SIGNATURE_LAYERS signatures; ValueError on invalid input."""
    if not isinstance(payload, (bytes, bytearray)) or not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
        raise ValueError(f"the payload must be 1 to {MAX_PAYLOAD_BYTES} bytes")
    problem = _check_signature_b64(signature_b64)
    if problem is not None:
        raise ValueError(f"the signature {problem}")
    new = SignatureLayer(payload_digest=digest_of(bytes(payload)), payload_size=len(payload),
                         signature_b64=signature_b64)
    layers = list(keep) + ([new] if new not in keep else [])
    if len(layers) > MAX_SIGNATURE_LAYERS:
        raise UsageError(f"the signature tag already holds {len(keep)} signatures; at most "
                         f"{MAX_SIGNATURE_LAYERS} are kept", hint="delete the signature tag in the registry, then "
                                                                  "sign again")
    config = _signature_config([layer.payload_digest for layer in layers])
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": SIGNATURE_CONFIG_MEDIA_TYPE, "size": len(config), "digest": digest_of(config)},
        "layers": [{"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "size": layer.payload_size,
                    "digest": layer.payload_digest, "annotations": {SIGNATURE_ANNOTATION: layer.signature_b64}}
                   for layer in layers],
    }
    return config, _dump(manifest)


def parse_signature_manifest(data: bytes) -> List[SignatureLayer]:
    """The signatures at a `sha256-<hex>.sig` tag, or OciLayoutError (exit 4): at most MAX_MANIFEST_BYTES, an
    OCI (or Docker, as cosign writes with COSIGN_DOCKER_MEDIA_TYPES=1) image manifest of at most
    MAX_SIGNATURE_LAYERS layers. Layers of another media type are skipped; a simple-signing layer must carry a
    base64 signature annotation and a payload of at most MAX_PAYLOAD_BYTES. At least one signature is required."""
    hint = _SIGNATURE_HINT
    document = _load_object(data, _SIGNATURE_WHAT, MAX_MANIFEST_BYTES, hint)
    schema = document.get("schemaVersion")
    if not _is_int(schema) or schema != 2:
        raise OciLayoutError(_SIGNATURE_WHAT, f"schemaVersion {_show(schema)} is not 2", hint=hint)
    media_type = document.get("mediaType")
    if media_type not in SIGNATURE_MANIFEST_MEDIA_TYPES:
        raise OciLayoutError(_SIGNATURE_WHAT, f"mediaType {_show(media_type)} is not an image manifest's",
                             hint=hint)
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise OciLayoutError(_SIGNATURE_WHAT, "layers is not a list", hint=hint)
    if len(layers) > MAX_SIGNATURE_LAYERS:
        raise OciLayoutError(_SIGNATURE_WHAT, f"{len(layers)} layers, more than the {MAX_SIGNATURE_LAYERS} "
                                              "allowed", hint=hint)
    found: List[SignatureLayer] = []
    for index, value in enumerate(layers):
        label = f"layer {index}"
        layer = _descriptor(value, label, _SIGNATURE_WHAT, MAX_PAYLOAD_BYTES, hint)
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        signature = layer.annotations.get(SIGNATURE_ANNOTATION)
        problem = _check_signature_b64(signature)
        if problem is not None or signature is None:
            raise OciLayoutError(_SIGNATURE_WHAT, f"{label}'s {SIGNATURE_ANNOTATION} {problem}", hint=hint)
        found.append(SignatureLayer(payload_digest=layer.digest, payload_size=layer.size,
                                    signature_b64=signature))
    if not found:
        raise OciLayoutError(_SIGNATURE_WHAT, f"no {SIMPLE_SIGNING_MEDIA_TYPE} layer: it holds no signature",
                             hint=hint)
    return found


# -- detached signatures (HTTP and file:// repositories) ---------------------------------------------------------


def detached_signature_bytes(signature: bytes) -> bytes:
    """The `<artifact>.sig` file for a raw signature, as `cosign sign-blob --output-signature` writes it: base64,
    no newline."""
    return base64.b64encode(signature)


def parse_detached_signature(data: bytes) -> bytes:
    """The raw signature in an `<artifact>.sig` file (base64, surrounding whitespace allowed), or
    OciLayoutError (exit 4)."""
    what = "detached signature"
    if len(data) > MAX_DETACHED_SIGNATURE_BYTES:
        raise OciLayoutError(what, f"{len(data)} bytes, more than the {MAX_DETACHED_SIGNATURE_BYTES} allowed",
                             hint=_SIGNATURE_HINT)
    try:
        text = bytes(data).decode("ascii").strip()
    except UnicodeDecodeError:
        raise OciLayoutError(what, "not base64 text", hint=_SIGNATURE_HINT) from None
    problem = _check_signature_b64(text)
    if problem is not None:
        raise OciLayoutError(what, f"the file {problem}", hint=_SIGNATURE_HINT)
    return base64.b64decode(text, validate=True)
