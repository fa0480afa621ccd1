"""Get a verified prebuilt artifact into the cache: reuse a verified cache entry, else try each candidate's URLs in
repository order, and when the default driver version has nothing, the best compatible version a repository lists.

The first download that verifies wins. Every attempt is logged (URL, status or error, elapsed time) and kept, so
that when nothing works the error says exactly what was tried: exit 3 when every URL said "not found", exit 4 when
something failed verification, exit 1 when network or server errors left the question open.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from driver_loader.artifacts.cache import (
    ArtifactCache,
    ArtifactTooLarge,
    Cache,
    CacheEntry,
    IncompleteDownload,
    Vouch,
)
from driver_loader.artifacts.signature import SignatureError, required_key, verify_file_digest
from driver_loader.core.errors import HttpFailure, LoaderError, NetworkError, NoDriverError, VerificationError
from driver_loader.core.naming import Candidate, cache_location, repo_prefix
from driver_loader.core.oci import is_oci_reference, parse_artifact_reference
from driver_loader.core.plan import Plan
from driver_loader.core.policy import (
    ChecksumRecord,
    Evidence,
    VerifyPolicy,
    checksum_decision,
    checksum_required_before_download,
)
from driver_loader.core.redaction import redact_url
from driver_loader.core.settings import Settings
from driver_loader.net.checksums import (
    UNVERIFIED_POLICY_OFF,
    UNVERIFIED_RECORDED,
    ChecksumResolver,
    Expectation,
)
from driver_loader.net.http_checks import require_ca_bundle
from driver_loader.net.index import VersionIndex
from driver_loader.output.log import get_logger

if TYPE_CHECKING:
    from driver_loader.net.http import LoaderSession
    from driver_loader.net.oci_pull import OciPuller

log = get_logger(__name__)

ADVICE = "build it locally with --compile, add a repository that has it with --repo, or use --type modern_ebpf"
NOT_FOUND, TRANSPORT, VERIFICATION, REJECTED = "not found", "transport", "verification", "rejected"
UNREACHABLE = "unreachable"  # no connection at all: DNS, refused, unreachable, connect timeout
NETWORK_ADVICE = ("check the node's network, DNS and proxy (HTTPS_PROXY, NO_PROXY; --log-level debug shows the "
                  "proxy used), or point --repo at a mirror the node can reach")

# The version fallback tries at most this many other versions, highest (nearest the default's major) first: each
# costs a few requests per candidate and repository, and an index may list thousands.
MAX_FALLBACK_VERSIONS = 5
# A detached signature is about a hundred bytes of base64.
SIGNATURE_LIMIT = 4096

Progress = Callable[[int, Optional[int]], None]


@dataclasses.dataclass(frozen=True)
class FetchResult:
    path: str
    version: str
    sha256: str
    url: str
    verified_by: str
    source: str  # 'cache' or 'download'
    signed_by: str = ""  # the id of the key whose signature was verified, if one was


@dataclasses.dataclass(frozen=True)
class Attempt:
    url: str
    outcome: str
    detail: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.url}: {self.detail}"


class _BrokenTransfer(Exception):
    """The body failed after a 200: worth another GET, unlike failures urllib3 already retried."""

    def __init__(self, failure: LoaderError) -> None:
        super().__init__(failure.message)
        self.failure = failure


def fetch_artifact(
    plan: Plan,
    settings: Settings,
    *,
    session: Optional[LoaderSession] = None,
    cache: Optional[Cache] = None,
    progress: Optional[Progress] = None,
) -> FetchResult:
    """The verified artifact for `plan`, from the cache or a repository. Without `session`, one is built when the
    first request is made: a verified cache entry is reused without importing the HTTP stack."""
    require_ca_bundle(settings.http)
    cache = cache or ArtifactCache(settings.cache_dir)
    return _Fetcher(plan, settings, session, cache, progress).run()


class _Fetcher:
    def __init__(self, plan: Plan, settings: Settings, session: Optional[LoaderSession], cache: Cache,
                 progress: Optional[Progress]) -> None:
        self.plan = plan
        self.settings = settings
        self._session = session
        self.cache = cache
        self.progress = progress
        self.checksums = ChecksumResolver(settings.verify, self._get_document)
        self.index = VersionIndex(self._get_document)
        self.published: Dict[str, Optional[Tuple[str, ...]]] = {}
        self.key = required_key(settings)
        self._oci: Optional[OciPuller] = None
        self.attempts: List[Attempt] = []
        self.notes: List[str] = []

    @property
    def session(self) -> LoaderSession:
        if self._session is None:
            from driver_loader.net.http import build_session

            self._session = build_session(self.settings.http, repos=self.settings.repos)
        return self._session

    @property
    def oci(self) -> OciPuller:
        if self._oci is None:
            from driver_loader.net.oci_pull import OciPuller

            self._oci = OciPuller(self.session, self.settings, self.key)
        return self._oci

    def _get_document(self, url: str) -> Optional[str]:
        return self.session.get_document(url)

    def run(self) -> FetchResult:
        plan = self.plan
        if not plan.candidates:
            raise NoDriverError(
                f"no prebuilt {plan.driver_type} can be named for this host",
                tried=plan.refusals or ("no artifact file name could be built",),
                hint=ADVICE,
            )
        result = self._try_version(plan.driver_version, plan.candidates)
        if result is None and self.settings.version_fallback:
            before = self._request_count()
            tried = 0
            for version in self._fallback_versions():
                log.info("trying a compatible driver version", version=version, compatible=str(plan.compatible))
                tried += 1
                result = self._try_version(version, self._candidates_for(version))
                if result is not None:
                    break
            log.info("version fallback finished", versions_tried=tried, requests=self._request_count() - before,
                     found=result.version if result else None)
            if result is None and tried:
                self.notes.append(f"version fallback: tried {tried} version{'s' if tried > 1 else ''} "
                                  f"({self._request_count() - before} requests)")
        if result is None:
            raise self._failure()
        return result

    # -- versions -------------------------------------------------------------------------------------------------

    def _fallback_versions(self) -> List[str]:
        self.published = {repo: self.index.versions(repo) for repo in self.settings.repos}
        listed = {v for versions in self.published.values() if versions for v in versions}
        versions = self.plan.compatible.highest_first(listed - {self.plan.driver_version})
        if len(versions) > MAX_FALLBACK_VERSIONS:
            self.notes.append(f"version fallback: only the {MAX_FALLBACK_VERSIONS} highest of the {len(versions)} "
                              f"other versions inside {self.plan.compatible} are tried")
            versions = versions[:MAX_FALLBACK_VERSIONS]
        if not versions:
            unknown = [redact_url(r) for r, v in self.published.items() if v is None]
            self.notes.append(
                f"version fallback: no other version inside {self.plan.compatible} is published"
                + (f" (no index readable at {', '.join(unknown)})" if unknown else "")
            )
        return versions

    def _request_count(self) -> int:
        """Requests the session has sent so far (none when no session was needed)."""
        return getattr(self._session, "request_count", 0)

    def _candidates_for(self, version: str) -> Tuple[Candidate, ...]:
        """Candidates for `version`, keeping only URLs of repositories that list it (or that list nothing)."""
        kept = []
        for candidate in self.plan.candidates_for_version(version):
            urls = tuple(url for url in candidate.urls if self._may_publish(url, version, candidate.filename))
            if urls:
                kept.append(dataclasses.replace(candidate, urls=urls))
            else:
                self.notes.append(f"{version}: no repository index lists {candidate.filename}")
        return tuple(kept)

    def _may_publish(self, url: str, version: str, filename: str) -> bool:
        for repo, versions in self.published.items():
            if not url.startswith(repo_prefix(repo)):
                continue
            if versions is not None and version not in versions:
                return False
            artifacts = self.index.artifacts(repo, version)
            return artifacts is None or (self.plan.arch, filename) in artifacts
        return True

    def _try_version(self, version: str, candidates: Tuple[Candidate, ...]) -> Optional[FetchResult]:
        for candidate in candidates:
            result = self._try_candidate(version, candidate)
            if result is not None:
                return result
        return None

    # -- one artifact -----------------------------------------------------------------------------------------------

    def _try_candidate(self, version: str, candidate: Candidate) -> Optional[FetchResult]:
        location = f"{version}/{self.plan.arch}/{candidate.filename}"
        with self.cache.lock(candidate.cache_path):
            entry = self.cache.lookup(candidate.cache_path)
            if entry is not None:
                verified_by = self._reusable(entry, location)
                if verified_by:
                    log.info("using the cached artifact", path=entry.path, sha256=entry.sha256,
                             verified_by=verified_by)
                    return FetchResult(entry.path, version, entry.sha256, entry.url or "", verified_by, "cache",
                                       entry.signed_by)
            for url in candidate.urls:
                entry = self._download(url, candidate)
                if entry is not None:
                    return FetchResult(entry.path, version, entry.sha256, entry.url or redact_url(url),
                                       entry.verified_by, "download", entry.signed_by)
        return None

    def _reusable(self, entry: CacheEntry, location: str) -> Optional[str]:
        """How the cached entry counts as verified under the current policy, or None to download again. The
        policy decides; the same question is asked by install, --dry-run and doctor."""
        decision = checksum_decision(entry.record, policy=VerifyPolicy(self.settings.verify.policy),
                                     pin=self.checksums.pin(location),
                                     signer=self.key.key_id if self.key is not None else None)
        if not decision.usable:
            log.info("not reusing the cached artifact; downloading again", path=entry.path, reason=decision.reason)
            return None
        return str(decision.evidence)

    def _download(self, url: str, candidate: Candidate) -> Optional[CacheEntry]:
        # One deadline for the URL: its checksum documents, the body and any transfer tried again.
        with self.session.deadline():
            return self._download_by_deadline(url, candidate)

    def _download_by_deadline(self, url: str, candidate: Candidate) -> Optional[CacheEntry]:
        safe_url = redact_url(url)
        started = time.monotonic()
        transfers = 0
        while True:
            try:
                entry = self._transfer(url, candidate)
            except _BrokenTransfer as broken:
                transfers += 1
                if transfers <= self.settings.http.retries:
                    log.info("transfer broke; trying again", url=safe_url, error=broken.failure.message,
                             attempt=transfers)
                    self.session.pause(transfers)
                    continue
                self._record(safe_url, TRANSPORT, broken.failure.message, started)
                return None
            except HttpFailure as failure:
                outcome = NOT_FOUND if failure.not_found else UNREACHABLE if failure.unreachable else TRANSPORT
                self._record(safe_url, outcome, self._http_detail(failure, url), started, hint=failure.hint)
                return None
            except VerificationError as failure:
                self._record(safe_url, VERIFICATION, failure.message, started)
                return None
            except ArtifactTooLarge as failure:
                self._record(safe_url, REJECTED, failure.message, started)
                return None
            log.info("downloaded", url=safe_url, status=200, elapsed=_elapsed(started), sha256=entry.sha256,
                     size=entry.size, verified_by=entry.verified_by)
            return entry

    def _transfer(self, url: str, candidate: Candidate) -> CacheEntry:
        if is_oci_reference(url):
            return self._transfer_oci(url, candidate)
        policy = self.settings.verify.policy
        # The checksum comes first: holding the artifact's response open while asking for its sidecar needs two
        # connections per loader, which deadlocks a fleet against a server that caps its concurrent requests.
        expectation = self.checksums.expectation_for(url)
        refusal = checksum_required_before_download(VerifyPolicy(policy), None, published=expectation is not None)
        if refusal is not None:
            raise VerificationError(f"{candidate.filename}: {refusal.reason}", hint=refusal.hint)
        vouch = self._detached_signature(url) if self.key is not None else None
        with self.session.get_stream(url) as response:
            try:
                entry = self.cache.stream_into(
                    candidate.cache_path,
                    self.session.iter_body(response),
                    max_size=self.settings.http.max_size,
                    expected_size=_content_length(response),
                    expected_sha256=expectation.sha256 if expectation else None,
                    expectation_source=expectation.source if expectation else "",
                    verified_by=_verified_by(expectation, policy),
                    url=redact_url(url),
                    progress=self.progress,
                    vouch=vouch,
                )
            except (HttpFailure, IncompleteDownload) as failure:
                raise _BrokenTransfer(failure) from None
        if expectation is None and policy == "auto":
            log.warning("the repository publishes no checksum for this artifact; recorded the digest of what was "
                        "downloaded", url=redact_url(url), sha256=entry.sha256)
        return entry

    def _transfer_oci(self, reference: str, candidate: Candidate) -> CacheEntry:
        """One driver file from a registry: the manifest's layer digest is the expected checksum (a pin, when
        there is one, must agree with it before anything is downloaded), and the signature is checked on the
        manifest digest before the blob is asked for."""
        repo, tag = parse_artifact_reference(reference)
        resolved = self.oci.resolve(repo, tag, candidate.filename, str(self.plan.driver_type))
        pin = self.checksums.pin(cache_location(candidate.cache_path))
        # The policy judges the digest the manifest promises before a byte of the blob is asked for. Content
        # addressing checks that digest whatever --verify says, so the strict rule is the one that applies.
        promised = ChecksumRecord(resolved.layer_sha256, Evidence.OCI_DIGEST, resolved.source, resolved.signed_by)
        decision = checksum_decision(promised, policy=VerifyPolicy.STRICT, pin=pin,
                                     signer=self.key.key_id if self.key is not None else None)
        if not decision.usable:
            raise VerificationError(f"the layer of {resolved.source}: {decision.reason}; nothing was downloaded",
                                    hint=decision.hint)
        response = self.oci.open_layer(resolved, max_size=self.settings.http.max_size)
        with response:
            try:
                return self.cache.stream_into(
                    candidate.cache_path,
                    self.session.iter_body(response),
                    max_size=self.settings.http.max_size,
                    expected_size=resolved.size,
                    expected_sha256=resolved.layer_sha256,
                    expectation_source=resolved.source,
                    verified_by=str(decision.evidence),
                    url=f"{repo.display}@{resolved.manifest_digest}",
                    progress=self.progress,
                    signed_by=resolved.signed_by,
                )
            except (HttpFailure, IncompleteDownload) as failure:
                raise _BrokenTransfer(failure) from None

    def _detached_signature(self, url: str) -> Vouch:
        """With --verify-key, an artifact from an HTTP or file repository needs `<url>.sig` beside it, as `cosign
        sign-blob` writes it. It is read before the artifact (one connection at a time) and checked against the
        digest of the bytes that arrive, before they are stored."""
        key = self.key
        assert key is not None
        sig_url = signature_url(url)
        text = self.session.get_document(sig_url, limit=SIGNATURE_LIMIT)

        def vouch(sha256: str) -> str:
            if text is None:
                raise SignatureError(key, sha256, missing=True, where=redact_url(sig_url))
            if not verify_file_digest(key, sha256, text):
                raise SignatureError(key, sha256, missing=False, where=redact_url(sig_url))
            log.info("signature verified", url=redact_url(sig_url), key=key.key_id, sha256=sha256)
            return key.key_id

        return vouch

    def _http_detail(self, failure: HttpFailure, url: str) -> str:
        if failure.url == redact_url(url):
            return failure.message
        return f"fetching {failure.url}: {failure.message}"  # the failing request was a checksum document

    def _record(self, safe_url: str, outcome: str, detail: str, started: float, hint: str = "") -> None:
        elapsed = _elapsed(started)
        self.attempts.append(Attempt(safe_url, outcome, detail, hint))
        log.info("download attempt failed", url=safe_url, result=detail, elapsed=elapsed)

    # -- giving up --------------------------------------------------------------------------------------------------

    def _failure(self) -> LoaderError:
        plan = self.plan
        tried = [str(a) for a in self.attempts] + self.notes
        what = (f"{plan.driver_type} for kernel {plan.kernel_release} (target {plan.target_id}, "
                f"driver {plan.driver_version}, compatible {plan.compatible})")
        outcomes = {a.outcome for a in self.attempts}
        if VERIFICATION in outcomes:
            return VerificationError(f"no downloaded {what} passed verification", tried=tried,
                                     hint="nothing unverified was kept; " + ADVICE)
        if outcomes <= {NOT_FOUND}:
            return NoDriverError(f"no prebuilt {what} was found", tried=tried, hint=ADVICE)
        if outcomes == {UNREACHABLE}:
            repos = [redact_url(r) for r in self.settings.repos]
            return NetworkError(
                f"could not reach the driver repositor{'y' if len(repos) == 1 else 'ies'} {', '.join(repos)} "
                f"({self.attempts[-1].detail}), so no prebuilt {plan.driver_type} could be looked for",
                repos=repos, tried=tried, hint=NETWORK_ADVICE,
            )
        failed = sum(1 for a in self.attempts if a.outcome != NOT_FOUND)
        hints = list(dict.fromkeys(a.hint for a in self.attempts if a.hint))
        if UNREACHABLE in outcomes:
            hints.append(NETWORK_ADVICE)
        return LoaderError(
            f"could not download a prebuilt {what}: {failed} of {len(self.attempts)} attempts failed for reasons "
            "other than 'not found'",
            tried=tried,
            hint="; ".join(hints or ["check the network, proxy and TLS settings (--log-level debug shows more)"])
            + "; or " + ADVICE,
        )


def signature_url(artifact_url: str) -> str:
    """`<artifact>.sig`, keeping the artifact URL's query string (a signed URL's token) on it."""
    base, sep, query = artifact_url.partition("?")
    return f"{base}.sig" + (f"?{query}" if sep else "")


def _verified_by(expectation: Optional[Expectation], policy: str) -> str:
    if expectation is not None:
        return expectation.verified_by
    return UNVERIFIED_POLICY_OFF if policy == "off" else UNVERIFIED_RECORDED


def _content_length(response) -> Optional[int]:
    """The announced body size, when it describes the bytes we will receive (no content encoding)."""
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None
    value = response.headers.get("Content-Length", "")
    return int(value) if value.strip().isdigit() else None


def _elapsed(started: float) -> str:
    return f"{time.monotonic() - started:.2f}s"
