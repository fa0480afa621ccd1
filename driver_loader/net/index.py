"""Which driver versions a repository publishes, for the best-compatible-version fallback.

Sources, in order: the drivers website JSON (`<repo>/site/index.json`, an array of versions, with
`<repo>/site/<version>.json` listing the artifacts of one version), then an HTML directory listing of `<repo>/`
(nginx/Apache autoindex, `python -m http.server`, and `file://` directories, which the session renders the same
way). Parsing is pure; documents come from a getter (the run's session fetches each at most once).
"""

from __future__ import annotations

import html
import re
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple, TypeVar
from urllib.parse import unquote, urlsplit

from driver_loader.core.errors import HttpFailure
from driver_loader.core.naming import quote_segment, repo_url
from driver_loader.core.oci import is_oci_reference
from driver_loader.core.redaction import redact_url
from driver_loader.output.log import get_logger
from driver_loader.system.documents import DocumentLimitError, load_json

log = get_logger(__name__)

SITE_INDEX = "site/index.json"
# The most versions site/index.json may list, and the most links a directory listing may hold; a document over
# either is ignored with a warning, as if the repository published no index.
MAX_INDEX_ENTRIES = 10_000

_Parsed = TypeVar("_Parsed")


def parse_site_index(text: str) -> Optional[List[str]]:
    """The versions in `site/index.json`, or None when it is not a JSON array of strings. DocumentLimitError when
    it breaks a bound (nested too deeply, more than MAX_INDEX_ENTRIES versions)."""
    try:
        data = load_json(text)
    except DocumentLimitError:
        raise
    except ValueError:
        return None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        return None
    if len(data) > MAX_INDEX_ENTRIES:
        raise DocumentLimitError(f"it lists more than {MAX_INDEX_ENTRIES} versions")
    return [item.strip() for item in data if item.strip()]


def parse_site_version(text: str) -> Optional[FrozenSet[Tuple[str, str]]]:
    """(arch, file name) of every artifact in `site/<version>.json`, or None when the document is malformed.
    DocumentLimitError when it is nested too deeply."""
    try:
        data = load_json(text)
    except DocumentLimitError:
        raise
    except ValueError:
        return None
    drivers = data.get("drivers") if isinstance(data, dict) else None
    if not isinstance(drivers, list):
        return None
    return frozenset(
        (str(entry.get("arch", "")), str(entry.get("name", "")))
        for entry in drivers
        if isinstance(entry, dict) and entry.get("name")
    )


# An <a ...> start tag, and its href. `[^<>]*` stops at the next tag, so every character is looked at a bounded
# number of times however the listing is built: parsing is linear in its size.
_A_TAG = re.compile(r"<a\s([^<>]*)>", re.IGNORECASE)
_HREF = re.compile(r"""(?:^|\s)href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'<>=`]+))""", re.IGNORECASE)


def parse_directory_listing(text: str) -> List[str]:
    """Names of the subdirectories linked from an HTML directory listing, decoded (`8.1.0%2Bdriver/` ->
    `8.1.0+driver`). Parent links, sort links and links to other hosts are skipped. DocumentLimitError when it
    has more than MAX_INDEX_ENTRIES links."""
    names: Dict[str, None] = {}
    for links, tag in enumerate(_A_TAG.finditer(text), start=1):
        if links > MAX_INDEX_ENTRIES:
            raise DocumentLimitError(f"it has more than {MAX_INDEX_ENTRIES} links")
        attribute = _HREF.search(tag.group(1))
        href = html.unescape(next((g for g in attribute.groups() if g is not None), "")) if attribute else ""
        parts = urlsplit(href.strip())
        if parts.scheme or parts.netloc or parts.query or not parts.path.endswith("/"):
            continue
        name = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
        if name and name not in (".", ".."):
            names.setdefault(name)
    return list(names)


class VersionIndex:
    """Per-repository version lists, each looked up at most once per run."""

    def __init__(self, get_document: Callable[[str], Optional[str]]) -> None:
        """`get_document(url)`: the text at `url`, None when it is not published, HttpFailure otherwise."""
        self.get_document = get_document
        self._versions: Dict[str, Optional[Tuple[str, ...]]] = {}
        self._from_site: Dict[str, bool] = {}

    def versions(self, repo: str) -> Optional[Tuple[str, ...]]:
        """The versions `repo` publishes, or None when it offers no index we can read. A registry's tags name
        artifacts, not versions (docs/oci-layout.md): an oci:// repository has no version index."""
        if is_oci_reference(repo):
            return None
        if repo not in self._versions:
            self._versions[repo] = self._lookup_versions(repo)
        return self._versions[repo]

    def artifacts(self, repo: str, version: str) -> Optional[FrozenSet[Tuple[str, str]]]:
        """(arch, file name) pairs the drivers website lists for `version` in `repo`; None when unknown."""
        if not self._from_site.get(repo):
            return None
        url = repo_url(repo, "site", f"{quote_segment(version)}.json")
        text = self._document(url)
        return self._parsed(parse_site_version, text, url) if text is not None else None

    def _lookup_versions(self, repo: str) -> Optional[Tuple[str, ...]]:
        site_url = repo_url(repo, *SITE_INDEX.split("/"))
        text = self._document(site_url)
        if text is not None:
            versions = self._parsed(parse_site_index, text, site_url)
            if versions is not None:
                self._from_site[repo] = True
                log.debug("versions from the drivers website index", repo=redact_url(repo), count=len(versions))
                return tuple(versions)
            log.debug("site/index.json is not a JSON array of versions", repo=redact_url(repo))
        listing_url = repo_url(repo, "")
        text = self._document(listing_url)
        if text is not None:
            versions = self._parsed(parse_directory_listing, text, listing_url)
            if versions:
                log.debug("versions from the directory listing", repo=redact_url(repo), count=len(versions))
                return tuple(versions)
        log.info("repository offers no version index", repo=redact_url(repo))
        return None

    @staticmethod
    def _parsed(parse: Callable[[str], Optional[_Parsed]], text: str, url: str) -> Optional[_Parsed]:
        """`parse(text)`; None, with a warning, when the document breaks a bound: it counts as absent."""
        try:
            return parse(text)
        except DocumentLimitError as exc:
            log.warning("ignoring a version index document, as if it were absent: it breaks a limit",
                        url=redact_url(url), reason=str(exc))
            return None

    def _document(self, url: str) -> Optional[str]:
        try:
            return self.get_document(url)
        except HttpFailure as failure:
            log.warning("cannot read the version index", url=failure.url, error=failure.message)
            return None
