"""Where an artifact's expected SHA-256 comes from, first found wins:
1. pinned by the operator: `--sha256`, or a `--checksums` file in `sha256sum` format;
2. a sidecar `<artifact URL>.sha256` holding `HEX` or `HEX  filename`;
3. `SHA256SUMS` in the artifact's directory.

The official repository publishes none of these, so the `auto` policy records the computed digest with a warning;
`strict` refuses artifacts without one; `off` checks nothing. Parsing is pure; the documents are fetched through
a getter (the run's session asks for each at most once).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Callable, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit, urlunsplit

from driver_loader.core.errors import UsageError, VerificationError
from driver_loader.core.policy import Evidence, Pin
from driver_loader.core.redaction import redact_url
from driver_loader.core.settings import VerifyOptions
from driver_loader.system.files import UnreadableFile, read_regular_file

# The cache metadata's `verified_by` strings; the policy owns what each one is worth.
VERIFIED_PINNED = Evidence.PINNED.value
VERIFIED_SIDECAR = Evidence.SIDECAR.value
VERIFIED_SUMS = Evidence.SUMS.value
UNVERIFIED_RECORDED = Evidence.RECORDED.value
UNVERIFIED_POLICY_OFF = Evidence.UNCHECKED.value
LOCAL_BUILD = Evidence.LOCAL_BUILD.value

# A --checksums file is read whole; SHA256SUMS and sidecars fetched from a repository are bounded by the session.
CHECKSUMS_FILE_LIMIT = 32 * 1024 * 1024

SIDECAR_SUFFIX = ".sha256"
SUMS_FILENAME = "SHA256SUMS"

_GNU_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]{64})(?:\s+\*?(?P<name>.+?))?\s*$")
_BSD_LINE = re.compile(r"^SHA256\s*\((?P<name>.+)\)\s*=\s*(?P<hex>[0-9a-fA-F]{64})\s*$")


@dataclasses.dataclass(frozen=True)
class Expectation:
    sha256: str
    source: str
    verified_by: str


def parse_checksum_lines(text: str) -> List[Tuple[str, str]]:
    """(digest, name) pairs from `sha256sum` output (`HEX  name`, `HEX *name`) or BSD `SHA256 (name) = HEX`
    lines; other lines (comments, blank, other algorithms) are ignored."""
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        match = _BSD_LINE.match(line) or _GNU_LINE.match(line)
        if match and match.group("name"):
            pairs.append((match.group("hex").lower(), match.group("name").strip()))
    return pairs


def parse_sidecar(text: str) -> Optional[Tuple[str, Optional[str]]]:
    """(digest, file name or None) from a sidecar's first non-empty line; None when it holds no SHA-256."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _BSD_LINE.match(line) or _GNU_LINE.match(line)
        if not match:
            return None
        name = match.group("name")
        return match.group("hex").lower(), name.strip() if name else None
    return None


def match_checksum(entries: Sequence[Tuple[str, str]], location: str) -> Optional[str]:
    """The digest listed for `location` (a '/'-separated path ending in the artifact's file name). An entry
    matches when its name is a whole-segment suffix of the location; the longest match wins."""
    best: Optional[Tuple[int, str]] = None
    conflict = False
    for digest, name in entries:
        name = _normalize_entry_name(name)
        if not name or not (location == name or location.endswith("/" + name)):
            continue
        if best is None or len(name) > best[0]:
            best, conflict = (len(name), digest), False
        elif len(name) == best[0] and digest != best[1]:
            conflict = True
    if conflict:
        raise VerificationError(
            f"checksum list gives different digests for {posixpath.basename(location)}",
            hint="list each artifact once, or qualify entries with <version>/<arch>/<file>",
        )
    return best[1] if best else None


def _normalize_entry_name(name: str) -> str:
    name = name.strip().lstrip("*")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def location_of(url: str) -> str:
    """The decoded path of an artifact URL, used to match checksum entries."""
    return unquote(urlsplit(url).path)


def sidecar_url(artifact_url: str) -> str:
    parts = urlsplit(artifact_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path + SIDECAR_SUFFIX, parts.query, ""))


def sums_url(artifact_url: str) -> str:
    parts = urlsplit(artifact_url)
    directory = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{directory}/{SUMS_FILENAME}", parts.query, ""))


class ChecksumResolver:
    """Finds the expected digest of an artifact. `get_document(url)` returns the text at `url`, None when it is not
    published, and raises HttpFailure otherwise; it is only called when no pinned digest answers."""

    def __init__(self, verify: VerifyOptions, get_document: Callable[[str], Optional[str]]) -> None:
        self.verify = verify
        self.get_document = get_document
        self._pinned_entries: Optional[List[Tuple[str, str]]] = None

    @property
    def policy(self) -> str:
        return self.verify.policy

    def pinned(self, location: str) -> Optional[Expectation]:
        """The operator's digest for the artifact at `location`, without touching the network."""
        if self.verify.policy == "off":
            return None
        if self.verify.sha256:
            return Expectation(self.verify.sha256.lower(), "--sha256", VERIFIED_PINNED)
        if self.verify.checksums_file:
            digest = match_checksum(self._checksums_file_entries(self.verify.checksums_file), location)
            if digest:
                return Expectation(digest, f"checksums file {self.verify.checksums_file}", VERIFIED_PINNED)
        return None

    def pin(self, location: str) -> Optional[Pin]:
        """The operator's pin for the artifact at `location` (`<version>/<arch>/<file>` or a URL's path)."""
        pinned = self.pinned(location)
        return Pin(pinned.sha256, pinned.source) if pinned else None

    def expectation_for(self, url: str) -> Optional[Expectation]:
        """The expected digest of the artifact at `url`, or None when nobody publishes one. A checksum document
        that exists but cannot be read or parsed raises: its absence must not be assumed."""
        if self.verify.policy == "off":
            return None
        location = location_of(url)
        filename = posixpath.basename(location)
        pinned = self.pinned(location)
        if pinned:
            return pinned
        side_url = sidecar_url(url)
        sidecar = self.get_document(side_url)
        if sidecar is not None:
            parsed = parse_sidecar(sidecar)
            source = f"sidecar {redact_url(side_url)}"
            if parsed is None:
                raise VerificationError(f"{source} does not hold a SHA-256 digest",
                                        hint="fix the repository's .sha256 file, or pin the digest with --sha256")
            digest, named = parsed
            if named is not None and posixpath.basename(_normalize_entry_name(named)) != filename:
                raise VerificationError(f"{source} describes {named!r}, not {filename!r}",
                                        hint="fix the repository's .sha256 file, or pin the digest with --sha256")
            return Expectation(digest, source, VERIFIED_SIDECAR)
        list_url = sums_url(url)
        sums = self.get_document(list_url)
        if sums is not None:
            listed = match_checksum(parse_checksum_lines(sums), location)
            if listed:
                return Expectation(listed, f"{SUMS_FILENAME} {redact_url(list_url)}",
                                   VERIFIED_SUMS)
        return None

    def _checksums_file_entries(self, path: str) -> List[Tuple[str, str]]:
        if self._pinned_entries is None:
            try:
                raw = read_regular_file(path, CHECKSUMS_FILE_LIMIT)
            except UnreadableFile as exc:
                raise UsageError(f"checksums file {exc}",
                                 hint="--checksums expects a file in `sha256sum` format") from None
            self._pinned_entries = parse_checksum_lines(raw.decode("utf-8", errors="replace"))
            if not self._pinned_entries:
                raise UsageError(f"checksums file {path} lists no SHA-256 digests",
                                 hint="--checksums expects lines like '<64 hex digits>  <file name>'")
        return self._pinned_entries

