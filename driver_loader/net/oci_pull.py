"""Pulling one driver file from an `oci://` repository, laid out as docs/oci-layout.md says: resolve the tag (or the
pinned digest) to a manifest, check it is one driver layer with the expected file name, check the signature when a
key is required, and open the layer's blob. The fetcher streams it into the cache against the layer digest, which
is the artifact's checksum: content addressing satisfies `--verify strict`.

A registry on loopback is spoken to over https when it answers a TLS handshake and over plain http when it does
not, as container engines treat local registries; any other registry only over https, unless plain http is
allowed explicitly (--registry-plain-http).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

from driver_loader.artifacts.signature import PublicKey, SignatureError, verify
from driver_loader.core.errors import HttpFailure
from driver_loader.core.oci import (
    MANIFEST_MEDIA_TYPE,
    MAX_PAYLOAD_BYTES,
    OciLayoutError,
    OciRepository,
    parse_manifest,
    parse_signature_manifest,
    parse_simple_signing_payload,
    signature_tag,
)
from driver_loader.core.settings import Settings
from driver_loader.net.http import LoaderSession
from driver_loader.net.oci import DOCKER_MANIFEST, Challenge, RegistryClient
from driver_loader.net.registry_auth import find_credentials
from driver_loader.output.log import get_logger
from driver_loader.system.atomic import write_atomically
from driver_loader.system.files import UnreadableFile, read_regular_file

log = get_logger(__name__)

CHALLENGES_DIR = ".oci-challenges"
CHALLENGE_FILE_LIMIT = 4096



@dataclasses.dataclass(frozen=True)
class ResolvedLayer:
    """The driver layer a manifest names, and what vouches for it."""

    repository: OciRepository
    manifest_digest: str
    layer_digest: str
    layer_sha256: str
    size: int
    signed_by: str  # the id of the key whose signature over the manifest digest verified; "" when none is required

    @property
    def source(self) -> str:
        """Where the expected digest came from, for messages and the cache record."""
        return f"{self.repository.docker_reference}@{self.manifest_digest}"


class OciPuller:
    """The registries of one run: one client per repository, sharing the run's session."""

    def __init__(self, session: LoaderSession, settings: Settings, key: Optional[PublicKey]) -> None:
        self.session = session
        self.settings = settings
        self.key = key
        self._clients: Dict[Tuple[str, str], RegistryClient] = {}

    def client(self, repo: OciRepository) -> RegistryClient:
        found = self._clients.get((repo.registry, repo.repository))
        if found is None:
            plain_http = self.settings.registry.plain_http or (repo.is_loopback and not _speaks_tls(repo))
            found = self._new_client(repo, plain_http=plain_http)
            self._clients[(repo.registry, repo.repository)] = found
        return found

    def _new_client(self, repo: OciRepository, *, plain_http: bool) -> RegistryClient:
        registry = self.settings.registry
        credentials = find_credentials(repo.registry, repo.repository, username=registry.username,
                                       password=registry.password, auth_file=registry.auth_file)
        challenge = self._saved_challenge(repo) if credentials.credentials is None else None
        return RegistryClient(self.session, repo.registry, repo.repository, plain_http=plain_http,
                              credentials=credentials, challenge=challenge)

    # An anonymous token registry answers the first request with a 401 that names its token endpoint. Keeping that
    # challenge in the cache lets later runs ask for the token first: token, manifest, blob. Only without
    # credentials: a saved file never decides where credentials are sent.
    def _challenge_path(self, repo: OciRepository) -> str:
        name = "".join(c if c.isalnum() or c in "-." else "_" for c in repo.registry)
        return os.path.join(self.settings.cache_dir, CHALLENGES_DIR, f"{name}.json")

    def _saved_challenge(self, repo: OciRepository) -> Optional[Challenge]:
        try:
            text = read_regular_file(self._challenge_path(repo), CHALLENGE_FILE_LIMIT, follow_symlinks=False)
        except UnreadableFile:
            return None
        return Challenge.from_json(text.decode("utf-8", errors="replace"))

    def remember_challenge(self, repo: OciRepository) -> None:
        """Keep the registry's token challenge for the next run, when it is anonymous and new; never fails a run."""
        client = self._clients.get((repo.registry, repo.repository))
        if client is None or client.challenge is None or client.credentials is not None:
            return
        path = self._challenge_path(repo)
        data = client.challenge.to_json().encode()
        try:
            if self._saved_challenge(repo) == client.challenge:
                return
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            write_atomically(path, data, mode=0o600)
        except OSError as exc:
            log.debug("could not keep the registry's challenge", path=path, error=str(exc))

    def resolve(self, repo: OciRepository, tag: Optional[str], file_name: str, kind: str) -> ResolvedLayer:
        """The driver layer at `tag` (or the pinned digest): raises HttpFailure (404 when the registry has no such
        tag), VerificationError (OciLayoutError for a manifest that is not one driver layer with this file name;
        SignatureError when a required signature is missing or wrong)."""
        reference = repo.digest or tag
        assert reference is not None
        manifest = self.client(repo).get_manifest(reference, accept=(MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST))
        layer = parse_manifest(manifest.data, expected_file_name=file_name, expected_kind=kind,
                               expected_digest=repo.digest)
        signed_by = self._check_signature(repo, layer.digest) if self.key is not None else ""
        self.remember_challenge(repo)
        return ResolvedLayer(repo, layer.digest, layer.layer_digest, layer.layer_sha256, layer.layer_size,
                             signed_by)

    def open_layer(self, resolved: ResolvedLayer, *, max_size: int):
        """The layer's blob, its body unread (stream it with session.iter_body inside the caller's deadline)."""
        return self.client(resolved.repository).open_blob(resolved.layer_digest, max_size=max_size,
                                                          expected_size=resolved.size)

    def _check_signature(self, repo: OciRepository, manifest_digest: str) -> str:
        """A valid signature by the required key over a payload that names exactly this manifest digest, at the
        cosign tag `sha256-<hex>.sig` of the same repository. Returns the key id."""
        key = self.key
        assert key is not None
        tag = signature_tag(manifest_digest)
        where = f"{repo.docker_reference}:{tag}"
        client = self.client(repo)
        try:
            found = client.get_manifest(tag, accept=(MANIFEST_MEDIA_TYPE, DOCKER_MANIFEST))
        except HttpFailure as failure:
            if failure.not_found:
                raise SignatureError(key, manifest_digest, missing=True, where=where) from None
            raise
        try:
            layers = parse_signature_manifest(found.data)
        except OciLayoutError as bad:
            raise SignatureError(key, manifest_digest, missing=False, where=where, detail=bad.reason) from None
        problems: List[str] = []
        for layer in layers:
            payload = client.read_blob(layer.payload_digest, max_size=MAX_PAYLOAD_BYTES)
            if not verify(key, payload, layer.signature_b64):
                problems.append("a signature by another key")
                continue
            try:
                vouched = parse_simple_signing_payload(payload)
            except OciLayoutError as bad:
                problems.append(bad.reason)
                continue
            if vouched.manifest_digest != manifest_digest:
                # A valid signature, for other content: replayed from another artifact.
                problems.append(f"a signature by this key for another manifest ({vouched.manifest_digest})")
                continue
            log.info("signature verified", reference=where, key=key.key_id, manifest=manifest_digest)
            return key.key_id
        raise SignatureError(key, manifest_digest, missing=False, where=where,
                             detail="; ".join(dict.fromkeys(problems)) or "no signature layer")


def _speaks_tls(repo: OciRepository, timeout: float = 5.0) -> bool:
    """Whether a registry on this machine answers a TLS handshake; one connection, no retries, certificate not
    judged (the real requests judge it). A registry that cannot be reached at all counts as TLS: https is then what
    fails, and says why."""
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((repo.hostname, repo.port or 443), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=repo.hostname):
            return True
    except ssl.SSLError:
        log.info("the loopback registry does not speak TLS; using plain http", registry=repo.registry)
        return False
    except OSError:
        return True

